"""Control requests: what each operation of the control socket does to the daemon."""

import asyncio
import logging
import os
from typing import TYPE_CHECKING, Any

from tapveth.control import STOPPING, ControlError, Peer, shorten
from tapveth.core import orphans
from tapveth.core.faults import FaultError
from tapveth.core.faults import parse as parse_faults
from tapveth.core.linkspec import PairSpec, SpecError
from tapveth.core.netem import Netem, NetemError
from tapveth.core.orphans import Orphan
from tapveth.core.vxlanspec import VxlanSpec
from tapveth.daemon import impaired
from tapveth.daemon.faults import set_cut
from tapveth.daemon.pair import End
from tapveth.daemon.persisted import PersistedPairs
from tapveth.kernel import netns
from tapveth.kernel.netns import NetnsError

if TYPE_CHECKING:
    from tapveth.daemon.pair import Pair
    from tapveth.daemon.service import Daemon
    from tapveth.daemon.vxlan_end import VxlanEnd

log = logging.getLogger("tapveth")


class ControlRequests:
    """Answers one request at a time per client; adds and deletes are serialised by the
    daemon's lock (names are checked, then taken). Once the daemon is stopping, a request
    that changes pairs is refused, also one that was waiting for the lock."""

    def __init__(self, daemon: "Daemon") -> None:
        self._d = daemon
        self._persisted = PersistedPairs(daemon.socket_path)
        # Set once the persistent pairs are re-attached: until then requests other than ping
        # wait, so that none sees (or takes names from) a daemon that has not found them yet.
        self._reattached = asyncio.Event()

    async def reattach_persisted(self) -> None:
        """At start: re-attach the persistent pairs that requests made under an earlier daemon
        on this socket; forget those that are no longer there whole."""
        try:
            await self._reattach_all()
        finally:
            self._reattached.set()

    async def _reattach_all(self) -> None:
        d = self._d
        for spec in self._persisted.load():
            try:
                async with d.lock:
                    await d.maker.create(
                        spec, None, persist=True, reattach=True, only_reattach=True
                    )
            except ControlError as exc:
                log.info(
                    "persistent pair %s <-> %s not re-attached: %s",
                    spec.end.name,
                    spec.peer.name,
                    exc,
                )
                self._persisted.drop({spec.end.name, spec.peer.name})

    def forget(self, pair: "Pair") -> None:
        """A persistent pair is deleted (on request, with its namespace or an end): drop it
        from the record."""
        self._persisted.drop({pair.a.name, pair.b.name})

    def _check_persistable(self, spec: PairSpec, caller_ns: int | None) -> None:
        """A persistent pair is found again by its ends' namespaces: each must be an `ip netns`
        name, or the daemon's own namespace (a PID or the caller's namespace would not last)."""
        for want in (spec.end, spec.peer):
            if want.netns is None:
                own = self._d.registry.own_inode
                inode = own if caller_ns is None else netns.inode_of_fd(caller_ns)
                if inode != own:
                    raise ControlError(
                        f"persist: {want.name} would be in the caller's namespace, not the "
                        "daemon's: name its namespace (netns NAME) to make it persistent"
                    )
            elif want.netns.isdigit():
                raise ControlError(
                    f"persist: {want.name}'s namespace is given by PID {want.netns}, which does "
                    "not outlive the process: name it (ip netns) to make the pair persistent"
                )

    def _not_stopping(self) -> None:
        if self._d.stopping:
            raise ControlError(STOPPING)

    async def handle(self, op: str, args: dict[str, Any], peer: Peer) -> Any:
        d, reg = self._d, self._d.registry
        self._not_stopping()
        if op != "ping":
            await self._reattached.wait()
        if op == "add":
            try:
                spec = PairSpec.from_dict(args.get("spec"))
            except SpecError as exc:
                raise ControlError(str(exc)) from None
            persist = args.get("persist", False)
            if not isinstance(persist, bool):
                raise ControlError("persist must be true or false")
            if persist and isinstance(spec.peer, VxlanSpec):
                raise ControlError(
                    "a pair whose peer is vxlan cannot persist (its tunnel sockets end with "
                    "the daemon)"
                )
            caller_ns = await self._caller_netns(spec, peer)
            try:
                async with d.lock:
                    self._not_stopping()
                    if persist:
                        self._check_persistable(spec, caller_ns)
                    pair = await d.maker.create(spec, caller_ns, persist=persist)
                    if persist:
                        self._persisted.drop({spec.end.name, spec.peer.name})
                        # Re-attached by the next daemon from the namespaces as named: the
                        # caller's namespace (here the daemon's own) is written as None.
                        self._persisted.add(spec)
            finally:
                if caller_ns is not None:
                    os.close(caller_ns)
            ends = [reg.describe(pair, e) for e in pair.ends()]
            if d.configured is None:
                return ends
            return {
                "ends": ends,
                "note": f"not in {d.configured.path}: a reload keeps this "
                "pair, but the daemon does not recreate it when it starts again",
            }
        if op == "del":
            async with d.lock:
                self._not_stopping()
                orphan = self._orphan(args)
                if orphan is not None:
                    await d.delete_orphan(orphan)
                    return {"deleted": [e.name for e in orphan.ends()]}
                pair = reg.find(args.get("name"), args.get("netns"))
                await d.maker.destroy(pair, "deleted on request")
                return {"deleted": [pair.a.name, pair.b.name]}
        if op == "show":
            orphan = self._orphan(args)
            if orphan is not None:
                return orphans.describe(orphan)
            shown = [reg.describe(p, e) for p, e in reg.select(args)]
            if args.get("name") is None:
                shown += [row for o in d.orphans for row in orphans.describe(o)]
            return shown
        if op == "stats":
            chosen = reg.select(args)
            # A vxlan end is no device: it has no kernel counters of its own.
            keys = [e.key for _, e in chosen if isinstance(e, End)]
            try:
                drops = iter(await d.counters.drops(keys))
            except OSError as exc:
                raise ControlError(f"cannot read the kernel's counters: {exc.strerror}") from None
            return [reg.stats(p, e, next(drops) if isinstance(e, End) else None) for p, e in chosen]
        if op == "reload":
            if d.configured is None:
                raise ControlError("this daemon runs without --config: nothing to reload")
            return await d.configured.reload()
        if op == "qdisc":
            return self._qdisc(args)
        if op == "carrier":
            pair = reg.find(args.get("name"), args.get("netns"))
            on = args.get("on")
            if not isinstance(on, bool):
                raise ControlError("carrier must be on or off")
            set_cut(d, pair, not on)
            end = self._end(pair, args)
            log.info("carrier of %s %s by request", end.name, "restored" if on else "cut")
            d.events.publish("fault", pair, end, fault="restore" if on else "cut", step="manual")
            return reg.describe(pair, pair.ends()[0])
        if op == "fault":
            return self._fault(args)
        if op == "capture":
            from tapveth.daemon import capture  # pcapng and all: loaded at the first capture

            return capture.start(d, args)
        if op == "monitor":
            return d.events.stream()
        if op == "ping":
            return {
                "pairs": len(reg.pairs),
                "pid": os.getpid(),
                "tasks": len(d.tasks),  # background tasks in flight (lookups, removals)
                "fds": _open_fds(),
            }
        raise ControlError(f"unknown request {shorten(op)}")

    def _orphan(self, args: dict[str, Any]) -> Orphan | None:
        """The left-over persistent pair a del/show names, when no live pair has that name."""
        name, ns = args.get("name"), args.get("netns")
        if not isinstance(name, str) or (ns is not None and not isinstance(ns, str)):
            return None
        if any(e.name == name for p in self._d.pairs for e in p.ends()):
            return None
        return orphans.find(self._d.orphans, name, ns)

    async def _caller_netns(self, spec: PairSpec, peer: Peer) -> int | None:
        """An fd of the client's network namespace when an end is to be made there (as
        `ip link add` makes it in its own), asked of the client itself: under a unit's bounding
        set the daemon may not open a full-root process's /proc/PID/ns/net."""
        if spec.end.netns is not None and spec.peer.netns is not None:
            return None
        try:
            if peer.netns_fd is None:  # not over a connection: the process is at hand
                fd = netns.open_netns(str(peer.pid))
            else:
                fd = await peer.netns_fd()
        except NetnsError as exc:
            raise ControlError(str(exc)) from None
        if not netns.is_netns_fd(fd):
            os.close(fd)
            raise ControlError("the client sent an fd that is not a network namespace")
        return fd

    def _qdisc(self, args: dict[str, Any]) -> Any:
        """tc qdisc add|change|replace|del|show for the frames an end sends."""
        d, reg = self._d, self._d.registry
        action = args.get("action")
        if action == "show":
            name, ns = args.get("name"), args.get("netns")
            return [
                impaired.show(e, reg.ns_name(e))
                for _, e in reg.select(args)
                if name is None or (e.name == name and (ns is None or reg.ns_name(e) == ns))
            ]
        if action not in ("add", "change", "replace", "del"):
            raise ControlError(f"unknown qdisc action {action!r}")
        name, ns = args.get("name"), args.get("netns")
        pair = reg.find(name, ns)
        end = next(
            e for e in pair.ends() if e.name == name and (ns is None or reg.ns_name(e) == ns)
        )
        settings = None
        if action != "del":
            try:
                settings = Netem.from_dict(args.get("netem"))
            except NetemError as exc:
                raise ControlError(str(exc)) from None
        d.impairments.set(pair, end, settings, action)
        log.info(
            "impairments of %s %s", end.name, "removed" if settings is None else f"set: {settings}"
        )
        d.events.publish(
            "qdisc", pair, end, action=action, netem=None if settings is None else str(settings)
        )
        return impaired.show(end, reg.ns_name(end))

    def _end(self, pair: "Pair", args: dict[str, Any]) -> "End | VxlanEnd":
        """The end of pair a request names with name (and netns)."""
        name, ns = args.get("name"), args.get("netns")
        reg = self._d.registry
        return next(
            e for e in pair.ends() if e.name == name and (ns is None or reg.ns_name(e) == ns)
        )

    def _fault(self, args: dict[str, Any]) -> Any:
        """Fault schedules: add|replace|del an end's, show them."""
        d, reg = self._d, self._d.registry
        action = args.get("action")
        if action == "show":
            name, ns = args.get("name"), args.get("netns")
            out = []
            for _, e in reg.select(args):
                if name is not None and (
                    e.name != name or (ns is not None and reg.ns_name(e) != ns)
                ):
                    continue
                shown = d.faults.show(e)
                if shown is not None:
                    out.append({"dev": e.name, "netns": reg.ns_name(e), **shown})
            return out
        if action not in ("add", "replace", "del"):
            raise ControlError(f"unknown fault action {shorten(action)}")
        pair = reg.find(args.get("name"), args.get("netns"))
        end = self._end(pair, args)
        schedule = None
        if action != "del":
            words = args.get("schedule")
            if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
                raise ControlError("schedule must be a list of words")
            try:
                schedule = parse_faults(words)
            except FaultError as exc:
                raise ControlError(str(exc)) from None
        d.faults.set(pair, end, schedule, action)
        return d.faults.show(end) or {}


def _open_fds() -> int | None:
    """How many fds the daemon has open; None when it cannot even open the directory to count
    them (it is out of file descriptors)."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return None
