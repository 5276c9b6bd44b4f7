"""End tracking: following each end through link events of every namespace (renames, state and
MTU changes, moves, deletion) and keeping the pair's carrier as veth's rule says."""

import asyncio
import errno
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from tapveth.daemon import provision
from tapveth.daemon.events import EventBus
from tapveth.daemon.pair import End, Pair
from tapveth.daemon.registry import Registry
from tapveth.daemon.vxlan_end import VxlanEnd, tap_gso_max_segs
from tapveth.daemon.worker import NetlinkWorker
from tapveth.kernel.linkwatch import Kind, LinkEvent, LinkWatch
from tapveth.kernel.netlink import Location, Netlink, Unsettled

log = logging.getLogger("tapveth")

Destroy = Callable[[Pair, str], Awaitable[None]]

# Pauses before looking again for an end that could not be pinned down (doubling).
RETRY_FIRST = 0.01
RETRY_MAX = 1.0


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
        events: EventBus | None = None,
    ) -> None:
        self._reg = registry
        self.events = events or EventBus(registry.ns_name)
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
        self._retrying: set[End] = set()  # ends whose lookup failed for want of resources

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
                    # Moved to another namespace (it arrives there admin-down, and veth's peer
                    # loses carrier at once), or deleted: the lookup tells which.
                    self._set_up(end, False)
                    self.relocate(end)
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
            old, end.name = end.name, ev.name
            self.events.publish("renamed", self._reg.pair_of[end], end, old=old, new=end.name)
        if ev.mtu and ev.mtu != end.mtu:
            log.info("%s mtu %d", end.name, ev.mtu)
            end.mtu = ev.mtu
            pair = self._reg.pair_of[end]
            self.events.publish("mtu", pair, end, mtu=ev.mtu)
            if isinstance(pair.b, VxlanEnd) and end is pair.a:
                self._spawn(self._fit_segments(end, ev.mtu))
        if ev.address:
            end.address = ev.address
        self._set_up(end, ev.up)

    async def _fit_segments(self, end: End, mtu: int) -> None:
        """A tunnel end's TAP takes super-frames of no more segments than one UDP_SEGMENT send
        holds at its MTU (vxlan_send.py): set again when the MTU changes."""
        segs = tap_gso_max_segs(mtu)
        if segs is None or end.mtu != mtu:  # no fitting asked, or changed again meanwhile
            return
        try:
            await self._worker.call(Netlink.set_gso_max_segs, end.tap, segs)
        except OSError as exc:
            log.warning("%s: cannot set gso_max_segs %d: %s", end.name, segs, exc.strerror)
        else:
            log.debug("%s gso_max_segs %d", end.name, segs)

    def _set_up(self, end: End, up: bool) -> None:
        if up != end.up:
            end.up = up
            pair = self._reg.pair_of.get(end)
            if pair is not None:
                self.update_carrier(pair)

    def _stray(self, ev: LinkEvent) -> None:
        if self._lookups:
            self._stray_seq += 1
            self._strays[(ev.nsid, ev.index)] = (self._stray_seq, ev)

    def update_carrier(self, pair: Pair) -> None:
        """Apply veth's carrier rule to both TAPs after an end's admin state changed."""
        if pair.closed:
            return
        if isinstance(pair.b, VxlanEnd):
            # With BFD, the far side learns of it; a cut carrier looks to it as admin down.
            pair.b.local_admin(pair.a.up and not pair.carrier.cut)
        if not pair.carrier.update(pair.a.up, pair.b.up):
            return
        on = pair.carrier.on
        for end in pair.taps():
            try:
                end.tap.set_carrier(on)
            except OSError:
                self.relocate(end)  # most likely gone: the lookup will tell
        log.info("pair %s <-> %s carrier %s", pair.a.name, pair.b.name, "up" if on else "down")
        self.events.publish("carrier", pair, carrier=on, carrier_changes=pair.carrier.changes)

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
        """Find where an end is now and register it there. relocate() marked it locating
        when it started this.

        The pair is destroyed only when the kernel says the end was deleted (its fd reports
        EBADFD). A lookup that cannot pin the end down (it keeps moving, or a request failed)
        is tried again a little later for as long as the fd says the device exists: a kernel
        veth end is never deleted by a move, a rename or a state change."""
        pause = RETRY_FIRST
        try:
            while end.stale and not pair.closed:
                end.stale = False
                # Unregistered while the lookup runs: events about its new place become strays
                # and are applied over the answer below, since they are newer than it.
                self._reg.unkey(end)
                start = self._stray_seq
                self._lookups += 1
                loc: Location | None = None
                failed: Exception | None = None
                try:
                    loc = await self._worker.call(provision.follow, end.tap)
                except Exception as exc:  # any failure of the lookup itself: ask the fd
                    failed = exc
                finally:
                    self._lookups -= 1
                stray = self._strays.get(loc.key) if loc is not None else None
                if not self._lookups:
                    self._strays.clear()
                if pair.closed:
                    return
                if failed is not None:
                    if end.tap.gone():
                        await self._destroy(pair, f"{end.name} was deleted")
                        return
                    # A failure for want of resources (fds, buffers) is the daemon's trouble,
                    # not the end's: said once as a warning, then quietly while it lasts.
                    log_at = logging.INFO if isinstance(failed, Unsettled) else logging.WARNING
                    if end in self._retrying:
                        log_at = logging.DEBUG
                    self._retrying.add(end)
                    log.log(log_at, "%s not located yet (%s); looking again", end.name, failed)
                    end.stale = True
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, RETRY_MAX)
                    continue
                if loc is None:
                    await self._destroy(pair, f"{end.name} was deleted")
                    return
                log.debug("located %s: %s", end.name, loc)
                self._retrying.discard(end)
                old_inode = end.ns_inode
                end.moved_to(loc)
                if stray is not None and stray[0] > start:
                    ev = stray[1]
                    if ev.kind is Kind.DELLINK:
                        end.stale = True  # gone from there already: look again
                        continue
                    log.debug("newer event for %s while looking it up: %s", end.name, ev)
                    end.up, end.mtu, end.name = ev.up, ev.mtu or end.mtu, ev.name or end.name
                    end.address = ev.address or end.address
                self._key(end)
                if loc.ns_inode != old_inode:
                    log.info("%s moved to %s", end.name, self._reg.ns_label(end))
                    self.events.publish("moved", pair, end)
        finally:
            end.locating = False
        self.update_carrier(pair)

    def _key(self, end: End) -> None:
        """Register an end at its (nsid, ifindex). Two devices cannot have the same key at
        once: an end already there is out of date (its departure event is still queued), so
        it is looked up again too."""
        other = self._reg.by_key.get(end.key)
        self._reg.by_key[end.key] = end
        if other is not None and other is not end:
            self.relocate(other)

    def on_gone(self, end: End, exc: OSError) -> None:
        """The relay found an end's fd failing: the TAP was deleted, if the fd confirms it
        (else the end is looked up again, which decides)."""
        pair = self._reg.pair_of.get(end)
        if pair is None or pair.closed:
            return
        if not end.tap.gone():
            log.warning("%s: %s, yet its device is there; looking it up", end.name, exc)
            self.relocate(end)
            return
        self._stop_relay(pair)
        why = "was deleted" if exc.errno in (errno.EBADFD, errno.EFAULT) else f"failed: {exc}"
        self._spawn(self._destroy(pair, f"{end.name} {why}"))
