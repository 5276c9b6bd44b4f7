"""Control requests: what each operation of the control socket does to the daemon."""

import os
from typing import TYPE_CHECKING, Any

from tapveth.control import STOPPING, ControlError, Peer, shorten
from tapveth.core import orphans
from tapveth.core.linkspec import PairSpec, SpecError
from tapveth.core.netem import Netem, NetemError
from tapveth.core.orphans import Orphan
from tapveth.daemon import impaired
from tapveth.kernel import netns
from tapveth.kernel.netns import NetnsError

if TYPE_CHECKING:
    from tapveth.daemon.service import Daemon


class ControlRequests:
    """Answers one request at a time per client; adds and deletes are serialised by the
    daemon's lock (names are checked, then taken). Once the daemon is stopping, a request
    that changes pairs is refused, also one that was waiting for the lock."""

    def __init__(self, daemon: "Daemon") -> None:
        self._d = daemon

    def _not_stopping(self) -> None:
        if self._d.stopping:
            raise ControlError(STOPPING)

    async def handle(self, op: str, args: dict[str, Any], peer: Peer) -> Any:
        d, reg = self._d, self._d.registry
        self._not_stopping()
        if op == "add":
            try:
                spec = PairSpec.from_dict(args.get("spec"))
            except SpecError as exc:
                raise ControlError(str(exc)) from None
            caller_ns = await self._caller_netns(spec, peer)
            try:
                async with d.lock:
                    self._not_stopping()
                    pair = await d.create(spec, caller_ns)
            finally:
                if caller_ns is not None:
                    os.close(caller_ns)
            ends = [reg.describe(pair, e) for e in pair.ends()]
            if d.config_path is None:
                return ends
            return {
                "ends": ends,
                "note": f"not in {d.config_path}: a reload keeps this "
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
                await d.destroy(pair, "deleted on request")
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
            try:
                drops = await d.counters.drops([e.key for _, e in chosen])
            except OSError as exc:
                raise ControlError(f"cannot read the kernel's counters: {exc.strerror}") from None
            return [reg.stats(p, e, dr) for (p, e), dr in zip(chosen, drops, strict=True)]
        if op == "reload":
            if d.config_path is None:
                raise ControlError("this daemon runs without --config: nothing to reload")
            return await d.reload()
        if op == "qdisc":
            return self._qdisc(args)
        if op == "carrier":
            pair = reg.find(args.get("name"), args.get("netns"))
            on = args.get("on")
            if not isinstance(on, bool):
                raise ControlError("carrier must be on or off")
            pair.carrier.cut = not on
            for end in pair.ends():
                end.cut = not on
            d.tracker.update_carrier(pair)
            return reg.describe(pair, pair.ends()[0])
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
        return impaired.show(end, reg.ns_name(end))


def _open_fds() -> int | None:
    """How many fds the daemon has open; None when it cannot even open the directory to count
    them (it is out of file descriptors)."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return None
