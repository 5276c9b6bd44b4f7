"""The daemon as systemd runs it: a configuration file, the notify protocol (READY only once the
pairs carry traffic, WATCHDOG at half the period, RELOADING/READY on SIGHUP, STOPPING on
SIGTERM), reloads that touch only what changed, and persistent pairs that survive a restart."""

import itertools
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from netlab import Lab, Netns, Stream, sh

from tapveth.private import PrivateDaemon

pytestmark = pytest.mark.integration


class NotifySocket:
    """A datagram socket standing in for systemd's: records each message with its time."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="tvnotify-")
        self.path = os.path.join(self.dir, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, dict[str, str]]] = []
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop:
            try:
                data = self.sock.recv(4096).decode()
            except TimeoutError:
                continue
            except OSError:
                return
            fields = dict(line.split("=", 1) for line in data.splitlines() if "=" in line)
            self.messages.append((time.monotonic(), fields))

    def wait_for(
        self, key: str, value: str | None = None, after: int = 0, timeout: float = 20.0
    ) -> int:
        """Index of the first message from `after` on that has key (=value)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for i, (_, m) in enumerate(self.messages[after:], after):
                if key in m and (value is None or m[key] == value):
                    return i
            time.sleep(0.02)
        raise AssertionError(f"no {key} from the daemon; got {self.messages}")

    def close(self) -> None:
        self._stop = True
        self._thread.join(2)
        self.sock.close()
        os.unlink(self.path)
        os.rmdir(self.dir)


def service_daemon(config: Path, notify: "NotifySocket", watchdog_usec: int = 0) -> PrivateDaemon:
    """`tapveth daemon --config FILE` as the unit's ExecStart runs it, with NOTIFY_SOCKET."""
    env = {"NOTIFY_SOCKET": notify.path}
    if watchdog_usec:
        env["WATCHDOG_USEC"] = str(watchdog_usec)
    return PrivateDaemon(
        log_level="debug", extra_env=env, daemon_args=("--config", str(config))
    ).start()


def stopped(d: PrivateDaemon) -> int | None:
    rc = d.stop()
    print("daemon log:\n" + d.final_log)
    return rc


@pytest.fixture
def notify() -> Iterator[NotifySocket]:
    n = NotifySocket()
    try:
        yield n
    finally:
        n.close()


def pair_toml(
    a: str,
    ns_a: str,
    b: str,
    ns_b: str,
    net: str,
    persist: bool = False,
    mtu: int | None = None,
    create: bool = False,
) -> str:
    extra = f"mtu = {mtu}\n" if mtu else ""
    make = "create_netns = true\n" if create else ""
    return (
        f"[[pair]]\npersist = {'true' if persist else 'false'}\n"
        f'[pair.end]\nname = "{a}"\nnetns = "{ns_a}"\n{make}{extra}'
        f'addresses = ["{net}.1/24"]\nup = true\n'
        f'[pair.peer]\nname = "{b}"\nnetns = "{ns_b}"\n{make}{extra}'
        f'addresses = ["{net}.2/24"]\nup = true\n'
    )


def test_notify_protocol(lab: Lab, notify: NotifySocket, tmp_path: Path) -> None:
    n1, n2, n3, n4 = (lab.netns(x) for x in "abcd")
    cfg = tmp_path / "tv.toml"
    cfg.write_text(
        pair_toml("p1a", n1.name, "p1b", n2.name, "10.21.0")
        + pair_toml("p2a", n3.name, "p2b", n4.name, "10.22.0")
    )
    d = service_daemon(cfg, notify, watchdog_usec=1_000_000)
    try:
        ready = notify.wait_for("READY", "1")
        # READY means every pair carries traffic: ping works at once, with no warm-up
        for ns in (n1, n3):
            net = "10.21.0" if ns is n1 else "10.22.0"
            r = ns.ping(f"{net}.2", count=2, deadline=20)
            assert r.returncode == 0 and " 0% packet loss" in r.stdout, r.stdout
        assert notify.messages[ready][1]["STATUS"] == "2 pair(s), 2 with carrier"
        time.sleep(2.2)
        beats = [t for t, m in notify.messages if m.get("WATCHDOG") == "1"]
        assert len(beats) >= 4
        gaps = [b - a for a, b in itertools.pairwise(beats)]
        # every half of WATCHDOG_USEC; the gaps are timed on arrival here, and a loaded machine
        # may hold one beat back a little: never as long as WATCHDOG_USEC, which systemd enforces
        assert 0.4 < statistics.median(gaps) < 0.6 and max(gaps) < 1.0, gaps
        d.signal(signal.SIGHUP)
        reloading = notify.wait_for("RELOADING", "1", after=ready + 1)
        assert int(notify.messages[reloading][1]["MONOTONIC_USEC"]) > 0
        notify.wait_for("READY", "1", after=reloading + 1)
        d.signal(signal.SIGTERM)
        notify.wait_for("STOPPING", "1")
    finally:
        rc = stopped(d)
    assert rc == 0
    assert not n1.has_link("p1a") and not n4.has_link("p2b")


def test_reload_changes_only_what_changed(lab: Lab, notify: NotifySocket, tmp_path: Path) -> None:
    spaces = [lab.netns(f"r{i}") for i in range(6)]
    names = [ns.name for ns in spaces]
    keep = pair_toml("ka", names[0], "kb", names[1], "10.31.0")
    change = pair_toml("ca", names[2], "cb", names[3], "10.32.0")
    drop = pair_toml("da", names[4], "db", names[5], "10.33.0")
    cfg = tmp_path / "tv.toml"
    cfg.write_text(keep + change + drop)
    d = service_daemon(cfg, notify)
    try:
        notify.wait_for("READY", "1")
        index_before = spaces[0].link("ka")["ifindex"]
        nbytes = 6 << 20
        stream = Stream(spaces[0], spaces[1], "10.31.0.2", nbytes, port=5601, rate=nbytes / 3)
        time.sleep(1.0)
        new = pair_toml("ca", names[2], "cb", names[3], "10.32.0", mtu=1400)
        added = pair_toml("na", names[4], "nb", names[5], "10.34.0")
        cfg.write_text(keep + new + added)
        out = d.cli("reload").stdout
        assert "1 added, 1 removed, 1 changed, 1 unchanged" in out
        stream.finish(60)
        assert spaces[0].link("ka")["ifindex"] == index_before  # untouched
        assert spaces[2].link("ca")["mtu"] == 1400 and spaces[3].link("cb")["mtu"] == 1400
        assert not spaces[4].has_link("da")
        r = spaces[4].ping("10.34.0.2")
        assert r.returncode == 0, r.stdout
        # a pair added by hand is kept across a reload, and the CLI says so
        r2 = d.cli("add", "ha", "netns", names[0], "peer", "name", "hb", "netns", names[1])
        assert "a reload keeps this pair" in r2.stderr
        d.cli("reload")
        shown = {e["ifname"] for e in json.loads(d.cli("-j", "show").stdout)}
        assert {"ha", "hb"} <= shown
    finally:
        assert stopped(d) == 0


def test_bad_config_exits_2_and_makes_nothing(lab: Lab, tmp_path: Path) -> None:
    ns = lab.netns("x")
    cfg = tmp_path / "bad.toml"
    cfg.write_text(
        pair_toml("ba", ns.name, "bb", ns.name, "10.41.0").replace("up = true", "up = 7", 1)
    )
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "tapveth",
            "--socket",
            str(tmp_path / "s"),
            "daemon",
            "--config",
            str(cfg),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{cfg}:" in lines[0] and "pair[0].end.up" in lines[0]
    assert not ns.has_link("ba") and not ns.has_link("bb")


def test_persistent_pair_survives_restart(lab: Lab, notify: NotifySocket, tmp_path: Path) -> None:
    a, b = lab.netns("pa"), lab.netns("pb")
    cfg = tmp_path / "tv.toml"
    cfg.write_text(pair_toml("sa", a.name, "sb", b.name, "10.51.0", persist=True))
    d = service_daemon(cfg, notify)
    d2 = None
    try:
        notify.wait_for("READY", "1")
        nbytes = 8 << 20
        stream = Stream(a, b, "10.51.0.2", nbytes, port=5701, rate=nbytes / 5)
        time.sleep(1.5)
        assert stopped(d) == 0  # bytes before the restart have crossed
        link = a.link("sa")
        assert "NO-CARRIER" in link["flags"]  # no silent black hole while the daemon is down
        assert "10.51.0.1" in sh("ip", "-n", a.name, "addr", "show", "sa").stdout
        time.sleep(1.0)
        n = len(notify.messages)
        d2 = service_daemon(cfg, notify)
        notify.wait_for("READY", "1", after=n)
        stream.finish(90)
    finally:
        if d2 is not None:
            stopped(d2)
        # the persistent TAPs outlive the daemon by design: remove them here
        for ns, name in ((a, "sa"), (b, "sb")):
            ns.ip("link", "del", name, check=False)


def test_64_pairs_from_config(lab: Lab, notify: NotifySocket, tmp_path: Path) -> None:
    tag = lab.tag
    names = [(f"tvc{tag}{i}a", f"tvc{tag}{i}b") for i in range(64)]
    lab.namespaces += [Netns(lab, n) for pair in names for n in pair]  # removed by the lab
    cfg = tmp_path / "tv.toml"
    text = "".join(
        pair_toml(f"e{i}", a, f"f{i}", b, f"10.60.{i}", create=True)
        for i, (a, b) in enumerate(names)
    )
    cfg.write_text(text)
    d = service_daemon(cfg, notify)
    try:
        notify.wait_for("READY", "1", timeout=60)
        procs = [
            lab.spawn("ip", "netns", "exec", a, "ping", "-c", "1", "-W", "2", f"10.60.{i}.2")
            for i, (a, _) in enumerate(names)
        ]
        assert [p.wait(30) for p in procs] == [0] * 64
        changed = text
        for i in range(8):
            changed = changed.replace(f'name = "e{i}"\n', f'name = "e{i}"\nmtu = 1400\n')
        cfg.write_text(changed)
        assert "0 added, 0 removed, 8 changed, 56 unchanged" in d.cli("reload").stdout
        assert Netns(lab, names[3][0]).link("e3")["mtu"] == 1400
    finally:
        assert stopped(d) == 0
    leftover = [a for a, _ in names if Netns(lab, a).has_link("e0")]
    assert not leftover and not Netns(lab, names[63][1]).has_link("f63")


def test_kill_9_persistent_pair_shows_no_carrier_and_comes_back(
    lab: Lab, notify: NotifySocket, tmp_path: Path
) -> None:
    a, b = lab.netns("ka"), lab.netns("kb")
    cfg = tmp_path / "tv.toml"
    cfg.write_text(pair_toml("ka", a.name, "kb", b.name, "10.52.0", persist=True))
    d = service_daemon(cfg, notify)
    d2 = None
    try:
        notify.wait_for("READY", "1")
        assert d.proc is not None
        d.proc.kill()  # no chance to clean up: the kernel closes its fds
        d.proc.wait(10)
        deadline = time.monotonic() + 5
        while "NO-CARRIER" not in a.link("ka")["flags"]:
            assert time.monotonic() < deadline, "carrier stayed on with no daemon"
            time.sleep(0.05)
        assert "10.52.0.1" in sh("ip", "-n", a.name, "addr", "show", "ka").stdout
        n = len(notify.messages)
        d2 = service_daemon(cfg, notify)
        notify.wait_for("READY", "1", after=n)
        r = a.ping("10.52.0.2", deadline=20)
        assert r.returncode == 0 and " 0% packet loss" in r.stdout, r.stdout
    finally:
        stopped(d)
        if d2 is not None:
            stopped(d2)
        for ns, name in ((a, "ka"), (b, "kb")):
            ns.ip("link", "del", name, check=False)
