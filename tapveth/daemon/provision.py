"""Blocking pair operations, run in the netlink worker thread: create, re-attach, configure,
follow and delete the two TAPs of a pair."""

import errno
import logging
import os
import secrets
import subprocess

from tapveth.core import orphans
from tapveth.core.config import EndConfig, PairConfig, VxlanPeerConfig
from tapveth.core.linkspec import EndSpec, PairSpec
from tapveth.core.orphans import OrphanEnd
from tapveth.kernel import netns
from tapveth.kernel.netlink import Location, Netlink, PlaceError, Unsettled
from tapveth.kernel.netns import NetnsError
from tapveth.kernel.rtnl import NetlinkError
from tapveth.kernel.tap import Tap

log = logging.getLogger("tapveth")


def create_pair(
    nl: Netlink,
    spec: PairSpec,
    caller_ns: int | None,
    own_inode: int,
    persist: bool = False,
    owner: str = "",
) -> tuple[list[Tap], list[Location]]:
    """Both TAPs of a new pair, each placed in its namespace; an end without netns goes to
    `caller_ns` (an fd; None: the daemon's own namespace). A persistent end is marked with its
    peer and `owner`, the daemon's socket (see core/orphans.py)."""
    assert isinstance(spec.peer, EndSpec), (
        "a vxlan end is made by create_ends and vxlan_end.open_underlay"
    )
    return create_ends(nl, (spec.end, spec.peer), caller_ns, own_inode, persist, owner)


def create_ends(
    nl: Netlink,
    wants: tuple[EndSpec, ...],
    caller_ns: int | None,
    own_inode: int,
    persist: bool = False,
    owner: str = "",
    gso_max_segs: int | None = None,
) -> tuple[list[Tap], list[Location]]:
    """Make the TAP of each end asked for, in its namespace, under its final name. With two
    ends and persist, each is marked with its peer's name and `owner`; gso_max_segs bounds
    the super-frames the stack hands each TAP (None: the kernel's default)."""
    taps: list[Tap] = []
    try:
        for i, want in enumerate(wants):
            if want.netns is not None:
                ns_fd = netns.open_netns(want.netns)
            elif caller_ns is not None:
                ns_fd = os.dup(caller_ns)
            else:
                ns_fd = netns.open_netns(str(os.getpid()))
            try:
                here = netns.inode_of_fd(ns_fd) == own_inode
                # An end bound elsewhere is made under a unique scratch name, so that it cannot
                # clash with names in the daemon's namespace, and renamed as it moves.
                tap = Tap(want.name if here else "tvtmp" + secrets.token_hex(4))
                taps.append(tap)
                peer = wants[1 - i] if len(wants) == 2 else None
                nl.place(
                    tap,
                    want.name,
                    None if here else ns_fd,
                    want.mtu,
                    want.address,
                    want.txqueuelen,
                    orphans.alias_for(peer.name, owner) if persist and peer else None,
                    gso_max_segs,
                )
                nl.set_noqueue(tap)
                if want.up:  # `ip link add … up`: admin-up once in place
                    nl.configure_inside(tap, None, (), (), True)
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


def reattach_pair(
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


def find_orphans(
    nl: Netlink, held: set[tuple[int, str]], owner: str, recorded: list[str] | None
) -> list[OrphanEnd]:
    """Persistent TAPs this daemon (`owner`: its socket) made, in its namespace and the named
    ones `recorded` says its persistent ends were in (None: every named one), that none of
    its pairs holds (`held`: (namespace inode, name) of its ends). One link dump a namespace,
    of its TUN/TAP devices only."""
    try:
        names = sorted(os.listdir(netns.NETNS_DIR))
    except OSError:
        names = []
    found = []
    seen: set[int] = set()
    for name in [None, *orphans.to_scan(recorded, names)]:
        try:
            with netns.inside(name or str(os.getpid())):
                inode = os.stat("/proc/thread-self/ns/net").st_ino
                if inode in seen:  # two names for one namespace
                    continue
                seen.add(inode)
                taps = nl.persistent_taps_here()
        except (NetnsError, OSError) as exc:
            log.debug("looking for left-over pairs in %s: %s", name, exc)
            continue
        for ifname, alias, mtu, address, up in taps:
            peer = orphans.peer_from_alias(alias, owner)
            if peer is not None and (inode, ifname) not in held:
                found.append(OrphanEnd(ifname, name, peer, mtu, address, up))
    return found


def delete_orphan(nl: Netlink, end: OrphanEnd) -> None:
    """Delete a left-over persistent TAP by name where it was found (gone already: done)."""
    try:
        with netns.inside(end.netns or str(os.getpid())):
            nl.delete_here(end.name)
    except NetnsError:
        return


def ensure_netns(nl: Netlink, name: str) -> None:
    """`create_netns = true`: make the namespace as `ip netns add` does, if it is missing."""
    if os.path.exists(netns.path_of(name)):
        return
    if not netns.mounts_propagate_out():
        # Under systemd's ProtectSystem= the daemon's /run/netns is a slave mount: the bind
        # mount `ip netns add` makes would stay in the unit, and the name be unusable outside.
        raise PlaceError(
            errno.EPERM,
            f"cannot create namespace {name} from a private mount namespace (a sandboxed "
            f"unit): create it outside the sandbox first: systemctl enable --now "
            f"tapveth-netns@{name}.service",
        )
    proc = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True, timeout=30)
    if proc.returncode != 0 and not os.path.exists(netns.path_of(name)):
        raise PlaceError(errno.EIO, f"cannot create namespace {name}: {proc.stderr.strip()}")


def configure_pair(
    nl: Netlink, tap_a: Tap, tap_b: Tap | None, old: PairConfig | None, new: PairConfig
) -> None:
    """Bring both ends' MTU, addresses and admin state to what the configuration says (a
    vxlan peer, tap_b None, has no device to configure)."""
    configure_end(nl, tap_a, old.end if old else None, new.end)
    if tap_b is not None:
        before = old.peer if old else None
        assert isinstance(new.peer, EndConfig) and not isinstance(before, VxlanPeerConfig)
        configure_end(nl, tap_b, before, new.peer)


def configure_end(nl: Netlink, tap: Tap, before: EndConfig | None, after: EndConfig) -> None:
    had = set(before.addresses) if before else set()
    want = set(after.addresses)
    mtu = after.spec.mtu if before is None or before.spec.mtu != after.spec.mtu else None
    up = after.up if before is None or before.up != after.up else None
    nl.configure_inside(tap, mtu, tuple(sorted(want - had)), tuple(sorted(had - want)), up)


def follow(nl: Netlink, tap: Tap) -> Location | None:
    """Where the end is now (None: the kernel deleted it). A move resets the qdisc, so
    whenever it is not veth's noqueue it is set again: looking at the qdisc rather than at
    whether the namespace changed also catches a move there and back between two lookups."""
    loc = nl.locate(tap)
    if loc is not None and loc.qdisc != "noqueue":
        nl.set_noqueue(tap)
    return loc


def kernel_drops(nl: Netlink, keys: list[tuple[int | None, int]]) -> list[tuple[int, int]]:
    return [nl.kernel_drops(nsid, index) for nsid, index in keys]


# Attempts to delete an end that keeps moving away from where it was just found.
DELETE_TRIES = 20


def delete_pair(nl: Netlink, *taps: Tap) -> None:
    """Delete both ends, each where it is now. A delete by (nsid, ifindex) that races with a
    move finds nothing there: it is only done once the fd says the device is gone."""
    for tap in taps:
        try:
            for _ in range(DELETE_TRIES):
                try:
                    loc = nl.locate(tap)
                except Unsettled:
                    continue
                if loc is None:
                    break
                nl.delete(loc)
                if tap.gone():
                    break
            else:
                # Without persistence the kernel deletes it when this last fd closes.
                log.warning("an end kept moving while being deleted; closing it")
                tap.set_persist(False)
        except (OSError, NetlinkError) as exc:  # the fd is closed below: the kernel deletes it
            log.warning("deleting an end: %s", exc)
        finally:
            tap.close()  # a non-persistent TAP goes with its last fd in any case
