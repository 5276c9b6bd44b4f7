"""A private daemon in a child process, on a socket of its own: for `tapveth demo`, the
benchmarks and the tests, which must never touch a daemon the user runs."""

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

from tapveth import control


class PrivateDaemon:
    """`with PrivateDaemon() as d: d.request("show")` — started on enter, stopped on exit."""

    def __init__(
        self,
        log_level: str = "info",
        extra_env: dict[str, str] | None = None,
        daemon_args: tuple[str, ...] = (),
    ) -> None:
        self.dir = tempfile.mkdtemp(prefix="tapveth-")
        self.socket = os.path.join(self.dir, "tapveth.sock")
        self.log_path = os.path.join(self.dir, "daemon.log")
        self.log_level = log_level
        self.extra_env = extra_env or {}
        self.daemon_args = daemon_args
        self.proc: subprocess.Popen[bytes] | None = None
        self.final_log = ""
        self.start_hook: Callable[[], None] | None = None  # run in the child before exec

    def start(self, timeout: float = 10.0) -> "PrivateDaemon":
        env = {**os.environ, **self.extra_env}
        env.pop("TAPVETH_SOCKET", None)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tapveth",
                    "--socket",
                    self.socket,
                    "daemon",
                    "--log-level",
                    self.log_level,
                    *self.daemon_args,
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
                preexec_fn=self.start_hook,
            )
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.request("ping", timeout=1.0)
                return self
            except control.ControlError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"the daemon did not start: {self.final_log}") from None
                time.sleep(0.05)

    def signal(self, signum: int) -> None:
        """Send the daemon a signal (SIGHUP to reload, SIGTERM to stop...)."""
        assert self.proc is not None, "not started"
        self.proc.send_signal(signum)

    def request(self, op: str, args: dict[str, Any] | None = None, timeout: float = 60.0) -> Any:
        return control.request(self.socket, op, args, timeout=timeout)

    def cli(self, *words: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run the tapveth command against this daemon, as a user would."""
        return subprocess.run(
            [sys.executable, "-m", "tapveth", "--socket", self.socket, *words],
            capture_output=True,
            text=True,
            check=check,
            timeout=60,
        )

    def log(self) -> str:
        try:
            with open(self.log_path) as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL if it does not stop in time; returns the exit status."""
        rc = None
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    # Its TAPs go as its fds close, one kernel unregistration each: with
                    # hundreds of pairs that takes seconds.
                    self.proc.wait(60)
            rc = self.proc.returncode
        self.final_log = self.log()
        for name in ("tapveth.sock", "tapveth.sock.places", "daemon.log"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self.dir, name))
        with contextlib.suppress(OSError):
            os.rmdir(self.dir)
        return rc

    def __enter__(self) -> "PrivateDaemon":
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
