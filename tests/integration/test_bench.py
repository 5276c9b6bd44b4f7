"""`tapveth bench` works from a fresh install: it runs, reports every figure for both the
kernel veth and tapveth, and leaves nothing behind. The figures themselves are never checked
here: speed is judged from the printed table, not by timed assertions."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from netlab import sh

from tapveth.bench.summary import METRICS

pytestmark = pytest.mark.integration


def _state() -> tuple[set[str], set[str]]:
    """The namespaces and root-namespace links the bench could have left (its names start
    with tvbench-/tvs/tvv), so that other work on the machine does not disturb the check."""
    mine = ("tvbench-", "tvs", "tvv")
    spaces = {line.split()[0] for line in sh("ip", "netns", "list").stdout.splitlines() if line}
    links = {line.split()[0] for line in sh("ip", "-br", "link").stdout.splitlines() if line}
    return {n for n in spaces if n.startswith(mine)}, {n for n in links if n.startswith(mine)}


def test_bench_quick_reports_every_figure(tmp_path: Path) -> None:
    before = _state()
    out = tmp_path / "bench.json"
    plot = tmp_path / "bench.png"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "tapveth",
            "bench",
            "--quick",
            "--rounds",
            "2",
            "--json",
            str(out),
            "--plot",
            str(plot),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    data = json.loads(out.read_text())
    assert data["rounds"] == 2
    assert all(len(v) == 2 for v in data["samples"]["tapveth"].values())
    kernel, tap = data["results"]["kernel veth"], data["results"]["tapveth"]
    relay_only = {"cpu_s_per_gb", "rss_mib", "idle_cpu_pct"}
    for m in METRICS:
        assert m.key in tap, m.key
        if m.key not in relay_only:
            assert m.key in kernel, m.key
            assert m.label in r.stdout
    assert tap["tcp1_gbps"] > 0 and kernel["tcp1_gbps"] > 0
    assert data["ratios_to_kernel"]["tapveth"]["tcp1_gbps"] == pytest.approx(
        tap["tcp1_gbps"] / kernel["tcp1_gbps"]
    )
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert _state() == before


def test_bench_scale_small(tmp_path: Path) -> None:
    before = _state()
    out = tmp_path / "scale.json"
    r = subprocess.run(
        [sys.executable, "-m", "tapveth", "bench", "--pairs", "4", "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert r.returncode == 0, r.stderr
    data = json.loads(out.read_text())
    assert data["tapveth_pairs_answering_ping"] == data["kernel_pairs_answering_ping"] == 4
    assert data["tapveth_stop_s_total"] > 0  # the stop left no end behind, or it failed
    # The kernel's share of the set-up, measured apart: two moves a pair, each waiting for RCU.
    assert 0 < data["moves_alone_s_total"] < data["tapveth_setup_s_total"] * 2
    assert "the kernel's share" in r.stdout
    assert _state() == before
