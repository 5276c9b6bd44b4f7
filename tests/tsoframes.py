"""TCP super-frames for tests: made as a TAP with TSO hands them, and cut as GSO would cut
them (core/offload.segment_tcp) into the complete packets a wire would carry."""

import struct

from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.packet import Packet

from tapveth.core import offload, vnet


def super_frame(payload: bytes, v6: bool = False, flags: str = "PA", options: bool = True) -> bytes:
    """A super-frame as a TAP with TSO hands it: one TCP header, all the payload, with the
    TCP checksum field holding whatever (here: garbage, as it must not matter). Sequence
    number and IPv4 id sit just below their wrap, so segments cross it."""
    opts = [("NOP", None), ("NOP", None), ("Timestamp", (1, 2))] if options else []
    tcp = TCP(sport=40000, dport=5201, seq=0xFFFFF000, ack=7, flags=flags, options=opts, chksum=1)
    ip: Packet = (
        IPv6(src="fd00::1", dst="fd00::2")
        if v6
        else IP(src="10.0.0.1", dst="10.0.0.2", id=0xFFFE, flags="DF", chksum=1)
    )
    return bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / ip / tcp / payload)


def tso(frame: bytes, mss: int, gso_type: int) -> bytes:
    """frame behind the virtio header a TAP gives it with TSO: partial checksum at the TCP
    header, segments of mss."""
    l4 = 14 + (40 if frame[12:14] == b"\x86\xdd" else 20)
    return vnet.pack(vnet.FLAG_NEEDS_CSUM, gso_type, 0, mss, l4, 16) + frame


def gso_segments(frame: bytes) -> list[bytes]:
    """The Ethernet frames of frame (without virtio headers), checksums complete."""
    _, gso_type, _, mss, l4, _, _ = struct.unpack_from(vnet.HDR_FORMAT, frame, 0)
    if gso_type == vnet.GSO_NONE:
        done = bytearray(frame)
        assert offload.complete_checksum(done)
        return [bytes(done[vnet.HDR_LEN :])]
    out = bytearray(2 * len(frame) + 4096)
    _, full, total = offload.segment_tcp(frame[vnet.HDR_LEN :], l4, mss, b"", out)
    return [bytes(out[i : min(i + full, total)]) for i in range(0, total, full)]
