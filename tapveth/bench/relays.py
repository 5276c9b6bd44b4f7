"""Bare relay prototypes for `tapveth bench --designs`: benchmark-only, never used by the daemon.

Each relays frames between two TAPs it creates (named on the command line) and nothing else:
no veth rules (MTU and admin state, link events, impairments, captures, carrier cuts), so a
figure here is an upper bound for a design, not what the daemon would reach with it. The TAPs
are opened as the daemon opens them (virtio header, the same offloads and device features), so
GSO super-frames cross as they do through the daemon.

    python -m tapveth.bench.relays DESIGN TAP_A TAP_B [--queues N]

prints "ready" once both TAPs exist; the caller then moves them into their namespaces (a TAP's
fd stays valid across the move). The process relays until it is killed; its TAPs go with it.
"""

import argparse
import asyncio
import ctypes
import errno
import fcntl
import mmap
import os
import struct
import sys
import threading
from collections.abc import Callable

from tapveth.core import vnet
from tapveth.kernel import tap

DESIGNS = ("uvloop", "thread", "mq", "uring")

IFF_MULTI_QUEUE = 0x0100
BUF_LEN = 65536 + 1024  # a GSO super-frame and its virtio header, as relay.py
BATCH = 64


def open_tap(name: str, multi_queue: bool = False) -> int:
    """A TAP fd opened as the daemon opens its ends (blocking; callers change that)."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    flags = tap.IFF_TAP | tap.IFF_NO_PI | tap.IFF_VNET_HDR | (IFF_MULTI_QUEUE if multi_queue else 0)
    fcntl.ioctl(fd, tap.TUNSETIFF, struct.pack("16sH22x", name.encode(), flags))
    fcntl.ioctl(fd, tap.TUNSETVNETHDRSZ, struct.pack("i", vnet.HDR_LEN))
    for offloads in (tap.OFFLOADS_TUNNEL, tap.OFFLOADS_USO, tap.OFFLOADS):
        try:
            fcntl.ioctl(fd, tap.TUNSETOFFLOAD, offloads)
            break
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
    return fd


def open_pair(a: str, b: str, queues: int) -> tuple[list[int], list[int]]:
    """Each TAP's queue fds (one unless queues > 1), with the daemon's device features."""
    mq = queues > 1
    fds_a = [open_tap(a, mq) for _ in range(queues)]
    fds_b = [open_tap(b, mq) for _ in range(queues)]
    tap.set_features(a, tap.VETH_FEATURES)
    tap.set_features(b, tap.VETH_FEATURES)
    return fds_a, fds_b


# -- a blocking thread per direction (per queue with mq) -------------------------------------


def copy_forever(src: int, dst: int) -> None:
    """Read src blocked, write dst; the GIL is released in both system calls."""
    buf = bytearray(BUF_LEN)
    view = memoryview(buf)
    bufs = [buf]
    readv, write = os.readv, os.write
    while True:
        n = readv(src, bufs)
        try:  # noqa: SIM105 (a with-block per frame costs more than try)
            write(dst, view[:n])
        except OSError:
            pass  # a peer down (EIO): dropped, as the daemon counts it


def run_threads(fds_a: list[int], fds_b: list[int]) -> None:
    """One thread per direction and queue: queue i of A to queue i of B and back."""
    threads = []
    for qa, qb in zip(fds_a, fds_b, strict=True):
        for src, dst in ((qa, qb), (qb, qa)):
            t = threading.Thread(target=copy_forever, args=(src, dst), daemon=True)
            t.start()
            threads.append(t)
    for t in threads:
        t.join()


# -- the daemon's reader loop, bare ----------------------------------------------------------


def run_uvloop(fd_a: int, fd_b: int) -> None:
    """uvloop readers as the daemon's: a batch per wake-up, and after the first write the
    reverse direction at once (the reply it provoked), then the rest of the batch."""
    import uvloop

    buf = bytearray(BUF_LEN)
    view = memoryview(buf)
    bufs = [buf]
    readv, write = os.readv, os.write

    def relay(src: int, dst: int, frames: int) -> bool:
        for _ in range(frames):
            try:
                n = readv(src, bufs)
            except BlockingIOError:
                return False
            try:  # noqa: SIM105
                write(dst, view[:n])
            except OSError:
                pass
        return True

    def pump(src: int, dst: int) -> None:
        if relay(src, dst, 1):
            relay(dst, src, BATCH)
            relay(src, dst, BATCH - 1)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for fd in (fd_a, fd_b):
            os.set_blocking(fd, False)
        loop.add_reader(fd_a, pump, fd_a, fd_b)
        loop.add_reader(fd_b, pump, fd_b, fd_a)
        await asyncio.Event().wait()

    uvloop.run(main())


# -- io_uring: multishot reads into provided buffer rings, writes batched --------------------

_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long

SYS_IO_URING_SETUP, SYS_IO_URING_ENTER, SYS_IO_URING_REGISTER = 425, 426, 427  # x86_64
IORING_SETUP_SINGLE_ISSUER = 1 << 12
IORING_SETUP_DEFER_TASKRUN = 1 << 13
IORING_FEAT_SINGLE_MMAP = 1
IORING_OFF_SQ_RING, IORING_OFF_CQ_RING, IORING_OFF_SQES = 0, 0x8000000, 0x10000000
IORING_ENTER_GETEVENTS = 1
IORING_REGISTER_PBUF_RING = 22
IORING_OP_WRITE = 23
IORING_OP_READ_MULTISHOT = 49  # Linux 6.7
IOSQE_BUFFER_SELECT = 1 << 5
IORING_CQE_F_BUFFER, IORING_CQE_F_MORE = 1, 2
SQE = struct.Struct("=BBHiQQIIQHHiQQ")  # 64 bytes
CQE = struct.Struct("=QiI")  # 16 bytes
ENTRIES = 256
BUFS = 64  # provided buffers per TAP (a power of two)
WRITE_TAG = 1 << 32  # user_data of a write: the tag | the buffer's index; a read's: its TAP


class UringError(OSError):
    pass


def _check(rc: int, what: str) -> int:
    if rc < 0:
        code = ctypes.get_errno()
        raise UringError(code, f"{what}: {os.strerror(code)}")
    return rc


class Uring:
    """A ring set up and driven by raw system calls (no liburing): params, the rings mmap'ed,
    one provided-buffer ring (IORING_REGISTER_PBUF_RING) per TAP."""

    def __init__(self) -> None:
        params = ctypes.create_string_buffer(120)
        flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN
        struct.pack_into("=I", params, 8, flags)
        fd = _syscall(SYS_IO_URING_SETUP, ENTRIES, params)
        if fd < 0 and ctypes.get_errno() == errno.EINVAL:  # before 6.1: no DEFER_TASKRUN
            params = ctypes.create_string_buffer(120)
            fd = _syscall(SYS_IO_URING_SETUP, ENTRIES, params)
        self.fd = _check(fd, "io_uring_setup")
        raw = params.raw
        sq_entries, cq_entries = struct.unpack_from("=II", raw, 0)
        (features,) = struct.unpack_from("=I", raw, 20)
        sq = struct.unpack_from("=IIIIIIIIQ", raw, 40)  # head tail mask entries flags dropped array
        cq = struct.unpack_from("=IIIIIIIIQ", raw, 80)  # head tail mask entries overflow cqes flags
        sq_size = sq[6] + sq_entries * 4
        cq_size = cq[5] + cq_entries * CQE.size
        prot, share = mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_SHARED | mmap.MAP_POPULATE
        if features & IORING_FEAT_SINGLE_MMAP:
            self.sq_map = self.cq_map = mmap.mmap(
                self.fd, max(sq_size, cq_size), share, prot, offset=IORING_OFF_SQ_RING
            )
        else:
            self.sq_map = mmap.mmap(self.fd, sq_size, share, prot, offset=IORING_OFF_SQ_RING)
            self.cq_map = mmap.mmap(self.fd, cq_size, share, prot, offset=IORING_OFF_CQ_RING)
        self.sqes = mmap.mmap(self.fd, sq_entries * SQE.size, share, prot, offset=IORING_OFF_SQES)
        self.sq_head, self.sq_tail, self.sq_mask = sq[0], sq[1], sq_entries - 1
        self.cq_head, self.cq_tail, self.cq_mask, self.cqes = cq[0], cq[1], cq_entries - 1, cq[5]
        for i in range(sq_entries):  # the SQ array maps slots to SQEs one to one
            struct.pack_into("=I", self.sq_map, sq[6] + 4 * i, i)
        self.tail = struct.unpack_from("=I", self.sq_map, self.sq_tail)[0]
        self.pending = 0
        self._pins: list[object] = []

    def buffer_ring(self, group: int, count: int, size: int) -> "BufferRing":
        ring = BufferRing(group, count, size)
        reg = ctypes.create_string_buffer(40)
        struct.pack_into("=QIHH", reg, 0, ring.ring_addr, count, group, 0)
        _check(
            _syscall(SYS_IO_URING_REGISTER, self.fd, IORING_REGISTER_PBUF_RING, reg, 1),
            "IORING_REGISTER_PBUF_RING",
        )
        self._pins.append(ring)
        return ring

    def prep(self, op: int, fd: int, addr: int, length: int, data: int, flags: int = 0,
             group: int = 0) -> None:  # fmt: skip
        slot = (self.tail & self.sq_mask) * SQE.size
        SQE.pack_into(
            self.sqes, slot, op, flags, 0, fd, 0, addr, length, 0, data, group, 0, 0, 0, 0
        )
        self.tail = (self.tail + 1) & 0xFFFFFFFF
        self.pending += 1

    def enter(self, wait: int) -> None:
        """Submit what is prepared and wait for `wait` completions."""
        struct.pack_into("=I", self.sq_map, self.sq_tail, self.tail)
        n, self.pending = self.pending, 0
        while True:
            rc = _syscall(SYS_IO_URING_ENTER, self.fd, n, wait, IORING_ENTER_GETEVENTS, None, 0)
            if rc >= 0 or ctypes.get_errno() != errno.EINTR:
                break
            n = 0
        _check(rc, "io_uring_enter")

    def completions(self) -> list[tuple[int, int, int]]:
        """(user_data, res, flags) of every CQE posted, and the CQ head moved past them."""
        cq = self.cq_map
        head = struct.unpack_from("=I", cq, self.cq_head)[0]
        tail = struct.unpack_from("=I", cq, self.cq_tail)[0]
        out = []
        while head != tail:
            out.append(CQE.unpack_from(cq, self.cqes + (head & self.cq_mask) * CQE.size))
            head = (head + 1) & 0xFFFFFFFF
        struct.pack_into("=I", cq, self.cq_head, head)
        return out


class BufferRing:
    """`count` buffers of `size` bytes in one anonymous mapping, handed to the kernel through a
    ring of io_uring_buf entries (addr u64, len u32, bid u16; the tail is the first entry's
    last u16)."""

    def __init__(self, group: int, count: int, size: int) -> None:
        self.group, self.count, self.size, self.mask = group, count, size, count - 1
        self.ring = mmap.mmap(-1, max(mmap.PAGESIZE, count * 16))
        self.mem = mmap.mmap(-1, count * size)
        self.ring_addr = ctypes.addressof(ctypes.c_char.from_buffer(self.ring))
        self.base = ctypes.addressof(ctypes.c_char.from_buffer(self.mem))
        self.tail = 0
        for bid in range(count):
            self.give(bid)
        self.publish()

    def give(self, bid: int) -> None:
        at = (self.tail & self.mask) * 16
        struct.pack_into("=QIH", self.ring, at, self.base + bid * self.size, self.size, bid)
        self.tail = (self.tail + 1) & 0xFFFF

    def publish(self) -> None:
        struct.pack_into("=H", self.ring, 14, self.tail)


def run_uring(fd_a: int, fd_b: int) -> None:
    """One thread, one ring: a multishot read on each TAP picks a buffer of its TAP's group;
    every frame read is written to the other TAP by a write SQE, all of a round's writes
    submitted in the io_uring_enter that waits for the next frames; a buffer goes back to
    its ring when its write completes."""
    ring = Uring()
    fds = (fd_a, fd_b)
    groups = (ring.buffer_ring(0, BUFS, BUF_LEN), ring.buffer_ring(1, BUFS, BUF_LEN))

    def arm(side: int) -> None:
        ring.prep(IORING_OP_READ_MULTISHOT, fds[side], 0, 0, side, IOSQE_BUFFER_SELECT, side)

    arm(0)
    arm(1)
    while True:
        ring.enter(1)
        given = [False, False]
        for data, res, flags in ring.completions():
            if data & WRITE_TAG:
                side, bid = (data >> 16) & 1, data & 0xFFFF
                groups[side].give(bid)
                given[side] = True
                continue
            side = data
            if res >= 0 and flags & IORING_CQE_F_BUFFER:
                bid = flags >> 16
                addr = groups[side].base + bid * BUF_LEN
                ring.prep(IORING_OP_WRITE, fds[1 - side], addr, res, WRITE_TAG | side << 16 | bid)
            elif res < 0 and -res not in (errno.ENOBUFS, errno.EAGAIN, errno.EINTR):
                raise UringError(-res, f"read: {os.strerror(-res)}")
            if not flags & IORING_CQE_F_MORE:  # the multishot read ended (out of buffers)
                arm(side)
        for side in (0, 1):
            if given[side]:
                groups[side].publish()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tapveth.bench.relays")
    p.add_argument("design", choices=DESIGNS)
    p.add_argument("tap_a")
    p.add_argument("tap_b")
    p.add_argument("--queues", type=int, default=2, help="queues a TAP with mq (default 2)")
    opts = p.parse_args(argv)
    queues = opts.queues if opts.design == "mq" else 1
    fds_a, fds_b = open_pair(opts.tap_a, opts.tap_b, queues)
    runners: dict[str, Callable[[], None]] = {
        "uvloop": lambda: run_uvloop(fds_a[0], fds_b[0]),
        "thread": lambda: run_threads(fds_a, fds_b),
        "mq": lambda: run_threads(fds_a, fds_b),
        "uring": lambda: run_uring(fds_a[0], fds_b[0]),
    }
    print("ready", flush=True)
    runners[opts.design]()
    return 0


if __name__ == "__main__":
    sys.exit(main())
