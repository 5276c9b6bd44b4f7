"""What `tapveth bench` reports, without I/O: the metrics, and repeated samples reduced to a
median with its spread, each ratio to the kernel veth of the same run and round.

The machine a benchmark runs on is noisy, so every figure is measured in several rounds, with
the subjects interleaved (kernel, tapveth, ... then the reverse order), and reported as the
median of its rounds with the lowest and highest beside it."""

import statistics
from dataclasses import dataclass

KERNEL = "kernel veth"

# subject -> metric key -> one sample per round
Samples = dict[str, dict[str, list[float]]]


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    unit: str
    better: str  # "higher" or "lower"
    target: str = ""


METRICS = [
    Metric("ping_p50_us", "ping RTT p50", "us", "lower", "<= 1.5x best C relay"),
    Metric("ping_p99_us", "ping RTT p99", "us", "lower", "<= 1.5x best C relay"),
    Metric("sockperf_p50_us", "sockperf UDP RTT p50", "us", "lower"),
    Metric("sockperf_p99_us", "sockperf UDP RTT p99", "us", "lower"),
    Metric("tcp_rr", "TCP 1-byte req/resp", "tps", "higher", ">= 1.0x"),
    Metric("tcp1_gbps", "TCP 1 stream A->B", "Gbit/s", "higher", ">= 1.0x"),
    Metric("tcp1r_gbps", "TCP 1 stream B->A", "Gbit/s", "higher", ">= 1.0x"),
    Metric("tcp4_gbps", "TCP 4 streams A->B", "Gbit/s", "higher"),
    Metric("tcp4r_gbps", "TCP 4 streams B->A", "Gbit/s", "higher"),
    Metric("udp64_kpps", "UDP 64 B delivered", "kpps", "higher", ">= 0.8x"),
    Metric("udp64_loss", "UDP 64 B loss", "%", "lower"),
    Metric("cpu_s_per_gb", "relay CPU per GB (TCP)", "s/GB", "lower", "<= 0.2 s/GB"),
    Metric("rss_mib", "relay RSS", "MiB", "lower", "<= 30 MiB"),
    Metric("idle_cpu_pct", "relay CPU when idle", "%", "lower", "0%"),
]


def add_round(samples: Samples, subject: str, figures: dict[str, float]) -> None:
    """Record one round's figures for a subject."""
    per = samples.setdefault(subject, {})
    for key, value in figures.items():
        per.setdefault(key, []).append(value)


def medians(samples: Samples) -> dict[str, dict[str, float]]:
    return {n: {k: statistics.median(v) for k, v in per.items() if v} for n, per in samples.items()}


def spreads(samples: Samples) -> dict[str, dict[str, tuple[float, float]]]:
    """(lowest, highest) of each figure over the rounds."""
    return {n: {k: (min(v), max(v)) for k, v in per.items() if v} for n, per in samples.items()}


def ratios(results: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """Each subject's figure divided by the kernel veth's (medians by medians)."""
    base = results.get(KERNEL, {})
    return {
        name: {k: v / base[k] for k, v in vals.items() if base.get(k)}
        for name, vals in results.items()
    }


def round_ratios(samples: Samples) -> dict[str, dict[str, list[float]]]:
    """Ratios to the kernel veth measured in the same round: the spread a ratio really has."""
    base = samples.get(KERNEL, {})
    out: dict[str, dict[str, list[float]]] = {}
    for name, per in samples.items():
        out[name] = {}
        for key, values in per.items():
            ref = base.get(key, [])
            pairs = [(v, r) for v, r in zip(values, ref, strict=False) if r]
            if pairs:
                out[name][key] = [v / r for v, r in pairs]
    return out


def fmt(v: float | None, ratio: bool = False) -> str:
    if v is None:
        return "-"
    if ratio:
        return f"{v:.2f}x"
    if abs(v) >= 100:
        return f"{v:.0f}"
    return f"{v:.2f}"


def _cell(values: list[float] | None) -> str:
    if not values:
        return "-"
    mid = fmt(statistics.median(values))
    if len(values) == 1:
        return mid
    return f"{mid} [{fmt(min(values))}..{fmt(max(values))}]"


def table(samples: Samples) -> str:
    """One row a metric: each subject's median [lowest..highest], then each ratio to the kernel
    veth (median of the per-round ratios)."""
    names = list(samples)
    per_round = round_ratios(samples)
    others = [n for n in names if n != KERNEL]
    header = ["metric", "unit", *names, *[f"{n} / kernel" for n in others], "target"]
    rows = []
    for m in METRICS:
        if not any(m.key in samples[n] for n in names):
            continue
        row = [m.label, m.unit]
        row += [_cell(samples[n].get(m.key)) for n in names]
        for n in others:
            r = per_round.get(n, {}).get(m.key)
            row.append(fmt(statistics.median(r), ratio=True) if r else "-")
        row.append(m.target)
        rows.append(row)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
        for r in [header, *rows]
    )
