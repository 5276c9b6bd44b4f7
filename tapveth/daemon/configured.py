"""The pairs of the configuration file (`--config`): made at start, and on a reload (SIGHUP or
`tapveth reload`) brought to what the file says now, changed in place where they can be.
core/reconcile.py decides what changes; this applies it through the daemon."""

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tapveth.control import ControlError, one_line
from tapveth.core import config
from tapveth.core.config import ConfigError, PairConfig
from tapveth.core.reconcile import Ident, Plan, fault_changes, netem_changes, plan
from tapveth.core.vxlanspec import VxlanSpec
from tapveth.daemon import provision
from tapveth.daemon.pair import End, Pair
from tapveth.kernel.netlink import PlaceError

if TYPE_CHECKING:
    from tapveth.daemon.service import Daemon
    from tapveth.kernel.tap import Tap

log = logging.getLogger("tapveth")


class ConfiguredPairs:
    """The file's pairs by their identity in it, and the reconciling of them with the file."""

    def __init__(self, daemon: "Daemon", path: str) -> None:
        self._d = daemon
        self.path = path
        self._managed: dict[Ident, tuple[PairConfig, Pair]] = {}

    def forget(self, pair: Pair) -> None:
        """A pair is going (deleted on request, gone, stopped): it is no longer the file's."""
        for ident, (_, managed) in list(self._managed.items()):
            if managed is pair:
                del self._managed[ident]

    async def reload(self) -> str:
        """Apply the difference between the file and what runs; the summary of what changed."""
        d = self._d
        d.notify_reloading()
        try:
            try:
                cfg = config.load(self.path)
            except ConfigError as exc:
                raise ControlError(str(exc)) from None
            done = await self.apply(cfg)
            log.info("reloaded %s: %s", self.path, done.summary())
            return done.summary()
        finally:
            d.notify_ready()

    async def apply(self, cfg: config.Config) -> Plan:
        """Make, change and remove pairs until what runs is what cfg says; then wait for the
        carrier of the pairs made or changed."""
        d = self._d
        async with d.lock:
            todo = plan({ident: pc for ident, (pc, _) in self._managed.items()}, cfg)
            for ident in todo.remove:
                _, pair = self._managed.pop(ident)
                await d.maker.destroy(pair, "removed from the configuration")
            waiting = []
            for old, new in todo.change:
                _, pair = self._managed[old.ident]
                await self._for_pair(
                    new, provision.configure_pair, pair.a.tap, _peer_tap(pair), old, new
                )
                self._set_netem(pair, old, new)
                self._set_faults(pair, old, new)
                self._managed[new.ident] = (new, pair)
                waiting.append((new, pair))
            for pc in todo.create:
                for e in (pc.end, pc.peer):
                    if e.create_netns and e.spec.netns:
                        await self._for_pair(pc, provision.ensure_netns, e.spec.netns)
                pair = await d.maker.create(pc.spec, None, pc.persist, reattach=pc.persist)
                self._managed[pc.ident] = (pc, pair)
                await self._for_pair(
                    pc, provision.configure_pair, pair.a.tap, _peer_tap(pair), None, pc
                )
                self._set_netem(pair, None, pc)
                self._set_faults(pair, None, pc)
                waiting.append((pc, pair))
        await self._until_carrier(waiting)
        return todo

    def _set_netem(self, pair: Pair, old: PairConfig | None, new: PairConfig) -> None:
        """Impairments from the file, changed in place (queued frames keep flowing)."""
        for index, settings in netem_changes(old, new):
            end = pair.ends()[index]
            if settings is not None:
                self._d.impairments.set(pair, end, settings, "replace")
            elif end.impair is not None:
                self._d.impairments.set(pair, end, None, "del")

    def _set_faults(self, pair: Pair, old: PairConfig | None, new: PairConfig) -> None:
        """Fault schedules from the file: a changed line starts its schedule again."""
        faults = self._d.faults
        for index, schedule in fault_changes(old, new):
            end = pair.ends()[index]
            if schedule is not None:
                faults.set(pair, end, schedule, "replace")
            elif faults.get(end) is not None:
                faults.set(pair, end, None, "del")

    async def _for_pair(self, pc: PairConfig, fn: Callable[..., Any], *args: Any) -> None:
        """Run a worker function for a configured pair; a failure names the pair."""
        try:
            await self._d.worker.call(fn, *args)
        except (OSError, PlaceError) as exc:
            raise ControlError(f"pair {pc.ident[0]}: {one_line(exc)}") from None

    async def _until_carrier(self, pairs: list[tuple[PairConfig, Pair]]) -> None:
        """Wait until every pair configured up on both ends has carrier: then the relay runs
        and the pair carries traffic."""
        deadline = time.monotonic() + 10.0
        for pc, pair in pairs:
            if not (pc.end.up and pc.peer.up):
                continue
            if isinstance(pc.peer.spec, VxlanSpec) and pc.peer.spec.bfd:
                continue  # up once the far side answers, which may be later (or never)
            while not pair.carrier.on and not pair.closed:
                if time.monotonic() > deadline:
                    raise ControlError(f"pair {pair.a.name} <-> {pair.b.name} got no carrier")
                await asyncio.sleep(0.01)


def _peer_tap(pair: Pair) -> "Tap | None":
    """The peer's TAP; None when the peer is the far end of a VXLAN tunnel."""
    return pair.b.tap if isinstance(pair.b, End) else None
