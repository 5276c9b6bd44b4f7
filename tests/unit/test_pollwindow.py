"""The busy-poll window: fixed after any frame, and bridging the gaps of steady traffic only
when asked to and only for gaps up to the limit."""

from tapveth.core.pollwindow import PollWindow, Ticks

MS = 1_000_000


def test_fixed_window_after_every_frame() -> None:
    w = PollWindow(1 * MS)
    assert w.arrival(0) == 1 * MS
    assert w.arrival(10 * MS) == 11 * MS
    assert w.arrival(10 * MS + 5) == 11 * MS + 5


def test_steady_gaps_within_the_limit_are_bridged() -> None:
    w = PollWindow(1 * MS, 20 * MS)
    assert w.arrival(0) == 1 * MS  # nothing known yet
    assert w.arrival(10 * MS) == 25 * MS  # slept 10 ms: poll 1.5 gaps from now on
    assert w.arrival(20 * MS) == 35 * MS  # caught while polling: the gap is kept
    assert w.arrival(20 * MS + 100) == 35 * MS + 100  # a burst keeps the same window


def test_the_window_never_exceeds_the_limit() -> None:
    w = PollWindow(1 * MS, 20 * MS)
    w.arrival(0)
    assert w.arrival(18 * MS) == 38 * MS  # 1.5 x 18 ms capped at 20 ms


def test_a_gap_beyond_the_limit_falls_back_to_the_base_window() -> None:
    w = PollWindow(1 * MS, 20 * MS)
    w.arrival(0)
    w.arrival(10 * MS)
    assert w.arrival(100 * MS) == 101 * MS  # a pause of 90 ms: traffic is not steady
    assert w.arrival(105 * MS) == 112 * MS + MS // 2  # a new pace is learnt


def test_without_base_window_only_steady_traffic_polls() -> None:
    w = PollWindow(0, 20 * MS)
    assert w.arrival(0) == 0
    assert w.arrival(5 * MS) == 5 * MS + 7 * MS + MS // 2


def test_disabled() -> None:
    w = PollWindow(0)
    for t in (0, 10 * MS, 11 * MS):
        assert w.arrival(t) == t


def test_a_tick_is_quiet_when_nothing_arrived_since_the_previous_one() -> None:
    t = Ticks()
    assert t.quiet()  # nothing yet
    t.arrival()
    assert not t.quiet()  # the tick right after traffic keeps the CPU
    assert t.quiet()
    assert t.quiet()
    t.arrival()
    t.arrival()
    assert not t.quiet()  # several frames between two ticks: one busy tick
    assert t.quiet()
