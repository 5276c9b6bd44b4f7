"""Adaptive busy-polling: after traffic, keep the event loop polling instead of sleeping for a
short window, so the next frame is picked up without a wake-up from idle.

On this kind of machine a wake-up from idle costs tens of microseconds, most of the gap between
a userspace hop and the kernel veth, which answers a ping with no wake-up at all. With no
traffic the window closes and the daemon sleeps in epoll: 0% CPU when idle. Figures for the
default window are in cli/main.py.
"""

import asyncio
import time


class BusyPoll:
    def __init__(self, loop: asyncio.AbstractEventLoop, window_us: int) -> None:
        self._loop = loop
        self._window = window_us / 1e6
        self._deadline = 0.0
        self._active = False

    def traffic(self) -> None:
        """A frame arrived: poll for one more window."""
        if self._window <= 0:
            return
        self._deadline = time.monotonic() + self._window
        if not self._active:
            self._active = True
            self._loop.call_soon(self._tick)

    def _tick(self) -> None:
        # While a callback is ready, the loop polls its fds with a zero timeout.
        if time.monotonic() < self._deadline:
            self._loop.call_soon(self._tick)
        else:
            self._active = False
