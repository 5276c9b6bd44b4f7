"""Prometheus metrics: the exposition passes promtool, counts match `tapveth stats`, and a real
Prometheus server scrapes the daemon and answers a rate query for a pair carrying traffic."""

import json
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from netlab import Lab, Netns
from prometheus_client.parser import text_string_to_metric_families

from tapveth.conformance.backends import quiet
from tapveth.private import PrivateDaemon

pytestmark = pytest.mark.integration
# Wait for every reply (up to 20 s): without a deadline, ping gives up two RTTs after its last
# request, and replies slowed by a loaded machine would count as lost.
REPLIES = ("-w", "20")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def metered() -> Iterator[tuple[PrivateDaemon, str]]:
    """A daemon serving metrics on a free loopback port."""
    listen = f"127.0.0.1:{free_port()}"
    d = PrivateDaemon(log_level="debug", daemon_args=("--metrics", listen)).start()
    try:
        yield d, listen
    finally:
        rc = d.stop()
        print("daemon log:\n" + d.final_log)
        assert rc == 0


def scrape(listen: str) -> str:
    with urllib.request.urlopen(f"http://{listen}/metrics", timeout=10) as r:
        return str(r.read().decode())


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def make_pair(lab: Lab, d: PrivateDaemon) -> tuple[Netns, Netns, str, str]:
    a, b = lab.netns("a"), lab.netns("b")
    quiet(a)
    quiet(b)
    x, y = lab.name("meta"), lab.name("metb")
    d.cli("add", x, "netns", a.name, "peer", "name", y, "netns", b.name)
    a.configure(x, "10.0.0.1/24")
    b.configure(y, "10.0.0.2/24")
    # static neighbours: no ARP probe (5 s after the first reply) adds frames to exact counts
    a.ip(
        "neigh", "replace", "10.0.0.2", "lladdr", b.link(y)["address"], "dev", x, "nud", "permanent"
    )
    b.ip(
        "neigh", "replace", "10.0.0.1", "lladdr", a.link(x)["address"], "dev", y, "nud", "permanent"
    )
    return a, b, x, y


def test_exposition_counts_and_promtool(lab: Lab, metered: tuple[PrivateDaemon, str]) -> None:
    d, listen = metered
    a, b, x, y = make_pair(lab, d)
    assert " 0% packet loss" in a.ping("10.0.0.2", count=5, extra=REPLIES).stdout
    b.ip("link", "set", y, "mtu", "1000")
    a.ping("10.0.0.2", count=2, size=1200, extra=("-M", "dont"))
    time.sleep(0.3)
    text = scrape(listen)
    stats = {e["ifname"]: e for e in d.request("stats")}
    got = samples(text)
    pair = f"{x}/{y}"

    def end(name: str, ns: Netns, **extra: str) -> tuple[tuple[str, str], ...]:
        return tuple(sorted({"pair": pair, "end": name, "netns": ns.name, **extra}.items()))

    for ifname, ns in ((x, a), (y, b)):
        for metric, key in (
            ("receive_packets", "rx_packets"),
            ("receive_bytes", "rx_bytes"),
            ("transmit_packets", "tx_packets"),
            ("transmit_bytes", "tx_bytes"),
            ("receive_drop", "rx_dropped"),
            ("transmit_drop", "tx_dropped"),
        ):
            assert got[(f"tapveth_network_{metric}_total", end(ifname, ns))] == stats[ifname][key]
        assert got[("tapveth_network_carrier", end(ifname, ns))] == 1
        assert got[("tapveth_network_up", end(ifname, ns))] == 1
        assert got[("tapveth_network_carrier_changes_total", end(ifname, ns))] == 2
        assert got[("tapveth_network_carrier_up_changes_total", end(ifname, ns))] == 1
        assert got[("tapveth_network_carrier_down_changes_total", end(ifname, ns))] == 1
    assert stats[x]["tx_packets"] >= 5
    assert got[("tapveth_relay_drops_total", end(x, a, reason="mtu"))] == 2
    assert got[("tapveth_network_mtu_bytes", end(y, b))] == 1000
    assert got[("tapveth_network_mtu_bytes", end(x, a))] == 1500
    assert got[("tapveth_pairs", ())] == 1
    frames = sum(stats[e]["tx_packets"] + sum(stats[e]["drops"].values()) for e in (x, y))
    assert got[("tapveth_relay_frames_total", ())] == frames
    assert 1 <= got[("tapveth_relay_wakeups_total", ())] <= frames
    assert got[("process_resident_memory_bytes", ())] > 0

    check = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.strip() == "" and check.stderr.strip() == "", check  # no lint warnings

    # a deleted pair's frames stay in the daemon-wide total, and its series go
    d.cli("del", x)
    after = samples(scrape(listen))
    assert after[("tapveth_relay_frames_total", ())] == frames
    assert after[("tapveth_pairs", ())] == 0
    assert not any(name.startswith("tapveth_network_") for name, _ in after)


def test_a_real_prometheus_scrapes_a_rate(
    lab: Lab, metered: tuple[PrivateDaemon, str], tmp_path: Path
) -> None:
    d, listen = metered
    a, _, x, _ = make_pair(lab, d)
    web = f"127.0.0.1:{free_port()}"
    (tmp_path / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 1s\n"
        "scrape_configs:\n"
        "  - job_name: tapveth\n"
        f"    static_configs:\n      - targets: ['{listen}']\n"
    )
    prom = lab.spawn(
        "prometheus",
        f"--config.file={tmp_path / 'prometheus.yml'}",
        f"--storage.tsdb.path={tmp_path / 'data'}",
        f"--web.listen-address={web}",
    )
    pinger = lab.spawn(
        "ip", "netns", "exec", a.name, "ping", "-c", "600", "-i", "0.05", "-q", "10.0.0.2"
    )
    query = f'rate(tapveth_network_transmit_packets_total{{end="{x}"}}[5s])'
    url = f"http://{web}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    deadline = time.monotonic() + 60
    rate = 0.0
    while rate <= 0:
        assert time.monotonic() < deadline, "prometheus never had a rate for the pair"
        assert prom.poll() is None, prom.stderr.read() if prom.stderr else ""
        time.sleep(1)
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                answer = json.loads(r.read())
        except OSError:
            continue  # not listening yet
        assert answer["status"] == "success", answer
        for series in answer["data"]["result"]:
            assert series["metric"]["job"] == "tapveth"
            assert series["metric"]["netns"] == a.name
            rate = float(series["value"][1])
    time.sleep(6)  # a window of whole samples
    with urllib.request.urlopen(url, timeout=5) as r:
        rate = float(json.loads(r.read())["data"]["result"][0]["value"][1])
    pinger.kill()
    print(f"\nprometheus: {query} = {rate:.1f} frames/s (ping every 50 ms: ~20/s)")
    assert rate < 1000  # a rate in frames per second, not a raw count


def test_bad_metrics_address_is_refused(lab: Lab) -> None:
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    try:
        for listen, message in (
            ("localhost:9477", "is not an IP address"),
            ("127.0.0.1:0", "from 1 to 65535"),
            (f"127.0.0.1:{port}", "Address already in use"),
        ):
            d = PrivateDaemon(daemon_args=("--metrics", listen))
            with pytest.raises(RuntimeError):
                d.start(timeout=5)
            assert d.proc is not None and d.proc.returncode == 2
            lines = [ln for ln in d.final_log.splitlines() if ln.strip()]
            assert len(lines) == 1 and message in lines[0], d.final_log
    finally:
        busy.close()


def test_metrics_from_the_configuration_file_and_a_bare_port(tmp_path: Path) -> None:
    port = free_port()
    conf = tmp_path / "tapveth.toml"
    conf.write_text(f'[metrics]\nlisten = "127.0.0.1:{port}"\n')
    d = PrivateDaemon(daemon_args=("--config", str(conf))).start()
    try:
        assert samples(scrape(f"127.0.0.1:{port}"))[("tapveth_pairs", ())] == 0
    finally:
        assert d.stop() == 0
    other = free_port()  # --metrics wins over the file; a bare port is on loopback
    d = PrivateDaemon(daemon_args=("--config", str(conf), "--metrics", str(other))).start()
    try:
        assert ("tapveth_pairs", ()) in samples(scrape(f"127.0.0.1:{other}"))
        assert f"metrics on http://127.0.0.1:{other}/metrics" in d.log()
        with pytest.raises(OSError):
            scrape(f"127.0.0.1:{port}")
    finally:
        assert d.stop() == 0


def qdisc_show(d: PrivateDaemon, dev: str) -> dict[str, Any]:
    (q,) = json.loads(d.cli("-s", "-j", "qdisc", "show", "dev", dev).stdout)
    assert isinstance(q, dict)
    return q


def test_impaired_directions(lab: Lab, metered: tuple[PrivateDaemon, str]) -> None:
    d, listen = metered
    a, b, x, y = make_pair(lab, d)
    # static neighbours: only the pings cross, so the queue's content is known to the byte
    a.ip(
        "neigh", "replace", "10.0.0.2", "lladdr", b.link(y)["address"], "dev", x, "nud", "permanent"
    )
    b.ip(
        "neigh", "replace", "10.0.0.1", "lladdr", a.link(x)["address"], "dev", y, "nud", "permanent"
    )
    assert " 0% packet loss" in a.ping("10.0.0.2", count=2, extra=REPLIES).stdout
    # y -> x: loss and the numeric settings; x -> y: a queue that holds 3 frames for 30 s
    d.cli(
        "qdisc", "add", "dev", y, "root", "netem", "delay", "1ms", "500us", "distribution",
        "normal", "loss", "30%", "duplicate", "1%", "corrupt", "2%", "reorder", "5%",
        "rate", "10mbit", "seed", "5",
    )  # fmt: skip
    b.run("ping", "-c", "20", "-i", "0.02", "-W", "2", "10.0.0.1", check=False, timeout=60)
    d.cli("qdisc", "add", "dev", x, "root", "netem", "delay", "30s", "limit", "3")
    a.run("ping", "-c", "6", "-i", "0.02", "-W", "1", "10.0.0.2", check=False, timeout=60)
    text = scrape(listen)
    got = samples(text)
    shown = {dev: qdisc_show(d, dev) for dev in (x, y)}
    stats = {e["ifname"]: e for e in d.request("stats")}
    pair = f"{x}/{y}"

    def end(name: str, ns: Netns, **extra: str) -> tuple[tuple[str, str], ...]:
        return tuple(sorted({"pair": pair, "end": name, "netns": ns.name, **extra}.items()))

    for dev, ns in ((x, a), (y, b)):
        q = shown[dev]
        qstats, netem = q["stats"], q["netem"]
        assert got[("tapveth_netem_info", end(dev, ns, options=q["options"]))] == 1
        assert got[("tapveth_netem_backlog_packets", end(dev, ns))] == qstats["backlog_packets"]
        assert got[("tapveth_netem_backlog_bytes", end(dev, ns))] == qstats["backlog_bytes"]
        assert got[("tapveth_netem_delay_seconds", end(dev, ns))] == netem["latency"] / 1e9
        assert got[("tapveth_netem_jitter_seconds", end(dev, ns))] == netem["jitter"] / 1e9
        for setting in ("loss", "duplicate", "corrupt", "reorder"):
            ratio = got[(f"tapveth_netem_{setting}_ratio", end(dev, ns))]
            assert ratio == pytest.approx(netem[setting] / 100)
        assert got[("tapveth_netem_rate_bytes_per_second", end(dev, ns))] == netem["rate"]
        for reason, count in qstats["drops"].items():  # the qdisc's drops, in the relay's
            assert got[("tapveth_relay_drops_total", end(dev, ns, reason=reason))] == count
            assert stats[dev]["drops"][reason] == count
    # the queue: 3 echo requests held, 3 refused as overflow
    assert shown[x]["stats"]["backlog_packets"] == 3
    assert shown[x]["stats"]["backlog_bytes"] == 3 * 98
    assert shown[x]["stats"]["drops"] == {"queue": 3}
    assert got[("tapveth_netem_limit_packets", end(x, a))] == 3
    assert ("tapveth_netem_limit_bytes", end(x, a)) not in got
    assert got[("tapveth_netem_limit_bytes", end(y, b))] > 0
    assert got[("tapveth_netem_delay_seconds", end(x, a))] == 30
    assert got[("tapveth_netem_rate_bytes_per_second", end(y, b))] == 10_000_000 / 8
    assert got[("tapveth_netem_loss_ratio", end(y, b))] == pytest.approx(0.3)
    assert shown[y]["stats"]["drops"].get("loss", 0) > 0  # 30% of 20+ frames (seed 5)
    check = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.strip() == "" and check.stderr.strip() == "", check  # no lint warnings

    # without its impairments a direction has no netem series; what was queued is sent
    d.cli("qdisc", "del", "dev", x, "root")
    after = samples(scrape(listen))
    assert not any(k[0].startswith("tapveth_netem") and ("end", x) in k[1] for k in after)
    assert ("tapveth_netem_backlog_packets", end(y, b)) in after
    assert after[("tapveth_network_transmit_packets_total", end(x, a))] >= 3 + 2
