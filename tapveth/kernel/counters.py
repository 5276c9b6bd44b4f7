"""The kernel's own drop counters of many links at once, for `stats`.

One RTM_GETLINK per end, all sent back to back on a raw rtnetlink socket of their own, the
answers read as they come and only IFLA_STATS64 decoded. Through pyroute2 each request waits
for its answer and every attribute of it is decoded: about 0.6 ms an end, 1.2 s for 1,000
pairs, during which the netlink worker could do nothing else. A dump per namespace would not
help here: each end usually has a namespace of its own, and the daemon's namespace may hold
many links that are not ours.
"""

import errno
import socket
import struct

NLMSG = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, seq, port
IFINFO = struct.Struct("=BxHiII")  # ifinfomsg: family, type, index, flags, change
RTA = struct.Struct("=HH")  # rtattr: length, type
NLMSG_ERROR = 2
RTM_NEWLINK = 16
RTM_GETLINK = 18
NLM_F_REQUEST = 0x1
IFLA_STATS64 = 23
IFLA_TARGET_NETNSID = 46  # the namespace to look in, by its nsid here
NLA_TYPE_MASK = 0x3FFF
STATS64_DROPPED = struct.Struct("=QQ")  # rx_dropped, tx_dropped: the 7th and 8th u64
STATS64_DROPPED_AT = 48
SO_RCVBUFFORCE = 33
IN_FLIGHT = 64  # requests sent before reading answers; their answers fit the receive buffer
TIMEOUT = 5.0


class LinkCounters:
    """A raw rtnetlink socket that reads (rx_dropped, tx_dropped) of links by (nsid, index).
    Opened once, when the daemon starts, so that `stats` works even when the daemon has run
    out of file descriptors. Used by one thread at a time."""

    def __init__(self) -> None:
        self.sock = socket.socket(
            socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE
        )
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 4 << 20)
        except OSError:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.bind((0, 0))
        self.sock.settimeout(TIMEOUT)
        self._seq = 0
        self._buf = bytearray(1 << 16)

    def close(self) -> None:
        self.sock.close()

    def drops(self, keys: list[tuple[int | None, int]]) -> list[tuple[int, int]]:
        """(rx_dropped, tx_dropped) for each (nsid, ifindex); (0, 0) for a link that is gone."""
        out = [(0, 0)] * len(keys)
        for start in range(0, len(keys), IN_FLIGHT):
            self._batch(keys, range(start, min(start + IN_FLIGHT, len(keys))), out)
        return out

    def _batch(
        self, keys: list[tuple[int | None, int]], todo: range, out: list[tuple[int, int]]
    ) -> None:
        pending: dict[int, int] = {}  # seq -> position in keys
        for pos in todo:
            self._seq = (self._seq + 1) & 0xFFFFFFFF
            pending[self._seq] = pos
            self.sock.send(_request(self._seq, *keys[pos]))
        while pending:
            try:
                n = self.sock.recv_into(self._buf)
            except TimeoutError:
                raise OSError(errno.ETIMEDOUT, "the kernel did not answer") from None
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
                # Answers were lost to a full receive buffer: ask again for those missing.
                for seq, pos in list(pending.items()):
                    del pending[seq]
                    self._seq = (self._seq + 1) & 0xFFFFFFFF
                    pending[self._seq] = pos
                    self.sock.send(_request(self._seq, *keys[pos]))
                continue
            _parse(memoryview(self._buf)[:n], pending, out)


def _request(seq: int, nsid: int | None, index: int) -> bytes:
    attr = b"" if nsid is None else RTA.pack(8, IFLA_TARGET_NETNSID) + struct.pack("=i", nsid)
    body = IFINFO.pack(socket.AF_UNSPEC, 0, index, 0, 0) + attr
    return NLMSG.pack(NLMSG.size + len(body), RTM_GETLINK, NLM_F_REQUEST, seq, 0) + body


def _parse(data: memoryview, pending: dict[int, int], out: list[tuple[int, int]]) -> None:
    """Answers in one datagram: a link (its drop counters) or an error (a link gone: 0, 0)."""
    off = 0
    while off + NLMSG.size <= len(data):
        length, mtype, _, seq, _ = NLMSG.unpack_from(data, off)
        if length < NLMSG.size:
            return
        pos = pending.pop(seq, None)
        if pos is not None and mtype == RTM_NEWLINK:
            out[pos] = _stats64_drops(data[off : off + length])
        off += (length + 3) & ~3


def _stats64_drops(msg: memoryview) -> tuple[int, int]:
    off = NLMSG.size + IFINFO.size
    while off + RTA.size <= len(msg):
        length, atype = RTA.unpack_from(msg, off)
        if length < RTA.size:
            break
        if atype & NLA_TYPE_MASK == IFLA_STATS64 and length >= RTA.size + 64:
            rx, tx = STATS64_DROPPED.unpack_from(msg, off + RTA.size + STATS64_DROPPED_AT)
            return (int(rx), int(tx))
        off += (length + 3) & ~3
    return (0, 0)
