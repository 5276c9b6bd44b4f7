"""A pair stretched across two "hosts" by a VXLAN tunnel: against the kernel's vxlan device,
against another tapveth daemon (with BFD carrying the carrier), MTU limits and hostile input
on the tunnel's socket."""

import functools
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from netlab import Lab, Netns, Stream, finish, private_daemon, sh
from underlay import (
    IP_A,
    IP_B,
    PORT,
    VNI,
    Hosts,
    has_carrier,
    kernel_vxlan,
    show,
    stats,
    tapveth_end,
    tcp_checksum_errors,
    two_hosts,
    wait_for,
)

from tapveth.core import vxlan
from tapveth.daemon.vxlan_send import tap_gso_max_segs
from tapveth.private import PrivateDaemon

pytestmark = pytest.mark.integration

MB = 1 << 20
OV_A, OV_B = "10.42.0.1", "10.42.0.2"


@pytest.fixture
def daemon_b() -> Iterator[PrivateDaemon]:
    with private_daemon("daemon B") as d:
        yield d


def ping_ok(ns: Netns, addr: str, count: int = 5, size: int = 56, *extra: str) -> bool:
    out = ns.ping(addr, count=count, size=size, extra=extra, deadline=20)
    return out.returncode == 0 and " 0% packet loss" in out.stdout


def capture(lab: Lab, host: Netns, dev: str, path: str) -> "Capture":
    return Capture(lab, host, dev, path)


class Capture:
    """tcpdump on an underlay interface, written to a file that tshark decodes as VXLAN."""

    def __init__(self, lab: Lab, host: Netns, dev: str, path: str) -> None:
        self.path = path
        self.proc = lab.spawn(
            "ip", "netns", "exec", host.name, "tcpdump", "-i", dev, "-n", "-U",
            "--immediate-mode", "-w", path, "-c", "400", "udp", "port", str(PORT),
        )  # fmt: skip
        assert self.proc.stderr is not None
        line = self.proc.stderr.readline()  # "listening on …" once the capture runs
        assert "listening on" in line, line

    def decode(self) -> list[list[str]]:
        time.sleep(1.0)  # let tcpdump write what it read before it is stopped
        self.proc.terminate()
        self.proc.wait(10)
        out = sh(
            "tshark", "-r", self.path, "-d", f"udp.port=={PORT},vxlan", "-T", "fields",
            "-E", "separator=|", "-E", "aggregator=;", "-e", "ip.src", "-e", "udp.srcport",
            "-e", "udp.dstport", "-e", "vxlan.vni", "-e", "eth.type", "-e", "icmp.type",
        ).stdout  # fmt: skip
        # One row a packet: outer source, outer ports, VNI, inner EtherType, ICMP type (fields
        # found in both headers are joined by ';', outer first).
        rows = []
        for line in out.splitlines():
            src, sport, dport, vni, etype, icmp = line.split("|")
            outer = [v.split(";")[0] for v in (src, sport, dport)]
            rows.append([*outer, vni, etype.split(";")[-1], icmp])
        return rows


def test_interop_with_kernel_vxlan(lab: Lab, daemon: PrivateDaemon) -> None:
    hosts = two_hosts(lab)
    o1 = lab.netns("o1")
    v1 = lab.name("veth1")
    tapveth_end(daemon, o1, v1, hosts.a, IP_B)
    o1.configure(v1, f"{OV_A}/24")
    wait_for("carrier", lambda: has_carrier(o1, v1))  # set by the daemon, just after
    kernel_vxlan(hosts.b, hosts.ub, "vx42", IP_A, f"{OV_B}/24")

    with tempfile.TemporaryDirectory() as tmp:
        cap = capture(lab, hosts.b, hosts.ub, os.path.join(tmp, "u.pcap"))
        assert ping_ok(o1, OV_B, count=5)
        rows = cap.decode()
    # Both directions decode as VXLAN with our VNI; the pings from A leave from one source
    # port (one inner flow, one hash), within the daemon's pool of ports.
    from_a = [r for r in rows if r[0] == IP_A]
    from_b = [r for r in rows if r[0] == IP_B]
    assert from_a and from_b, rows
    assert {r[3] for r in rows} == {str(VNI)}, rows
    assert {r[2] for r in rows} == {str(PORT)}, rows
    echo_a = [r for r in from_a if r[5] == "8"]
    assert len(echo_a) == 5, rows
    assert len({r[1] for r in echo_a}) == 1, echo_a
    end = show(daemon, "vxlan:42")
    assert end["remote"] == IP_B and end["vni"] == VNI and end["dstport"] == PORT
    ports = end["srcports"]
    assert isinstance(ports, list) and int(echo_a[0][1]) in ports
    lo, hi = (int(x) for x in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    assert all(lo <= p <= hi for p in ports)  # the underlay's ephemeral range, as the kernel's

    # The end's TAP offers TSO and checksum offload: the daemon segments and checksums.
    features = o1.run("ethtool", "-k", v1).stdout
    assert "tcp-segmentation-offload: on" in features, features
    assert "tx-checksumming: on" in features, features
    # ...and takes super-frames of no more segments than one UDP_SEGMENT send holds (44 of
    # 1472 bytes at MTU 1450), so that each leaves in one send
    (detail,) = json.loads(o1.run("ip", "-d", "-j", "link", "show", "dev", v1).stdout)
    assert detail["gso_max_segs"] == 44, detail
    bad_before = [tcp_checksum_errors(ns) for ns in (o1, hosts.b)]
    # 50 MB each way, checked end to end (SHA-256 on both sides).
    Stream(o1, hosts.b, OV_B, 50 * MB, seed=1).finish()
    Stream(hosts.b, o1, OV_A, 50 * MB, port=5302, seed=2).finish()
    # No segment the daemon made (A->B) or merged (B->A) had a wrong TCP checksum.
    assert [tcp_checksum_errors(ns) for ns in (o1, hosts.b)] == bad_before
    both = {e["ifname"]: e for e in daemon.request("stats")}  # one snapshot of both ends
    s_end, s_far = both[v1], both["vxlan:42"]
    assert s_end["rx_packets"] == s_far["tx_packets"] and s_end["tx_packets"] == s_far["rx_packets"]
    assert isinstance(s_end["tx_bytes"], int) and s_end["tx_bytes"] > 50 * MB
    assert s_far["underlay_drops"] == {}
    # Facing a far side without BFD, the carrier follows the local end alone.
    assert has_carrier(o1, v1)
    o1.ip("link", "set", v1, "down")
    o1.ip("link", "set", v1, "up")
    wait_for("carrier back", lambda: has_carrier(o1, v1))


def bfd_pair(
    lab: Lab, da: PrivateDaemon, db: PrivateDaemon
) -> tuple[Hosts, Netns, Netns, str, str]:
    hosts = two_hosts(lab)
    o1, o2 = lab.netns("o1"), lab.netns("o2")
    v1, v2 = lab.name("veth1"), lab.name("veth2")
    # The default timers (300 ms x 3): the shared test machine stalls processes for long
    # enough that 100 ms x 3 flapped under load.
    tapveth_end(da, o1, v1, hosts.a, IP_B, far=("bfd",))
    tapveth_end(db, o2, v2, hosts.b, IP_A, far=("bfd",))
    o1.configure(v1, f"{OV_A}/24")
    o2.configure(v2, f"{OV_B}/24")
    return hosts, o1, o2, v1, v2


def bfd_of(d: PrivateDaemon) -> dict[str, Any]:
    session: dict[str, Any] = show(d, "vxlan:42")["bfd"]
    return session


def heard_admin_down(d: PrivateDaemon) -> bool:
    s = bfd_of(d)
    return bool(s["remote_state"] == "admindown" and s["diag"] == "neighbor_down")


def lost_carrier(ns: Netns, dev: str) -> Callable[[], bool]:
    return lambda: not has_carrier(ns, dev)


def test_tapveth_on_both_sides_with_bfd(
    lab: Lab, daemon: PrivateDaemon, daemon_b: PrivateDaemon
) -> None:
    hosts, o1, o2, v1, v2 = bfd_pair(lab, daemon, daemon_b)
    took = wait_for("bfd up", lambda: has_carrier(o1, v1) and has_carrier(o2, v2))
    print(f"carrier after {took:.2f} s")
    wait_for("session up", lambda: bfd_of(daemon)["state"] == "up")
    assert ping_ok(o1, OV_B) and ping_ok(o2, OV_A)
    Stream(o1, o2, OV_B, 50 * MB, seed=1).finish()
    Stream(o2, o1, OV_A, 50 * MB, port=5302, seed=2).finish()

    # Admin down on either side: the other side loses carrier (AdminDown over BFD), and
    # gets it back when the end comes up again.
    for ns, dev, other, odev, far_daemon in (
        (o2, v2, o1, v1, daemon),
        (o1, v1, o2, v2, daemon_b),
    ):
        ns.ip("link", "set", dev, "down")
        took = wait_for("far carrier off", lost_carrier(other, odev))
        print(f"{dev} down: {odev} NO-CARRIER after {took:.2f} s")
        # It was told so (AdminDown, RFC 5880 diagnostic 3 on its side), not timed out.
        wait_for("admindown heard", functools.partial(heard_admin_down, far_daemon))
        ns.ip("link", "set", dev, "up")
        wait_for("carrier back", lambda: has_carrier(o1, v1) and has_carrier(o2, v2))

    # A cut underlay: both sides time out; mended, both come back.
    hosts.a.ip("link", "set", hosts.ua, "down")
    took = wait_for("carrier off", lambda: not has_carrier(o1, v1) and not has_carrier(o2, v2))
    print(f"underlay cut: NO-CARRIER on both after {took:.2f} s")
    wait_for("timed out", lambda: bfd_of(daemon_b)["diag"] == "time_expired")
    hosts.a.ip("link", "set", hosts.ua, "up")
    wait_for("carrier back", lambda: has_carrier(o1, v1) and has_carrier(o2, v2))
    assert ping_ok(o1, OV_B)
    s = stats(daemon, "vxlan:42")
    counters = s["carrier_changes"]
    assert isinstance(counters, int) and counters >= 8, s


def test_mtu_fits_or_is_dropped_and_counted(lab: Lab, daemon: PrivateDaemon) -> None:
    hosts = two_hosts(lab, mtu=1500)
    o1, o2 = lab.netns("o1"), lab.netns("o2")
    v1, v2 = lab.name("veth1"), lab.name("veth2")
    tapveth_end(daemon, o1, v1, hosts.a, IP_B, end=("mtu", "1450"))
    kernel_vxlan(hosts.b, hosts.ub, "vx42", IP_A, f"{OV_B}/24")
    o1.configure(v1, f"{OV_A}/24")
    wait_for("carrier", lambda: has_carrier(o1, v1))  # set by the daemon, just after
    del o2, v2
    # 1450 is 1500 less the tunnel's 50 bytes: full-size frames pass, both ways.
    assert ping_ok(o1, OV_B, 5, 1450 - 28, "-M", "do")
    assert ping_ok(hosts.b, OV_A, 5, 1450 - 28, "-M", "do")
    Stream(o1, hosts.b, OV_B, 5 * MB, seed=3).finish()
    before = stats(daemon, v1)["drops"]
    assert isinstance(before, dict) and before.get("mtu", 0) == 0
    # At 1500 the end sends what the underlay cannot carry: dropped, counted, never fragmented.
    o1.ip("link", "set", v1, "mtu", "1500")
    out = o1.ping(OV_B, count=5, size=1500 - 28, extra=("-M", "do"))  # none answered
    assert out.returncode != 0 and "100% packet loss" in out.stdout, out.stdout
    after = stats(daemon, v1)["drops"]
    assert isinstance(after, dict) and after.get("mtu", 0) == 5, after
    assert ping_ok(o1, OV_B, 3, 1450 - 28, "-M", "do")  # what fits still crosses


def test_tap_segments_follow_the_mtu(lab: Lab, daemon: PrivateDaemon) -> None:
    # The end's TAP takes super-frames of no more segments than one UDP_SEGMENT send holds;
    # that count depends on the MTU, and follows it when the MTU changes.
    hosts = two_hosts(lab, mtu=1500)
    o1, v1 = lab.netns("o1"), lab.name("veth1")
    tapveth_end(daemon, o1, v1, hosts.a, IP_B)

    def segs() -> int:
        (detail,) = json.loads(o1.run("ip", "-d", "-j", "link", "show", "dev", v1).stdout)
        return int(detail["gso_max_segs"])

    def segs_are(want: int) -> Callable[[], bool]:
        return lambda: segs() == want

    assert segs() == 44  # 1472-byte datagrams at MTU 1450, 65000 bytes a send
    for mtu, want in ((1500, 42), (1200, 53), (1450, 44)):
        assert tap_gso_max_segs(mtu) == want
        o1.ip("link", "set", v1, "mtu", str(mtu))
        wait_for(f"gso_max_segs {want} at mtu {mtu}", segs_are(want))


HOSTILE_SENDER = """
import socket, struct, sys, json
dst, port, vni, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
src = sys.argv[5] if len(sys.argv) > 5 else None
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
if src:
    s.bind((src, 0))
mark = b"TVHOSTILE"
frame = b"\\xff" * 6 + b"\\x02\\x00\\x00\\x00\\x00\\x01" + b"\\x88\\xb5" + mark + bytes(40)
def hdr(flags, v):
    return struct.pack("!B3xI", flags, v << 8)
sent = {"vni": 0, "truncated": 0, "no_i_flag": 0, "flood": 0, "spoofed": 0}
if src:
    for _ in range(count):
        s.sendto(hdr(8, vni) + frame, (dst, port)); sent["spoofed"] += 1
else:
    for _ in range(count):
        s.sendto(hdr(8, vni + 1) + frame, (dst, port)); sent["vni"] += 1
        s.sendto(hdr(8, vni)[:5], (dst, port)); sent["truncated"] += 1
        s.sendto(hdr(8, vni) + frame[:10], (dst, port)); sent["truncated"] += 1
        s.sendto(hdr(0, vni) + frame, (dst, port)); sent["no_i_flag"] += 1
    for i in range(20 * count):
        s.sendto(hdr(8, (vni + 2 + i) & 0xFFFFFF) + frame, (dst, port)); sent["flood"] += 1
print(json.dumps(sent))
"""


def test_hostile_input_on_the_tunnel(lab: Lab, daemon: PrivateDaemon) -> None:
    hosts = two_hosts(lab)
    o1 = lab.netns("o1")
    v1 = lab.name("veth1")
    tapveth_end(daemon, o1, v1, hosts.a, IP_B)
    o1.configure(v1, f"{OV_A}/24")
    wait_for("carrier", lambda: has_carrier(o1, v1))  # set by the daemon, just after
    kernel_vxlan(hosts.b, hosts.ub, "vx42", IP_A, f"{OV_B}/24")
    hosts.b.ip("addr", "add", "192.0.2.3/24", "dev", hosts.ub)  # a spoofer on the underlay
    assert ping_ok(o1, OV_B, 2)
    sniffer = o1.spawn_traffic("sniff", "--ifname", v1, "--timeout", "6", "--count", "100000")
    pinger = lab.spawn(
        "ip", "netns", "exec", o1.name, "ping", "-c", "40", "-i", "0.1", "-w", "30", OV_B
    )  # fmt: skip
    n = 200
    hosts.b.run(sys.executable, "-c", HOSTILE_SENDER, IP_A, str(PORT), str(VNI), str(n))
    hosts.b.run(
        sys.executable, "-c", HOSTILE_SENDER, IP_A, str(PORT), str(VNI), str(n), "192.0.2.3"
    )
    out, _ = pinger.communicate(timeout=60)
    assert pinger.returncode == 0 and " 0% packet loss" in out, out  # good traffic kept going
    seen = finish(sniffer)
    assert seen["marked"] == 0, seen  # nothing hostile reached the TAP
    time.sleep(0.3)
    drops = stats(daemon, "vxlan:42")["underlay_drops"]
    assert isinstance(drops, dict)
    assert drops.get(vxlan.RxDrop.SOURCE) == n, drops
    assert drops.get(vxlan.RxDrop.MALFORMED) == 3 * n, drops  # two truncations, the I flag
    # Wrong VNIs: the n singles and the flood; a full socket buffer may have shed part of the
    # flood in the kernel, so count what the socket saw.
    assert drops.get(vxlan.RxDrop.VNI, 0) >= n, drops
    sa = stats(daemon, "vxlan:42")
    total = sa["udp_rx"]
    assert isinstance(total, int) and isinstance(sa["tx_packets"], int)
    assert total == sa["tx_packets"] + sum(drops.values()) + sa["tx_dropped"], sa
    assert daemon.request("ping")["pairs"] == 1


def test_bad_vxlan_words_exit_2(lab: Lab, daemon: PrivateDaemon) -> None:
    ns = lab.netns("x")
    for words, message in (
        (["peer", "vxlan", "remote", IP_B], "missing 'id VNI'"),
        (["peer", "vxlan", "id", "16777216", "remote", IP_B], "0..16777215"),
        (["peer", "vxlan", "id", "1", "remote", "239.1.1.1"], "not a unicast"),
        (["peer", "vxlan", "id", "1", "remote", IP_B, "underlay-netns", "nope-x"], "nope-x"),
        (["peer", "vxlan", "id", "1", "remote", IP_B, "bogus"], "unknown word"),
    ):
        proc = daemon.cli("add", lab.name("e"), "netns", ns.name, *words, check=False)
        assert proc.returncode == 2, (words, proc)
        assert message in proc.stderr and proc.stderr.count("\n") == 1, (words, proc.stderr)
    assert daemon.request("show") == []
    assert not ns.has_link(lab.name("e"))


def daemon_udp(host: Netns, d: PrivateDaemon) -> list[str]:
    pid = d.request("ping")["pid"]
    out = host.run("ss", "-u", "-a", "-n", "-p").stdout
    return [ln for ln in out.splitlines() if f"pid={pid}," in ln]


def test_lifecycle_closes_the_tunnel(lab: Lab, daemon: PrivateDaemon) -> None:
    hosts = two_hosts(lab)
    o1 = lab.netns("o1")
    v1 = lab.name("veth1")
    tapveth_end(daemon, o1, v1, hosts.a, IP_B)
    assert len(daemon_udp(hosts.a, daemon)) == 17  # dstport + 16 source ports
    # The same dstport twice in one underlay namespace: refused, nothing half made.
    o2 = lab.netns("o2")
    proc = daemon.cli(
        "add", lab.name("veth2"), "netns", o2.name, "peer", "vxlan", "id", "43", "remote",
        IP_B, "dstport", str(PORT), "underlay-netns", hosts.a.name, check=False,
    )  # fmt: skip
    assert proc.returncode == 2 and "cannot receive on" in proc.stderr, proc.stderr
    assert not o2.has_link(lab.name("veth2")) and len(daemon.request("show")) == 2
    # Deleting the end with ip link removes the pair and closes the tunnel's sockets.
    o1.ip("link", "del", v1)
    wait_for("pair gone", lambda: daemon.request("show") == [])
    assert daemon_udp(hosts.a, daemon) == []
    # Deleting the end's namespace does the same.
    tapveth_end(daemon, o2, lab.name("veth3"), hosts.a, IP_B)
    assert len(daemon_udp(hosts.a, daemon)) == 17
    sh("ip", "netns", "del", o2.name)
    wait_for("pair gone", lambda: daemon.request("show") == [])
    assert daemon_udp(hosts.a, daemon) == []
    # And `tapveth del` by the TAP end's name.
    tapveth_end(daemon, o1, v1, hosts.a, IP_B)
    daemon.cli("del", v1)
    assert daemon.request("show") == [] and daemon_udp(hosts.a, daemon) == []
    assert not o1.has_link(v1)


def test_ipv6_underlay_with_kernel_vxlan(lab: Lab, daemon: PrivateDaemon) -> None:
    hosts = two_hosts(lab)
    a6, b6 = "2001:db8:42::1", "2001:db8:42::2"
    for ns, dev, ip in ((hosts.a, hosts.ua, a6), (hosts.b, hosts.ub, b6)):
        ns.ip("addr", "add", f"{ip}/64", "dev", dev, "nodad")
    o1 = lab.netns("o1")
    v1 = lab.name("veth1")
    tapveth_end(daemon, o1, v1, hosts.a, b6)
    assert o1.link(v1)["mtu"] == 1430  # 1500 less 70 over IPv6, as the kernel's vxlan
    o1.configure(v1, f"{OV_A}/24")
    wait_for("carrier", lambda: has_carrier(o1, v1))  # set by the daemon, just after
    kernel_vxlan(hosts.b, hosts.ub, "vx42", a6, f"{OV_B}/24")
    assert hosts.b.link("vx42")["mtu"] == 1430
    assert ping_ok(o1, OV_B, 3, 1430 - 28, "-M", "do")  # full size, both ways
    Stream(o1, hosts.b, OV_B, 5 * MB, seed=4).finish()
    assert show(daemon, "vxlan:42")["remote"] == b6
