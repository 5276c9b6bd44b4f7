"""A 2-minute run of the soak script (tests/soak.py runs as long as asked, outside CI)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
SOAK = Path(__file__).parents[1] / "soak.py"


def test_soak_two_minutes() -> None:
    r = subprocess.run(
        [sys.executable, str(SOAK), "--minutes", "2"], capture_output=True, text=True, timeout=300
    )
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    print(r.stdout)
    assert r.returncode == 0 and summary["ok"], summary
    assert not any(summary["grew"].values())
