"""A 1-minute run of the impairment soak (tests/soak_impair.py runs as long as asked)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
SOAK = Path(__file__).parents[1] / "soak_impair.py"


def test_soak_impair_one_minute() -> None:
    r = subprocess.run(
        [sys.executable, str(SOAK), "--minutes", "1"], capture_output=True, text=True, timeout=240
    )
    print(r.stdout, r.stderr)
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert r.returncode == 0 and summary["ok"], summary
    assert not any(summary["grew"].values())
    assert summary["queue_empty"] and summary["traffic_moving"]
    assert summary["changes"] >= 10  # the impairments were changed under traffic
