"""The timerfd wrapper (needs no privileges): readable once its time has come, not before,
and not after disarm."""

import os
import select
import time

import pytest

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


def test_an_expiry_not_read_is_forgotten_when_armed_again_or_disarmed() -> None:
    """timerfd_settime resets the count of unread expiries (fs/timerfd.c): clear() relies on it
    to skip the read while the timer is not armed."""
    t = Timer()
    try:
        t.arm(0)
        assert readable(t, 5.0)
        t.arm(time.monotonic_ns() + 10_000_000_000)  # fired, unread, armed again for later
        assert not readable(t, 0)
        t.arm(0)
        assert readable(t, 5.0)
        t.disarm()  # fired, unread, disarmed
        assert not readable(t, 0)
    finally:
        t.close()


def test_clear_makes_no_read_when_not_armed(monkeypatch: pytest.MonkeyPatch) -> None:
    t = Timer()
    reads: list[int] = []
    real_read = os.read

    def counted(fd: int, n: int) -> bytes:
        reads.append(fd)
        return real_read(fd, n)

    monkeypatch.setattr(os, "read", counted)  # what Timer.clear calls
    try:
        assert t.clear() == 0 and reads == []  # never armed
        t.arm(time.monotonic_ns() + 10_000_000_000)
        assert t.clear() == 0 and reads == [t.fileno()]  # armed, not yet fired: asked
        t.disarm()
        assert t.clear() == 0 and len(reads) == 1  # disarmed: not asked
        t.arm(0)
        assert readable(t, 5.0)
        assert t.clear() == 1 and len(reads) == 2 and t.armed is None
        assert t.clear() == 0 and len(reads) == 2  # read once: nothing more to ask
    finally:
        t.close()
