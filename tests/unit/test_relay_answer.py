"""After a batch from a to b, the relay takes what b has queued for a in the same call (the
answer b's stack gave while the batch was written), but only when b's direction is a plain
one: impaired, cut or captured directions keep their own path. Relay.pump over datagram
socket pairs, no TAP, no root."""

import socket
import time
from collections.abc import Iterator

import pytest
from relaypair import FakeTap, socket_ends

from tapveth.core import vnet
from tapveth.core.impair import Impairment
from tapveth.core.netem import Netem
from tapveth.daemon.impaired import ImpairedLink
from tapveth.daemon.pair import End
from tapveth.daemon.pending_events import PendingEvents
from tapveth.daemon.relay import Relay
from tapveth.kernel.timerfd import Timer

HDR = bytes(vnet.HDR_LEN)  # a zero virtio header


class _Capture:
    def frame(self, sender: End, frame: memoryview, reason: str | None) -> None:
        pass

    def flush(self) -> None:
        pass


Link = tuple[socket.socket, socket.socket, End, End]


@pytest.fixture
def link() -> Iterator[Link]:
    """a_host <-> (a's fd) relay (b's fd) <-> b_host."""
    yield from socket_ends()


def _drain(sock: socket.socket) -> list[bytes]:
    out = []
    while True:
        try:
            out.append(sock.recv(1 << 17)[len(HDR) :])
        except BlockingIOError:
            return out


def _relay() -> tuple[Relay, list[str], list[int]]:
    gone: list[str] = []
    traffic: list[int] = []
    relay = Relay(
        PendingEvents(lambda: None),
        lambda end, exc: gone.append(end.name),
        lambda: traffic.append(1),
    )
    return relay, gone, traffic


def test_the_answer_crosses_in_the_same_call(link: Link) -> None:
    a_host, b_host, a, b = link
    relay, gone, traffic = _relay()
    a_host.send(HDR + b"request".ljust(60, b"."))
    b_host.send(HDR + b"answer".ljust(60, b"."))  # as b's stack would while the request is written
    relay.pump(a, b)
    assert _drain(b_host) == [b"request".ljust(60, b".")]
    assert _drain(a_host) == [b"answer".ljust(60, b".")]
    assert (a.out.packets, b.out.packets) == (1, 1)
    assert relay.wakeups == 1  # one wake-up carried both
    assert traffic == [1] and gone == []


def test_the_answer_is_judged_by_the_rules(link: Link) -> None:
    a_host, b_host, a, b = link
    a.mtu = 100
    relay, _, _ = _relay()
    a_host.send(HDR + bytes(60))
    b_host.send(HDR + bytes(200))  # 186 bytes past the Ethernet header: over a's MTU
    relay.pump(a, b)
    assert _drain(a_host) == []
    assert (b.out.packets, b.out.dropped) == (0, 1)


@pytest.mark.parametrize("path", ["impaired", "cut", "captured"])
def test_a_direction_with_its_own_path_is_left_to_it(link: Link, path: str) -> None:
    a_host, b_host, a, b = link
    if path == "impaired":
        b.impair = ImpairedLink(Impairment(Netem(), now=0, on_drop=b.out.refused), Timer())
    elif path == "cut":
        b.cut = True
    else:
        b.captures = (_Capture(),)  # type: ignore[assignment]
    relay, _, _ = _relay()
    a_host.send(HDR + bytes(60))
    b_host.send(HDR + bytes(60))
    relay.pump(a, b)
    assert len(_drain(b_host)) == 1
    assert _drain(a_host) == []  # still queued on b's side, for pump(b, a)
    relay.pump(b, a)
    if path in ("captured", "impaired"):
        assert len(_drain(a_host)) == 1
    else:
        assert _drain(a_host) == []


def test_an_end_that_failed_is_reported_once(link: Link) -> None:
    a_host, _, a, b = link
    relay, gone, _ = _relay()
    a_host.send(HDR + bytes(60))
    spare, other = socket.socketpair()
    closed_fd = spare.fileno()
    spare.close()
    other.close()
    b.tap = FakeTap(closed_fd)  # type: ignore[assignment]  # b's device went away: EBADF
    relay.pump(a, b)
    assert gone == ["b"]  # the write found it; no read of b's answers after that


def test_the_whole_batch_crosses_around_the_answer(link: Link) -> None:
    a_host, b_host, a, b = link
    relay, _, _ = _relay()
    sent = [bytes([i]) * 60 for i in range(5)]
    for frame in sent:
        a_host.send(HDR + frame)
    b_host.send(HDR + b"answer".ljust(60, b"."))
    relay.pump(a, b)
    assert _drain(b_host) == sent  # in order, the answer read after the first of them
    assert _drain(a_host) == [b"answer".ljust(60, b".")]
    assert (a.out.packets, b.out.packets) == (5, 1)


def test_a_wake_up_with_nothing_to_read_reads_no_answer(link: Link) -> None:
    a_host, b_host, a, b = link
    relay, _, _ = _relay()
    b_host.send(HDR + bytes(60))
    relay.pump(a, b)  # a's ring is empty: b's frame waits for its own wake-up
    assert _drain(a_host) == []
    relay.pump(b, a)
    assert len(_drain(a_host)) == 1


def test_link_events_are_applied_only_when_queued(link: Link) -> None:
    """With the events' socket given, a batch applies the link events only when it holds some:
    a queued event is still applied before the frames."""
    a_host, b_host, a, b = link
    ev_host, ev_relay = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    applied: list[int] = []
    calls: list[int] = []

    def apply_events() -> None:  # as the tracker does: drain, then the new state holds
        calls.append(1)
        ev_relay.setblocking(False)
        try:
            while True:
                ev_relay.recv(64)
                applied.append(1)
                b.mtu = 68
        except BlockingIOError:
            pass

    relay = Relay(PendingEvents(apply_events, ev_relay.fileno()), lambda end, exc: None)
    try:
        a_host.send(HDR + bytes(200))
        relay.pump(a, b)
        assert calls == [] and len(_drain(b_host)) == 1  # nothing queued: not even called
        ev_host.send(b"mtu 68")  # an MTU change queued before the next frame was sent
        a_host.send(HDR + bytes(200))
        relay.pump(a, b)
        assert calls == [1] and applied == [1]
        assert _drain(b_host) == []  # judged with the new MTU
        assert a.out.dropped == 1
    finally:
        ev_host.close()
        ev_relay.close()


def test_a_timed_delivery_applies_link_events_only_when_queued(link: Link) -> None:
    """An impaired frame leaving at its time is judged by the veth rules then: a link event
    queued by that time is applied first, and with none queued nothing is drained."""
    a_host, b_host, a, b = link
    ev_host, ev_relay = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    ev_relay.setblocking(False)
    calls: list[int] = []

    def apply_events() -> None:
        calls.append(1)
        try:
            while ev_relay.recv(64):
                b.mtu = 68
        except BlockingIOError:
            pass

    relay = Relay(PendingEvents(apply_events, ev_relay.fileno()), lambda end, exc: None)
    delay_ns = 2_000_000
    link_a = a.impair = ImpairedLink(
        Impairment(Netem(latency=delay_ns), now=time.monotonic_ns()), Timer()
    )
    try:
        a_host.send(HDR + bytes(200))
        relay.pump(a, b)
        time.sleep(2 * delay_ns / 1e9)
        relay.fire(a, b)
        assert calls == [] and len(_drain(b_host)) == 1  # nothing queued: not even called
        a_host.send(HDR + bytes(200))
        relay.pump(a, b)
        ev_host.send(b"mtu 68")  # while the frame waits in the queue
        time.sleep(2 * delay_ns / 1e9)
        relay.fire(a, b)
        assert calls == [1]
        assert _drain(b_host) == []  # judged at delivery, with the new MTU
        assert a.out.dropped == 1
    finally:
        link_a.timer.close()
        ev_host.close()
        ev_relay.close()
