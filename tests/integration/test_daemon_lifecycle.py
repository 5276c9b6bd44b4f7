"""The daemon's side of the lifecycle: one pair vanishing leaves the others serving, and a
stopped daemon leaves nothing behind."""

import contextlib
import os
import signal
import time
from typing import Any

import pytest
from netlab import Lab, Netns, sh

from tapveth.private import PrivateDaemon

pytestmark = pytest.mark.integration


def pair(lab: Lab, daemon: PrivateDaemon, label: str) -> tuple[Netns, Netns, str, str]:
    ns1, ns2 = lab.netns(label + "1"), lab.netns(label + "2")
    a, b = lab.name(label + "a"), lab.name(label + "b")
    daemon.cli("add", a, "netns", ns1.name, "peer", "name", b, "netns", ns2.name)
    ns1.configure(a, "10.0.0.1/24")
    ns2.configure(b, "10.0.0.2/24")
    return ns1, ns2, a, b


def names(daemon: PrivateDaemon) -> set[str]:
    return {e["ifname"] for e in daemon.request("show")}


def test_a_vanished_pair_leaves_the_others_serving(lab: Lab, daemon: PrivateDaemon) -> None:
    p1, p2, p3 = pair(lab, daemon, "p"), pair(lab, daemon, "q"), pair(lab, daemon, "r")
    sh("ip", "netns", "del", p1[0].name)  # namespace of one end destroyed
    p2[1].ip("link", "del", p2[3])  # one end deleted by the user
    deadline_names = {p3[2], p3[3]}

    def settled() -> bool:
        # The surviving ends are deleted by the daemon a moment after it hears of the loss.
        return names(daemon) == deadline_names and not (
            p1[1].has_link(p1[3]) or p2[0].has_link(p2[2])
        )

    # Namespace teardown is asynchronous in the kernel, and slow while others come and go.
    deadline = time.monotonic() + 30
    while not settled() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert names(daemon) == deadline_names
    assert not p1[1].has_link(p1[3]) and not p2[0].has_link(p2[2])  # no orphaned peer
    r = p3[0].ping("10.0.0.2", deadline=20)
    assert r.returncode == 0 and " 0% packet loss" in r.stdout
    assert "removed" in daemon.log()


def test_daemon_stop_removes_every_pair(lab: Lab) -> None:
    d = PrivateDaemon()
    d.start()
    try:
        ns1, ns2, a, b = pair(lab, d, "s")
        d.cli("add", lab.name("root"), "peer", "name", lab.name("rootp"))  # in the root ns
        assert sh("ip", "link", "show", lab.name("root"), check=False).returncode == 0
    finally:
        rc = d.stop()
    assert rc == 0
    assert not ns1.has_link(a) and not ns2.has_link(b)
    assert sh("ip", "link", "show", lab.name("root"), check=False).returncode != 0
    assert not os.path.exists(d.socket)


def test_names_taken_are_refused_and_nothing_is_left(lab: Lab, daemon: PrivateDaemon) -> None:
    ns1, ns2, a, b = pair(lab, daemon, "t")
    r = daemon.cli(
        "add",
        a,
        "netns",
        ns1.name,
        "peer",
        "name",
        "fresh" + lab.tag,
        "netns",
        ns2.name,
        check=False,
    )
    assert r.returncode == 2 and "already taken" in r.stderr
    ns1.ip("link", "add", "dum" + lab.tag, "type", "veth", "peer", "name", "dup" + lab.tag)
    r = daemon.cli(
        "add",
        "x" + lab.tag,
        "netns",
        ns2.name,
        "peer",
        "name",
        "dum" + lab.tag,
        "netns",
        ns1.name,
        check=False,
    )
    assert r.returncode == 2 and "already taken" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not ns2.has_link("x" + lab.tag)  # the first end was not left behind
    r = daemon.cli(
        "add",
        "y" + lab.tag,
        "netns",
        "nosuchns" + lab.tag,
        "peer",
        "name",
        "z" + lab.tag,
        check=False,
    )
    assert r.returncode == 2 and "does not exist" in r.stderr
    assert names(daemon) == {a, b}
    tmp = [ln for ln in sh("ip", "-br", "link").stdout.splitlines() if ln.startswith("tvtmp")]
    assert tmp == []


def test_move_then_up_at_once_many_times(lab: Lab, daemon: PrivateDaemon) -> None:
    """The end is set up in its new namespace while the daemon is still finding where it went:
    the newer 'up' must win over the older lookup answer, every time."""
    spaces = [lab.netns(f"m{i}") for i in range(3)]
    peer_ns = lab.netns("peer")
    a, b = lab.name("mva"), lab.name("mvb")
    daemon.cli("add", a, "netns", spaces[0].name, "peer", "name", b, "netns", peer_ns.name)
    peer_ns.ip("link", "set", b, "up")
    here = spaces[0]
    for i in range(15):
        there = spaces[(i + 1) % len(spaces)]
        here.ip("link", "set", a, "netns", there.name)
        there.ip("link", "set", a, "up")
        for _ in range(150):
            if "LOWER_UP" in there.link(a)["flags"]:
                break
            sh("sleep", "0.02")
        assert "LOWER_UP" in there.link(a)["flags"], f"no carrier after move {i + 1}"
        here = there


def spec_of(ns_a: Netns, a: str, ns_b: Netns, b: str, up: bool) -> dict[str, Any]:
    return {
        "end": {"name": a, "netns": ns_a.name, "up": up},
        "peer": {"name": b, "netns": ns_b.name, "up": up},
    }


def test_stop_deletes_every_pair_and_keeps_the_persistent_ones(lab: Lab) -> None:
    spaces = [lab.netns(f"m{i}") for i in range(4)]
    pairs = [(spaces[i % 2], spaces[2 + i % 2], f"m{i}a", f"m{i}b") for i in range(40)]
    kept = [(spaces[0], spaces[2], "ka", "kb"), (spaces[1], spaces[3], "la", "lb")]
    d = PrivateDaemon(log_level="info").start()
    try:
        for ns_a, ns_b, a, b in pairs:
            d.request("add", {"spec": spec_of(ns_a, a, ns_b, b, up=False)})
        for ns_a, ns_b, a, b in kept:  # up, so that `ip link` shows their carrier
            d.request("add", {"spec": spec_of(ns_a, a, ns_b, b, up=True), "persist": True})
        assert d.proc is not None
        d.signal(signal.SIGTERM)
        rc = d.proc.wait(60)
    finally:
        d.stop()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(d.socket + ".persist")
        with contextlib.suppress(OSError):
            os.rmdir(d.dir)
    log = d.final_log
    assert rc == 0
    assert f"stopping: removing {len(pairs)} pair(s), keeping 2 persistent" in log, log
    assert log.count("removed: daemon stopped") == len(pairs)
    assert "Traceback" not in log and "warning" not in log.lower(), log
    assert not [a for ns_a, _, a, _ in pairs if ns_a.has_link(a)]
    assert not [b for _, ns_b, _, b in pairs if ns_b.has_link(b)]
    for ns_a, ns_b, a, b in kept:  # left in place without carrier, for the next daemon
        assert "NO-CARRIER" in ns_a.link(a)["flags"] and "NO-CARRIER" in ns_b.link(b)["flags"]
