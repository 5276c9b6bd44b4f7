"""Impairments and carrier faults on a pair stretched over VXLAN: netem on the TAP end impairs
what it sends into the tunnel, netem on the tunnel end (`vxlan:VNI`) what the tunnel delivers,
each independently; a carrier cut takes the stretched link down both ways, with the drops
counted, and between two tapveth daemons with BFD the far side loses carrier too."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from netlab import Lab, Netns, Stream, private_daemon, start_stream
from prometheus_client.parser import text_string_to_metric_families
from underlay import (
    IP_A,
    IP_B,
    PORT,
    VNI,
    Hosts,
    answered,
    carrier_active,
    forget_neighbours,
    has_carrier,
    kernel_vxlan,
    ping_loss,
    show,
    stats,
    tapveth_end,
    tcp_checksum_errors,
    two_hosts,
    wait_for,
)

from tapveth.control import ControlError
from tapveth.private import PrivateDaemon

pytestmark = pytest.mark.integration

OV_A, OV_B = "10.42.0.1", "10.42.0.2"
TUNNEL = "vxlan:42"
MB = 1 << 20


@pytest.fixture
def daemon_b() -> Iterator[PrivateDaemon]:
    with private_daemon("daemon B") as d:
        yield d


def facing_kernel(lab: Lab, daemon: PrivateDaemon) -> tuple[Hosts, Netns, str]:
    """veth1 in o1 on host A, stretched to the kernel's vxlan on host B; pings cross."""
    hosts = two_hosts(lab)
    o1 = lab.netns("o1")
    v1 = lab.name("veth1")
    tapveth_end(daemon, o1, v1, hosts.a, IP_B)
    o1.configure(v1, f"{OV_A}/24")
    wait_for("carrier", lambda: has_carrier(o1, v1))
    kernel_vxlan(hosts.b, hosts.ub, "vx42", IP_A, f"{OV_B}/24")
    assert answered(o1, OV_B)
    return hosts, o1, v1


def ping(ns: Netns, addr: str, count: int = 5) -> str:
    out = ns.ping(addr, count=count, extra=("-W", "1"))
    return out.stdout


def rtt_min_ms(ns: Netns, addr: str) -> float:
    out = ping(ns, addr)
    m = re.search(r"rtt min/avg/max/mdev = ([\d.]+)/", out)
    assert m is not None, out
    return float(m.group(1))


def qdisc(daemon: PrivateDaemon, dev: str) -> dict[str, Any]:
    rows: list[dict[str, Any]] = json.loads(
        daemon.cli("-s", "-j", "qdisc", "show", "dev", dev).stdout
    )
    assert len(rows) == 1, rows
    return rows[0]


def test_netem_on_the_tap_end_impairs_what_enters_the_tunnel(
    lab: Lab, daemon: PrivateDaemon
) -> None:
    _, o1, v1 = facing_kernel(lab, daemon)
    daemon.cli("qdisc", "add", "dev", v1, "root", "netem", "loss", "100%")
    assert ping_loss(o1, OV_B) == 100
    q = qdisc(daemon, v1)
    assert q["kind"] == "netem" and q["stats"]["dropped"] >= 5, q
    assert stats(daemon, v1)["drops"].get("loss", 0) >= 5
    assert qdisc(daemon, TUNNEL)["kind"] == "noqueue"  # the other direction is untouched

    daemon.cli("qdisc", "change", "dev", v1, "root", "netem", "delay", "50ms")
    rtt = rtt_min_ms(o1, OV_B)
    print(f"delay 50ms into the tunnel: rtt min {rtt} ms")
    assert rtt >= 50.0
    sent = qdisc(daemon, v1)["stats"]["sent_packets"]
    assert sent >= 5

    daemon.cli("qdisc", "del", "dev", v1, "root")
    assert qdisc(daemon, v1)["kind"] == "noqueue"
    assert answered(o1, OV_B)


@pytest.mark.parametrize("netem", [("delay", "2ms"), ("delay", "2ms", "rate", "200mbit")])
def test_tcp_offloads_cross_netem_into_the_tunnel(
    lab: Lab, daemon: PrivateDaemon, netem: tuple[str, ...]
) -> None:
    """veth1's TAP offers TSO and checksum offload: the super-frames and partial checksums
    that its impairments queue (under rate, in pieces) leave as complete wire-sized segments,
    as on the unimpaired path, and a TCP stream arrives whole without a checksum error."""
    hosts, o1, v1 = facing_kernel(lab, daemon)
    daemon.cli("qdisc", "add", "dev", v1, "root", "netem", *netem)
    bad_before = tcp_checksum_errors(hosts.b)
    Stream(o1, hosts.b, OV_B, 8 * MB, seed=3, timeout=30).finish()
    assert tcp_checksum_errors(hosts.b) == bad_before
    q = qdisc(daemon, v1)
    drops = stats(daemon, v1)["drops"]
    print(f"netem {' '.join(netem)}: {q['stats']}, drops {drops}")
    assert drops == {}, drops
    assert q["stats"]["sent_packets"] > 0


def test_netem_on_the_tunnel_end_impairs_what_leaves_it(lab: Lab, daemon: PrivateDaemon) -> None:
    hosts, o1, v1 = facing_kernel(lab, daemon)
    daemon.cli("qdisc", "add", "dev", TUNNEL, "root", "netem", "loss", "100%")
    # Both ways of the ping cross the tunnel, so both starters see it fail.
    assert ping_loss(hosts.b, OV_A) == 100
    q = qdisc(daemon, TUNNEL)
    assert q["kind"] == "netem" and q["dev"] == TUNNEL and q["stats"]["dropped"] >= 5, q
    assert q["netns"] == hosts.a.name  # the tunnel end lives in the underlay namespace
    assert stats(daemon, TUNNEL)["drops"].get("loss", 0) >= 5
    assert qdisc(daemon, v1)["kind"] == "noqueue"

    daemon.cli("qdisc", "replace", "dev", TUNNEL, "root", "netem", "delay", "50ms")
    rtt = rtt_min_ms(hosts.b, OV_A)
    print(f"delay 50ms out of the tunnel: rtt min {rtt} ms")
    assert rtt >= 50.0
    # Both directions at once, independently: 50 ms each way.
    daemon.cli("qdisc", "add", "dev", v1, "root", "netem", "delay", "50ms")
    rtt = rtt_min_ms(o1, OV_B)
    print(f"delay 50ms each way: rtt min {rtt} ms")
    assert rtt >= 100.0
    assert qdisc(daemon, TUNNEL)["stats"]["sent_packets"] >= 10

    for dev in (TUNNEL, v1):
        daemon.cli("qdisc", "del", "dev", dev, "root")
    assert answered(o1, OV_B)
    # The tunnel end's name works wherever an end's name does: show, stats, del.
    for cmd in ("show", "stats"):
        rows = json.loads(daemon.cli("-j", cmd, TUNNEL).stdout)
        assert {r["ifname"] for r in rows} == {v1, TUNNEL}, rows
    daemon.cli("del", TUNNEL)
    assert not o1.has_link(v1)


def test_carrier_cut_takes_the_stretched_link_down(lab: Lab, daemon: PrivateDaemon) -> None:
    hosts, o1, v1 = facing_kernel(lab, daemon)
    before = stats(daemon, v1)
    daemon.cli("link", "set", "dev", v1, "carrier", "off")
    wait_for("NO-CARRIER", lambda: not has_carrier(o1, v1))
    assert "NO-CARRIER" in o1.link(v1)["flags"]
    assert show(daemon, TUNNEL)["carrier"] is False
    # Frames from the far side reach the tunnel end and are dropped there, counted.
    assert ping_loss(hosts.b, OV_A) == 100
    far = stats(daemon, TUNNEL)
    assert far["drops"].get("carrier", 0) >= 1, far
    # What veth1 sends meanwhile is dropped by the kernel (no carrier), in veth1's tx_dropped.
    assert ping_loss(o1, OV_B) == 100
    assert stats(daemon, v1)["tx_dropped"] > before["tx_dropped"]

    daemon.cli("link", "set", "dev", v1, "carrier", "on")
    wait_for("carrier back", lambda: carrier_active(o1, v1))
    forget_neighbours(o1, v1)  # both pinged during the cut
    forget_neighbours(hosts.b, "vx42")
    assert answered(o1, OV_B)
    assert answered(hosts.b, OV_A)
    changes = stats(daemon, v1)["carrier_changes"]
    assert changes == before["carrier_changes"] + 2  # one cut, one restore

    # A schedule on the tunnel end: one cut of 1 s, then done; the link comes back.
    daemon.cli("fault", "add", "dev", TUNNEL, "at", "+0s", "cut", "for", "1s")
    wait_for("cut", lambda: not has_carrier(o1, v1))
    wait_for("restored", lambda: carrier_active(o1, v1))
    wait_for("done", lambda: json.loads(daemon.cli("-j", "fault", "show").stdout) == [])
    assert answered(o1, OV_B)


def test_cut_with_bfd_takes_the_far_side_down(
    lab: Lab, daemon: PrivateDaemon, daemon_b: PrivateDaemon
) -> None:
    hosts = two_hosts(lab)
    o1, o2 = lab.netns("o1"), lab.netns("o2")
    v1, v2 = lab.name("veth1"), lab.name("veth2")
    tapveth_end(daemon, o1, v1, hosts.a, IP_B, far=("bfd",))
    tapveth_end(daemon_b, o2, v2, hosts.b, IP_A, far=("bfd",))
    o1.configure(v1, f"{OV_A}/24")
    o2.configure(v2, f"{OV_B}/24")
    wait_for("bfd up", lambda: has_carrier(o1, v1) and has_carrier(o2, v2))
    assert answered(o1, OV_B)

    daemon.cli("link", "set", "dev", v1, "carrier", "off")
    wait_for("far side down", lambda: not has_carrier(o2, v2))
    assert not has_carrier(o1, v1)
    far = show(daemon_b, TUNNEL)["bfd"]
    assert far["remote_state"] == "admindown", far  # told, not timed out
    assert ping_loss(o2, OV_A, count=3) == 100

    daemon.cli("link", "set", "dev", v1, "carrier", "on")
    wait_for("both back", lambda: carrier_active(o1, v1) and carrier_active(o2, v2))
    assert answered(o1, OV_B)


def test_config_declared_vxlan_pair(lab: Lab, tmp_path: Path) -> None:
    """A pair stretched over VXLAN from the configuration file passes ping to the kernel's
    vxlan on the other host; a reload changes its impairments in place."""
    hosts = two_hosts(lab)
    o1 = lab.netns("o1")
    v1 = lab.name("veth1")
    kernel_vxlan(hosts.b, hosts.ub, "vx42", IP_A, f"{OV_B}/24")
    cfg = tmp_path / "tapveth.toml"

    def write(end_netem: str, peer_netem: str) -> None:
        cfg.write_text(
            f'[[pair]]\n[pair.end]\nname = "{v1}"\nnetns = "{o1.name}"\n'
            f'addresses = ["{OV_A}/24"]\nup = true\n{end_netem}'
            f'[pair.peer]\nvxlan = "id {VNI} remote {IP_B} dstport {PORT} '
            f'underlay-netns {hosts.a.name}"\n{peer_netem}'
        )

    write("", 'netem = "delay 50ms"\n')
    check = subprocess.run(
        [sys.executable, "-m", "tapveth", "daemon", "--check-config", str(cfg)],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0 and "valid, 1 pair(s)" in check.stdout, check
    d = PrivateDaemon(log_level="debug", daemon_args=("--config", str(cfg))).start()
    try:
        # The daemon answers on its socket before it has made the configured pairs.
        wait_for("the configured end", lambda: o1.has_link(v1))
        wait_for("carrier", lambda: has_carrier(o1, v1))
        rtt = rtt_min_ms(o1, OV_B)
        print(f"config: delay 50ms out of the tunnel: rtt min {rtt} ms")
        assert rtt >= 50.0
        assert qdisc(d, TUNNEL)["kind"] == "netem" and qdisc(d, v1)["kind"] == "noqueue"
        index = o1.link(v1)["ifindex"]

        write('netem = "delay 50ms"\n', "")  # the other direction now
        out = d.cli("reload").stdout
        assert "0 added, 0 removed, 1 changed, 0 unchanged" in out, out
        assert qdisc(d, TUNNEL)["kind"] == "noqueue" and qdisc(d, v1)["kind"] == "netem"
        assert o1.link(v1)["ifindex"] == index  # changed in place, not made anew
        assert rtt_min_ms(o1, OV_B) >= 50.0

        write("", "")
        d.cli("reload")
        assert answered(o1, OV_B)
        assert o1.link(v1)["ifindex"] == index
    finally:
        rc = d.stop()
        print("daemon log:\n" + d.final_log)
    assert rc == 0
    assert not o1.has_link(v1)


def test_events_and_metrics_cover_both_directions(lab: Lab) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        listen = f"127.0.0.1:{s.getsockname()[1]}"
    d = PrivateDaemon(log_level="debug", daemon_args=("--metrics", listen)).start()
    try:
        _, o1, v1 = facing_kernel(lab, d)
        mon = start_stream(lab, d, ("-j", "monitor"), "tapveth: monitoring")
        d.cli("qdisc", "add", "dev", TUNNEL, "root", "netem", "delay", "5ms", "limit", "7")
        d.cli("qdisc", "add", "dev", v1, "root", "netem", "delay", "6ms")
        d.cli("link", "set", "dev", TUNNEL, "carrier", "off")
        d.cli("link", "set", "dev", TUNNEL, "carrier", "on")
        wait_for("carrier back", lambda: has_carrier(o1, v1))
        with urllib.request.urlopen(f"http://{listen}/metrics", timeout=10) as r:
            text = r.read().decode()
        mon.send_signal(signal.SIGINT)
        out, err = mon.communicate(timeout=30)
        assert mon.returncode == 0, err
    finally:
        rc = d.stop()
        print("daemon log:\n" + d.final_log)
    assert rc == 0
    events = [json.loads(line) for line in out.splitlines()]
    seen = [(e["event"], e["ifname"], e.get("fault") or e.get("netem")) for e in events]
    assert ("qdisc", TUNNEL, "limit 7 delay 5ms") in seen, seen
    assert ("qdisc", v1, "delay 6ms") in seen, seen
    assert ("fault", TUNNEL, "cut") in seen and ("fault", TUNNEL, "restore") in seen, seen
    assert [e["carrier"] for e in events if e["event"] == "carrier"] == [False, True], events
    limits = {
        s.labels["end"]: s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.name == "tapveth_netem_limit_packets"
    }
    assert limits == {TUNNEL: 7.0}, limits
    impaired = {
        s.labels["end"]
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.name.startswith("tapveth_netem_backlog_packets")
    }
    assert impaired == {TUNNEL, v1}, impaired


def test_a_vxlan_pair_cannot_persist(lab: Lab, daemon: PrivateDaemon) -> None:
    hosts = two_hosts(lab)
    o1 = lab.netns("o1")
    far = {"kind": "vxlan", "vni": VNI, "remote": IP_B, "underlay_netns": hosts.a.name}
    spec = {"end": {"name": lab.name("veth1"), "netns": o1.name}, "peer": far}
    with pytest.raises(ControlError, match="peer is vxlan cannot persist"):
        daemon.request("add", {"spec": spec, "persist": True})
    assert daemon.request("show") == [] and not os.path.exists(daemon.socket + ".persist")
