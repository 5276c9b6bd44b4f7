"""The vxlan end of a pair: the far end behind a VXLAN tunnel (RFC 7348), as the pair sees it.

It wires its parts to the event loop: the tunnel's sockets (vxlan_underlay.py), the send path
from the TAP into the tunnel (vxlan_send.py), the receive path from the tunnel into the TAP
(vxlan_receive.py), the BFD session (vxlan_bfd.py), and the impaired or cut directions, whose
frames wait in the impairment model's queue and face the veth rules when they leave it.
"""

import asyncio
import errno
import os
import time
from collections.abc import Callable
from itertools import islice
from typing import TYPE_CHECKING, Any

from tapveth.core import vnet, vxlan
from tapveth.core.rules import DropReason, Flow, admit, write_refusal
from tapveth.core.vxlanspec import VxlanSpec
from tapveth.daemon.pair import End
from tapveth.daemon.pending_events import PendingEvents
from tapveth.daemon.vxlan_bfd import BfdLink
from tapveth.daemon.vxlan_receive import NO_VNET, TunnelReceiver
from tapveth.daemon.vxlan_send import TAP_OFFLOADS, TunnelSender, tap_gso_max_segs
from tapveth.daemon.vxlan_underlay import Underlay, UnderlayError, open_underlay

if TYPE_CHECKING:
    from tapveth.core.bfd import Session
    from tapveth.daemon.capture import Capture
    from tapveth.daemon.impaired import ImpairedLink

__all__ = [
    "TAP_OFFLOADS",
    "Underlay",
    "UnderlayError",
    "VxlanEnd",
    "open_underlay",
    "tap_gso_max_segs",
]

BATCH = 64
BUF_LEN = 65536 + 1024
_HDR = vnet.HDR_LEN
_NO_VNET = NO_VNET
_GSO_OFF = vnet.GSO_TYPE_OFFSET
_GSO_MASK = ~vnet.GSO_ECN & 0xFF


class VxlanEnd:
    """The far end of a pair, behind a VXLAN tunnel. To the pair it looks like an end that is
    always up (or up while BFD says the far side is), with the flow of frames it delivers."""

    def __init__(
        self,
        spec: VxlanSpec,
        underlay: Underlay,
        on_change: Callable[[], None],
        on_gone: Callable[[End, OSError], None],
        events: PendingEvents,
        on_traffic: Callable[[], None],
    ) -> None:
        """events: the link events, applied before each batch."""
        self.spec = spec
        self.name = spec.name
        self.ns_inode = underlay.ns_inode
        self.index = 0
        self.mtu = 0
        self.address = ""
        self.out = Flow()  # frames from the tunnel to the TAP (the TAP end's rx)
        self.captures: tuple[Capture, ...] = ()  # captures watching what the tunnel delivers
        self.local: End | None = None
        # Impairments of the frames the tunnel delivers to the TAP (`qdisc … dev vxlan:VNI`);
        # those of the frames the TAP sends are the TAP end's own (End.impair).
        self.impair: ImpairedLink | None = None
        self.cut = False  # the pair's carrier is cut (a fault): both directions dropped
        self.bfd: BfdLink | None = None
        self._ibuf = bytearray(BUF_LEN)  # the impaired path's read buffer (virtio header first)
        self._u = underlay
        self._on_change = on_change
        self._on_gone = on_gone
        self._events = events
        self._on_traffic = on_traffic
        self._vxhdr = vxlan.header(spec.vni)
        self._remote = spec.remote
        self.sender = TunnelSender(underlay.tx, self._vxhdr, on_gone)
        self.receiver = TunnelReceiver(self, underlay.rx, self._vxhdr[4:7], spec.remote)
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def session(self) -> "Session | None":
        return None if self.bfd is None else self.bfd.session

    @property
    def up(self) -> bool:
        """What the carrier rule sees of the far side: with BFD, whether the session is up;
        without, always (the carrier then follows the local end alone)."""
        return self.bfd is None or self.bfd.session.up

    @property
    def key(self) -> tuple[int | None, int]:
        return (None, 0)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, tap: End) -> None:
        loop = asyncio.get_running_loop()
        self._loop = loop
        self.local = tap
        loop.add_reader(tap.fd, self._tap_readable)
        loop.add_reader(self._u.rx.fileno(), self.from_tunnel)
        if self.spec.bfd:
            self.bfd = BfdLink(
                self.spec,
                loop,
                self._u.tx[0].fileno(),
                self._vxhdr,
                self._u.local_ip,
                not tap.up,
                self._on_change,
            )

    def stop(self) -> None:
        """Stop both directions and the timer (the sockets stay open until close())."""
        if self._loop is None:
            return
        if self.local is not None and not self.local.tap.closed:
            self._loop.remove_reader(self.local.fd)
        self._loop.remove_reader(self._u.rx.fileno())
        if self.bfd is not None:
            self.bfd.stop()
        self._loop = None

    def close(self) -> None:
        self.stop()
        self._u.close()

    def local_admin(self, up: bool) -> None:
        """The TAP end was set up or down: with BFD, tell the far side (AdminDown)."""
        if self.bfd is not None:
            self.bfd.local_admin(up)

    def gone(self, end: End, exc: OSError) -> None:
        """The TAP failed as a gone device does: the daemon looks for it again."""
        self._on_gone(end, exc)

    # -- frames ------------------------------------------------------------------------------

    def from_tap(self) -> None:
        """Encapsulate what the TAP holds now toward the remote (vxlan_send.py). What comes
        back at once (an echo reply, TCP ACKs: the far side ran in this send's softirq when the
        underlay is local) is read in the same wake-up, before the loop goes round."""
        tap = self.local
        assert tap is not None
        self._events.apply_if_queued()
        if self.sender.pump(tap, self.session) and self._plain_in():
            self.receiver.pump(tap)
        self._on_traffic()  # after the frames: moving the poll deadline is not on their path

    def from_tunnel(self) -> None:
        """Decapsulate what the socket holds now to the TAP (vxlan_receive.py). The TAP's
        stack ran during the writes and often answers at once (an ACK, an echo reply): that
        is sent in the same wake-up."""
        tap = self.local
        assert tap is not None
        self._events.apply_if_queued()
        if self.receiver.pump(tap) and not (tap.impair is not None or tap.cut or tap.captures):
            self.sender.pump(tap, self.session)
        self._on_traffic()

    def _plain_in(self) -> bool:
        """Whether frames from the tunnel take the plain path now (no impairments, no cut, no
        capture): only then does the send path read them too."""
        return self.impair is None and not self.cut and not self.captures

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
            self.from_tap()

    def from_tap_impaired(self) -> None:
        """Read what the TAP holds now (at most BATCH frames) into its impairments (or drop it:
        carrier cut); what is due already goes into the tunnel at once, the rest at its timer."""
        tap = self.local
        assert tap is not None
        self._events.apply_if_queued()
        link, caps, buf = tap.impair, tap.captures, self._ibuf
        view = memoryview(buf)
        batch: list[bytes] = []
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
            batch.append(bytes(view[:n]))
        # Stamped once read, as the relay does (daemon/relay.py _enqueue): none leaves early.
        now = time.monotonic_ns()
        if link is not None:
            for data in batch:
                self._queue(tap, link, now, data, caps)
        for cap in caps:
            cap.flush()
        if link is not None:
            self._on_traffic()  # poll as after any arrival (daemon/relay.py _pump_impaired)
            self._deliver_to_tunnel()

    def held(self, tap: End, frame: memoryview, caps: "tuple[Capture, ...]") -> bool:
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
        self._on_traffic()
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
        call, as the relay does. A TCP super-frame from the TAP (TSO) goes in with its
        geometry, so that rate counts each segment and hands it on in pieces."""
        gso_size = hdr_len = 0
        if data[_GSO_OFF] & _GSO_MASK:
            gso_size, hdr_len = vnet.gso_geometry(data, len(data))
        if not caps:
            link.model.enqueue(now, data, gso_size, hdr_len)
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
            link.model.enqueue(now, data, gso_size, hdr_len)
        finally:
            stats.on_drop = counted
        for reason in dropped:
            for cap in caps:
                cap.frame(src, memoryview(data)[_HDR:], reason)

    def fire(self, src: "End | VxlanEnd") -> None:
        """src's impairment timer expired (src: the TAP end for frames into the tunnel, this
        end for frames out of it): apply pending link events, then deliver what is due."""
        link = src.impair
        if link is None:
            return
        if not link.fired(self._on_traffic):  # early, for its lead (daemon/impaired.py)
            return
        self._events.apply_if_queued()
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
            elif data[_GSO_OFF]:
                # a TCP super-frame (the TAP offers TSO): cut into segments as on the plain
                # path, which counts each of them
                reason = self.sender.send_super(flow, data)
                for cap in caps:
                    cap.frame(tap, frame, reason)
                continue
            elif data[0] & vnet.FLAG_NEEDS_CSUM:
                done = self.sender.finish_checksum(data)  # checksum offload, as unimpaired
                if done is None:
                    reason = DropReason.INVALID_HEADER
                else:
                    frame = done
                    reason = self.sender.send_frame(frame)
            else:
                reason = self.sender.send_frame(frame)
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
                    reason = write_refusal(exc.errno)
                    if reason is None:
                        self._on_gone(tap, exc)
                        return False
                    if reason is DropReason.PEER_DOWN:
                        flow.peer_counted += 1
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
            "udp_rx": self.receiver.udp_rx,
            "udp_reads": self.receiver.udp_reads,
            "underlay_drops": dict(sorted(self.receiver.drops.items())),
        }
