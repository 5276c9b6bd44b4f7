"""Making and removing pairs: both TAPs (or a TAP and a VXLAN tunnel end) made, configured,
moved and relayed, and taken down again. Control requests, the configuration file's pairs,
end tracking and the daemon's stop all go through here."""

import dataclasses
import errno
import functools
import logging
from typing import TYPE_CHECKING

from tapveth.control import STOPPING, ControlError, one_line
from tapveth.core import vxlan
from tapveth.core.linkspec import EndSpec, PairSpec, SpecError
from tapveth.core.rules import DEFAULT_MTU, Carrier
from tapveth.core.vxlanspec import VxlanSpec
from tapveth.daemon import provision, sandbox, vxlan_end
from tapveth.daemon.pair import End, Pair
from tapveth.daemon.worker import TapCloser
from tapveth.kernel import netns
from tapveth.kernel.netlink import PlaceError
from tapveth.kernel.netns import NetnsError
from tapveth.kernel.tap import TapError

if TYPE_CHECKING:
    from tapveth.daemon.service import Daemon

log = logging.getLogger("tapveth")


class PairMaker:
    """Makes pairs (or re-attaches persistent ones) and removes them: the one place a pair
    starts and ends. It takes the daemon, whose relay paths are made only once the loop runs."""

    def __init__(self, daemon: "Daemon") -> None:
        self._d = daemon

    async def create(
        self,
        spec: PairSpec,
        caller_ns: int | None,
        persist: bool = False,
        reattach: bool = False,
        only_reattach: bool = False,
    ) -> Pair:
        """Create a pair (or re-attach to a persistent one): both TAPs made here, configured,
        moved, then relayed. An end without netns goes to `caller_ns` (an fd of the client's
        namespace; None: the daemon's own). only_reattach: a pair that is not there whole is
        not made anew."""
        d = self._d
        if not reattach:
            caller_inode = (
                d.registry.own_inode if caller_ns is None else netns.inode_of_fd(caller_ns)
            )
            for want in (spec.end, spec.peer):
                d.registry.check_free(want, caller_inode)
        if isinstance(spec.peer, VxlanSpec):
            return await self._create_vxlan(spec.end, spec.peer, caller_ns)
        try:
            made = None
            if reattach:
                made = await d.worker.call(provision.reattach_pair, spec, d.registry.own_inode)
            reattached = made is not None
            if made is None and only_reattach:
                raise ControlError("it is gone")
            if made is None:
                made = await d.worker.call(
                    provision.create_pair,
                    spec,
                    caller_ns,
                    d.registry.own_inode,
                    persist,
                    d.socket_path,
                )
        except (SpecError, NetnsError, TapError, PlaceError) as exc:
            raise ControlError(one_line(exc)) from None
        # Any other kernel refusal arrives as an OSError (the worker turns a NetlinkError
        # into a plain one): e.g. EINVAL when a namespace dies during the add.
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE):
                raise ControlError(
                    "too many open files: the daemon's file descriptor limit is reached "
                    "(raise ulimit -n, or LimitNOFILE= in the unit)"
                ) from None
            raise ControlError(f"cannot create the pair: {one_line(exc)}") from None
        taps, locs = made
        if d.stopping and not persist:
            # Made while the daemon began to stop: not kept, and the client is told so.
            await d.worker.call(provision.delete_pair, *taps)
            raise ControlError(f"{STOPPING}: the pair was not made")
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
            d.registry.ns_label(pair.a),
            d.registry.ns_label(pair.b),
        )
        d.events.publish("created", pair, reattached=reattached)
        return pair

    async def _create_vxlan(self, want: EndSpec, far: VxlanSpec, caller_ns: int | None) -> Pair:
        """A pair whose peer is the far end of a VXLAN tunnel: one TAP, and the tunnel's
        sockets in the underlay namespace."""
        d = self._d
        if want.mtu is None:
            # As the kernel's vxlan device: 1500 less the tunnel's overhead (1450 over IPv4).
            overhead = vxlan.OVERHEAD_V6 if far.ipv6 else vxlan.OVERHEAD_V4
            want = dataclasses.replace(want, mtu=DEFAULT_MTU - overhead)
        try:
            underlay = await d.worker.call(vxlan_end.open_underlay, far, caller_ns)
        except OSError as exc:
            if sandbox.refused(exc):
                family = "AF_INET6" if far.ipv6 else "AF_INET"
                raise ControlError(sandbox.explain("the tunnel's UDP sockets", family)) from None
            raise ControlError(one_line(exc)) from None
        except NetnsError as exc:
            raise ControlError(one_line(exc)) from None
        try:
            segs = vxlan_end.tap_gso_max_segs(want.mtu)
            taps, locs = await d.worker.call(
                functools.partial(provision.create_ends, gso_max_segs=segs),
                (want,),
                caller_ns,
                d.registry.own_inode,
            )
        except (SpecError, NetnsError, TapError, PlaceError) as exc:
            underlay.close()
            raise ControlError(one_line(exc)) from None
        except OSError as exc:
            underlay.close()
            raise ControlError(f"cannot create the pair: {one_line(exc)}") from None
        # The tunnel carries wire-sized frames only: the TAP offers TCP segmentation and
        # checksum offload that the vxlan end completes itself (or none: TAPVETH_VXLAN_TSO=0).
        taps[0].set_offloads(vxlan_end.TAP_OFFLOADS)
        end = End(tap=taps[0], name=locs[0].name)
        end.moved_to(locs[0])
        holder: list[Pair] = []
        far_end = vxlan_end.VxlanEnd(
            far,
            underlay,
            on_change=lambda: d.tracker.update_carrier(holder[0]),
            on_gone=d.tracker.on_gone,
            events=d.paths.events,
            on_traffic=d.paths.busy.traffic,
        )
        pair = Pair(end, far_end)
        holder.append(pair)
        self._register(pair)
        d.events.publish("created", pair, reattached=False)
        log.info(
            "pair %s <-> vxlan id %d remote %s dstport %d created (%s, underlay %s)%s",
            end.name,
            far.vni,
            far.remote,
            far.dstport,
            d.registry.ns_label(end),
            d.registry.ns_label(far_end),
            " with bfd" if far.bfd else "",
        )
        return pair

    def _register(self, pair: Pair) -> None:
        """Own the pair and start relaying it."""
        d = self._d
        d.registry.add(pair)
        if isinstance(pair.b, vxlan_end.VxlanEnd):
            pair.b.start(pair.a)
        else:
            d.paths.attach(pair)
        d.tracker.update_carrier(pair)

    def stop_relay(self, pair: Pair) -> None:
        """Stop relaying the pair, and its ends' faults and impairments."""
        d = self._d
        if isinstance(pair.b, vxlan_end.VxlanEnd):
            pair.b.stop()
        else:
            d.paths.detach(pair)
        for e in pair.ends():
            d.faults.stop(e)
            d.impairments.close(e)

    async def destroy(
        self, pair: Pair, why: str, keep: bool = False, closer: TapCloser | None = None
    ) -> None:
        """Remove a pair: both ends deleted (explicitly, so it is done when this returns).
        With keep, only let go of them: persistent TAPs stay, without carrier. With closer (at
        stop), a pair without persistence is deleted by closing its TAPs there, alongside
        others. The pair stays listed (closed) until its ends are gone: `show` never lists a
        pair whose peer is still there, and its names are not free before they are."""
        d = self._d
        if pair.closed:
            return
        self.stop_relay(pair)
        pair.closed = True
        d.events.publish("deleted", pair, why=why)
        if d.configured is not None:
            d.configured.forget(pair)
        if isinstance(pair.b, vxlan_end.VxlanEnd):
            pair.b.close()
        if keep:
            d.registry.remove(pair)
            for end in pair.taps():
                end.tap.close()  # a persistent TAP stays, and loses carrier
            log.info("pair %s <-> %s left in place (persistent): %s", pair.a.name, pair.b.name, why)
            return
        if pair.persist:
            d.requests.forget(pair)  # gone for good: the next daemon must not look for it
        taps = [e.tap for e in pair.taps()]
        try:
            # Listed until its ends are gone: `show` never lists a pair whose peer remains.
            if closer is not None and not pair.persist:
                # A TAP without persistence is deleted by the kernel as its only fd closes,
                # wherever it is now: no lookup, and no move to race with.
                await closer.close(taps)
            else:
                await d.worker.call(provision.delete_pair, *taps)
        finally:
            d.registry.remove(pair)
        log.info("pair %s <-> %s removed: %s", pair.a.name, pair.b.name, why)
