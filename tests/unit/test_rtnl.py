"""The hand-written rtnetlink codec: attributes, link messages as the kernel sends them,
acknowledgements and refusals (a socket stood in, no root needed)."""

import errno
import struct

import pytest

from tapveth.kernel import rtnl
from tapveth.kernel.rtnl import NetlinkError, Rtnl


def link_body(index: int, flags: int, *attrs: bytes) -> bytes:
    return rtnl.IFINFO.pack(0, 1, index, flags, 0) + b"".join(attrs)


def tun_linkinfo(persist: int, kind: int) -> bytes:
    data = rtnl.attr(rtnl.IFLA_TUN_TYPE, bytes([kind])) + rtnl.attr(
        rtnl.IFLA_TUN_PERSIST, bytes([persist])
    )
    info = rtnl.attr(rtnl.IFLA_INFO_KIND, b"tun\0") + rtnl.attr(
        rtnl.IFLA_INFO_DATA | rtnl.NLA_F_NESTED, data
    )
    return rtnl.attr(rtnl.IFLA_LINKINFO | rtnl.NLA_F_NESTED, info)


def test_attributes_are_padded_and_read_back() -> None:
    raw = rtnl.attr(3, b"abc\0\xff") + rtnl.attr(4, struct.pack("=I", 9000))
    assert len(raw) % 4 == 0
    got = rtnl.attrs_of(raw)
    assert got == {3: b"abc\0\xff", 4: struct.pack("=I", 9000)}


def test_a_link_decodes_as_the_kernel_sends_it() -> None:
    stats = bytes(48) + struct.pack("=QQ", 7, 11) + bytes(200 - 64)
    body = link_body(
        42,
        0x1043,
        rtnl.attr(rtnl.IFLA_IFNAME, b"rl\xff\xfe\0"),
        rtnl.attr(rtnl.IFLA_MTU, struct.pack("=I", 1400)),
        rtnl.attr(rtnl.IFLA_ADDRESS, bytes.fromhex("020000abcdef")),
        rtnl.attr(rtnl.IFLA_IFALIAS, b"tapveth persistent pair, peer b daemon /s\0"),
        rtnl.attr(rtnl.IFLA_QDISC, b"noqueue\0"),
        rtnl.attr(rtnl.IFLA_CARRIER_CHANGES, struct.pack("=I", 5)),
        rtnl.attr(rtnl.IFLA_STATS64, stats),
        tun_linkinfo(1, 2),
    )
    link = rtnl.link_of(body)
    assert (link.index, link.up, link.mtu) == (42, True, 1400)
    assert link.name == "rl\udcff\udcfe"  # not UTF-8: kept as surrogate escapes
    assert link.address == "02:00:00:ab:cd:ef"
    assert link.alias == "tapveth persistent pair, peer b daemon /s"
    assert (link.qdisc, link.carrier_changes, link.kind) == ("noqueue", 5, "tun")
    assert link.tun_info() == (True, 2)
    assert link.dropped() == (7, 11)


def test_a_link_without_the_optional_parts() -> None:
    link = rtnl.link_of(link_body(3, 0))
    assert (link.name, link.mtu, link.address, link.alias, link.kind) == ("", 0, "", None, None)
    assert link.tun_info() is None and link.dropped() == (0, 0) and not link.up
    assert rtnl.link_of(link_body(3, 0, tun_linkinfo(0, 1))).tun_info() == (False, 1)


class FakeSocket:
    """Answers each request with the messages a test queued, stamped with its sequence."""

    def __init__(self, answers: list[list[tuple[int, int, bytes]]]) -> None:
        self.answers = answers
        self.sent: list[bytes] = []
        self.stale = b""

    def send(self, data: bytes) -> int:
        self.sent.append(data)
        return len(data)

    def recv(self, size: int) -> bytes:
        seq = rtnl.NLMSG.unpack_from(self.sent[-1])[3]
        out = self.stale
        self.stale = b""
        for mtype, flags, body in self.answers.pop(0):
            out += rtnl.NLMSG.pack(rtnl.NLMSG.size + len(body), mtype, flags, seq, 0) + body
        return out

    def close(self) -> None:
        pass


def make(answers: list[list[tuple[int, int, bytes]]]) -> tuple[Rtnl, FakeSocket]:
    r = Rtnl()
    r.sock.close()
    fake = FakeSocket(answers)
    r.sock = fake  # type: ignore[assignment]
    return r, fake


def ack(code: int = 0) -> tuple[int, int, bytes]:
    return (rtnl.NLMSG_ERROR, 0, struct.pack("=i", -code) + bytes(16))


def test_a_request_is_acknowledged_or_refused_with_its_errno() -> None:
    r, fake = make([[ack()], [ack(errno.EEXIST)]])
    r.link_set(7, mtu=1400, up=True)
    length, mtype, flags, _, _ = rtnl.NLMSG.unpack_from(fake.sent[0])
    assert (length, mtype) == (len(fake.sent[0]), rtnl.RTM_NEWLINK)
    assert flags & rtnl.NLM_F_ACK and flags & rtnl.NLM_F_REQUEST
    _, _, index, ifflags, change = rtnl.IFINFO.unpack_from(fake.sent[0], rtnl.NLMSG.size)
    assert (index, ifflags, change) == (7, rtnl.IFF_UP, rtnl.IFF_UP)
    sent = rtnl.attrs_of(fake.sent[0], rtnl.NLMSG.size + rtnl.IFINFO.size)
    assert sent == {rtnl.IFLA_MTU: struct.pack("=I", 1400)}
    with pytest.raises(NetlinkError) as info:
        r.link_set(7, name="x")
    assert info.value.code == errno.EEXIST and isinstance(info.value, OSError)


def test_a_get_returns_the_link_and_skips_stale_answers() -> None:
    r, fake = make([[(rtnl.RTM_NEWLINK, 0, link_body(9, 1)), ack()]])
    # An answer to an earlier request (another sequence number) is left aside.
    stale = link_body(1, 0)
    fake.stale = rtnl.NLMSG.pack(rtnl.NLMSG.size + len(stale), rtnl.RTM_NEWLINK, 0, 999, 0) + stale
    link = r.link_get(name="veth1", nsid=4)
    assert link.index == 9
    sent = rtnl.attrs_of(fake.sent[0], rtnl.NLMSG.size + rtnl.IFINFO.size)
    assert sent[rtnl.IFLA_IFNAME] == b"veth1\0"
    assert sent[rtnl.IFLA_TARGET_NETNSID] == struct.pack("=i", 4)


def test_a_dump_is_read_to_its_end() -> None:
    multi = rtnl.NLM_F_MULTI
    r, fake = make(
        [
            [
                (rtnl.RTM_NEWLINK, multi, link_body(1, 0)),
                (rtnl.RTM_NEWLINK, multi, link_body(2, 0)),
            ],
            [(rtnl.RTM_NEWLINK, multi, link_body(3, 0)), (rtnl.NLMSG_DONE, multi, bytes(4))],
        ]
    )
    assert [link.index for link in r.links(kind="tun")] == [1, 2, 3]
    flags = rtnl.NLMSG.unpack_from(fake.sent[0])[2]
    assert flags & rtnl.NLM_F_DUMP == rtnl.NLM_F_DUMP and not flags & rtnl.NLM_F_ACK


def test_nsid_answers() -> None:
    def nsid_answer(nsid: int) -> tuple[int, int, bytes]:
        body = rtnl.RTGEN.pack(0) + rtnl.attr(rtnl.NETNSA_NSID, struct.pack("=i", nsid))
        return (rtnl.RTM_NEWNSID, 0, body)

    r, _ = make([[nsid_answer(3), ack()], [nsid_answer(-1), ack()]])
    assert r.get_nsid(5) == 3
    assert r.get_nsid(5) is None  # NETNSA_NSID_NOT_ASSIGNED
