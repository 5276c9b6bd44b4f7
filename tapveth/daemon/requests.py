"""Control requests: what each operation of the control socket does to the daemon."""

import os
from typing import TYPE_CHECKING, Any

from tapveth.control import ControlError, Peer
from tapveth.core.linkspec import PairSpec, SpecError
from tapveth.daemon import provision

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
        if op == "ping":
            return {
                "pairs": len(reg.pairs),
                "pid": os.getpid(),
                "tasks": len(d.tasks),  # background tasks in flight (lookups, removals)
                "fds": len(os.listdir("/proc/self/fd")),
            }
        raise ControlError(f"unknown request {op!r}")
