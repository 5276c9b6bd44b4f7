"""veth's rules as pure functions: admission at the MTU boundary, carrier, counters."""

import errno
import re
from pathlib import Path

import pytest

from tapveth.core import vnet
from tapveth.core.rules import (
    TAP_GONE,
    Carrier,
    DropReason,
    EndCounters,
    Flow,
    admit,
    carrier,
    max_frame_len,
    write_refusal,
)


@pytest.mark.parametrize(
    ("mtu", "passes", "drops"),
    [(1400, 1418, 1419), (1500, 1518, 1519), (8999, 9017, 9018), (68, 86, 87)],
)
def test_mtu_boundary_matches_veth(mtu: int, passes: int, drops: int) -> None:
    # Measured on the kernel veth: MTU 1400 passes 1418 and drops 1419; 8999: 9017 / 9018.
    assert max_frame_len(mtu) == passes
    assert admit(passes, gso=False, peer_up=True, peer_mtu=mtu) is None
    assert admit(drops, gso=False, peer_up=True, peer_mtu=mtu) is DropReason.MTU


def test_gso_superframes_skip_the_length_check() -> None:
    assert admit(65000, gso=True, peer_up=True, peer_mtu=1400) is None
    assert admit(65000, gso=False, peer_up=True, peer_mtu=1400) is DropReason.MTU


def test_peer_down_and_runts() -> None:
    assert admit(100, gso=False, peer_up=False, peer_mtu=1500) is DropReason.PEER_DOWN
    assert admit(13, gso=False, peer_up=True, peer_mtu=1500) is DropReason.RUNT
    assert admit(14, gso=False, peer_up=True, peer_mtu=1500) is None


@pytest.mark.parametrize(
    ("a", "b", "on"),
    [(False, False, False), (True, False, False), (False, True, False), (True, True, True)],
)
def test_carrier_rule(a: bool, b: bool, on: bool) -> None:
    assert carrier(a, b) is on


def test_carrier_counts_only_real_transitions() -> None:
    c = Carrier()
    assert (c.on, c.changes, c.up_count, c.down_count) == (False, 1, 0, 1)  # as veth_newlink
    assert not c.update(True, False)
    assert c.update(True, True)
    assert (c.on, c.changes, c.up_count, c.down_count) == (True, 2, 1, 1)
    assert not c.update(True, True)
    assert c.update(False, True)
    assert (c.changes, c.up_count, c.down_count) == (3, 1, 2)


def test_flows_give_veth_counters() -> None:
    a_to_b, b_to_a = Flow(), Flow()
    a_to_b.forwarded(98)
    a_to_b.forwarded(42)
    a_to_b.refused(DropReason.MTU)
    b_to_a.forwarded(98)
    b_to_a.refused(DropReason.PEER_DOWN)
    b_to_a.refused(DropReason.PEER_DOWN)
    a = EndCounters.of(a_to_b, b_to_a)
    b = EndCounters.of(b_to_a, a_to_b)
    assert (a.tx_packets, a.tx_bytes, a.tx_dropped) == (2, 140, 1)
    assert (b.rx_packets, b.rx_bytes, b.rx_dropped) == (2, 140, 1)  # B's rx is A's tx
    # peer_down counts on the sender only: veth stops the sender's queue when its peer goes
    # down, so such frames never reach the peer's counters.
    assert (a.rx_packets, a.rx_bytes, a.rx_dropped) == (1, 98, 0)
    assert (b.tx_packets, b.tx_dropped) == (1, 2)
    assert a.drops == {"mtu": 1}
    assert b.drops == {"peer_down": 2}


def test_kernel_drops_added_once() -> None:
    """The TAPs' own drops are added; a refusal the receiving TAP counted itself (its write
    failed with EIO: it had just gone down) is not counted on it twice, nor at all, since it
    is a peer_down refusal."""
    a_to_b, b_to_a = Flow(), Flow()
    b_to_a.refused(DropReason.PEER_DOWN)
    b_to_a.peer_counted += 1
    b_to_a.refused(DropReason.MTU)
    a = EndCounters.of(a_to_b, b_to_a, kernel_drops=(1 + 3, 5))
    assert a.rx_dropped == 1 + 3  # the MTU refusal, and 3 the kernel dropped on A itself
    assert a.tx_dropped == 5


def test_vnet_gso_detection() -> None:
    assert not vnet.is_gso(vnet.pack())
    assert not vnet.is_gso(vnet.pack(gso_type=vnet.GSO_ECN))
    assert vnet.is_gso(vnet.pack(gso_type=vnet.GSO_TCPV4, gso_size=1448))
    assert vnet.is_gso(vnet.pack(gso_type=vnet.GSO_TCPV6 | vnet.GSO_ECN))
    assert len(vnet.pack()) == vnet.HDR_LEN


def test_a_cut_carrier_stays_off_whatever_the_admin_states() -> None:
    c = Carrier()
    assert c.update(True, True) and c.on and c.changes == 2
    c.cut = True
    assert c.update(True, True) and not c.on and c.changes == 3
    assert not c.update(False, True) and not c.update(True, True)
    c.cut = False
    assert c.update(True, True) and c.on and c.changes == 4


@pytest.mark.parametrize(
    ("err", "reason"),
    [
        (errno.EIO, DropReason.PEER_DOWN),
        (errno.EINVAL, DropReason.INVALID_HEADER),
        (errno.ENOBUFS, DropReason.WRITE_ERROR),
        (errno.EAGAIN, DropReason.WRITE_ERROR),
        (None, DropReason.WRITE_ERROR),
        *((e, None) for e in sorted(TAP_GONE)),
    ],
)
def test_a_refused_write_is_a_reason_or_a_lost_end(
    err: int | None, reason: DropReason | None
) -> None:
    assert write_refusal(err) is reason


def test_the_native_thread_loses_an_end_on_the_same_errnos() -> None:
    source = Path(__file__).parents[2] / "tapveth" / "daemon" / "_native_relay.c"
    (body,) = re.findall(r"static int fatal_errno\(int err\) \{(.*?)\n\}", source.read_text(), re.S)
    names = re.findall(r"err == (E[A-Z]+)", body)
    assert {getattr(errno, n) for n in names} == TAP_GONE
