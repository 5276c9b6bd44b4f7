"""VXLAN (RFC 7348) without I/O: the 8-byte header, the checks a received datagram must pass,
the inner-flow hash that picks the outer UDP source port, and the BFD frames of RFC 8971.

The daemon's vxlan end (daemon/vxlan_end.py) feeds these functions bytes and acts on the
answers; nothing here touches a socket.
"""

import functools
import struct
import zlib
from collections.abc import Callable
from enum import StrEnum
from types import ModuleType
from typing import TYPE_CHECKING

from tapveth.core.offload import ones_sum

_c: ModuleType | None
try:
    from tapveth.core import _offload as _c  # the same merge in C (_offload.c)
except ImportError:  # not built: numpy does it
    _c = None

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

# The kernel's default destination port when `dstport` is not given (iproute2 warns that it is
# not the IANA port 4789; tapveth keeps the kernel's meaning so that lines carry over).
DEFAULT_DSTPORT = 8472
IANA_DSTPORT = 4789
HLEN = 8  # flags(1) reserved(3) VNI(3) reserved(1)
FLAG_I = 0x08  # "VNI valid": the only flag RFC 7348 defines; must be 1
MAX_VNI = (1 << 24) - 1
ETH_HLEN = 14
# What the tunnel adds around an inner Ethernet frame: outer IP + UDP + VXLAN + inner Ethernet.
# An underlay of MTU M carries an end of MTU M - OVERHEAD (1500 -> 1450 over IPv4).
OVERHEAD_V4 = 20 + 8 + HLEN + ETH_HLEN  # 50
OVERHEAD_V6 = 40 + 8 + HLEN + ETH_HLEN  # 70


class RxDrop(StrEnum):
    """Why a datagram reaching the end's UDP socket was not decapsulated."""

    MALFORMED = "malformed"  # shorter than a header plus an Ethernet header, or I flag clear
    VNI = "vni"  # another VXLAN network
    SOURCE = "source"  # not from the configured remote (address or outer family)
    BFD_INVALID = "bfd_invalid"  # addressed to the BFD MAC but not a valid BFD control packet


def header(vni: int) -> bytes:
    """The VXLAN header for a VNI: I flag set, reserved fields zero (RFC 7348 section 5)."""
    return struct.pack("!B3xI", FLAG_I, vni << 8)


def check(datagram: bytes | bytearray | memoryview, length: int, vni_field: bytes) -> RxDrop | None:
    """Check a received datagram (the UDP payload, `length` bytes) against the expected VNI.

    vni_field is the three VNI bytes of header(vni)[4:7]. Reserved bits are ignored on receipt
    as RFC 7348 says (the kernel is stricter and drops unknown flags).
    """
    if length < HLEN + ETH_HLEN or not datagram[0] & FLAG_I:
        return RxDrop.MALFORMED
    if datagram[4:7] != vni_field:
        return RxDrop.VNI
    return None


def vni_of(datagram: bytes | bytearray | memoryview) -> int:
    return int.from_bytes(datagram[4:7], "big")


_ETH_IPV4 = b"\x08\x00"
_ETH_IPV6 = b"\x86\xdd"
_PORTS = frozenset({6, 17, 132, 136})  # TCP, UDP, SCTP, UDP-Lite: ports at the L4 start


def flow_hash(frame: bytes | bytearray | memoryview) -> int:
    """A hash of the inner flow, for the outer UDP source port (RFC 7348 section 5): addresses,
    protocol and ports of IPv4/IPv6, or the Ethernet addresses and type for anything else, so
    that every packet of a flow takes the same path through an ECMP underlay.

    `frame` starts at the inner Ethernet header. Malformed frames hash on what there is.
    """
    etype = frame[12:14]
    if etype == _ETH_IPV4 and len(frame) >= 34:
        ihl = (frame[14] & 0x0F) * 4
        proto = frame[23]
        key = bytes(frame[26:34]) + bytes((proto,))
        # Fragments after the first carry no ports: hash them on addresses alone.
        not_later_fragment = (frame[20] & 0x1F) == 0 and frame[21] == 0
        if proto in _PORTS and not_later_fragment and len(frame) >= 14 + ihl + 4:
            key += bytes(frame[14 + ihl : 18 + ihl])
        return _mix(zlib.crc32(key))
    if etype == _ETH_IPV6 and len(frame) >= 54:
        proto = frame[20]
        key = bytes(frame[22:54]) + bytes((proto,))
        if proto in _PORTS and len(frame) >= 58:
            key += bytes(frame[54:58])
        return _mix(zlib.crc32(key))
    return _mix(zlib.crc32(bytes(frame[:14])))


def _mix(h: int) -> int:
    """MurmurHash3's 32-bit finaliser: CRC-32 is linear, so flows that differ in a few port
    bits would land on few ports; this spreads every input bit over the high bits pick() uses."""
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & 0xFFFFFFFF
    return h ^ (h >> 16)


def pick(hash_value: int, choices: int) -> int:
    """Index of the source port for a flow hash, among `choices` ports (the kernel scales a
    32-bit hash into its range the same way: (hash * n) >> 32)."""
    return ((hash_value & 0xFFFFFFFF) * choices) >> 32


# -- BFD over VXLAN (RFC 8971) --------------------------------------------------------------

BFD_MAC = bytes.fromhex("005202000000")  # IANA's MAC for BFD over VXLAN (inner destination)
BFD_PORT = 3784  # single-hop BFD control (RFC 5881)
BFD_SRC_PORT = 49152  # RFC 5881: a source port in 49152..65535
_LOOPBACK = bytes((127, 0, 0, 1))


def ip_checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of data: one's complement of the one's complement sum
    of its 16-bit words. The sum mod 0xFFFF of a big-endian number is that of its 16-bit digits,
    since 0x10000 = 1 (mod 0xFFFF)."""
    if len(data) % 2:
        data += b"\0"
    total = int.from_bytes(data, "big") % 0xFFFF
    if total == 0 and any(data):
        total = 0xFFFF
    return ~total & 0xFFFF


def bfd_frame(src_mac: bytes, src_ip: bytes, control: bytes) -> bytes:
    """An inner Ethernet frame carrying a BFD control packet as RFC 8971 section 4 lays it out:
    destination MAC 00-52-02-00-00-00, IPv4 to 127.0.0.1 with TTL 255, UDP to port 3784."""
    udp_len = 8 + len(control)
    udp = struct.pack("!HHHH", BFD_SRC_PORT, BFD_PORT, udp_len, 0) + control  # no UDP checksum
    ip = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0xC0, 20 + udp_len, 0, 0x4000, 255, 17, 0, src_ip, _LOOPBACK
    )
    ip = ip[:10] + struct.pack("!H", ip_checksum(ip)) + ip[12:]
    return BFD_MAC + src_mac + _ETH_IPV4 + ip + udp


def is_bfd(frame: bytes | bytearray | memoryview) -> bool:
    """Whether an inner frame is addressed to the BFD MAC: it is for the BFD session, never
    for the end's TAP."""
    return frame[:6] == BFD_MAC


def bfd_payload(frame: bytes | bytearray | memoryview) -> bytes | None:
    """The BFD control packet an inner frame carries, or None when the frame is not IPv4/UDP to
    port 3784 with TTL 255 (RFC 5881's check against spoofing from further away)."""
    if len(frame) < 14 + 20 + 8 or frame[12:14] != _ETH_IPV4:
        return None
    ihl = (frame[14] & 0x0F) * 4
    if frame[14] >> 4 != 4 or ihl < 20 or frame[22] != 255 or frame[23] != 17:
        return None
    udp = 14 + ihl
    if len(frame) < udp + 8:
        return None
    dport, ulen = struct.unpack_from("!2xH H", frame, udp)
    if dport != BFD_PORT or ulen < 8 or udp + ulen > len(frame):
        return None
    return bytes(frame[udp + 8 : udp + ulen])


# -- receiving: segments merged for one write into the TAP (the GRO side) ------------------


def _swap16(value: int) -> int:
    return ((value >> 8) | (value << 8)) & 0xFFFF


def merge_tcp_numpy(
    data: bytes | bytearray | memoryview,
    size: int,
    count: int,
    vni_field: bytes,
    out: bytearray | memoryview,
) -> tuple[int, int, int, int]:
    """Merge datagrams of one TCP flow into one super-frame, as the kernel's GRO does, for one
    write into the TAP instead of one a segment.

    data holds `count` datagrams of `size` bytes end to end (what one UDP_GRO read returns),
    each a VXLAN header and an inner frame. The leading datagrams merge while each: carries the
    VNI with the I flag; is IPv4 (20-byte header, not a fragment) or IPv6 (no extension) TCP
    with no padding; has headers equal to the first's except IPv4 id and checksum, TCP
    sequence number, checksum and PSH; continues the previous one's sequence; has flags ACK or
    PSH|ACK, PSH ending the merge; has a correct IPv4 header checksum and a correct TCP checksum
    (verified here: the super-frame goes to the TAP with a partial checksum, which the stack
    trusts). Returns (merged, frame_len, l4, mss): `merged` datagrams (0 or 1: nothing merged,
    handle the first alone) became one frame of frame_len bytes in out, its TCP header at l4,
    the checksum field holding the pseudo-header sum (virtio NEEDS_CSUM), segments of mss.
    """
    import numpy as np

    nothing = (0, 0, 0, 0)
    if count < 2 or size % 2 or size < HLEN + ETH_HLEN + 40 + 20:
        return nothing
    if not data[0] & FLAG_I or data[4:7] != vni_field:
        return nothing
    inner = data[HLEN:size]
    etype = bytes(inner[12:14])
    if etype == _ETH_IPV4 and inner[14] == 0x45 and inner[23] == 6:
        l4 = ETH_HLEN + 20
    elif etype == _ETH_IPV6 and inner[14] >> 4 == 6 and inner[20] == 6:
        l4 = ETH_HLEN + 40
    else:
        return nothing
    doff = (inner[l4 + 12] >> 4) * 4
    hlen = l4 + doff
    mss = size - HLEN - hlen
    if doff < 20 or mss <= 0 or bytes(inner[:6]) == BFD_MAC:
        return nothing
    v4 = l4 == ETH_HLEN + 20
    if v4:
        if (inner[20] & 0x3F) or inner[21] or _u16(inner, 16) != size - HLEN - ETH_HLEN:
            return nothing
    elif _u16(inner, 18) != size - HLEN - ETH_HLEN - 40:
        return nothing
    count = min(count, (0xFFFF - (hlen - ETH_HLEN)) // mss)  # an IP length must hold it
    u32 = np.uint32
    rows = np.frombuffer(data, dtype=np.uint8, count=count * size).reshape(count, size)
    # Every header byte equals the first datagram's where the mask says (the first's VXLAN
    # flags and VNI were checked above), in one pass.
    head = rows[:, : HLEN + hlen]
    ok = ~((head ^ head[0]) & _merge_mask(l4, hlen)).any(axis=1)
    flags = rows[:, HLEN + l4 + 13]
    ok &= (flags | 0x08) == 0x18  # ACK or PSH|ACK
    seq = rows[:, HLEN + l4 + 4 : HLEN + l4 + 8].copy().view(">u4").reshape(count)
    ok &= (seq - seq[0]).astype(u32) == np.arange(0, count * mss, mss, dtype=u32)
    # Checksums, summed as native words (RFC 1071 2(B)); a correct one sums to 0 mod 0xFFFF.
    # The addresses, which both checksums cover, lie just before the TCP header: one pass
    # sums the IPv4 header's first words, the addresses, and the TCP segment, apart.
    words = rows.view("<u2")
    base = (HLEN + ETH_HLEN) // 2
    addrs = base + (6 if v4 else 4)
    tcp = (HLEN + l4) // 2
    if v4:
        part = np.add.reduceat(words, [base, addrs, tcp], axis=1, dtype=u32)
        ok &= (part[:, 0] + part[:, 1]) % u32(0xFFFF) == 0
        tail = part[:, 1] + part[:, 2]
    else:
        tail = words[:, addrs:].sum(axis=1, dtype=u32)
    tcp_len = size - HLEN - l4
    ok &= (tail + u32(_swap16(6) + _swap16(tcp_len))) % u32(0xFFFF) == 0
    merged = count if ok.all() else int(np.argmin(ok))  # the first that fails ends the run
    pushed = np.flatnonzero(flags[:merged] == 0x18)
    if pushed.size:
        merged = int(pushed[0]) + 1
    if merged < 2:
        return nothing
    length = hlen + merged * mss
    dst = np.frombuffer(out, dtype=np.uint8, count=length)
    dst[:hlen] = rows[0, HLEN : HLEN + hlen]
    dst[hlen:].reshape(merged, mss)[...] = rows[:merged, HLEN + hlen :]  # one copy
    frame = memoryview(out)[:length] if not isinstance(out, memoryview) else out[:length]
    frame[l4 + 13] = int(flags[merged - 1])
    seg_len = length - l4
    if v4:
        frame[16:18] = (length - ETH_HLEN).to_bytes(2, "big")
        frame[24:26] = bytes(2)
        frame[24:26] = (0xFFFF - ones_sum(frame[ETH_HLEN:l4])).to_bytes(2, "big")
        pseudo_sum = (ones_sum(frame[26:34]) + 6 + seg_len) % 0xFFFF
    else:
        frame[18:20] = (length - l4).to_bytes(2, "big")
        pseudo_sum = (ones_sum(frame[22:54]) + 6 + seg_len) % 0xFFFF
    frame[l4 + 16 : l4 + 18] = (pseudo_sum or 0xFFFF).to_bytes(2, "big")
    return merged, length, l4, mss


Merge = Callable[
    [bytes | bytearray | memoryview, int, int, bytes, bytearray | memoryview],
    tuple[int, int, int, int],
]
# What the vxlan end calls: core/_offload.c's merge_tcp when built, which gives the same
# answer and bytes (tests/unit/test_offload_c.py); merge_tcp_numpy is the reference.
merge_tcp: Merge = merge_tcp_numpy if _c is None else _c.merge_tcp


def _u16(data: bytes | bytearray | memoryview, at: int) -> int:
    return int.from_bytes(data[at : at + 2], "big")


@functools.cache
def _merge_mask(l4: int, hlen: int) -> "npt.NDArray[np.uint8]":
    """Which header bits of a datagram must equal the first's for merge_tcp, VXLAN header
    included: all but the VXLAN flags other than I, its reserved bytes, the IPv4 id and
    checksum, the TCP sequence number, flags (checked apart) and checksum."""
    import numpy as np

    mask = np.full(HLEN + hlen, 0xFF, dtype=np.uint8)
    mask[0] = FLAG_I
    mask[1:4] = mask[7] = 0
    vary = [l4 + 4, l4 + 5, l4 + 6, l4 + 7, l4 + 13, l4 + 16, l4 + 17]
    if l4 == ETH_HLEN + 20:
        vary += [18, 19, 24, 25]
    mask[[HLEN + v for v in vary]] = 0
    mask.flags.writeable = False
    return mask
