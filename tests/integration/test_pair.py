"""The classic veth experiment through tapveth, with real ping, TCP and UDP end to end."""

import time
from dataclasses import dataclass

import pytest
from netlab import Lab, Netns, Stream, finish, sh

from tapveth.private import PrivateDaemon

pytestmark = pytest.mark.integration

MB = 1 << 20


@dataclass
class Setup:
    ns1: Netns
    ns2: Netns
    if1: str
    if2: str


def classic(lab: Lab, daemon: PrivateDaemon, net: str = "10.0.0") -> Setup:
    """The experiment as a user types it: add in the root namespace, then plain iproute2."""
    ns1, ns2 = lab.netns("a"), lab.netns("b")
    if1, if2 = lab.name("veth1"), lab.name("veth2")
    daemon.cli("add", if1, "peer", "name", if2)
    sh("ip", "link", "set", if1, "netns", ns1.name)
    sh("ip", "link", "set", if2, "netns", ns2.name)
    ns1.configure(if1, f"{net}.1/24")
    ns2.configure(if2, f"{net}.2/24")
    return Setup(ns1, ns2, if1, if2)


def tcp_both_ways(a: Netns, a_ip: str, b: Netns, b_ip: str, nbytes: int) -> None:
    Stream(a, b, b_ip, nbytes, seed=1).finish()
    Stream(b, a, a_ip, nbytes, seed=2).finish()


def udp_sizes(src: Netns, dst: Netns, dst_ip: str) -> None:
    sizes = [1, 1472, 60000]
    recv = dst.spawn_traffic(
        "udp-recv", "--host", dst_ip, "--port", "5302", "--count", str(len(sizes)), "--timeout", "5"
    )
    sent = src.traffic(
        "udp-send",
        "--host",
        dst_ip,
        "--port",
        "5302",
        "--sizes",
        ",".join(map(str, sizes)),
        "--seed",
        "7",
    )
    got = finish(recv)
    assert got["datagrams"] == sent["datagrams"]
    assert [d["len"] for d in got["datagrams"]] == sizes


def test_classic_experiment_ping(lab: Lab, daemon: PrivateDaemon) -> None:
    s = classic(lab, daemon)
    r = s.ns1.ping("10.0.0.2", count=5, deadline=20)
    assert r.returncode == 0 and " 0% packet loss" in r.stdout, r.stdout
    link = s.ns1.link(s.if1)
    assert "LOWER_UP" in link["flags"] and link["operstate"] == "UP"


def test_ping6_link_local(lab: Lab, daemon: PrivateDaemon) -> None:
    s = classic(lab, daemon)
    ll = s.ns2.link_local(s.if2)
    s.ns1.link_local(s.if1)
    r = s.ns1.ping(f"{ll}%{s.if1}", count=3, deadline=20)
    assert r.returncode == 0 and " 0% packet loss" in r.stdout, r.stdout


def test_tcp_50mb_each_way_and_udp(lab: Lab, daemon: PrivateDaemon) -> None:
    s = classic(lab, daemon)
    tcp_both_ways(s.ns1, "10.0.0.1", s.ns2, "10.0.0.2", 50 * MB)
    udp_sizes(s.ns1, s.ns2, "10.0.0.2")
    udp_sizes(s.ns2, s.ns1, "10.0.0.1")


def test_end_moved_to_third_namespace(lab: Lab, daemon: PrivateDaemon) -> None:
    s = classic(lab, daemon)
    ns3 = lab.netns("c")
    s.ns1.ip("link", "set", s.if1, "netns", ns3.name)
    assert not s.ns1.has_link(s.if1)
    ns3.configure(s.if1, "10.0.0.1/24")
    r = ns3.ping("10.0.0.2", count=3, deadline=20)
    assert r.returncode == 0 and " 0% packet loss" in r.stdout, r.stdout
    ll = s.ns2.link_local(s.if2)
    ns3.link_local(s.if1)
    assert ns3.ping(f"{ll}%{s.if1}").returncode == 0
    tcp_both_ways(ns3, "10.0.0.1", s.ns2, "10.0.0.2", 50 * MB)
    udp_sizes(ns3, s.ns2, "10.0.0.2")
    shown = {e["ifname"]: e for e in daemon.request("show")}
    assert shown[s.if1]["netns"] == ns3.name
    assert shown[s.if2]["netns"] == s.ns2.name


def test_repeated_moves(lab: Lab, daemon: PrivateDaemon) -> None:
    s = classic(lab, daemon)
    spaces = [s.ns1, lab.netns("c"), lab.netns("d")]
    here = s.ns1
    for i in range(6):
        there = spaces[(i + 1) % len(spaces)]
        here.ip("link", "set", s.if1, "netns", there.name)
        there.configure(s.if1, "10.0.0.1/24")
        # The carrier comes back once the daemon has found the end in its new namespace
        # (README: differences from the kernel veth); a veth has it at once.
        deadline = time.monotonic() + 5
        while "LOWER_UP" not in there.link(s.if1)["flags"]:
            assert time.monotonic() < deadline, f"after move {i + 1}: no carrier"
            time.sleep(0.01)
        r = there.ping("10.0.0.2", count=2)
        assert r.returncode == 0, f"after move {i + 1} to {there.name}: {r.stdout}"
        here = there


def test_two_pairs_do_not_mix(lab: Lab, daemon: PrivateDaemon) -> None:
    """Both pairs use the same addresses; a sniffer on each end sees only its own pair's MACs."""
    p1 = classic(lab, daemon)
    p2 = Setup(lab.netns("c"), lab.netns("d"), lab.name("vethx"), lab.name("vethy"))
    daemon.cli("add", p2.if1, "netns", p2.ns1.name, "peer", "name", p2.if2, "netns", p2.ns2.name)
    p2.ns1.configure(p2.if1, "10.0.0.1/24")
    p2.ns2.configure(p2.if2, "10.0.0.2/24")
    macs = {id(p): {p.ns1.link(p.if1)["address"], p.ns2.link(p.if2)["address"]} for p in (p1, p2)}
    sniffers = [
        (p, ns.spawn_traffic("sniff", "--ifname", ifname, "--timeout", "4", "--count", "100000"))
        for p in (p1, p2)
        for ns, ifname in ((p.ns1, p.if1), (p.ns2, p.if2))
    ]
    pings = [
        p.ns1.lab.spawn(
            "ip",
            "netns",
            "exec",
            p.ns1.name,
            "ping",
            "-c",
            "200",
            "-i",
            "0.005",
            "-W",
            "2",
            "10.0.0.2",
        )
        for p in (p1, p2)
    ]
    tcp_both_ways(p1.ns1, "10.0.0.1", p1.ns2, "10.0.0.2", 4 * MB)
    for ping in pings:
        out, _ = ping.communicate(timeout=30)
        assert ping.returncode == 0, out
    for p, sniffer in sniffers:
        seen = finish(sniffer)
        assert sum(seen["by_src"].values()) > 100
        assert set(seen["by_src"]) <= macs[id(p)], seen["by_src"]
