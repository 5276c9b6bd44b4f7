"""What `tapveth bench --designs` prints, without I/O: one row a design, one column a figure,
each the median of its rounds with [lowest..highest], and the ping's ratio to the daemon's
measured in the same round."""

import statistics
from dataclasses import dataclass

from tapveth.bench.summary import Samples, fmt

DAEMON = "tapveth"  # the daemon as shipped: the reference of the ratio column


@dataclass(frozen=True)
class Figure:
    key: str
    label: str


FIGURES = (
    Figure("ping_p50_us", "ping p50 us"),
    Figure("ping_p99_us", "ping p99 us"),
    Figure("udp64_kpps", "UDP 64 B kpps"),
    Figure("tcp1_gbps", "TCP 1 Gbit/s"),
    Figure("tcp4_gbps", "TCP 4 Gbit/s"),
    Figure("cpu_s_per_gb", "CPU s/GB"),
)


def cell(values: list[float] | None) -> str:
    """median [lowest..highest], or the value alone for one round, "-" for none."""
    if not values:
        return "-"
    mid = fmt(statistics.median(values))
    if len(values) == 1:
        return mid
    return f"{mid} [{fmt(min(values))}..{fmt(max(values))}]"


def ratio_to(samples: Samples, name: str, key: str, ref: str = DAEMON) -> float | None:
    """Median over the rounds of name's figure divided by ref's of the same round."""
    base = samples.get(ref, {}).get(key, [])
    pairs = [v / r for v, r in zip(samples.get(name, {}).get(key, []), base, strict=False) if r]
    return statistics.median(pairs) if pairs else None


def design_table(samples: Samples) -> str:
    header = ["design", *[f.label for f in FIGURES], f"ping p50 / {DAEMON}"]
    rows = [
        [
            name,
            *[cell(per.get(f.key)) for f in FIGURES],
            fmt(ratio_to(samples, name, "ping_p50_us"), ratio=True),
        ]
        for name, per in samples.items()
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
        for r in [header, *rows]
    )
