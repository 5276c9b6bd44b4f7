"""The daemon's memory with one pair after a short burst of traffic, and where it sits.

Run as root: `python tests/footprint.py [--rounds N]`. Each round starts a private daemon, makes
one pair between two namespaces of its own, sends 200 pings and a 1-second TCP stream through
it, then reads the daemon's /proc/PID/status and smaps_rollup. Everything it makes is removed.
Prints each round and the median with the lowest and highest.
"""

import argparse
import os
import secrets
import statistics
import subprocess
import time

from tapveth.private import PrivateDaemon


def _sh(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=60).stdout


def _kib(path: str, keys: tuple[str, ...]) -> dict[str, int]:
    out = {}
    with open(path) as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in keys:
                out[key] = int(rest.split()[0])
    return out


def one_round(traffic: bool) -> dict[str, int]:
    tag = secrets.token_hex(3)
    ns_a, ns_b = f"tvfp{tag}a", f"tvfp{tag}b"
    for ns in (ns_a, ns_b):
        _sh("ip", "netns", "add", ns)
    try:
        with PrivateDaemon(log_level="warning") as d:
            assert d.proc is not None
            pid = d.proc.pid
            d.request(
                "add",
                {
                    "spec": {
                        "end": {"name": "fa", "netns": ns_a},
                        "peer": {"name": "fb", "netns": ns_b},
                    }
                },
            )
            for ns, dev, ip in ((ns_a, "fa", "10.79.0.1"), (ns_b, "fb", "10.79.0.2")):
                _sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", dev)
                _sh("ip", "-n", ns, "link", "set", dev, "up")
                _sh("ip", "-n", ns, "link", "set", "lo", "up")
            if traffic:
                deadline = time.monotonic() + 10
                while subprocess.run(
                    ["ip", "netns", "exec", ns_a, "ping", "-c", "1", "-W", "1", "10.79.0.2"],
                    capture_output=True,
                ).returncode:
                    if time.monotonic() > deadline:
                        raise RuntimeError("the pair never answered ping")
                _sh(
                    "ip",
                    "netns",
                    "exec",
                    ns_a,
                    "ping",
                    "-q",
                    "-c",
                    "200",
                    "-i",
                    "0.002",
                    "10.79.0.2",
                )
                server = subprocess.Popen(
                    ["ip", "netns", "exec", ns_b, "iperf3", "-s", "-1", "-B", "10.79.0.2"],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                try:
                    time.sleep(0.5)
                    subprocess.run(
                        ["ip", "netns", "exec", ns_a, "iperf3", "-c", "10.79.0.2", "-t", "1"],
                        capture_output=True,
                        timeout=30,
                    )
                finally:
                    server.kill()
                    server.wait(5)
            time.sleep(0.5)
            got = _kib(f"/proc/{pid}/status", ("VmRSS", "RssAnon", "RssFile", "VmHWM"))
            got.update(_kib(f"/proc/{pid}/smaps_rollup", ("Pss", "Private_Dirty")))
            got["threads"] = len(os.listdir(f"/proc/{pid}/task"))
            return got
    finally:
        for ns in (ns_a, ns_b):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--no-traffic", action="store_true")
    args = ap.parse_args()
    rounds = []
    for i in range(args.rounds):
        r = one_round(not args.no_traffic)
        rounds.append(r)
        print(f"round {i + 1}: " + " ".join(f"{k}={v}" for k, v in r.items()), flush=True)
    for key in rounds[0]:
        vals = [r[key] for r in rounds]
        print(f"{key}: median {statistics.median(vals)} [{min(vals)}..{max(vals)}]")


if __name__ == "__main__":
    main()
