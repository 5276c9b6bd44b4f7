"""The plain relay path on a native thread (_native_relay.c), for what an end sends while it
has no impairment, no capture and no cut: the wake-up, veth's admission and the write run in
C, with no Python between a frame's arrival and its delivery.

The daemon keeps every rule's state (admin state, MTU, the peer) and pushes it to the thread
whenever an end changes; an end that gains an impairment, a capture or a cut is taken back by
the event loop (relay.py) before its next batch, and handed over again once it is plain. The
thread counts into its own counters; an end's Flow folds them in whenever it is read, so
stats, metrics and captures see the same numbers as from relay.py.
"""

import asyncio
import logging
import os
from collections.abc import Callable
from types import ModuleType
from typing import Any

from tapveth.core import vnet
from tapveth.core.rules import DropReason, Flow
from tapveth.daemon import relay
from tapveth.daemon.pair import End, Pair

log = logging.getLogger("tapveth")

_native_relay: ModuleType | None
try:
    from tapveth.daemon import _native_relay
except ImportError:  # not built: the event loop relays everything
    _native_relay = None

AVAILABLE = _native_relay is not None

# The thread's counters, in _native_relay.c's order: the first four are Flow's, then the
# refusals by reason, then the batches (the metrics' wake-ups).
_REASONS = (
    DropReason.RUNT,
    DropReason.MTU,
    DropReason.PEER_DOWN,
    DropReason.INVALID_HEADER,
    DropReason.WRITE_ERROR,
)
_SLOT_OF: dict[int, int] = {}  # id(flow) -> its end's slot, while the flow is a NativeFlow
_wakeups: list[relay.Relay] = []  # the batches the thread relays add to its wake-ups


def _fold(flow: Flow) -> None:
    slot = _SLOT_OF.get(id(flow))
    if slot is None or _native_relay is None:
        return
    c = _native_relay.take(slot)
    if not any(c):
        return
    packets, nbytes, dropped, peer_counted = c[0], c[1], c[2], c[3]
    _PACKETS.__set__(flow, _PACKETS.__get__(flow) + packets)
    _BYTES.__set__(flow, _BYTES.__get__(flow) + nbytes)
    _DROPPED.__set__(flow, _DROPPED.__get__(flow) + dropped)
    _PEER.__set__(flow, _PEER.__get__(flow) + peer_counted)
    drops = _DROPS.__get__(flow)
    for reason, n in zip(_REASONS, c[4:9], strict=True):
        if n:
            drops[reason] = drops.get(reason, 0) + n
    for sink in _wakeups:
        sink.wakeups += c[9]


_PACKETS: Any = Flow.__dict__["packets"]
_BYTES: Any = Flow.__dict__["bytes"]
_DROPPED: Any = Flow.__dict__["dropped"]
_PEER: Any = Flow.__dict__["peer_counted"]
_DROPS: Any = Flow.__dict__["drops"]


def _folding(slot_descriptor: Any) -> property:
    def get(self: Flow) -> Any:
        _fold(self)
        return slot_descriptor.__get__(self)

    def put(self: Flow, value: Any) -> None:
        _fold(self)
        slot_descriptor.__set__(self, value)

    return property(get, put)


class NativeFlow(Flow):
    """A Flow whose end the native thread relays: reading any counter first folds in what
    the thread counted. The same object changes class (same layout), so that everything that
    holds the end's flow keeps holding it."""

    __slots__ = ()
    packets = _folding(_PACKETS)
    bytes = _folding(_BYTES)
    dropped = _folding(_DROPPED)
    peer_counted = _folding(_PEER)
    drops = _folding(_DROPS)


def _plain(end: End) -> bool:
    return end.impair is None and not end.cut and not end.captures


class NativeRelay:
    """The native thread of one daemon and the ends it relays."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        python_relay: relay.Relay,
        events_fd: int,
        window_us: int,
        gap_us: int,
        on_gone: Callable[[End, OSError], None],
    ) -> None:
        assert _native_relay is not None
        self._loop = loop
        self._relay = python_relay
        self._on_gone = on_gone
        self._slot: dict[End, int] = {}
        self._end: dict[int, End] = {}
        self._peer: dict[End, End] = {}
        self._notify = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        _native_relay.start(
            events_fd,
            self._notify,
            vnet.HDR_LEN,
            vnet.GSO_TYPE_OFFSET,
            ~vnet.GSO_ECN & 0xFF,
            relay.BATCH,
            window_us * 1000,
            gap_us * 1000,
        )
        loop.add_reader(self._notify, self._failed)
        _wakeups[:] = [python_relay]

    def applying(self, on: bool) -> None:
        """The daemon is reading and applying link events: the thread waits (see the C)."""
        assert _native_relay is not None
        _native_relay.applying(on)

    def attach(self, pair: Pair) -> None:
        """Relay both ends of a TAP pair: natively while plain, else through the loop."""
        assert _native_relay is not None and isinstance(pair.b, End)
        a, b = pair.a, pair.b
        for end, peer in ((a, b), (b, a)):
            slot = _native_relay.add(end.fd)
            self._slot[end], self._end[slot], self._peer[end] = slot, end, peer
        for end in (a, b):  # both slots exist now: each knows its peer's
            end.native = False
            end.watch = self.refresh
            self.refresh(end)

    def detach(self, pair: Pair) -> None:
        """Stop relaying a pair's ends (before its fds are closed): the counts are folded."""
        assert _native_relay is not None
        for end in pair.taps():
            slot = self._slot.pop(end, None)
            end.watch = None
            self._peer.pop(end, None)
            if slot is None:
                continue
            if end.native:
                _native_relay.own(slot, False)
                end.native = False
            else:
                if not end.tap.closed:
                    self._loop.remove_reader(end.fd)
            self._unfold(end)
            _native_relay.remove(slot)
            del self._end[slot]

    def refresh(self, end: End) -> None:
        """An end changed (admin state, MTU, impairments, a capture, a cut): the thread
        judges its next frames by that, and relays them only while it is plain."""
        assert _native_relay is not None
        slot = self._slot.get(end)
        if slot is None:
            return
        self._configure(end)
        plain = _plain(end)
        if plain and not end.native:
            if not end.tap.closed:
                self._loop.remove_reader(end.fd)
            end.out.__class__ = NativeFlow
            _SLOT_OF[id(end.out)] = slot
            _native_relay.own(slot, True)
            end.native = True
        elif not plain and end.native:
            _native_relay.own(slot, False)  # returns once the thread's batch is over
            end.native = False
            self._unfold(end)
            self._loop.add_reader(end.fd, self._relay.pump, end, self._peer[end])

    def _configure(self, end: End) -> None:
        assert _native_relay is not None
        peer = self._peer[end]
        _native_relay.configure(self._slot[end], self._slot.get(peer, -1), end.up, end.mtu)
        # The peer judges what it sends by this end's state: nothing else to tell it.

    def _unfold(self, end: End) -> None:
        """The counts so far into the flow, which becomes a plain Flow again."""
        flow: Flow = end.out
        if type(flow) is NativeFlow:
            _fold(flow)
            del _SLOT_OF[id(flow)]
            object.__setattr__(flow, "__class__", Flow)  # a plain Flow again

    def _failed(self) -> None:
        """The thread found ends failing (their TAP deleted...): as relay.py reports them."""
        assert _native_relay is not None
        for slot, err in _native_relay.gone():
            end = self._end.get(slot)
            if end is None or not end.native:
                continue
            end.native = False  # the thread let it go
            self._unfold(end)
            self._on_gone(end, OSError(err, os.strerror(err)))
            # Still attached: its pair was not removed (the device is there, being looked up
            # again). The loop's relay goes on reading such an end; so does the thread.
            if end in self._slot:
                self.refresh(end)

    def close(self) -> None:
        """Stop the thread (every pair detached or about to be closed)."""
        assert _native_relay is not None
        for end in list(self._slot):
            self._unfold(end)
            end.watch = None
            end.native = False
        self._loop.remove_reader(self._notify)
        _native_relay.stop()
        os.close(self._notify)
        _wakeups.clear()
        self._slot.clear()
        self._end.clear()
        self._peer.clear()
