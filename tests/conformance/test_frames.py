"""Frame admission at the MTU boundary (untagged and 802.1Q-tagged), GSO exemption is covered
by the TCP tests; delivery without MAC filtering; counters after a known number of frames."""

from collections.abc import Callable

import pytest
from backends import PairUnderTest, bring_up, send_frames

pytestmark = pytest.mark.integration


def test_mtu_boundary_untagged_and_tagged(make_pair: Callable[..., PairUnderTest]) -> None:
    # B's MTU 1400: frames up to 1400 + 18 = 1418 bytes pass, tagged or not; 1419 is dropped.
    p = make_pair(silent=True)
    p.ns_b.ip("link", "set", p.b, "mtu", "1400")
    bring_up(p)
    sizes = [60, 1417, 1418, 1419, 1420, 1514]
    results, got, _ = send_frames(p, sizes)
    assert got == {0, 1, 2}
    drop = p.backend.send_result_on_drop
    assert results == ["ok", "ok", "ok", drop, drop, drop]

    results, got, _ = send_frames(p, sizes, vlan=5, seq0=100)
    assert got == {100, 101, 102}
    assert results == ["ok", "ok", "ok", drop, drop, drop]

    c_a = p.backend.counters(p.a, p.ns_a)
    c_b = p.backend.counters(p.b, p.ns_b)
    assert c_a["tx_packets"] == 6 and c_a["tx_dropped"] == 6
    assert c_a["tx_bytes"] == 2 * (60 + 1417 + 1418)
    assert (c_b["rx_packets"], c_b["rx_bytes"]) == (c_a["tx_packets"], c_a["tx_bytes"])
    # 6 refused by the pair, plus the 3 untagged frames B's stack had no handler for (their
    # EtherType is unknown; tagged ones count in rx_nohandler instead, as on any device).
    assert c_b["rx_dropped"] == 6 + 3
    assert c_a["rx_packets"] == 0 and c_b["tx_packets"] == 0


def test_jumbo_boundary(make_pair: Callable[..., PairUnderTest]) -> None:
    # B's MTU 8999: 9017 passes, 9018 is dropped (A's MTU is raised so that A may send them).
    p = make_pair("mtu", "9100", silent=True)
    p.ns_b.ip("link", "set", p.b, "mtu", "8999")
    bring_up(p)
    results, got, _ = send_frames(p, [9016, 9017, 9018])
    assert got == {0, 1}
    assert results[:2] == ["ok", "ok"]


def test_mtu_change_applies_to_the_next_frame(make_pair: Callable[..., PairUnderTest]) -> None:
    p = make_pair(silent=True)
    bring_up(p)
    p.ns_b.ip("link", "set", p.b, "mtu", "1400")
    _, got, _ = send_frames(p, [1419])
    assert got == set()
    p.ns_b.ip("link", "set", p.b, "mtu", "1401")
    _, got, _ = send_frames(p, [1419], seq0=1)
    assert got == {1}


def test_no_mac_filtering(make_pair: Callable[..., PairUnderTest]) -> None:
    """Foreign unicast, broadcast and multicast all reach B, without subscription."""
    p = make_pair(silent=True)
    bring_up(p)
    dsts = ["02:00:00:aa:bb:cc", "ff:ff:ff:ff:ff:ff", "01:00:5e:00:00:fb", "33:33:00:00:00:01"]
    types = {}
    for i, dst in enumerate(dsts):
        _, got, pkttypes = send_frames(p, [100], dst=dst, seq0=i)
        assert got == {i}, dst
        types[dst] = pkttypes[str(i)]
    # PACKET_OTHERHOST = 3, PACKET_BROADCAST = 1, PACKET_MULTICAST = 2
    assert list(types.values()) == [3, 1, 2, 2]
    c_b = p.backend.counters(p.b, p.ns_b)
    assert c_b["rx_packets"] == 4 and c_b["rx_bytes"] == 400


def test_frames_to_a_down_peer_are_dropped_and_counted(
    make_pair: Callable[..., PairUnderTest],
) -> None:
    p = make_pair(silent=True)
    bring_up(p)
    p.ns_b.ip("link", "set", p.b, "down")
    _, got, _ = send_frames(p, [100, 100, 100])
    assert got == set()
    c_a = p.backend.counters(p.a, p.ns_a)
    assert c_a["tx_packets"] == 0
    assert c_a["tx_dropped"] == 3
