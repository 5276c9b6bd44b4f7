"""The impairment model with a fake clock and seeded randomness: statistics within binomial
bounds, exact pacing, ordering, and the same decisions for the same seed."""

import itertools
import math
import random
import statistics
import struct

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from tsoframes import gso_segments, super_frame, tso

from tapveth.core import offload, vnet
from tapveth.core.impair import (
    PIECE_NS,
    CorrelatedRandom,
    ImpairDrop,
    Impairment,
    dist_table,
    ecn_mark,
    qdisc_size,
    tabledist,
)
from tapveth.core.netem import Netem, parse

MS = 1_000_000


def ip_checksum(header: bytes) -> int:
    total: int = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def frame(length: int = 1000, tos: int = 0, seq: int = 0, flags: int = 0) -> bytes:
    """A virtio header and an Ethernet/IPv4/UDP frame of `length` bytes (without the header);
    seq is written into the payload so frames can be told apart."""
    eth = b"\x02\0\0\0\0\x02" + b"\x02\0\0\0\0\x01" + b"\x08\x00"
    payload = struct.pack("!I", seq) + bytes(length - 14 - 20 - 8 - 4)
    ip = bytearray(
        struct.pack(
            "!BBHHHBBH4s4s",
            0x45,
            tos,
            20 + 8 + len(payload),
            0,
            0,
            64,
            17,
            0,
            b"\x0a\0\0\x01",
            b"\x0a\0\0\x02",
        )
    )
    struct.pack_into("!H", ip, 10, ip_checksum(bytes(ip)))
    udp = struct.pack("!HHHH", 1, 2, 8 + len(payload), 0)
    hdr = vnet.pack(flags=flags, csum_start=34 if flags else 0, csum_offset=6 if flags else 0)
    return hdr + eth + bytes(ip) + udp + payload


def seq_of(data: bytes) -> int:
    return int(struct.unpack_from("!I", data, vnet.HDR_LEN + 42)[0])


def run(
    imp: Impairment,
    frames: list[bytes],
    gap_ns: int,
    until: int | None = None,
    gso: tuple[int, int] = (0, 0),
) -> list[tuple[int, bytes]]:
    """Feed frames gap_ns apart and collect (time, frame) as they leave, with a fake clock."""
    out: list[tuple[int, bytes]] = []
    now = 0
    for f in frames:
        nxt = imp.next_time()
        while nxt is not None and nxt <= now:
            out += [(nxt, d) for d in imp.due(nxt)]
            nxt = imp.next_time()
        imp.enqueue(now, f, *gso)
        now += gap_ns
    while (nxt := imp.next_time()) is not None and (until is None or nxt <= until):
        out += [(max(nxt, 0), d) for d in imp.due(max(nxt, 0))]
    return out


def binomial_ok(count: int, n: int, p: float, sds: float = 6.0) -> bool:
    return abs(count - n * p) <= sds * math.sqrt(n * p * (1 - p))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_loss_is_binomial(seed: int) -> None:
    imp = Impairment(parse("loss 10%".split()), random.Random(seed))
    n = 20_000
    out = run(imp, [frame(100)] * n, 1000)
    lost = imp.stats.drops[ImpairDrop.LOSS]
    assert lost + len(out) == n
    assert binomial_ok(lost, n, 0.10)
    assert imp.stats.sent_packets == len(out)


def test_gilbert_elliott_mean_loss_and_burst_length() -> None:
    # p = 1%, r = 30%: the bad state holds p / (p + r) of the time, a burst lasts 1 / r frames
    imp = Impairment(parse("loss gemodel 1% 30%".split()), random.Random(5))
    lost = [imp.enqueue(0, frame(64)) == 0 for _ in range(200_000)]
    rate = sum(lost) / len(lost)
    assert abs(rate - 0.01 / 0.31) < 0.004
    bursts, run_len = [], 0
    for x in lost:
        if x:
            run_len += 1
        elif run_len:
            bursts.append(run_len)
            run_len = 0
    assert abs(statistics.mean(bursts) - 1 / 0.30) < 0.3


def test_four_state_loss() -> None:
    # p13 = 5% with tc's defaults (p31 = 95%): a two-state chain losing 5% of frames
    imp = Impairment(parse("loss state 5%".split()), random.Random(9))
    n = 100_000
    lost = sum(imp.enqueue(0, frame(64)) == 0 for _ in range(n))
    assert binomial_ok(lost, n, 0.05, sds=10)
    imp = Impairment(parse("loss state 0% 100% 0% 100% 2%".split()), random.Random(9))
    lost = sum(imp.enqueue(0, frame(64)) == 0 for _ in range(n))  # isolated losses only: p14
    assert binomial_ok(lost, n, 0.02 * 0.98 / (1 - 0.02 * 0.02) + 0.0004, sds=10)


def test_rate_pacing_is_exact() -> None:
    imp = Impairment(parse("rate 8mbit".split()))  # 1 MB/s: 1000 bytes take 1 ms
    out = run(imp, [frame(1000, seq=i) for i in range(10)], 0)
    assert [t for t, _ in out] == [(i + 1) * MS for i in range(10)]
    assert [seq_of(d) for _, d in out] == list(range(10))


def test_rate_with_delay_overhead_and_cells() -> None:
    # 1000 + 20 overhead = 1020 bytes -> 22 cells of 48 (+5) = 1166 bytes at 1 MB/s
    imp = Impairment(parse("delay 10ms rate 8mbit 20 48 5".split()))
    out = run(imp, [frame(1000), frame(1000)], 0)
    assert [t for t, _ in out] == [10 * MS + 1_166_000, 10 * MS + 2 * 1_166_000]


def test_rate_counts_each_gso_segment_with_its_headers() -> None:
    imp = Impairment(parse("rate 8mbit".split()))
    hdr_len, mss = 54, 1448
    big = vnet.pack(gso_type=vnet.GSO_TCPV4, gso_size=mss) + bytes(hdr_len + 3 * mss + 100)
    out = run(imp, [big], 0, gso=(mss, hdr_len))
    wire = 3 * (hdr_len + mss) + (hdr_len + 100)
    assert [t for t, _ in out] == [wire * 1000]


def tcp_super_frame(payload: bytes, gso_type: int = vnet.GSO_TCPV4) -> bytes:
    """A TCP/IPv4 super-frame of 1448-byte segments as a TAP with TSO hands it."""
    return tso(super_frame(payload), 1448, gso_type)


def test_rate_hands_a_tcp_super_frame_on_segment_by_segment() -> None:
    """At a low rate each segment leaves at its own wire time: the first is not held until
    the last has been paced (which left TCP below a low rate). Each is a valid packet."""
    imp = Impairment(parse("rate 8mbit".split()))  # 1000 bytes take 1 ms
    payload = bytes(random.Random(1).getrandbits(8) for _ in range(3 * 1448 + 100))
    big = tcp_super_frame(payload)
    out = run(imp, [big], 0, gso=vnet.gso_geometry(big, len(big)))
    hlen = 14 + 20 + 32  # Ethernet, IPv4, TCP with the timestamp option
    sizes = [hlen + 1448] * 3 + [hlen + 100]
    assert [len(d) - vnet.HDR_LEN for _, d in out] == sizes
    assert [t for t, _ in out] == [sum(sizes[: i + 1]) * 1000 for i in range(4)]
    got = b""
    for i, (_, d) in enumerate(out):
        assert d[vnet.GSO_TYPE_OFFSET] == vnet.GSO_NONE  # one segment: no GSO left
        (seg,) = gso_segments(d)
        pkt = Ether(seg)
        ip, tcp = pkt[IP], pkt[TCP]
        assert ip.len == len(seg) - 14
        assert ip.id == (0xFFFE + i) & 0xFFFF  # across the wrap
        assert tcp.seq == (0xFFFFF000 + i * 1448) & 0xFFFFFFFF
        assert tcp.flags == ("PA" if i == 3 else "A")
        chk_ip, chk_tcp = ip.chksum, tcp.chksum
        del ip.chksum, tcp.chksum
        again = Ether(bytes(pkt))
        assert (again[IP].chksum, again[TCP].chksum) == (chk_ip, chk_tcp)
        got += bytes(tcp.payload)
    assert got == payload
    st = imp.stats
    assert (st.sent_packets, st.sent_bytes) == (4, sum(sizes))
    assert (st.backlog_packets, st.backlog_bytes) == (0, 0)


@pytest.mark.parametrize("gso_type", [vnet.GSO_TCPV4, vnet.GSO_TCPV4 | vnet.GSO_ECN])
def test_rate_hands_a_super_frame_on_in_pieces_gso_would_cut_the_same(gso_type: int) -> None:
    """At a fast rate the pieces are smaller super-frames of at most PIECE_NS of wire time;
    cut by GSO they give exactly the segments the whole super-frame gives."""
    imp = Impairment(parse("rate 1gbit".split()))  # 1514 bytes: 12.1 us
    big = tcp_super_frame(
        bytes(random.Random(2).getrandbits(8) for _ in range(45 * 1448)), gso_type
    )
    out = run(imp, [big], 0, gso=vnet.gso_geometry(big, len(big)))
    per = PIECE_NS // 12_112
    assert [len(d) - vnet.HDR_LEN for _, d in out] == [
        66 + k * 1448 for k in (per, per, 45 - 2 * per)
    ]
    assert [t for t, _ in out] == [12_112 * k for k in (per, 2 * per, 45)]
    assert all(d[vnet.GSO_TYPE_OFFSET] == gso_type for _, d in out)
    pieces = [seg for _, d in out for seg in gso_segments(d)]
    assert pieces == gso_segments(big)
    # counted as tc counts a GSO packet: every segment, each with its headers
    st = imp.stats
    assert (st.sent_packets, st.sent_bytes) == (45, 45 * (66 + 1448))


def test_a_super_frame_counts_its_segments_as_tc_does() -> None:
    """tc -s counts a GSO packet as its gso_segs packets and qdisc_pkt_len() bytes (each
    segment's headers included): queued whole (no rate), in the backlog and once sent."""
    imp = Impairment(parse("delay 1ms".split()))
    big = tcp_super_frame(bytes(10 * 1448 + 300))
    assert qdisc_size(len(big) - vnet.HDR_LEN, 1448, 66) == (11, 11 * 66 + 10 * 1448 + 300)
    imp.enqueue(0, big, *vnet.gso_geometry(big, len(big)))
    imp.enqueue(0, frame(1000, seq=1))
    st = imp.stats
    assert (st.backlog_packets, st.backlog_bytes) == (2, 11 * 66 + 10 * 1448 + 300 + 1000)
    out = list(imp.due(MS))
    assert out[0] == big  # handed on whole: only the counting is per segment
    assert (st.sent_packets, st.sent_bytes) == (12, 11 * 66 + 10 * 1448 + 300 + 1000)
    assert (st.backlog_packets, st.backlog_bytes) == (0, 0)


def test_rate_keeps_a_super_frame_it_cannot_cut_whole() -> None:
    """A UDP GSO super-frame (or one whose headers do not parse) travels whole, paced by its
    segments' wire time."""
    imp = Impairment(parse("rate 8mbit".split()))
    big = tcp_super_frame(bytes(3000), gso_type=vnet.GSO_UDP_L4)
    out = run(imp, [big], 0, gso=(1448, 66))
    assert [d for _, d in out] == [big]
    assert [t for t, _ in out] == [(2 * (66 + 1448) + 66 + 104) * 1000]


def test_rate_segments_follow_earlier_frames_in_order() -> None:
    """A super-frame behind a queued frame starts after it; frames behind it wait for its
    last segment."""
    imp = Impairment(parse("rate 8mbit".split()))
    big = tcp_super_frame(bytes(2 * 1448))
    frames = [frame(1000, seq=1), big, frame(1000, seq=2)]
    out: list[tuple[int, bytes]] = []
    for f in frames:
        imp.enqueue(0, f, *vnet.gso_geometry(f, len(f)))
    while (nxt := imp.next_time()) is not None:
        out += [(nxt, d) for d in imp.due(nxt)]
    times = [t for t, _ in out]
    assert times == [1 * MS, 1 * MS + 1514_000, 1 * MS + 2 * 1514_000, 2 * MS + 2 * 1514_000]
    assert seq_of(out[0][1]) == 1 and seq_of(out[-1][1]) == 2


def test_gso_geometry_measures_the_headers() -> None:
    tcp = bytearray(20)
    tcp[12] = 8 << 4  # 32-byte TCP header (options)
    buf = vnet.pack(gso_type=vnet.GSO_TCPV4, gso_size=1448, hdr_len=200, csum_start=34)
    buf += bytes(34) + bytes(tcp) + bytes(12) + bytes(3000)
    assert vnet.gso_geometry(buf, len(buf)) == (1448, 34 + 32)
    assert vnet.gso_geometry(frame(100), len(frame(100))) == (0, 0)


@pytest.mark.parametrize("seed", [1, 2])
def test_jitter_keeps_order_without_reorder(seed: int) -> None:
    imp = Impairment(parse("delay 10ms 9ms".split()), random.Random(seed))
    out = run(imp, [frame(200, seq=i) for i in range(2000)], 100_000)
    assert [seq_of(d) for _, d in out] == list(range(2000))
    times = [t for t, _ in out]
    assert times == sorted(times)
    assert min(times[i] - i * 100_000 for i in range(2000)) >= 1 * MS


def test_jitter_reorders_when_reorder_is_asked_for() -> None:
    imp = Impairment(parse("delay 10ms 9ms reorder 1% gap 1000".split()), random.Random(1))
    out = run(imp, [frame(200, seq=i) for i in range(2000)], 100_000)
    seqs = [seq_of(d) for _, d in out]
    assert sorted(seqs) == list(range(2000))
    assert seqs != list(range(2000))


@pytest.mark.parametrize(("line", "share"), [("reorder 25%", 0.25), ("reorder 50% gap 4", 0.5)])
def test_reorder_fraction(line: str, share: float) -> None:
    imp = Impairment(parse(f"delay 10ms {line}".split()), random.Random(3))
    n = 20_000
    out = run(imp, [frame(100, seq=i) for i in range(n)], 1000)
    assert len(out) == n
    if "gap" in line:
        # every 4th frame at the earliest is a candidate: gap - 1 frames in order, then a draw
        expected = n / (3 + 1 / share)
        assert abs(imp.stats.requeues - expected) < 0.05 * expected
    else:
        assert binomial_ok(imp.stats.requeues, n, share)
    # a reordered frame leaves at once, ahead of frames sent before it
    seqs = [seq_of(d) for _, d in out]
    assert seqs != sorted(seqs)


def test_duplicate() -> None:
    imp = Impairment(parse("duplicate 10%".split()), random.Random(4))
    n = 20_000
    out = run(imp, [frame(100, seq=i) for i in range(n)], 1000)
    assert binomial_ok(len(out) - n, n, 0.10)
    assert imp.stats.duplicated == len(out) - n


def test_corrupt_flips_one_bit_past_the_ethernet_header() -> None:
    imp = Impairment(parse("corrupt 100%".split()), random.Random(6))
    originals = [frame(300, seq=i) for i in range(500)]
    out = run(imp, originals, 1000)
    assert len(out) == 500
    for original, (_, data) in zip(originals, out, strict=True):
        diff = [i for i in range(len(data)) if data[i] != original[i]]
        assert len(diff) == 1
        assert diff[0] >= vnet.HDR_LEN + 14
        assert bin(data[diff[0]] ^ original[diff[0]]).count("1") == 1


def test_corrupt_completes_a_partial_checksum_first() -> None:
    imp = Impairment(parse("corrupt 100%".split()), random.Random(6))
    original = frame(300, flags=vnet.FLAG_NEEDS_CSUM)
    (data,) = [d for _, d in run(imp, [original], 0)]
    assert not data[0] & vnet.FLAG_NEEDS_CSUM
    clean = bytearray(original)
    assert offload.complete_checksum(clean)
    diff = [i for i in range(len(data)) if data[i] != clean[i]]
    assert len(diff) == 1  # the checksum of the clean frame, then one bit


def test_corrupt_drops_gso_super_frames() -> None:
    imp = Impairment(parse("corrupt 100%".split()), random.Random(6))
    big = vnet.pack(gso_type=vnet.GSO_TCPV4, gso_size=1448) + bytes(3000)
    assert imp.enqueue(0, big, 1448, 54) == 0
    assert imp.stats.drops == {ImpairDrop.CORRUPT: 1}


@pytest.mark.parametrize(
    "line",
    [
        "delay 10ms 5ms 30% loss 5% 20% duplicate 5% corrupt 5% reorder 10% gap 3",
        "delay 20ms 10ms distribution paretonormal loss gemodel 5% 20% rate 10mbit",
        "slot 1ms 5ms packets 3 loss state 3% 30% 10% 50% 1%",
    ],
)
def test_same_seed_same_decisions(line: str) -> None:
    def once(seed: int) -> list[tuple[int, bytes]]:
        imp = Impairment(parse(f"{line} seed {seed}".split()))
        return run(imp, [frame(200, seq=i) for i in range(3000)], 50_000)

    assert once(11) == once(11)
    assert once(11) != once(12)


def test_packet_limit_and_queue_drops() -> None:
    imp = Impairment(parse("delay 1s limit 5".split()))
    queued = sum(imp.enqueue(0, frame(100)) for _ in range(10))
    assert queued == 5
    assert imp.stats.drops == {ImpairDrop.QUEUE: 5}
    assert (imp.stats.backlog_packets, imp.stats.backlog_bytes) == (5, 500)
    assert imp.stats.overlimits == 5


def test_default_limit_fits_rate_times_delay() -> None:
    # 100 ms at 100 Mbit/s is 1.25 MB in flight: nothing may be dropped for the queue
    imp = Impairment(parse("delay 100ms rate 100mbit".split()))
    n = 1_250_000 // 1500
    out = run(imp, [frame(1500)] * n, 120_000)  # 1500 B every 120 us = 100 Mbit/s
    assert len(out) == n
    assert imp.stats.dropped == 0
    # a sender twice as fast as the rate overflows it eventually: drops counted as `queue`
    imp = Impairment(parse("delay 10ms rate 1mbit".split()))
    for i in range(20_000):
        imp.enqueue(i * 6_000_000, frame(1500))  # due() never called: nothing leaves
    assert imp.stats.drops.get(ImpairDrop.QUEUE, 0) > 0


def test_slots_release_bursts() -> None:
    imp = Impairment(parse("slot 10ms 10ms packets 2".split()))
    out = run(imp, [frame(100, seq=i) for i in range(6)], 0)
    times = [t for t, _ in out]
    assert times[0] == times[1] < times[2] == times[3] < times[4] == times[5]
    assert times[2] - times[0] == 10 * MS


def test_ecn_marks_instead_of_dropping() -> None:
    imp = Impairment(parse("loss 100% ecn".split()))
    ect = frame(100, tos=0x02)
    out = run(imp, [ect, frame(100, tos=0)], 0)
    assert len(out) == 1
    data = out[0][1]
    ip = vnet.HDR_LEN + 14
    assert data[ip + 1] & 3 == 3
    assert ip_checksum(data[ip : ip + 20]) == 0
    assert imp.stats.ecn_marked == 1 and imp.stats.drops == {ImpairDrop.LOSS: 1}
    plain = bytearray(frame(100, tos=0))
    assert not ecn_mark(plain, vnet.HDR_LEN)


def test_change_keeps_queued_frames() -> None:
    imp = Impairment(parse("delay 100ms".split()))
    for i in range(3):
        imp.enqueue(0, frame(100, seq=i))
    imp.change(parse("delay 1ms".split()), now=0)
    imp.enqueue(0, frame(100, seq=3))
    out = run(imp, [], 0)
    assert [seq_of(d) for _, d in out] == [0, 1, 2, 3]  # no overtaking the older frames
    assert out[0][0] == 100 * MS


@pytest.mark.parametrize("name", ["normal", "pareto", "paretonormal"])
def test_distribution_tables(name: str) -> None:
    table = dist_table(name)
    assert len(table) == 4096
    assert all(-32768 <= x <= 32767 for x in table)
    rnd = CorrelatedRandom(random.Random(2), 0)
    draws = [tabledist(50 * MS, 10 * MS, rnd, table) for _ in range(20_000)]
    assert abs(statistics.mean(draws) - 50 * MS) < 1 * MS
    assert 7 * MS < statistics.pstdev(draws) < 11 * MS


def test_uniform_jitter_stays_in_range() -> None:
    rnd = CorrelatedRandom(random.Random(2), 0)
    draws = [tabledist(50 * MS, 10 * MS, rnd, None) for _ in range(5000)]
    assert min(draws) >= 40 * MS and max(draws) < 60 * MS


def test_correlation_makes_draws_follow_each_other() -> None:
    def mean_step(corr: float) -> float:
        rnd = CorrelatedRandom(random.Random(1), corr)
        xs = [rnd.next() for _ in range(5000)]
        return statistics.mean(abs(a - b) for a, b in itertools.pairwise(xs))

    assert mean_step(90) < mean_step(0) / 3


def test_queue_is_empty_without_frames() -> None:
    imp = Impairment(Netem())
    assert imp.next_time() is None
    assert list(imp.due(10**12)) == []


def test_complete_checksum_refuses_offsets_outside_the_ip_packet() -> None:
    """A header whose checksum would start inside the Ethernet header, or end past the frame,
    is refused and the frame left as it was (the corrupt option then drops it)."""
    for start, offset in ((4, 6), (34, 400)):
        buf = bytearray(vnet.pack(vnet.FLAG_NEEDS_CSUM, vnet.GSO_NONE, 0, 0, start, offset))
        buf += bytes(100)
        before = bytes(buf)
        assert not offload.complete_checksum(buf)
        assert bytes(buf) == before


def test_complete_checksum_gives_a_checksum_the_receiver_accepts() -> None:
    # a UDP frame as a socket hands it to a TAP with offloads: NEEDS_CSUM and only the
    # pseudo-header sum in the field
    original = bytearray(frame(301, flags=vnet.FLAG_NEEDS_CSUM))
    ip = vnet.HDR_LEN + 14
    udp_start = ip + 20
    src, dst = bytes(original[ip + 12 : ip + 16]), bytes(original[ip + 16 : ip + 20])
    udp_len = len(original) - udp_start
    pseudo = src + dst + struct.pack("!BBH", 0, 17, udp_len)
    partial = sum(struct.unpack("!6H", pseudo))
    while partial >> 16:
        partial = (partial & 0xFFFF) + (partial >> 16)
    struct.pack_into("!H", original, udp_start + 6, partial)
    assert offload.complete_checksum(original)
    assert not original[0] & vnet.FLAG_NEEDS_CSUM
    segment = bytes(original[udp_start:]) + b"\0"
    body = pseudo + segment[: udp_len + (udp_len % 2)]
    assert ip_checksum(body) == 0  # the receiver's check: the whole sum comes to 0xFFFF


def test_due_leaves_what_is_not_taken() -> None:
    # the relay takes at most a batch of due frames at a time: the rest must stay queued
    from itertools import islice

    imp = Impairment(parse("delay 1ms".split()))
    for i in range(10):
        imp.enqueue(0, frame(100, seq=i))
    first = [seq_of(d) for d in islice(imp.due(MS), 4)]
    assert first == [0, 1, 2, 3] and len(imp) == 6 and imp.stats.sent_packets == 4
    imp.release_all()
    assert [seq_of(d) for d in imp.due(0)] == [4, 5, 6, 7, 8, 9]
    assert imp.stats.backlog_packets == 0
