"""How `tapveth capture` stops, against a fake daemon (no root): Ctrl-C half-closes the
connection whatever the client was doing (waiting for frames, or reading and writing a steady
stream), the counts that end the stream are printed, and a daemon that never ends the stream
does not hang the client past its finishing time."""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from tapveth.core import pcapng

HEAD = b'{"ok": true, "result": {"ifnames": ["a0", "b0"], "snaplen": 262144}}\n'
PREAMBLE = (
    pcapng.section_header("fake")
    + pcapng.interface_description("a0", "fake end a0")
    + pcapng.interface_description("b0", "fake end b0")
)
FRAME = pcapng.enhanced_packet(0, time.time_ns(), b"\xff" * 60, 60, pcapng.OUTBOUND)

# what the fake daemon does once it has sent the head: given the connection and an event set
# when the client half-closed
Stream = Callable[[socket.socket, threading.Event], None]


def _end_with_counts(conn: socket.socket, frames: int) -> None:
    now = time.time_ns()
    conn.sendall(
        pcapng.interface_statistics(0, now, now, frames, frames, 0, frames)
        + pcapng.interface_statistics(1, now, now, 0, 0, 0, 0)
    )


def idle_then_counts(conn: socket.socket, eof: threading.Event) -> None:
    """No frames at all; the counts once the client is done."""
    conn.sendall(PREAMBLE)
    while conn.recv(4096):
        pass
    eof.set()
    _end_with_counts(conn, 0)


def steady_then_counts(conn: socket.socket, eof: threading.Event) -> None:
    """A frame every millisecond (so the signal finds the client in any of its calls) until the
    client is done, then the counts."""
    conn.sendall(PREAMBLE)
    conn.setblocking(False)
    sent = 0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if conn.recv(4096) == b"":
                break
        except BlockingIOError:
            pass
        with contextlib.suppress(BlockingIOError):
            conn.send(FRAME)
            sent += 1
        time.sleep(0.001)
    eof.set()
    conn.setblocking(True)
    _end_with_counts(conn, sent)


def never_ends(conn: socket.socket, eof: threading.Event) -> None:
    """Takes the half-close and keeps the stream open regardless."""
    conn.sendall(PREAMBLE)
    while conn.recv(4096):
        pass
    eof.set()
    time.sleep(30)


@pytest.fixture
def fake() -> Iterator[tuple[str, list[Stream], threading.Event]]:
    """A Unix socket server: each connection gets the head, then the next behaviour queued."""
    d = tempfile.mkdtemp()
    path = os.path.join(d, "fake.sock")
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(path)
    srv.listen(4)
    queue: list[Stream] = []
    eof = threading.Event()

    def serve() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            with conn, contextlib.suppress(OSError):
                data = b""
                while not data.endswith(b"\n"):
                    data += conn.recv(4096)
                conn.sendall(HEAD)
                queue.pop(0)(conn, eof)

    th = threading.Thread(target=serve, daemon=True)
    th.start()
    try:
        yield path, queue, eof
    finally:
        srv.shutdown(socket.SHUT_RDWR)
        srv.close()
        th.join(1)  # a never_ends connection may still sleep: the thread is a daemon
        os.unlink(path)
        os.rmdir(d)


def start(path: str) -> "subprocess.Popen[bytes]":
    proc = subprocess.Popen(
        [sys.executable, "-m", "tapveth", "--socket", path, "capture", "a0", "-w", "-"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stderr is not None
    banner = proc.stderr.readline()
    assert banner.startswith(b"tapveth: capturing"), banner
    return proc


def stop(proc: "subprocess.Popen[bytes]", after: float) -> tuple[bytes, str]:
    time.sleep(after)
    proc.send_signal(signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    return out, err.decode()


@pytest.mark.parametrize("after", [0.0, 0.3])
def test_ctrl_c_on_an_idle_capture_ends_it_with_the_counts(
    fake: tuple[str, list[Stream], threading.Event], after: float
) -> None:
    path, queue, eof = fake
    queue.append(idle_then_counts)
    proc = start(path)
    out, err = stop(proc, after)
    assert proc.returncode == 0, err
    assert eof.is_set()
    assert out.startswith(PREAMBLE)
    assert "0 packets captured" in err and "0 packets dropped by kernel" in err, err


def test_ctrl_c_during_a_steady_stream_loses_no_block(
    fake: tuple[str, list[Stream], threading.Event],
) -> None:
    path, queue, eof = fake
    for _ in range(5):  # the signal lands at a different point of the pump each time
        queue.append(steady_then_counts)
        eof.clear()
        proc = start(path)
        out, err = stop(proc, 0.2)
        assert proc.returncode == 0, err
        assert eof.is_set()
        records = list(pcapng.read(out))
        packets = [r for r in records if isinstance(r, pcapng.Packet)]
        (captured,) = [int(ln.split()[0]) for ln in err.splitlines() if "captured" in ln]
        assert captured == len(packets) > 0, err
        assert f"{captured} packets received by filter" in err, err


def test_a_daemon_that_never_ends_the_stream_gives_up_in_time(
    fake: tuple[str, list[Stream], threading.Event],
) -> None:
    path, queue, eof = fake
    queue.append(never_ends)
    proc = start(path)
    began = time.monotonic()
    _out, err = stop(proc, 0.1)
    took = time.monotonic() - began
    assert eof.is_set()
    assert proc.returncode == 2, err
    lines = err.strip().splitlines()
    assert lines == ["tapveth: the daemon did not end the capture in time"], err
    assert took < 15, took
