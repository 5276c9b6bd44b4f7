"""Live capture of a pair (`tapveth capture`): every frame either end sends, delivered or
refused, streamed as pcapng over the control socket.

The relay shows each frame to the captures of its sender (relay.py); a capture encodes it at
once into an Enhanced Packet Block and queues it for its client. The queue is bounded (bytes
waiting in the socket's transport included): when the client cannot keep up, frames are left
out and counted, and the link never waits for a capture. The stream ends with one Interface
Statistics Block per end, carrying those counts, when the client half-closes the connection,
after -c frames, or when the pair is deleted.

Recording convention: each frame is recorded once, on the interface of the end that sent it,
flagged outbound (epb_flags), at the moment the relay delivered or refused it; a refused
frame carries "dropped: REASON" as its comment. A GSO super-frame is recorded as one frame,
as the receiving stack gets it.
"""

import asyncio
import contextlib
import logging
import os
import time
from typing import TYPE_CHECKING, Any

from tapveth import __version__
from tapveth.control import ControlError, Stream
from tapveth.core import pcapng
from tapveth.daemon.events import Event, first_of
from tapveth.daemon.pair import End, Pair

if TYPE_CHECKING:
    from tapveth.daemon.service import Daemon
    from tapveth.daemon.vxlan_end import VxlanEnd

log = logging.getLogger("tapveth")

DEFAULT_BUFFER_KIB = 2048  # tcpdump's default -B on Linux
MAX_BUFFER_KIB = 256 * 1024  # a client may hold the daemon to this much memory per capture
RESUME_POLL = 0.005  # how often a paused capture checks whether its client caught up
FINISH_TIMEOUT = 5.0  # to hand the last frames and the statistics to a client that is leaving


class Capture:
    """One client's capture of one pair. Interface 0 is the end it named, 1 its peer (on a
    pair over VXLAN, the tunnel end "sends" what it delivers to the TAP end).

    When the buffer is full the capture steps out of the relay's way altogether (the relay
    takes its fast path again) until the client has read half of it; the frames sent in the
    meantime are counted from the flows' own counters, which also give what each end sent
    while the capture ran."""

    def __init__(
        self,
        pair: Pair,
        first: "End | VxlanEnd",
        writer: asyncio.StreamWriter,
        snaplen: int,
        count: int,
        drops_only: bool,
        buffer_bytes: int,
    ) -> None:
        self.pair = pair
        self.ends = (first, pair.peer_of(first))
        self._transport = writer.transport
        self._snaplen = snaplen
        self._count = count
        self._drops_only = drops_only
        self._limit = buffer_bytes
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self.delivered = [0, 0]  # frames written to the client, per interface
        self.start_ns = time.time_ns()
        self._base = self._flows()
        self._final: list[tuple[int, int]] | None = None
        self._attached = False
        self._resume: asyncio.TimerHandle | None = None
        self.finished = asyncio.Event()

    def _flows(self) -> list[tuple[int, int]]:
        """(frames read, frames refused) so far from each end, as the relay counts them."""
        return [(e.out.packets + e.out.dropped, e.out.dropped) for e in self.ends]

    def start(self) -> None:
        self._attach()

    def stop(self) -> None:
        """No more frames: from here on the counts stay as they are."""
        self._detach()
        if self._resume is not None:
            self._resume.cancel()
        if self._final is None:
            self._final = self._flows()
        self.finished.set()

    def _attach(self) -> None:
        if not self._attached:
            self._attached = True
            for end in self.ends:
                end.captures = (*end.captures, self)

    def _detach(self) -> None:
        if self._attached:
            self._attached = False
            for end in self.ends:
                end.captures = tuple(c for c in end.captures if c is not self)

    def frame(self, sender: "End | VxlanEnd", frame: memoryview, reason: str | None) -> None:
        """A frame `sender` sent, and what became of it (None: delivered). Called by the relay
        for every frame while the capture is attached: never blocks, never raises."""
        if (self._drops_only and reason is None) or not self._attached:
            return
        caplen = min(len(frame), self._snaplen)
        if self._pending_bytes + self._transport.get_write_buffer_size() + caplen > self._limit:
            self._pause()
            return
        i = 0 if sender is self.ends[0] else 1
        block = pcapng.enhanced_packet(
            i,
            time.time_ns(),
            frame[:caplen],
            len(frame),
            pcapng.OUTBOUND,
            f"dropped: {reason}" if reason is not None else None,
        )
        self._pending.append(block)
        self._pending_bytes += len(block)
        self.delivered[i] += 1
        if self._count and self.delivered[0] + self.delivered[1] >= self._count:
            self.stop()

    def _pause(self) -> None:
        self._detach()
        self._resume = asyncio.get_running_loop().call_later(RESUME_POLL, self._maybe_resume)

    def _maybe_resume(self) -> None:
        self._resume = None
        if self._final is not None or self._transport.is_closing():
            return
        if self._transport.get_write_buffer_size() <= self._limit // 2:
            self._attach()
        else:
            self._resume = asyncio.get_running_loop().call_later(RESUME_POLL, self._maybe_resume)

    def flush(self) -> None:
        """Hand what the batch recorded to the transport (one write per batch)."""
        if self._pending and not self._transport.is_closing():
            self._transport.write(b"".join(self._pending))
        self._pending.clear()
        self._pending_bytes = 0

    def counts(self) -> list[tuple[int, int, int, int]]:
        """Per interface: frames its end sent while the capture ran, those the filter took,
        those left out (the client fell behind), those recorded."""
        final = self._final or self._flows()
        out = []
        for i in range(2):
            received = final[i][0] - self._base[i][0]
            accepted = final[i][1] - self._base[i][1] if self._drops_only else received
            out.append(
                (received, accepted, max(0, accepted - self.delivered[i]), self.delivered[i])
            )
        return out

    def header(self, ns_name: Any) -> bytes:
        a, b = self.pair.a.name, self.pair.b.name
        blocks = [pcapng.section_header(f"tapveth {__version__}", os.uname().sysname)]
        for end in self.ends:
            ns = ns_name(end) or "-"
            if isinstance(end, End):
                desc = f"tapveth end {end.name} of pair {a}/{b}, netns {ns}, mtu {end.mtu}"
            else:  # the tunnel: its frames are those it delivers to the TAP end
                desc = f"tapveth end {end.name} of pair {a}/{b}, underlay netns {ns}"
            blocks.append(pcapng.interface_description(end.name, desc, self._snaplen))
        return b"".join(blocks)

    def statistics(self) -> bytes:
        now = time.time_ns()
        return b"".join(
            pcapng.interface_statistics(i, now, self.start_ns, *c)
            for i, c in enumerate(self.counts())
        )


def _int_arg(args: dict[str, Any], key: str, default: int, low: int, high: int) -> int:
    value = args.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ControlError(f"{key} must be a whole number from {low} to {high}")
    return value


def start(d: "Daemon", args: dict[str, Any]) -> Stream:
    """The `capture` request: find the pair, check the options, return the stream."""
    pair = d.registry.find(args.get("name"), args.get("netns"))
    first = next(
        e
        for e in pair.ends()
        if e.name == args["name"] and args.get("netns") in (None, d.registry.ns_name(e))
    )
    snaplen = _int_arg(args, "snaplen", pcapng.DEFAULT_SNAPLEN, 1, pcapng.DEFAULT_SNAPLEN)
    count = _int_arg(args, "count", 0, 0, 1 << 62)
    buffer_kib = _int_arg(args, "buffer_kib", DEFAULT_BUFFER_KIB, 1, MAX_BUFFER_KIB)
    drops_only = args.get("drops", False)
    if not isinstance(drops_only, bool):
        raise ControlError("drops must be true or false")

    async def run(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        cap = Capture(pair, first, writer, snaplen, count, drops_only, buffer_kib * 1024)

        def on_event(ev: Event) -> None:
            if ev.kind == "deleted" and ev.pair is pair:
                cap.stop()

        if pair.closed:
            cap.stop()
        else:
            cap.start()
            d.events.listen(on_event)
        writer.write(cap.header(d.registry.ns_name))  # once attached: no frame is missed after
        who = f"{first.name} <-> {cap.ends[1].name}"
        log.info("capture of %s started", who)
        why = "the client went away"
        try:
            async with d.events.serving() as closing:
                # EOF from the client: it is done; or -c reached, or the pair deleted
                await first_of(reader.read(1), cap.finished.wait(), closing.wait())
                why = (
                    "the daemon stops"
                    if closing.is_set()
                    else "its count reached or its pair deleted"
                    if cap.finished.is_set()
                    else "the client is done"
                )
        finally:
            cap.stop()
            d.events.unlisten(on_event)
            cap.flush()
            log.info(
                "capture of %s ended (%s): %d frames, %d left out",
                who,
                why,
                sum(cap.delivered),
                sum(c[2] for c in cap.counts()),
            )
            if not writer.is_closing():
                writer.write(cap.statistics())
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(writer.drain(), FINISH_TIMEOUT)

    return Stream({"ifnames": [first.name, pair.peer_of(first).name], "snaplen": snaplen}, run)
