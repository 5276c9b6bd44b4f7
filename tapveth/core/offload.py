"""The TAP's offloads done in software. For the vxlan end's socket, where no kernel path
segments for us, a partial checksum completed and a TCP super-frame cut into the segments the
kernel's GSO would make; for rate pacing, which hands a super-frame on as the wire would carry
it, a TCP super-frame cut into smaller super-frames that GSO still segments the same way.
"""

import struct
from collections.abc import Callable
from types import ModuleType

from tapveth.core import vnet

_c: ModuleType | None
try:
    from tapveth.core import _offload as _c  # the same cut in C (_offload.c)
except ImportError:  # not built: numpy does it, ~8 times slower (64 KiB: 60 us, in C 7)
    _c = None

ETH_HLEN = 14
_ETH_IPV4 = b"\x08\x00"
_ETH_IPV6 = b"\x86\xdd"


def fill_checksum(frame: bytearray | memoryview, start: int, offset: int) -> bool:
    """Complete a partial checksum in place, as the kernel's skb_checksum_help() does: the field
    at start + offset holds the pseudo-header sum; the one's complement sum runs from start to
    the end. A result of 0 is written 0xFFFF (CSUM_MANGLED_0: 0 means "none" in UDP). False
    when the offsets fall outside the frame."""
    where = start + offset
    if start < ETH_HLEN or where + 2 > len(frame):
        return False
    data = frame[start:]
    value = int.from_bytes(data, "big")
    if len(data) % 2:
        value <<= 8  # an odd length is padded with a zero byte (RFC 1071)
    total = value % 0xFFFF
    if total == 0 and value:
        total = 0xFFFF
    frame[where : where + 2] = ((~total & 0xFFFF) or 0xFFFF).to_bytes(2, "big")
    return True


def complete_checksum(buf: bytearray) -> bool:
    """Complete the partial checksum of a frame as a TAP hands it (virtio header first) and
    clear NEEDS_CSUM, so the receiver verifies it; True at once when none is pending, False
    when the header's offsets fall outside the frame."""
    if not buf[0] & vnet.FLAG_NEEDS_CSUM:
        return True
    _, _, _, _, start, offset, _ = struct.unpack_from(vnet.HDR_FORMAT, buf, 0)
    if not fill_checksum(memoryview(buf)[vnet.HDR_LEN :], start, offset):
        return False
    buf[0] &= ~vnet.FLAG_NEEDS_CSUM & 0xFF
    return True


def ones_sum(data: bytes | bytearray | memoryview) -> int:
    """The one's complement sum of data's 16-bit big-endian words, as a residue mod 0xFFFF (an
    odd last byte padded with zero, RFC 1071). Adding residues and taking mod 0xFFFF again is
    one's complement addition, 0 standing for 0xFFFF."""
    value = int.from_bytes(data, "big")
    return (value << 8 if len(data) % 2 else value) % 0xFFFF


def segment_tcp_numpy(
    frame: bytes | bytearray | memoryview,
    l4: int,
    mss: int,
    prefix: bytes,
    out: bytearray | memoryview,
) -> tuple[int, int, int]:
    """Cut a TCP super-frame (an Ethernet frame with IPv4 or IPv6, its TCP header at l4, as a
    TAP hands it with TSO: checksums not computed) into segments of at most mss payload bytes,
    each preceded by prefix (a VXLAN header, or nothing), laid end to end in out.

    Every segment is a complete packet, as the kernel's tcp_gso_segment() makes them: IP total
    (or payload) length for its size, IPv4 ids counting up from the super-frame's, IPv4 header
    checksum, sequence numbers advanced by mss, FIN and PSH on the last segment only, CWR on the
    first only, and the TCP checksum over the pseudo-header and the segment. Returns (count,
    full, total): count datagrams, all `full` bytes long but the last, total bytes in all.
    Raises ValueError for a frame that is not IPv4/IPv6 TCP or whose headers do not fit.

    numpy does the per-segment work for the full segments at once, on a header template
    broadcast to every row, the varying fields written in place; a shorter last segment is
    done in Python. The sums over every payload byte are the cost (a Python loop over 16-bit
    words is two orders slower): the payload is summed as native 16-bit words in 32-bit lanes
    and the result byte-swapped, which RFC 1071 (section 2(B)) shows equal to summing
    big-endian words."""
    import numpy as np

    n = len(frame)
    etype = bytes(frame[12:14])
    v4 = etype == _ETH_IPV4
    if not v4 and etype != _ETH_IPV6:
        raise ValueError("not IPv4 or IPv6")
    if v4 and (frame[14] >> 4 != 4 or frame[23] != 6 or l4 != ETH_HLEN + (frame[14] & 0x0F) * 4):
        raise ValueError("not TCP over IPv4")
    if not v4 and (frame[14] >> 4 != 6 or frame[20] != 6 or l4 != ETH_HLEN + 40):
        raise ValueError("not TCP over IPv6")
    if mss <= 0 or l4 + 20 > n:
        raise ValueError("truncated")
    doff = (frame[l4 + 12] >> 4) * 4
    hlen = l4 + doff
    if doff < 20 or hlen > n:
        raise ValueError("truncated")
    plen = n - hlen
    count = max(1, -(-plen // mss))
    full_rows = plen // mss
    last_len = plen - mss * (count - 1)
    p = len(prefix)
    row = p + hlen + mss
    need = row * (count - 1) + p + hlen + last_len
    if len(out) < need:
        raise ValueError("output buffer too small")

    # The template: prefix and headers of a full segment in the middle, the fields that vary
    # from one segment to the next zeroed (IPv4 id and checksum, sequence number, checksum).
    flags = frame[l4 + 13]
    seq0 = int.from_bytes(frame[l4 + 4 : l4 + 8], "big")
    tmpl = bytearray(prefix) + bytes(frame[:hlen])
    ip, tcp = p + ETH_HLEN, p + l4  # where the IP and TCP headers start in a datagram
    tmpl[tcp + 4 : tcp + 8] = bytes(4)
    tmpl[tcp + 13] = flags & 0x76  # FIN and PSH on the last only, CWR on the first only
    tmpl[tcp + 16 : tcp + 18] = bytes(2)
    ip_id = 0
    if v4:
        ip_id = int.from_bytes(frame[18:20], "big")
        tmpl[ip + 2 : ip + 4] = (l4 - ETH_HLEN + doff + mss).to_bytes(2, "big")
        tmpl[ip + 4 : ip + 6] = tmpl[ip + 10 : ip + 12] = bytes(2)
        pseudo = ones_sum(frame[26:34]) + 6
    else:
        tmpl[ip + 4 : ip + 6] = (doff + mss).to_bytes(2, "big")
        pseudo = ones_sum(frame[22:54]) + 6
    ip_sum = ones_sum(tmpl[ip:tcp]) if v4 else 0
    # a full segment's TCP sum, but for its sequence number and payload
    tcp_sum = pseudo + doff + mss + ones_sum(tmpl[tcp:])
    first_flags, last_flags = flags & 0xF6, flags & 0x7F

    dst = np.frombuffer(out, dtype=np.uint8, count=need)
    if full_rows:
        u32 = np.uint32
        grid = dst[: full_rows * row].reshape(full_rows, row)
        grid[:, : p + hlen] = np.frombuffer(bytes(tmpl), dtype=np.uint8)  # broadcast
        grid[:, p + hlen :] = np.frombuffer(frame, np.uint8, full_rows * mss, hlen).reshape(
            full_rows, mss
        )
        # payload sums as native 16-bit words: a byte swap, i.e. x 256 mod 0xFFFF, makes them
        # the big-endian sums (RFC 1071 2(B)); 32-bit lanes hold up to 65537 words
        if mss % 2 == 0:
            words = grid[:, p + hlen :].view("<u2")
            sums = words.sum(axis=1, dtype=u32) % u32(0xFFFF) * u32(256)
        else:  # an odd mss: each segment's payload starts on its own word boundary
            sums = np.array(
                [ones_sum(frame[hlen + i * mss : hlen + (i + 1) * mss]) for i in range(full_rows)],
                dtype=u32,
            )
        seq = np.arange(0, full_rows * mss, mss, dtype=u32) + u32(seq0)  # wraps at 2**32
        sums += (seq >> u32(16)) + (seq & u32(0xFFFF)) + u32(tcp_sum)
        sums[0] += u32(first_flags - (flags & 0x76))
        if full_rows == count:
            sums[-1] += u32(last_flags - (flags & 0x76))
            grid[-1, tcp + 13] = last_flags
        grid[0, tcp + 13] = first_flags | (last_flags if count == 1 else 0)
        grid[:, tcp + 4 : tcp + 8].view(">u4")[:, 0] = seq
        grid[:, tcp + 16 : tcp + 18].view(">u2")[:, 0] = u32(0xFFFF) - sums % u32(0xFFFF)
        if v4:
            ids = np.arange(full_rows, dtype=np.uint16) + np.uint16(ip_id)  # wraps at 2**16
            grid[:, ip + 4 : ip + 6].view(">u2")[:, 0] = ids
            isum = (ids.astype(u32) + u32(ip_sum)) % u32(0xFFFF)
            grid[:, ip + 10 : ip + 12].view(">u2")[:, 0] = u32(0xFFFF) - isum
    if full_rows < count:  # the last, shorter segment, one packet: in Python
        k = count - 1
        seq_k = (seq0 + k * mss) & 0xFFFFFFFF
        at = k * row
        head = memoryview(out)[at : at + p + hlen]
        head[:] = tmpl
        head[tcp + 13] = last_flags if k else last_flags | first_flags
        head[tcp + 4 : tcp + 8] = seq_k.to_bytes(4, "big")
        short = mss - last_len  # bytes fewer than a full segment
        if v4:
            ident = (ip_id + k) & 0xFFFF
            head[ip + 2 : ip + 4] = (l4 - ETH_HLEN + doff + last_len).to_bytes(2, "big")
            head[ip + 4 : ip + 6] = ident.to_bytes(2, "big")
            isum_k = (ip_sum - short + ident) % 0xFFFF
            head[ip + 10 : ip + 12] = (0xFFFF - isum_k).to_bytes(2, "big")
        else:
            head[ip + 4 : ip + 6] = (doff + last_len).to_bytes(2, "big")
        tsum = tcp_sum - short + (seq_k >> 16) + (seq_k & 0xFFFF)
        tsum += ones_sum(frame[hlen + k * mss :])
        tsum += (head[tcp + 13] - (flags & 0x76)) + 0xFFFF * 4  # kept positive
        head[tcp + 16 : tcp + 18] = (0xFFFF - tsum % 0xFFFF).to_bytes(2, "big")
        memoryview(out)[at + p + hlen : need] = frame[hlen + k * mss :]
    return count, row, need


Segment = Callable[
    [bytes | bytearray | memoryview, int, int, bytes, bytearray | memoryview], tuple[int, int, int]
]
# What the vxlan end calls: _offload.c's segment_tcp when built, which makes the same bytes
# (tests/unit/test_offload_c.py) at a fraction of the cost; segment_tcp_numpy is the reference.
segment_tcp: Segment = segment_tcp_numpy if _c is None else _c.segment_tcp


# -- a super-frame in smaller super-frames: for pacing, not for the wire -----------------------

_TCP_CHECK = 16  # offset of the checksum in the TCP header


def split_tcp(frame: bytes | bytearray | memoryview, per: int) -> list[bytes] | None:
    """Cut a TCP super-frame as a TAP hands it (virtio header first, TCP header at csum_start,
    segments of gso_size) into super-frames of at most `per` segments each, every one a
    valid TSO frame in its own right: what the kernel's GSO would make of it is unchanged,
    segment for segment. None for anything that is not IPv4/IPv6 TCP or does not parse.

    No payload byte is summed: each piece keeps the partial checksum (NEEDS_CSUM), its TCP
    checksum field holding the pseudo-header sum for its own length, as tcp_v4_send_check()
    leaves it for TSO; the receiver's stack or a later GSO completes it. IPv4 header checksums
    are recomputed (ip_rcv() checks them on every packet). IPv4 ids continue from the
    super-frame's, one per segment; PSH and FIN stay on the last piece, CWR on the first."""
    flags, gso_type, _, mss, l4, _, _ = struct.unpack_from(vnet.HDR_FORMAT, frame, 0)
    body = memoryview(frame)[vnet.HDR_LEN :]
    n = len(body)
    if mss <= 0 or per <= 0 or l4 + 20 > n:
        return None
    etype = bytes(body[12:14])
    v4 = etype == _ETH_IPV4
    if gso_type & ~vnet.GSO_ECN != (vnet.GSO_TCPV4 if v4 else vnet.GSO_TCPV6):
        return None
    if v4:
        if body[14] >> 4 != 4 or body[23] != 6 or l4 != ETH_HLEN + (body[14] & 0x0F) * 4:
            return None
    elif etype != _ETH_IPV6 or body[14] >> 4 != 6 or body[20] != 6 or l4 != ETH_HLEN + 40:
        return None
    doff = (body[l4 + 12] >> 4) * 4
    hlen = l4 + doff
    if doff < 20 or hlen > n:
        return None
    plen = n - hlen
    chunk = per * mss
    if plen <= chunk:
        return [bytes(frame)]
    tcp_flags = body[l4 + 13]
    seq0 = int.from_bytes(body[l4 + 4 : l4 + 8], "big")
    ip_id = int.from_bytes(body[18:20], "big") if v4 else 0
    addr_sum = ones_sum(body[26:34]) if v4 else ones_sum(body[22:54])
    head = bytearray(body[:hlen])
    out: list[bytes] = []
    for at in range(0, plen, chunk):
        size = min(chunk, plen - at)
        segs = -(-size // mss)
        first, last = at == 0, at + size == plen
        bits = tcp_flags & (0xFF if last else ~0x09) & (0xFF if first else ~0x80)
        head[l4 + 4 : l4 + 8] = ((seq0 + at) & 0xFFFFFFFF).to_bytes(4, "big")
        head[l4 + 13] = bits
        if v4:
            head[16:18] = (hlen - ETH_HLEN + size).to_bytes(2, "big")
            head[18:20] = ((ip_id + at // mss) & 0xFFFF).to_bytes(2, "big")
            head[24:26] = bytes(2)
            head[24:26] = (0xFFFF - ones_sum(head[ETH_HLEN:l4])).to_bytes(2, "big")
        else:
            head[18:20] = (doff + size).to_bytes(2, "big")
        pseudo = (addr_sum + 6 + doff + size) % 0xFFFF
        head[l4 + _TCP_CHECK : l4 + _TCP_CHECK + 2] = (pseudo or 0xFFFF).to_bytes(2, "big")
        vhdr = vnet.pack(
            flags | vnet.FLAG_NEEDS_CSUM,
            gso_type if segs > 1 else vnet.GSO_NONE,
            hlen,
            mss,
            l4,
            _TCP_CHECK,
        )
        out.append(vhdr + head + body[hlen + at : hlen + at + size])
    return out
