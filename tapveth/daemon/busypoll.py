"""Adaptive busy-polling: after traffic, keep the event loop polling instead of sleeping for a
while, so the next frame is picked up without a wake-up from idle.

On this kind of machine a wake-up from idle costs tens of microseconds, most of the gap between
a userspace hop and the kernel veth, which answers a ping with no wake-up at all. With no
traffic the window closes and the daemon sleeps in epoll: 0% CPU when idle. How long the window
is (fixed, or bridging the gaps of steady traffic) is core/pollwindow.py; figures for the
defaults are in cli/main.py.

A tick that finds nothing new yields the CPU (sched_yield): polling would otherwise keep from
it, until the window closes, a task that the daemon's own frame has just woken on that CPU
(the far daemon of a tunnel, the process answering a ping), and each such hop would wait out
the window. With nothing else runnable the yield returns at once and polling goes on.
"""

import asyncio
import os
import time
from collections.abc import Callable

from tapveth.core.pollwindow import PollWindow, Ticks


class BusyPoll:
    def __init__(self, loop: asyncio.AbstractEventLoop, window_us: int, gap_us: int = 0) -> None:
        self._loop = loop
        self._window = PollWindow(window_us * 1000, gap_us * 1000)
        self._ticks = Ticks()
        self._enabled = window_us > 0 or gap_us > 0
        self._deadline = 0
        self._active = False
        # Impaired directions whose head frame is due: key -> (due time, deliver).
        self._due: dict[object, tuple[int, Callable[[], None]]] = {}

    @property
    def enabled(self) -> bool:
        """Whether the daemon polls after traffic at all (--busy-poll 0 turns it off)."""
        return self._enabled

    def traffic(self) -> None:
        """A frame arrived: poll for one more window."""
        if not self._enabled:
            return
        self._deadline = self._window.arrival(time.monotonic_ns())
        self._ticks.arrival()
        if not self._active:
            self._active = True
            self._loop.call_soon(self._tick)

    def watch(self, key: object, deliver: Callable[[], None], when_ns: int | None) -> bool:
        """Call deliver() at the first tick at or after when_ns (None: forget key). True if
        the loop is polling and will tick at or after when_ns before it stops (the last tick
        of a window runs past its end): then no timer is needed for it."""
        if when_ns is None:
            self._due.pop(key, None)
            return False
        self._due[key] = (when_ns, deliver)
        return self._active and when_ns < self._deadline

    def _tick(self) -> None:
        # While a callback is ready, the loop polls its fds with a zero timeout.
        if self._due:
            self._deliver_due()
        if time.monotonic_ns() < self._deadline:
            if self._ticks.quiet():
                os.sched_yield()
            self._loop.call_soon(self._tick)
        else:
            self._active = False

    def _deliver_due(self) -> None:
        now = time.monotonic_ns()
        due = self._due
        for key in list(due):
            entry = due.get(key)  # a delivery may have moved or dropped another's
            if entry is not None and entry[0] <= now:
                del due[key]
                entry[1]()
