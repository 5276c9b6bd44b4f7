"""Soak of the impairments: iperf3 through a pair whose data direction has delay, jitter, loss
and a rate (and the ACK direction a delay), the impairments changed in place every few
seconds, for N minutes. Every 10 s prints the daemon's RSS, open fds and the impairment
queue's backlog; then stops the traffic, lets the queue drain and prints a JSON summary.
Exits 1 if RSS grew beyond a slack after the first third, fds grew, traffic stopped moving or
the queue was not empty at the end.

    python tests/soak_impair.py --minutes 10        (as root)
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from soakrig import SoakRig, after_warmup, proc_status, rss_grew, sh

from tapveth.private import PrivateDaemon

FD_SLACK = 2  # the control connection the sample itself is served on comes and goes
CHANGE_EVERY_S = 3.0

# Rotated through with `qdisc replace`: each changes delay, jitter, loss and rate at once.
SETTINGS = (
    "delay 20ms 5ms loss 0.5% rate 200mbit",
    "delay 40ms 10ms distribution normal loss 1% rate 100mbit",
    "delay 5ms 1ms loss 0.1% duplicate 0.5% rate 500mbit",
    "delay 10ms 3ms loss gemodel 1% 30% corrupt 0.1% rate 50mbit",
)


def rss_mib(pid: int) -> float:
    return proc_status(pid)["rss_mib"]


def qdisc(d: PrivateDaemon, dev: str) -> dict[str, Any]:
    (q,) = d.request("qdisc", {"action": "show", "name": dev})
    assert isinstance(q, dict)
    return q


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--interval", type=float, default=10.0)
    a = p.parse_args()
    samples: list[dict[str, Any]] = []
    changes = 0
    drained: dict[str, Any] = {}
    with SoakRig("tvsoakq", "ab") as rig:
        d, spaces = rig.daemon, rig.spaces
        a1, a2 = f"sq1{rig.tag}", f"sq2{rig.tag}"
        d.cli("add", a1, "netns", spaces[0], "peer", "name", a2, "netns", spaces[1])
        for ns, ifname, ip in ((spaces[0], a1, "10.98.0.1"), (spaces[1], a2, "10.98.0.2")):
            sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", ifname)
            sh("ip", "-n", ns, "link", "set", ifname, "up")
        deadline = time.monotonic() + 15
        ping = ("ip", "netns", "exec", spaces[0], "ping", "-c1", "-W1", "10.98.0.2")
        while " 0% packet loss" not in sh(*ping, check=False):
            if time.monotonic() > deadline:
                raise RuntimeError("the pair carries no traffic")
        d.cli("qdisc", "add", "dev", a1, "root", "netem", *SETTINGS[0].split())
        d.cli("qdisc", "add", "dev", a2, "root", "netem", "delay", "5ms", "1ms")
        pid = d.request("ping")["pid"]
        rig.spawn(spaces[1], "iperf3", "-s", "-B", "10.98.0.2")
        time.sleep(0.5)
        start = time.monotonic()
        end = start + a.minutes * 60
        next_sample = start
        next_change = start + CHANGE_EVERY_S
        client: subprocess.Popen[bytes] | None = None
        while time.monotonic() < end:
            if client is None or client.poll() is not None:
                client = rig.spawn(spaces[0], "iperf3", "-c", "10.98.0.2", "-t", "20")
            if time.monotonic() >= next_change:
                changes += 1
                words = SETTINGS[changes % len(SETTINGS)].split()
                d.cli("qdisc", "replace", "dev", a1, "root", "netem", *words)
                next_change += CHANGE_EVERY_S
            if time.monotonic() >= next_sample:
                q = qdisc(d, a1)
                sample = {
                    "t": round(time.monotonic() - start),
                    "rss_mib": round(rss_mib(pid), 1),
                    "fds": d.request("ping")["fds"],
                    "backlog_pkts": q["stats"]["backlog_packets"],
                    "backlog_bytes": q["stats"]["backlog_bytes"],
                    "sent_mb": q["stats"]["sent_bytes"] >> 20,
                    "dropped": q["stats"]["dropped"],
                    "options": q["options"],
                }
                samples.append(sample)
                print(json.dumps(sample), flush=True)
                next_sample += a.interval
            time.sleep(0.25)
        rig.kill_all()
        # the longest delay is 40 ms + jitter; rate-limited backlog drains within a second or two
        deadline = time.monotonic() + 30
        while (q := qdisc(d, a1))["stats"]["backlog_packets"] and time.monotonic() < deadline:
            time.sleep(0.2)
        drained = {k: q["stats"][k] for k in ("backlog_packets", "backlog_bytes")}
        drained["rss_mib"] = round(rss_mib(pid), 1)
        drained["fds"] = d.request("ping")["fds"]
    rc = rig.daemon_exit
    base = after_warmup(samples, 1)
    last = samples[-1]
    grew = {
        "rss": rss_grew(base, last),
        "fds": last["fds"] > base["fds"] + FD_SLACK,
    }
    moving = last["sent_mb"] > samples[0]["sent_mb"]
    empty = drained.get("backlog_packets") == 0 and drained.get("backlog_bytes") == 0
    ok = not any(grew.values()) and moving and empty and rc == 0
    summary = {
        "ok": ok,
        "changes": changes,
        "first": samples[0],
        "after_warmup": base,
        "last": last,
        "grew": grew,
        "traffic_moving": moving,
        "drained": drained,
        "queue_empty": empty,
        "daemon_exit": rc,
    }
    print(json.dumps(summary))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
