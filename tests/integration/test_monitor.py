"""`tapveth monitor`: pair events as they happen, to several monitors at once, as text and JSON."""

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest
from netlab import Lab, start_stream

from tapveth.private import PrivateDaemon

pytestmark = pytest.mark.integration


def start_monitor(lab: Lab, d: PrivateDaemon, *opts: str) -> subprocess.Popen[str]:
    proc: subprocess.Popen[str] = start_stream(lab, d, ("monitor", *opts), "tapveth: monitoring")
    return proc


def stop(proc: subprocess.Popen[str]) -> list[str]:
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    return out.splitlines()


def until(d: PrivateDaemon, check: Callable[[dict[str, Any]], bool]) -> None:
    """Wait until `show` lists an end that passes check (the daemon followed a change)."""
    deadline = time.monotonic() + 10
    while not any(check(e) for e in d.request("show")):
        assert time.monotonic() < deadline, "the daemon did not follow the change"
        time.sleep(0.05)


def test_monitor_streams_pair_events(lab: Lab, daemon: PrivateDaemon) -> None:
    as_json = start_monitor(lab, daemon, "-j")
    as_text = start_monitor(lab, daemon)
    stamped = start_monitor(lab, daemon, "-t")
    a, b, c = lab.netns("a"), lab.netns("b"), lab.netns("c")
    x, y, z = lab.name("mona"), lab.name("monb"), lab.name("monz")
    daemon.cli("add", x, "netns", a.name, "peer", "name", y, "netns", b.name)
    a.ip("link", "set", x, "up")
    b.ip("link", "set", y, "up")
    b.ip("link", "set", y, "mtu", "1400")
    a.ip("link", "set", x, "netns", c.name)
    until(daemon, lambda e: e["ifname"] == x and e["netns"] == c.name)
    c.ip("link", "set", x, "name", z)
    until(daemon, lambda e: e["ifname"] == z)
    daemon.cli("del", z)
    time.sleep(0.3)
    events = [json.loads(ln) for ln in stop(as_json)]
    text = stop(as_text)
    stamped_lines = stop(stamped)

    kinds = [e["event"] for e in events]
    assert sorted(kinds[3:5]) == ["carrier", "moved"], kinds  # in the kernel's order
    assert kinds[:3] + kinds[5:] == ["created", "carrier", "mtu", "renamed", "deleted"], kinds
    created = events[0]
    assert (created["ifname"], created["netns"]) == (x, a.name)
    assert (created["peer"], created["peer_netns"]) == (y, b.name)
    carrier = [e["carrier"] for e in events if e["event"] == "carrier"]
    assert carrier == [True, False]  # both up; the move took x down
    mtu = events[2]
    assert (mtu["ifname"], mtu["netns"], mtu["mtu"]) == (y, b.name, 1400)
    moved = events[kinds.index("moved")]
    assert (moved["ifname"], moved["netns"]) == (x, c.name)
    assert (events[5]["old"], events[5]["new"], events[5]["ifname"]) == (x, z, z)
    assert events[6]["why"] == "deleted on request"
    assert all(isinstance(e["time"], float) for e in events)

    assert text[:3] == [
        f"created {x} netns {a.name} peer {y} netns {b.name}",
        f"carrier up {x} netns {a.name} peer {y} netns {b.name}",
        f"mtu 1400 {y} netns {b.name}",
    ]
    assert f"moved {x} to netns {c.name}" in text[3:5]
    assert any(ln.startswith(f"carrier down {x} netns ") for ln in text[3:5]), text
    assert text[5:] == [
        f"renamed {x} to {z}",
        f"deleted {z} netns {c.name} peer {y} netns {b.name}: deleted on request",
    ]
    assert [ln.split("] ", 1)[1] for ln in stamped_lines] == text
    assert all(ln.startswith("[20") for ln in stamped_lines)


def test_daemon_stop_ends_monitors_and_captures_cleanly(lab: Lab) -> None:
    d = PrivateDaemon().start()
    try:
        a, b = lab.netns("a"), lab.netns("b")
        x, y = lab.name("stpa"), lab.name("stpb")
        d.cli("add", x, "netns", a.name, "peer", "name", y, "netns", b.name)
        mon = start_monitor(lab, d)
        cap = subprocess.Popen(
            [sys.executable, "-m", "tapveth", "--socket", d.socket, "capture", x],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        lab.procs.append(cap)
        assert cap.stderr is not None and cap.stderr.readline().startswith("tapveth: capturing")
    finally:
        assert d.stop() == 0
    out, err = mon.communicate(timeout=30)
    assert mon.returncode == 1 and "the daemon closed the stream" in err
    assert f"deleted {x} netns {a.name} peer {y} netns {b.name}: daemon stopped" in out
    _, err = cap.communicate(timeout=30)
    assert cap.returncode == 0 and "0 packets dropped by kernel" in err, err
    assert "Traceback" not in d.final_log, d.final_log
