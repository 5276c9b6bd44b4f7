"""The receive path of a vxlan end: datagrams from the tunnel decapsulated into its TAP.

With UDP_GRO one read may return several datagrams of one size end to end (the underlay's GRO
merged them). Runs of one TCP flow among them are merged into one super-frame for one TAP write
(core/vxlan.merge_tcp), as the kernel's GRO does; everything else is written frame by frame.
Every frame passes veth's admission (the TAP's admin state and MTU) and is counted in the end's
flow; datagrams refused before decapsulation are counted by reason.
"""

import errno
import logging
import os
import socket
import struct
from typing import TYPE_CHECKING, Literal

from tapveth.core import vnet, vxlan
from tapveth.core.rules import DropReason, admit, write_refusal
from tapveth.daemon.pair import End
from tapveth.daemon.vxlan_underlay import GRO, SOL_UDP, UDP_GRO

if TYPE_CHECKING:
    from tapveth.daemon.capture import Capture
    from tapveth.daemon.vxlan_end import VxlanEnd

log = logging.getLogger("tapveth")

BATCH = 64  # reads per wake-up
BUF_LEN = 65536 + 1024
NO_VNET = bytes(vnet.HDR_LEN)  # frames handed to the TAP: no offload, checksums to be verified
# Runs of one TCP flow in a UDP_GRO read are merged into one super-frame for the TAP, as the
# kernel's GRO does (TAPVETH_VXLAN_MERGE=0: one write per frame; see README, Across machines).
MERGE = GRO and os.environ.get("TAPVETH_VXLAN_MERGE", "1") != "0"
_GRO_CMSG = socket.CMSG_SPACE(4)
_INT = struct.Struct("=i")
_DONTWAIT = socket.MSG_DONTWAIT  # never wait: the send path looks here for an answer too


class TunnelReceiver:
    """Reads the tunnel's socket and hands each frame to the TAP, to BFD, or (while this
    direction is impaired or cut) to the end's queue."""

    def __init__(self, end: "VxlanEnd", rx: socket.socket, vni_field: bytes, remote: str) -> None:
        self._end = end
        self._rx = rx
        self._vni_field = vni_field
        self._remote = remote
        self._buf = bytearray(BUF_LEN)
        self._view = memoryview(self._buf)
        self._merge_buf = bytearray(BUF_LEN)  # TCP segments from the tunnel, merged
        self._merge_view = memoryview(self._merge_buf)
        self.udp_rx = 0  # datagrams received
        self.udp_reads = 0  # reads that got them (fewer when UDP_GRO merged some)
        self.drops: dict[str, int] = {}  # datagrams refused before decapsulation, by reason

    def count(self, reason: str) -> None:
        self.drops[reason] = self.drops.get(reason, 0) + 1

    def pump(self, tap: End) -> int:
        """Decapsulate what the socket holds now (at most BATCH reads) to the TAP; the number
        of reads that got a datagram."""
        caps = self._end.captures  # once a batch; each frame is shown to them in decap
        reads = self._pump(tap, caps)
        for cap in caps:
            cap.flush()
        return reads

    def _pump(self, tap: End, caps: "tuple[Capture, ...]") -> int:
        end = self._end
        buf, view = self._buf, self._view
        recv = self._rx.recvmsg_into if GRO else None
        recvfrom = self._rx.recvfrom_into
        remote, decap = self._remote, self.decap
        bufs = [buf]
        reads = 0
        for _ in range(BATCH):
            seg = 0
            try:
                if recv is None:
                    n, addr = recvfrom(buf, 0, _DONTWAIT)
                else:
                    n, anc, _flags, addr = recv(bufs, _GRO_CMSG, _DONTWAIT)
                    for level, kind, data in anc:
                        if level == SOL_UDP and kind == UDP_GRO:
                            seg = _INT.unpack_from(data)[0]  # an int: the size
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno in (errno.EINTR, errno.ECONNREFUSED):
                    continue
                log.warning("vxlan %s: receive failed: %s", end.spec.vni, exc)
                break
            reads += 1
            self.udp_reads += 1
            if not seg or seg >= n:
                self.udp_rx += 1
                if addr[0] != remote:
                    self.count(vxlan.RxDrop.SOURCE)
                elif not decap(tap, view[:n], n, caps):
                    break
                continue
            # merged runs go straight to the TAP: never while this direction is impaired
            # or cut, since those frames must pass decap's hand-off to their queue
            if addr[0] == remote and MERGE and not caps and end.impair is None and not end.cut:
                if not self._merged(tap, view, n, seg):
                    break
                continue
            for off in range(0, n, seg):  # coalesced by UDP_GRO: one sender, one size
                size = min(seg, n - off)
                self.udp_rx += 1
                if addr[0] != remote:
                    self.count(vxlan.RxDrop.SOURCE)
                elif not decap(tap, view[off : off + size], size, caps):
                    return reads
        return reads

    def _merged(self, tap: End, view: memoryview, n: int, seg: int) -> bool:
        """Hand what one UDP_GRO read got (datagrams of seg bytes, the last maybe shorter) to
        the TAP, runs of one TCP flow merged into super-frames (core/vxlan.merge_tcp: checked,
        checksums verified), the rest one by one through decap. False when the TAP is gone."""
        end = n - n % seg  # the full-size datagrams; a shorter last one goes alone
        off = 0
        while off < n:
            merged = 0
            if end - off >= 2 * seg:
                merged, length, l4, mss = vxlan.merge_tcp(
                    view[off:end], seg, (end - off) // seg, self._vni_field, self._merge_buf
                )
            if merged:
                self.udp_rx += merged
                gso = vnet.GSO_TCPV4 if l4 == vxlan.ETH_HLEN + 20 else vnet.GSO_TCPV6
                hlen = seg - vxlan.HLEN - mss
                hdr = vnet.pack(vnet.FLAG_NEEDS_CSUM, gso, hlen, mss, l4, 16)
                fate = self._to_tap(tap, hdr, self._merge_view[:length], length)
                if fate is False:
                    return False
                flow = self._end.out
                if fate is None:  # counted as the wire packets they were
                    flow.packets += merged
                    flow.bytes += merged * (seg - vxlan.HLEN)
                else:
                    for _ in range(merged):
                        flow.refused(fate)
                off += merged * seg
                continue
            size = min(seg, n - off)
            self.udp_rx += 1
            if not self.decap(tap, view[off : off + size], size, ()):
                return False
            off += size
        return True

    def _to_tap(
        self, tap: End, hdr: bytes, frame: memoryview, length: int
    ) -> DropReason | Literal[False] | None:
        """Write one frame with its virtio header into the TAP under the veth rules: None when
        written, the reason when refused, False when the TAP is gone."""
        fate = admit(length, True, tap.up, tap.mtu)
        if fate is not None:
            return fate
        try:
            os.writev(tap.fd, [hdr, frame])
        except OSError as exc:
            reason = write_refusal(exc.errno)
            if reason is None:
                self._end.gone(tap, exc)
                return False
            if reason is DropReason.PEER_DOWN:
                self._end.out.peer_counted += 1
            return reason
        return None

    def decap(self, tap: End, dgram: memoryview, n: int, caps: "tuple[Capture, ...]") -> bool:
        """Check one datagram from the remote and give its frame to the TAP (or to BFD),
        showing the frame to the captures with what became of it. False when the TAP is
        gone."""
        reason = vxlan.check(dgram, n, self._vni_field)
        if reason is not None:
            self.count(reason)
            return True
        end = self._end
        frame = dgram[vxlan.HLEN : n]
        if frame[:6] == vxlan.BFD_MAC:
            if end.bfd is None or not end.bfd.receive(frame):
                self.count(vxlan.RxDrop.BFD_INVALID)  # invalid, or BFD not configured here
            return True
        if end.impair is not None or end.cut:  # impaired or cut: see VxlanEnd.held
            return end.held(tap, frame, caps)
        flow = end.out
        length = n - vxlan.HLEN
        fate = admit(length, False, tap.up, tap.mtu)
        if fate is None:
            try:
                os.writev(tap.fd, [NO_VNET, frame])
            except OSError as exc:
                fate = write_refusal(exc.errno)
                if fate is None:
                    end.gone(tap, exc)
                    return False
                if fate is DropReason.PEER_DOWN:
                    flow.peer_counted += 1
            else:
                flow.forwarded(length)
        if fate is not None:
            flow.refused(fate)
        for cap in caps:
            cap.frame(end, frame, fate)
        return True
