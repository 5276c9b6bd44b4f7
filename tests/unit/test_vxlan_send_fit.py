"""The TAP end's gso_max_segs and the sender's UDP_SEGMENT sends agree: a super-frame of as
many full-sized segments as the TAP is told to accept leaves in one send, and the kernel's
default size (64 KiB) would take two (no root: the sockets are fakes)."""

import os
from typing import Any

import pytest
from tsoframes import super_frame, tso

from tapveth.core import vnet, vxlan
from tapveth.core.rules import Flow
from tapveth.daemon import vxlan_send
from tapveth.daemon.vxlan_send import TunnelSender, tap_gso_max_segs


class FakeSocket:
    """Records each sendmsg as (payload length, UDP_SEGMENT size or None); a lone datagram is
    written to its fd (the sender's os.write), here a pipe, read back by single()."""

    def __init__(self) -> None:
        self.sends: list[tuple[int, int | None]] = []
        self._r, self._w = os.pipe2(os.O_NONBLOCK)

    def fileno(self) -> int:
        return self._w

    def single(self) -> int:
        """Bytes of lone datagrams written since the last call."""
        try:
            return len(os.read(self._r, 1 << 20))
        except BlockingIOError:
            return 0

    def close(self) -> None:
        os.close(self._r)
        os.close(self._w)

    def sendmsg(self, buffers: list[Any], cmsgs: list[tuple[int, int, bytes]]) -> int:
        seg = [int.from_bytes(data, "little") for level, kind, data in cmsgs]
        self.sends.append((sum(len(b) for b in buffers), seg[0] if seg else None))
        return self.sends[-1][0]


def mss_for(mtu: int) -> int:
    return mtu - 20 - 32  # IPv4 header, TCP header with the timestamp option


@pytest.mark.parametrize("mtu", [1450, 1500, 1400, 9000, 1280])
def test_what_the_tap_accepts_is_one_send(mtu: int) -> None:
    assert vxlan_send.TSO and vxlan_send.GSO and vxlan_send.FIT  # the defaults
    segs = tap_gso_max_segs(mtu)
    assert segs is not None
    mss = mss_for(mtu)
    full = vxlan.HLEN + 14 + mtu
    assert segs * full <= 65507  # a UDP datagram's payload: one send can carry them
    fake = FakeSocket()
    try:
        sender = TunnelSender([fake], bytes(vxlan.HLEN), lambda end, exc: None)  # type: ignore[list-item]
        flow = Flow()
        # at most 64 KiB of frame (the kernel's gso_max_size) and segs full segments: one send
        for n in {min(segs, (65536 - 66) // mss), 2}:
            fake.sends.clear()
            frame = tso(super_frame(b"x" * (n * mss)), mss, vnet.GSO_TCPV4)
            assert sender.send_super(flow, frame) is None
            assert fake.sends == [(n * full, full)] and fake.single() == 0, (n, fake.sends)
        if (segs + 1) * mss <= 65536 - 66:  # one segment more: a second send for it alone
            fake.sends.clear()
            frame = tso(super_frame(b"x" * ((segs + 1) * mss)), mss, vnet.GSO_TCPV4)
            assert sender.send_super(flow, frame) is None
            assert fake.sends == [(segs * full, full)] and fake.single() == full, fake.sends
        assert flow.dropped == 0
    finally:
        fake.close()


def test_the_default_64k_super_frame_at_1450_took_two_sends() -> None:
    """Why the TAP is told: at MTU 1450, 64 KiB hold 46 segments and a send 44."""
    assert tap_gso_max_segs(1450) == 44
    assert (65536 - 66) // mss_for(1450) == 46


def test_without_tso_or_batching_the_kernel_default_stays(monkeypatch: pytest.MonkeyPatch) -> None:
    for switch in ("TSO", "GSO", "FIT"):
        with monkeypatch.context() as m:
            m.setattr(vxlan_send, switch, False)
            assert tap_gso_max_segs(1450) is None
    assert tap_gso_max_segs(None) is None
