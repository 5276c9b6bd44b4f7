"""The control plane at scale: how long `stats` takes over N pairs, how long an add waits while
a `stats` runs, and the daemon's CPU for link events of interfaces it does not own.

    python tests/bench_control.py --pairs 1000 --cycles 1000

Prints one JSON line of figures. Everything it makes (a private daemon, 2N+1 namespaces) is
removed at the end. Run it with PYTHONPATH pointing at another source tree to measure that.
"""

import argparse
import json
import secrets
import statistics
import subprocess
import sys
import threading
import time
from typing import Any

from tapveth.bench.sidebyside import cpu_seconds
from tapveth.private import PrivateDaemon


def batch(lines: list[str], netns: str | None = None) -> None:
    cmd = ["ip", "-force", *(["-n", netns] if netns else []), "-batch", "-"]
    subprocess.run(cmd, input="\n".join(lines) + "\n", text=True, check=True, timeout=600)


def spec(a: str, ns_a: str, b: str, ns_b: str) -> dict[str, Any]:
    return {"spec": {"end": {"name": a, "netns": ns_a}, "peer": {"name": b, "netns": ns_b}}}


def event_cpu(d: PrivateDaemon, pid: int, tag: str, cycles: int) -> dict[str, float]:
    """Daemon CPU seconds while another namespace makes and deletes `cycles` veth pairs."""
    ns = f"tvbe{tag}"
    # With an nsid in the daemon's namespace, its events reach the daemon's event socket, as
    # those of any namespace holding an end (or with an nsid for any other reason) do.
    batch([f"netns add {ns}", f"netns set {ns} auto"])
    try:
        c0, t0 = cpu_seconds(pid), time.monotonic()
        time.sleep(2.0)
        idle = (cpu_seconds(pid) - c0) / (time.monotonic() - t0)
        lines = [f"link add x{i} type veth peer name y{i}\nlink del x{i}" for i in range(cycles)]
        c0, t0 = cpu_seconds(pid), time.monotonic()
        batch(lines, netns=ns)
        time.sleep(2.0)  # let the daemon drain what is queued
        spent = cpu_seconds(pid) - c0 - idle * (time.monotonic() - t0)
    finally:
        batch([f"netns del {ns}"])
    d.request("ping")
    return {"event_cpu_s": round(spent, 3), "event_cycles": cycles}


def timed(fn: Any, *args: Any) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--pairs", type=int, default=1000)
    p.add_argument("--cycles", type=int, default=1000)
    p.add_argument("--runs", type=int, default=7)
    a = p.parse_args()
    tag = secrets.token_hex(2)
    spaces = [(f"tvb{tag}{i}a", f"tvb{tag}{i}b") for i in range(a.pairs + 1)]
    out: dict[str, Any] = {"pairs": a.pairs}
    d = PrivateDaemon(log_level="warning").start()
    try:
        assert d.proc is not None
        pid = d.proc.pid
        out.update(event_cpu(d, pid, tag, a.cycles))
        batch([f"netns add {ns}" for pair in spaces for ns in pair])
        t0 = time.monotonic()
        for x, y in spaces[:-1]:
            d.request("add", spec("tv", x, "tv", y))
        out["setup_s"] = round(time.monotonic() - t0, 1)
        runs = [timed(d.request, "stats", {}) for _ in range(a.runs)]
        out["stats_s_median"] = round(statistics.median(runs), 4)
        out["stats_s_min"] = round(min(runs), 4)
        runs = [timed(d.request, "show", {}) for _ in range(a.runs)]
        out["show_s_median"] = round(statistics.median(runs), 4)
        # An add and a delete issued while a `stats` is running: how long they wait.
        x, y = spaces[-1]
        waits = []
        for _ in range(a.runs):
            th = threading.Thread(target=d.request, args=("stats", {}))
            th.start()
            time.sleep(0.01)
            waits.append(timed(d.request, "add", spec("tvx", x, "tvy", y)))
            th.join()
            d.request("del", {"name": "tvx"})
        out["add_during_stats_s_median"] = round(statistics.median(waits), 4)
        alone = []
        for _ in range(a.runs):
            alone.append(timed(d.request, "add", spec("tvx", x, "tvy", y)))
            d.request("del", {"name": "tvx"})
        out["add_alone_s_median"] = round(statistics.median(alone), 4)
    finally:
        d.stop(timeout=300)
        batch([f"netns del {ns}" for pair in spaces for ns in pair])
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
