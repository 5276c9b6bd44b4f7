"""Control requests to the kernel's rtnetlink (create, move, look up, delete), through pyroute2.

pyroute2's asyncio transport does not run on uvloop, so these calls are blocking and the daemon
runs them in one worker thread of its own, which gets a plain asyncio loop for pyroute2 (the
daemon never calls uvloop.install(), which would hand uvloop to that thread too). Every lookup
of another namespace goes through its nsid from here: no socket is opened inside it.
"""

import contextlib
import errno
import logging
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from tapveth.core import ifname
from tapveth.kernel import netns
from tapveth.kernel.tap import Tap

log = logging.getLogger("tapveth")

IFF_UP = 0x1
NSID_NOT_ASSIGNED = -1


class PlaceError(OSError):
    """An end could not be configured or moved where the user asked; the message says why."""


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

    @property
    def key(self) -> tuple[int | None, int]:
        """How link events name this place: (nsid, ifindex)."""
        return (self.nsid, self.index)


class Netlink:
    """Blocking rtnetlink calls; one instance per worker thread."""

    # pyroute2 0.9.x keeps state of every finished request in the IPRoute instance (about
    # 1.7 KiB a request here; upstream issue svinota/pyroute2#1385): a long-lived daemon
    # would grow without end. A fresh instance every so often releases it.
    RECYCLE_EVERY = 64

    def __init__(self) -> None:
        self.ipr = IPRoute()
        self.own_inode = netns.own_inode()
        self._calls = 0

    def tick(self) -> None:
        """Count one unit of work; every RECYCLE_EVERY, replace the IPRoute instance. The new
        one is opened before the old one is closed, and if it cannot be (EMFILE, ENOBUFS...)
        the old one stays in use and the next call tries again: the worker is never left
        without a working socket, and this never raises."""
        self._calls += 1
        if self._calls < self.RECYCLE_EVERY:
            return
        # An IPRoute that fails half-way (EMFILE on its event loop's self-pipe) leaves a
        # half-made loop whose finaliser prints a traceback: try only with fds to spare.
        if not _fds_to_spare(8):
            self._calls = self.RECYCLE_EVERY - 8  # try again a few calls later
            log.debug("keeping the netlink socket for now: no file descriptors to spare")
            return
        try:
            fresh = IPRoute()
        except Exception as exc:  # pyroute2 raises OSError, or its own errors, on any failure
            self._calls = self.RECYCLE_EVERY - 8
            log.debug("keeping the netlink socket for now: %s", exc)
            return
        old, self.ipr = self.ipr, fresh
        self._calls = 0
        try:
            old.close()
        except Exception as exc:
            log.warning("closing a replaced netlink socket: %s", exc)

    def close(self) -> None:
        self.ipr.close()

    def place(
        self,
        tap: Tap,
        name: str,
        ns_fd: int | None,
        mtu: int | None,
        address: str | None,
        txqueuelen: int | None = None,
        alias: str | None = None,
    ) -> None:
        """Give a freshly opened TAP its MTU, MAC and queue length, then move it into ns_fd
        (None: stay) with its final name, in one RTM_NEWLINK as `ip link set … netns … name …`
        would."""
        try:
            index = socket.if_nametoindex(tap.ifname())
        except OSError:
            raise PlaceError(errno.ENODEV, "a new TAP vanished while being set up") from None
        # One request: the kernel moves the device first, then applies the rest there.
        attrs: dict[str, object] = {}
        if mtu is not None:
            attrs["mtu"] = mtu
        if address is not None:
            attrs["address"] = address
        if txqueuelen is not None:
            attrs["txqlen"] = txqueuelen
        if alias is not None:
            attrs["ifalias"] = alias
        if ns_fd is not None:
            attrs["net_ns_fd"] = ns_fd
        if ns_fd is not None or tap.ifname() != name:
            attrs["ifname"] = name
        try:
            if attrs:
                self.ipr.link("set", index=index, **attrs)
        except NetlinkError as exc:
            if exc.code == errno.EEXIST:
                raise PlaceError(exc.code, f"interface name {name!r} is already taken") from None
            if exc.code == errno.EADDRNOTAVAIL:
                raise PlaceError(exc.code, f"MAC address {address} is not usable") from None
            raise PlaceError(exc.code, f"cannot set up {name!r}: {os.strerror(exc.code)}") from None

    def locate(self, tap: Tap) -> Location | None:
        """Find where the TAP behind this fd lives now and its state; None if it is gone."""
        try:
            name = tap.ifname()
            ns_fd = tap.netns_fd()
        except OSError as exc:
            # EINVAL from TUNGETDEVNETNS: the end's namespace is being dismantled (its
            # refcount is zero, get_net_ns() refuses it) and the end goes with it.
            if exc.errno in (errno.EBADFD, errno.EBADF, errno.ENODEV, errno.EFAULT, errno.EINVAL):
                return None
            raise
        try:
            inode = netns.inode_of_fd(ns_fd)
            nsid = None if inode == self.own_inode else self.nsid_of(ns_fd)
        finally:
            os.close(ns_fd)  # holding it would keep the namespace alive
        try:
            msgs = self._link("get", nsid, ifname=ifname.encode(name))
        except NetlinkError as exc:
            # EINVAL for a request by nsid: the nsid no longer names a namespace, which is
            # being dismantled (`ip netns del`) and takes the end with it.
            if exc.code == errno.ENODEV or (exc.code == errno.EINVAL and nsid is not None):
                return None
            raise
        msg = msgs[0]
        return Location(
            nsid=nsid,
            index=msg["index"],
            name=name,
            up=bool(msg["flags"] & IFF_UP),
            mtu=msg.get_attr("IFLA_MTU"),
            address=msg.get_attr("IFLA_ADDRESS") or "",
            ns_inode=inode,
            carrier_changes=msg.get_attr("IFLA_CARRIER_CHANGES") or 1,
        )

    def nsid_of(self, ns_fd: int) -> int:
        """The nsid of a namespace as seen from here, assigning one if it has none yet (without
        it, the event socket would not hear that namespace's link events)."""
        got = self.ipr.get_netnsid(fd=ns_fd)
        nsid = got["nsid"] if got else None
        if nsid is None or nsid == NSID_NOT_ASSIGNED or nsid >= 0xFFFFFFFF:
            try:
                self.ipr.set_netnsid(fd=ns_fd)
            except NetlinkError as exc:
                if exc.code != errno.EEXIST:  # someone assigned one meanwhile
                    raise
            got = self.ipr.get_netnsid(fd=ns_fd)
            nsid = got["nsid"] if got else None
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
                    there.tc("replace", "noqueue", index)
        except NetlinkError as exc:
            if exc.code not in (errno.ENODEV, errno.EINVAL):
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
                there.link("set", index=index, mtu=mtu)
            for cidr in remove:
                addr, plen = cidr.split("/")
                with contextlib.suppress(NetlinkError):
                    there.addr("del", index=index, address=addr, prefixlen=int(plen))
            for cidr in add:
                addr, plen = cidr.split("/")
                try:
                    there.addr("add", index=index, address=addr, prefixlen=int(plen))
                except NetlinkError as exc:
                    if exc.code != errno.EEXIST:
                        raise PlaceError(
                            exc.code,
                            f"address {cidr} on {tap.ifname()}: {os.strerror(exc.code)}",
                        ) from None
            if up is not None:
                there.link("set", index=index, state="up" if up else "down")

    def persistent_tap_here(self, name: str) -> bool | None:
        """In the calling thread's namespace: True if `name` is a persistent TAP with a virtio
        header (one this daemon left behind), False if it is something else, None if absent."""
        with IPRoute() as here:
            try:
                msg = here.link("get", ifname=name)[0]
            except NetlinkError:
                return None
        info = msg.get_attr("IFLA_LINKINFO")
        data = info.get_attr("IFLA_INFO_DATA") if info else None
        if not info or info.get_attr("IFLA_INFO_KIND") != "tun" or data is None:
            return False
        return bool(data.get_attr("IFLA_TUN_PERSIST")) and data.get_attr("IFLA_TUN_TYPE") == 2

    def persistent_taps_here(self) -> list[tuple[str, str, int, str, bool]]:
        """In the calling thread's namespace: (name, alias, mtu, address, up) of every
        persistent TAP with an alias (tapveth marks its persistent ends so)."""
        out = []
        with IPRoute() as here:
            links = here.get_links()
        for msg in links:
            alias = msg.get_attr("IFLA_IFALIAS")
            info = msg.get_attr("IFLA_LINKINFO")
            data = info.get_attr("IFLA_INFO_DATA") if info else None
            if not alias or not info or info.get_attr("IFLA_INFO_KIND") != "tun" or not data:
                continue
            if not data.get_attr("IFLA_TUN_PERSIST"):
                continue
            out.append(
                (
                    str(msg.get_attr("IFLA_IFNAME")),
                    str(alias),
                    int(msg.get_attr("IFLA_MTU")),
                    str(msg.get_attr("IFLA_ADDRESS")),
                    bool(msg["flags"] & IFF_UP),
                )
            )
        return out

    def delete_here(self, name: str) -> None:
        """In the calling thread's namespace: delete the link `name` (absent: nothing to do)."""
        with IPRoute() as here:
            try:
                here.link("del", ifname=name)
            except NetlinkError as exc:
                if exc.code != errno.ENODEV:
                    raise

    def kernel_drops(self, nsid: int | None, index: int) -> tuple[int, int]:
        """(rx_dropped, tx_dropped) the kernel counted on a TAP itself: qdisc drops while it
        has no carrier, ring overflow, frames its stack had no handler for."""
        try:
            msg = self._link("get", nsid, index=index)[0]
        except NetlinkError:
            return (0, 0)
        stats = msg.get_attr("IFLA_STATS64") or {}
        return (int(stats.get("rx_dropped", 0)), int(stats.get("tx_dropped", 0)))

    def _link(self, command: str, nsid: int | None, **kw: Any) -> Any:
        """A link request in the daemon's namespace (nsid None) or another one, by its nsid."""
        if nsid is not None:
            kw["if_netnsid"] = nsid
        return self.ipr.link(command, **kw)

    def delete(self, loc: Location) -> None:
        """Delete an end where locate() just found it (ignored if already gone)."""
        try:
            self._link("del", loc.nsid, index=loc.index)
        except NetlinkError as exc:
            if exc.code not in (errno.ENODEV, errno.EINVAL):
                raise


def _fds_to_spare(n: int) -> bool:
    """Whether this process can open n more file descriptors right now."""
    got: list[int] = []
    try:
        for _ in range(n):
            got.append(os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC))
        return True
    except OSError:
        return False
    finally:
        for fd in got:
            os.close(fd)


@contextlib.contextmanager
def _inside(tap: Tap) -> Iterator[tuple[Any, int | None]]:
    """This thread inside the TAP's namespace, with a netlink socket there and the TAP's
    ifindex there (None if it is not found), for requests that cannot target a namespace by
    nsid (qdiscs, addresses). The namespace is held only for the duration."""
    ns_fd = tap.netns_fd()
    try:
        with netns.entered(ns_fd), IPRoute() as there:
            found = there.link_lookup(ifname=ifname.encode(tap.ifname()))
            yield there, (found[0] if found else None)
    finally:
        os.close(ns_fd)
