"""How long the daemon keeps polling after a frame: a fixed window, or, when frames have been
arriving at most a given gap apart, long enough to catch the next one without a wake-up.

Pure: the caller passes the monotonic time of each arrival in nanoseconds.
"""


class PollWindow:
    """The poll deadline after each arrival.

    `base_ns` is polled after any frame. With `max_gap_ns` > 0 the idle gap that preceded the
    latest frame which came after the window had closed is remembered: while it is at most
    `max_gap_ns`, the window after each frame is that gap plus half of it (jitter), capped at
    `max_gap_ns`, so traffic that keeps coming at that pace never finds the daemon asleep.
    A longer gap (or none yet) falls back to `base_ns`.
    """

    def __init__(self, base_ns: int, max_gap_ns: int = 0) -> None:
        self.base_ns = max(0, base_ns)
        self.max_gap_ns = max(0, max_gap_ns)
        self._last = -1  # time of the previous arrival; -1: none yet
        self._gap = 0  # the latest idle gap worth bridging; 0: none
        self.window_ns = self.base_ns

    def arrival(self, now_ns: int) -> int:
        """A frame arrived at now_ns: the time until which to keep polling."""
        if self.max_gap_ns and self._last >= 0:
            gap = now_ns - self._last
            if gap > self.window_ns:  # the poll had ended: the daemon slept through the gap
                self._gap = gap if gap <= self.max_gap_ns else 0
            if self._gap:
                self.window_ns = max(self.base_ns, min(self.max_gap_ns, self._gap * 3 // 2))
            else:
                self.window_ns = self.base_ns
        self._last = now_ns
        return now_ns + self.window_ns


class Ticks:
    """Whether any frame arrived between two busy-poll ticks.

    A tick that finds none gives the CPU away for a moment: a task that the daemon has just
    woken on its own CPU (the far daemon, the process a frame was for) then runs at once
    instead of when the poll window closes. A tick that follows traffic keeps the CPU.
    """

    def __init__(self) -> None:
        self._arrived = False

    def arrival(self) -> None:
        """A frame arrived."""
        self._arrived = True

    def quiet(self) -> bool:
        """A tick: True when nothing arrived since the previous tick."""
        quiet = not self._arrived
        self._arrived = False
        return quiet
