"""How an impaired direction keeps the loop polling. Every arrival starts a poll window, as on
the plain path, however far ahead its frame is due (a read after a wake-up from idle is
stamped late). With busy-polling on, a head frame due after a longer wait is timed to fire
TIMER_LEAD_NS early, and that early expiry only starts the poll; the frame leaves at its time,
not before, from a poll tick when the window covers its time (no timer armed then), else at its
timer. Relay.pump and Relay.fire over datagram socket pairs, a real timerfd, no TAP, no root."""

import socket
import time
from collections.abc import Iterator

import pytest
from relaypair import socket_ends

from tapveth.core import vnet
from tapveth.core.impair import Impairment
from tapveth.core.netem import Netem
from tapveth.daemon.impaired import TIMER_LEAD_NS, ImpairedLink
from tapveth.daemon.pair import End
from tapveth.daemon.pending_events import PendingEvents
from tapveth.daemon.relay import Relay
from tapveth.kernel.timerfd import Timer

HDR = bytes(vnet.HDR_LEN)
MS = 1_000_000


def _link(delay_ns: int, lead_ns: int) -> ImpairedLink:
    model = Impairment(Netem(latency=delay_ns), now=time.monotonic_ns())
    return ImpairedLink(model, Timer(), lead_ns)


@pytest.mark.parametrize(
    ("delay_ns", "lead_ns", "early"),
    [
        (50 * MS, TIMER_LEAD_NS, True),
        (TIMER_LEAD_NS // 2, TIMER_LEAD_NS, False),
        (50 * MS, 0, False),
    ],
)
def test_rearm_leads_only_a_longer_wait(delay_ns: int, lead_ns: int, early: bool) -> None:
    link = _link(delay_ns, lead_ns)
    try:
        link.model.enqueue(time.monotonic_ns(), HDR + bytes(60))
        due = link.model.next_time()
        assert due is not None
        link.rearm()
        assert link.timer.armed == (due - lead_ns if early else due)
    finally:
        link.timer.close()


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket, End, End]]:
    yield from socket_ends()


def test_an_early_expiry_polls_and_the_frame_leaves_at_its_time(
    pair: tuple[socket.socket, socket.socket, End, End],
) -> None:
    a_in, b_out, src, dst = pair
    link = src.impair = _link(20 * MS, TIMER_LEAD_NS)
    polls: list[int] = []
    relay = Relay(PendingEvents(lambda: None), lambda end, exc: None, lambda: polls.append(1))
    a_in.send(HDR + b"x" * 60)
    relay.pump(src, dst)
    due = link.model.next_time()
    assert due is not None and link.timer.armed == due - TIMER_LEAD_NS
    polls.clear()
    # an expiry ahead of the head (20 ms early here): nothing leaves, the loop is told to poll,
    # and the timer is armed again, for its lead while that is still ahead
    relay.fire(src, dst)
    assert polls == [1]
    assert link.timer.armed == due - TIMER_LEAD_NS
    with pytest.raises(BlockingIOError):
        b_out.recv(256)
    time.sleep(max(0, due - time.monotonic_ns()) / 1e9)
    relay.fire(src, dst)
    assert b_out.recv(256) == HDR + b"x" * 60
    assert time.monotonic_ns() >= due
    assert link.timer.armed is None and len(link.model) == 0


@pytest.mark.parametrize("delay_ns", [100 * MS, TIMER_LEAD_NS // 2, 0])
def test_every_arrival_polls_however_far_ahead_it_is_due(
    pair: tuple[socket.socket, socket.socket, End, End], delay_ns: int
) -> None:
    a_in, b_out, src, dst = pair
    link = src.impair = _link(delay_ns, TIMER_LEAD_NS)
    polls: list[int] = []
    relay = Relay(PendingEvents(lambda: None), lambda end, exc: None, lambda: polls.append(1))
    for i in range(3):
        a_in.send(HDR + bytes([i]) * 60)
        relay.pump(src, dst)
        assert len(polls) == i + 1
    if delay_ns:
        assert len(link.model) == 3
        with pytest.raises(BlockingIOError):
            b_out.recv(256)
    else:  # due at once: delivered by the same pump
        assert [b_out.recv(256)[-1] for _ in range(3)] == [0, 1, 2]


def test_a_frame_the_poll_ticks_will_see_gets_no_timer(
    pair: tuple[socket.socket, socket.socket, End, End],
) -> None:
    a_in, b_out, src, dst = pair
    link = src.impair = _link(20 * MS, TIMER_LEAD_NS)
    watched: list[int | None] = []
    covered = [False]

    def poll_at(when: int | None) -> bool:
        watched.append(when)
        return covered[0] and when is not None  # as BusyPoll.watch answers

    link.poll_at = poll_at
    relay = Relay(PendingEvents(lambda: None), lambda end, exc: None, lambda: None)
    a_in.send(HDR + b"x" * 60)
    relay.pump(src, dst)
    due = link.model.next_time()
    assert due is not None and watched[-1] == due
    assert link.timer.armed == due - TIMER_LEAD_NS  # not covered: the timer, with its lead
    link.timer.disarm()
    covered[0] = True  # now the ticks will see it: the timer is left alone
    link.rearm()
    assert watched[-1] == due and link.timer.armed is None
    time.sleep(max(0, due - time.monotonic_ns()) / 1e9)
    relay.fire(src, dst)  # what a tick calls once it is due
    assert b_out.recv(256) == HDR + b"x" * 60
    assert watched[-1] is None and len(link.model) == 0  # nothing left to watch
