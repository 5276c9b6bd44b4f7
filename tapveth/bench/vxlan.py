"""`tapveth bench --vxlan`: a pair stretched over a VXLAN tunnel, measured against the kernel's
vxlan <-> vxlan on the same kind of underlay in the same run.

Each subject gets two "hosts" (namespaces) joined by a kernel veth underlay (192.0.2.1/24 and
192.0.2.2/24, MTU 1500) and an overlay 10.77.0.0/24 across the tunnel (MTU 1450):
- kernel vxlan: `ip link add … type vxlan` on both hosts;
- tapveth -> kernel: a tapveth end (its own namespace) on host A, the kernel's vxlan on host B;
- tapveth <-> tapveth: tapveth ends on both hosts (two daemons), with BFD.
The underlay veths have TX checksum offload off for every subject: a veth hands checksum-partial
packets to its peer as they are, and a userspace end, which sees only the UDP payload, would get
inner TCP with no checksum computed (a NIC on a wire computes it). The kernel's own vxlan is
also measured with the veth offloads on, its best case. Every underlay veth has GRO on, as a
NIC has by default.
"""

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from types import FrameType

from tapveth.bench.sidebyside import (
    Bench,
    BenchError,
    Subject,
    cpu_seconds,
    in_ns,
    sh,
)
from tapveth.private import PrivateDaemon

U_A, U_B = "192.0.2.1", "192.0.2.2"
VNI, PORT = "42", "4789"
METRICS = [
    ("ping_p50_us", "ping RTT p50", "us"),
    ("tcp1_gbps", "TCP 1 stream A->B", "Gbit/s"),
    ("tcp1r_gbps", "TCP 1 stream B->A", "Gbit/s"),
    ("udp64_kpps", "UDP 64 B delivered A->B", "kpps"),
    ("udp64_loss", "UDP 64 B loss", "%"),
    ("cpu_s_per_gb", "daemon CPU per GB (TCP A->B)", "s/GB"),
]


class VxlanBench(Bench):
    """Builds the tunnel subjects; the measurements are Bench's."""

    def __init__(
        self, quick: bool, log: Callable[[str], None], daemon_args: tuple[str, ...] = ()
    ) -> None:
        super().__init__(quick, False, log, daemon_args)
        self.daemons: list[PrivateDaemon] = []

    def _hosts(self, label: str, offload: bool = False) -> tuple[str, str]:
        a, b = self._netns_pair(label)
        sh("ip", "-n", a, "link", "add", "u0", "type", "veth", "peer", "name", "u0", "netns", b)
        for ns, ip in ((a, U_A), (b, U_B)):
            # GRO on, as a NIC has it by default (a veth has not): the kernel's vxlan and
            # tapveth's UDP_GRO socket both get merged packets from it.
            in_ns(ns, "ethtool", "-K", "u0", "gro", "on")
            if not offload:
                in_ns(ns, "ethtool", "-K", "u0", "tx", "off")
            sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", "u0")
            sh("ip", "-n", ns, "link", "set", "u0", "up")
        return a, b

    def _kernel_vxlan(self, ns: str, remote: str) -> None:
        sh(
            "ip", "-n", ns, "link", "add", "vx0", "type", "vxlan", "id", VNI, "remote", remote,
            "dstport", PORT, "dev", "u0",
        )  # fmt: skip

    def _daemon(self) -> PrivateDaemon:
        d = PrivateDaemon(log_level="warning", daemon_args=self.daemon_args).start()
        self.daemons.append(d)
        return d

    def _tapveth_end(self, d: PrivateDaemon, ns: str, host: str, remote: str, *far: str) -> None:
        words = [
            "add", "tv0", "netns", ns, "peer", "vxlan", "id", VNI, "remote", remote,
            "dstport", PORT, "underlay-netns", host, *far,
        ]  # fmt: skip
        proc = d.cli(*words, check=False)
        if proc.returncode != 0:
            raise BenchError(f"tapveth add: {proc.stderr.strip()}")

    def build_kernel_vxlan(self, offload: bool) -> Subject:
        a, b = self._hosts("ko" if offload else "k", offload)
        name = "kernel vxlan" + (" (veth offloads on)" if offload else "")
        s = Subject(name, a, b, "vx0", "vx0")
        self._kernel_vxlan(a, U_B)
        self._kernel_vxlan(b, U_A)
        self._configure(s)
        return s

    def build_tapveth_to_kernel(self) -> Subject:
        a, b = self._hosts("t")
        (o1,) = self._extra_ns("to")
        d = self._daemon()
        assert d.proc is not None
        self._tapveth_end(d, o1, a, U_B)
        self._kernel_vxlan(b, U_A)
        s = Subject("tapveth -> kernel vxlan", o1, b, "tv0", "vx0", pid=d.proc.pid)
        self._configure(s)
        return s

    def build_tapveth_both(self) -> Subject:
        a, b = self._hosts("tt")
        o1, o2 = self._extra_ns("tt1", "tt2")
        da, db = self._daemon(), self._daemon()
        assert da.proc is not None
        self._tapveth_end(da, o1, a, U_B, "bfd")
        self._tapveth_end(db, o2, b, U_A, "bfd")
        s = Subject("tapveth <-> tapveth (bfd)", o1, o2, "tv0", "tv0", pid=da.proc.pid)
        self._configure(s)
        return s

    def _extra_ns(self, *labels: str) -> list[str]:
        out = []
        for label in labels:
            ns = f"tvbench-{self.tag}-{label}"
            sh("ip", "netns", "add", ns)
            self.namespaces.append(ns)
            out.append(ns)
        return out

    def measure_tunnel(self, s: Subject) -> dict[str, float]:
        r: dict[str, float] = {}
        self.log(f"  {s.name}: ping")
        r["ping_p50_us"], _ = self.ping(s)
        self.log(f"  {s.name}: iperf3 TCP")
        cpu0 = cpu_seconds(s.pid) if s.pid else 0.0
        res = self.iperf(s, "-P", "1")
        r["tcp1_gbps"] = res["end"]["sum_received"]["bits_per_second"] / 1e9
        if s.pid:
            moved = res["end"]["sum_received"]["bytes"]
            r["cpu_s_per_gb"] = (cpu_seconds(s.pid) - cpu0) / (moved / 1e9)
        res = self.iperf(s, "-P", "1", "-R")
        r["tcp1r_gbps"] = res["end"]["sum_received"]["bits_per_second"] / 1e9
        self.log(f"  {s.name}: iperf3 UDP 64 B")
        udp = self.iperf(s, "-u", "-b", "0", "-l", "64")["end"]["sum"]
        r["udp64_kpps"] = (udp["packets"] - udp["lost_packets"]) / udp["seconds"] / 1e3
        r["udp64_loss"] = 100.0 * udp["lost_packets"] / max(1, udp["packets"])
        return r

    def cleanup(self) -> None:
        for d in self.daemons:
            d.stop()
        self.daemons.clear()
        super().cleanup()


def vxlan_table(results: dict[str, dict[str, float]], base: str) -> str:
    names = list(results)
    head = ["figure", *names, *[f"{n} / {base}" for n in names if n != base]]
    rows = [head]
    for key, label, unit in METRICS:
        row = [f"{label} ({unit})"]
        for n in names:
            v = results[n].get(key)
            row.append("-" if v is None else f"{v:.3g}")
        for n in names:
            if n == base:
                continue
            v, b = results[n].get(key), results[base].get(key)
            row.append("-" if v is None or not b else f"{v / b:.2f}x")
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run_vxlan_bench(quick: bool, json_path: str | None, daemon_args: tuple[str, ...] = ()) -> int:
    signal.signal(signal.SIGTERM, _interrupt)  # cleaned up as on Ctrl-C

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    bench = VxlanBench(quick, log, daemon_args)
    results: dict[str, dict[str, float]] = {}
    base = "kernel vxlan"
    try:
        builders: list[Callable[[], Subject]] = [
            lambda: bench.build_kernel_vxlan(False),
            lambda: bench.build_kernel_vxlan(True),
            bench.build_tapveth_to_kernel,
            bench.build_tapveth_both,
        ]
        for build in builders:
            s = build()
            bench.subjects.append(s)
            log(f"measuring {s.name}")
            results[s.name] = bench.measure_tunnel(s)
    except KeyboardInterrupt:
        log("interrupted: cleaning up")
        return 130
    except (BenchError, subprocess.SubprocessError) as exc:
        log(f"tapveth bench --vxlan: {exc}")
        return 1
    finally:
        bench.cleanup()
    print(vxlan_table(results, base))
    if json_path:
        with open(json_path, "w") as f:
            info = {"machine": {"cpus": os.cpu_count(), "kernel": os.uname().release}}
            json.dump({**info, "quick": quick, "results": results}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(run_vxlan_bench("--quick" in sys.argv, None))
