"""The vxlan end of a pair: its UDP sockets in the underlay namespace, the two directions of
frames (TAP -> tunnel, tunnel -> TAP) and the BFD session's timer.

This is the only place in the daemon where UDP sockets exist. They are opened inside the
underlay namespace by the netlink worker thread (setns for that moment only); an open socket
keeps its namespace alive, so `ip netns del` of the underlay namespace does not destroy it while
the pair exists.

Sockets: one bound to dstport receives the tunnel; a small pool of sockets connected to
remote:dstport sends it, one per outer source port, so that the source port can follow a hash
of the inner flow (RFC 7348 section 5) without a raw socket. The pool's sockets never receive
(a socket filter drops everything addressed to them).
"""

import asyncio
import contextlib
import ctypes
import errno
import logging
import os
import random
import secrets
import socket
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from typing import TYPE_CHECKING, Any, Literal

from tapveth.core import bfd, vnet, vxlan
from tapveth.core.rules import DropReason, Flow, admit
from tapveth.core.vxlanspec import VxlanSpec
from tapveth.daemon.pair import End
from tapveth.daemon.relay import SPIN_AHEAD_NS  # the impaired directions' busy-poll rule
from tapveth.kernel import netns
from tapveth.kernel.netlink import Netlink
from tapveth.kernel.tap import TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6

if TYPE_CHECKING:
    from tapveth.daemon.capture import Capture
    from tapveth.daemon.impaired import ImpairedLink

log = logging.getLogger("tapveth")

POOL = 16  # outer source ports per end: entropy for an ECMP underlay
BATCH = 64
BUF_LEN = 65536 + 1024
_HDR = vnet.HDR_LEN
_NO_VNET = bytes(_HDR)  # frames handed to the TAP: no offload, checksums to be verified
_GSO_OFF = vnet.GSO_TYPE_OFFSET
_GSO_MASK = ~vnet.GSO_ECN & 0xFF

# Linux values; Python's socket module lacks some of them.
_IP_MTU_DISCOVER, _IP_PMTUDISC_DO = 10, 2
_IPV6_MTU_DISCOVER, _IPV6_PMTUDISC_DO = 23, 2
_SO_ATTACH_FILTER = 26
_SOL_UDP, _UDP_SEGMENT = 17, 103
_GSO_MAX = 65000  # bytes in one UDP_SEGMENT send (the UDP length field bounds it)
_GSO_SEGS = 64  # datagrams in one send (the kernel's UDP_MAX_SEGMENTS is 64 or more)
# Frames are batched into UDP_SEGMENT sends (TAPVETH_VXLAN_GSO=0: one send per frame, for
# measurements): measured, it saves about a third of the CPU per byte (see README, Across machines).
GSO = os.environ.get("TAPVETH_VXLAN_GSO", "1") != "0"
# The receiving socket asks for UDP_GRO: datagrams the underlay's GRO merged come in one read
# (TAPVETH_VXLAN_GRO=0: one read per datagram, for measurements; see README, Across machines).
GRO = os.environ.get("TAPVETH_VXLAN_GRO", "1") != "0"
# The end's TAP offers TSO and checksum offload: a TCP super-frame comes in one read and is cut
# into wire-sized segments here, partial checksums are completed here (TAPVETH_VXLAN_TSO=0: no
# offload, the kernel segments and checksums before the read; see README, Across machines).
TSO = os.environ.get("TAPVETH_VXLAN_TSO", "1") != "0"
TAP_OFFLOADS = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 if TSO else 0
_VNET = struct.Struct("<BBHHHH")
# Runs of one TCP flow in a UDP_GRO read are merged into one super-frame for the TAP, as the
# kernel's GRO does (TAPVETH_VXLAN_MERGE=0: one write per frame; see README, Across machines).
MERGE = GRO and os.environ.get("TAPVETH_VXLAN_MERGE", "1") != "0"
_UDP_GRO = 104
_GRO_CMSG = socket.CMSG_SPACE(4)
_SO_SNDBUFFORCE = 32
_SO_RCVBUFFORCE = 33
_SOCKBUF = 4 << 20
_UDP = socket.SOCK_DGRAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC


class UnderlayError(OSError):
    """The tunnel's sockets could not be opened; the message says why in one line."""


@dataclass
class Underlay:
    """The sockets of one vxlan end, opened in its underlay namespace."""

    rx: socket.socket
    tx: list[socket.socket]
    ns_inode: int
    local_ip: str
    src_ports: list[int] = field(default_factory=list)

    def close(self) -> None:
        for s in [self.rx, *self.tx]:
            s.close()


def _drop_all(sock: socket.socket) -> None:
    """Attach a classic BPF program that returns 0: the socket never queues a datagram."""
    prog = (ctypes.c_ubyte * 8).from_buffer_copy(struct.pack("HBBI", 0x06, 0, 0, 0))  # ret #0
    fprog = struct.pack("HL", 1, ctypes.addressof(prog))
    sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, fprog)


def _buffer(sock: socket.socket, forced: int, plain: int) -> None:
    """A large socket buffer: bursts from the TAP (a whole TCP window at once) must not fail
    with EAGAIN, which would drop frames the sender then retransmits. The forced option
    (CAP_NET_ADMIN) goes past net.core.[rw]mem_max."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, forced, _SOCKBUF)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, plain, _SOCKBUF)


def _no_fragments(sock: socket.socket, v6: bool) -> None:
    """DF on, no local fragmentation: an oversize send fails with EMSGSIZE (counted as a
    drop) instead of leaving as fragments."""
    if v6:
        sock.setsockopt(socket.IPPROTO_IPV6, _IPV6_MTU_DISCOVER, _IPV6_PMTUDISC_DO)
    else:
        sock.setsockopt(socket.IPPROTO_IP, _IP_MTU_DISCOVER, _IP_PMTUDISC_DO)


def open_underlay(nl: Netlink, spec: VxlanSpec, caller_ns: int | None) -> Underlay:
    """Open the end's sockets inside its underlay namespace (run in the worker thread): the
    one named, else the client's (`caller_ns`, an fd), else the daemon's own."""
    fam = socket.AF_INET6 if spec.ipv6 else socket.AF_INET
    any_addr = "::" if spec.ipv6 else "0.0.0.0"
    made: list[socket.socket] = []
    try:
        with _underlay_ns(spec, caller_ns):
            ns_inode = os.stat("/proc/thread-self/ns/net").st_ino
            rx = socket.socket(fam, _UDP)
            made.append(rx)
            _buffer(rx, _SO_RCVBUFFORCE, socket.SO_RCVBUF)
            if GRO:
                rx.setsockopt(_SOL_UDP, _UDP_GRO, 1)
            try:
                rx.bind((spec.local or any_addr, spec.dstport))
            except OSError as exc:
                raise UnderlayError(
                    exc.errno,
                    f"cannot receive on {spec.local or any_addr} port {spec.dstport}: "
                    f"{exc.strerror} (is another vxlan end or device using it?)",
                ) from None
            tx: list[socket.socket] = []
            ports: list[int] = []
            rng = random.Random(secrets.randbits(64))
            attempts = 0
            while len(tx) < POOL:
                attempts += 1
                if attempts > POOL * 20:
                    raise UnderlayError(errno.EADDRINUSE, "no free source ports in srcport range")
                s = socket.socket(fam, _UDP)
                port = 0 if spec.srcport is None else rng.randrange(*spec.srcport)
                try:
                    s.bind((spec.local or any_addr, port))
                except OSError:
                    s.close()
                    continue
                made.append(s)
                _buffer(s, _SO_SNDBUFFORCE, socket.SO_SNDBUF)
                _drop_all(s)
                _no_fragments(s, spec.ipv6)
                try:
                    s.connect((spec.remote, spec.dstport))
                except OSError as exc:
                    raise UnderlayError(
                        exc.errno, f"cannot reach {spec.remote}: {exc.strerror}"
                    ) from None
                tx.append(s)
                ports.append(s.getsockname()[1])
            local_ip = tx[0].getsockname()[0]
        return Underlay(rx, tx, ns_inode, local_ip, ports)
    except BaseException:
        for s in made:
            s.close()
        raise


class VxlanEnd:
    """The far end of a pair, behind a VXLAN tunnel. To the pair it looks like an end that is
    always up (or up while BFD says the far side is), with the flow of frames it delivers."""

    def __init__(
        self,
        spec: VxlanSpec,
        underlay: Underlay,
        on_change: Callable[[], None],
        on_gone: Callable[[End, OSError], None],
        before_batch: Callable[[], None],
        on_traffic: Callable[[], None],
    ) -> None:
        self.spec = spec
        self.name = spec.name
        self.ns_inode = underlay.ns_inode
        self.index = 0
        self.mtu = 0
        self.address = ""
        self.out = Flow()  # frames from the tunnel to the TAP (the TAP end's rx)
        self.rx_drops: dict[str, int] = {}  # datagrams refused before decapsulation, by reason
        self.udp_rx = 0  # datagrams received
        self.udp_reads = 0  # reads that got them (fewer when UDP_GRO merged some)
        self.captures: tuple[Capture, ...] = ()  # captures watching what the tunnel delivers
        self.local: End | None = None
        # Impairments of the frames the tunnel delivers to the TAP (`qdisc … dev vxlan:VNI`);
        # those of the frames the TAP sends are the TAP end's own (End.impair).
        self.impair: ImpairedLink | None = None
        self.cut = False  # the pair's carrier is cut (a fault): both directions dropped
        self._ibuf = bytearray(BUF_LEN)  # the impaired path's read buffer (virtio header first)
        self._plain: Callable[[], None] = self.from_tap
        self._u = underlay
        self._on_change = on_change
        self._on_gone = on_gone
        self._before_batch = before_batch
        self._on_traffic = on_traffic
        self._vxhdr = vxlan.header(spec.vni)
        self._vni_field = self._vxhdr[4:7]
        self._tx_fds = [s.fileno() for s in underlay.tx]
        self._n_tx = len(self._tx_fds)
        self._remote = spec.remote
        self._buf = bytearray(BUF_LEN)
        self._view = memoryview(self._buf)
        self._bufs = [bytearray(_HDR), self._buf]
        self._seg_view = memoryview(bytearray(_GSO_MAX + BUF_LEN))
        self._gso_buf = bytearray(2 * BUF_LEN)  # a super-frame's segments, headers repeated
        self._gso_view = memoryview(self._gso_buf)
        self._merge_buf = bytearray(BUF_LEN)  # TCP segments from the tunnel, merged
        self._merge_view = memoryview(self._merge_buf)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.session: bfd.Session | None = None
        self._bfd_mac = bytes([0x02]) + secrets.token_bytes(5)
        try:
            self._bfd_ip = socket.inet_aton(underlay.local_ip)
        except OSError:
            self._bfd_ip = socket.inet_aton("127.0.0.1")  # IPv6 underlay: inner IPv4 anyway

    @property
    def up(self) -> bool:
        """What the carrier rule sees of the far side: with BFD, whether the session is up;
        without, always (the carrier then follows the local end alone)."""
        return self.session is None or self.session.up

    @property
    def key(self) -> tuple[int | None, int]:
        return (None, 0)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, tap: End) -> None:
        loop = asyncio.get_running_loop()
        self._loop = loop
        self.local = tap
        self._plain = self.from_tap
        loop.add_reader(tap.fd, self._tap_readable)
        loop.add_reader(self._u.rx.fileno(), self.from_tunnel)
        if self.spec.bfd:
            interval = self.spec.bfd_interval_ms * 1000
            self.session = bfd.Session(
                secrets.randbits(32) or 1,
                random.Random(secrets.randbits(64)),
                loop.time(),
                tx_interval_us=interval,
                rx_interval_us=interval,
                detect_mult=self.spec.bfd_multiplier,
            )
            self.session.set_admin_down(not tap.up, loop.time())
            self._tick()

    def stop(self) -> None:
        """Stop both directions and the timer (the sockets stay open until close())."""
        if self._loop is None:
            return
        if self.local is not None and not self.local.tap.closed:
            self._loop.remove_reader(self.local.fd)
        self._loop.remove_reader(self._u.rx.fileno())
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._loop = None

    def close(self) -> None:
        self.stop()
        self._u.close()

    def local_admin(self, up: bool) -> None:
        """The TAP end was set up or down: with BFD, tell the far side (AdminDown)."""
        loop, session = self._loop, self.session
        if session is not None and loop is not None and session.set_admin_down(not up, loop.time()):
            self._state_changed()

    # -- BFD ---------------------------------------------------------------------------------

    def _tick(self) -> None:
        assert self._loop is not None and self.session is not None
        self._timer = None
        packets, changed = self.session.due(self._loop.time())
        for pkt in packets:
            self._send_bfd(pkt)
        if changed:
            self._state_changed()
        if self._loop is not None:
            self._timer = self._loop.call_at(self.session.next_deadline(), self._tick)

    def _send_bfd(self, control: bytes) -> None:
        frame = vxlan.bfd_frame(self._bfd_mac, self._bfd_ip, control)
        try:
            os.writev(self._tx_fds[0], [self._vxhdr, frame])
        except OSError as exc:
            log.debug("bfd to %s: %s", self._remote, exc)  # an unreachable far side

    def _on_bfd(self, frame: memoryview) -> None:
        assert self.session is not None and self._loop is not None
        payload = vxlan.bfd_payload(frame)
        if payload is None:
            self._count(vxlan.RxDrop.BFD_INVALID)
            return
        try:
            changed = self.session.receive(payload, self._loop.time())
        except bfd.BfdError as exc:
            log.debug("bfd from %s discarded: %s", self._remote, exc)
            self._count(vxlan.RxDrop.BFD_INVALID)
            return
        if changed:
            self._state_changed()
        # A Final is due at once; other changes wait for the transmission timer (6.8.7).
        if self._timer is not None:
            self._timer.cancel()
        self._tick()

    def _state_changed(self) -> None:
        assert self.session is not None
        log.info(
            "vxlan %s to %s: bfd %s (diag %s, remote %s)",
            self.spec.vni,
            self._remote,
            self.session.state.name,
            self.session.diag.name,
            self.session.remote_state.name,
        )
        self._on_change()

    # -- frames ------------------------------------------------------------------------------

    def _count(self, reason: str) -> None:
        self.rx_drops[reason] = self.rx_drops.get(reason, 0) + 1

    def from_tap(self) -> None:
        """Encapsulate what the TAP holds now (at most BATCH frames) toward the remote. Partial
        checksums are completed and TCP super-frames cut into wire-sized segments (the TAP
        offers TSO and checksum offload: see TAP_OFFLOADS). Datagrams of one size bound for one
        source port leave together in one sendmsg with UDP_SEGMENT (GSO=True). While a capture
        watches the TAP end, each frame is sent on its own and shown to the captures with what
        became of it."""
        tap = self.local
        assert tap is not None
        self._before_batch()
        self._on_traffic()
        caps = tap.captures  # checked once a batch: without a capture, nothing else changes
        batching = GSO and not caps
        hdr_buf, seg_view = self._bufs[0], self._seg_view
        vxhdr, n_fds, flow_hash = self._vxhdr, self._n_tx, vxlan.flow_hash
        readv, unpack_hdr = os.readv, _VNET.unpack_from
        flow = tap.out
        fd = tap.fd
        session = self.session
        off = 0  # where the next datagram goes in seg_view
        seg = 0  # the batch's datagram size
        port = -1  # the batch's source port (index)
        lengths: list[int] = []
        for _ in range(BATCH):
            try:
                n = readv(fd, [hdr_buf, seg_view[off + vxlan.HLEN : off + BUF_LEN]])
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.EINTR:
                    continue
                self._on_gone(tap, exc)
                return
            length = n - _HDR
            frame = seg_view[off + vxlan.HLEN : off + vxlan.HLEN + length]
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
                    if reason is not None:
                        flow.refused(reason)
                    for cap in caps:
                        cap.frame(tap, frame, reason)
                    continue
                if not vxlan.fill_checksum(frame, start, offset):
                    reason = DropReason.INVALID_HEADER
            if reason is not None:
                flow.refused(reason)
                for cap in caps:
                    cap.frame(tap, frame, reason)
                continue
            size = length + vxlan.HLEN
            seg_view[off : off + vxlan.HLEN] = vxhdr
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

    def _send_super(self, frame: memoryview, gso: int, gso_size: int, l4: int) -> DropReason | None:
        """Cut a TCP super-frame into wire-sized segments (core/vxlan.py) and send them, as
        many as fit in one UDP_SEGMENT send at a time. The reason when any was dropped."""
        if gso & ~vnet.GSO_ECN not in (vnet.GSO_TCPV4, vnet.GSO_TCPV6):
            return DropReason.INVALID_HEADER  # not offered: TAP_OFFLOADS has TCP only
        try:
            count, full, total = vxlan.segment_tcp(frame, l4, gso_size, self._vxhdr, self._gso_buf)
        except ValueError:
            return DropReason.INVALID_HEADER
        i = ((vxlan.flow_hash(frame) & 0xFFFFFFFF) * self._n_tx) >> 32
        per_send = max(1, min(_GSO_MAX // full, _GSO_SEGS)) if GSO else 1
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
        flow = self.local.out if self.local is not None else Flow()
        for attempt in range(2):
            try:
                os.write(fd, datagram)
            except OSError as exc:
                if exc.errno == errno.ECONNREFUSED and attempt == 0:
                    continue  # an ICMP error from an earlier datagram: send this one again
                # EMSGSIZE: does not fit the underlay (DF is set); anything else (EAGAIN or
                # ENOBUFS with the socket buffer full, unreachable...) is a write error
                reason = DropReason.MTU if exc.errno == errno.EMSGSIZE else DropReason.WRITE_ERROR
                flow.refused(reason)
                return reason
            flow.forwarded(length)
            return None
        return None  # not reached: the second attempt returns

    def _flush(self, i: int, data: memoryview, seg: int, lengths: list[int]) -> DropReason | None:
        """Send datagrams laid end to end in data, all seg bytes long but the last, in one
        sendmsg with UDP_SEGMENT: the kernel cuts them apart (one trip through the stack).
        Returns the reason when any was dropped (each is counted)."""
        if len(lengths) > 1 and GSO:
            try:
                self._u.tx[i].sendmsg([data], [(_SOL_UDP, _UDP_SEGMENT, struct.pack("=H", seg))])
            except OSError:
                pass  # too big for the path (EMSGSIZE/EINVAL), buffer full...: one by one below,
                # so that each frame is counted for what happened to it
            else:
                flow = self.local.out if self.local is not None else Flow()
                for length in lengths:
                    flow.forwarded(length)
                return None
        off, worst = 0, None
        for length in lengths:
            size = length + vxlan.HLEN
            worst = self._send_one(self._tx_fds[i], data[off : off + size], length) or worst
            off += size
        return worst

    def from_tunnel(self) -> None:
        """Decapsulate what the socket holds now (at most BATCH datagrams) to the TAP. With
        UDP_GRO (GRO=True), one read may return several datagrams of one size end to end."""
        tap = self.local
        assert tap is not None
        self._before_batch()
        self._on_traffic()
        caps = self.captures  # once a batch; each frame is shown to them in _decap
        self._from_tunnel(tap, caps)
        for cap in caps:
            cap.flush()

    def _from_tunnel(self, tap: End, caps: "tuple[Capture, ...]") -> None:
        buf, view = self._buf, self._view
        recv = self._u.rx.recvmsg_into if GRO else None
        recvfrom = self._u.rx.recvfrom_into
        remote, decap = self._remote, self._decap
        bufs = [buf]
        for _ in range(BATCH):
            seg = 0
            try:
                if recv is None:
                    n, addr = recvfrom(buf)
                else:
                    n, anc, _flags, addr = recv(bufs, _GRO_CMSG)
                    for level, kind, data in anc:
                        if level == _SOL_UDP and kind == _UDP_GRO:
                            seg = struct.unpack("=i", data[:4])[0]  # an int: the size
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno in (errno.EINTR, errno.ECONNREFUSED):
                    continue
                log.warning("vxlan %s: receive failed: %s", self.spec.vni, exc)
                return
            self.udp_reads += 1
            if not seg or seg >= n:
                self.udp_rx += 1
                if addr[0] != remote:
                    self._count(vxlan.RxDrop.SOURCE)
                elif not decap(tap, view[:n], n, caps):
                    return
                continue
            # merged runs go straight to the TAP: never while this direction is impaired
            # or cut, since those frames must pass _decap's hand-off to their queue
            if addr[0] == remote and MERGE and not caps and self.impair is None and not self.cut:
                if not self._merged(tap, view, n, seg):
                    return
                continue
            for off in range(0, n, seg):  # coalesced by UDP_GRO: one sender, one size
                size = min(seg, n - off)
                self.udp_rx += 1
                if addr[0] != remote:
                    self._count(vxlan.RxDrop.SOURCE)
                elif not decap(tap, view[off : off + size], size, caps):
                    return

    def _merged(self, tap: End, view: memoryview, n: int, seg: int) -> bool:
        """Hand what one UDP_GRO read got (datagrams of seg bytes, the last maybe shorter) to
        the TAP, runs of one TCP flow merged into super-frames (core/vxlan.merge_tcp: checked,
        checksums verified), the rest one by one through _decap. False when the TAP is gone."""
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
                flow = self.out
                for _ in range(merged):  # counted as the wire packets they were
                    if fate is None:
                        flow.forwarded(seg - vxlan.HLEN)
                    else:
                        flow.refused(fate)
                off += merged * seg
                continue
            size = min(seg, n - off)
            self.udp_rx += 1
            if not self._decap(tap, view[off : off + size], size, ()):
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
            if exc.errno == errno.EIO:
                self.out.peer_counted += 1
                return DropReason.PEER_DOWN
            if exc.errno in (errno.EBADFD, errno.EBADF, errno.EFAULT, errno.ENODEV):
                self._on_gone(tap, exc)
                return False
            if exc.errno == errno.EINVAL:
                return DropReason.INVALID_HEADER
            return DropReason.WRITE_ERROR
        return None

    def _decap(self, tap: End, dgram: memoryview, n: int, caps: "tuple[Capture, ...]") -> bool:
        """Check one datagram from the remote and give its frame to the TAP (or to BFD),
        showing the frame to the captures with what became of it. False when the TAP is
        gone."""
        reason = vxlan.check(dgram, n, self._vni_field)
        if reason is not None:
            self._count(reason)
            return True
        frame = dgram[vxlan.HLEN : n]
        if frame[:6] == vxlan.BFD_MAC:
            if self.session is not None:
                self._on_bfd(frame)
            else:
                self._count(vxlan.RxDrop.BFD_INVALID)  # BFD not configured on this end
            return True
        if self.impair is not None or self.cut:  # impaired or cut: see _decap_held
            return self._decap_held(tap, frame, caps)
        flow = self.out
        length = n - vxlan.HLEN
        fate = admit(length, False, tap.up, tap.mtu)
        if fate is None:
            try:
                os.writev(tap.fd, [_NO_VNET, frame])
            except OSError as exc:
                if exc.errno == errno.EIO:
                    fate = DropReason.PEER_DOWN
                    flow.peer_counted += 1
                elif exc.errno in (errno.EBADFD, errno.EBADF, errno.EFAULT, errno.ENODEV):
                    self._on_gone(tap, exc)
                    return False
                else:
                    fate = DropReason.WRITE_ERROR
            else:
                flow.forwarded(length)
        if fate is not None:
            flow.refused(fate)
        for cap in caps:
            cap.frame(self, frame, fate)
        return True

    # -- impairments and faults ---------------------------------------------------------------
    # A local pair's relay applies them in relay.py; here the same model (core/impair.py) and
    # the same timerfd (daemon/impaired.py) serve both directions of the tunnel end. Frames are
    # queued with their virtio header first, as the relay queues them; the veth rules (the
    # carrier cut, the far side's BFD state, the TAP's admin state and MTU) are judged when a
    # frame leaves the queue.

    def _tap_readable(self) -> None:
        """The TAP has frames: the plain path, or the impaired one while the TAP end has
        impairments or the carrier is cut (decided once a batch)."""
        tap = self.local
        if tap is not None and (tap.impair is not None or tap.cut):
            self.from_tap_impaired()
        else:
            self._plain()

    def from_tap_impaired(self) -> None:
        """Read what the TAP holds now (at most BATCH frames) into its impairments (or drop it:
        carrier cut); what is due already goes into the tunnel at once, the rest at its timer."""
        tap = self.local
        assert tap is not None
        self._before_batch()
        link, caps, buf = tap.impair, tap.captures, self._ibuf
        view = memoryview(buf)
        now = time.monotonic_ns()
        for _ in range(BATCH):
            try:
                n = os.readv(tap.fd, [buf])
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.EINTR:
                    continue
                self._on_gone(tap, exc)
                return
            if link is None:  # carrier cut, no impairments
                tap.out.refused(DropReason.CARRIER)
                for cap in caps:
                    cap.frame(tap, view[_HDR:n], DropReason.CARRIER)
                continue
            self._queue(tap, link, now, bytes(view[:n]), caps)
        for cap in caps:
            cap.flush()
        if link is not None:
            self._spin_if_due(link, now)
            self._deliver_to_tunnel()

    def _decap_held(self, tap: End, frame: memoryview, caps: "tuple[Capture, ...]") -> bool:
        """A frame from the tunnel while this direction is impaired or the carrier cut: queued
        (delivered by _deliver_to_tap), or dropped as `carrier`. False when the TAP is gone."""
        link = self.impair
        if link is None:
            self.out.refused(DropReason.CARRIER)
            for cap in caps:
                cap.frame(self, frame, DropReason.CARRIER)
            return True
        now = time.monotonic_ns()
        self._queue(self, link, now, _NO_VNET + bytes(frame), caps)
        self._spin_if_due(link, now)
        return self._deliver_to_tap()

    def _queue(
        self,
        src: "End | VxlanEnd",
        link: "ImpairedLink",
        now: int,
        data: bytes,
        caps: "tuple[Capture, ...]",
    ) -> None:
        """One frame (virtio header first) into src's impairments. Captures see the frames the
        model drops (loss, a full queue) as they arrived: its drop callback is wrapped for the
        call, as the relay does."""
        if not caps:
            link.model.enqueue(now, data)
            return
        stats = link.model.stats
        counted = stats.on_drop
        dropped: list[DropReason] = []

        def drop(reason: DropReason) -> None:
            dropped.append(reason)
            if counted is not None:
                counted(reason)

        stats.on_drop = drop
        try:
            link.model.enqueue(now, data)
        finally:
            stats.on_drop = counted
        for reason in dropped:
            for cap in caps:
                cap.frame(src, memoryview(data)[_HDR:], reason)

    def _spin_if_due(self, link: "ImpairedLink", now: int) -> None:
        """Busy-poll only for a frame due very soon; for a later one the timer wakes the loop."""
        head = link.model.next_time()
        if head is not None and head - now <= SPIN_AHEAD_NS:
            self._on_traffic()

    def fire(self, src: "End | VxlanEnd") -> None:
        """src's impairment timer expired (src: the TAP end for frames into the tunnel, this
        end for frames out of it): apply pending link events, then deliver what is due."""
        link = src.impair
        if link is None:
            return
        link.timer.clear()
        self._before_batch()
        if src is self:
            self._deliver_to_tap()
        else:
            self._deliver_to_tunnel()

    def _deliver_to_tunnel(self) -> None:
        """Encapsulate and send what the TAP end's impairments release now (a batch at most),
        and arm the timer for the next frame."""
        tap = self.local
        if tap is None or tap.impair is None or self._loop is None:
            return
        link, flow, caps, session = tap.impair, tap.out, tap.captures, self.session
        for data in islice(link.model.due(time.monotonic_ns()), BATCH):
            length = len(data) - _HDR
            frame = memoryview(data)[_HDR:]
            reason: DropReason | None
            if tap.cut:
                reason = DropReason.CARRIER
            elif length < vxlan.ETH_HLEN:
                reason = DropReason.RUNT
            elif session is not None and not session.up:
                reason = DropReason.PEER_DOWN
            elif data[_GSO_OFF] & _GSO_MASK:
                reason = DropReason.MTU  # a super-frame: the TAP offers no TSO (see start())
            else:
                reason = self._send_frame(frame)
            if reason is None:
                flow.forwarded(length)
            else:
                flow.refused(reason)
            for cap in caps:
                cap.frame(tap, frame, reason)
        for cap in caps:
            cap.flush()
        if tap.impair is link:
            link.rearm()

    def _send_frame(self, frame: memoryview) -> DropReason | None:
        """One frame into the tunnel from the source port its flow hashes to; the reason it
        could not be sent, or None."""
        fd = self._tx_fds[((vxlan.flow_hash(frame) & 0xFFFFFFFF) * self._n_tx) >> 32]
        for attempt in range(2):
            try:
                os.writev(fd, [self._vxhdr, frame])
            except OSError as exc:
                if exc.errno == errno.ECONNREFUSED and attempt == 0:
                    continue  # an ICMP error from an earlier datagram: send this one again
                # EMSGSIZE: too big for the underlay (DF is set); else a full buffer, no route
                return DropReason.MTU if exc.errno == errno.EMSGSIZE else DropReason.WRITE_ERROR
            return None
        return DropReason.WRITE_ERROR  # not reached: the second attempt returns

    def _deliver_to_tap(self) -> bool:
        """Write what this end's impairments release now (a batch at most) to the TAP through
        veth's admission, and arm the timer for the next frame. False when the TAP is gone."""
        link, tap = self.impair, self.local
        if link is None or tap is None or self._loop is None:
            return True
        flow, caps = self.out, self.captures
        for data in islice(link.model.due(time.monotonic_ns()), BATCH):
            length = len(data) - _HDR
            reason: DropReason | None
            reason = DropReason.CARRIER if self.cut else admit(length, False, tap.up, tap.mtu)
            if reason is None:
                try:
                    os.write(tap.fd, data)
                except OSError as exc:
                    if exc.errno == errno.EIO:
                        reason = DropReason.PEER_DOWN  # tun refuses writes to a down device
                        flow.peer_counted += 1
                    elif exc.errno in (errno.EBADFD, errno.EBADF, errno.EFAULT, errno.ENODEV):
                        self._on_gone(tap, exc)
                        return False
                    else:
                        reason = DropReason.WRITE_ERROR
            if reason is None:
                flow.forwarded(length)
            else:
                flow.refused(reason)
            for cap in caps:
                cap.frame(self, memoryview(data)[_HDR:], reason)
        for cap in caps:
            cap.flush()
        if self.impair is link:
            link.rearm()
        return True

    # -- what show and stats say -------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        s = self.session
        return {
            "kind": "vxlan",
            "vni": self.spec.vni,
            "remote": self.spec.remote,
            "local": self._u.local_ip,
            "dstport": self.spec.dstport,
            "srcports": sorted(self._u.src_ports),
            "bfd": None
            if s is None
            else {
                "state": s.state.name.lower().replace("_", ""),
                "remote_state": s.remote_state.name.lower().replace("_", ""),
                "diag": s.diag.name.lower(),
                "detect_time_ms": round(s.detection_time() * 1000),
                "tx_interval_ms": round(s.tx_interval() * 1000),
                "sent": s.sent,
                "received": s.received,
            },
        }

    def counters(self) -> dict[str, Any]:
        return {
            "udp_rx": self.udp_rx,
            "udp_reads": self.udp_reads,
            "underlay_drops": dict(sorted(self.rx_drops.items())),
        }


@contextlib.contextmanager
def _underlay_ns(spec: VxlanSpec, caller_ns: int | None) -> Iterator[None]:
    """This thread in the underlay namespace for the duration."""
    if spec.underlay_netns is not None:
        with netns.inside(spec.underlay_netns):
            yield
    elif caller_ns is not None:
        with netns.entered(caller_ns):
            yield
    else:
        yield  # the daemon's own namespace, where this thread already is
