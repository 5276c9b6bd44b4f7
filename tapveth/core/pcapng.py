"""pcapng (draft-ietf-opsawg-pcapng) blocks, written and read back: the capture format of
`tapveth capture`. Pure: bytes in, bytes out.

Only what a capture needs: a Section Header Block, one Interface Description Block per end,
Enhanced Packet Blocks (with epb_flags for the direction and opt_comment for a drop reason) and
Interface Statistics Blocks at the end. Everything is little-endian; a reader learns that from
the byte-order magic. Timestamps are nanoseconds since the epoch (if_tsresol = 9).
"""

import functools
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

SHB = 0x0A0D0D0A
IDB = 0x00000001
ISB = 0x00000005
EPB = 0x00000006
BYTE_ORDER_MAGIC = 0x1A2B3C4D
LINKTYPE_ETHERNET = 1

# Option codes. opt_endofopt and opt_comment are valid in every block.
OPT_ENDOFOPT = 0
OPT_COMMENT = 1
SHB_HARDWARE = 2
SHB_OS = 3
SHB_USERAPPL = 4
IF_NAME = 2
IF_DESCRIPTION = 3
IF_TSRESOL = 9
EPB_FLAGS = 2
ISB_STARTTIME = 2
ISB_ENDTIME = 3
ISB_IFRECV = 4
ISB_IFDROP = 5
ISB_FILTERACCEPT = 6
ISB_USRDELIV = 8

# epb_flags bits 0-1 (0 the least significant): the frame's direction on its interface.
INBOUND = 1
OUTBOUND = 2

TSRESOL_NS = 9
DEFAULT_SNAPLEN = 262144  # what tcpdump and dumpcap use
_U64_OPTS = {ISB_STARTTIME, ISB_ENDTIME}  # timestamps: high word first, as in packet blocks


class PcapngError(ValueError):
    """Bytes that are not the pcapng this module writes."""


def _pad(n: int) -> int:
    return -n & 3


def _option(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + value + b"\0" * _pad(len(value))


def _options(opts: list[tuple[int, bytes]]) -> bytes:
    if not opts:
        return b""
    return b"".join(_option(c, v) for c, v in opts) + struct.pack("<HH", OPT_ENDOFOPT, 0)


def _block(block_type: int, body: bytes) -> bytes:
    total = 12 + len(body)
    return struct.pack("<II", block_type, total) + body + struct.pack("<I", total)


def _ts(ts_ns: int) -> bytes:
    """A 64-bit timestamp as two 32-bit words, high first (epb and isb layout)."""
    return struct.pack("<II", (ts_ns >> 32) & 0xFFFFFFFF, ts_ns & 0xFFFFFFFF)


def section_header(user_appl: str, os_name: str | None = None) -> bytes:
    """The Section Header Block that starts a capture (section length unknown: -1)."""
    opts = [(SHB_USERAPPL, user_appl.encode())]
    if os_name:
        opts.append((SHB_OS, os_name.encode()))
    body = struct.pack("<IHHq", BYTE_ORDER_MAGIC, 1, 0, -1) + _options(opts)
    return _block(SHB, body)


def interface_description(
    name: str, description: str, snaplen: int = DEFAULT_SNAPLEN, linktype: int = LINKTYPE_ETHERNET
) -> bytes:
    """An Interface Description Block; its index in the section is the order it was written."""
    opts = [
        (IF_NAME, name.encode()),
        (IF_DESCRIPTION, description.encode()),
        (IF_TSRESOL, bytes([TSRESOL_NS])),
    ]
    return _block(IDB, struct.pack("<HHI", linktype, 0, snaplen) + _options(opts))


def enhanced_packet(
    interface_id: int,
    ts_ns: int,
    data: bytes | bytearray | memoryview,
    orig_len: int,
    flags: int = 0,
    comment: str | None = None,
) -> bytes:
    """An Enhanced Packet Block holding data (already cut to the snap length) of a frame that
    was orig_len bytes long. Called once per captured frame, so it packs the fixed part in one
    go and caches the options (a few flag and comment combinations)."""
    caplen = len(data)
    opts = _epb_options(flags, comment)
    total = 32 + caplen + _pad(caplen) + len(opts)
    return b"".join(
        (
            _EPB_HEAD.pack(
                EPB,
                total,
                interface_id,
                ts_ns >> 32 & 0xFFFFFFFF,
                ts_ns & 0xFFFFFFFF,
                caplen,
                orig_len,
            ),
            data,
            _PADDING[_pad(caplen)],
            opts,
            _U32.pack(total),
        )
    )


_EPB_HEAD = struct.Struct("<IIIIIII")
_U32 = struct.Struct("<I")
_PADDING = [b"\0" * n for n in range(4)]


@functools.lru_cache(maxsize=256)
def _epb_options(flags: int, comment: str | None) -> bytes:
    opts: list[tuple[int, bytes]] = []
    if comment:
        opts.append((OPT_COMMENT, comment.encode()))
    if flags:
        opts.append((EPB_FLAGS, struct.pack("<I", flags)))
    return _options(opts)


def interface_statistics(
    interface_id: int,
    ts_ns: int,
    start_ns: int,
    received: int,
    accepted: int,
    dropped: int,
    delivered: int,
) -> bytes:
    """An Interface Statistics Block: frames the capture saw on this interface (isb_ifrecv),
    those its filter took (isb_filteraccept), those left out because the reader fell behind
    (isb_ifdrop, where dumpcap puts pcap's ps_drop) and those written (isb_usrdeliv)."""
    opts = [
        (ISB_STARTTIME, _ts(start_ns)),
        (ISB_ENDTIME, _ts(ts_ns)),
        (ISB_IFRECV, struct.pack("<Q", received)),
        (ISB_IFDROP, struct.pack("<Q", dropped)),
        (ISB_FILTERACCEPT, struct.pack("<Q", accepted)),
        (ISB_USRDELIV, struct.pack("<Q", delivered)),
    ]
    return _block(ISB, struct.pack("<I", interface_id) + _ts(ts_ns) + _options(opts))


# -- reading back ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Interface:
    linktype: int
    snaplen: int
    name: str = ""
    description: str = ""
    tsresol: int = 6


@dataclass(frozen=True, slots=True)
class Packet:
    interface_id: int
    ts_ns: int
    data: bytes
    orig_len: int
    flags: int = 0
    comment: str | None = None

    @property
    def direction(self) -> int:
        return self.flags & 3


@dataclass(frozen=True, slots=True)
class Statistics:
    interface_id: int
    ts_ns: int
    counters: dict[int, int] = field(default_factory=dict)  # option code -> value

    @property
    def received(self) -> int:
        return self.counters.get(ISB_IFRECV, 0)

    @property
    def accepted(self) -> int:
        return self.counters.get(ISB_FILTERACCEPT, 0)

    @property
    def dropped(self) -> int:
        return self.counters.get(ISB_IFDROP, 0)

    @property
    def delivered(self) -> int:
        return self.counters.get(ISB_USRDELIV, 0)


Record = Interface | Packet | Statistics


def _parse_options(buf: bytes) -> list[tuple[int, bytes]]:
    out = []
    pos = 0
    while pos + 4 <= len(buf):
        code, length = struct.unpack_from("<HH", buf, pos)
        pos += 4
        if code == OPT_ENDOFOPT:
            break
        if pos + length > len(buf):
            raise PcapngError("option runs past the end of its block")
        out.append((code, buf[pos : pos + length]))
        pos += length + _pad(length)
    return out


def _u64(value: bytes, code: int) -> int:
    if code in _U64_OPTS:
        high, low = struct.unpack("<II", value)
        return int(high << 32 | low)
    return int(struct.unpack("<Q", value)[0])


class Reader:
    """Incremental reader: feed() bytes as they arrive, get the records complete so far.
    Accepts the little-endian sections this module writes."""

    def __init__(self, packets: bool = True) -> None:
        self._buf = bytearray()
        self._started = False
        self._packets = packets  # False: only count packet blocks (cheaper), yield the rest
        self.interfaces: list[Interface] = []
        self.packets_seen = 0

    def feed(self, data: bytes) -> list[Record]:
        self._buf += data
        buf = self._buf
        out: list[Record] = []
        pos = 0
        while len(buf) - pos >= 12:
            block_type, total = struct.unpack_from("<II", buf, pos)
            if total < 12 or total % 4:
                raise PcapngError(f"bad block length {total}")
            if len(buf) - pos < total:
                break
            (trailer,) = struct.unpack_from("<I", buf, pos + total - 4)
            if trailer != total:
                raise PcapngError("block lengths at head and tail differ")
            if block_type == EPB:
                self.packets_seen += 1
            if block_type != EPB or self._packets:
                rec = self._record(block_type, bytes(buf[pos + 8 : pos + total - 4]))
                if rec is not None:
                    out.append(rec)
            pos += total
        del buf[:pos]
        return out

    def _record(self, block_type: int, body: bytes) -> Record | None:
        if block_type == SHB:
            (magic,) = struct.unpack_from("<I", body, 0)
            if magic != BYTE_ORDER_MAGIC:
                raise PcapngError("not a little-endian pcapng section")
            self._started = True
            self.interfaces = []
            return None
        if not self._started:
            raise PcapngError("no section header block first")
        if block_type == IDB:
            linktype, _, snaplen = struct.unpack_from("<HHI", body, 0)
            named = dict(_parse_options(body[8:]))
            iface = Interface(
                linktype=linktype,
                snaplen=snaplen,
                name=named.get(IF_NAME, b"").decode(errors="replace"),
                description=named.get(IF_DESCRIPTION, b"").decode(errors="replace"),
                tsresol=named.get(IF_TSRESOL, b"\x06")[0],
            )
            self.interfaces.append(iface)
            return iface
        if block_type == EPB:
            iface_id, high, low, caplen, orig_len = struct.unpack_from("<IIIII", body, 0)
            if iface_id >= len(self.interfaces):
                raise PcapngError(f"packet on interface {iface_id}, which was never described")
            end = 20 + caplen
            opts = _parse_options(body[end + _pad(caplen) :])
            flags = 0
            comment = None
            for code, value in opts:
                if code == EPB_FLAGS:
                    (flags,) = struct.unpack("<I", value)
                elif code == OPT_COMMENT:
                    comment = value.decode(errors="replace")
            ts = high << 32 | low
            ts_ns = _to_ns(ts, self.interfaces[iface_id].tsresol)
            return Packet(iface_id, ts_ns, body[20:end], orig_len, flags, comment)
        if block_type == ISB:
            iface_id, high, low = struct.unpack_from("<III", body, 0)
            counters = {c: _u64(v, c) for c, v in _parse_options(body[12:]) if len(v) == 8}
            return Statistics(iface_id, high << 32 | low, counters)
        return None  # other block types are skipped, as the spec asks of readers


def _to_ns(ts: int, tsresol: int) -> int:
    if tsresol & 0x80:
        return ts * 10**9 >> (tsresol & 0x7F)
    if tsresol <= 9:
        return ts * int(10 ** (9 - tsresol))
    return ts // int(10 ** (tsresol - 9))


def read(data: bytes) -> Iterator[Record]:
    """Every record of a whole capture held in memory."""
    yield from Reader().feed(data)
