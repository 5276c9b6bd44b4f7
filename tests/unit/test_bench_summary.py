"""The bench's reduction of rounds to medians, spreads and per-round ratios."""

import pytest

from tapveth.bench.summary import (
    KERNEL,
    Samples,
    add_round,
    medians,
    ratios,
    round_ratios,
    spreads,
    table,
)


def _samples() -> Samples:
    s: Samples = {}
    for k, t in ((10.0, 20.0), (30.0, 30.0), (20.0, 80.0)):
        add_round(s, KERNEL, {"tcp1_gbps": k})
        add_round(s, "tapveth", {"tcp1_gbps": t, "rss_mib": t})
    return s


def test_median_and_spread_of_rounds() -> None:
    s = _samples()
    assert medians(s)[KERNEL]["tcp1_gbps"] == 20.0
    assert medians(s)["tapveth"]["tcp1_gbps"] == 30.0
    assert spreads(s)["tapveth"]["tcp1_gbps"] == (20.0, 80.0)


def test_ratios_pair_each_round_with_the_kernel_of_that_round() -> None:
    s = _samples()
    assert round_ratios(s)["tapveth"]["tcp1_gbps"] == pytest.approx([2.0, 1.0, 4.0])
    assert ratios(medians(s))["tapveth"]["tcp1_gbps"] == pytest.approx(1.5)
    assert "rss_mib" not in round_ratios(s)["tapveth"]  # the kernel has no relay to weigh


def test_table_shows_median_spread_and_ratio() -> None:
    text = table(_samples())
    row = next(line for line in text.splitlines() if line.startswith("TCP 1 stream A->B"))
    assert "20.00 [10.00..30.00]" in row
    assert "30.00 [20.00..80.00]" in row
    assert row.split()[-3] == "2.00x"  # median of the per-round ratios 2, 1, 4


def test_a_single_round_prints_plain_figures() -> None:
    s: Samples = {}
    add_round(s, KERNEL, {"tcp_rr": 1000.0})
    add_round(s, "tapveth", {"tcp_rr": 1500.0})
    row = next(line for line in table(s).splitlines() if line.startswith("TCP 1-byte"))
    assert "[" not in row and "1.50x" in row
