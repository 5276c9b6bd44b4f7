"""The shipped example and the demo run as a user would run them, and leave nothing behind."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from netlab import Lab, sh

from tapveth.private import PrivateDaemon

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def _namespaces() -> set[str]:
    return {line.split()[0] for line in sh("ip", "netns", "list").stdout.splitlines() if line}


def test_two_namespaces_example(lab: Lab, daemon: PrivateDaemon) -> None:
    env = {
        **os.environ,
        "TAPVETH": f"{sys.executable} -m tapveth --socket {daemon.socket}",
        "NS1": f"tvt-{lab.tag}-e1",
        "NS2": f"tvt-{lab.tag}-e2",
        "V1": lab.name("veth1"),
        "V2": lab.name("veth2"),
    }
    try:
        r = subprocess.run(
            ["sh", str(ROOT / "examples" / "two-namespaces.sh")],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 0, r.stderr
        assert " 0% packet loss" in r.stdout
        assert not {env["NS1"], env["NS2"]} & _namespaces()
    finally:
        for ns in (env["NS1"], env["NS2"]):
            sh("ip", "netns", "del", ns, check=False)


def test_demo_runs_and_cleans_up() -> None:
    before = _namespaces()
    r = subprocess.run(
        [sys.executable, "-m", "tapveth", "demo"], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "$ tapveth add veth1-" in r.stdout and " 0% packet loss" in r.stdout
    assert "ip link add veth1-" in r.stdout  # the kernel line it replaces is shown
    assert _namespaces() == before
    leftover = sh("ip", "-br", "link").stdout
    assert "veth1-" not in leftover and "veth2-" not in leftover
