"""The daemon: owns the pairs, follows their ends through netlink events, answers the CLI.

Everything runs on one uvloop event loop except blocking rtnetlink requests, which go to a
single worker thread (see netlink.py for why). Pair state changes only on the loop thread.
"""

import asyncio
import errno
import logging
import os
import secrets
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tapveth.control import ControlError, ControlServer, Peer
from tapveth.core import config
from tapveth.core.config import ConfigError, EndConfig, PairConfig
from tapveth.core.linkspec import EndSpec, PairSpec, SpecError, check_name
from tapveth.core.reconcile import Ident, Plan, plan
from tapveth.core.rules import Carrier
from tapveth.daemon.busypoll import BusyPoll
from tapveth.daemon.notify import Notifier
from tapveth.daemon.pair import End, Pair
from tapveth.daemon.relay import Relay
from tapveth.kernel import netns
from tapveth.kernel.linkwatch import Kind, LinkEvent, LinkWatch
from tapveth.kernel.netlink import Location, Netlink, PlaceError
from tapveth.kernel.netns import NetnsError
from tapveth.kernel.tap import Tap, TapError

log = logging.getLogger("tapveth")


class Daemon:
    def __init__(
        self,
        socket_path: str,
        busy_poll_us: int = 0,
        config_path: str | None = None,
        group: str | None = None,
    ) -> None:
        self.socket_path = socket_path
        self.config_path = config_path
        self._managed: dict[Ident, tuple[PairConfig, Pair]] = {}  # pairs from the config file
        self._notify = Notifier()
        self.pairs: list[Pair] = []
        self._by_key: dict[tuple[int | None, int], End] = {}
        self._pair_of: dict[End, Pair] = {}
        # Events for links no end is registered at, kept while lookups are in flight: an end
        # being looked up is unregistered, and an event about its new place that arrives
        # meanwhile is newer than the lookup's answer. Keyed by (nsid, ifindex): (seq, event).
        self._strays: dict[tuple[int | None, int], tuple[int, LinkEvent]] = {}
        self._stray_seq = 0
        self._lookups = 0
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="tapveth-netlink")
        self._local = threading.local()
        self._own_inode = netns.own_inode()
        self._stop = asyncio.Event()
        self._lock = asyncio.Lock()  # one add/del at a time: names are checked then taken
        self._tasks: set[asyncio.Task[None]] = set()
        self._watch = LinkWatch()
        self._busy_poll_us = busy_poll_us
        self._relay: Relay  # made in run(), where the loop is known
        self._server = ControlServer(socket_path, self._handle, group)

    # -- running -----------------------------------------------------------------------------

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        busy = BusyPoll(loop, self._busy_poll_us)
        self._relay = Relay(self._on_events, self._on_gone, busy.traffic)
        loop.add_reader(self._watch.fileno(), self._on_events)
        try:
            await self._server.start()
        except ControlError as exc:
            log.error("%s", exc)
            return 2
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        log.info("listening on %s", self.socket_path)
        status = 0
        try:
            if self.config_path is not None:
                try:
                    applied = await self._reconcile(config.load(self.config_path))
                except (ConfigError, ControlError) as exc:
                    log.error("%s", exc)
                    status = 2
                    return status
                log.info("configuration %s: %s", self.config_path, applied.summary())
            loop.add_signal_handler(signal.SIGHUP, lambda: self._spawn(self._reload_logged()))
            self._notify.ready(self._status())
            if self._notify.watchdog_usec:
                self._watchdog(loop, self._notify.watchdog_usec / 2e6)
            await self._stop.wait()
        finally:
            self._notify.stopping()
            kept = [p for p in self.pairs if p.persist]
            log.info(
                "stopping: removing %d pair(s), keeping %d persistent",
                len(self.pairs) - len(kept),
                len(kept),
            )
            await self._server.close()
            for pair in list(self.pairs):
                await self._destroy(pair, "daemon stopped", keep=pair.persist)
            loop.remove_reader(self._watch.fileno())
            self._watch.close()
            await self._call(lambda nl: nl.close())
            self._executor.shutdown(wait=True)
            self._notify.close()
        return status

    def stop(self) -> None:
        self._stop.set()

    def _status(self) -> str:
        up = sum(1 for p in self.pairs if p.carrier.on)
        return f"{len(self.pairs)} pair(s), {up} with carrier"

    def _watchdog(self, loop: asyncio.AbstractEventLoop, every: float) -> None:
        """WATCHDOG=1 from the event loop itself: a stuck loop stops sending, and systemd
        restarts the daemon."""
        self._notify.send("WATCHDOG=1")
        loop.call_later(every, self._watchdog, loop, every)

    async def _call(self, fn: Any, *args: Any) -> Any:
        """Run fn(netlink, *args) in the netlink worker thread."""
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, self._in_worker, fn, args
        )

    def _in_worker(self, fn: Any, args: tuple[Any, ...]) -> Any:
        nl = getattr(self._local, "nl", None)
        if nl is None:
            nl = self._local.nl = Netlink()
        try:
            return fn(nl, *args)
        finally:
            nl.tick()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- control requests --------------------------------------------------------------------

    async def _handle(self, op: str, args: dict[str, Any], peer: Peer) -> Any:
        if op == "add":
            try:
                spec = PairSpec.from_dict(args.get("spec"))
            except SpecError as exc:
                raise ControlError(str(exc)) from None
            async with self._lock:
                ends = await self.add(spec, peer.pid)
            if self.config_path is None:
                return ends
            return {
                "ends": ends,
                "note": f"not in {self.config_path}: a reload keeps this "
                "pair, but the daemon does not recreate it when it starts again",
            }
        if op == "del":
            async with self._lock:
                pair = self._find(args.get("name"), args.get("netns"))
                await self._destroy(pair, "deleted on request")
                return {"deleted": [pair.a.name, pair.b.name]}
        if op == "show":
            return [self._describe(p, e) for p, e in self._select(args)]
        if op == "stats":
            chosen = self._select(args)
            keys = [e.key for _, e in chosen]
            drops = await self._call(_kernel_drops, keys)
            return [self._stats(p, e, d) for (p, e), d in zip(chosen, drops, strict=True)]
        if op == "reload":
            if self.config_path is None:
                raise ControlError("this daemon runs without --config: nothing to reload")
            return await self._reload()
        if op == "ping":
            return {
                "pairs": len(self.pairs),
                "pid": os.getpid(),
                "tasks": len(self._tasks),  # background tasks in flight (lookups, removals)
                "fds": len(os.listdir("/proc/self/fd")),
            }
        raise ControlError(f"unknown request {op!r}")

    async def add(self, spec: PairSpec, caller_pid: int) -> list[dict[str, Any]]:
        """Create a pair: both TAPs made here, configured, moved, then relayed."""
        pair = await self._create(spec, caller_pid)
        return [self._describe(pair, e) for e in pair.ends()]

    async def _create(
        self, spec: PairSpec, caller_pid: int, persist: bool = False, reattach: bool = False
    ) -> Pair:
        if not reattach:
            for want in (spec.end, spec.peer):
                self._check_free(want, caller_pid)
        try:
            made = None
            if reattach:
                made = await self._call(_reattach_pair, spec, self._own_inode)
            reattached = made is not None
            if made is None:
                made = await self._call(_create_pair, spec, caller_pid, self._own_inode, persist)
        except (SpecError, NetnsError, TapError, PlaceError) as exc:
            raise ControlError(_one_line(exc)) from None
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE):
                raise ControlError(
                    "too many open files: the daemon's file descriptor limit is reached "
                    "(raise ulimit -n, or LimitNOFILE= in the unit)"
                ) from None
            raise ControlError(f"cannot create the pair: {_one_line(exc)}") from None
        taps, locs = made
        ends = [End(tap=t, name=loc.name) for t, loc in zip(taps, locs, strict=True)]
        for end, loc in zip(ends, locs, strict=True):
            end.moved_to(loc)
        # A re-attached pair goes on counting carrier transitions where the kernel left off.
        carrier = Carrier(changes=max(loc.carrier_changes for loc in locs))
        pair = Pair(ends[0], ends[1], carrier=carrier, persist=persist)
        self._register(pair)
        log.info(
            "pair %s <-> %s %s (%s, %s)",
            pair.a.name,
            pair.b.name,
            "re-attached" if reattached else "created",
            self._ns_label(pair.a),
            self._ns_label(pair.b),
        )
        return pair

    # -- the configuration file --------------------------------------------------------------

    async def _reload_logged(self) -> None:
        try:
            await self._reload()
        except ControlError as exc:
            log.error("reload failed, keeping what runs: %s", exc)

    async def _reload(self) -> str:
        """SIGHUP or `tapveth reload`: apply the difference between the file and what runs."""
        assert self.config_path is not None
        self._notify.reloading()
        try:
            try:
                cfg = config.load(self.config_path)
            except ConfigError as exc:
                raise ControlError(str(exc)) from None
            done = await self._reconcile(cfg)
            log.info("reloaded %s: %s", self.config_path, done.summary())
            return done.summary()
        finally:
            self._notify.ready(self._status())

    async def _reconcile(self, cfg: config.Config) -> Plan:
        async with self._lock:
            todo = plan({ident: pc for ident, (pc, _) in self._managed.items()}, cfg)
            for ident in todo.remove:
                _, pair = self._managed.pop(ident)
                await self._destroy(pair, "removed from the configuration")
            waiting = []
            for old, new in todo.change:
                _, pair = self._managed[old.ident]
                await self._for_pair(new, _configure_pair, pair.a.tap, pair.b.tap, old, new)
                self._managed[new.ident] = (new, pair)
                waiting.append((new, pair))
            for pc in todo.create:
                for e in (pc.end, pc.peer):
                    if e.create_netns and e.spec.netns:
                        await self._for_pair(pc, _ensure_netns, e.spec.netns)
                pair = await self._create(pc.spec, os.getpid(), pc.persist, reattach=pc.persist)
                self._managed[pc.ident] = (pc, pair)
                await self._for_pair(pc, _configure_pair, pair.a.tap, pair.b.tap, None, pc)
                waiting.append((pc, pair))
        await self._until_carrier(waiting)
        return todo

    async def _for_pair(self, pc: PairConfig, fn: Any, *args: Any) -> None:
        """Run a worker function for a configured pair; a failure names the pair."""
        try:
            await self._call(fn, *args)
        except (OSError, PlaceError) as exc:
            raise ControlError(f"pair {pc.ident[0]}: {_one_line(exc)}") from None

    async def _until_carrier(self, pairs: list[tuple[PairConfig, Pair]]) -> None:
        """Wait until every pair configured up on both ends has carrier: then the relay runs
        and the pair carries traffic."""
        deadline = time.monotonic() + 10.0
        for pc, pair in pairs:
            if not (pc.end.up and pc.peer.up):
                continue
            while not pair.carrier.on and not pair.closed:
                if time.monotonic() > deadline:
                    raise ControlError(f"pair {pair.a.name} <-> {pair.b.name} got no carrier")
                await asyncio.sleep(0.01)

    def _check_free(self, want: EndSpec, caller_pid: int) -> None:
        try:
            inode = (
                netns.inode_of_pid(caller_pid)
                if want.netns is None
                else os.stat(netns.path_of(want.netns)).st_ino
            )
        except FileNotFoundError:
            raise ControlError(
                _one_line(
                    NetnsError(
                        f"namespace {want.netns!r} does not exist (create it with: ip netns add "
                        f"{want.netns})"
                    )
                )
            ) from None
        for pair in self.pairs:
            for end in pair.ends():
                if end.name == want.name and end.ns_inode == inode:
                    raise ControlError(f"interface name {want.name!r} is already taken")

    def _register(self, pair: Pair) -> None:
        loop = asyncio.get_running_loop()
        self.pairs.append(pair)
        for end in pair.ends():
            self._pair_of[end] = pair
            self._by_key[end.key] = end
        loop.add_reader(pair.a.fd, self._relay.pump, pair.a, pair.b)
        loop.add_reader(pair.b.fd, self._relay.pump, pair.b, pair.a)
        self._update_carrier(pair)

    def _find(self, name: object, ns: object = None) -> Pair:
        if not isinstance(name, str):
            raise ControlError("which pair? give an end's name")
        try:
            check_name(name)
        except SpecError as exc:
            raise ControlError(str(exc)) from None
        hits = [
            (p, e)
            for p in self.pairs
            for e in p.ends()
            if e.name == name and (ns is None or self._ns_name(e) == ns)
        ]
        if not hits:
            raise ControlError(f"no tapveth pair has an end named {name!r}")
        if len(hits) > 1:
            raise ControlError(f"{name!r} names ends in several namespaces: add 'netns NS'")
        return hits[0][0]

    def _select(self, args: dict[str, Any]) -> list[tuple[Pair, End]]:
        name = args.get("name")
        if name is None:
            return [(p, e) for p in self.pairs for e in p.ends()]
        pair = self._find(name, args.get("netns"))
        return [(pair, e) for e in pair.ends()]

    # -- what the CLI shows ------------------------------------------------------------------

    def _ns_name(self, end: End) -> str | None:
        if end.ns_inode == self._own_inode:
            return None
        return netns.name_of_inode(end.ns_inode) or f"inode:{end.ns_inode}"

    def _ns_label(self, end: End) -> str:
        name = self._ns_name(end)
        return f"netns {name}" if name else "daemon's namespace"

    def _describe(self, pair: Pair, end: End) -> dict[str, Any]:
        return {
            "ifname": end.name,
            "peer": pair.peer_of(end).name,
            "netns": self._ns_name(end),
            "ifindex": end.index,
            "admin": "UP" if end.up else "DOWN",
            "carrier": pair.carrier.on,
            "operstate": "UP" if pair.carrier.on else "DOWN",
            "mtu": end.mtu,
            "address": end.address,
        }

    def _stats(self, pair: Pair, end: End, kernel_drops: tuple[int, int]) -> dict[str, Any]:
        c = pair.counters(end, kernel_drops)
        return {
            "ifname": end.name,
            "netns": self._ns_name(end),
            "peer": pair.peer_of(end).name,
            "rx_packets": c.rx_packets,
            "rx_bytes": c.rx_bytes,
            "tx_packets": c.tx_packets,
            "tx_bytes": c.tx_bytes,
            "rx_dropped": c.rx_dropped,
            "tx_dropped": c.tx_dropped,
            "drops": c.drops,
            "carrier_changes": pair.carrier.changes,
            "carrier_up_count": pair.carrier.up_count,
            "carrier_down_count": pair.carrier.down_count,
        }

    # -- following the ends ------------------------------------------------------------------

    def _on_events(self) -> None:
        for ev in self._watch.drain():
            log.debug("event %s", ev)
            if ev.kind is Kind.NEWLINK:
                self._on_newlink(ev)
            elif ev.kind is Kind.DELLINK:
                end = self._by_key.pop((ev.nsid, ev.index), None)
                if end is not None:
                    self._relocate(end)  # moved to another namespace, or deleted
                else:
                    self._stray(ev)
            elif ev.kind is Kind.DELNSID:
                for end in [e for e in self._pair_of if e.nsid == ev.nsid]:
                    self._relocate(end)
            elif ev.kind is Kind.OVERRUN:
                log.warning("netlink event queue overran; looking up every end again")
                for end in list(self._pair_of):
                    self._relocate(end)

    def _on_newlink(self, ev: LinkEvent) -> None:
        end = self._by_key.get((ev.nsid, ev.index))
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
            self._update_carrier(self._pair_of[end])

    def _stray(self, ev: LinkEvent) -> None:
        if self._lookups:
            self._stray_seq += 1
            self._strays[(ev.nsid, ev.index)] = (self._stray_seq, ev)

    def _update_carrier(self, pair: Pair) -> None:
        if pair.closed or not pair.carrier.update(pair.a.up, pair.b.up):
            return
        on = pair.carrier.on
        for end in pair.ends():
            try:
                end.tap.set_carrier(on)
            except OSError:
                self._relocate(end)  # most likely gone: the lookup will tell
        log.info("pair %s <-> %s carrier %s", pair.a.name, pair.b.name, "up" if on else "down")

    def _relocate(self, end: End) -> None:
        pair = self._pair_of.get(end)
        if pair is None or pair.closed:
            return
        if self._by_key.get(end.key) is end:
            del self._by_key[end.key]
        end.stale = True
        if not end.locating:
            end.locating = True
            self._spawn(self._locate(pair, end))

    async def _locate(self, pair: Pair, end: End) -> None:
        """Find where an end is now (it moved, or may be gone) and register it there.
        _relocate() marked it locating when it started this."""
        try:
            while end.stale and not pair.closed:
                end.stale = False
                # Unregistered while the lookup runs: events about its new place become strays
                # and are applied over the answer below, since they are newer than it.
                if self._by_key.get(end.key) is end:
                    del self._by_key[end.key]
                start = self._stray_seq
                self._lookups += 1
                try:
                    loc: Location | None = await self._call(_follow, end.tap, end.ns_inode)
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
                self._by_key[end.key] = end
                if loc.ns_inode != old_inode:
                    log.info("%s moved to %s", end.name, self._ns_label(end))
        except OSError as exc:
            log.error("cannot follow %s: %s", end.name, exc)
            await self._destroy(pair, f"{end.name} could not be followed")
            return
        finally:
            end.locating = False
        self._update_carrier(pair)

    def _on_gone(self, end: End, exc: OSError) -> None:
        pair = self._pair_of.get(end)
        if pair is None or pair.closed:
            return
        self._stop_relay(pair)
        why = "was deleted" if exc.errno in (errno.EBADFD, errno.EFAULT) else f"failed: {exc}"
        self._spawn(self._destroy(pair, f"{end.name} {why}"))

    def _stop_relay(self, pair: Pair) -> None:
        loop = asyncio.get_running_loop()
        for end in pair.ends():
            if not end.tap.closed:
                loop.remove_reader(end.fd)

    async def _destroy(self, pair: Pair, why: str, keep: bool = False) -> None:
        """Remove a pair: both ends deleted (explicitly, so it is done when this returns).
        With keep, only let go of them: persistent TAPs stay, without carrier."""
        if pair.closed:
            return
        self._stop_relay(pair)
        pair.closed = True
        self.pairs.remove(pair)
        for end in pair.ends():
            self._pair_of.pop(end, None)
            if self._by_key.get(end.key) is end:
                del self._by_key[end.key]
        for ident, (_, managed) in list(self._managed.items()):
            if managed is pair:
                del self._managed[ident]
        if keep:
            for end in pair.ends():
                end.tap.close()  # a persistent TAP stays, and loses carrier
            log.info("pair %s <-> %s left in place (persistent): %s", pair.a.name, pair.b.name, why)
            return
        await self._call(_delete_pair, pair.a.tap, pair.b.tap)
        log.info("pair %s <-> %s removed: %s", pair.a.name, pair.b.name, why)


# -- worker-thread functions (blocking) --------------------------------------------------------


def _create_pair(
    nl: Netlink, spec: PairSpec, caller_pid: int, own_inode: int, persist: bool = False
) -> tuple[list[Tap], list[Location]]:
    taps: list[Tap] = []
    try:
        for want in (spec.end, spec.peer):
            ns_fd = netns.open_netns(want.netns if want.netns else str(caller_pid))
            try:
                here = netns.inode_of_fd(ns_fd) == own_inode
                # An end bound elsewhere is made under a unique scratch name, so that it cannot
                # clash with names in the daemon's namespace, and renamed as it moves.
                tap = Tap(want.name if here else "tvtmp" + secrets.token_hex(4))
                taps.append(tap)
                nl.place(tap, want.name, None if here else ns_fd, want.mtu, want.address)
                nl.set_noqueue(tap)
                if persist:
                    tap.set_persist(True)
            finally:
                os.close(ns_fd)
        locs = []
        for tap in taps:
            loc = nl.locate(tap)
            if loc is None:
                raise PlaceError(errno.ENODEV, "an end vanished while being created")
            locs.append(loc)
        return taps, locs
    except BaseException:
        for tap in taps:
            tap.close()
        raise


def _reattach_pair(
    nl: Netlink, spec: PairSpec, own_inode: int
) -> tuple[list[Tap], list[Location]] | None:
    """Attach to a persistent pair left by an earlier daemon, from inside each end's namespace
    (opening /dev/net/tun elsewhere would make a new TAP there). None when the pair is not
    there whole: a lone end is deleted, and the caller makes the pair anew. The fd opened
    inside the namespace keeps it alive: `ip netns del` no longer destroys a persistent pair."""
    found: list[bool | None] = []
    for want in (spec.end, spec.peer):
        with netns.inside(want.netns or str(os.getpid())):
            found.append(nl.persistent_tap_here(want.name))
    if found == [True, True]:
        taps: list[Tap] = []
        try:
            for want in (spec.end, spec.peer):
                with netns.inside(want.netns or str(os.getpid())):
                    taps.append(Tap(want.name, reattach=True))
            locs = [nl.locate(t) for t in taps]
            if all(loc is not None for loc in locs):
                return taps, [loc for loc in locs if loc is not None]
        except BaseException:
            for t in taps:
                t.close()
            raise
        for t in taps:
            t.close()
        return None
    for want, there in zip((spec.end, spec.peer), found, strict=True):
        if there:  # half a pair: remove it, as veth would never leave one
            with netns.inside(want.netns or str(os.getpid())):
                lone = Tap(want.name, reattach=True)
                lone.set_persist(False)
                lone.close()
    return None


def _ensure_netns(nl: Netlink, name: str) -> None:
    """`create_netns = true`: make the namespace as `ip netns add` does, if it is missing."""
    if os.path.exists(netns.path_of(name)):
        return
    if not netns.mounts_propagate_out():
        # Under systemd's ProtectSystem= the daemon's /run/netns is a slave mount: the bind
        # mount `ip netns add` makes would stay in the unit, and the name be unusable outside.
        raise PlaceError(
            errno.EPERM,
            f"cannot create namespace {name} from a private mount "
            f"namespace (a sandboxed unit): create it beforehand, e.g. "
            f"ExecStartPre=+/usr/sbin/ip netns add {name}",
        )
    proc = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True, timeout=30)
    if proc.returncode != 0 and not os.path.exists(netns.path_of(name)):
        raise PlaceError(errno.EIO, f"cannot create namespace {name}: {proc.stderr.strip()}")


def _configure_pair(
    nl: Netlink, tap_a: Tap, tap_b: Tap, old: PairConfig | None, new: PairConfig
) -> None:
    """Bring both ends' MTU, addresses and admin state to what the configuration says."""
    for tap, before, after in (
        (tap_a, old.end if old else None, new.end),
        (tap_b, old.peer if old else None, new.peer),
    ):
        _configure_end(nl, tap, before, after)


def _configure_end(nl: Netlink, tap: Tap, before: EndConfig | None, after: EndConfig) -> None:
    had = set(before.addresses) if before else set()
    want = set(after.addresses)
    mtu = after.spec.mtu if before is None or before.spec.mtu != after.spec.mtu else None
    up = after.up if before is None or before.up != after.up else None
    nl.configure_inside(tap, mtu, tuple(sorted(want - had)), tuple(sorted(had - want)), up)


def _follow(nl: Netlink, tap: Tap, old_inode: int) -> Location | None:
    """Where the end is now; in a namespace new to it, give it veth's qdisc again."""
    loc = nl.locate(tap)
    if loc is not None and loc.ns_inode != old_inode:
        nl.set_noqueue(tap)
    return loc


def _kernel_drops(nl: Netlink, keys: list[tuple[int | None, int]]) -> list[tuple[int, int]]:
    return [nl.kernel_drops(nsid, index) for nsid, index in keys]


def _delete_pair(nl: Netlink, *taps: Tap) -> None:
    for tap in taps:
        try:
            loc = nl.locate(tap)
            if loc is not None:
                nl.delete(loc)
        except OSError as exc:
            log.warning("deleting an end: %s", exc)
        finally:
            tap.close()


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
