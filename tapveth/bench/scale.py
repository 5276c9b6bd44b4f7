"""`tapveth bench --pairs N`: N pairs in one daemon, each in two namespaces of its own, against
the same N kernel veth pairs: setup time per pair, the daemon's RSS and idle CPU, every pair
answering ping, and aggregate TCP throughput with traffic on all pairs at once."""

import contextlib
import json
import os
import secrets
import socket
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tapveth.bench.sidebyside import BenchError, cpu_seconds, rss_mib, sh
from tapveth.daemon.worker import CLOSE_THREADS
from tapveth.kernel import netns
from tapveth.kernel.rtnl import Rtnl
from tapveth.kernel.tap import Tap
from tapveth.private import PrivateDaemon

IP_A, IP_B = "10.78.0.1", "10.78.0.2"


class Scale:
    def __init__(self, pairs: int, seconds: float, log: Callable[[str], None]) -> None:
        self.n = pairs
        self.seconds = seconds
        self.log = log
        self.tag = secrets.token_hex(2)
        self.namespaces: list[str] = []
        self.daemon: PrivateDaemon | None = None

    def _ns(self, kind: str, i: int) -> tuple[str, str]:
        return (f"tvs{self.tag}{kind}{i}a", f"tvs{self.tag}{kind}{i}b")

    def _batch(self, lines: list[str], netns: str | None = None) -> None:
        cmd = ["ip", *(["-n", netns] if netns else []), "-batch", "-"]
        proc = subprocess.run(
            cmd, input="\n".join(lines) + "\n", capture_output=True, text=True, timeout=300
        )
        if proc.returncode != 0:
            raise BenchError(f"ip -batch: {proc.stderr.strip()}")

    def _make_namespaces(self, kind: str) -> list[tuple[str, str]]:
        spaces = [self._ns(kind, i) for i in range(self.n)]
        names = [ns for pair in spaces for ns in pair]
        self._batch([f"netns add {ns}" for ns in names])
        self.namespaces += names
        return spaces

    def _configure(self, spaces: list[tuple[str, str]], a: str, b: str) -> None:
        for ns_a, ns_b in spaces:
            for ns, ifname, ip in ((ns_a, a, IP_A), (ns_b, b, IP_B)):
                self._batch(
                    [f"addr add {ip}/24 dev {ifname}", f"link set {ifname} up", "link set lo up"],
                    netns=ns,
                )

    def run(self) -> dict[str, Any]:
        out: dict[str, Any] = {"pairs": self.n}
        self.log(f"scale: {self.n} kernel veth pairs")
        kspaces = self._make_namespaces("k")
        t0 = time.monotonic()
        self._batch([f"link add kv netns {a} type veth peer name kv netns {b}" for a, b in kspaces])
        out["kernel_setup_s_per_pair"] = (time.monotonic() - t0) / self.n
        self._configure(kspaces, "kv", "kv")
        self.log(f"scale: {2 * self.n} TAPs made and moved, without a daemon")
        out["moves_alone_s_total"] = self._moves_alone(kspaces)

        self.log(f"scale: {self.n} tapveth pairs")
        tspaces = self._make_namespaces("t")
        self.daemon = PrivateDaemon(log_level="warning").start()
        assert self.daemon.proc is not None
        pid = self.daemon.proc.pid
        t0 = time.monotonic()
        for a, b in tspaces:
            self.daemon.request(
                "add",
                {"spec": {"end": {"name": "tv", "netns": a}, "peer": {"name": "tv", "netns": b}}},
            )
        out["tapveth_setup_s_per_pair"] = (time.monotonic() - t0) / self.n
        out["tapveth_setup_s_total"] = time.monotonic() - t0
        self._configure(tspaces, "tv", "tv")
        out["kernel_pairs_answering_ping"] = self._ping_all(kspaces)
        out["tapveth_pairs_answering_ping"] = self._ping_all(tspaces)
        time.sleep(1.0)
        out["tapveth_rss_mib"] = rss_mib(pid)
        c0 = cpu_seconds(pid)
        time.sleep(3.0)
        out["tapveth_idle_cpu_pct"] = 100 * (cpu_seconds(pid) - c0) / 3.0
        self.log("scale: TCP on every pair at once")
        out["kernel_aggregate_gbps"] = self._aggregate(kspaces)
        # The daemon's share of a CPU meanwhile: one process relays every pair, beside the
        # 2 x N iperf3 processes that the scheduler shares the CPUs with.
        c0, t0 = cpu_seconds(pid), time.monotonic()
        out["tapveth_aggregate_gbps"] = self._aggregate(tspaces)
        out["tapveth_aggregate_cpu_pct"] = 100 * (cpu_seconds(pid) - c0) / (time.monotonic() - t0)
        out["aggregate_ratio"] = out["tapveth_aggregate_gbps"] / out["kernel_aggregate_gbps"]
        # The stop (SIGTERM until the daemon exits): every pair's ends deleted by then.
        self.log(f"scale: stopping the daemon with {self.n} pairs")
        t0 = time.monotonic()
        rc = self.daemon.stop(timeout=10.0 + 0.1 * self.n)
        out["tapveth_stop_s_total"] = time.monotonic() - t0
        left = sum(1 for _, b in tspaces if _has_link(b, "tv"))
        if rc != 0 or left:
            raise BenchError(f"the daemon stopped with status {rc}, leaving {left} end(s)")
        return out

    def _moves_alone(self, spaces: list[tuple[str, str]]) -> float:
        """Seconds to make two TAPs a pair here and move each into its namespace under its
        final name, as the daemon places its ends, with no daemon: the kernel's share of the
        set-up. Each move waits for RCU under rtnl (see README), so the moves cannot overlap
        and this is the floor of tapveth's set-up time on this machine."""
        taps: list[Tap] = []
        try:
            with Rtnl() as rtnl:
                t0 = time.monotonic()
                for pair in spaces:
                    for ns in pair:
                        fd = netns.open_netns(ns)
                        try:
                            tap = Tap("tvsmv" + secrets.token_hex(4))
                            taps.append(tap)
                            index = socket.if_nametoindex(tap.ifname())
                            rtnl.link_set(index, net_ns_fd=fd, name="tm")
                        finally:
                            os.close(fd)
                return time.monotonic() - t0
        finally:
            # Deleted by the kernel as its only fd closes; each close waits for RCU too, but
            # outside rtnl, so closes on many threads end together (as the daemon stops them).
            with ThreadPoolExecutor(CLOSE_THREADS) as pool:
                list(pool.map(Tap.close, taps))

    def _ping_all(self, spaces: list[tuple[str, str]]) -> int:
        """How many pairs answer a ping within 5 s (ping sends again each second until then:
        the kernel activates a device's queue some time after its carrier came, and drops
        what is sent before, the first ARP request included)."""
        ok = 0
        for start in range(0, len(spaces), 32):
            procs = [
                subprocess.Popen(
                    ["ip", "netns", "exec", a, "ping", "-c", "1", "-w", "5", IP_B],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                for a, _ in spaces[start : start + 32]
            ]
            ok += sum(1 for p in procs if p.wait(10) == 0)
        return ok

    def _aggregate(self, spaces: list[tuple[str, str]]) -> float:
        servers = [
            subprocess.Popen(
                ["ip", "netns", "exec", b, "iperf3", "-s", "-1", "-B", IP_B],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for _, b in spaces
        ]
        try:
            deadline = time.monotonic() + 30
            for _, b in spaces:
                while ":5201" not in sh("ip", "netns", "exec", b, "ss", "-ltn"):
                    if time.monotonic() > deadline:
                        raise BenchError("iperf3 servers did not start")
                    time.sleep(0.05)
            # Bytes received by all the pairs over the time from the first client's start to
            # the last one's end. Summing each client's own rate overstated it: on two vCPUs
            # the clients start over a second or more and their runs overlap only in part, so
            # the sum of 256 rates read 100 Gbit/s for kernel veths that carry ~17 one at a time.
            t0 = time.monotonic()
            clients = [
                subprocess.Popen(
                    ["ip", "netns", "exec", a, "iperf3", "-c", IP_B, "-t", str(self.seconds), "-J"],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                    text=True,
                )
                for a, _ in spaces
            ]
            received = 0
            for c in clients:
                out, _ = c.communicate(timeout=self.seconds + 120)
                with contextlib.suppress(ValueError, KeyError):  # a failed client adds nothing
                    received += int(json.loads(out)["end"]["sum_received"]["bytes"])
            return 8 * received / (time.monotonic() - t0) / 1e9
        finally:
            for s in servers:
                s.kill()
                s.wait(5)

    def cleanup(self) -> None:
        try:
            if self.daemon is not None:
                # The daemon deletes its pairs together (~3 ms a pair); the margin is for a
                # loaded host.
                self.daemon.stop(timeout=10.0 + 0.1 * self.n)
        finally:
            self._delete_namespaces()

    def _delete_namespaces(self) -> None:
        if self.namespaces:
            subprocess.run(
                ["ip", "-batch", "-"],
                input="".join(f"netns del {ns}\n" for ns in self.namespaces),
                capture_output=True,
                text=True,
                timeout=300,
            )


def _has_link(netns: str, name: str) -> bool:
    return bool(sh("ip", "-n", netns, "link", "show", name, check=False))


def scale_table(r: dict[str, Any]) -> str:
    rows = [
        ("pairs", f"{r['pairs']}", ""),
        (
            "setup per pair (s)",
            f"{r['kernel_setup_s_per_pair']:.4f}",
            f"{r['tapveth_setup_s_per_pair']:.4f}",
        ),
        (
            "pairs answering ping",
            f"{r['kernel_pairs_answering_ping']}",
            f"{r['tapveth_pairs_answering_ping']}",
        ),
        ("daemon RSS (MiB)", "-", f"{r['tapveth_rss_mib']:.1f}"),
        ("daemon idle CPU (%)", "-", f"{r['tapveth_idle_cpu_pct']:.2f}"),
        (
            "aggregate TCP (Gbit/s)",
            f"{r['kernel_aggregate_gbps']:.2f}",
            f"{r['tapveth_aggregate_gbps']:.2f} ({r['aggregate_ratio']:.2f}x)",
        ),
        ("daemon CPU meanwhile (%)", "-", f"{r['tapveth_aggregate_cpu_pct']:.0f}"),
    ]
    w = max(len(x[0]) for x in rows)
    lines = [f"{'':{w}}  kernel veth   tapveth"]
    lines += [f"{a:{w}}  {b:12}  {c}" for a, b, c in rows]
    lines.append(f"tapveth setup of all {r['pairs']} pairs: {r['tapveth_setup_s_total']:.2f} s")
    if "moves_alone_s_total" in r:
        extra = (r["tapveth_setup_s_total"] - r["moves_alone_s_total"]) / r["pairs"]
        lines.append(
            f"  of which the kernel's share (two TAPs made and moved a pair, no daemon): "
            f"{r['moves_alone_s_total']:.2f} s; the daemon adds {1000 * extra:.1f} ms a pair"
        )
    lines.append(f"tapveth daemon stop with all of them: {r['tapveth_stop_s_total']:.2f} s")
    return "\n".join(lines)
