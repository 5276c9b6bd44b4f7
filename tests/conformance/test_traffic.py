"""Real sockets across the pair: TCP over an MTU mismatch (GSO super-frames skip the length
check), jumbo frames, IPv6 neighbour discovery."""

from collections.abc import Callable

import pytest
from backends import PairUnderTest, bring_up
from netlab import Netns, Stream

pytestmark = pytest.mark.integration
MB = 1 << 20


def addresses(p: PairUnderTest) -> None:
    p.ns_a.ip("addr", "add", "10.9.0.1/24", "dev", p.a)
    p.ns_b.ip("addr", "add", "10.9.0.2/24", "dev", p.b)


def tcp(src: Netns, dst: Netns, dst_ip: str, nbytes: int, seed: int) -> None:
    Stream(src, dst, dst_ip, nbytes, port=5401, seed=seed, timeout=30).finish()


def test_tcp_across_mtu_mismatch(make_pair: Callable[..., PairUnderTest]) -> None:
    """A at 1500, B at 1400: TCP from A still works, because its TSO super-frames skip the
    length check, as in veth; B's replies fit A."""
    p = make_pair()
    p.ns_b.ip("link", "set", p.b, "mtu", "1400")
    addresses(p)
    bring_up(p)
    tcp(p.ns_a, p.ns_b, "10.9.0.2", 20 * MB, 1)
    tcp(p.ns_b, p.ns_a, "10.9.0.1", 20 * MB, 2)


def test_jumbo_mtu_9000(make_pair: Callable[..., PairUnderTest]) -> None:
    p = make_pair("mtu", "9000")
    p.ns_b.ip("link", "set", p.b, "mtu", "9000")
    addresses(p)
    bring_up(p)
    r = p.ns_a.ping("10.9.0.2", count=3, size=8972, extra=("-M", "do"))
    assert r.returncode == 0 and " 0% packet loss" in r.stdout, r.stdout
    r = p.ns_a.ping("10.9.0.2", count=1, size=8973, extra=("-M", "do"))
    assert r.returncode != 0  # over the path MTU: refused at the sender
    tcp(p.ns_a, p.ns_b, "10.9.0.2", 20 * MB, 3)


def test_ipv6_neighbour_discovery(make_pair: Callable[..., PairUnderTest]) -> None:
    p = make_pair()
    p.ns_a.ip("-6", "addr", "add", "fd00:9::1/64", "dev", p.a, "nodad")
    p.ns_b.ip("-6", "addr", "add", "fd00:9::2/64", "dev", p.b, "nodad")
    bring_up(p)
    r = p.ns_a.ping("fd00:9::2", count=3)
    assert r.returncode == 0 and " 0% packet loss" in r.stdout, r.stdout
    neigh = p.ns_a.ip("-6", "neigh", "show", "dev", p.a).stdout
    assert "fd00:9::2" in neigh and p.ns_b.link(p.b)["address"] in neigh
