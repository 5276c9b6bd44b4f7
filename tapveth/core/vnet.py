"""The virtio_net_hdr that precedes every frame on a TAP opened with IFF_VNET_HDR.

The relay never rewrites it: both ends use the same header size and offloads, so a header read
from one TAP is valid for the other and GSO super-frames cross unsegmented, as on the kernel veth.
"""

import struct

# We ask the kernel for the 24-byte form (virtio_net_hdr_v1_hash_tunnel): flags, gso_type,
# hdr_len, gso_size, csum_start, csum_offset, num_buffers, then hash value and report (unused
# by tun), then the inner network and outer transport header offsets of a UDP-tunnel GSO
# super-frame (VXLAN, Geneve), which tun fills in only with its tunnel offload on. A kernel
# without it skips the extra bytes on read and write, so the size is safe everywhere.
HDR_LEN = 24
HDR_FORMAT = "<BBHHHHH12x"

FLAG_NEEDS_CSUM = 0x01
FLAG_DATA_VALID = 0x02

GSO_NONE = 0x00
GSO_TCPV4 = 0x01
GSO_UDP = 0x03
GSO_TCPV6 = 0x04
GSO_UDP_L4 = 0x05
GSO_UDP_TUNNEL_IPV4 = 0x20  # flags added to the inner type of a UDP-tunnel super-frame
GSO_UDP_TUNNEL_IPV6 = 0x40
GSO_ECN = 0x80

# Offset of gso_type in the header: the only byte the veth rules look at per frame.
GSO_TYPE_OFFSET = 1


def is_gso(header: bytes | bytearray | memoryview) -> bool:
    """True when the header describes a GSO super-frame (any gso_type other than NONE)."""
    return header[GSO_TYPE_OFFSET] & ~GSO_ECN != GSO_NONE


def pack(
    flags: int = 0,
    gso_type: int = GSO_NONE,
    hdr_len: int = 0,
    gso_size: int = 0,
    csum_start: int = 0,
    csum_offset: int = 0,
) -> bytes:
    """Build a header (for tests and for frames the daemon injects itself)."""
    return struct.pack(HDR_FORMAT, flags, gso_type, hdr_len, gso_size, csum_start, csum_offset, 0)


def gso_geometry(buf: bytes | bytearray | memoryview, n: int) -> tuple[int, int]:
    """(gso_size, header length) of the frame in buf[:n] (virtio header first), or (0, 0) for a
    frame that is not a GSO super-frame.

    hdr_len in the virtio header is only a hint (tun fills it with the skb's linear length), so
    the headers are measured: csum_start is where the transport header begins, and a TCP header
    says its own length (data offset); a UDP header is 8 bytes.
    """
    gso_type = buf[GSO_TYPE_OFFSET] & ~GSO_ECN
    if gso_type == GSO_NONE:
        return 0, 0
    _, _, hdr_len, gso_size, csum_start, _, _ = struct.unpack_from(HDR_FORMAT, buf, 0)
    if gso_size == 0:
        return 0, 0
    if gso_type in (GSO_TCPV4, GSO_TCPV6) and HDR_LEN + csum_start + 13 <= n:
        return gso_size, csum_start + (buf[HDR_LEN + csum_start + 12] >> 4) * 4
    if gso_type == GSO_UDP_L4 and csum_start:
        return gso_size, csum_start + 8
    return gso_size, min(hdr_len, n - HDR_LEN)
