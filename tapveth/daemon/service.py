"""The daemon: its lifecycle (start, signals, systemd notify, stop). Making and removing pairs,
end tracking, the registry, control requests, the configuration file's pairs and the netlink
worker are modules of their own.

Everything runs on one uvloop event loop except blocking rtnetlink requests, which go to a
single worker thread (see worker.py). Pair state changes only on the loop thread.
"""

import asyncio
import logging
import signal
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from tapveth.control import ControlError, ControlServer, one_line
from tapveth.core import config, orphans
from tapveth.core.config import ConfigError
from tapveth.core.orphans import Orphan
from tapveth.daemon import memory, provision
from tapveth.daemon.configured import ConfiguredPairs
from tapveth.daemon.events import Event, EventBus
from tapveth.daemon.faults import Faults
from tapveth.daemon.impaired import Impairments
from tapveth.daemon.making import PairMaker
from tapveth.daemon.notify import Notifier
from tapveth.daemon.pair import Pair
from tapveth.daemon.paths import FramePaths
from tapveth.daemon.persisted import PersistentPlaces
from tapveth.daemon.registry import Registry
from tapveth.daemon.requests import ControlRequests
from tapveth.daemon.tracking import EndTracker
from tapveth.daemon.worker import CountersWorker, NetlinkWorker, TapCloser
from tapveth.kernel import netns

if TYPE_CHECKING:
    from tapveth.daemon.metrics import Metrics

log = logging.getLogger("tapveth")


class Daemon:
    def __init__(
        self,
        socket_path: str,
        busy_poll_us: int = 0,
        config_path: str | None = None,
        group: str | None = None,
        metrics: str | None = None,
        busy_poll_gap_us: int = 0,
        native: bool = False,
    ) -> None:
        """native: plain ends are relayed by the native thread (daemon/native.py)."""
        self.socket_path = socket_path
        self._metrics_listen = metrics  # HOST:PORT for Prometheus, or None: no TCP socket
        self._metrics: Metrics | None = None
        self._notify = Notifier()
        self.registry = Registry(netns.own_inode())
        self.worker = NetlinkWorker()
        self.counters = CountersWorker()
        self.stopping = False  # set first thing on the way out: no request changes pairs then
        self.lock = asyncio.Lock()  # one add/del at a time: names are checked then taken
        self.tasks: set[asyncio.Task[Any]] = set()
        self._stop = asyncio.Event()
        self.events = EventBus(self.registry.ns_name)
        self.maker = PairMaker(self)
        self.tracker = EndTracker(
            self.registry,
            self.worker,
            self.maker.destroy,
            self.maker.stop_relay,
            self._spawn,
            self.events,
        )
        self._started = False
        self._hup_pending = False
        self.orphans: list[Orphan] = []  # persistent pairs left by an earlier daemon, unowned
        self._places = PersistentPlaces(socket_path)
        self._places_ready = False  # the record is rewritten only once the search used it
        self._busy_poll_us = busy_poll_us
        self._busy_poll_gap_us = busy_poll_gap_us
        self._want_native = native
        self.paths: FramePaths  # made in run(), where the loop is known
        self.impairments: Impairments  # likewise (the paths')
        self.faults = Faults(self)
        self.requests = ControlRequests(self)
        self.configured = None if config_path is None else ConfiguredPairs(self, config_path)
        self._server = ControlServer(socket_path, self.requests.handle, group)

    @property
    def pairs(self) -> list[Pair]:
        return self.registry.pairs

    # -- running -----------------------------------------------------------------------------

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        paths = self.paths = FramePaths(
            loop,
            self.tracker.on_events,
            self.tracker.fileno(),
            self.tracker.on_gone,
            self._busy_poll_us,
            self._busy_poll_gap_us,
        )
        self.impairments = paths.impairments
        loop.add_reader(self.tracker.fileno(), paths.apply_events)
        try:
            if self._metrics_listen is not None:
                from tapveth.daemon.metrics import Metrics  # ~3 MiB: only when asked for

                self._metrics = Metrics(self, paths.relay, self._metrics_listen)
                self._metrics.start()
            await self._server.start()
        except ControlError as exc:
            log.error("%s", exc)
            if self._metrics is not None:
                await self._metrics.close()
            return 2
        native = self._want_native and paths.start_native()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        # From the start: a SIGHUP's default action would kill the daemon.
        loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
        log.info(
            "listening on %s%s",
            self.socket_path,
            "; plain ends relayed by the native thread" if native else "",
        )
        memory.freeze_startup_heap()
        memory.keep_freed_memory()
        self.events.listen(self._on_event)
        status = 0
        try:
            await self.requests.reattach_persisted()
            if self.configured is not None:
                try:
                    applied = await self.configured.apply(config.load(self.configured.path))
                except (ConfigError, ControlError) as exc:
                    log.error("%s", exc)
                    status = 2
                    return status
                log.info("configuration %s: %s", self.configured.path, applied.summary())
            await self._find_orphans()
            self._started = True
            if self._hup_pending:  # a SIGHUP came while starting: apply the file again now
                self._spawn(self._reload_logged())
            self.notify_ready()
            if self._notify.watchdog_usec:
                self._watchdog(loop, self._notify.watchdog_usec / 2e6)
            await self._stop.wait()
        finally:
            await self._shutdown(loop)
        return status

    async def _shutdown(self, loop: asyncio.AbstractEventLoop) -> None:
        """Stop taking requests, answer those under way, let background work finish, then
        remove the pairs: nothing is made after the "stopping" line, and every client that
        asked something gets an answer."""
        self.stopping = True
        self._notify.stopping()
        await self._server.close()
        loop.remove_reader(self.tracker.fileno())
        await self._settle_tasks()
        kept = [p for p in self.pairs if p.persist]
        self._record_places()  # where the persistent ends stay, for the next daemon's search
        log.info(
            "stopping: removing %d pair(s), keeping %d persistent",
            len(self.pairs) - len(kept),
            len(kept),
        )
        closer = TapCloser()
        try:
            # All at once: each delete waits in the kernel, and concurrent waits end together.
            await asyncio.gather(*(self._remove_at_stop(p, closer) for p in list(self.pairs)))
        finally:
            await closer.shutdown()
        self.paths.close()  # before the link events' socket, which the native thread watches
        await self.events.close()  # monitors and captures end, captures with their counts
        await self._server.close_streams()
        if self._metrics is not None:
            await self._metrics.close()
        self.tracker.close()
        await self.counters.close()
        await self.worker.close()
        self._notify.close()

    async def _remove_at_stop(self, pair: Pair, closer: TapCloser) -> None:
        try:
            await self.maker.destroy(pair, "daemon stopped", keep=pair.persist, closer=closer)
        except OSError as exc:  # the kernel deletes a closed TAP anyway: go on
            log.warning("removing %s <-> %s: %s", pair.a.name, pair.b.name, exc)

    async def _settle_tasks(self, grace: float = 5.0) -> None:
        """Let lookups and removals under way finish (for `grace` seconds at most), then
        cancel what is left and collect it, so that nothing ends in a traceback."""
        deadline = time.monotonic() + grace
        while self.tasks and time.monotonic() < deadline:
            await asyncio.wait(set(self.tasks), timeout=deadline - time.monotonic())
        late = set(self.tasks)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)

    def stop(self) -> None:
        self._stop.set()

    def notify_ready(self) -> None:
        """Tell systemd the daemon is ready (again, after a reload), with the pairs' status."""
        up = sum(1 for p in self.pairs if p.carrier.on)
        self._notify.ready(f"{len(self.pairs)} pair(s), {up} with carrier")

    def notify_reloading(self) -> None:
        """Tell systemd a reload is under way (READY=1 follows: notify_ready)."""
        self._notify.reloading()

    def _watchdog(self, loop: asyncio.AbstractEventLoop, every: float) -> None:
        """WATCHDOG=1 from the event loop itself: a stuck loop stops sending, and systemd
        restarts the daemon."""
        self._notify.send("WATCHDOG=1")
        loop.call_later(every, self._watchdog, loop, every)

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # -- left-over persistent pairs ----------------------------------------------------------

    async def _find_orphans(self) -> None:
        """At start: persistent pairs an earlier daemon left that this one did not take back
        (gone from the configuration while the daemon was stopped) are reported, shown by
        `show`, and removed by `tapveth del`."""
        held = {(e.ns_inode, e.name) for p in self.pairs for e in p.ends()}
        found = await self.worker.call(
            provision.find_orphans, held, self.socket_path, self._places.load()
        )
        self.orphans = orphans.match(found)
        self._places_ready = True
        self._record_places()
        for o in self.orphans:
            log.warning(
                "persistent pair %s is not in the configuration and has no relay: remove it "
                "with 'tapveth del %s'",
                o.label(),
                o.a.name,
            )

    def _record_places(self) -> None:
        """Record the namespaces of the persistent ends, this daemon's and the left-over ones,
        for the next daemon's search (see core/orphans.py)."""
        if not self._places_ready:
            return
        names = [self.registry.ns_name(e) for p in self.pairs if p.persist for e in p.ends()]
        names += [e.netns for o in self.orphans for e in o.ends()]
        self._places.save(orphans.places(names))

    def _on_event(self, ev: Event) -> None:
        if ev.pair.persist and ev.kind in ("created", "moved"):
            self._record_places()

    async def delete_orphan(self, orphan: Orphan) -> None:
        for end in orphan.ends():
            await self.worker.call(provision.delete_orphan, end)
        self.orphans.remove(orphan)
        log.info("left-over persistent pair %s removed: deleted on request", orphan.label())

    # -- the configuration file --------------------------------------------------------------

    def _on_sighup(self) -> None:
        if not self._started:
            self._hup_pending = True  # reloading now would send READY=1 before start is done
            return
        self._spawn(self._reload_logged())

    async def _reload_logged(self) -> None:
        if self.configured is None:
            log.warning("SIGHUP ignored: this daemon runs without --config, nothing to reload")
            return
        try:
            await self.configured.reload()
        except ControlError as exc:
            log.error("reload failed, keeping what runs: %s", exc)
        except OSError as exc:
            log.error("reload failed, keeping what runs: %s", one_line(exc))
