"""The hot path: move frames from one end's TAP to the other's, applying veth's admission rule.

Frames are read into one preallocated buffer (os.readv does not allocate per call as
pytun.read() does) and written to the peer unchanged, virtio header included, so GSO
super-frames and partial checksums cross as they do on the kernel veth. A TAP write never
blocks: tun injects the frame into the receiving stack at once, so there is no output queue.

Captures hook in once per batch: pump() checks whether any capture watches the sending end
(End.captures, empty unless `tapveth capture` runs) and only then takes the slower path, which
relays one frame at a time and shows each to the captures with what became of it (delivered,
or the reason it was refused). Without a capture the fast path is unchanged. On an impaired
direction, frames are shown when they leave the queue, and those the model drops (loss, a
full queue, corruption of a super-frame) when they arrive.
"""

import errno
import os
import time
from collections.abc import Callable
from itertools import islice
from typing import TYPE_CHECKING

from tapveth.core import vnet
from tapveth.core.rules import DropReason, admit, write_refusal
from tapveth.daemon.pair import End
from tapveth.daemon.pending_events import PendingEvents

if TYPE_CHECKING:
    from tapveth.daemon.impaired import ImpairedLink

# Largest frame a TAP can hand us: a 64 KiB GSO super-frame or a 65535-byte frame at MTU 65521,
# plus the virtio header. A shorter buffer would truncate silently.
BUF_LEN = 65536 + 1024
# Frames handled per wakeup before yielding to the loop, so one busy end cannot starve the rest.
BATCH = 64

_HDR = vnet.HDR_LEN
_GSO_OFF = vnet.GSO_TYPE_OFFSET
_GSO_MASK = ~vnet.GSO_ECN & 0xFF


class Relay:
    """Pumps frames for every pair of a daemon; stateless between frames but for the buffer."""

    def __init__(
        self,
        events: PendingEvents,
        on_gone: Callable[[End, OSError], None],
        on_traffic: Callable[[], None] = lambda: None,
    ) -> None:
        """events: the link events, applied before each batch."""
        self._buf = bytearray(BUF_LEN)
        self._bufs = [self._buf]
        self._view = memoryview(self._buf)
        self._events = events
        self._report_gone = on_gone
        self._on_traffic = on_traffic
        self._gone = False  # an end of the batch under way failed: nothing more on this pair
        self.wakeups = 0  # batches relayed (the metrics divide frames by it)

    def _on_gone(self, end: End, exc: OSError) -> None:
        self._gone = True
        self._report_gone(end, exc)

    def pump(self, src: End, dst: End) -> None:
        """Relay what src's TAP holds now (at most BATCH frames) to dst."""
        # The link events queued before these frames apply to them (pending_events.py).
        # PendingEvents.apply_if_queued() inlined: this is the plain path's one call per batch.
        events = self._events
        events_poll = events.poll
        if events_poll is None or events_poll(0):
            events.apply()
        if src.impair is not None or src.cut:  # decided once a batch, not per frame
            self._pump_impaired(src, dst)
            return
        self.wakeups += 1
        if src.captures:
            self._pump_captured(src, dst)
        else:
            self._gone = False
            first = self._relay(src, dst, 1)
            # The write ran dst's stack, which often answers at once (an echo reply, a TCP
            # ACK, a request's response): relay that now, before the rest of the batch and the
            # read that finds src's ring empty, instead of after a round of the loop, which
            # after idle costs tens of microseconds. Events are applied before a batch, so
            # these frames are judged as the batch's later frames are. Only when that
            # direction is a plain one (impairments, a cut, a capture: those go through pump)
            # that the loop relays (the native thread reads the TAPs it relays alone).
            if first is not None and not (
                self._gone or dst.impair is not None or dst.cut or dst.captures or dst.native
            ):
                self._relay(dst, src, BATCH)
            if first is not None and not self._gone:
                self._relay(src, dst, BATCH - 1)
        # After the frames, not before: moving the poll deadline is not on the frame's path.
        self._on_traffic()

    def _pump_captured(self, src: End, dst: End) -> None:
        """The batch one frame at a time, each shown to the captures once decided."""
        view, caps = self._view, src.captures
        for _ in range(BATCH):
            done = self._relay(src, dst, 1)
            if done is None:
                break
            n, reason = done
            frame = view[_HDR:n]
            for cap in caps:
                cap.frame(src, frame, reason)
        for cap in caps:
            cap.flush()

    def _relay(self, src: End, dst: End, frames: int) -> tuple[int, DropReason | None] | None:
        """Relay up to `frames` frames; the last one's length (virtio header included) and
        drop reason, None if there was none or an end is gone. The frame stays in the buffer."""
        buf, bufs, view = self._buf, self._bufs, self._view
        readv, write = os.readv, os.write
        flow = src.out
        src_fd, dst_fd = src.fd, dst.fd
        n, reason = 0, None
        for _ in range(frames):
            try:
                n = readv(src_fd, bufs)
            except BlockingIOError:
                return None
            except OSError as exc:
                if exc.errno == errno.EINTR:
                    continue
                self._on_gone(src, exc)
                return None
            length = n - _HDR
            reason = admit(length, buf[_GSO_OFF] & _GSO_MASK != 0, dst.up, dst.mtu)
            if reason is None:
                try:
                    write(dst_fd, view[:n])
                except OSError as exc:
                    reason = self._write_failed(dst, exc)
                    if reason is None:
                        return None
                    if reason is DropReason.PEER_DOWN:
                        flow.peer_counted += 1  # tun counted it in the peer's rx_dropped
                else:
                    flow.forwarded(length)
                    continue
            flow.refused(reason)
        return (n, reason) if n else None

    def _pump_impaired(self, src: End, dst: End) -> None:
        """Frames through src's impairments: each copied into a buffer of its own and queued
        by the model; what is due already goes out at once, the rest at its timer."""
        link = src.impair
        if src.captures and link is not None:
            read = self._enqueue_shown(src, link)
        else:
            read = self._enqueue(src)
        if not read:
            return
        # Poll after an arrival as the plain path does, whenever its frame is due: a frame is
        # stamped when it is read, so one read after a wake-up from idle is stamped, and
        # leaves, that much late (~200 us here). With `delay 100ms` at 1 kpps, the first
        # 100 ms of frames (arriving while none leaves) were each late by that: p99 +225 to
        # +241 us without this poll, +68 to +96 us with it.
        self._on_traffic()
        self.deliver(src, dst)

    def _enqueue(self, src: End) -> bool:
        """Read a batch from src into its impairments (or refuse it: carrier cut); False if
        src is gone. Captures of a cut link see each frame refused."""
        link = src.impair
        caps = src.captures
        buf, bufs, view = self._buf, self._bufs, self._view
        readv = os.readv
        src_fd = src.fd
        batch: list[tuple[bytes, int, int]] = []
        for _ in range(BATCH):
            try:
                n = readv(src_fd, bufs)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.EINTR:
                    continue
                self._on_gone(src, exc)
                return False
            if link is None:  # carrier cut, no impairments
                src.out.refused(DropReason.CARRIER)
                for cap in caps:
                    cap.frame(src, view[_HDR:n], DropReason.CARRIER)
                continue
            if buf[_GSO_OFF] & _GSO_MASK:
                gso_size, hdr_len = vnet.gso_geometry(buf, n)
            else:
                gso_size = hdr_len = 0
            batch.append((bytes(view[:n]), gso_size, hdr_len))
        # The batch is stamped once it is read: every frame of it had arrived by then, so none
        # leaves before its time (a stamp taken before the reads made a frame that came in
        # during them leave early by as long as they took), and it leaves together, at one
        # timer wake-up.
        now = time.monotonic_ns()
        if link is not None:
            enqueue = link.model.enqueue
            for data, gso_size, hdr_len in batch:
                enqueue(now, data, gso_size, hdr_len)
        for cap in caps:  # deliver() flushes the rest; with no impairments it is not called
            cap.flush()
        return True

    def _enqueue_shown(self, src: End, link: "ImpairedLink") -> bool:
        """As _enqueue while a capture watches src: the frames the model drops (loss, a full
        queue, a super-frame picked for corruption) are shown with their reason, as they
        arrived. The model reports each drop through its callback, wrapped for this batch.
        A loop of its own, so that without a capture _enqueue's loop is as it was."""
        caps = src.captures
        stats = link.model.stats
        counted = stats.on_drop
        dropped: list[DropReason] = []

        def drop(reason: DropReason) -> None:
            dropped.append(reason)
            if counted is not None:
                counted(reason)

        buf, bufs, view = self._buf, self._bufs, self._view
        enqueue = link.model.enqueue
        src_fd = src.fd
        batch: list[tuple[bytes, int, int]] = []
        for _ in range(BATCH):
            try:
                n = os.readv(src_fd, bufs)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.EINTR:
                    continue
                self._on_gone(src, exc)
                return False
            if buf[_GSO_OFF] & _GSO_MASK:
                gso_size, hdr_len = vnet.gso_geometry(buf, n)
            else:
                gso_size = hdr_len = 0
            batch.append((bytes(view[:n]), gso_size, hdr_len))
        now = time.monotonic_ns()  # once the batch is read, as in _enqueue
        stats.on_drop = drop
        try:
            for data, gso_size, hdr_len in batch:
                enqueue(now, data, gso_size, hdr_len)
                if dropped:
                    frame = memoryview(data)[_HDR:]  # as it arrived (a corrupted copy is apart)
                    for reason in dropped:
                        for cap in caps:
                            cap.frame(src, frame, reason)
                    dropped.clear()
        finally:
            stats.on_drop = counted
        return True

    def fire(self, src: End, dst: End) -> None:
        """src's impairment timer expired, or a poll tick found its head frame due: apply
        pending link events (the veth rules are judged at delivery), then deliver what is due."""
        link = src.impair
        if link is None:
            return
        if not link.fired(self._on_traffic):  # early, for its lead: polls until the head
            return
        self._events.apply_if_queued()
        self.deliver(src, dst)

    def deliver(self, src: End, dst: End) -> None:
        """Write the frames src's impairments release now to dst, through veth's admission,
        and arm the timer for the next one."""
        link = src.impair
        if link is None:
            return
        flow = src.out
        write = os.write
        dst_fd = dst.fd
        caps = src.captures
        # At most a batch, then the timer fires again at once: other pairs get their turn.
        for data in islice(link.model.due(time.monotonic_ns()), BATCH):
            length = len(data) - _HDR
            reason: DropReason | None = None
            if src.cut:
                reason = DropReason.CARRIER
            else:
                reason = admit(length, data[_GSO_OFF] & _GSO_MASK != 0, dst.up, dst.mtu)
            if reason is None:
                try:
                    write(dst_fd, data)
                except OSError as exc:
                    reason = self._write_failed(dst, exc)
                    if reason is None:
                        return
                    if reason is DropReason.PEER_DOWN:
                        flow.peer_counted += 1
                else:
                    flow.forwarded(length)
            if reason is not None:
                flow.refused(reason)
            # Captures see what leaves the impairments here; what the model itself dropped
            # (loss, a full queue, corrupt) they saw when it arrived (_enqueue).
            for cap in caps:
                cap.frame(src, memoryview(data)[_HDR:], reason)
        for cap in caps:
            cap.flush()
        if src.impair is link:
            link.rearm()

    def _write_failed(self, dst: End, exc: OSError) -> DropReason | None:
        reason = write_refusal(exc.errno)
        if reason is None:
            self._on_gone(dst, exc)
        return reason
