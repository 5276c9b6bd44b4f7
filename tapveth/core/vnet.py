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
