"""Fault schedules on real pairs: a flap cuts and restores the carrier of both ends the asked
number of times (the kernel's counters and `tapveth stats` agree), a timeline sets loss, cuts
and restores, `tapveth monitor -j` shows each step, and bad schedules change nothing. No timed
assertions: every wait has a generous deadline and only order and counts are checked."""

import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from netlab import Lab, Netns, start_stream

from tapveth.private import PrivateDaemon

pytestmark = pytest.mark.integration


def pair(lab: Lab, d: PrivateDaemon, subnet: int) -> tuple[Netns, Netns, str, str]:
    ns1, ns2 = lab.netns("fa"), lab.netns("fb")
    if1, if2 = lab.name("flt1"), lab.name("flt2")
    d.cli("add", if1, "netns", ns1.name, "peer", "name", if2, "netns", ns2.name)
    ns1.configure(if1, f"10.0.{subnet}.1/24")
    ns2.configure(if2, f"10.0.{subnet}.2/24")
    wait_ping(ns1, f"10.0.{subnet}.2")
    return ns1, ns2, if1, if2


def wait_ping(ns: Netns, addr: str) -> None:
    # the kernel activates a device's queue some time after carrier: ping until it answers
    deadline = time.monotonic() + 15
    while (r := ns.ping(addr, count=1)).returncode != 0:
        assert time.monotonic() < deadline, r.stdout


def monitor(lab: Lab, d: PrivateDaemon) -> subprocess.Popen[str]:
    proc: subprocess.Popen[str] = start_stream(lab, d, ("-j", "monitor"), "tapveth: monitoring")
    return proc


def stop(proc: subprocess.Popen[str]) -> list[dict[str, Any]]:
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    return [json.loads(line) for line in out.splitlines()]


def schedules(d: PrivateDaemon) -> list[dict[str, Any]]:
    shown: list[dict[str, Any]] = json.loads(d.cli("-j", "fault", "show").stdout)
    return shown


def until_done(d: PrivateDaemon, dev: str, within: float = 60) -> None:
    deadline = time.monotonic() + within
    while any(s["dev"] == dev for s in schedules(d)):
        assert time.monotonic() < deadline, schedules(d)
        time.sleep(0.2)


def kernel_changes(ns: Netns, dev: str) -> int:
    """The kernel's own count (sysfs, read inside the end's namespace)."""
    return int(ns.run("cat", f"/sys/class/net/{dev}/carrier_changes").stdout)


def daemon_changes(d: PrivateDaemon, dev: str) -> dict[str, int]:
    return {e["ifname"]: e["carrier_changes"] for e in json.loads(d.cli("-j", "stats", dev).stdout)}


def test_flap_cuts_both_ends_count_times(lab: Lab, daemon: PrivateDaemon) -> None:
    ns1, ns2, if1, if2 = pair(lab, daemon, 41)
    k1, k2 = kernel_changes(ns1, if1), kernel_changes(ns2, if2)
    mine = daemon_changes(daemon, if1)
    mon = monitor(lab, daemon)
    daemon.cli("link", "set", "dev", if1, "flap", "every", "1s", "for", "400ms", "count", "3")
    (shown,) = schedules(daemon)
    assert shown["schedule"] == "flap every 1s for 400ms count 3"
    until_done(daemon, if1)
    # both ends went NO-CARRIER and back three times: 2 transitions per flap, on both ends
    assert kernel_changes(ns1, if1) == k1 + 6
    assert kernel_changes(ns2, if2) == k2 + 6
    after = daemon_changes(daemon, if1)
    assert after == {if1: mine[if1] + 6, if2: mine[if2] + 6}
    assert after[if1] == kernel_changes(ns1, if1) and after[if2] == kernel_changes(ns2, if2)
    flags1, flags2 = ns1.link(if1)["flags"], ns2.link(if2)["flags"]
    assert "LOWER_UP" in flags1 and "LOWER_UP" in flags2
    wait_ping(ns1, "10.0.41.2")
    events = stop(mon)
    faults = [(e["fault"], e.get("step")) for e in events if e["event"] == "fault"]
    assert faults == [
        ("cut", "flap 1/3"),
        ("restore", "flap 1/3"),
        ("cut", "flap 2/3"),
        ("restore", "flap 2/3"),
        ("cut", "flap 3/3"),
        ("restore", "flap 3/3"),
        ("done", None),
    ]
    carriers = [e["carrier"] for e in events if e["event"] == "carrier"]
    assert carriers == [False, True] * 3
    assert all(e["ifname"] == if1 for e in events if e["event"] == "fault")


def test_timeline_loss_then_cut_then_restored(lab: Lab, daemon: PrivateDaemon) -> None:
    ns1, ns2, if1, if2 = pair(lab, daemon, 42)
    k2 = kernel_changes(ns2, if2)
    mon = monitor(lab, daemon)
    daemon.cli(
        "fault", "add", "dev", if1,
        "at", "+0", "netem", "loss", "100%",
        "at", "+6s", "cut", "for", "1s",
        "at", "+8s", "clear",
    )  # fmt: skip
    # the loss comes first: what if1 sends is lost (reason loss) while the carrier is on
    deadline = time.monotonic() + 10
    while True:
        q = json.loads(daemon.cli("-j", "qdisc", "show", "dev", if1).stdout)[0]
        if q["kind"] == "netem":
            break
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert q["options"] == "loss 100%"
    ns1.ping("10.0.42.2", count=2)
    until_done(daemon, if1)
    drops = {e["ifname"]: e["drops"] for e in json.loads(daemon.cli("-j", "stats", if1).stdout)}
    assert drops[if1].get("loss", 0) >= 1, drops
    # then restored: no impairments, carrier back, traffic flows
    q = json.loads(daemon.cli("-j", "qdisc", "show", "dev", if1).stdout)[0]
    assert q["kind"] == "noqueue"
    assert kernel_changes(ns2, if2) == k2 + 2
    wait_ping(ns1, "10.0.42.2")
    events = stop(mon)
    steps = [(e["event"], e.get("fault") or e.get("action")) for e in events]
    steps = [s for s in steps if s[0] in ("fault", "carrier")]
    assert steps == [
        ("fault", "netem"),
        ("carrier", None),
        ("fault", "cut"),
        ("carrier", None),
        ("fault", "restore"),
        ("fault", "clear"),
        ("fault", "done"),
    ]
    netem = [e for e in events if e["event"] == "fault" and e["fault"] == "netem"]
    assert netem[0]["detail"] == "netem loss 100%" and netem[0]["step"] == "at +0s"


def test_qdisc_and_manual_carrier_are_published(lab: Lab, daemon: PrivateDaemon) -> None:
    _, _, if1, if2 = pair(lab, daemon, 43)
    mon = monitor(lab, daemon)
    daemon.cli("qdisc", "add", "dev", if1, "root", "netem", "delay", "5ms")
    daemon.cli("qdisc", "del", "dev", if1, "root")
    daemon.cli("link", "set", "dev", if2, "carrier", "off")
    daemon.cli("link", "set", "dev", if2, "carrier", "on")
    events = stop(mon)
    got = [
        (e["event"], e["ifname"], e.get("action") or e.get("fault"), e.get("netem"))
        for e in events
        if e["event"] in ("qdisc", "fault")
    ]
    assert got == [
        ("qdisc", if1, "add", "delay 5ms"),
        ("qdisc", if1, "del", None),
        ("fault", if2, "cut", None),
        ("fault", if2, "restore", None),
    ]


def test_bad_schedules_exit_2_and_change_nothing(lab: Lab, daemon: PrivateDaemon) -> None:
    _, _, if1, if2 = pair(lab, daemon, 44)
    daemon.cli("fault", "add", "dev", if1, "at", "+3600s", "cut")
    before = schedules(daemon)
    bad = [
        ("fault", "add", "dev", if1, "flap", "every", "1s", "for", "2s"),
        ("fault", "add", "dev", if1, "at", "+5s", "cut"),  # one is there: add refuses
        ("fault", "replace", "dev", if1, "at", "+5s", "netem", "loss", "120%"),
        ("fault", "replace", "dev", if1, "at", "+5s", "explode"),
        ("fault", "replace", "dev", if1),
        ("fault", "del", "dev", if2),  # has none
        ("fault", "add", "dev", "nosuchdev0", "at", "+1s", "cut"),
        ("fault", "frobnicate", "dev", if1),
        ("link", "set", "dev", if1, "flap", "every", "1s"),
        ("link", "set", "dev", if1, "flap", "every", "1s", "for", "1s", "count", "0"),
    ]
    for words in bad:
        r = daemon.cli(*words, check=False)
        assert r.returncode == 2, (words, r.stdout, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1, (words, r.stderr)
    assert [s["schedule"] for s in schedules(daemon)] == [s["schedule"] for s in before]
    assert [s["fired"] for s in schedules(daemon)] == [0]
    text = daemon.cli("fault", "show", "dev", if1).stdout.strip()
    assert text.startswith(f"dev {if1} netns ") and "at +3600s cut (fired 0, next in " in text
    assert daemon.cli("fault", "show", "dev", if2).stdout.strip() == ""
    q = json.loads(daemon.cli("-j", "qdisc", "show", "dev", if1).stdout)[0]
    assert q["kind"] == "noqueue"
    daemon.cli("fault", "del", "dev", if1)
    assert schedules(daemon) == []


def test_config_faults_and_reload_replace_them(lab: Lab, tmp_path: Path) -> None:
    ns1, ns2 = lab.netns("fc"), lab.netns("fd")
    a, b = lab.name("fcfa"), lab.name("fcfb")

    def toml(faults: str | None, netem: str | None = None) -> str:
        line = f'faults = "{faults}"\n' if faults else ""
        line += f'netem = "{netem}"\n' if netem else ""
        return (
            f'[[pair]]\n[pair.end]\nname = "{a}"\nnetns = "{ns1.name}"\n'
            f'addresses = ["10.0.45.1/24"]\nup = true\n{line}'
            f'[pair.peer]\nname = "{b}"\nnetns = "{ns2.name}"\n'
            f'addresses = ["10.0.45.2/24"]\nup = true\n'
        )

    cfg = tmp_path / "tv.toml"
    cfg.write_text(toml("at +3600s cut"))
    d = PrivateDaemon(log_level="debug", daemon_args=("--config", str(cfg))).start()
    try:
        deadline = time.monotonic() + 30  # the daemon answers before it has made its pairs
        while not (shown := schedules(d)):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert [(s["dev"], s["schedule"]) for s in shown] == [(a, "at +3600s cut")]
        # a reload that changes the pair but not the line leaves the schedule running
        time.sleep(0.5)
        cfg.write_text(toml("at +3600s cut", netem="delay 1ms"))
        assert "1 changed" in d.cli("reload").stdout
        (kept,) = schedules(d)
        assert kept["next_in"] < shown[0]["next_in"]  # not started again from zero
        k = kernel_changes(ns2, b)
        cfg.write_text(toml("flap every 1s for 300ms count 2"))
        assert "0 added, 0 removed, 1 changed, 0 unchanged" in d.cli("reload").stdout
        assert [s["schedule"] for s in schedules(d)] == ["flap every 1s for 300ms count 2"]
        until_done(d, a)
        assert kernel_changes(ns2, b) == k + 4
        cfg.write_text(toml("flap every 1s"))
        r = d.cli("reload", check=False)
        assert r.returncode == 2 and "flap needs 'every T for D'" in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
        assert schedules(d) == []  # the finished schedule was not started again
        cfg.write_text(toml("at +3600s restore"))
        d.cli("reload")
        assert [s["schedule"] for s in schedules(d)] == ["at +3600s restore"]
        cfg.write_text(toml(None))
        d.cli("reload")
        assert schedules(d) == []
    finally:
        rc = d.stop()
        print("daemon log:\n" + d.final_log)
        assert rc == 0
