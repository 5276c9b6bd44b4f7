"""core/_offload.c against its reference: the same segments and the same merges, byte for
byte, as core/offload.segment_tcp_numpy and core/vxlan.merge_tcp_numpy make, on random
super-frames (IPv4 and IPv6, options, every flag, sequence numbers and ids across their
wrap, odd sizes) and on runs of datagrams broken in random places."""

import random

import pytest
from tsoframes import super_frame

from tapveth.core import offload, vxlan

_offload = pytest.importorskip("tapveth.core._offload", reason="the C extension is not built")

PREFIX = vxlan.header(42)
VNI = PREFIX[4:7]


def random_frame(rng: random.Random, v6: bool, payload_len: int) -> tuple[bytearray, int]:
    """A super-frame with random TCP flags, sequence number, IPv4 id and options; and l4."""
    frame = bytearray(
        super_frame(rng.randbytes(payload_len), v6=v6, options=rng.random() < 0.7, flags="A")
    )
    l4 = 14 + (40 if v6 else 20)
    frame[l4 + 13] = rng.randrange(256)
    frame[l4 + 4 : l4 + 8] = rng.choice(
        [rng.randrange(2**32), 2**32 - rng.randrange(1, 9000)]
    ).to_bytes(4, "big")
    if not v6:
        frame[18:20] = rng.choice([rng.randrange(2**16), 2**16 - rng.randrange(1, 8)]).to_bytes(
            2, "big"
        )
        frame[15] = rng.randrange(256)  # TOS, and ECN bits: copied to every segment
    return frame, l4


def both_segment(
    frame: bytes | bytearray, l4: int, mss: int, prefix: bytes, size: int
) -> tuple[object, object]:
    """What the C and the numpy cut make of frame: (result, bytes) or the error's text."""
    answers: list[object] = []
    for cut in (_offload.segment_tcp, offload.segment_tcp_numpy):
        out = bytearray(size)
        try:
            count, full, total = cut(frame, l4, mss, prefix, out)
        except ValueError as exc:
            answers.append(("ValueError", str(exc)))
        else:
            answers.append(((count, full, total), bytes(out[:total])))
    return answers[0], answers[1]


@pytest.mark.parametrize("v6", [False, True])
def test_segments_are_the_references(v6: bool) -> None:
    rng = random.Random(7 + v6)
    for _ in range(150):
        payload_len = rng.choice([0, 1, rng.randrange(1, 3000), rng.randrange(1, 64000)])
        mss = rng.choice([1448, 1400, 1449, 536, 7, rng.randrange(1, 9000)])
        if payload_len // mss > 3000:
            mss = 1448  # bounded: the numpy reference cuts odd sizes in Python
        frame, l4 = random_frame(rng, v6, payload_len)
        prefix = rng.choice([PREFIX, b""])
        c, ref = both_segment(
            frame, l4, mss, prefix, 2 * len(frame) + 100 * (payload_len // mss + 1)
        )
        assert c == ref, (payload_len, mss, prefix)


def test_refusals_are_the_references() -> None:
    frame, l4 = random_frame(random.Random(1), False, 3000)
    udp = bytearray(frame)
    udp[23] = 17
    options = bytearray(frame)
    options[14] = 0x46  # an IPv4 header of 24 bytes: the TCP header is not at 34
    short_doff = bytearray(frame)
    short_doff[l4 + 12] = 0x40  # a TCP header of 16 bytes
    long_doff = bytearray(frame[: l4 + 40])
    long_doff[l4 + 12] = 0xF0  # 60 bytes of TCP header in a frame of 40
    arp = bytearray(frame)
    arp[12:14] = b"\x08\x06"
    cases = [
        (udp, l4, 1000),
        (options, l4, 1000),
        (short_doff, l4, 1000),
        (long_doff, l4, 1000),
        (arp, l4, 1000),
        (frame, l4, 0),
        (frame, l4, -5),
    ]
    for bad, at, mss in cases:
        c, ref = both_segment(bad, at, mss, PREFIX, 9000)
        assert c == ref and isinstance(c, tuple) and c[0] == "ValueError", (c, ref)
    c, ref = both_segment(frame, l4, 1000, PREFIX, 100)  # the output does not hold it
    assert c == ref == ("ValueError", "output buffer too small")
    with pytest.raises(ValueError):
        _offload.segment_tcp(frame[:40], l4, 1000, PREFIX, bytearray(9000))


def gro_run(rng: random.Random, v6: bool, count: int, mss: int) -> tuple[bytearray, int]:
    """count datagrams of one flow as one UDP_GRO read returns them: a super-frame cut with
    the VXLAN header in front, all of one size."""
    frame, l4 = random_frame(rng, v6, min(count * mss, 60000))
    frame += rng.randbytes(count * mss - min(count * mss, 60000))  # past what an IP length holds
    frame[l4 + 13] = 0x10  # ACK: segments of a bulk transfer
    out = bytearray(count * (len(PREFIX) + l4 + 60 + mss) + 4096)
    n, full, total = offload.segment_tcp_numpy(frame, l4, mss, PREFIX, out)
    assert n == count and total == count * full
    return out[:total], full


def reseal(data: bytearray, row: int, size: int) -> None:
    """Make the checksums of the datagram at row right again (IPv4 header, TCP)."""
    inner = memoryview(data)[row + 8 : row + size]
    v4 = bytes(inner[12:14]) == b"\x08\x00"
    l4 = 14 + (20 if v4 else 40)
    if v4:
        inner[24:26] = b"\0\0"
        inner[24:26] = (0xFFFF - offload.ones_sum(inner[14:34])).to_bytes(2, "big")
    inner[l4 + 16 : l4 + 18] = b"\0\0"
    addrs = offload.ones_sum(inner[26:34] if v4 else inner[22:54])
    total = addrs + 6 + len(inner) - l4 + offload.ones_sum(inner[l4:])
    inner[l4 + 16 : l4 + 18] = (0xFFFF - total % 0xFFFF).to_bytes(2, "big")


@pytest.mark.parametrize("v6", [False, True])
def test_each_header_byte_decides_as_the_reference(v6: bool) -> None:
    """Every bit of a middle datagram's headers changed in turn, its checksums made right
    again or not: the C and the reference merge the same run."""
    rng = random.Random(5 + v6)
    data, size = gro_run(rng, v6, 10, 1448)
    hlen = 8 + 14 + (20 if not v6 else 40) + 20
    for at in range(hlen + 12):  # and some of the payload
        for bit in (0, 3, 7):
            for sealed in (False, True):
                broken = bytearray(data)
                broken[4 * size + at] ^= 1 << bit
                if sealed:
                    reseal(broken, 4 * size, size)
                c, ref = both_merge(broken, size, 10, VNI)
                assert c == ref, (at, bit, sealed)


def test_a_zero_sum_is_written_as_the_reference_writes_it() -> None:
    """A segment whose sum is 0 mod 0xFFFF: its checksum field is 0xFFFF in both."""
    frame, l4 = random_frame(random.Random(9), False, 1000)
    frame[l4 + 13] = 0x10
    out = bytearray(4000)
    offload.segment_tcp_numpy(frame, l4, 1000, b"", out)
    residue = 0xFFFF - int.from_bytes(out[l4 + 16 : l4 + 18], "big")
    word = int.from_bytes(frame[-2:], "big")  # payload's last word: move the sum to 0
    frame[-2:] = ((word + 0xFFFF - residue) % 0xFFFF).to_bytes(2, "big")
    c, ref = both_segment(frame, l4, 1000, b"", 4000)
    assert c == ref
    assert isinstance(c, tuple) and isinstance(c[1], bytes)
    assert c[1][l4 + 16 : l4 + 18] == b"\xff\xff"


Merged = tuple[tuple[int, int, int, int], bytes]


def both_merge(data: bytes | bytearray, size: int, count: int, vni: bytes) -> tuple[Merged, Merged]:
    """What the C and the numpy merge make of data: (result, bytes of the merged frame)."""
    answers: list[Merged] = []
    for merge in (_offload.merge_tcp, vxlan.merge_tcp_numpy):
        out = bytearray(70000)
        result = merge(data, size, count, vni, out)
        answers.append((result, bytes(out[: result[1]])))
    return answers[0], answers[1]


@pytest.mark.parametrize("v6", [False, True])
def test_merges_are_the_references(v6: bool) -> None:
    rng = random.Random(11 + v6)
    merged_some = 0
    for _ in range(300):
        count = rng.randrange(2, 48)
        mss = rng.choice([1398, 1448, 1400, 536, 2 * rng.randrange(1, 700)])
        data, size = gro_run(rng, v6, count, mss)
        # break it somewhere, or not: a bit flipped anywhere (a header that differs, a
        # checksum that fails), PSH or another flag, a sequence that skips, another VNI
        for _ in range(rng.choice([0, 0, 1, 2])):
            row = rng.randrange(count) * size
            what = rng.randrange(4)
            if what == 0:
                at = row + rng.randrange(size)
                data[at] ^= 1 << rng.randrange(8)
            elif what == 1:
                data[row + 8 + (34 if not v6 else 54) + 13] = rng.choice([0x18, 0x11, 0x12, 0x10])
            elif what == 2:
                at = row + 8 + (34 if not v6 else 54) + 4
                data[at + 3] ^= 1
            else:
                data[row + 4 : row + 7] = vxlan.header(43)[4:7]
            if rng.random() < 0.7:  # a datagram that differs but is valid in itself
                reseal(data, row, size)
        vni = VNI if rng.random() < 0.95 else vxlan.header(43)[4:7]
        c, ref = both_merge(data, size, count, vni)
        assert c == ref, (count, mss)
        merged_some += c[0][0] > 0
    assert merged_some > 100  # the runs merged, not only refused


def test_merge_refusals_are_the_references() -> None:
    rng = random.Random(3)
    data, size = gro_run(rng, False, 10, 1448)
    odd, odd_size = gro_run(rng, False, 10, 1447)
    bfd = bytearray(data)
    for row in range(0, len(bfd), size):
        bfd[row + 8 : row + 14] = vxlan.BFD_MAC
    fragment = bytearray(data)
    fragment[8 + 20] |= 0x20  # more fragments
    cases = [
        (data, size, 1, VNI),
        (data, size, 0, VNI),
        (odd, odd_size, 10, VNI),
        (bfd, size, 10, VNI),
        (fragment, size, 10, VNI),
        (data, size, 10, b"\x00\x00"),
        (data[:200] * 10, 200, 10, VNI),
    ]
    for args in cases:
        c, ref = both_merge(*args)
        assert c == ref == ((0, 0, 0, 0), b""), args[1:]
    # a merge as large as an IP length holds, no larger
    big, big_size = gro_run(rng, False, 60, 1448)
    c, ref = both_merge(big, big_size, 60, VNI)
    assert c == ref and c[0][0] == (0xFFFF - 40) // 1448
    with pytest.raises(ValueError):
        _offload.merge_tcp(data, size, 10, VNI, bytearray(1000))  # the output does not hold it


def test_garbage_is_refused_or_answered_as_the_reference() -> None:
    """Random bytes where frames and datagrams are expected (what the tunnel may deliver):
    the C answers as the reference does, or refuses with ValueError where the reference
    fails; it never reads or writes past the buffers it was given."""
    rng = random.Random(13)
    template, l4 = random_frame(rng, False, 3000)
    run, size = gro_run(rng, False, 8, 1448)
    for _ in range(3000):
        frame = bytearray(template[: rng.randrange(len(template))])
        for _ in range(rng.randrange(4)):
            if frame:
                frame[rng.randrange(len(frame))] = rng.randrange(256)
        mss = rng.choice([1, 536, 1448, rng.randrange(-2, 65536)])  # a virtio gso_size: 16 bits
        at = rng.choice([l4, rng.randrange(0, 80)])
        out = bytearray(rng.randrange(0, 9000))
        try:
            ref: object = offload.segment_tcp_numpy(frame, at, mss, PREFIX, bytearray(out))
        except (ValueError, IndexError):
            ref = ValueError
        try:
            got: object = _offload.segment_tcp(frame, at, mss, PREFIX, out)
        except ValueError:
            got = ValueError
        assert got == ref, (len(frame), at, mss)
        data = bytearray(run[: rng.randrange(len(run))])
        for _ in range(rng.randrange(6)):
            if data:
                data[rng.randrange(len(data))] = rng.randrange(256)
        n = rng.randrange(0, 10)
        step = rng.choice([size, rng.randrange(0, 2000)])
        try:
            mref: object = vxlan.merge_tcp_numpy(data, step, n, VNI, bytearray(70000))
        except (ValueError, IndexError):
            mref = ValueError
        try:
            mgot: object = _offload.merge_tcp(data, step, n, VNI, bytearray(70000))
        except ValueError:
            mgot = ValueError
        if mref is ValueError:  # the reference failed: the C refuses, or merges nothing
            assert mgot in (ValueError, (0, 0, 0, 0)), (len(data), step, n)
        else:
            assert mgot == mref, (len(data), step, n)
