"""The `tapveth` command against a fake server that breaks the protocol in every way it can:
one line on stderr and exit status 2 every time, never a traceback (no root needed)."""

import contextlib
import os
import socket
import struct
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator

import pytest

Behaviour = Callable[[socket.socket], None]


def _read_request(conn: socket.socket) -> None:
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(4096)
        if not chunk:
            return
        data += chunk


def _answer(raw: bytes) -> Behaviour:
    def behave(conn: socket.socket) -> None:
        _read_request(conn)
        conn.sendall(raw)

    return behave


def _close_at_once(conn: socket.socket) -> None:
    pass


def _reset(conn: socket.socket) -> None:
    _read_request(conn)
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def _reset_before_reading(conn: socket.socket) -> None:
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


BROKEN: list[tuple[str, Behaviour, str]] = [
    ("closes at once", _close_at_once, "closed the connection"),
    ("resets at once", _reset_before_reading, "closed the connection"),
    ("reads, then closes", _answer(b""), "without answering"),
    ("reads, then resets", _reset, "closed the connection"),
    ("half an answer", _answer(b'{"ok": true, "res'), "in the middle of its answer"),
    ("not JSON", _answer(b"hello there\n"), "not JSON"),
    ("not UTF-8", _answer(b"\xff\xfe\xfd\n"), "not JSON"),
    ("a list", _answer(b"[1, 2]\n"), "not a reply"),
    ("ok missing", _answer(b'{"result": []}\n'), "not a reply"),
    ("nested deep", _answer(b"[" * 100_000 + b"]" * 100_000 + b"\n"), "not JSON"),
    ("huge integer", _answer(b'{"ok": true, "result": ' + b"9" * 5000 + b"}\n"), "not JSON"),
    ("error not text", _answer(b'{"ok": false, "error": 42}\n'), "refused the request"),
    ("error on 3 lines", _answer(b'{"ok": false, "error": "a\\nb\\nc"}\n'), "a"),
    ("result a number", _answer(b'{"ok": true, "result": 5}\n'), "form this tapveth"),
    ("ends of strings", _answer(b'{"ok": true, "result": ["x", "y"]}\n'), "form this tapveth"),
]


@pytest.fixture
def fake() -> Iterator[tuple[str, list[Behaviour]]]:
    """A Unix socket server that treats each connection with the next behaviour queued."""
    d = tempfile.mkdtemp()
    path = os.path.join(d, "fake.sock")
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(path)
    srv.listen(8)
    queue: list[Behaviour] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            with conn:
                if queue:
                    with contextlib.suppress(OSError):
                        queue.pop(0)(conn)

    th = threading.Thread(target=serve, daemon=True)
    th.start()
    try:
        yield path, queue
    finally:
        stop.set()
        srv.shutdown(socket.SHUT_RDWR)
        srv.close()
        th.join(5)
        os.unlink(path)
        os.rmdir(d)


@pytest.mark.parametrize(("what", "behave", "message"), BROKEN, ids=[b[0] for b in BROKEN])
def test_a_broken_answer_is_one_line_and_exit_2(
    fake: tuple[str, list[Behaviour]], what: str, behave: Behaviour, message: str
) -> None:
    path, queue = fake
    # A well-formed reply of the wrong shape matters to the tables only: -j prints it as is.
    shape = message == "form this tapveth"
    for words in (["show"], ["stats"]) if shape else (["show"], ["-j", "stats"]):
        queue.append(behave)
        r = subprocess.run(
            [sys.executable, "-m", "tapveth", "--socket", path, *words],
            capture_output=True,
            text=True,
            timeout=60,
        )
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2, (what, r.stdout, r.stderr)
        assert len(lines) == 1 and message in lines[0], (what, r.stderr)
        assert "Traceback" not in r.stderr


def test_a_socket_path_that_cannot_be_reached_is_one_line() -> None:
    for path in ("/" + "x" * 200, "/dev/null", "/proc/self/status"):
        r = subprocess.run(
            [sys.executable, "-m", "tapveth", "--socket", path, "show"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 2, (path, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1, (path, r.stderr)
