"""The native relay thread (daemon/_native_relay.c) and its Python side (daemon/native.py),
over datagram socket pairs standing in for TAPs: no TAP, no root. Every wait is bounded."""

import asyncio
import errno
import os
import random
import select
import socket
from collections.abc import Iterator
from typing import Any, cast

import pytest
from relaypair import FakeTap, socket_ends

from tapveth.core import vnet
from tapveth.core.pollwindow import PollWindow
from tapveth.core.rules import DropReason, Flow
from tapveth.daemon import _native_relay as engine
from tapveth.daemon import native
from tapveth.daemon.pair import End, Pair
from tapveth.daemon.pending_events import PendingEvents
from tapveth.daemon.relay import BATCH, Relay

HDR = bytes(vnet.HDR_LEN)
Link = tuple[socket.socket, socket.socket, End, End]


@pytest.fixture
def link() -> Iterator[Link]:
    yield from socket_ends()


def _recv(sock: socket.socket, timeout: float = 5.0) -> bytes | None:
    """One datagram (virtio header cut), or None if none comes within timeout."""
    ready, _, _ = select.select([sock], [], [], timeout)
    return sock.recv(1 << 17)[len(HDR) :] if ready else None


def _frame(n: int, fill: bytes = b"x") -> bytes:
    return HDR + fill * n


class Running:
    """The engine started; `queued` is the link events' socket as the thread polls it (the
    daemon reads it), `sender` its other side (the kernel queues events into it)."""

    def __init__(self) -> None:
        self.queued, self.sender = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        engine.start(
            self.queued.fileno(), self.notify, vnet.HDR_LEN, vnet.GSO_TYPE_OFFSET, 0x7F, BATCH,
            0, 0,
        )  # fmt: skip

    def close(self) -> None:
        engine.stop()
        os.close(self.notify)
        self.queued.close()
        self.sender.close()


@pytest.fixture
def running() -> Iterator[Running]:
    r = Running()
    try:
        yield r
    finally:
        r.close()


class Counts:
    """What the thread counted for one slot, summed over takes (a take zeroes them)."""

    def __init__(self, slot: int) -> None:
        self.slot = slot
        self.total = [0] * 10

    def read(self) -> tuple[int, ...]:
        for i, v in enumerate(engine.take(self.slot)):
            self.total[i] += v
        return tuple(self.total)

    def wait(self, frames: int) -> tuple[int, ...]:
        """Once the thread has counted `frames` frames (sent or dropped); 5 s at most."""
        for _ in range(500):
            c = self.read()
            if c[0] + c[2] >= frames:
                return c
            select.select([], [], [], 0.01)
        raise AssertionError(f"slot {self.slot}: fewer than {frames} frames counted")


def _attach(src: End, dst: End, own_dst: bool = True) -> tuple[int, int]:
    s, d = engine.add(src.fd), engine.add(dst.fd)
    engine.configure(s, d, src.up, src.mtu)
    engine.configure(d, s, dst.up, dst.mtu)
    engine.own(s, True)
    if own_dst:
        engine.own(d, True)
    return s, d


def test_frames_cross_in_order_and_are_counted(link: Link, running: Running) -> None:
    a_in, b_out, src, dst = link
    s, _ = _attach(src, dst)
    for i in range(5):
        a_in.send(_frame(60 + i))
    got = [_recv(b_out) for _ in range(5)]
    assert [len(g or b"") for g in got] == [60, 61, 62, 63, 64]
    assert Counts(s).wait(5)[:3] == (5, 60 + 61 + 62 + 63 + 64, 0)
    assert engine.take(s)[:2] == (0, 0)  # taken: zeroed


def test_admission_is_veths(link: Link, running: Running) -> None:
    a_in, b_out, src, dst = link
    dst.mtu = 100
    s, d = _attach(src, dst)
    a_in.send(_frame(10))  # a runt: shorter than an Ethernet header
    a_in.send(_frame(119))  # MTU + 18 + 1: too long
    a_in.send(_frame(118))  # MTU + 18: crosses
    gso = bytearray(_frame(500))
    gso[vnet.GSO_TYPE_OFFSET] = vnet.GSO_TCPV4  # a GSO super-frame skips the length check
    a_in.send(bytes(gso))
    assert len(_recv(b_out) or b"") == 118
    assert len(_recv(b_out) or b"") == 500
    engine.configure(d, s, False, 100)  # the receiver set down
    a_in.send(_frame(60))
    counted = Counts(s).wait(5)
    packets, nbytes, dropped, peer_counted, runt, mtu, peer_down, invalid, werr, batches = counted
    assert (packets, nbytes, dropped) == (2, 618, 3)
    assert (runt, mtu, peer_down, invalid, werr, peer_counted) == (1, 1, 1, 0, 0, 0)
    assert batches >= 1
    assert _recv(b_out, 0.1) is None  # the one for a receiver that is down never came


def test_a_batch_waits_for_link_events(link: Link, running: Running) -> None:
    """While an event is queued, or the daemon is applying what it read, no frame is judged:
    a change made before a frame applies to it."""
    a_in, b_out, src, dst = link
    _attach(src, dst)
    running.sender.send(b"an event")  # queued, not read yet
    a_in.send(_frame(60))
    assert _recv(b_out, 0.3) is None
    engine.applying(True)  # the daemon reads it, and is applying it
    running.queued.recv(100)
    assert _recv(b_out, 0.3) is None
    engine.applying(False)  # applied
    assert len(_recv(b_out) or b"") == 60


def test_an_end_that_fails_is_reported(link: Link, running: Running) -> None:
    a_in, _, src, dst = link
    dst.tap = cast("Any", FakeTap(os.dup(dst.fd)))
    _, d = _attach(src, dst)
    os.close(dst.fd)  # closed under the thread: EBADF, as a deleted TAP's fd fails
    a_in.send(_frame(60))
    ready, _, _ = select.select([running.notify], [], [], 5)
    assert ready
    assert engine.gone() == [(d, errno.EBADF)]


def test_the_answer_is_taken_only_from_an_end_the_thread_relays(
    link: Link, running: Running
) -> None:
    """After a frame from a, what b has queued is taken in the same batch only when the
    thread relays b too: an end the loop relays is never read by the thread."""
    a_in, b_out, src, dst = link
    _attach(src, dst, own_dst=False)
    b_out.send(_frame(70))  # b has something queued for a
    a_in.send(_frame(60))
    assert len(_recv(b_out) or b"") == 60
    assert _recv(a_in, 0.3) is None  # b's frame waits for the loop's reader
    os.read(dst.fd, 1 << 17)  # ...which takes it


def test_native_flow_folds_on_read(link: Link, running: Running) -> None:
    """A NativeFlow's counters include what the thread counted, whoever reads them; made a
    plain Flow again, it keeps them."""
    a_in, b_out, src, dst = link
    dst.mtu = 100
    s, _ = _attach(src, dst)
    flow = src.out
    flow.forwarded(1000)  # counted before the thread had the end
    object.__setattr__(flow, "__class__", native.NativeFlow)
    native._SLOT_OF[id(flow)] = s
    try:
        a_in.send(_frame(60))
        a_in.send(_frame(200))  # too long for the MTU
        assert len(_recv(b_out) or b"") == 60
        for _ in range(500):  # the drop is counted after the write: wait for it
            if flow.dropped:
                break
            select.select([], [], [], 0.01)
        assert (flow.packets, flow.bytes, flow.dropped) == (2, 1060, 1)
        assert flow.drops == {DropReason.MTU: 1}
        flow.refused(DropReason.MTU)  # relay.py's writes go through too
        assert flow.dropped == 2 and flow.drops == {DropReason.MTU: 2}
    finally:
        native._SLOT_OF.pop(id(flow), None)
        object.__setattr__(flow, "__class__", Flow)
    assert flow.packets == 2


def test_hand_over_to_the_loop_and_back(link: Link) -> None:
    """NativeRelay: a plain end is the thread's; a capture makes it the loop's (its frames go
    through relay.py and are shown), and once it ends the thread has it again. The counts
    run on across both."""
    a_in, b_out, src, dst = link
    seen: list[int] = []

    class Capture:
        def frame(self, sender: End, frame: memoryview, reason: str | None) -> None:
            seen.append(len(frame))

        def flush(self) -> None:
            pass

    async def main() -> None:
        loop = asyncio.get_running_loop()
        events_theirs, events_ours = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        relay = Relay(PendingEvents(lambda: None), lambda end, exc: None)
        nr = native.NativeRelay(loop, relay, events_theirs.fileno(), 0, 0, lambda e, x: None)
        pair = Pair(src, dst)
        try:
            nr.attach(pair)
            assert src.native and dst.native
            a_in.send(_frame(60))
            assert len(await _arecv(b_out) or b"") == 60
            src.captures = (cast("Any", Capture()),)
            assert not src.native and dst.native
            a_in.send(_frame(61))
            assert len(await _arecv(b_out) or b"") == 61
            assert seen == [61]  # relayed by the loop, shown to the capture
            src.captures = ()
            assert src.native
            a_in.send(_frame(62))
            assert len(await _arecv(b_out) or b"") == 62
            assert seen == [61]
            assert (src.out.packets, src.out.bytes) == (3, 183)
            nr.detach(pair)
            assert type(src.out) is Flow and src.out.packets == 3
        finally:
            nr.close()
            events_theirs.close()
            events_ours.close()

    asyncio.run(main())


async def _arecv(sock: socket.socket, timeout: float = 5.0) -> bytes | None:
    """_recv without blocking the loop (the loop relays in one of the tests)."""
    for _ in range(int(timeout / 0.005)):
        try:
            return sock.recv(1 << 17)[len(HDR) :]
        except BlockingIOError:
            await asyncio.sleep(0.005)
    return None


def _python_deadlines(base_ns: int, max_gap_ns: int, arrivals: list[int]) -> list[int]:
    window = PollWindow(base_ns, max_gap_ns)
    return [window.arrival(t) for t in arrivals]


@pytest.mark.parametrize(
    ("base_us", "max_gap_us"), [(1000, 0), (1000, 20000), (0, 20000), (50, 300), (0, 0)]
)
def test_poll_window_in_c_is_the_python_one(base_us: int, max_gap_us: int) -> None:
    # The thread's busy-poll window (pollwindow_arrival in C) is a twin of core/pollwindow.py:
    # the same arrivals give the same deadlines. Gaps span steady, jittered, bursty and idle
    # traffic around both the window and the largest gap bridged.
    rng = random.Random(base_us * 7 + max_gap_us)
    base, max_gap = base_us * 1000, max_gap_us * 1000
    scales = [1_000, 200_000, 900_000, 1_100_000, 15_000_000, 25_000_000, 200_000_000]
    for _ in range(50):
        t, arrivals = rng.randrange(10**9), []
        for _ in range(200):
            t += int(rng.choice(scales) * rng.uniform(0.5, 1.5))
            arrivals.append(t)
        assert engine.poll_deadlines(base, max_gap, arrivals) == _python_deadlines(
            base, max_gap, arrivals
        )


def test_poll_window_in_c_bridges_a_steady_gap() -> None:
    # Not only equal: frames 10 ms apart with 20 ms allowed keep the poll open across the gap
    # (15 ms windows), and a 30 ms pause falls back to the 1 ms base.
    base, gap = 1_000_000, 20_000_000
    arrivals = [0, 10_000_000, 20_000_000, 30_000_000, 60_000_000, 60_500_000]
    deadlines = engine.poll_deadlines(base, gap, arrivals)
    windows = [d - t for d, t in zip(deadlines, arrivals, strict=True)]
    assert windows == [base, 15_000_000, 15_000_000, 15_000_000, base, base]
