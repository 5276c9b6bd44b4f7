"""Which path relays each TAP pair's frames: the native thread for plain ends (native.py), or
the event loop (relay.py, with busy-polling and the impairments' timers); and the link events
applied before frames on both."""

import asyncio
import logging
from collections.abc import Callable

from tapveth.daemon import native
from tapveth.daemon.busypoll import BusyPoll
from tapveth.daemon.impaired import TIMER_LEAD_NS, Impairments
from tapveth.daemon.native import NativeRelay
from tapveth.daemon.pair import End, Pair
from tapveth.daemon.pending_events import PendingEvents
from tapveth.daemon.relay import Relay

log = logging.getLogger("tapveth")


class FramePaths:
    """The relay paths of one daemon, made once its loop runs."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        apply_events: Callable[[], None],
        events_fd: int,
        on_gone: Callable[[End, OSError], None],
        busy_poll_us: int,
        busy_poll_gap_us: int,
    ) -> None:
        self._loop = loop
        self._tracker_events = apply_events
        self._events_fd = events_fd
        self._on_gone = on_gone
        self._window = (busy_poll_us, busy_poll_gap_us)
        self.busy = BusyPoll(loop, busy_poll_us, busy_poll_gap_us)
        self.events = PendingEvents(self.apply_events, events_fd)  # the relay's, vxlan ends'
        self.relay = Relay(self.events, on_gone, self.busy.traffic)
        lead = TIMER_LEAD_NS if self.busy.enabled else 0
        self.impairments = Impairments(
            loop, self.relay.fire, lead, self.busy.watch if self.busy.enabled else None
        )
        self.native: NativeRelay | None = None

    def start_native(self) -> bool:
        """Relay plain ends on the native thread from now on; False if it is not built."""
        if not native.AVAILABLE:
            log.warning(
                "the native relay is not built (tapveth/daemon/_native_relay.c): "
                "the event loop relays every frame"
            )
            return False
        self.native = NativeRelay(
            self._loop, self.relay, self._events_fd, *self._window, self._on_gone
        )
        return True

    def apply_events(self) -> None:
        """Apply the queued link events; the native thread waits meanwhile (native.py)."""
        thread = self.native
        if thread is None:
            self._tracker_events()
            return
        thread.applying(True)
        try:
            self._tracker_events()
        finally:
            thread.applying(False)

    def attach(self, pair: Pair) -> None:
        """Relay a TAP pair's frames from now on."""
        assert isinstance(pair.b, End)
        if self.native is not None:
            self.native.attach(pair)
        else:
            self._loop.add_reader(pair.a.fd, self.relay.pump, pair.a, pair.b)
            self._loop.add_reader(pair.b.fd, self.relay.pump, pair.b, pair.a)

    def detach(self, pair: Pair) -> None:
        """Stop relaying a TAP pair (before its fds are closed)."""
        if self.native is not None:
            self.native.detach(pair)
            return
        for end in pair.taps():
            if not end.tap.closed:
                self._loop.remove_reader(end.fd)

    def close(self) -> None:
        """Stop the native thread (every pair detached); before the link events' socket
        closes, which it watches."""
        if self.native is not None:
            self.native.close()
            self.native = None
