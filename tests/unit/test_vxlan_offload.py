"""Offloaded frames from the TAP made wire-ready for the tunnel: TCP super-frames cut into
wire-sized segments with complete checksums, partial checksums filled in. Checked against
scapy's own reading and checksum computation."""

import os

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.packet import Packet
from tsoframes import gso_segments, super_frame, tso

from tapveth.core import offload, vnet, vxlan

PREFIX = vxlan.header(42)


def cut(frame: bytes, mss: int) -> list[bytes]:
    """The datagrams segment_tcp lays out, split by the sizes it returns."""
    l4 = 14 + (40 if frame[12:14] == b"\x86\xdd" else (frame[14] & 0x0F) * 4)
    out = bytearray(len(frame) * 2 + 4096)
    count, full, total = offload.segment_tcp(frame, l4, mss, PREFIX, out)
    hlen = l4 + (frame[l4 + 12] >> 4) * 4
    assert total == full * (count - 1) + len(PREFIX) + hlen + (
        len(frame) - hlen - mss * (count - 1)
    )
    data = bytes(out[:total])
    return [data[i : i + full] for i in range(0, total, full)]


def verified(datagram: bytes) -> Packet:
    """The inner packet, after checking its checksums equal those scapy computes afresh."""
    assert datagram[: len(PREFIX)] == PREFIX
    pkt = Ether(datagram[len(PREFIX) :])
    fresh = pkt.copy()
    if IP in fresh:
        del fresh[IP].chksum
        del fresh[IP].len
    else:
        del fresh[IPv6].plen
    del fresh[TCP].chksum
    rebuilt = Ether(bytes(fresh))
    assert rebuilt[TCP].chksum == pkt[TCP].chksum
    if IP in pkt:
        assert rebuilt[IP].chksum == pkt[IP].chksum
        assert rebuilt[IP].len == pkt[IP].len
    else:
        assert rebuilt[IPv6].plen == pkt[IPv6].plen
    return pkt


@pytest.mark.parametrize("v6", [False, True])
@pytest.mark.parametrize("size", [1, 1448, 1449, 4000, 65000 - 66])
def test_segments_are_complete_packets(v6: bool, size: int) -> None:
    payload = os.urandom(size)
    frame = super_frame(payload, v6)
    mss = 1448
    dgrams = cut(frame, mss)
    assert len(dgrams) == -(-size // mss)
    got = b""
    for k, d in enumerate(dgrams):
        pkt = verified(d)
        tcp = pkt[TCP]
        assert tcp.seq == (0xFFFFF000 + k * mss) & 0xFFFFFFFF  # wraps around
        assert tcp.ack == 7 and tcp.sport == 40000 and tcp.dport == 5201
        assert tcp.options == [("NOP", None), ("NOP", None), ("Timestamp", (1, 2))]
        assert len(d) - len(PREFIX) <= 14 + (60 if v6 else 40) + 12 + mss
        if not v6:
            assert pkt[IP].id == (0xFFFE + k) & 0xFFFF and pkt[IP].flags == "DF"
        got += bytes(tcp.payload)
    assert got == payload


@pytest.mark.parametrize("v6", [False, True])
@pytest.mark.parametrize(
    ("size", "want"),
    [
        (3000, ["AC", "A", "FPA"]),  # full segments only
        (2500, ["AC", "A", "FPA"]),  # a shorter last one
        (1000, ["FPAC"]),  # one full segment
        (10, ["FPAC"]),  # one short segment
    ],
)
def test_flags_follow_the_kernel(v6: bool, size: int, want: list[str]) -> None:
    """FIN and PSH on the last segment only, CWR on the first only (tcp_gso_segment), with the
    checksums that go with them, whichever segment is full or shorter."""
    dgrams = cut(super_frame(os.urandom(size), v6, flags="FPAC", options=False), 1000)
    assert [str(verified(d)[TCP].flags) for d in dgrams] == want


def test_odd_sizes() -> None:
    payload = os.urandom(1001)
    dgrams = cut(super_frame(payload, options=False), 333)  # odd mss: odd segments
    assert b"".join(bytes(verified(d)[TCP].payload) for d in dgrams) == payload


def test_not_tcp_refused() -> None:
    udp = bytes(Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / UDP() / bytes(3000))
    with pytest.raises(ValueError):
        offload.segment_tcp(udp, 34, 1000, PREFIX, bytearray(8000))
    with pytest.raises(ValueError):
        offload.segment_tcp(super_frame(bytes(10))[:40], 34, 1000, PREFIX, bytearray(8000))
    with pytest.raises(ValueError):
        offload.segment_tcp(super_frame(bytes(3000)), 34, 1000, PREFIX, bytearray(100))


def pseudo_sum(src: bytes, dst: bytes, proto: int, length: int) -> int:
    """The folded pseudo-header sum a stack leaves in the checksum field with NEEDS_CSUM."""
    words = src + dst + bytes((0, proto)) + length.to_bytes(2, "big")
    total = sum(int.from_bytes(words[i : i + 2], "big") for i in range(0, len(words), 2))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return total


@pytest.mark.parametrize("size", [0, 1, 2, 17, 1400])
@pytest.mark.parametrize("udp", [False, True])
def test_fill_checksum(size: int, udp: bool) -> None:
    """A frame with NEEDS_CSUM (pseudo-header sum in the field, the rest to be summed) ends
    with the checksum scapy computes for the whole packet."""
    l4: Packet = UDP(sport=1, dport=2) if udp else TCP(sport=1, dport=2)
    layer = UDP if udp else TCP
    good = Ether(bytes(Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / l4 / os.urandom(size)))
    at = 34 + (6 if udp else 16)
    partial = bytearray(bytes(good))
    l4_len = len(partial) - 34
    pseudo = pseudo_sum(bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]), 17 if udp else 6, l4_len)
    partial[at : at + 2] = pseudo.to_bytes(2, "big")
    assert offload.fill_checksum(partial, 34, at - 34)
    want = good[layer].chksum
    got = int.from_bytes(partial[at : at + 2], "big")
    assert got == (want or 0xFFFF)  # scapy writes 0xFFFF for a UDP sum of 0 too
    assert (
        bytes(partial[:at]) == bytes(good)[:at]
        and bytes(partial[at + 2 :]) == bytes(good)[at + 2 :]
    )


def test_fill_checksum_out_of_frame() -> None:
    assert not offload.fill_checksum(bytearray(40), 34, 16)
    assert not offload.fill_checksum(bytearray(60), 4, 6)


def gro_buffer(frame: bytes, mss: int) -> tuple[bytes, int, int]:
    """What one UDP_GRO read returns for the super-frame's segments: (data, size, count)."""
    l4 = 14 + (40 if frame[12:14] == b"\x86\xdd" else 20)
    out = bytearray(len(frame) * 2 + 4096)
    count, full, total = offload.segment_tcp(frame, l4, mss, PREFIX, out)
    return bytes(out[:total]), full, count


@pytest.mark.parametrize("v6", [False, True])
def test_merge_undoes_segmenting(v6: bool) -> None:
    payload = os.urandom(1000 * 20)
    frame = super_frame(payload, v6, flags="PA")
    data, size, count = gro_buffer(frame, 1000)
    out = bytearray(70000)
    merged, length, l4, mss = vxlan.merge_tcp(data, size, count, PREFIX[4:7], out)
    assert (merged, length, mss) == (20, len(frame), 1000)
    assert l4 == 14 + (40 if v6 else 20)
    pkt = Ether(bytes(out[:length]))
    assert bytes(pkt[TCP].payload) == payload
    assert str(pkt[TCP].flags) == "PA" and pkt[TCP].seq == 0xFFFFF000
    # the checksum field holds the pseudo-header sum (NEEDS_CSUM): summing the whole segment
    # from the TCP header on, with it, gives the complete checksum scapy computes
    fresh = pkt.copy()
    del fresh[TCP].chksum
    want = Ether(bytes(fresh))[TCP].chksum
    partial = bytearray(out[:length])
    assert offload.fill_checksum(partial, l4, 16)
    assert int.from_bytes(partial[l4 + 16 : l4 + 18], "big") in (want, want or 0xFFFF)
    if not v6:
        check = pkt.copy()
        del check[IP].chksum
        assert Ether(bytes(check))[IP].chksum == pkt[IP].chksum
        assert pkt[IP].len == length - 14


def test_merge_stops_where_the_flow_breaks() -> None:
    frame = super_frame(os.urandom(1000 * 10), flags="A")
    data, size, count = gro_buffer(frame, 1000)
    vni = PREFIX[4:7]
    out = bytearray(70000)
    assert vxlan.merge_tcp(data, size, count, vni, out)[0] == 10
    bad = bytearray(data)
    bad[size * 4 + 200] ^= 0x01  # payload of the fifth segment corrupted: its checksum fails
    assert vxlan.merge_tcp(bytes(bad), size, count, vni, out)[0] == 4
    gap = data[: size * 3] + data[size * 4 :]  # a segment missing: the sequence breaks
    assert vxlan.merge_tcp(gap, size, count - 1, vni, out)[0] == 3
    other = bytearray(data)
    other[size * 6 + 8 + 36] ^= 0x01  # another source port (checksum left: the flow differs)
    assert vxlan.merge_tcp(bytes(other), size, count, vni, out)[0] == 6
    assert vxlan.merge_tcp(data, size, count, vxlan.header(43)[4:7], out)[0] == 0
    later = bytearray(data)
    later[size * 7 + 6] ^= 0x01  # another VNI from the eighth datagram on
    assert vxlan.merge_tcp(bytes(later), size, count, vni, out)[0] == 7
    later = bytearray(data)
    later[size * 5] &= ~vxlan.FLAG_I  # the sixth without the I flag
    assert vxlan.merge_tcp(bytes(later), size, count, vni, out)[0] == 5
    later = bytearray(data)
    later[size * 5 + 1] = 0xFF  # reserved bits are ignored
    assert vxlan.merge_tcp(bytes(later), size, count, vni, out)[0] == 10
    pushed = super_frame(os.urandom(1000), flags="PA")
    one, _, _ = gro_buffer(pushed, 1000)
    assert vxlan.merge_tcp(one + data, size, count + 1, vni, out)[0] == 0  # PSH first: alone
    assert vxlan.merge_tcp(data, size, 1, vni, out)[0] == 0


def test_merge_leaves_other_traffic() -> None:
    udp = bytes(Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / UDP() / bytes(1000))
    dgram = PREFIX + udp + (b"\0" if len(udp) % 2 else b"")
    assert vxlan.merge_tcp(dgram * 4, len(dgram), 4, PREFIX[4:7], bytearray(9000))[0] == 0


@pytest.mark.parametrize("v6", [False, True])
@pytest.mark.parametrize("per", [1, 2, 3, 10])
def test_split_tcp_pieces_segment_as_the_whole_does(v6: bool, per: int) -> None:
    """Pieces of a super-frame, each a valid TSO frame: GSO cuts them into exactly the
    segments it cuts the whole into (ids, sequence numbers, FIN/PSH last, CWR first)."""
    mss = 1000
    frame = super_frame(os.urandom(7 * mss + 123), v6=v6, flags="FPAC")
    gso_type = vnet.GSO_TCPV6 if v6 else vnet.GSO_TCPV4
    whole = tso(frame, mss, gso_type)
    pieces = offload.split_tcp(whole, per)
    assert pieces is not None
    assert len(pieces) == -(-8 // per)
    assert [s for p in pieces for s in gso_segments(p)] == gso_segments(whole)
    for p in pieces:  # a piece of one segment is no longer GSO
        want = gso_type if len(gso_segments(p)) > 1 else vnet.GSO_NONE
        assert p[vnet.GSO_TYPE_OFFSET] == want


def test_split_tcp_leaves_what_it_cannot_cut() -> None:
    frame = super_frame(os.urandom(3000))
    assert offload.split_tcp(tso(frame, 1000, vnet.GSO_TCPV4), 10) == [
        tso(frame, 1000, vnet.GSO_TCPV4)
    ]
    assert offload.split_tcp(tso(frame, 1000, vnet.GSO_UDP_L4), 1) is None
    assert offload.split_tcp(tso(frame, 1000, vnet.GSO_TCPV6), 1) is None  # not IPv6
    udp = bytes(Ether() / IP() / UDP() / bytes(3000))
    assert offload.split_tcp(tso(udp, 1000, vnet.GSO_TCPV4), 1) is None
