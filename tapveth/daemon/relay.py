"""The hot path: move frames from one end's TAP to the other's, applying veth's admission rule.

Frames are read into one preallocated buffer (os.readv does not allocate per call as
pytun.read() does) and written to the peer unchanged, virtio header included, so GSO
super-frames and partial checksums cross as they do on the kernel veth. A TAP write never
blocks: tun injects the frame into the receiving stack at once, so there is no output queue.
"""

import errno
import os
import time
from collections.abc import Callable

from tapveth.core import vnet
from tapveth.core.rules import DropReason, admit
from tapveth.daemon.pair import End

# Largest frame a TAP can hand us: a 64 KiB GSO super-frame or a 65535-byte frame at MTU 65521,
# plus the virtio header. A shorter buffer would truncate silently.
BUF_LEN = 65536 + 1024
# Frames handled per wakeup before yielding to the loop, so one busy end cannot starve the rest.
BATCH = 64

_HDR = vnet.HDR_LEN
_GSO_OFF = vnet.GSO_TYPE_OFFSET
_GSO_MASK = ~vnet.GSO_ECN & 0xFF
_GONE = frozenset({errno.EBADFD, errno.EBADF, errno.EFAULT, errno.ENODEV, errno.EPIPE})


class Relay:
    """Pumps frames for every pair of a daemon; stateless between frames but for the buffer."""

    def __init__(
        self,
        before_batch: Callable[[], None],
        on_gone: Callable[[End, OSError], None],
        on_traffic: Callable[[], None] = lambda: None,
    ) -> None:
        self._buf = bytearray(BUF_LEN)
        self._bufs = [self._buf]
        self._view = memoryview(self._buf)
        self._before_batch = before_batch
        self._on_gone = on_gone
        self._on_traffic = on_traffic

    def pump(self, src: End, dst: End) -> None:
        """Relay what src's TAP holds now (at most BATCH frames) to dst."""
        # Netlink events queued before these frames were sent (an MTU change, a peer going
        # down) must be applied first: the kernel veth sees such changes immediately.
        self._before_batch()
        self._on_traffic()
        if src.impair is not None or src.cut:  # decided once a batch, not per frame
            self._pump_impaired(src, dst)
            return
        buf, bufs, view = self._buf, self._bufs, self._view
        readv, write = os.readv, os.write
        flow = src.out
        src_fd, dst_fd = src.fd, dst.fd
        for _ in range(BATCH):
            try:
                n = readv(src_fd, bufs)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno == errno.EINTR:
                    continue
                self._on_gone(src, exc)
                return
            length = n - _HDR
            reason = admit(length, buf[_GSO_OFF] & _GSO_MASK != 0, dst.up, dst.mtu)
            if reason is None:
                try:
                    write(dst_fd, view[:n])
                except OSError as exc:
                    reason = self._write_failed(dst, exc)
                    if reason is None:
                        return
                    if reason is DropReason.PEER_DOWN:
                        flow.peer_counted += 1  # tun counted it in the peer's rx_dropped
                else:
                    flow.forwarded(length)
                    continue
            flow.refused(reason)

    def _pump_impaired(self, src: End, dst: End) -> None:
        """Frames through src's impairments: each copied into a buffer of its own and queued
        by the model; what is due already goes out at once, the rest at its timer."""
        link = src.impair
        buf, bufs, view = self._buf, self._bufs, self._view
        readv = os.readv
        src_fd = src.fd
        now = time.monotonic_ns()
        for _ in range(BATCH):
            try:
                n = readv(src_fd, bufs)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.EINTR:
                    continue
                self._on_gone(src, exc)
                return
            if link is None:  # carrier cut, no impairments
                src.out.refused(DropReason.CARRIER)
                continue
            if buf[_GSO_OFF] & _GSO_MASK:
                gso_size, hdr_len = vnet.gso_geometry(buf, n)
            else:
                gso_size = hdr_len = 0
            link.model.enqueue(now, bytes(view[:n]), gso_size, hdr_len)
        self.deliver(src, dst)

    def fire(self, src: End, dst: End) -> None:
        """src's impairment timer expired: apply pending link events (the veth rules are judged
        at delivery), then deliver what is due."""
        link = src.impair
        if link is None:
            return
        link.timer.clear()
        self._before_batch()
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
        for data in link.model.due(time.monotonic_ns()):
            length = len(data) - _HDR
            if src.cut:
                flow.refused(DropReason.CARRIER)
                continue
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
                    continue
            flow.refused(reason)
        if src.impair is link:
            link.rearm()

    def _write_failed(self, dst: End, exc: OSError) -> DropReason | None:
        if exc.errno == errno.EIO:
            return DropReason.PEER_DOWN  # tun refuses writes to an admin-down device
        if exc.errno == errno.EINVAL:
            return DropReason.INVALID_HEADER
        if exc.errno in _GONE:
            self._on_gone(dst, exc)
            return None
        return DropReason.WRITE_ERROR
