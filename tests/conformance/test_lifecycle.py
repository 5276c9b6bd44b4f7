"""Deleting a pair three ways, moving an end, defaults, and the documented differences."""

import json
from collections.abc import Callable

import pytest
from backends import PairUnderTest, bring_up, lower_up, wait_for
from netlab import Lab, sh

pytestmark = pytest.mark.integration


def gone(p: PairUnderTest, which: str) -> bool:
    ns, name = (p.ns_a, p.a) if which == "a" else (p.ns_b, p.b)
    return not ns.has_link(name)


@pytest.mark.parametrize(
    "how", ["ip link del A", "ip link del B", "ip netns del A's", "backend delete"]
)
def test_deleting_either_end_deletes_both(
    make_pair: Callable[..., PairUnderTest], how: str
) -> None:
    p = make_pair()
    bring_up(p)
    if how == "ip link del A":
        p.ns_a.ip("link", "del", p.a)
    elif how == "ip link del B":
        p.ns_b.ip("link", "del", p.b)
    elif how == "ip netns del A's":
        sh("ip", "netns", "del", p.ns_a.name)
    else:
        p.backend.delete(p.a, p.ns_a)
    wait_for("both ends gone", lambda: gone(p, "b") and (how == "ip netns del A's" or gone(p, "a")))


def test_move_keeps_the_pair(make_pair: Callable[..., PairUnderTest], lab: Lab) -> None:
    p = make_pair()
    bring_up(p)
    ns_c = lab.netns("c")
    p.ns_a.ip("link", "set", p.a, "netns", ns_c.name)
    # A arrives admin-down in its new namespace; B loses carrier at once
    assert "UP" not in ns_c.link(p.a)["flags"]
    wait_for("B loses carrier", lambda: not lower_up(p.ns_b, p.b))
    ns_c.ip("link", "set", p.a, "up")
    wait_for("carrier back", lambda: lower_up(p.ns_b, p.b) and lower_up(ns_c, p.a))
    ns_c.ip("addr", "add", "10.9.1.1/24", "dev", p.a)
    p.ns_b.ip("addr", "add", "10.9.1.2/24", "dev", p.b)
    r = ns_c.ping("10.9.1.2")
    assert r.returncode == 0, r.stdout
    # and it can come back
    ns_c.ip("link", "set", p.a, "netns", p.ns_a.name)
    p.ns_a.ip("link", "set", p.a, "up")
    wait_for("carrier after second move", lambda: lower_up(p.ns_b, p.b))


def test_defaults(make_pair: Callable[..., PairUnderTest]) -> None:
    p = make_pair()
    bring_up(p)
    for ns, name in ((p.ns_a, p.a), (p.ns_b, p.b)):
        link = ns.link(name)
        assert link["mtu"] == 1500
        assert link["txqlen"] == 1000
        assert link["qdisc"] == "noqueue"
        assert link["min_mtu"] == 68
        first = int(link["address"].split(":")[0], 16)
        assert first & 0x02 and not first & 0x01  # random, locally administered, unicast
    assert p.ns_a.link(p.a)["address"] != p.ns_b.link(p.b)["address"]


def test_documented_differences(make_pair: Callable[..., PairUnderTest]) -> None:
    """What a TAP cannot copy: each backend shows its own documented result."""
    p = make_pair()
    link = p.ns_a.link(p.a)
    assert ("link_netnsid" in link) is p.backend.shows_link_netns
    assert link["linkinfo"]["info_kind"] == p.backend.driver
    assert link["max_mtu"] == (65535 if p.backend.driver == "veth" else 65521)
    info = p.ns_a.run("ethtool", "-i", p.a).stdout
    assert f"driver: {p.backend.driver}" in info


def test_mtu_range(make_pair: Callable[..., PairUnderTest]) -> None:
    p = make_pair()
    p.ns_a.ip("link", "set", p.a, "mtu", "65521")
    p.ns_a.ip("link", "set", p.a, "mtu", "68")
    assert p.ns_a.ip("link", "set", p.a, "mtu", "67", check=False).returncode != 0
    assert json.loads(p.ns_a.ip("-j", "link", "show", p.a).stdout)[0]["mtu"] == 68
