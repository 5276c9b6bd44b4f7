"""The control protocol over a real Unix socket, with a stand-in handler (no root needed)."""

import asyncio
import os
import socket
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest

from tapveth import control
from tapveth.control import ControlError, ControlServer, NoDaemon, Peer


async def _handler(op: str, args: dict[str, Any], peer: Peer) -> Any:
    if op == "echo":
        return {"args": args, "pid": peer.pid}
    if op == "crash":
        raise RuntimeError("boom")
    raise ControlError(f"unknown request {op!r}")


@pytest.fixture
def sock_path() -> Iterator[str]:
    d = tempfile.mkdtemp()
    yield os.path.join(d, "s.sock")
    for f in os.listdir(d):
        os.unlink(os.path.join(d, f))
    os.rmdir(d)


def _serve(path: str, client: Any) -> Any:
    async def main() -> Any:
        server = ControlServer(path, _handler)
        await server.start()
        try:
            return await asyncio.to_thread(client)
        finally:
            await server.close()

    return asyncio.run(main())


def test_request_reply_and_errors(sock_path: str) -> None:
    def client() -> Any:
        ok = control.request(sock_path, "echo", {"x": 1})
        with pytest.raises(ControlError, match="unknown request 'nope'"):
            control.request(sock_path, "nope")
        return ok

    got = _serve(sock_path, client)
    assert got == {"args": {"x": 1}, "pid": os.getpid()}
    assert not os.path.exists(sock_path)  # removed on close


def test_socket_mode_is_0600(sock_path: str) -> None:
    assert _serve(sock_path, lambda: os.stat(sock_path).st_mode & 0o777) == 0o600


def test_garbage_and_half_requests_are_answered_or_closed(sock_path: str) -> None:
    def client() -> list[bytes]:
        answers = []
        for payload in (b"not json\n", b"[1,2]\n", b'{"op": 5}\n', b"\xff\xfe\n"):
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(5)
                s.connect(sock_path)
                s.sendall(payload)
                answers.append(s.recv(4096))
        with socket.socket(socket.AF_UNIX) as s:  # too large: refused, connection closed
            s.settimeout(5)
            s.connect(sock_path)
            s.sendall(b"x" * (control.MAX_REQUEST + 10) + b"\n")
            answers.append(s.recv(4096))
        answers.append(str(control.request(sock_path, "echo", {})).encode())  # still serving
        return answers

    answers = _serve(sock_path, client)
    for a in answers[:4]:
        assert b'"ok": false' in a and b"malformed request" in a
    assert b"too large" in answers[4]
    assert b"args" in answers[5]


def test_no_daemon_says_how_to_start_one(sock_path: str) -> None:
    with pytest.raises(NoDaemon, match="tapveth daemon"):
        control.request(sock_path, "show")


def test_refuses_to_steal_a_live_socket(sock_path: str) -> None:
    def client() -> str:
        async def second() -> str:
            try:
                await ControlServer(sock_path, _handler).start()
            except ControlError as exc:
                return str(exc)
            return "started"

        return asyncio.run(second())

    assert "already listening" in _serve(sock_path, client)


def test_an_unexpected_failure_is_answered_not_dropped(sock_path: str) -> None:
    def client() -> tuple[str, Any]:
        with pytest.raises(ControlError) as info:
            control.request(sock_path, "crash")
        return str(info.value), control.request(sock_path, "echo", {})

    message, after = _serve(sock_path, client)
    assert message == "internal error: boom"
    assert after["args"] == {}  # still serving
