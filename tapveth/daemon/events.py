"""The daemon's event bus: what happened to pairs (created, deleted, moved, carrier, MTU...),
published by whoever makes it happen, heard by `tapveth monitor` streams and by in-process
listeners (a capture ends when its pair is deleted; metrics keep the counts of deleted pairs).

Publishing costs a call and a loop over listeners; an event is described (names, namespaces)
only when some stream is there to read it. A stream that does not keep up loses events rather
than holding the daemon back, and is told how many.
"""

import asyncio
import contextlib
import json
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tapveth.control import Stream
from tapveth.daemon.pair import End, Pair

if TYPE_CHECKING:
    from tapveth.daemon.vxlan_end import VxlanEnd

STREAM_BACKLOG = 4096  # events a slow monitor may lag behind before it loses some


@dataclass(frozen=True, slots=True)
class Event:
    """kind: created, deleted, moved, renamed, carrier, mtu (and whatever others publish).
    end: the end it is about, if only one; fields: what the kind adds (mtu, carrier, why)."""

    kind: str
    pair: Pair
    end: "End | VxlanEnd | None" = None
    fields: dict[str, Any] = field(default_factory=dict)
    time: float = field(default_factory=time.time)


# An end's namespace name, None for the daemon's own.
Describe = Callable[["End | VxlanEnd"], str | None]


class EventBus:
    def __init__(self, ns_name: Describe) -> None:
        self._ns_name = ns_name
        self._listeners: list[Callable[[Event], None]] = []
        self._streams: set[_Subscription] = set()
        self._closing = asyncio.Event()
        self._serving: set[asyncio.Task[Any]] = set()

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[asyncio.Event]:
        """Around a stream's life (monitor, capture): yields the event set when the daemon
        stops, so that the stream ends cleanly and close() can wait for it."""
        task = asyncio.current_task()
        assert task is not None
        self._serving.add(task)
        try:
            yield self._closing
        finally:
            self._serving.discard(task)

    async def close(self, timeout: float = 5.0) -> None:
        """The daemon stops: end every stream, and give them a moment to say goodbye."""
        self._closing.set()
        if self._serving:
            await asyncio.wait(self._serving, timeout=timeout)

    def listen(self, fn: Callable[[Event], None]) -> None:
        """Call fn (on the loop thread, synchronously) for every event from now on."""
        self._listeners.append(fn)

    def unlisten(self, fn: Callable[[Event], None]) -> None:
        with contextlib.suppress(ValueError):
            self._listeners.remove(fn)

    def publish(
        self, kind: str, pair: Pair, end: "End | VxlanEnd | None" = None, **fields: Any
    ) -> None:
        if not self._listeners and not self._streams:
            return
        ev = Event(kind, pair, end, fields)
        for fn in list(self._listeners):
            fn(ev)
        if self._streams:
            line = (json.dumps(self.describe(ev)) + "\n").encode()
            for sub in self._streams:
                sub.put(line)

    def describe(self, ev: Event) -> dict[str, Any]:
        """An event as `tapveth monitor -j` prints it."""
        pair = ev.pair
        out: dict[str, Any] = {"time": round(ev.time, 6), "event": ev.kind}
        end = ev.end or pair.a
        peer = pair.peer_of(end)
        out["ifname"] = end.name
        out["netns"] = self._ns_name(end)
        out["peer"] = peer.name
        out["peer_netns"] = self._ns_name(peer)
        out.update(ev.fields)
        return out

    def stream(self) -> Stream:
        """A control-socket stream of events, one JSON object a line, until the client leaves."""

        async def run(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            sub = _Subscription()
            self._streams.add(sub)
            try:
                async with self.serving() as closing:
                    await sub.pump(reader, writer, closing)
            finally:
                self._streams.discard(sub)

        return Stream({"backlog": STREAM_BACKLOG}, run)


class _Subscription:
    """One monitor's queue: bounded; overflow is counted and reported in the stream."""

    def __init__(self) -> None:
        self._queue: deque[bytes] = deque()
        self._ready = asyncio.Event()
        self.lost = 0

    def put(self, line: bytes) -> None:
        if len(self._queue) >= STREAM_BACKLOG:
            self.lost += 1
            return
        self._queue.append(line)
        self._ready.set()

    async def pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, closing: asyncio.Event
    ) -> None:
        gone = asyncio.ensure_future(reader.read(1))  # EOF (or anything): the client is done
        try:
            while not gone.done() and not closing.is_set():
                await first_of(gone, self._ready.wait(), closing.wait())
                self._ready.clear()
                while self._queue:
                    writer.write(self._queue.popleft())
                if self.lost:  # they came after everything queued, before anything to come
                    lost, self.lost = self.lost, 0
                    note = {"time": round(time.time(), 6), "event": "lost", "count": lost}
                    writer.write((json.dumps(note) + "\n").encode())
                await writer.drain()
        finally:
            gone.cancel()


async def first_of(*aws: Awaitable[Any]) -> None:
    """Wait until one of aws is done; the others that this call started are cancelled."""
    futs = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(futs, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for f, a in zip(futs, aws, strict=True):
            if f is not a:
                f.cancel()
