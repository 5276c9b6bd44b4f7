"""Control requests to the kernel's rtnetlink (create, move, look up, delete).

These calls are blocking: the daemon runs them in one worker thread of its own (see
daemon/worker.py). Every lookup of another namespace goes through its nsid from here: no
socket is opened inside it. Requests that rtnetlink cannot target at another namespace
(qdiscs, addresses) are made from inside it, for that moment only.
"""

import contextlib
import errno
import logging
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass

from tapveth.kernel import netns
from tapveth.kernel.rtnl import Link, NetlinkError, Rtnl
from tapveth.kernel.tap import Tap

log = logging.getLogger("tapveth")

TUN_TYPE_TAP = 2  # IFLA_TUN_TYPE of a TAP (IFF_TAP)


class PlaceError(OSError):
    """An end could not be configured or moved where the user asked; the message says why."""


class Unsettled(OSError):
    """The end exists (its fd says so) but kept moving or being renamed while it was looked
    up: ask again later. Never a reason to think it was deleted."""


class _Transient(OSError):
    """One attempt of a lookup failed in a way the next attempt may not."""


# A lookup that races with moves asks again, pausing a little longer each time (a move holds
# rtnl for ~16 ms), up to LOCATE_TRIES times; then the caller retries later.
LOCATE_TRIES = 40
LOCATE_PAUSE = 0.0005
LOCATE_PAUSE_MAX = 0.005


@dataclass(frozen=True, slots=True)
class Location:
    """Where an end is now and its state there. nsid None: the daemon's own namespace."""

    nsid: int | None
    index: int
    name: str
    up: bool
    mtu: int
    address: str
    ns_inode: int
    carrier_changes: int = 1
    qdisc: str = ""

    @property
    def key(self) -> tuple[int | None, int]:
        """How link events name this place: (nsid, ifindex)."""
        return (self.nsid, self.index)


class Netlink:
    """Blocking rtnetlink calls; one instance per worker thread."""

    def __init__(self) -> None:
        self.rtnl = Rtnl()
        self.own_inode = netns.own_inode()

    def close(self) -> None:
        self.rtnl.close()

    def place(
        self,
        tap: Tap,
        name: str,
        ns_fd: int | None,
        mtu: int | None,
        address: str | None,
        txqueuelen: int | None = None,
        alias: str | None = None,
        gso_max_segs: int | None = None,
    ) -> None:
        """Give a freshly opened TAP its MTU, MAC, queue length and (for a tunnel end) the
        most segments the stack may hand it in one super-frame, then move it into ns_fd (None:
        stay) with its final name, in one RTM_NEWLINK as `ip link set … netns … name …`
        would."""
        try:
            index = socket.if_nametoindex(tap.ifname())
        except OSError:
            raise PlaceError(errno.ENODEV, "a new TAP vanished while being set up") from None
        # One request: the kernel moves the device first, then applies the rest there.
        rename = ns_fd is not None or tap.ifname() != name
        try:
            if (mtu, address, txqueuelen, alias, ns_fd, gso_max_segs) != (None,) * 6 or rename:
                self.rtnl.link_set(
                    index,
                    mtu=mtu,
                    address=address,
                    txqlen=txqueuelen,
                    alias=alias,
                    net_ns_fd=ns_fd,
                    name=name if rename else None,
                    gso_max_segs=gso_max_segs,
                )
        except NetlinkError as exc:
            if exc.code == errno.EEXIST:
                raise PlaceError(exc.code, f"interface name {name!r} is already taken") from None
            if exc.code == errno.EADDRNOTAVAIL:
                raise PlaceError(exc.code, f"MAC address {address} is not usable") from None
            raise PlaceError(exc.code, f"cannot set up {name!r}: {os.strerror(exc.code)}") from None

    def locate(self, tap: Tap) -> Location | None:
        """Find where the TAP behind this fd lives now and its state there.

        None only when the kernel says the device is gone (the fd reports EBADFD). A lookup
        can race with moves and renames made meanwhile (the name and namespace the fd gives are
        read one after the other, the RTM_GETLINK by name comes later): an answer counts only
        when the fd names the same place before and after it, else it is asked again.
        Unsettled if the end keeps moving for the whole of the bounded retries."""
        last: BaseException | None = None
        for attempt in range(LOCATE_TRIES):
            if attempt:
                time.sleep(min(LOCATE_PAUSE * attempt, LOCATE_PAUSE_MAX))  # let the mover finish
            try:
                where = self._where(tap, with_nsid=True)
                if where is None:
                    return None
                name, inode, nsid = where
                try:
                    # A name need not be UTF-8: it goes back as the bytes the fd gave.
                    msg = self.rtnl.link_get(name=name, nsid=nsid, stats=False)
                except NetlinkError as exc:
                    # ENODEV: moved or renamed since the fd was asked. EINVAL/ENOENT: the nsid
                    # went with a dying namespace. Ask the fd again either way.
                    last = exc
                    continue
                again = self._where(tap, with_nsid=False)
                if again is None:
                    return None
                if again[:2] != (name, inode) or not _is_tap(msg):
                    last = OSError(errno.EAGAIN, f"{name} moved during the lookup")
                    continue  # it moved or was renamed while we looked: what we got may be stale
            except _Transient as exc:
                last = exc
                continue
            if attempt:
                log.debug("%s located after %d attempts (last miss: %s)", name, attempt + 1, last)
            return Location(
                nsid=nsid,
                index=msg.index,
                name=name,
                up=msg.up,
                mtu=msg.mtu,
                address=msg.address,
                ns_inode=inode,
                carrier_changes=msg.carrier_changes or 1,
                qdisc=msg.qdisc,
            )
        raise Unsettled(errno.EAGAIN, f"the end kept moving while it was looked up ({last})")

    def _where(self, tap: Tap, with_nsid: bool) -> tuple[str, int, int | None] | None:
        """(name, namespace inode, nsid) of the device as its fd says now; None if the
        device is gone. _Transient when the namespace cannot be asked right now."""
        try:
            name = tap.ifname()
            ns_fd = tap.netns_fd()
        except OSError as exc:
            if exc.errno in (errno.EBADFD, errno.EBADF):
                return None  # tun detached the fd: the device was unregistered
            # EINVAL from TUNGETDEVNETNS: its namespace is being torn down (the device goes
            # with it, and the fd will say EBADFD), or another transient failure.
            raise _Transient(exc.errno, str(exc)) from None
        try:
            inode = netns.inode_of_fd(ns_fd)
            nsid = None
            if with_nsid and inode != self.own_inode:
                try:
                    nsid = self.nsid_of(ns_fd)
                except NetlinkError as exc:
                    raise _Transient(exc.code, f"nsid: {os.strerror(exc.code)}") from None
        finally:
            os.close(ns_fd)  # holding it would keep the namespace alive
        return name, inode, nsid

    def nsid_of(self, ns_fd: int) -> int:
        """The nsid of a namespace as seen from here, assigning one if it has none yet (without
        it, the event socket would not hear that namespace's link events)."""
        nsid = self.rtnl.get_nsid(ns_fd)
        if nsid is None:
            try:
                self.rtnl.set_nsid(ns_fd)
            except NetlinkError as exc:
                if exc.code != errno.EEXIST:  # someone assigned one meanwhile
                    raise
            nsid = self.rtnl.get_nsid(ns_fd)
        if nsid is None:
            raise PlaceError(errno.ENOENT, "cannot get an nsid for a namespace")
        return int(nsid)

    def set_noqueue(self, tap: Tap) -> None:
        """Give the end veth's qdisc, noqueue. A namespace move resets a device's qdisc to the
        default (pfifo_fast for a TAP), so this is done again after every move. Qdisc requests
        cannot target another namespace by nsid: the thread enters it for this one request."""
        try:
            with _inside(tap) as (there, index):
                if index is not None:
                    there.qdisc_replace_root(index, "noqueue")
        except NetlinkError as exc:
            if exc.code not in (errno.ENODEV, errno.EINVAL):
                raise

    def set_gso_max_segs(self, tap: Tap, segs: int) -> None:
        """The most segments the stack may hand the TAP in one super-frame. A tunnel end's
        follows its MTU (vxlan_send.tap_gso_max_segs); a TAP that is gone is left alone."""
        try:
            with _inside(tap) as (there, index):
                if index is not None:
                    there.link_set(index, gso_max_segs=segs)
        except NetlinkError as exc:
            if exc.code != errno.ENODEV:
                raise

    def configure_inside(
        self,
        tap: Tap,
        mtu: int | None,
        add: tuple[str, ...],
        remove: tuple[str, ...],
        up: bool | None,
    ) -> None:
        """Apply an end's MTU, addresses and admin state where it lives (address requests
        cannot target another namespace by nsid: the thread enters it for these requests)."""
        with _inside(tap) as (there, index):
            if index is None:
                raise PlaceError(errno.ENODEV, f"{tap.ifname()} vanished")
            if mtu is not None:
                there.link_set(index, mtu=mtu)
            for cidr in remove:
                addr, plen = cidr.split("/")
                with contextlib.suppress(NetlinkError):
                    there.addr("del", index, addr, int(plen))
            for cidr in add:
                addr, plen = cidr.split("/")
                try:
                    there.addr("add", index, addr, int(plen))
                except NetlinkError as exc:
                    if exc.code != errno.EEXIST:
                        raise PlaceError(
                            exc.code,
                            f"address {cidr} on {tap.ifname()}: {os.strerror(exc.code)}",
                        ) from None
            if up is not None:
                there.link_set(index, up=up)

    def persistent_tap_here(self, name: str) -> bool | None:
        """In the calling thread's namespace: True if `name` is a persistent TAP with a virtio
        header (one this daemon left behind), False if it is something else, None if absent."""
        with Rtnl() as here:
            try:
                msg = here.link_get(name=name, stats=False)
            except NetlinkError:
                return None
        tun = msg.tun_info()
        return tun is not None and tun == (True, TUN_TYPE_TAP)

    def persistent_taps_here(self) -> list[tuple[str, str, int, str, bool]]:
        """In the calling thread's namespace: (name, alias, mtu, address, up) of every
        persistent TAP with an alias (tapveth marks its persistent ends so)."""
        with Rtnl() as here:
            return persistent_taps(here.links(kind="tun"))

    def delete_here(self, name: str) -> None:
        """In the calling thread's namespace: delete the link `name` (absent: nothing to do)."""
        with Rtnl() as here:
            try:
                here.link_del(name=name)
            except NetlinkError as exc:
                if exc.code != errno.ENODEV:
                    raise

    def kernel_drops(self, nsid: int | None, index: int) -> tuple[int, int]:
        """(rx_dropped, tx_dropped) the kernel counted on a TAP itself: qdisc drops while it
        has no carrier, ring overflow, frames its stack had no handler for."""
        try:
            return self.rtnl.link_get(index=index, nsid=nsid).dropped()
        except NetlinkError:
            return (0, 0)

    def delete(self, loc: Location) -> None:
        """Delete an end where locate() just found it (ignored if already gone)."""
        try:
            self.rtnl.link_del(index=loc.index, nsid=loc.nsid)
        except NetlinkError as exc:
            if exc.code not in (errno.ENODEV, errno.EINVAL):
                raise


def persistent_taps(links: list[Link]) -> list[tuple[str, str, int, str, bool]]:
    """(name, alias, mtu, address, up) of the persistent TUN/TAP devices with an alias."""
    out = []
    for msg in links:
        alias = msg.alias
        tun = msg.tun_info()
        if not alias or tun is None or not tun[0]:
            continue
        out.append((msg.name, alias, msg.mtu, msg.address, msg.up))
    return out


def _is_tap(msg: Link) -> bool:
    """The link a lookup by name found is a TAP (a device of someone else's that took the
    name meanwhile is not ours)."""
    return msg.kind == "tun"


@contextlib.contextmanager
def _inside(tap: Tap) -> Iterator[tuple[Rtnl, int | None]]:
    """This thread inside the TAP's namespace, with a netlink socket there and the TAP's
    ifindex there (None if it is not found), for requests that cannot target a namespace by
    nsid (qdiscs, addresses). The namespace is held only for the duration."""
    ns_fd = tap.netns_fd()
    try:
        with netns.entered(ns_fd), Rtnl() as there:
            try:
                index: int | None = there.link_get(name=tap.ifname(), stats=False).index
            except NetlinkError as exc:
                if exc.code != errno.ENODEV:
                    raise
                index = None
            yield there, index
    finally:
        os.close(ns_fd)
