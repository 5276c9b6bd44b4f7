"""What GSO makes of a frame as a TAP hands it (virtio header first): the complete packets a
wire would carry, cut by core/offload.segment_tcp, or the frame itself with its partial
checksum completed."""

import struct

from tapveth.core import offload, vnet


def gso_segments(frame: bytes) -> list[bytes]:
    """The Ethernet frames of frame (without virtio headers), checksums complete."""
    _, gso_type, _, mss, l4, _, _ = struct.unpack_from(vnet.HDR_FORMAT, frame, 0)
    if gso_type == vnet.GSO_NONE:
        done = bytearray(frame)
        assert vnet.complete_checksum(done)
        return [bytes(done[vnet.HDR_LEN :])]
    out = bytearray(2 * len(frame) + 4096)
    _, full, total = offload.segment_tcp(frame[vnet.HDR_LEN :], l4, mss, b"", out)
    return [bytes(out[i : min(i + full, total)]) for i in range(0, total, full)]
