"""The statistics and frame judging of `bench --impair`, against known values."""

import random
import socket
import statistics
import time

import pytest

from tapveth.bench import accuracy as acc
from tapveth.bench.probes import _TS, ETH_HLEN, SO_TIMESTAMPNS, _recv_mono, frame, judge

SRC = bytes.fromhex("020000000001")


def test_wilson_matches_the_textbook_value() -> None:
    # 95%: 10 of 100 -> [0.0552, 0.1744] (Wilson 1927; Newcombe 1998 table I style)
    lo, hi = acc.wilson(10, 100, z=statistics.NormalDist().inv_cdf(0.975))
    assert lo == pytest.approx(0.0552, abs=1e-4)
    assert hi == pytest.approx(0.1744, abs=1e-4)


def test_wilson_999_holds_the_true_rate_of_a_fair_draw() -> None:
    rng = random.Random(3)
    hits = sum(rng.random() < 0.01 for _ in range(100_000))
    lo, hi = acc.wilson(hits, 100_000)
    assert lo < 0.01 < hi
    assert pytest.approx(3.2905, abs=1e-4) == acc.Z999


def test_wilson_edges() -> None:
    assert acc.wilson(0, 50)[0] == 0.0
    assert acc.wilson(50, 50)[1] == 1.0
    with pytest.raises(ValueError):
        acc.wilson(0, 0)


def test_kolmogorov_p_known_points() -> None:
    # the asymptotic Kolmogorov distribution: Q(1.3581) = 0.05, Q(1.6276) = 0.01
    n = 1e9
    assert acc.kolmogorov_p(1.3581 / n**0.5, n) == pytest.approx(0.05, abs=1e-3)
    assert acc.kolmogorov_p(1.6276 / n**0.5, n) == pytest.approx(0.01, abs=1e-3)
    assert acc.kolmogorov_p(0.0, 100) == 1.0
    assert acc.kolmogorov_p(1.0, 100) < 1e-12


def test_ks_one_accepts_its_own_distribution_and_rejects_a_shift() -> None:
    rng = random.Random(5)
    nd = statistics.NormalDist(20.0, 5.0)
    xs = [rng.gauss(20.0, 5.0) for _ in range(5000)]
    assert acc.ks_one(xs, nd)[1] > 0.01
    assert acc.ks_one([x + 1.0 for x in xs], nd)[1] < 1e-6


def test_ks_one_statistic_by_hand() -> None:
    # one sample at the median: D = 0.5
    d, _ = acc.ks_one([0.0], statistics.NormalDist(0, 1))
    assert d == pytest.approx(0.5)


def test_ks_two() -> None:
    rng = random.Random(9)
    a = [rng.gauss(0, 1) for _ in range(3000)]
    b = [rng.gauss(0, 1) for _ in range(3000)]
    assert acc.ks_two(a, b)[1] > 0.01
    assert acc.ks_two(a, [x + 0.3 for x in b])[1] < 1e-6
    assert acc.ks_two([1.0, 2.0], [3.0, 4.0])[0] == pytest.approx(1.0)
    assert acc.ks_two([1.0, 2.0], [1.0, 2.0])[0] == 0.0


def test_gemodel_simple_gilbert() -> None:
    # 1-K = 0, 1-H = 1: loss = p / (p + r), bursts geometric with mean 1 / r
    e = acc.gemodel_expectation(0.01, 0.30, 1.0, 0.0)
    assert e.loss == pytest.approx(0.01 / 0.31)
    assert e.burst == pytest.approx(1 / 0.30)


def test_gemodel_bernoulli_special_case() -> None:
    # both states lose 10%: plain random loss, bursts of mean 1 / (1 - 0.1)
    e = acc.gemodel_expectation(0.2, 0.5, 0.1, 0.1)
    assert e.loss == pytest.approx(0.1)
    assert e.burst == pytest.approx(1 / 0.9)


def test_gemodel_against_a_simulation_of_the_chain() -> None:
    p, r, h1, k1 = 0.05, 0.4, 0.7, 0.02
    rng = random.Random(11)
    bad = False
    lost = []
    for _ in range(400_000):
        lost.append(rng.random() < (h1 if bad else k1))
        bad = (rng.random() >= r) if bad else (rng.random() < p)
    e = acc.gemodel_expectation(p, r, h1, k1)
    assert sum(lost) / len(lost) == pytest.approx(e.loss, rel=0.03)
    assert statistics.fmean(acc.bursts(lost)) == pytest.approx(e.burst, rel=0.03)


def test_bursts() -> None:
    assert acc.bursts([]) == []
    assert acc.bursts([True, True, False, True, False, False, True, True, True]) == [2, 1, 3]


def test_percentile_and_summary() -> None:
    xs = [float(i) for i in range(101)]
    assert acc.percentile(xs, 50) == 50.0
    assert acc.percentile(xs, 99) == 99.0
    assert acc.percentile([1.0, 2.0], 50) == 1.5
    s = acc.summary(xs)
    assert (s["n"], s["min"], s["max"], s["p50"]) == (101.0, 0.0, 100.0, 50.0)


def test_in_order_delays_sparse_is_the_normal_dense_is_shifted() -> None:
    sparse = acc.in_order_delays([i * 100.0 for i in range(5000)], 20.0, 5.0, seed=1)
    assert statistics.fmean(sparse) == pytest.approx(20.0, abs=0.3)
    assert statistics.stdev(sparse) == pytest.approx(5.0, rel=0.05)
    dense = acc.in_order_delays([i * 1.0 for i in range(5000)], 20.0, 5.0, seed=1)
    assert statistics.fmean(dense) > 22.0  # order kept: a late frame holds the next ones
    assert statistics.stdev(dense) < 5.0
    arrivals = [t + d for t, d in zip(range(5000), dense, strict=True)]
    assert arrivals == sorted(arrivals)


def test_reordered() -> None:
    assert acc.reordered([0, 1, 2, 3]) == 0
    assert acc.reordered([0, 2, 1, 3]) == 1
    assert acc.reordered([3, 0, 1, 2]) == 3


def test_judge_intact_frame() -> None:
    j = judge(frame(1234, SRC, 99))
    assert j is not None
    assert (j.seq, j.bits, j.offset, j.sent_ns) == (1234, 0, -1, 99)


def test_judge_finds_every_single_flipped_bit() -> None:
    sent = frame(777, SRC, 123456789)
    for bit in range(ETH_HLEN * 8, 8 * len(sent)):
        data = bytearray(sent)
        data[bit // 8] ^= 1 << (bit % 8)
        j = judge(bytes(data))
        assert j is not None
        assert (j.seq, j.sent_ns, j.bits, j.offset) == (777, 123456789, 1, bit // 8), bit


def test_judge_counts_two_bits_and_ignores_other_protocols() -> None:
    data = bytearray(frame(5, SRC, 1))
    data[-1] ^= 0x03
    j = judge(bytes(data))
    assert j is not None and j.bits == 2
    other = bytearray(frame(5, SRC, 1))
    other[12:14] = b"\x08\x00"
    assert judge(bytes(other)) is None


def test_ks_monte_carlo_accepts_the_process_and_rejects_a_shift() -> None:
    sends = [i * 1000.0 for i in range(2000)]

    def sim(k: int) -> list[float]:
        return acc.in_order_delays(sends, 20000.0, 5000.0, seed=500 + k)

    same = acc.in_order_delays(sends, 20000.0, 5000.0, seed=3)
    assert acc.ks_monte_carlo(same, sim, runs=40)[1] > 0.01
    shifted = [x + 3000.0 for x in same]
    assert acc.ks_monte_carlo(shifted, sim, runs=40)[1] < 0.05


def test_standard_errors() -> None:
    assert acc.stddev_stderr(5.0, 301) == pytest.approx(5.0 / 24.49, rel=1e-3)
    assert acc.mean_stderr(5.0, 100) == pytest.approx(0.5)


def test_receive_timestamp_is_converted_to_the_monotonic_clock() -> None:
    # a kernel timestamp (CLOCK_REALTIME) 2 ms ago reads as 2 ms before CLOCK_MONOTONIC's now,
    # however far apart the two clocks are
    real = time.time_ns() - 2_000_000
    stamp = _TS.pack(real // 1_000_000_000, real % 1_000_000_000)
    before = time.monotonic_ns()
    got = _recv_mono([(socket.SOL_SOCKET, SO_TIMESTAMPNS, stamp)])
    after = time.monotonic_ns()
    assert before - 2_000_000 - 1_000_000 < got <= after - 2_000_000 + 1_000_000
    assert abs(time.time_ns() - time.monotonic_ns()) > 10**9  # the clocks do differ here


def test_receive_without_timestamp_reads_the_monotonic_clock_now() -> None:
    before = time.monotonic_ns()
    assert before <= _recv_mono([]) <= time.monotonic_ns()


def test_moving_baseline_follows_a_step_and_falls_back_to_the_nearest() -> None:
    ref_t = [float(t) for t in range(100)]
    ref_v = [100.0 if t < 50 else 200.0 for t in range(100)]
    got = acc.moving_baseline([10.0, 49.0, 90.0], ref_t, ref_v, 5.0)
    assert got[0] == 100.0 and got[2] == 200.0
    assert got[1] == 100.0  # 44..54: six at 100, five at 200
    # nothing within the half width: the nearest reference, on either side
    assert acc.moving_baseline([-50.0, 500.0], ref_t, ref_v, 5.0) == [100.0, 200.0]
    with pytest.raises(ValueError):
        acc.moving_baseline([1.0], [], [], 5.0)


def test_moving_baseline_is_a_median_so_one_outlier_does_not_move_it() -> None:
    ref_t = [float(t) for t in range(21)]
    ref_v = [50.0] * 21
    ref_v[10] = 10_000.0
    assert acc.moving_baseline([10.0], ref_t, ref_v, 10.0) == [50.0]


def test_lilliefors_accepts_a_normal_wherever_it_sits_and_rejects_a_uniform() -> None:
    rng = random.Random(8)
    normal = [rng.gauss(20_080.0, 5_000.0) for _ in range(2000)]  # shifted: shape still passes
    d, p = acc.lilliefors(normal, sims=100)
    assert p >= 0.01
    assert 0 < d < 0.05
    uniform = [rng.uniform(0.0, 1.0) for _ in range(2000)]
    d2, p2 = acc.lilliefors(uniform, sims=100)
    assert p2 <= 1 / 101 + 1e-12  # no simulated normal strays as far
    assert d2 > d


def test_lilliefors_p_is_a_monte_carlo_share_and_needs_samples() -> None:
    rng = random.Random(8)
    xs = [rng.gauss(0.0, 1.0) for _ in range(200)]
    _, p = acc.lilliefors(xs, sims=49, seed=3)
    assert (p * 50) == pytest.approx(round(p * 50))  # (hits + 1) / (sims + 1)
    assert acc.lilliefors(xs, sims=49, seed=3) == acc.lilliefors(xs, sims=49, seed=3)
    with pytest.raises(ValueError):
        acc.lilliefors([1.0, 2.0])
