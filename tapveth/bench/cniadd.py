"""How long a CNI ADD (and DEL) takes with tapveth-cni against the reference `bridge` plugin with
a kernel veth, run as a runtime runs them: a fresh namespace each round, host-local for
addresses, a bridge of each plugin's own, rounds interleaved. Also the bare start-up of each
executable (VERSION), which is part of every call. Prints medians and spread; asserts nothing.

    python -m tapveth.bench.cniadd [--rounds N] [--json FILE]
"""

import argparse
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from tapveth.private import PrivateDaemon

REFERENCE = "/usr/lib/cni"


def plugin_path() -> str:
    here = os.path.join(os.path.dirname(sys.executable), "tapveth-cni")
    found = here if os.path.exists(here) else shutil.which("tapveth-cni")
    if not found:
        raise SystemExit("tapveth-cni is not installed next to this Python or on PATH")
    return found


def call(exe: str, command: str, conf: dict[str, Any], netns: str, cid: str) -> float:
    """One plugin call; its wall time in ms. A failure stops the benchmark."""
    env = {
        **os.environ,
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": cid,
        "CNI_NETNS": netns,
        "CNI_IFNAME": "eth0",
        "CNI_PATH": f"{os.path.dirname(exe)}:{REFERENCE}",
    }
    t0 = time.perf_counter()
    proc = subprocess.run(
        [exe], input=json.dumps(conf).encode(), capture_output=True, env=env, timeout=60
    )
    ms = (time.perf_counter() - t0) * 1000
    if proc.returncode != 0:
        raise SystemExit(f"{os.path.basename(exe)} {command} failed: {proc.stdout.decode()}")
    return ms


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "median_ms": round(statistics.median(ordered), 1),
        "p10_ms": round(ordered[len(ordered) // 10], 1),
        "p90_ms": round(ordered[(len(ordered) * 9) // 10 - 1 if len(ordered) >= 10 else -1], 1),
    }


def run(rounds: int) -> dict[str, Any]:
    tag = secrets.token_hex(3)
    work = tempfile.mkdtemp(prefix="tapveth-cniadd-")
    daemon = PrivateDaemon(log_level="warning")
    daemon.start()
    made_ns: list[str] = []
    bridges = [f"tvbr{tag}k", f"tvbr{tag}t"]
    with open("/proc/sys/net/ipv4/ip_forward") as f:
        forward = f.read().strip()
    ours = plugin_path()
    confs = {
        "bridge (kernel veth)": (
            os.path.join(REFERENCE, "bridge"),
            {"type": "bridge", "bridge": bridges[0], "subnet": "10.251.1.0/24"},
        ),
        "tapveth-cni": (
            ours,
            {"type": "tapveth-cni", "bridge": bridges[1], "socket": daemon.socket},
        ),
    }
    times: dict[str, dict[str, list[float]]] = {
        k: {"ADD": [], "DEL": [], "VERSION": []} for k in confs
    }
    try:
        for i in range(rounds):
            for label, (exe, base) in confs.items():
                ns = f"tvca{tag}{i}{label[0]}"
                subprocess.run(["ip", "netns", "add", ns], check=True, timeout=30)
                made_ns.append(ns)
                subnet = base.get("subnet", "10.251.2.0/24")
                conf = {
                    "cniVersion": "1.0.0",
                    "name": f"tvca{tag}{label[0]}",
                    **{k: v for k, v in base.items() if k != "subnet"},
                    "isGateway": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": subnet}]],
                        "dataDir": os.path.join(work, "ipam"),
                    },
                }
                path = f"/run/netns/{ns}"
                times[label]["VERSION"].append(call(exe, "VERSION", {}, "", "v"))
                times[label]["ADD"].append(call(exe, "ADD", conf, path, f"c{i}"))
                times[label]["DEL"].append(call(exe, "DEL", conf, path, f"c{i}"))
                subprocess.run(["ip", "netns", "del", ns], check=False, timeout=30)
                made_ns.remove(ns)
    finally:
        for ns in made_ns:
            subprocess.run(["ip", "netns", "del", ns], check=False, timeout=30)
        for br in bridges:
            subprocess.run(["ip", "link", "del", br], capture_output=True, check=False)
        with open("/proc/sys/net/ipv4/ip_forward", "w") as f:
            f.write(forward)
        daemon.stop()
        shutil.rmtree(work, ignore_errors=True)
    return {
        "rounds": rounds,
        "plugins": {
            label: {cmd: summary(v) for cmd, v in per.items()} for label, per in times.items()
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: the plugins make namespaces, bridges and links")
    load = os.getloadavg()[0]
    out = run(args.rounds)
    out["load_before"] = round(load, 2)
    out["load_after"] = round(os.getloadavg()[0], 2)
    print(
        f"CNI calls, {out['rounds']} rounds each, wall time per call (median [p10, p90]); "
        f"load average {out['load_before']} before, {out['load_after']} after:"
    )
    print(f"{'plugin':22} {'ADD':>24} {'DEL':>24} {'VERSION (start-up)':>24}")
    for label, per in out["plugins"].items():
        cells = [
            f"{per[c]['median_ms']:.1f} ms [{per[c]['p10_ms']:.0f}, {per[c]['p90_ms']:.0f}]"
            for c in ("ADD", "DEL", "VERSION")
        ]
        print(f"{label:22} {cells[0]:>24} {cells[1]:>24} {cells[2]:>24}")
    ref = out["plugins"]["bridge (kernel veth)"]["ADD"]["median_ms"]
    ours = out["plugins"]["tapveth-cni"]["ADD"]["median_ms"]
    print(f"ADD: tapveth-cni / bridge = {ours / ref:.1f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
