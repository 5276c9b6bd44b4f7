"""`tapveth bench --designs --quick` runs, every subject relays (its ping crossed, and its UDP
and TCP figures exist), and nothing is left behind. Figures are never judged here."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from netlab import sh

from tapveth.bench.designs import KERNEL_APART, PLACEMENTS, PROTOTYPES
from tapveth.bench.designtable import FIGURES

pytestmark = pytest.mark.integration


def _state() -> tuple[set[str], set[str]]:
    mine = ("tvbench-", "tvd", "tvv")
    spaces = {line.split()[0] for line in sh("ip", "netns", "list").stdout.splitlines() if line}
    links = {line.split()[0] for line in sh("ip", "-br", "link").stdout.splitlines() if line}
    return {n for n in spaces if n.startswith(mine)}, {n for n in links if n.startswith(mine)}


def test_designs_quick_every_design_relays(tmp_path: Path) -> None:
    before = _state()
    out = tmp_path / "designs.json"
    r = subprocess.run(
        [sys.executable, "-m", "tapveth", "bench", "--designs", "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert r.returncode == 0, r.stderr
    data = json.loads(out.read_text())
    results = data["results"]
    names = {name for name, _, _ in PROTOTYPES} | {"kernel veth", "tapveth"}
    assert names <= set(results)
    placed = {name for name, *_ in PLACEMENTS} | {KERNEL_APART}
    assert placed <= set(results)
    for name, figures in results.items():
        # bench.ping raises unless half the probes were answered: a figure means pings crossed
        assert figures["ping_p50_us"] > 0, name
        assert figures["udp64_kpps"] > 0, name
        assert figures["tcp1_gbps"] > 0, name
        assert name in r.stdout
    for f in FIGURES:
        assert f.label in r.stdout
    assert _state() == before
