"""Control requests: what each operation of the control socket does to the daemon."""

import os
from typing import TYPE_CHECKING, Any

from tapveth.control import ControlError, Peer
from tapveth.core.linkspec import PairSpec, SpecError
from tapveth.core.netem import Netem, NetemError
from tapveth.daemon import impaired, provision

if TYPE_CHECKING:
    from tapveth.daemon.service import Daemon


class ControlRequests:
    """Answers one request at a time per client; adds and deletes are serialised by the
    daemon's lock (names are checked, then taken)."""

    def __init__(self, daemon: "Daemon") -> None:
        self._d = daemon

    async def handle(self, op: str, args: dict[str, Any], peer: Peer) -> Any:
        d, reg = self._d, self._d.registry
        if op == "add":
            try:
                spec = PairSpec.from_dict(args.get("spec"))
            except SpecError as exc:
                raise ControlError(str(exc)) from None
            async with d.lock:
                pair = await d.create(spec, peer.pid)
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
                pair = reg.find(args.get("name"), args.get("netns"))
                await d.destroy(pair, "deleted on request")
                return {"deleted": [pair.a.name, pair.b.name]}
        if op == "show":
            return [reg.describe(p, e) for p, e in reg.select(args)]
        if op == "stats":
            chosen = reg.select(args)
            keys = [e.key for _, e in chosen]
            drops = await d.worker.call(provision.kernel_drops, keys)
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
                "fds": len(os.listdir("/proc/self/fd")),
            }
        raise ControlError(f"unknown request {op!r}")

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
