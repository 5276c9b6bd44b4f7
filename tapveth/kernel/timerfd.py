"""A CLOCK_MONOTONIC timerfd armed at absolute times, for an event loop's add_reader.

uvloop's call_later rounds to whole milliseconds (0.3 ms fires at once, 1.5 ms after ~2 ms);
impairment delays and rate pacing need finer times, and a timerfd fires to the nanosecond the
kernel's hrtimers allow. Python 3.11 has no os.timerfd_*, so libc is called through ctypes.
Times are time.monotonic_ns() values (the same clock).
"""

import ctypes
import os

CLOCK_MONOTONIC = 1
TFD_NONBLOCK = os.O_NONBLOCK
TFD_CLOEXEC = os.O_CLOEXEC
TFD_TIMER_ABSTIME = 1


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


_libc = ctypes.CDLL(None, use_errno=True)
_create = _libc.timerfd_create
_create.argtypes = [ctypes.c_int, ctypes.c_int]
_create.restype = ctypes.c_int
_settime = _libc.timerfd_settime
_settime.argtypes = [
    ctypes.c_int,
    ctypes.c_int,
    ctypes.POINTER(_Itimerspec),
    ctypes.POINTER(_Itimerspec),
]
_settime.restype = ctypes.c_int


class Timer:
    """One-shot timer: arm(t) makes the fd readable at monotonic time t (ns)."""

    def __init__(self) -> None:
        fd = _create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"timerfd_create: {os.strerror(err)}")
        self._fd: int = int(fd)
        self._spec = _Itimerspec()
        self.armed: int | None = None  # the time it is armed for, None when disarmed

    def fileno(self) -> int:
        return self._fd

    def arm(self, when_ns: int) -> None:
        """Fire at monotonic time when_ns (at once if it is past)."""
        if when_ns == self.armed:
            return
        # 0 would disarm: a time in the past is 1 ns, which fires at once.
        when = max(1, when_ns)
        self._spec.it_value.tv_sec, self._spec.it_value.tv_nsec = divmod(when, 1_000_000_000)
        self._set(TFD_TIMER_ABSTIME)
        self.armed = when_ns

    def disarm(self) -> None:
        if self.armed is None:
            return
        self._spec.it_value.tv_sec = self._spec.it_value.tv_nsec = 0
        self._set(0)
        self.armed = None

    def clear(self) -> int:
        """Consume the expiry (so the fd stops being readable); how many expiries, 0 if none.
        Not armed, it holds none: timerfd_settime, which disarm() and every arm() call, resets
        the count of expiries not yet read (fs/timerfd.c), so no read is made for nothing."""
        if self.armed is None:
            return 0
        try:
            data = os.read(self._fd, 8)
        except BlockingIOError:
            return 0
        self.armed = None
        return int.from_bytes(data, "little")

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _set(self, flags: int) -> None:
        if _settime(self._fd, flags, ctypes.byref(self._spec), None) < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"timerfd_settime: {os.strerror(err)}")
