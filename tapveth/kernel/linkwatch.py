"""Link events of every namespace, from one NETLINK_ROUTE socket in the daemon's namespace.

NETLINK_LISTEN_ALL_NSID delivers the events of every namespace that has an nsid here, and says
which in a control message. Unlike a socket per namespace, it pins no namespace, so
`ip netns del` still destroys a namespace (and the end in it) as it does for a kernel veth.
"""

import errno
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum

from pyroute2.netlink.rtnl.marshal import MarshalRtnl

SOL_NETLINK = 270
NETLINK_ADD_MEMBERSHIP = 1
NETLINK_LISTEN_ALL_NSID = 8
RTNLGRP_LINK = 1
RTNLGRP_NSID = 28
RTM_NEWLINK = 16
RTM_DELLINK = 17
RTM_DELNSID = 89
IFF_UP = 0x1
SO_RCVBUFFORCE = 33


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

    def __init__(self) -> None:
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
        self._marshal = MarshalRtnl()
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
        for msg in self._marshal.parse(data):
            mtype = msg["header"]["type"]
            if mtype in (RTM_NEWLINK, RTM_DELLINK):
                yield LinkEvent(
                    Kind.NEWLINK if mtype == RTM_NEWLINK else Kind.DELLINK,
                    nsid,
                    index=msg["index"],
                    name=_text(msg.get_attr("IFLA_IFNAME")),
                    up=bool(msg["flags"] & IFF_UP),
                    mtu=msg.get_attr("IFLA_MTU") or 0,
                    address=msg.get_attr("IFLA_ADDRESS") or "",
                )
            elif mtype == RTM_DELNSID:
                yield LinkEvent(Kind.DELNSID, msg.get_attr("NETNSA_NSID"))

    def close(self) -> None:
        self.sock.close()


def _text(name: str | bytes | None) -> str:
    """An interface name as text: pyroute2 gives the bytes of a name that is not UTF-8; they
    are kept as surrogates, as the TAP's own fd reports them."""
    if isinstance(name, bytes):
        return name.decode(errors="surrogateescape")
    return name or ""
