"""The CLI's additions against a real daemon: an end made in the caller's namespace when the
daemon may not open it by PID (the fd comes over the socket), `up` and `txqueuelen` in add,
and filters that filter."""

import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from netlab import Lab, private_daemon, sh

from tapveth.private import PrivateDaemon

pytestmark = pytest.mark.integration

PR_CAPBSET_DROP = 24
CAP_SYS_PTRACE = 19


def _drop_ptrace() -> None:
    """In the daemon's child before exec: without CAP_SYS_PTRACE in its bounding set (as under
    the shipped unit) a root daemon may not open a full-root process's /proc/PID/ns/net."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_CAPBSET_DROP, CAP_SYS_PTRACE, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "PR_CAPBSET_DROP")


@pytest.fixture
def bounded() -> Iterator[PrivateDaemon]:
    with private_daemon(start_hook=_drop_ptrace) as d:
        yield d


def wait_for_log(d: PrivateDaemon, text: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while text not in d.log():
        assert time.monotonic() < deadline, f"no {text!r} in the log: {d.log()}"
        time.sleep(0.05)


def test_bounded_daemon_cannot_open_the_cli_namespace_by_pid(bounded: PrivateDaemon) -> None:
    """The premise: with the daemon's bounding set, opening /proc/PID/ns/net of a full-root
    process (the old way) is refused."""
    assert bounded.proc is not None
    with open(f"/proc/{bounded.proc.pid}/status") as f:
        capbnd = next(ln for ln in f if ln.startswith("CapBnd:")).split()[1]
    assert not int(capbnd, 16) & (1 << CAP_SYS_PTRACE)
    probe = "import os, sys; os.open(f'/proc/{sys.argv[1]}/ns/net', os.O_RDONLY)"
    r = subprocess.run(
        [sys.executable, "-c", probe, str(os.getpid())],
        capture_output=True,
        text=True,
        preexec_fn=_drop_ptrace,
        timeout=30,
    )
    assert r.returncode != 0 and "PermissionError" in r.stderr, r.stderr


def test_add_without_netns_lands_in_the_callers_namespace(bounded: PrivateDaemon, lab: Lab) -> None:
    ns = lab.netns("cli")
    a, b = lab.name("fda"), lab.name("fdb")
    r = ns.run(sys.executable, "-m", "tapveth", "--socket", bounded.socket, "add", a, "peer", b)
    assert r.returncode == 0, r.stderr
    assert ns.has_link(a) and ns.has_link(b)
    ends = json.loads(bounded.cli("-j", "show", "netns", ns.name).stdout)
    assert sorted(e["ifname"] for e in ends) == sorted([a, b])
    assert "internal error" not in bounded.log()
    bounded.cli("del", a)
    assert not ns.has_link(a)


def test_add_up_txqueuelen_and_show_filters(daemon: PrivateDaemon, lab: Lab) -> None:
    ns1, ns2 = lab.netns("u1"), lab.netns("u2")
    a, b = lab.name("upa"), lab.name("upb")
    c, d = lab.name("otc"), lab.name("otd")
    daemon.cli(
        "a",
        "dev",
        a,
        "netns",
        ns1.name,
        "up",
        "txqueuelen",
        "321",
        "type",
        "veth",
        "peer",
        "name",
        b,
        "netns",
        ns2.name,
        "qlen",
        "77",
        "up",
    )
    la, lb = ns1.link(a), ns2.link(b)
    assert "UP" in la["flags"] and "UP" in lb["flags"]
    assert (la["txqlen"], lb["txqlen"]) == (321, 77)
    assert "LOWER_UP" in la["flags"]  # both up: carrier, as on a veth made up
    daemon.cli("-n", ns1.name, "add", c, "peer", d, "netns", ns2.name)
    assert ns1.has_link(c) and ns2.has_link(d)
    assert "UP" not in ns1.link(c)["flags"]
    in_ns1 = json.loads(daemon.cli("-j", "-p", "sh", "netns", ns1.name).stdout)
    assert sorted(e["ifname"] for e in in_ns1) == sorted([a, c])
    in_ns2 = json.loads(daemon.cli("-n", ns2.name, "-j", "show").stdout)
    assert sorted(e["ifname"] for e in in_ns2) == sorted([b, d])
    stats = daemon.cli("st", "netns", ns2.name).stdout
    assert f"{b}@{a}: netns {ns2.name}" in stats and "bytes packets dropped" in stats
    assert a not in stats.split(f"{b}@")[0]


def test_persistent_pair_dropped_from_the_config_while_stopped(lab: Lab, tmp_path: Path) -> None:
    """Removed from the file while the daemon was down: reported at start, shown as orphaned,
    and `tapveth del` removes both ends."""
    ns1, ns2 = lab.netns("o1"), lab.netns("o2")
    a, b = lab.name("ora"), lab.name("orb")
    cfg = tmp_path / "tapveth.toml"
    cfg.write_text(
        f'[[pair]]\npersist = true\n[pair.end]\nname = "{a}"\nnetns = "{ns1.name}"\nup = true\n'
        f'[pair.peer]\nname = "{b}"\nnetns = "{ns2.name}"\nup = true\n'
    )
    sock = str(tmp_path / "tapveth.sock")  # one daemon's leftovers are found by its socket

    def daemon() -> PrivateDaemon:
        d = PrivateDaemon(daemon_args=("--config", str(cfg)))
        d.socket = sock
        return d

    with daemon():
        pass
    assert ns1.has_link(a) and ns2.has_link(b)  # persistent: left in place
    assert "tapveth persistent pair" in ns1.ip("-d", "link", "show", a).stdout
    # Where they stay is recorded: the next daemon on this socket searches only there.
    assert json.loads(Path(sock + ".places").read_text()) == sorted([ns1.name, ns2.name])
    cfg.write_text("")
    with PrivateDaemon(daemon_args=("--config", str(cfg))) as other:  # another socket
        assert "has no relay" not in other.log() and "orphaned" not in other.cli("show").stdout
    with daemon() as d:
        wait_for_log(d, "has no relay")  # the socket answers before the search is done
        assert f"persistent pair {a} (netns {ns1.name}) <-> {b}" in d.log()
        assert f"remove it with 'tapveth del {a}'" in d.log()
        shown = json.loads(d.cli("-j", "show").stdout)
        mine = [e for e in shown if e["ifname"] in (a, b)]
        assert [(e["ifname"], e["netns"], e["orphaned"]) for e in mine] == [
            (a, ns1.name, True),
            (b, ns2.name, True),
        ]
        assert "orphaned" in d.cli("show", b).stdout
        r = d.cli("del", b, check=False)
        assert r.returncode == 0, r.stderr
        assert not ns1.has_link(a) and not ns2.has_link(b)
        assert json.loads(d.cli("-j", "show", a, check=False).stdout or "[]") == []


def test_sighup_without_config_is_a_warning(daemon: PrivateDaemon) -> None:
    daemon.signal(signal.SIGHUP)
    wait_for_log(daemon, "nothing to reload")
    assert "SIGHUP ignored: this daemon runs without --config" in daemon.log()
    assert "Traceback" not in daemon.log() and "AssertionError" not in daemon.log()
    assert daemon.request("ping")["pairs"] == 0


def test_ip_netns_del_is_no_error(daemon: PrivateDaemon, lab: Lab) -> None:
    """Deleting an end's namespace is a normal end of a pair: logged as info, not as an error
    that `journalctl -p err` would show."""
    for i in range(3):  # the kernel's teardown races the daemon's look-up: give it chances
        ns1, ns2 = lab.netns(f"d{i}"), lab.netns(f"e{i}")
        a, b = lab.name(f"nd{i}a"), lab.name(f"nd{i}b")
        daemon.cli("add", a, "netns", ns1.name, "peer", b, "netns", ns2.name)
        sh("sh", "-c", f"ip netns del {ns1.name}; ip netns del {ns2.name}")
        wait_for_log(daemon, f"pair {a} <-> {b} removed")
    assert daemon.request("ping")["pairs"] == 0
    bad = [ln for ln in daemon.log().splitlines() if " ERROR " in ln or " WARNING " in ln]
    assert bad == []
