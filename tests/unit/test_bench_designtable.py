"""The designs bench's table: medians with their spread, and the ping's ratio to the daemon
taken round by round."""

import pytest

from tapveth.bench.designtable import DAEMON, FIGURES, cell, design_table, ratio_to


def test_cell_median_and_spread() -> None:
    assert cell([150.0, 120.0, 300.0]) == "150 [120..300]"
    assert cell([1.5]) == "1.50"
    assert cell([]) == "-"
    assert cell(None) == "-"


def test_ratio_is_the_median_of_same_round_ratios() -> None:
    samples = {
        DAEMON: {"ping_p50_us": [100.0, 200.0, 400.0]},
        "thread": {"ping_p50_us": [50.0, 200.0, 100.0]},
    }
    # per round 0.5, 1.0, 0.25: the median is 0.5, not 100/200 of the medians
    assert ratio_to(samples, "thread", "ping_p50_us") == pytest.approx(0.5)
    assert ratio_to(samples, DAEMON, "ping_p50_us") == pytest.approx(1.0)


def test_ratio_missing_reference_or_zero() -> None:
    assert ratio_to({"x": {"ping_p50_us": [1.0]}}, "x", "ping_p50_us") is None
    zero = {DAEMON: {"ping_p50_us": [0.0]}, "x": {"ping_p50_us": [1.0]}}
    assert ratio_to(zero, "x", "ping_p50_us") is None


def test_table_has_a_row_per_design_and_a_column_per_figure() -> None:
    samples = {
        "kernel veth": {"ping_p50_us": [35.0, 36.0], "tcp1_gbps": [17.0, 18.0]},
        DAEMON: {"ping_p50_us": [170.0, 180.0], "udp64_kpps": [150.0, 160.0]},
        "io_uring multishot": {"ping_p50_us": [85.0, 90.0]},
    }
    lines = design_table(samples).splitlines()
    assert len(lines) == 4
    for f in FIGURES:
        assert f.label in lines[0]
    kernel, daemon, uring = lines[1:]
    assert kernel.startswith("kernel veth") and "17.50 [17.00..18.00]" in kernel
    assert "175 [170..180]" in daemon and daemon.rstrip().endswith("1.00x")
    assert uring.rstrip().endswith("0.50x")
    assert " - " in uring  # figures it lacks
