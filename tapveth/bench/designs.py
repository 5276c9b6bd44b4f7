"""`tapveth bench --designs`: relay designs measured side by side in interleaved rounds.

Beside the kernel veth, the daemon and vde_switch: bare prototypes of other ways to relay
(tapveth/bench/relays.py: uvloop readers as the daemon's, a blocking thread per direction,
multi-queue TAPs with a thread per queue, io_uring), and placements: the daemon, the senders
and the receivers pinned so that the relay shares a CPU with the receiver, with the sender, or
with neither (and the kernel veth with its sender and receiver apart). Each runs as its own
process between two TAPs of a pair of namespaces built as `tapveth bench` builds them. The
prototypes carry none of the veth rules: their figures bound what a design could give, they
are not a product."""

import json
import os
import select
import subprocess
import sys
import time
from typing import Any

from tapveth.bench.designtable import FIGURES, design_table
from tapveth.bench.sidebyside import Bench, BenchError, Subject, _stop, cpu_seconds, guarded
from tapveth.bench.summary import Samples, add_round, medians, spreads

SENDER_CPU = 0  # ping and iperf3's client run here in the placement rows
OTHER_CPU = 1
KERNEL_APART = "kernel veth, sender and receiver apart"  # the placement rows' reference

# The placement rows: name, label, daemon options, the relay's CPU, the receivers' CPU
# (iperf3's server; a ping's answer is the kernel's). The senders are on SENDER_CPU.
PLACEMENTS = (
    ("tapveth, relay with the receiver", "p", (), OTHER_CPU, OTHER_CPU),
    ("tapveth, relay with the sender", "q", (), SENDER_CPU, OTHER_CPU),
    ("tapveth, relay alone", "w", (), OTHER_CPU, SENDER_CPU),
    ("tapveth --fast-path python, relay with the receiver", "y", ("--fast-path", "python"),
     OTHER_CPU, OTHER_CPU),
)  # fmt: skip
MQ_QUEUES = 2  # one queue per vCPU of the machine measured

# name, design of relays.py, its label in namespace names
PROTOTYPES = (
    ("bare uvloop readers", "uvloop", "u"),
    ("thread per direction", "thread", "h"),
    (f"multi-queue TAPs, {MQ_QUEUES} queues, thread each", "mq", "m"),
    ("io_uring multishot", "uring", "r"),
)


class Designs:
    """Builds the subjects of the designs bench on a sidebyside.Bench (its namespaces,
    configuration and clean-up) and measures the figures that tell designs apart."""

    def __init__(self, bench: Bench) -> None:
        self.bench = bench

    def build_relay(self, name: str, design: str, label: str) -> Subject:
        b = self.bench
        a, bns = b._netns_pair(label)
        na, nb = f"tvd{b.tag}{label}a", f"tvd{b.tag}{label}b"
        proc = subprocess.Popen(
            [sys.executable, "-m", "tapveth.bench.relays", design, na, nb,
             "--queues", str(MQ_QUEUES)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        s = Subject(name, a, bns, na, nb, pid=proc.pid)
        s.undo.append(lambda: _stop(proc))
        b.subjects.append(s)  # cleaned up from here on, even if it fails below
        assert proc.stdout is not None and proc.stderr is not None
        ready, _, _ = select.select([proc.stdout], [], [], 10)
        line = proc.stdout.readline() if ready else b""
        if line.strip() != b"ready":
            proc.kill()
            err = proc.stderr.read().decode(errors="replace").strip().splitlines()
            raise BenchError(f"{name}: the relay did not start: {err[-1] if err else line!r}")
        b._move_taps(s)
        b._configure(s)
        return s

    def build_placed(
        self, name: str, label: str, args: tuple[str, ...], relay_cpu: int, receiver_cpu: int
    ) -> Subject:
        """A daemon with every thread on relay_cpu, its receivers on receiver_cpu and its
        senders on SENDER_CPU."""
        b = self.bench
        s = b._build_daemon(name, label, args)
        b.subjects.append(s)
        assert s.pid is not None
        pin(s.pid, relay_cpu)
        s.client = ("taskset", "-c", str(SENDER_CPU))
        s.server = ("taskset", "-c", str(receiver_cpu))
        return s

    def build_kernel_apart(self) -> Subject:
        """The kernel veth with its senders and receivers pinned to different CPUs: what the
        placement rows compare with."""
        b = self.bench
        s = b.build_kernel(name=KERNEL_APART, label="j")
        b.subjects.append(s)
        s.client = ("taskset", "-c", str(SENDER_CPU))
        s.server = ("taskset", "-c", str(OTHER_CPU))
        return s

    def build_all(self) -> None:
        b = self.bench
        for build in (b.build_kernel, b.build_tapveth, b.build_vde):
            s = build()
            if s is None:
                b.log("  (vde_switch is not installed: skipped)")
                continue
            b.subjects.append(s)
        for name, design, label in PROTOTYPES:
            self.build_relay(name, design, label)
        if (os.cpu_count() or 1) >= 2:
            self.build_kernel_apart()
            for name, label, args, relay_cpu, receiver_cpu in PLACEMENTS:
                self.build_placed(name, label, args, relay_cpu, receiver_cpu)

    def measure(self, s: Subject) -> dict[str, float]:
        b = self.bench
        r: dict[str, float] = {}
        b.log(f"  {s.name}: ping")
        r["ping_p50_us"], r["ping_p99_us"] = b.ping(s)
        cpu0 = cpu_seconds(s.pid) if s.pid else 0.0
        b.log(f"  {s.name}: iperf3 TCP")
        res = b.iperf(s, "-P", "1")
        r["tcp1_gbps"] = res["end"]["sum_received"]["bits_per_second"] / 1e9
        if s.pid:
            moved = res["end"]["sum_sent"]["bytes"] + res["end"]["sum_received"]["bytes"]
            r["cpu_s_per_gb"] = (cpu_seconds(s.pid) - cpu0) / (moved / 2 / 1e9)
        # Four flows: the TAP hashes flows onto its queues, so mq uses more than one.
        r["tcp4_gbps"] = b.iperf(s, "-P", "4")["end"]["sum_received"]["bits_per_second"] / 1e9
        b.log(f"  {s.name}: iperf3 UDP 64 B")
        udp = b.iperf(s, "-u", "-b", "0", "-l", "64")["end"]["sum"]
        r["udp64_kpps"] = (udp["packets"] - udp["lost_packets"]) / udp["seconds"] / 1e3
        return r


def pin(pid: int, cpu: int) -> None:
    """Every thread of pid onto one CPU (threads made later inherit it)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        os.sched_setaffinity(int(tid), {cpu})


def run_designs(quick: bool, json_path: str | None, rounds: int | None = None) -> int:
    """Build every subject, then measure them in rounds, the order reversed every other round."""

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    if rounds is None:
        rounds = 1 if quick else 3
    bench = Bench(quick, True, log)
    if not quick:
        bench.seconds = 4.0
    designs = Designs(bench)
    samples: Samples = {}

    def body() -> None:
        designs.build_all()
        for s in bench.subjects:
            samples[s.name] = {}
        for r in range(rounds):
            order = bench.subjects if r % 2 == 0 else bench.subjects[::-1]
            for s in order:
                log(f"round {r + 1}/{rounds}: measuring {s.name}")
                add_round(samples, s.name, designs.measure(s))

    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    load = os.getloadavg()
    rc = guarded(body, bench.cleanup, log)
    if rc != 0:
        return rc
    print(design_table(samples))
    if json_path:
        info: dict[str, Any] = {
            "machine": {"cpus": os.cpu_count(), "kernel": os.uname().release},
            "date": started,
            "load_before": load,
            "load_after": os.getloadavg(),
            "quick": quick,
            "rounds": rounds,
            "figures": [f.key for f in FIGURES],
            "samples": samples,
            "results": medians(samples),
            "spread": spreads(samples),
        }
        with open(json_path, "w") as f:
            json.dump(info, f, indent=2)
    return 0
