"""The control plane under exhaustion and hostile input, from the outside: a real daemon, real
namespaces. No pair is lost for the daemon's own trouble, every client gets an answer, and
nothing ends in a traceback."""

import json
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any

import pytest
from netlab import Lab, Netns, sh

from tapveth import control
from tapveth.control import ControlError, NoDaemon
from tapveth.private import PrivateDaemon

pytestmark = pytest.mark.integration


def spec(a: str, ns_a: str | None, b: str, ns_b: str | None) -> dict[str, Any]:
    return {"spec": {"end": {"name": a, "netns": ns_a}, "peer": {"name": b, "netns": ns_b}}}


def ask(s: socket.socket, op: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
    """One request on an open connection; its answer."""
    s.sendall(json.dumps({"op": op, "args": args or {}}).encode() + b"\n")
    return json.loads(read_line(s))  # type: ignore[no-any-return]


def read_line(s: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = s.recv(1 << 16)
        if not chunk:
            break
        data += chunk
    return data


def raw(path: str, payload: bytes, timeout: float = 30) -> bytes:
    """Send bytes on a fresh connection; what comes back before the daemon closes or answers
    one line."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(timeout)
        s.connect(path)
        try:
            s.sendall(payload)
        except (BrokenPipeError, ConnectionResetError):
            return b""
        try:
            return read_line(s)
        except ConnectionResetError:
            return b""


def until(what: str, check: Any, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def no_traceback(log: str) -> None:
    for bad in ("Traceback", "CancelledError", "Bad file descriptor", "could not be followed"):
        assert bad not in log, log


def make_pair(lab: Lab, d: PrivateDaemon) -> tuple[Netns, Netns, str, str]:
    a, b = lab.netns(), lab.netns()
    x, y = lab.name(f"p{len(lab.namespaces)}a"), lab.name(f"p{len(lab.namespaces)}b")
    d.request("add", spec(x, a.name, y, b.name))
    return a, b, x, y


def fds_of(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_out_of_fds_keeps_the_netlink_socket_and_every_pair(lab: Lab) -> None:
    limit = 64

    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    d = PrivateDaemon(log_level="debug")
    d.start_hook = low_limit
    d.start()
    idle: list[socket.socket] = []
    try:
        a, b, x, y = make_pair(lab, d)
        c = lab.netns()
        pid = d.request("ping")["pid"]
        before = fds_of(pid)
        with socket.socket(socket.AF_UNIX) as keep:
            keep.settimeout(30)
            keep.connect(d.socket)
            assert ask(keep, "ping")["ok"]
            for _ in range(limit + 16):  # more than the daemon can accept
                s = socket.socket(socket.AF_UNIX)
                s.connect(d.socket)
                idle.append(s)
            until("the daemon to run out of fds", lambda: fds_of(pid) >= limit, 10)
            # More netlink calls than the worker makes between two recyclings of its socket.
            refused = [
                ask(keep, "add", spec(f"fx{i}", a.name, f"fy{i}", b.name)) for i in range(70)
            ]
            assert all(not r["ok"] for r in refused)
            assert all("too many open files" in r["error"].lower() for r in refused), refused[0]
            a.ip("link", "set", x, "netns", c.name)  # an end moves while nothing can be opened
            time.sleep(2)  # the daemon hears it and looks the end up, and cannot
            got = ask(keep, "ping")
            assert got["ok"] and got["result"]["pairs"] == 1  # not given up for that
            until("a lookup to fail", lambda: "not located yet" in d.log(), 6)
            assert ask(keep, "ping")["result"]["pairs"] == 1
        for s in idle:
            s.close()
        idle.clear()
        # Until it has fds again, the daemon's event loop (libuv) resets new connections: it
        # accepts and closes them with a spare fd rather than leave them queued unanswered.
        until("the daemon to have fds again", lambda: fds_of(pid) < limit - 8, 10)

        def moved() -> bool:
            ends = {e["ifname"]: e for e in d.request("show")}
            return bool(ends.get(x, {}).get("netns") == c.name)

        until("the end to be followed", moved)
        c.configure(x, "10.0.0.1/24")
        b.configure(y, "10.0.0.2/24")
        assert c.ping("10.0.0.2").returncode == 0  # followed, and relayed
        d.request("add", spec(lab.name("fxa"), a.name, lab.name("fxb"), b.name))
        assert d.request("ping")["pairs"] == 2  # the worker's netlink socket works
        # Nothing leaked on the way: the fds of before, and the new pair's two TAPs.
        until("the fds to be released", lambda: fds_of(pid) <= before + 2, 15)
    finally:
        for s in idle:
            s.close()
        d.stop()
    no_traceback(d.final_log)


def test_a_name_that_is_not_utf8_is_shown_as_ip_shows_it(lab: Lab, daemon: PrivateDaemon) -> None:
    a, b, x, y = make_pair(lab, daemon)
    odd = b"o\xff\xfe" + lab.tag.encode()
    subprocess.run([b"ip", b"-n", a.name.encode(), b"link", b"set", x.encode(), b"name", odd])

    def cli(*words: str) -> bytes:
        r = subprocess.run(
            [sys.executable, "-m", "tapveth", "--socket", daemon.socket, *words],
            capture_output=True,
            timeout=60,
        )
        assert r.returncode == 0 and r.stderr == b"", r.stderr
        return r.stdout

    until("the rename", lambda: odd in cli("show"))
    assert odd in sh_bytes("ip", "-n", a.name, "-br", "link")  # ip prints those very bytes
    shown = json.loads(cli("-j", "show").decode("utf-8", "surrogateescape"))
    names = {e["ifname"].encode("utf-8", "surrogateescape"): e for e in shown}
    assert (
        names[odd]["peer"] == y
        and names[y.encode()]["peer"].encode("utf-8", "surrogateescape") == odd
    )
    assert odd in cli("stats")
    tapveth = [sys.executable.encode(), b"-m", b"tapveth", b"--socket", daemon.socket.encode()]
    # Named on the command line, as `ip link show` takes it.
    one = subprocess.run([*tapveth, b"show", odd], capture_output=True, timeout=60)
    assert one.returncode == 0 and one.stdout.count(odd) == 2, one  # the end, and the peer's
    c = lab.netns()
    subprocess.run(
        [b"ip", b"-n", a.name.encode(), b"link", b"set", odd, b"netns", c.name.encode()],
        check=True,
    )

    def in_c() -> bool:
        return any(e["netns"] == c.name for e in daemon.request("show"))

    until("the move", in_c)
    for cmd in (["addr", "add", "10.0.0.1/24", "dev"], ["link", "set", "up", "dev"]):
        subprocess.run([b"ip", b"-n", c.name.encode(), *(w.encode() for w in cmd), odd], check=True)
    b.configure(y, "10.0.0.2/24")
    assert c.ping("10.0.0.2").returncode == 0
    daemon.request("del", {"name": y})
    assert odd not in sh_bytes("ip", "-n", c.name, "-br", "link") and not b.has_link(y)
    no_traceback(daemon.log())


def sh_bytes(*cmd: str) -> bytes:
    return subprocess.run(cmd, capture_output=True, check=True, timeout=60).stdout


def add_into(
    d: PrivateDaemon,
    names: tuple[str, str],
    spaces: tuple[Netns, Netns],
    answers: list[tuple[str, str]],
    i: int,
) -> None:
    """One add; how it was answered goes to answers[i]."""
    try:
        d.request("add", spec(names[0], spaces[0].name, names[1], spaces[1].name))
        answers[i] = ("ok", "")
    except NoDaemon:
        answers[i] = ("no daemon", "")
    except ControlError as exc:
        answers[i] = ("error", str(exc))


def test_stopping_answers_every_request_in_flight(lab: Lab) -> None:
    spaces = [(lab.netns(), lab.netns()) for _ in range(10)]
    seen: dict[str, int] = {"ok": 0, "stopping": 0, "no daemon": 0}
    for rnd in range(10):
        d = PrivateDaemon(log_level="info").start()
        names = [(f"s{rnd}x{i}{lab.tag}", f"s{rnd}y{i}{lab.tag}") for i in range(10)]
        answers: list[tuple[str, str]] = [("none", "")] * 10
        threads = [
            threading.Thread(target=add_into, args=(d, names[i], spaces[i], answers, i))
            for i in range(10)
        ]
        idle = socket.socket(socket.AF_UNIX)  # connected, has asked nothing yet
        idle.settimeout(30)
        idle.connect(d.socket)
        for t in threads:
            t.start()
        time.sleep(0.03 + 0.04 * rnd)  # 30 ms first, later some adds are done before
        d.signal(signal.SIGTERM)
        for t in threads:
            t.join(60)
        assert d.proc is not None
        assert d.proc.wait(60) == 0
        with idle:
            told = read_line(idle)
        assert json.loads(told) == {"ok": False, "error": "the daemon is stopping"}
        log = d.log()
        d.stop()
        for kind, message in answers:
            if kind == "error":
                assert message.startswith("the daemon is stopping"), answers
                kind = "stopping"
            assert kind in seen, answers
            seen[kind] += 1
        stop_at = log.index("stopping:")
        assert " created " not in log[stop_at:], log  # nothing made after the stop began
        for (na, nb), answer in zip(names, answers, strict=True):
            if answer[0] == "ok":
                assert log.index(f"pair {na} <-> {nb} created") < stop_at
        for (na, nb), (sa, sb) in zip(names, spaces, strict=True):
            assert not sa.has_link(na) and not sb.has_link(nb)  # nothing left behind
        no_traceback(log)
    print(f"10 shutdowns, 100 adds: {seen}")
    assert seen["stopping"] > 0  # the case this is about did happen


def test_odd_requests_get_one_line_and_change_nothing(lab: Lab, daemon: PrivateDaemon) -> None:
    a, _, x, y = make_pair(lab, daemon)
    long = "n" * 5000
    odd = [
        b"[" * 1000 + b"]" * 1000 + b"\n",
        b'{"op": "show", "args": {"x": ' + b"[" * 1000 + b"]" * 1000 + b"}}\n",
        b'{"op": "ping", "args": {"n": ' + b"7" * 5000 + b"}}\n",
        b'{"op": "' + long.encode() + b'"}\n',
        json.dumps({"op": "add", **spec(long, None, "b", None)}).encode() + b"\n",
        json.dumps({"op": "add", **spec("a", long, "b", None)}).encode() + b"\n",
        json.dumps({"op": "add", **spec("a", "n" * 300, "b", None)}).encode() + b"\n",
        json.dumps({"op": "del", "args": {"name": long}}).encode() + b"\n",
        json.dumps({"op": "show", "args": {"name": x, "netns": long}}).encode() + b"\n",
    ]
    for mtu in ("²", "٣", "9" * 5000, "15000000000", -1, 1e9, [1500]):
        end = {"name": "m" + lab.tag, "netns": a.name, "mtu": mtu}
        request = {"op": "add", "args": {"spec": {"end": end, "peer": {"name": "n"}}}}
        odd.append(json.dumps(request).encode() + b"\n")
    for payload in odd:
        reply = json.loads(raw(daemon.socket, payload))
        assert reply["ok"] is False, payload[:80]
        assert "\n" not in reply["error"] and len(reply["error"]) < 300, reply
        assert "internal error" not in reply["error"], reply
    r = daemon.cli("add", "a", "netns", "n" * 300, "peer", "name", "b", check=False)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    for mtu in ("²", "15000000000"):
        r = daemon.cli("add", "a", "mtu", mtu, "peer", "name", "b", check=False)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    daemon.signal(signal.SIGHUP)  # no --config: nothing to reload, and the daemon says so
    until("the SIGHUP", lambda: "SIGHUP ignored" in daemon.log(), 10)
    assert daemon.request("ping")["pairs"] == 1
    assert {e["ifname"] for e in daemon.request("show")} == {x, y}
    log = daemon.log()
    assert "n" * 200 not in log  # a hostile name is not written whole into the log
    no_traceback(log)


def test_a_namespace_dying_during_an_add_is_one_line(lab: Lab, daemon: PrivateDaemon) -> None:
    """`ip netns del` races each add: whatever the kernel answers, the client gets a line that
    is not an internal error, and nothing is left half made."""
    other = lab.netns()
    outcomes: dict[str, int] = {}
    for i in range(30):
        doomed = lab.netns()
        killer = threading.Timer(0.002 * (i % 15), sh, ("ip", "netns", "del", doomed.name))
        killer.start()
        try:
            ends = (f"d{i}a{lab.tag}", doomed.name, f"d{i}b{lab.tag}", other.name)
            daemon.request("add", spec(*ends))
            outcome = "made"
        except ControlError as exc:
            assert "internal error" not in str(exc) and "\n" not in str(exc), exc
            outcome = str(exc)[:60]
        killer.join()
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    print(f"30 adds racing ip netns del: {outcomes}")

    def settled() -> bool:
        info = daemon.request("ping")
        return bool(info["pairs"] == 0 and info["tasks"] == 0)

    until("every pair to go with its namespace", settled)
    assert not [ln for ln in sh("ip", "-br", "link").stdout.splitlines() if "tvtmp" in ln]
    assert sh("ip", "-n", other.name, "-br", "link").stdout.count("\n") == 1  # lo only
    no_traceback(daemon.log())


def test_a_client_that_never_reads_is_cut_off(lab: Lab, daemon: PrivateDaemon) -> None:
    make_pair(lab, daemon)
    hog = socket.socket(socket.AF_UNIX)
    hog.connect(daemon.socket)
    hog.setblocking(False)
    line = b'{"op": "show"}\n'
    sent = 0
    stuck_since = None
    try:
        # Requests until the daemon stops reading them: its answers fill every buffer on the
        # way, and it waits for this client to read.
        while stuck_since is None or time.monotonic() - stuck_since < 1.0:
            try:
                sent += hog.send(line)
                stuck_since = None
            except BlockingIOError:
                stuck_since = stuck_since or time.monotonic()
                time.sleep(0.01)
        assert daemon.request("ping")["pairs"] == 1  # others are served meanwhile
        time.sleep(control.REPLY_TIMEOUT + 2)  # past the daemon's deadline for this client
        hog.setblocking(True)
        hog.settimeout(30)
        data = b""
        while True:
            try:
                chunk = hog.recv(1 << 16)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
    finally:
        hog.close()
    asked, answered = sent // len(line), data.count(b"\n")
    print(f"{asked} requests sent, {answered} answers read before the daemon gave up")
    assert 0 < answered < asked  # it gave up on this client instead of waiting for it
    assert daemon.request("ping")["pairs"] == 1
