"""systemd's notify protocol (sd_notify) without libsystemd: datagrams of KEY=VALUE lines to
$NOTIFY_SOCKET. Silent when the daemon is not run by systemd."""

import contextlib
import os
import socket
import time
from collections.abc import Mapping


class Notifier:
    def __init__(self, env: Mapping[str, str] = os.environ) -> None:
        path = env.get("NOTIFY_SOCKET", "")
        if path.startswith("@"):
            path = "\0" + path[1:]  # abstract namespace
        self._addr = path or None
        self._sock: socket.socket | None = None
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        self.watchdog_usec = (
            int(usec) if usec.isdigit() and (not pid or pid == str(os.getpid())) else 0
        )

    @property
    def enabled(self) -> bool:
        return self._addr is not None

    def send(self, *fields: str) -> None:
        if self._addr is None:
            return
        if self._sock is None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        with contextlib.suppress(OSError):  # the manager went away: nothing to do about it
            self._sock.sendto("\n".join(fields).encode(), self._addr)

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}")

    def reloading(self) -> None:
        # MONOTONIC_USEC lets systemd (>= 253) match this reload to its own request.
        self.send(
            "RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}"
        )

    def stopping(self) -> None:
        self.send("STOPPING=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
