"""The send path of a vxlan end: frames from its TAP encapsulated into the tunnel.

The TAP offers TSO and checksum offload (TAP_OFFLOADS): a TCP super-frame comes in one read and
is cut here into wire-sized segments (core/offload.segment_tcp), partial checksums are completed
here. Datagrams of one size bound for one source port leave together in one sendmsg with
UDP_SEGMENT: the kernel cuts them apart in one trip through its stack.
"""

import errno
import os
import socket
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING

from tapveth.core import offload, vnet, vxlan
from tapveth.core.rules import DropReason, Flow
from tapveth.daemon.pair import End
from tapveth.daemon.vxlan_underlay import SOL_UDP, UDP_SEGMENT
from tapveth.kernel.tap import TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6

if TYPE_CHECKING:
    from tapveth.core.bfd import Session

BATCH = 64  # frames read from the TAP per wake-up
BUF_LEN = 65536 + 1024
_HDR = vnet.HDR_LEN
_GSO_MAX = 65000  # bytes in one UDP_SEGMENT send (the UDP length field bounds it)
_GSO_SEGS = 64  # datagrams in one send (the kernel's UDP_MAX_SEGMENTS is 64 or more)
# Frames are batched into UDP_SEGMENT sends (TAPVETH_VXLAN_GSO=0: one send per frame, for
# measurements): measured, it saves about a third of the CPU per byte (see README, Across machines).
GSO = os.environ.get("TAPVETH_VXLAN_GSO", "1") != "0"
# The end's TAP offers TSO and checksum offload: a TCP super-frame comes in one read and is cut
# into wire-sized segments here, partial checksums are completed here (TAPVETH_VXLAN_TSO=0: no
# offload, the kernel segments and checksums before the read; see README, Across machines).
TSO = os.environ.get("TAPVETH_VXLAN_TSO", "1") != "0"
TAP_OFFLOADS = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 if TSO else 0
# A super-frame of more segments than one UDP_SEGMENT send holds leaves in two sends, the second
# with the last few segments (64 KiB at MTU 1450 is 46 segments, a send holds 44). So the TAP's
# gso_max_segs is set to what a send holds: one send per super-frame, about 10% more TCP and 10%
# less CPU per GB sending (README, Across machines; TAPVETH_VXLAN_FIT=0: the kernel's default).
FIT = os.environ.get("TAPVETH_VXLAN_FIT", "1") != "0"
_VNET = struct.Struct("<BBHHHH")
_TCP_GSO = (vnet.GSO_TCPV4, vnet.GSO_TCPV6)


def tap_gso_max_segs(mtu: int | None) -> int | None:
    """The TAP's gso_max_segs for an end of this MTU: the full-sized segments one UDP_SEGMENT
    send holds; None (the kernel's default) when the TAP offers no TSO or sends are single."""
    if not (TSO and GSO and FIT) or mtu is None:
        return None
    return _per_send(vxlan.HLEN + vxlan.ETH_HLEN + mtu)  # a full segment as _send_super cuts it


def _per_send(full: int) -> int:
    """Datagrams of `full` bytes that one UDP_SEGMENT send carries."""
    return max(1, min(_GSO_MAX // full, _GSO_SEGS))


class TunnelSender:
    """Encapsulates what a TAP sends toward the remote, from the source port its flow hashes
    to, counting each frame in the TAP end's flow."""

    def __init__(
        self,
        tx: list[socket.socket],
        vxhdr: bytes,
        on_gone: Callable[[End, OSError], None],
    ) -> None:
        self._tx = tx
        self._tx_fds = [s.fileno() for s in tx]
        self._n_tx = len(tx)
        self._vxhdr = vxhdr
        self._on_gone = on_gone
        self._hdr = bytearray(_HDR)
        # datagrams laid end to end for one UDP_SEGMENT send; a read lands after the last one
        self._seg_view = memoryview(bytearray(_GSO_MAX + BUF_LEN))
        self._gso_buf = bytearray(2 * BUF_LEN)  # a super-frame's segments, headers repeated
        self._gso_view = memoryview(self._gso_buf)
        self._cmsg: dict[int, list[tuple[int, int, bytes]]] = {}  # UDP_SEGMENT by size
        self.flow = Flow()  # replaced by the TAP end's in pump()

    def pump(self, tap: End, session: "Session | None") -> int:
        """Encapsulate what the TAP holds now (at most BATCH frames) toward the remote; the
        number of frames read. While a capture watches the TAP end, each frame is sent on its
        own and shown to the captures with what became of it."""
        caps = tap.captures  # checked once a batch: without a capture, nothing else changes
        batching = GSO and not caps
        self.flow = flow = tap.out
        hdr_buf, seg_view = self._hdr, self._seg_view
        vxhdr, n_fds, flow_hash = self._vxhdr, self._n_tx, vxlan.flow_hash
        readv, unpack_hdr = os.readv, _VNET.unpack_from
        fd = tap.fd
        hlen = vxlan.HLEN
        off = 0  # where the next datagram goes in seg_view
        seg = 0  # the batch's datagram size
        port = -1  # the batch's source port (index)
        lengths: list[int] = []
        frames = 0
        for _ in range(BATCH):
            try:
                n = readv(fd, [hdr_buf, seg_view[off + hlen : off + BUF_LEN]])
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.EINTR:
                    continue
                self._on_gone(tap, exc)
                return frames
            frames += 1
            length = n - _HDR
            frame = seg_view[off + hlen : off + hlen + length]
            reason: DropReason | None = None
            if length < vxlan.ETH_HLEN:
                reason = DropReason.RUNT
            elif session is not None and not session.up:
                reason = DropReason.PEER_DOWN
            elif hdr_buf[0] & vnet.FLAG_NEEDS_CSUM or hdr_buf[1]:
                _, gso, _, gso_size, start, offset = unpack_hdr(hdr_buf)
                if gso:
                    if lengths:  # what came before leaves first: the order is kept
                        self._flush(port, seg_view[:off], seg, lengths)
                        off, lengths = 0, []
                    reason = self._send_super(frame, gso, gso_size, start)
                    for cap in caps:
                        cap.frame(tap, frame, reason)
                    continue
                if not offload.fill_checksum(frame, start, offset):
                    reason = DropReason.INVALID_HEADER
            if reason is not None:
                flow.refused(reason)
                for cap in caps:
                    cap.frame(tap, frame, reason)
                continue
            size = length + hlen
            seg_view[off : off + hlen] = vxhdr
            i = ((flow_hash(frame) & 0xFFFFFFFF) * n_fds) >> 32
            if not batching:
                reason = self._send_one(self._tx_fds[i], seg_view[:size], length)
                for cap in caps:
                    cap.frame(tap, frame, reason)
                continue
            if lengths and (i != port or size > seg or off + size > _GSO_MAX):
                self._flush(port, seg_view[:off], seg, lengths)
                seg_view[:size] = bytes(seg_view[off : off + size])
                off, lengths = 0, []
            if not lengths:
                seg, port = size, i
            lengths.append(length)
            off += size
            if size < seg or len(lengths) >= _GSO_SEGS:  # a shorter datagram ends a batch
                self._flush(port, seg_view[:off], seg, lengths)
                off, lengths = 0, []
        if lengths:
            self._flush(port, seg_view[:off], seg, lengths)
        for cap in caps:
            cap.flush()
        return frames

    def _send_super(self, frame: memoryview, gso: int, gso_size: int, l4: int) -> DropReason | None:
        """Cut a TCP super-frame into wire-sized segments (core/offload.py) and send them, as
        many as fit in one UDP_SEGMENT send at a time. Each segment is counted (sent or
        dropped), or the super-frame once when it cannot be cut; the reason when any was
        dropped."""
        if gso & ~vnet.GSO_ECN not in _TCP_GSO:
            self.flow.refused(DropReason.INVALID_HEADER)  # not offered: TAP_OFFLOADS is TCP
            return DropReason.INVALID_HEADER
        try:
            count, full, total = offload.segment_tcp(
                frame, l4, gso_size, self._vxhdr, self._gso_buf
            )
        except ValueError:
            self.flow.refused(DropReason.INVALID_HEADER)
            return DropReason.INVALID_HEADER
        i = ((vxlan.flow_hash(frame) & 0xFFFFFFFF) * self._n_tx) >> 32
        per_send = _per_send(full) if GSO else 1
        view, off, worst = self._gso_view, 0, None
        for first in range(0, count, per_send):
            k = min(per_send, count - first)
            end = min(off + k * full, total)
            lengths = [full - vxlan.HLEN] * k
            lengths[-1] = end - off - (k - 1) * full - vxlan.HLEN
            worst = self._flush(i, view[off:end], full, lengths) or worst
            off = end
        return worst

    def _send_one(self, fd: int, datagram: memoryview, length: int) -> DropReason | None:
        """Send one datagram; count the frame it carries as forwarded or dropped (the reason,
        or None when sent)."""
        reason = self.send_datagram(fd, datagram)
        if reason is None:
            self.flow.forwarded(length)
        else:
            self.flow.refused(reason)
        return reason

    @staticmethod
    def send_datagram(
        fd: int, datagram: memoryview | list[bytes | memoryview]
    ) -> DropReason | None:
        """Send one datagram (a buffer, or the parts of one); the reason it could not be sent,
        or None."""
        for attempt in range(2):
            try:
                if isinstance(datagram, list):
                    os.writev(fd, datagram)
                else:
                    os.write(fd, datagram)
            except OSError as exc:
                if exc.errno == errno.ECONNREFUSED and attempt == 0:
                    continue  # an ICMP error from an earlier datagram: send this one again
                # EMSGSIZE: does not fit the underlay (DF is set); anything else (EAGAIN or
                # ENOBUFS with the socket buffer full, unreachable...) is a write error
                return DropReason.MTU if exc.errno == errno.EMSGSIZE else DropReason.WRITE_ERROR
            return None
        return DropReason.WRITE_ERROR  # not reached: the second attempt returns

    def send_super(self, flow: Flow, data: bytes) -> DropReason | None:
        """A TCP super-frame the impairments release (virtio header first, the TAP offers TSO):
        cut and sent as pump() does, each segment counted in flow; the reason when any was
        dropped."""
        self.flow = flow
        _, gso, _, gso_size, start, _ = _VNET.unpack_from(data)
        return self._send_super(memoryview(data)[_HDR:], gso, gso_size, start)

    @staticmethod
    def finish_checksum(data: bytes) -> memoryview | None:
        """The frame of data (virtio header first) with its partial checksum completed in a
        copy, as pump() completes one; None when the offsets fall outside the frame."""
        _, _, _, _, start, offset = _VNET.unpack_from(data)
        frame = bytearray(memoryview(data)[_HDR:])
        return memoryview(frame) if offload.fill_checksum(frame, start, offset) else None

    def send_frame(self, frame: memoryview) -> DropReason | None:
        """One frame into the tunnel from the source port its flow hashes to (the impaired
        path, which counts it); the reason it could not be sent, or None."""
        fd = self._tx_fds[((vxlan.flow_hash(frame) & 0xFFFFFFFF) * self._n_tx) >> 32]
        return self.send_datagram(fd, [self._vxhdr, frame])

    def _flush(self, i: int, data: memoryview, seg: int, lengths: list[int]) -> DropReason | None:
        """Send datagrams laid end to end in data, all seg bytes long but the last, in one
        sendmsg with UDP_SEGMENT: the kernel cuts them apart (one trip through the stack).
        Returns the reason when any was dropped (each is counted)."""
        if len(lengths) > 1 and GSO:
            cmsg = self._cmsg.get(seg)
            if cmsg is None:
                if len(self._cmsg) > 64:
                    self._cmsg.clear()
                cmsg = self._cmsg[seg] = [(SOL_UDP, UDP_SEGMENT, struct.pack("=H", seg))]
            try:
                self._tx[i].sendmsg([data], cmsg)
            except OSError:
                pass  # too big for the path (EMSGSIZE/EINVAL), buffer full...: one by one below,
                # so that each frame is counted for what happened to it
            else:
                flow = self.flow
                flow.packets += len(lengths)
                flow.bytes += sum(lengths)
                return None
        off, worst = 0, None
        for length in lengths:
            size = length + vxlan.HLEN
            worst = self._send_one(self._tx_fds[i], data[off : off + size], length) or worst
            off += size
        return worst
