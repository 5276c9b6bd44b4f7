"""The timerfd wrapper (needs no privileges): readable once its time has come, not before,
and not after disarm."""

import select
import time

from tapveth.kernel.timerfd import Timer


def readable(t: Timer, wait: float) -> bool:
    r, _, _ = select.select([t.fileno()], [], [], wait)
    return bool(r)


def test_fires_at_an_absolute_time_and_clears() -> None:
    t = Timer()
    try:
        assert not readable(t, 0)
        t.arm(time.monotonic_ns() + 20_000_000)
        assert not readable(t, 0)  # 20 ms ahead: not yet
        assert readable(t, 5.0)
        assert time.monotonic_ns() >= t.armed  # type: ignore[operator]
        assert t.clear() == 1 and t.armed is None
        assert not readable(t, 0)
        t.arm(0)  # in the past: at once
        assert readable(t, 5.0)
        t.clear()
    finally:
        t.close()


def test_disarm() -> None:
    t = Timer()
    try:
        t.arm(time.monotonic_ns() + 10_000_000)
        t.disarm()
        assert not readable(t, 0.05)
        assert t.clear() == 0
    finally:
        t.close()
