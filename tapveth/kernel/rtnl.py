"""A minimal rtnetlink client: the few requests the daemon makes (links, nsids, a qdisc,
addresses), encoded and decoded by hand over a raw NETLINK_ROUTE socket.

Why not pyroute2: importing any part of it runs its package __init__, which loads nearly the
whole library (~12 MiB of a ~40 MiB daemon, ~75 ms of start-up), and each of its IPRoute
instances runs an asyncio loop of its own and keeps state of every finished request. The
messages the daemon needs are a handful of fixed structs and attributes (rtnetlink(7)).
"""

import errno
import os
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from tapveth.core import ifname as ifnames

NLMSG = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, seq, port
IFINFO = struct.Struct("=BxHiII")  # ifinfomsg: family, type, index, flags, change
IFADDR = struct.Struct("=BBBBI")  # ifaddrmsg: family, prefixlen, flags, scope, index
TCMSG = struct.Struct("=BxxxiIII")  # tcmsg: family, ifindex, handle, parent, info
RTGEN = struct.Struct("=Bxxx")  # rtgenmsg, padded to 4 bytes
RTA = struct.Struct("=HH")  # rtattr: length, type
ERRNO = struct.Struct("=i")

NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_MULTI = 0x2
NLM_F_ACK = 0x4
NLM_F_DUMP = 0x300
NLM_F_REPLACE = 0x100
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
NLA_F_NESTED = 0x8000
NLA_TYPE_MASK = 0x3FFF

RTM_NEWLINK = 16
RTM_DELLINK = 17
RTM_GETLINK = 18
RTM_NEWADDR = 20
RTM_DELADDR = 21
RTM_NEWQDISC = 36
RTM_NEWNSID = 88
RTM_DELNSID = 89
RTM_GETNSID = 90

IFLA_ADDRESS = 1
IFLA_IFNAME = 3
IFLA_MTU = 4
IFLA_QDISC = 6
IFLA_TXQLEN = 13
IFLA_LINKINFO = 18
IFLA_IFALIAS = 20
IFLA_STATS64 = 23
IFLA_NET_NS_FD = 28
IFLA_EXT_MASK = 29
IFLA_CARRIER_CHANGES = 35
IFLA_GSO_MAX_SEGS = 40
IFLA_TARGET_NETNSID = 46
IFLA_INFO_KIND = 1
IFLA_INFO_DATA = 2
IFLA_TUN_TYPE = 3
IFLA_TUN_PERSIST = 6
RTEXT_FILTER_SKIP_STATS = 1 << 3
IFA_ADDRESS = 1
IFA_LOCAL = 2
TCA_KIND = 1
TC_H_ROOT = 0xFFFFFFFF
NETNSA_NSID = 1
NETNSA_FD = 3
IFF_UP = 0x1
STATS64_DROPPED = struct.Struct("=QQ")  # rx_dropped, tx_dropped: the 7th and 8th u64
STATS64_DROPPED_AT = 48

TIMEOUT = 30.0  # the kernel always answers; this only bounds a wedged request


class NetlinkError(OSError):
    """The kernel refused a request; errno says why."""

    @property
    def code(self) -> int:
        return self.errno or 0


def attr(kind: int, payload: bytes) -> bytes:
    """One rtattr, padded to 4 bytes."""
    size = RTA.size + len(payload)
    return RTA.pack(size, kind) + payload + b"\0" * (-size & 3)


def attrs_of(data: bytes | memoryview, off: int = 0) -> dict[int, bytes]:
    """The attributes in data from off on, by type (nested ones left encoded)."""
    out: dict[int, bytes] = {}
    end = len(data)
    while off + RTA.size <= end:
        size, kind = RTA.unpack_from(data, off)
        if size < RTA.size:
            break
        out[kind & NLA_TYPE_MASK] = bytes(data[off + RTA.size : off + size])
        off += (size + 3) & ~3
    return out


def _u32(raw: bytes | None) -> int | None:
    return None if raw is None or len(raw) < 4 else int(struct.unpack_from("=I", raw)[0])


def _text(raw: bytes | None) -> str | None:
    return None if raw is None else raw.split(b"\0", 1)[0].decode("utf-8", "replace")


def mac_text(raw: bytes | None) -> str:
    return ":".join(f"{b:02x}" for b in raw) if raw else ""


@dataclass(frozen=True, slots=True)
class Link:
    """A decoded RTM_NEWLINK: the header's fields and the attributes by type."""

    index: int
    flags: int
    attrs: dict[int, bytes]

    @property
    def name(self) -> str:
        raw = self.attrs.get(IFLA_IFNAME, b"")
        return ifnames.decode(raw.split(b"\0", 1)[0])

    @property
    def up(self) -> bool:
        return bool(self.flags & IFF_UP)

    @property
    def mtu(self) -> int:
        return _u32(self.attrs.get(IFLA_MTU)) or 0

    @property
    def address(self) -> str:
        return mac_text(self.attrs.get(IFLA_ADDRESS))

    @property
    def alias(self) -> str | None:
        return _text(self.attrs.get(IFLA_IFALIAS))

    @property
    def qdisc(self) -> str:
        return _text(self.attrs.get(IFLA_QDISC)) or ""

    @property
    def carrier_changes(self) -> int | None:
        return _u32(self.attrs.get(IFLA_CARRIER_CHANGES))

    def _linkinfo(self) -> dict[int, bytes]:
        raw = self.attrs.get(IFLA_LINKINFO)
        return attrs_of(raw) if raw else {}

    @property
    def kind(self) -> str | None:
        return _text(self._linkinfo().get(IFLA_INFO_KIND))

    def tun_info(self) -> tuple[bool, int] | None:
        """(persistent, type) of a tun/tap device (type 2 is a TAP); None for other kinds."""
        info = self._linkinfo()
        if _text(info.get(IFLA_INFO_KIND)) != "tun" or IFLA_INFO_DATA not in info:
            return None
        data = attrs_of(info[IFLA_INFO_DATA])
        persist = data.get(IFLA_TUN_PERSIST, b"\0")[:1] != b"\0"
        kind = data.get(IFLA_TUN_TYPE, b"\0")[0]
        return persist, kind

    def dropped(self) -> tuple[int, int]:
        """(rx_dropped, tx_dropped) from IFLA_STATS64; zeros without it."""
        raw = self.attrs.get(IFLA_STATS64)
        if raw is None or len(raw) < STATS64_DROPPED_AT + STATS64_DROPPED.size:
            return (0, 0)
        rx, tx = STATS64_DROPPED.unpack_from(raw, STATS64_DROPPED_AT)
        return (int(rx), int(tx))


def link_of(body: bytes | memoryview) -> Link:
    _, _, index, flags, _ = IFINFO.unpack_from(body)
    return Link(index, flags, attrs_of(body, IFINFO.size))


def encode_mac(address: str) -> bytes:
    raw = bytes.fromhex(address.replace(":", ""))
    if len(raw) != 6:
        raise NetlinkError(errno.EINVAL, f"not a MAC address: {address}")
    return raw


class Rtnl:
    """A NETLINK_ROUTE socket in the namespace of the thread that opens it, for blocking
    requests one at a time (one thread uses it)."""

    def __init__(self) -> None:
        self.sock = socket.socket(
            socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE
        )
        try:
            self.sock.bind((0, 0))
            self.sock.settimeout(TIMEOUT)
        except BaseException:
            self.sock.close()
            raise
        self._seq = 0
        self.closed = False

    def close(self) -> None:
        self.closed = True
        self.sock.close()

    def __enter__(self) -> "Rtnl":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the exchange --------------------------------------------------------------------

    def request(
        self, mtype: int, flags: int, body: bytes, dump: bool = False
    ) -> list[tuple[int, bytes]]:
        """Send one request and return its answers as (type, body); a refusal raises
        NetlinkError. A dump is read to its end; anything else is acknowledged."""
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        seq = self._seq
        flags |= NLM_F_DUMP if dump else NLM_F_ACK
        self.sock.send(
            NLMSG.pack(NLMSG.size + len(body), mtype, NLM_F_REQUEST | flags, seq, 0) + body
        )
        out: list[tuple[int, bytes]] = []
        while True:
            data = self.sock.recv(1 << 16)
            for mtype_got, mflags, mseq, mbody in _messages(data):
                if mseq != seq:
                    continue  # the answer to an earlier request that gave up: not ours
                if mtype_got == NLMSG_ERROR:
                    code = -ERRNO.unpack_from(mbody)[0]
                    if code:
                        raise NetlinkError(code, os.strerror(code))
                    return out
                if mtype_got == NLMSG_DONE:
                    code = -ERRNO.unpack_from(mbody)[0] if len(mbody) >= 4 else 0
                    if code:
                        raise NetlinkError(code, os.strerror(code))
                    return out
                out.append((mtype_got, mbody))
                if dump and not mflags & NLM_F_MULTI:
                    return out

    # -- links ---------------------------------------------------------------------------

    def link_set(
        self,
        index: int,
        *,
        up: bool | None = None,
        mtu: int | None = None,
        address: str | None = None,
        txqlen: int | None = None,
        alias: str | None = None,
        net_ns_fd: int | None = None,
        name: str | None = None,
        gso_max_segs: int | None = None,
    ) -> None:
        """RTM_NEWLINK on an existing link, as `ip link set` (a move with net_ns_fd is done
        first by the kernel, then the rest is applied there)."""
        a = b""
        if gso_max_segs is not None:
            a += attr(IFLA_GSO_MAX_SEGS, struct.pack("=I", gso_max_segs))
        if mtu is not None:
            a += attr(IFLA_MTU, struct.pack("=I", mtu))
        if address is not None:
            a += attr(IFLA_ADDRESS, encode_mac(address))
        if txqlen is not None:
            a += attr(IFLA_TXQLEN, struct.pack("=I", txqlen))
        if alias is not None:
            a += attr(IFLA_IFALIAS, alias.encode())
        if net_ns_fd is not None:
            a += attr(IFLA_NET_NS_FD, struct.pack("=I", net_ns_fd))
        if name is not None:
            a += attr(IFLA_IFNAME, ifnames.encode(name) + b"\0")
        flags, change = (0, 0) if up is None else (IFF_UP if up else 0, IFF_UP)
        self.request(RTM_NEWLINK, 0, IFINFO.pack(0, 0, index, flags, change) + a)

    def link_get(
        self,
        *,
        index: int = 0,
        name: str | None = None,
        nsid: int | None = None,
        stats: bool = True,
    ) -> Link:
        """One link by index or name, in this namespace or the one with that nsid."""
        a = b""
        if name is not None:
            a += attr(IFLA_IFNAME, ifnames.encode(name) + b"\0")
        if nsid is not None:
            a += attr(IFLA_TARGET_NETNSID, struct.pack("=i", nsid))
        if not stats:
            a += attr(IFLA_EXT_MASK, struct.pack("=I", RTEXT_FILTER_SKIP_STATS))
        got = self.request(RTM_GETLINK, 0, IFINFO.pack(0, 0, index, 0, 0) + a)
        for mtype, body in got:
            if mtype == RTM_NEWLINK:
                return link_of(body)
        raise NetlinkError(errno.ENODEV, os.strerror(errno.ENODEV))

    def links(self, kind: str | None = None) -> list[Link]:
        """Every link of this namespace (only those of `kind`, filtered by the kernel), without
        their statistics."""
        a = attr(IFLA_EXT_MASK, struct.pack("=I", RTEXT_FILTER_SKIP_STATS))
        if kind is not None:
            a += attr(IFLA_LINKINFO | NLA_F_NESTED, attr(IFLA_INFO_KIND, kind.encode() + b"\0"))
        got = self.request(RTM_GETLINK, 0, IFINFO.pack(0, 0, 0, 0, 0) + a, dump=True)
        return [link_of(body) for mtype, body in got if mtype == RTM_NEWLINK]

    def link_del(self, *, index: int = 0, name: str | None = None, nsid: int | None = None) -> None:
        a = b""
        if name is not None:
            a += attr(IFLA_IFNAME, ifnames.encode(name) + b"\0")
        if nsid is not None:
            a += attr(IFLA_TARGET_NETNSID, struct.pack("=i", nsid))
        self.request(RTM_DELLINK, 0, IFINFO.pack(0, 0, index, 0, 0) + a)

    # -- namespace ids, qdisc, addresses -------------------------------------------------

    def get_nsid(self, ns_fd: int) -> int | None:
        """The nsid of the namespace behind ns_fd as seen from here; None if it has none."""
        got = self.request(
            RTM_GETNSID, 0, RTGEN.pack(0) + attr(NETNSA_FD, struct.pack("=I", ns_fd))
        )
        for mtype, body in got:
            if mtype == RTM_NEWNSID:
                return nsid_of(body)
        return None

    def set_nsid(self, ns_fd: int) -> None:
        """Have the kernel pick an nsid for the namespace behind ns_fd (EEXIST: it has one)."""
        body = (
            RTGEN.pack(0)
            + attr(NETNSA_FD, struct.pack("=I", ns_fd))
            + attr(NETNSA_NSID, struct.pack("=i", -1))
        )
        self.request(RTM_NEWNSID, NLM_F_CREATE | NLM_F_EXCL, body)

    def qdisc_replace_root(self, index: int, kind: str) -> None:
        """`tc qdisc replace dev X root KIND` for a qdisc without options."""
        body = TCMSG.pack(0, index, 0, TC_H_ROOT, 0) + attr(TCA_KIND, kind.encode() + b"\0")
        self.request(RTM_NEWQDISC, NLM_F_CREATE | NLM_F_REPLACE, body)

    def addr(self, command: str, index: int, address: str, prefixlen: int) -> None:
        """`ip addr add|del ADDRESS/PREFIXLEN dev INDEX` (IPv4: IFA_LOCAL too, as ip does)."""
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        raw = socket.inet_pton(family, address)
        a = attr(IFA_ADDRESS, raw)
        if family == socket.AF_INET:
            a = attr(IFA_LOCAL, raw) + a
        body = IFADDR.pack(family, prefixlen, 0, 0, index) + a
        if command == "add":
            self.request(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, body)
        else:
            self.request(RTM_DELADDR, 0, body)


def messages(data: bytes) -> Iterator[tuple[int, bytes]]:
    """(type, body) of each message in a datagram."""
    for mtype, _, _, body in _messages(data):
        yield mtype, body


def nsid_of(body: bytes) -> int | None:
    """NETNSA_NSID of an RTM_NEWNSID/RTM_DELNSID body; None when absent or not assigned."""
    raw = attrs_of(body, RTGEN.size).get(NETNSA_NSID)
    if raw is None or len(raw) < 4:
        return None
    nsid = struct.unpack_from("=i", raw)[0]
    return None if nsid < 0 else int(nsid)


def _messages(data: bytes) -> Iterator[tuple[int, int, int, bytes]]:
    """(type, flags, seq, body) of each message in a datagram."""
    off = 0
    while off + NLMSG.size <= len(data):
        length, mtype, flags, seq, _ = NLMSG.unpack_from(data, off)
        if length < NLMSG.size:
            break
        yield mtype, flags, seq, data[off + NLMSG.size : off + length]
        off += (length + 3) & ~3
