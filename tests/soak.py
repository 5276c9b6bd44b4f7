"""Soak: a daemon under iperf3 traffic, periodic carrier flaps and pair add/delete for N
minutes, sampling its RSS, open fds, threads and background tasks every 10 s. Prints one line
per sample and a JSON summary; exits 1 if anything grew after warm-up or traffic stopped.

    python tests/soak.py --minutes 10        (as root)
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from soakrig import SoakRig, after_warmup, floor_grew, proc_status, rss_grew, sh


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--interval", type=float, default=10.0)
    a = p.parse_args()
    samples: list[dict[str, float]] = []
    with SoakRig("tvsoak", "abcd") as rig:
        d, spaces = rig.daemon, rig.spaces
        d.request(
            "add",
            {
                "spec": {
                    "end": {"name": "sk1", "netns": spaces[0]},
                    "peer": {"name": "sk2", "netns": spaces[1]},
                }
            },
        )
        for ns, ifname, ip in ((spaces[0], "sk1", "10.99.0.1"), (spaces[1], "sk2", "10.99.0.2")):
            sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", ifname)
            sh("ip", "-n", ns, "link", "set", ifname, "up")
        pid = d.request("ping")["pid"]
        rig.spawn(spaces[1], "iperf3", "-s", "-B", "10.99.0.2")
        time.sleep(0.5)
        end = time.monotonic() + a.minutes * 60
        next_sample = time.monotonic()
        client: subprocess.Popen[bytes] | None = None
        cycle = 0
        while time.monotonic() < end:
            if client is None or client.poll() is not None:
                client = rig.spawn(spaces[0], "iperf3", "-c", "10.99.0.2", "-t", "20", "-b", "2G")
            cycle += 1
            if cycle % 3 == 0:  # a flap of the receiving end
                sh("ip", "-n", spaces[1], "link", "set", "sk2", "down")
                sh("ip", "-n", spaces[1], "link", "set", "sk2", "up")
            # a pair made and deleted
            d.request(
                "add",
                {
                    "spec": {
                        "end": {"name": "tmp1", "netns": spaces[2]},
                        "peer": {"name": "tmp2", "netns": spaces[3]},
                    }
                },
            )
            d.request("del", {"name": "tmp1"})
            if time.monotonic() >= next_sample:
                info = d.request("ping")
                st = proc_status(pid)
                stats = {e["ifname"]: e for e in d.request("stats")}
                sample = {
                    "t": round(a.minutes * 60 - (end - time.monotonic())),
                    "rss_mib": round(st["rss_mib"], 1),
                    "fds": info["fds"],
                    "threads": st["threads"],
                    "tasks": info["tasks"],
                    "pairs": info["pairs"],
                    "relayed_mb": stats["sk1"]["tx_bytes"] >> 20,
                }
                samples.append(sample)
                print(json.dumps(sample), flush=True)
                next_sample += a.interval
            time.sleep(0.5)
    rc = rig.daemon_exit
    base = after_warmup(samples, 2)
    last = samples[-1]
    grew = {
        "rss": rss_grew(base, last),
        "fds": floor_grew(samples, base, "fds"),
        "threads": floor_grew(samples, base, "threads"),
        "tasks": floor_grew(samples, base, "tasks"),
    }
    moving = samples[-1]["relayed_mb"] > samples[0]["relayed_mb"]
    ok = not any(grew.values()) and moving and rc == 0 and last["pairs"] == 1
    print(
        json.dumps(
            {
                "ok": ok,
                "first": samples[0],
                "after_warmup": base,
                "last": last,
                "grew": grew,
                "traffic_moving": moving,
                "daemon_exit": rc,
            }
        )
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
