"""End tracking: following each end through link events of every namespace (renames, state and
MTU changes, moves, deletion) and keeping the pair's carrier as veth's rule says."""

import asyncio
import errno
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from tapveth.daemon import provision
from tapveth.daemon.pair import End, Pair
from tapveth.daemon.registry import Registry
from tapveth.daemon.worker import NetlinkWorker
from tapveth.kernel.linkwatch import Kind, LinkEvent, LinkWatch
from tapveth.kernel.netlink import Location

log = logging.getLogger("tapveth")

Destroy = Callable[[Pair, str], Awaitable[None]]

# A lookup that fails with one of these ran out of something (fds, buffers, memory) or lost its
# socket: the end may be fine, so it is looked up again later instead of being given up.
RETRY_LATER = frozenset(
    {
        errno.EMFILE,
        errno.ENFILE,
        errno.ENOBUFS,
        errno.ENOMEM,
        errno.EBADF,
        errno.EAGAIN,
        errno.EINTR,
        errno.ETIMEDOUT,
    }
)
RETRY_DELAY = 0.5


class EndTracker:
    """Applies link events to the registry's ends; looks an end up again when an event says it
    left its place (moved, or maybe deleted)."""

    def __init__(
        self,
        registry: Registry,
        worker: NetlinkWorker,
        destroy: Destroy,
        stop_relay: Callable[[Pair], None],
        spawn: Callable[[Awaitable[Any]], None],
    ) -> None:
        self._reg = registry
        self._worker = worker
        self._destroy = destroy
        self._stop_relay = stop_relay
        self._spawn = spawn
        self.watch = LinkWatch(self._wanted)
        # Events for links no end is registered at, kept while lookups are in flight: an end
        # being looked up is unregistered, and an event about its new place that arrives
        # meanwhile is newer than the lookup's answer. Keyed by (nsid, ifindex): (seq, event).
        self._strays: dict[tuple[int | None, int], tuple[int, LinkEvent]] = {}
        self._stray_seq = 0
        self._lookups = 0

    def _wanted(self, nsid: int | None, index: int) -> bool:
        """Whether a link event can matter: it is about one of our ends, or it may be about
        one being looked up (see _strays)."""
        return self._lookups > 0 or (nsid, index) in self._reg.by_key

    def fileno(self) -> int:
        return self.watch.fileno()

    def close(self) -> None:
        self.watch.close()

    def on_events(self) -> None:
        """Apply every queued link event (called when the socket is readable, and before each
        batch of frames, so changes apply to the very next frame)."""
        for ev in self.watch.drain():
            log.debug("event %s", ev)
            if ev.kind is Kind.NEWLINK:
                self._on_newlink(ev)
            elif ev.kind is Kind.DELLINK:
                end = self._reg.by_key.pop((ev.nsid, ev.index), None)
                if end is not None:
                    self.relocate(end)  # moved to another namespace, or deleted
                else:
                    self._stray(ev)
            elif ev.kind is Kind.DELNSID:
                for end in [e for e in self._reg.pair_of if e.nsid == ev.nsid]:
                    self.relocate(end)
            elif ev.kind is Kind.OVERRUN:
                log.warning("netlink event queue overran; looking up every end again")
                for end in list(self._reg.pair_of):
                    self.relocate(end)

    def _on_newlink(self, ev: LinkEvent) -> None:
        end = self._reg.by_key.get((ev.nsid, ev.index))
        if end is None:
            self._stray(ev)
            return
        if ev.name and ev.name != end.name:
            log.info("%s renamed to %s", end.name, ev.name)
            end.name = ev.name
        if ev.mtu and ev.mtu != end.mtu:
            log.info("%s mtu %d", end.name, ev.mtu)
            end.mtu = ev.mtu
        if ev.up != end.up:
            end.up = ev.up
            self.update_carrier(self._reg.pair_of[end])

    def _stray(self, ev: LinkEvent) -> None:
        if self._lookups:
            self._stray_seq += 1
            self._strays[(ev.nsid, ev.index)] = (self._stray_seq, ev)

    def update_carrier(self, pair: Pair) -> None:
        """Apply veth's carrier rule to both TAPs after an end's admin state changed."""
        if pair.closed or not pair.carrier.update(pair.a.up, pair.b.up):
            return
        on = pair.carrier.on
        for end in pair.ends():
            try:
                end.tap.set_carrier(on)
            except OSError:
                self.relocate(end)  # most likely gone: the lookup will tell
        log.info("pair %s <-> %s carrier %s", pair.a.name, pair.b.name, "up" if on else "down")

    def relocate(self, end: End) -> None:
        """The end may have left its place: look it up again (once at a time)."""
        pair = self._reg.pair_of.get(end)
        if pair is None or pair.closed:
            return
        self._reg.unkey(end)
        end.stale = True
        if not end.locating:
            end.locating = True
            self._spawn(self._locate(pair, end))

    async def _locate(self, pair: Pair, end: End) -> None:
        """Find where an end is now (it moved, or may be gone) and register it there.
        relocate() marked it locating when it started this."""
        try:
            while end.stale and not pair.closed:
                end.stale = False
                # Unregistered while the lookup runs: events about its new place become strays
                # and are applied over the answer below, since they are newer than it.
                self._reg.unkey(end)
                start = self._stray_seq
                self._lookups += 1
                try:
                    loc: Location | None = await self._worker.call(
                        provision.follow, end.tap, end.ns_inode
                    )
                finally:
                    self._lookups -= 1
                stray = self._strays.get(loc.key) if loc is not None else None
                if not self._lookups:
                    self._strays.clear()
                if pair.closed:
                    return
                if loc is None:
                    await self._destroy(pair, f"{end.name} was deleted")
                    return
                log.debug("located %s: %s", end.name, loc)
                old_inode = end.ns_inode
                end.moved_to(loc)
                if stray is not None and stray[0] > start:
                    ev = stray[1]
                    if ev.kind is Kind.DELLINK:
                        end.stale = True  # gone from there already: look again
                        continue
                    log.debug("newer event for %s while looking it up: %s", end.name, ev)
                    end.up, end.mtu, end.name = ev.up, ev.mtu or end.mtu, ev.name or end.name
                self._reg.by_key[end.key] = end
                if loc.ns_inode != old_inode:
                    log.info("%s moved to %s", end.name, self._reg.ns_label(end))
        except OSError as exc:
            if exc.errno in RETRY_LATER:  # the daemon's trouble, not a sign the end is gone
                log.warning("cannot look %s up now (%s): trying again", end.name, exc.strerror)
                self._spawn(self._relocate_later(end))
                return
            log.error("cannot follow %s: %s", end.name, exc)
            await self._destroy(pair, f"{end.name} could not be followed")
            return
        finally:
            end.locating = False
        self.update_carrier(pair)

    async def _relocate_later(self, end: End) -> None:
        await asyncio.sleep(RETRY_DELAY)
        self.relocate(end)

    def on_gone(self, end: End, exc: OSError) -> None:
        """The relay found an end's fd dead: the TAP was deleted."""
        pair = self._reg.pair_of.get(end)
        if pair is None or pair.closed:
            return
        self._stop_relay(pair)
        why = "was deleted" if exc.errno in (errno.EBADFD, errno.EFAULT) else f"failed: {exc}"
        self._spawn(self._destroy(pair, f"{end.name} {why}"))
