"""Link events of every namespace, from one NETLINK_ROUTE socket in the daemon's namespace.

NETLINK_LISTEN_ALL_NSID delivers the events of every namespace that has an nsid here, and says
which in a control message. Unlike a socket per namespace, it pins no namespace, so
`ip netns del` still destroys a namespace (and the end in it) as it does for a kernel veth.
"""

import errno
import socket
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import Enum

from tapveth.kernel import rtnl

SOL_NETLINK = 270
NETLINK_ADD_MEMBERSHIP = 1
NETLINK_LISTEN_ALL_NSID = 8
RTNLGRP_LINK = 1
RTNLGRP_NSID = 28
RTM_NEWLINK = 16
RTM_DELLINK = 17
RTM_DELNSID = 89
SO_RCVBUFFORCE = 33
HEADER = struct.Struct("=IH")  # nlmsghdr's length and type
IFINDEX_AT = 16 + 4  # after nlmsghdr, ifinfomsg's family, pad and type come first


class Kind(Enum):
    NEWLINK = "newlink"
    DELLINK = "dellink"
    DELNSID = "delnsid"
    OVERRUN = "overrun"  # the socket lost events (ENOBUFS): every end must be looked up again


@dataclass(frozen=True, slots=True)
class LinkEvent:
    """One link event. nsid None: the daemon's own namespace."""

    kind: Kind
    nsid: int | None
    index: int = 0
    name: str = ""
    up: bool = False
    mtu: int = 0
    address: str = ""


class LinkWatch:
    """A non-blocking event socket; the daemon reads it whenever it is readable, and also just
    before relaying each batch of frames, so MTU and state changes apply to the very next frame."""

    def __init__(self, wanted: Callable[[int | None, int], bool] | None = None) -> None:
        """`wanted(nsid, ifindex)` says which links' events to decode; the others are skipped
        after a look at their header (decoding a message costs ~50x that, and a busy host
        sends many events about links that are not ours)."""
        self._wanted = wanted
        self.sock = socket.socket(
            socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK, socket.NETLINK_ROUTE
        )
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 8 << 20)
        except OSError:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        try:
            self.sock.setsockopt(SOL_NETLINK, NETLINK_LISTEN_ALL_NSID, 1)
        except PermissionError:
            self.sock.close()
            raise PermissionError(
                "hearing link events of every namespace needs CAP_NET_BROADCAST"
            ) from None
        self.sock.bind((0, 1 << (RTNLGRP_LINK - 1)))
        self.sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, RTNLGRP_NSID)
        self._cmsg_space = socket.CMSG_SPACE(4)

    def fileno(self) -> int:
        return self.sock.fileno()

    def drain(self) -> Iterator[LinkEvent]:
        """Every event queued now; returns at once when there is none."""
        while True:
            try:
                data, anc, _, _ = self.sock.recvmsg(1 << 16, self._cmsg_space)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    yield LinkEvent(Kind.OVERRUN, None)
                    continue
                raise
            nsid = None
            for level, ctype, cdata in anc:
                if level == SOL_NETLINK and ctype == NETLINK_LISTEN_ALL_NSID:
                    nsid = struct.unpack("i", cdata[:4])[0]
            yield from self._decode(data, nsid)

    def _decode(self, data: bytes, nsid: int | None) -> Iterator[LinkEvent]:
        if self._wanted is not None:
            data = self._only_wanted(data, nsid)
            if not data:
                return
        for mtype, body in rtnl.messages(data):
            if mtype in (RTM_NEWLINK, RTM_DELLINK) and len(body) >= rtnl.IFINFO.size:
                link = rtnl.link_of(body)
                yield LinkEvent(
                    Kind.NEWLINK if mtype == RTM_NEWLINK else Kind.DELLINK,
                    nsid,
                    index=link.index,
                    name=link.name,
                    up=link.up,
                    mtu=link.mtu,
                    address=link.address,
                )
            elif mtype == RTM_DELNSID and len(body) >= rtnl.RTGEN.size:
                yield LinkEvent(Kind.DELNSID, rtnl.nsid_of(body))

    def _only_wanted(self, data: bytes, nsid: int | None) -> bytes:
        """The messages of a datagram minus the link events of links not wanted."""
        assert self._wanted is not None
        keep = []
        off = 0
        while off + HEADER.size <= len(data):
            length, mtype = HEADER.unpack_from(data, off)
            if length < HEADER.size:
                break
            end = off + ((length + 3) & ~3)
            if mtype in (RTM_NEWLINK, RTM_DELLINK) and length >= IFINDEX_AT + 4:
                index = struct.unpack_from("=i", data, off + IFINDEX_AT)[0]
                if not self._wanted(nsid, index):
                    off = end
                    continue
            keep.append(data[off:end])
            off = end
        return b"".join(keep)

    def close(self) -> None:
        self.sock.close()
