"""The shipped unit under a real systemd (PID 1 of a systemd-nspawn container): start to
active with STATUS, reload, a watchdog timeout restarting a hung daemon, stop leaving nothing,
and the daemon's lines in the journal. Only ExecStart's path and WatchdogSec are overridden."""

import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from netlab import tag
from systemd_lab import Container

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "tapveth.service"

CONFIG = """
[[pair]]
[pair.end]
name = "veth1"
netns = "ns1"
addresses = ["10.0.0.1/24"]
up = true
[pair.peer]
name = "veth2"
netns = "ns2"
addresses = ["10.0.0.2/24"]
up = true
"""


def python_in_container() -> str:
    """The interpreter with the project's dependencies, as seen from inside the container
    (the project is bound at /opt/project; /tmp inside is the container's own)."""
    prefix = Path(sys.prefix).resolve()
    if prefix.is_relative_to(ROOT):
        return str(Path("/opt/project") / prefix.relative_to(ROOT) / "bin" / "python")
    return sys.executable


def install_unit(c: Container, *extra: str) -> None:
    """The shipped unit as it is, plus a drop-in that only points ExecStart at this checkout's
    interpreter and source (and any extra [Service] lines)."""
    c.run("cp", "/opt/project/systemd/tapveth.service", "/etc/systemd/system/")
    c.write(
        "/etc/systemd/system/tapveth.service.d/test.conf",
        "\n".join(
            [
                "[Service]",
                "ExecStart=",
                f"ExecStart={python_in_container()} -m tapveth daemon --config "
                "/etc/tapveth/tapveth.toml",
                "Environment=PYTHONPATH=/opt/project",
                *extra,
            ]
        ),
    )
    c.run("systemctl", "daemon-reload")


@pytest.fixture
def container() -> Iterator[Container]:
    if not shutil.which("systemd-nspawn"):
        pytest.skip("systemd-nspawn is not installed (Debian package systemd-container)")
    c = Container(str(ROOT), tag())
    try:
        yield c
    finally:
        c.close()


def test_verify_is_clean(tmp_path: Path) -> None:
    for name in ("tapveth.service", "tapveth@.service"):
        unit = tmp_path / name
        unit.write_text(
            (ROOT / "systemd" / name)
            .read_text()
            .replace("/usr/local/bin/tapveth", shutil.which("true") or "/bin/true")
        )
        r = subprocess.run(
            ["systemd-analyze", "verify", "--recursive-errors=yes", str(unit)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 0 and not (r.stdout + r.stderr).strip(), r.stdout + r.stderr


def test_unit_under_real_systemd(container: Container) -> None:
    c = container
    c.run("ip", "netns", "add", "ns1")
    c.run("ip", "netns", "add", "ns2")
    c.write("/etc/tapveth/tapveth.toml", CONFIG)
    install_unit(c, "WatchdogSec=3s")
    c.run("systemctl", "start", "tapveth", timeout=120)
    st = c.show("tapveth", "ActiveState", "SubState", "StatusText", "MainPID")
    assert (st["ActiveState"], st["SubState"]) == ("active", "running"), st
    assert st["StatusText"] == "1 pair(s), 1 with carrier"
    r = c.run("ip", "netns", "exec", "ns1", "ping", "-c", "2", "-i", "0.2", "10.0.0.2", check=False)
    assert r.returncode == 0, r.stdout
    assert c.run("stat", "-c", "%a", "/run/tapveth/tapveth.sock").stdout.strip() == "600"

    c.run("systemctl", "reload", "tapveth", timeout=60)
    assert c.show("tapveth", "ActiveState")["ActiveState"] == "active"

    # a hung event loop stops the watchdog: systemd aborts the daemon and restarts it
    pid = st["MainPID"]
    c.run("kill", "-STOP", pid)
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        now = c.show("tapveth", "ActiveState", "MainPID", "NRestarts")
        if now["NRestarts"] != "0" and now["ActiveState"] == "active" and now["MainPID"] != pid:
            break
        time.sleep(0.2)
    else:
        raise AssertionError(f"no watchdog restart: {now}")
    r = c.run("ip", "netns", "exec", "ns1", "ping", "-c", "2", "-i", "0.2", "10.0.0.2", check=False)
    assert r.returncode == 0, r.stdout  # the restarted daemon made the pair again

    c.run("systemctl", "stop", "tapveth", timeout=60)
    assert c.show("tapveth", "ActiveState")["ActiveState"] == "inactive"
    assert c.run("test", "-e", "/run/tapveth", check=False).returncode != 0
    assert c.run("ip", "-n", "ns1", "link", "show", "veth1", check=False).returncode != 0
    journal = c.run("journalctl", "-u", "tapveth", "-o", "cat", "--no-pager").stdout
    assert "pair veth1 <-> veth2 created" in journal
    assert "Watchdog timeout" in journal or "watchdog" in journal.lower()
    assert "reloaded /etc/tapveth/tapveth.toml" in journal


def test_create_netns_is_refused_inside_the_sandbox(container: Container) -> None:
    """Under ProtectSystem= the unit has its own mount namespace: a namespace it made would
    be unusable outside, so the daemon says so instead of making a broken one."""
    c = container
    c.write(
        "/etc/tapveth/tapveth.toml",
        CONFIG.replace('netns = "ns1"', 'netns = "ns1"\ncreate_netns = true'),
    )
    c.run("ip", "netns", "add", "ns2")
    install_unit(c)
    assert c.run("systemctl", "start", "tapveth", check=False, timeout=120).returncode != 0
    journal = c.run("journalctl", "-u", "tapveth", "-o", "cat", "--no-pager").stdout
    assert "cannot create namespace ns1 from a private mount namespace" in journal
    assert "ExecStartPre=+/usr/sbin/ip netns add ns1" in journal
    assert "Traceback" not in journal
