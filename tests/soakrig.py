"""What both soak scripts share: namespaces, a private daemon and traffic processes that are
removed whatever happens, the daemon's resource readings, and the verdict on growth, judged
after a warm-up."""

import secrets
import subprocess
import sys
from pathlib import Path
from types import TracebackType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tapveth.private import PrivateDaemon

# Growth is judged after the first third of the run: the allocator's arenas settle within a
# few hundred pair add/delete cycles (measured: +4.7 MiB, then flat), which is not a leak.
WARMUP_FRACTION = 1 / 3
RSS_SLACK_MIB = 4.0


def sh(*cmd: str, check: bool = True) -> str:
    return subprocess.run(cmd, capture_output=True, text=True, check=check, timeout=60).stdout


def proc_status(pid: int) -> dict[str, float]:
    """The process's resident set (MiB) and thread count, from /proc."""
    out: dict[str, float] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                out["rss_mib"] = int(line.split()[1]) / 1024
            elif line.startswith("Threads:"):
                out["threads"] = int(line.split()[1])
    return out


def after_warmup(samples: list[dict[str, Any]], first: int) -> dict[str, Any]:
    """The sample growth is measured from: a third into the run, never before index `first`."""
    return samples[min(max(first, int(len(samples) * WARMUP_FRACTION)), len(samples) - 1)]


def rss_grew(base: dict[str, Any], last: dict[str, Any]) -> bool:
    return bool(last["rss_mib"] - base["rss_mib"] > RSS_SLACK_MIB)


def floor_grew(samples: list[dict[str, Any]], base: dict[str, Any], key: str) -> bool:
    """Whether the lowest reading of the final third is above the warm-up's. A leak raises the
    floor; a resource held for a moment (an fd of a pair being torn down while the sample is
    served, seen as 21, 22, 21) does not."""
    tail = samples[-max(1, len(samples) // 3) :]
    return bool(min(s[key] for s in tail) > base[key])


class SoakRig:
    """`with SoakRig("tvsoak", "ab") as rig:` makes namespaces PREFIX-TAG-a, -b…, starts a
    private daemon; on exit kills every process spawned, stops the daemon (its exit code in
    `daemon_exit`) and deletes the namespaces."""

    def __init__(self, prefix: str, suffixes: str) -> None:
        self.tag = secrets.token_hex(2)
        self.spaces = [f"{prefix}-{self.tag}-{x}" for x in suffixes]
        self.daemon = PrivateDaemon(log_level="warning")
        self.procs: list[subprocess.Popen[bytes]] = []
        self.daemon_exit: int | None = None

    def __enter__(self) -> "SoakRig":
        try:
            for ns in self.spaces:
                sh("ip", "netns", "add", ns)
            self.daemon.start()
        except BaseException:
            self._remove_spaces()
            raise
        return self

    def spawn(self, ns: str, *cmd: str) -> subprocess.Popen[bytes]:
        """A command in namespace `ns`, silenced, killed at the latest on exit."""
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, *cmd],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.procs.append(proc)
        return proc

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)

    def _remove_spaces(self) -> None:
        for ns in self.spaces:
            sh("ip", "netns", "del", ns, check=False)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.kill_all()
            self.daemon_exit = self.daemon.stop()
        finally:
            self._remove_spaces()
