"""The statistics of the impairment accuracy benchmark: binomial intervals, Kolmogorov-Smirnov
tests, what a Gilbert-Elliott chain should give, loss bursts, percentile summaries and an
independent simulation of "delay drawn from the requested normal, then kept in order". Pure:
numbers in, numbers out, so each judgement of `bench --impair` is unit-tested without root.

Written here rather than taken from scipy: the four formulas needed are short, exact enough
for 100k samples, and keep the benchmark free of a large optional dependency."""

import bisect
import math
import random
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

Z999 = statistics.NormalDist().inv_cdf(1 - 0.001 / 2)  # two-sided 99.9%: 3.2905


def wilson(successes: int, trials: int, z: float = Z999) -> tuple[float, float]:
    """Wilson's score interval for a binomial proportion (default 99.9%): the probabilities
    that the observed count does not reject. Unlike the normal approximation it stays inside
    [0, 1] and is sound for small counts (a 1% rate over a few thousand frames)."""
    if trials <= 0:
        raise ValueError("wilson: no trials")
    p = successes / trials
    z2 = z * z
    centre = (p + z2 / (2 * trials)) / (1 + z2 / trials)
    half = z * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials)) / (1 + z2 / trials)
    return max(0.0, centre - half), min(1.0, centre + half)


def kolmogorov_p(d: float, n_eff: float) -> float:
    """P(D >= d) for the Kolmogorov-Smirnov statistic with effective sample size n_eff (n for
    one sample, n*m/(n+m) for two), by the asymptotic series with Stephens' small-sample
    correction: Q(l) = 2 sum (-1)^(j-1) exp(-2 j^2 l^2), l = (sqrt(n) + 0.12 + 0.11/sqrt(n)) d."""
    if d <= 0:
        return 1.0
    root = math.sqrt(n_eff)
    lam = (root + 0.12 + 0.11 / root) * d
    if lam < 0.2:  # the series converges slowly there and the answer is 1 to 15 digits
        return 1.0
    total = 0.0
    for j in range(1, 101):
        term = 2 * (-1) ** (j - 1) * math.exp(-2 * j * j * lam * lam)
        total += term
        if abs(term) < 1e-12:
            break
    return max(0.0, min(1.0, total))


def ks_one(samples: Sequence[float], cdf: "statistics.NormalDist") -> tuple[float, float]:
    """One-sample K-S of samples against a normal distribution: (D, p-value)."""
    xs = sorted(samples)
    n = len(xs)
    if n == 0:
        raise ValueError("ks_one: no samples")
    d = 0.0
    for i, x in enumerate(xs):
        f = cdf.cdf(x)
        d = max(d, (i + 1) / n - f, f - i / n)
    return d, kolmogorov_p(d, n)


def ks_two(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """Two-sample K-S: (D, p-value), D the largest gap between the two empirical CDFs."""
    xa, xb = sorted(a), sorted(b)
    n, m = len(xa), len(xb)
    if n == 0 or m == 0:
        raise ValueError("ks_two: no samples")
    i = j = 0
    d = 0.0
    while i < n and j < m:
        x = min(xa[i], xb[j])
        while i < n and xa[i] <= x:
            i += 1
        while j < m and xb[j] <= x:
            j += 1
        d = max(d, abs(i / n - j / m))
    return d, kolmogorov_p(d, n * m / (n + m))


@dataclass(frozen=True)
class GeExpectation:
    loss: float  # stationary probability that a frame is lost
    burst: float  # mean length of a run of consecutive lost frames


def gemodel_expectation(
    p: float, r: float, one_minus_h: float, one_minus_k: float
) -> GeExpectation:
    """What `loss gemodel P R 1-H 1-K` (probabilities in 0..1) should give, from the chain of
    tc-netem(8): Good -> Bad with P, Bad -> Good with R, a frame lost with 1-K in Good and 1-H
    in Bad. Stationary Bad share pi_B = P / (P + R); mean loss = pi_G (1-K) + pi_B (1-H).
    A burst starts at a loss after a delivery, so the mean burst length is
    P(loss) / P(delivered, then lost), the pair summed over the two states of each frame."""
    if p + r <= 0:
        raise ValueError("gemodel: P + R must be above 0")
    pi = {"G": r / (p + r), "B": p / (p + r)}
    lose = {"G": one_minus_k, "B": one_minus_h}
    step = {("G", "G"): 1 - p, ("G", "B"): p, ("B", "G"): r, ("B", "B"): 1 - r}
    loss = sum(pi[s] * lose[s] for s in pi)
    starts = sum(pi[a] * (1 - lose[a]) * step[a, b] * lose[b] for a in pi for b in pi)
    return GeExpectation(loss, loss / starts if starts > 0 else math.inf)


def bursts(lost: Sequence[bool]) -> list[int]:
    """The lengths of the runs of consecutive True (lost frames) in order."""
    out: list[int] = []
    run = 0
    for x in lost:
        if x:
            run += 1
        elif run:
            out.append(run)
            run = 0
    if run:
        out.append(run)
    return out


def percentile(sorted_xs: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation between closest ranks."""
    if not sorted_xs:
        raise ValueError("percentile: no samples")
    pos = (len(sorted_xs) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_xs) - 1)
    return sorted_xs[lo] + (sorted_xs[hi] - sorted_xs[lo]) * (pos - lo)


def summary(xs: Sequence[float]) -> dict[str, float]:
    """n, mean, stddev, min, p1, p50, p99, max of a sample."""
    s = sorted(xs)
    return {
        "n": float(len(s)),
        "mean": statistics.fmean(s),
        "stddev": statistics.stdev(s) if len(s) > 1 else 0.0,
        "min": s[0],
        "p1": percentile(s, 1),
        "p50": percentile(s, 50),
        "p99": percentile(s, 99),
        "max": s[-1],
    }


def in_order_delays(
    send_times: Sequence[float], mean: float, stddev: float, seed: int = 1
) -> list[float]:
    """The delays a receiver would see if each frame drew its delay from N(mean, stddev)
    (negative draws taken as 0) and never overtook the frame before it: arrival_i =
    max(send_i + draw_i, arrival_(i-1)). Drawn from the requested normal itself, independent
    of tapveth's tables; send_times in the same unit as mean, in send order."""
    rng = random.Random(seed)
    out: list[float] = []
    last = -math.inf
    for t in send_times:
        arrive = max(t + max(0.0, rng.gauss(mean, stddev)), last)
        last = arrive
        out.append(arrive - t)
    return out


def ks_distance_sorted(sorted_xs: Sequence[float], sorted_ref: Sequence[float]) -> float:
    """The K-S distance between a sample's empirical CDF and a (large) reference sample's, both
    sorted: the largest gap, looked at on both sides of each of the sample's steps (between
    them the sample's CDF is flat, so its gap to the reference is largest at an end)."""
    n, m = len(sorted_xs), len(sorted_ref)
    if n == 0 or m == 0:
        raise ValueError("ks_distance_sorted: no samples")
    left, right = bisect.bisect_left, bisect.bisect_right
    d = 0.0
    for i, x in enumerate(sorted_xs):
        below, upto = left(sorted_ref, x) / m, right(sorted_ref, x) / m
        d = max(d, abs((i + 1) / n - upto), abs(i / n - below))
    return d


def ks_monte_carlo(
    samples: Sequence[float], simulate: Callable[[int], list[float]], runs: int = 100
) -> tuple[float, float]:
    """K-S of samples against a simulated process, with the p-value taken from the process
    itself: (D, p). For samples that are not independent, where Kolmogorov's p-value does not
    hold: delays kept in order are correlated over many frames (two simulated runs of 4000
    such delays at 1 kpps failed the two-sample test at 1% in 18 of 100 tries). simulate(k)
    gives run k of the process (independent runs, same conditions as the samples). The
    reference is runs 0..9 pooled; D of the samples against it is compared with the D of each
    of `runs` further runs against it: p = (1 + how many reach D) / (1 + runs)."""
    ref = sorted(x for k in range(10) for x in simulate(k))
    d = ks_distance_sorted(sorted(samples), ref)
    above = sum(ks_distance_sorted(sorted(simulate(10 + k)), ref) >= d for k in range(runs))
    return d, (1 + above) / (1 + runs)


def moving_baseline(
    times: Sequence[float],
    ref_times: Sequence[float],
    ref_values: Sequence[float],
    half_width: float,
) -> list[float]:
    """For each of `times`, the median of the reference values taken within half_width of it
    (the nearest one if none is): the state of a slowly drifting quantity, here the relay's
    own one-way delay, at the moment each impaired sample was sent."""
    if not ref_times or len(ref_times) != len(ref_values):
        raise ValueError("moving_baseline: no reference, or times and values of unlike length")
    pairs = sorted(zip(ref_times, ref_values, strict=True))
    ts = [t for t, _ in pairs]
    vs = [v for _, v in pairs]
    out: list[float] = []
    for t in times:
        lo = bisect.bisect_left(ts, t - half_width)
        hi = bisect.bisect_right(ts, t + half_width)
        if hi > lo:
            out.append(statistics.median(vs[lo:hi]))
        else:
            i = bisect.bisect_left(ts, t)
            near = [j for j in (i - 1, i) if 0 <= j < len(ts)]
            out.append(vs[min(near, key=lambda j: abs(ts[j] - t))])
    return out


def _d_against_own_normal(sorted_xs: Sequence[float]) -> float:
    """The K-S distance between a sorted sample and the normal of its own mean and sd."""
    n = len(sorted_xs)
    cdf = statistics.NormalDist(statistics.fmean(sorted_xs), statistics.stdev(sorted_xs)).cdf
    d = 0.0
    for i, x in enumerate(sorted_xs):
        f = cdf(x)
        d = max(d, (i + 1) / n - f, f - i / n)
    return d


def lilliefors(samples: Sequence[float], sims: int = 200, seed: int = 1) -> tuple[float, float]:
    """Lilliefors' test of shape: the K-S distance D between the samples and the normal with
    their own mean and sd, and its p-value. Estimating the two parameters from the sample
    makes D smaller than Kolmogorov's table assumes, so p is taken by Monte Carlo: the share of
    `sims` normal samples of the same size whose own D reaches it, (hits + 1) / (sims + 1).
    It answers "is this a normal curve?" apart from where it sits and how wide it is, which
    are judged on their own."""
    n = len(samples)
    if n < 3:
        raise ValueError("lilliefors: fewer than 3 samples")
    d = _d_against_own_normal(sorted(samples))
    rng = random.Random(seed)
    hits = 0
    for _ in range(sims):
        sim = sorted(rng.gauss(0.0, 1.0) for _ in range(n))
        hits += _d_against_own_normal(sim) >= d
    return d, (hits + 1) / (sims + 1)


def mean_stderr(stddev: float, n: int) -> float:
    """The standard error of a sample mean of n independent values."""
    return stddev / math.sqrt(n)


def stddev_stderr(stddev: float, n: int) -> float:
    """The standard error of a normal sample's standard deviation (sigma / sqrt(2 (n - 1))):
    how far the measured sd strays from the true one by sampling alone, 4.1% of it at n = 300
    and 0.5% at n = 20000."""
    return stddev / math.sqrt(2 * (n - 1)) if n > 1 else math.inf


def reordered(seqs_in_arrival_order: Sequence[int]) -> int:
    """How many frames arrived after a frame with a higher sequence number."""
    top = -1
    late = 0
    for s in seqs_in_arrival_order:
        if s < top:
            late += 1
        else:
            top = s
    return late


def within(measured: float, target: float, tolerance: float) -> bool:
    """|measured - target| <= tolerance."""
    return abs(measured - target) <= tolerance
