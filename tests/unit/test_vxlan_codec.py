"""VXLAN header, receive checks, flow hash, BFD framing (RFC 7348, RFC 8971) and the `peer vxlan`
grammar."""

import struct

import pytest

from tapveth.core import vxlan
from tapveth.core.linkspec import PairSpec, SpecError, parse_add
from tapveth.core.vxlanspec import VxlanSpec, parse_vxlan_peer


def test_header_layout() -> None:
    h = vxlan.header(0xABCDEF)
    assert h == bytes([0x08, 0, 0, 0, 0xAB, 0xCD, 0xEF, 0])
    assert vxlan.vni_of(h) == 0xABCDEF


def frame(payload: bytes = bytes(50)) -> bytes:
    return bytes(6) + bytes(6) + b"\x08\x00" + payload


def test_check() -> None:
    field = vxlan.header(42)[4:7]
    good = vxlan.header(42) + frame()
    assert vxlan.check(good, len(good), field) is None
    reserved = bytes([0xFF, 0xFF, 0xFF, 0xFF]) + good[4:7] + b"\xff" + good[8:]
    assert vxlan.check(reserved, len(reserved), field) is None  # reserved bits ignored
    assert vxlan.check(good, 8 + 13, field) is vxlan.RxDrop.MALFORMED
    no_i = b"\x00" + good[1:]
    assert vxlan.check(no_i, len(no_i), field) is vxlan.RxDrop.MALFORMED
    other = vxlan.header(43) + frame()
    assert vxlan.check(other, len(other), field) is vxlan.RxDrop.VNI


def ipv4_tcp(src: str, dst: str, sport: int, dport: int, payload: bytes = b"x") -> bytes:
    ip = struct.pack(
        "!BBHHHBBH4s4s",
        0x45, 0, 40 + len(payload), 0, 0x4000, 64, 6, 0,
        bytes(map(int, src.split("."))), bytes(map(int, dst.split("."))),
    )  # fmt: skip
    tcp = struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, 0x18, 1000, 0, 0)
    return bytes(6) + bytes(6) + b"\x08\x00" + ip + tcp + payload


def test_flow_hash_follows_the_flow_not_the_packet() -> None:
    a = vxlan.flow_hash(ipv4_tcp("10.0.0.1", "10.0.0.2", 1000, 80, b"one"))
    b = vxlan.flow_hash(ipv4_tcp("10.0.0.1", "10.0.0.2", 1000, 80, b"another payload"))
    c = vxlan.flow_hash(ipv4_tcp("10.0.0.1", "10.0.0.2", 1001, 80))
    assert a == b != c
    ports = {vxlan.pick(vxlan.flow_hash(ipv4_tcp("10.0.0.1", "10.0.0.2", p, 80)), 16) for p in
             range(1000, 1200)}  # fmt: skip
    assert len(ports) == 16  # many flows spread over every port of the pool
    assert all(0 <= vxlan.pick(h, 16) < 16 for h in (0, 1, 0xFFFFFFFF))
    assert vxlan.flow_hash(bytes(20)) == vxlan.flow_hash(bytes(20))  # not IP: hashed anyway


def test_checksum() -> None:
    # RFC 1071's example words 0001 f203 f4f5 f6f7 sum to ddf2 (complement 220d).
    assert vxlan.ip_checksum(bytes.fromhex("0001f203f4f5f6f7")) == 0x220D
    assert vxlan.ip_checksum(b"\x01") == 0xFEFF


def test_bfd_frame_round_trip() -> None:
    control = bytes(range(24))
    f = vxlan.bfd_frame(bytes.fromhex("020000000001"), bytes([192, 0, 2, 1]), control)
    assert vxlan.is_bfd(f) and f[:6] == bytes.fromhex("005202000000")
    assert f[22] == 255 and f[30:34] == bytes([127, 0, 0, 1])
    assert vxlan.ip_checksum(f[14:34]) == 0  # a valid IPv4 header sums to zero
    assert vxlan.bfd_payload(f) == control
    ttl_254 = f[:22] + b"\xfe" + f[23:]
    assert vxlan.bfd_payload(ttl_254) is None  # RFC 5881: from further than one hop
    assert vxlan.bfd_payload(f[:40]) is None


def test_grammar() -> None:
    spec = parse_add(
        "veth1 netns ns1 peer vxlan id 42 remote 192.0.2.2 dstport 4789 local 192.0.2.1 "
        "underlay-netns u srcport 40000 40100 bfd bfd-interval 100".split()
    )
    peer = spec.peer
    assert isinstance(peer, VxlanSpec)
    assert (peer.vni, peer.remote, peer.dstport, peer.local) == (42, "192.0.2.2", 4789, "192.0.2.1")
    assert peer.srcport == (40000, 40100) and peer.underlay_netns == "u" and peer.bfd
    assert peer.bfd_interval_ms == 100 and peer.name == "vxlan:42"
    assert PairSpec.from_dict(spec.to_dict()) == spec  # crosses the control socket unchanged
    assert parse_vxlan_peer("id 1 remote 2001:db8::2".split()).ipv6
    assert parse_vxlan_peer("id 1 remote 192.0.2.9".split()).dstport == vxlan.DEFAULT_DSTPORT


@pytest.mark.parametrize(
    ("words", "message"),
    [
        ("remote 192.0.2.2", "missing 'id VNI'"),
        ("id 5", "missing 'remote ADDR'"),
        ("id 16777216 remote 192.0.2.2", "0..16777215"),
        ("id x remote 192.0.2.2", "not a number"),
        ("id 1 remote 192.0.2", "not an IPv4 or IPv6"),
        ("id 1 remote 239.0.0.1", "not a unicast"),
        ("id 1 remote 0.0.0.0", "not a unicast"),
        ("id 1 remote 192.0.2.2 local 2001:db8::1", "same family"),
        ("id 1 remote 192.0.2.2 dstport 0", "1..65535"),
        ("id 1 remote 192.0.2.2 srcport 5 5", "MIN must be below MAX"),
        ("id 1 remote 192.0.2.2 srcport 5", "needs MIN and MAX"),
        ("id 1 id 2 remote 192.0.2.2", "given twice"),
        ("id 1 remote 192.0.2.2 ttl 5", "unknown word 'ttl'"),
        ("id 1 remote 192.0.2.2 underlay-netns a/b", "not valid"),
        ("id 1 remote 192.0.2.2 bfd-multiplier 0", "1..255"),
    ],
)
def test_grammar_mistakes(words: str, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        parse_add(["a", "peer", "vxlan", *words.split()])


def test_overheads() -> None:
    assert vxlan.OVERHEAD_V4 == 50 and vxlan.OVERHEAD_V6 == 70
