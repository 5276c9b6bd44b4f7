"""Namespaces, processes and checks for integration tests. The lab itself is product code
(tapveth.conformance.lab, which `tapveth compare` uses too); this module names it for the tests
and adds what only tests need."""

import contextlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

from tapveth.conformance.lab import (
    ENDPOINTS,
    Lab,
    LabError,
    Netns,
    Stream,
    finish,
    last_json,
    sh,
    tag,
    wait_for,
)
from tapveth.private import PrivateDaemon

__all__ = [
    "ENDPOINTS",
    "Lab",
    "LabError",
    "Netns",
    "Stream",
    "finish",
    "is_root_with_tun",
    "last_json",
    "private_daemon",
    "sh",
    "start_stream",
    "tag",
    "wait_for",
]


def is_root_with_tun() -> bool:
    return os.geteuid() == 0 and os.path.exists("/dev/net/tun")


@contextlib.contextmanager
def private_daemon(
    label: str = "daemon", start_hook: Callable[[], None] | None = None
) -> Iterator[PrivateDaemon]:
    """A private daemon for one test: started, then stopped with its log printed, and a clean
    exit asserted (the fixtures of the suites use it)."""
    d = PrivateDaemon(log_level="debug")
    d.start_hook = start_hook
    d.start()
    try:
        yield d
    finally:
        rc = d.stop()
        print(f"{label} log:\n" + d.final_log)
        assert rc == 0, f"{label} exited with {rc}"


def start_stream(lab: Lab, d: PrivateDaemon, words: tuple[str, ...], banner: str) -> Any:
    """Start `tapveth WORDS` against d for a streaming command (capture, monitor); returns the
    process (a Popen with text pipes) once it says `banner` on stderr, i.e. the daemon has the
    stream attached. The lab stops it at cleanup."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tapveth", "--socket", d.socket, *words],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lab.procs.append(proc)
    assert proc.stderr is not None
    first = proc.stderr.readline()
    assert first.startswith(banner), first + proc.stderr.read()
    return proc
