"""Fuzzing the control protocol of a real daemon: random bytes, JSON of every shape, deep
nesting, huge numbers and odd unicode, as requests. Every one is answered with one JSON reply
or the connection is closed cleanly; the daemon keeps serving a well-formed client, keeps its
pairs, and logs no traceback. Bounded: TAPVETH_FUZZ_EXAMPLES requests (default 300) and
TAPVETH_FUZZ_SECONDS of wall time (default 120)."""

import json
import os
import socket
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from netlab import Lab

from tapveth.private import PrivateDaemon

pytestmark = pytest.mark.integration

EXAMPLES = int(os.environ.get("TAPVETH_FUZZ_EXAMPLES", "300"))
SECONDS = float(os.environ.get("TAPVETH_FUZZ_SECONDS", "120"))
ABSENT_NS = "tvfuzz-no-such-namespace"

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**60), max_value=10**60)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
    | st.text(st.characters(codec=None, categories=None), max_size=20)  # surrogates, NUL, RTL
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=16,
)
end_fields = st.fixed_dictionaries(
    {},
    optional={
        "name": st.text(max_size=20) | values,
        "mtu": st.integers(-5, 70000) | st.text(max_size=8) | values,
        "address": st.text(max_size=20) | values,
        "bogus": values,
    },
)
ops = st.sampled_from(["add", "del", "show", "stats", "ping", "reload", "nope", ""]) | st.text(
    max_size=30
)
requests = st.builds(
    lambda op, args: {"op": op, "args": args},
    ops,
    values
    | st.dictionaries(st.sampled_from(["name", "netns", "spec"]), values, max_size=3)
    | st.builds(lambda e, p: {"spec": {"end": e, "peer": p}}, end_fields, end_fields),
) | st.dictionaries(st.sampled_from(["op", "args", "x"]), values, max_size=3)


def harmless(request: Any) -> Any:
    """An `add` that could be valid is sent for a namespace that does not exist: the fuzz
    makes nothing anywhere."""
    if isinstance(request, dict) and request.get("op") == "add":
        args = request.get("args")
        spec = args.get("spec") if isinstance(args, dict) else None
        if isinstance(spec, dict):
            for end in spec.values():
                if isinstance(end, dict):
                    end["netns"] = ABSENT_NS
    return request


def encode(request: Any, ascii_only: bool) -> bytes:
    text = json.dumps(request, ensure_ascii=ascii_only)
    return text.encode("utf-8", "surrogatepass")  # lone surrogates: bytes that are not UTF-8


lines = (
    st.binary(max_size=3000)
    | st.builds(encode, requests.map(harmless), st.booleans())
    | st.integers(1, 30000).map(lambda n: b"[" * n + b"]" * n)
    | st.integers(1, 30000).map(lambda n: b'{"op": "ping", "args": {"n": [' * n)
    | st.integers(1, 60000).map(lambda n: b'{"op": "show", "args": {"name": ' + b"9" * n + b"}}")
    | st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass"))
)


def exchange(path: str, payload: bytes) -> bytes:
    """Send one request (the write side is then shut, so a half line ends there) and read
    until the daemon closes."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(30)
        s.connect(path)
        try:
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused mid-way (too large): what it said before closing still counts
        data = b""
        while True:
            try:
                chunk = s.recv(1 << 16)
            except ConnectionResetError:
                break
            if not chunk:
                return data
            data += chunk
        return data


def test_fuzz_the_control_protocol(lab: Lab, daemon: PrivateDaemon) -> None:
    a, b = lab.netns(), lab.netns()
    x, y = lab.name("fza"), lab.name("fzb")
    daemon.cli("add", x, "netns", a.name, "peer", "name", y, "netns", b.name)
    start = time.monotonic()
    tally = {"sent": 0, "answered": 0, "closed": 0}

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=os.environ.get("CI") == "true",
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(lines, st.booleans())
    @example(b"[" * 1000 + b"]" * 1000, True)
    @example(b'{"op": "ping", "args": {"n": ' + b"7" * 5000 + b"}}", True)
    @example(b'{"op": "add", "args": {"spec": {"end": {"name": "a", "mtu": "\xc2\xb2"}}}}', True)
    @example(b"\xff\xfe\xfd", True)
    def one(payload: bytes, newline: bool) -> None:
        if time.monotonic() - start > SECONDS:
            return  # the time budget is spent: the rest of the examples are not sent
        tally["sent"] += 1
        sent = payload + (b"\n" if newline else b"")
        got = exchange(daemon.socket, sent)
        if not got:
            tally["closed"] += 1
        else:
            tally["answered"] += 1
            # One reply a request line (random bytes may hold several), each one JSON object.
            assert got.endswith(b"\n") and got.count(b"\n") <= sent.count(b"\n") + 1, got[:200]
            for line in got.splitlines():
                reply = json.loads(line)
                assert isinstance(reply, dict) and isinstance(reply["ok"], bool), reply
                if not reply["ok"]:
                    assert isinstance(reply["error"], str) and "\n" not in reply["error"]
                    assert len(reply["error"]) < 300, reply
        if tally["sent"] % 25 == 0:
            assert daemon.request("ping")["pairs"] == 1  # still serving a good client

    one()
    print(f"fuzz: {tally} in {time.monotonic() - start:.1f} s")
    assert tally["sent"] >= min(EXAMPLES, 50)
    info = daemon.request("ping")
    assert info["pairs"] == 1 and info["tasks"] == 0
    assert {e["ifname"] for e in daemon.request("show")} == {x, y}
    assert not lab_has(ABSENT_NS)
    log = daemon.log()
    assert "Traceback" not in log and "internal error" not in log, log[-3000:]


def lab_has(ns: str) -> bool:
    return os.path.exists(f"/run/netns/{ns}")
