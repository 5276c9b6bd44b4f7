"""`tapveth bench`: the kernel veth and a tapveth pair (and, with --peers, the userspace relays
people use today) built and measured side by side in one run, each figure with its ratio to the
kernel veth of that same run. Everything it makes (namespaces, pairs, daemon) is its own and is
removed at the end, even on Ctrl-C. Traffic stays inside its namespaces."""

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from tapveth.bench.summary import (
    KERNEL,
    METRICS,
    Samples,
    add_round,
    fmt,
    medians,
    ratios,
    round_ratios,
    spreads,
    table,
)
from tapveth.private import PrivateDaemon

IP_A, IP_B = "10.77.0.1", "10.77.0.2"
TICK = os.sysconf("SC_CLK_TCK")


class BenchError(RuntimeError):
    pass


@dataclass
class Subject:
    """One pair under measurement: where its ends are and which process relays it."""

    name: str
    ns_a: str
    ns_b: str
    if_a: str
    if_b: str
    pid: int | None = None
    undo: list[Callable[[], None]] = field(default_factory=list)
    client: tuple[str, ...] = ()  # prefix of the senders' commands (ping, iperf3 -c): taskset
    server: tuple[str, ...] = ()  # prefix of the receivers' commands (iperf3 -s): taskset


def sh(*cmd: str, timeout: float = 120, check: bool = True) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise BenchError(f"{' '.join(cmd)}: {proc.stderr.strip() or proc.returncode}")
    return proc.stdout


def in_ns(ns: str, *cmd: str, timeout: float = 120, check: bool = True) -> str:
    return sh("ip", "netns", "exec", ns, *cmd, timeout=timeout, check=check)


def _flags(link: str) -> set[str]:
    """The flags of one line of `ip -o link show` (UP, LOWER_UP, ...); empty if none."""
    head, sep, _ = link.partition(">")
    return set(head.partition("<")[2].split(",")) if sep else set()


def _stop(proc: "subprocess.Popen[bytes]") -> None:
    proc.terminate()
    proc.wait(5)


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class Bench:
    def __init__(
        self,
        quick: bool,
        peers: bool,
        log: Callable[[str], None],
        daemon_args: tuple[str, ...] = (),
        variants: tuple[tuple[str, ...], ...] = (),
    ) -> None:
        self.quick = quick
        self.daemon_args = daemon_args
        self.variants = variants
        self.peers = peers
        self.log = log
        self.tag = secrets.token_hex(2)
        self.namespaces: list[str] = []
        self.subjects: list[Subject] = []
        self.daemons: list[PrivateDaemon] = []
        self.seconds = 1.5 if quick else 5.0
        # Pings per figure, quick or not: of 100, the p99 would be the largest, set by one
        # outlier; of 300 it is the third largest (3 s at -i 0.01).
        self.probes = 300

    @property
    def daemon(self) -> PrivateDaemon | None:
        """The daemon of the tapveth subject (the first one made)."""
        return self.daemons[0] if self.daemons else None

    # -- building --------------------------------------------------------------------------

    def _netns_pair(self, label: str) -> tuple[str, str]:
        names = (f"tvbench-{self.tag}-{label}a", f"tvbench-{self.tag}-{label}b")
        for ns in names:
            sh("ip", "netns", "add", ns)
            self.namespaces.append(ns)
        return names

    def _configure(self, s: Subject) -> None:
        for ns, ifname, ip in ((s.ns_a, s.if_a, IP_A), (s.ns_b, s.if_b, IP_B)):
            sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", ifname)
            sh("ip", "-n", ns, "link", "set", ifname, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        deadline = time.monotonic() + 10
        while in_ns(s.ns_a, "ping", "-c", "1", "-W", "1", IP_B, check=False).find(" 0%") < 0:
            if time.monotonic() > deadline:
                raise BenchError(f"{s.name}: the pair does not carry ping")

    def build_kernel(self, name: str = "kernel veth", label: str = "k") -> Subject:
        a, b = self._netns_pair(label)
        s = Subject(name, a, b, f"{label}v1", f"{label}v2")
        sh("ip", "link", "add", s.if_a, "netns", a, "type", "veth", "peer", "name", s.if_b,
           "netns", b)  # fmt: skip
        self._configure(s)
        return s

    def build_tapveth(self) -> Subject:
        return self._build_daemon("tapveth", "t", self.daemon_args)

    def build_variants(self) -> list[Subject]:
        """One more tapveth daemon for each --variant, with those daemon options."""
        return [
            self._build_daemon(f"tapveth {' '.join(args)}", f"t{i}", args)
            for i, args in enumerate(self.variants)
        ]

    def _build_daemon(self, name: str, label: str, args: tuple[str, ...]) -> Subject:
        a, b = self._netns_pair(label)
        daemon = PrivateDaemon(log_level="warning", daemon_args=args)
        self.daemons.append(daemon)
        daemon.start()
        assert daemon.proc is not None
        s = Subject(name, a, b, "tv1", "tv2", pid=daemon.proc.pid)
        daemon.request(
            "add",
            {"spec": {"end": {"name": "tv1", "netns": a}, "peer": {"name": "tv2", "netns": b}}},
        )
        self._configure(s)
        return s

    def build_socat(self) -> Subject | None:
        if not shutil.which("socat"):
            return None
        a, b = self._netns_pair("s")
        na, nb = f"tvs{self.tag}a", f"tvs{self.tag}b"
        # socat exits on the first write that fails, and a write into a TAP that is down fails
        # (EIO): a frame crossing while a TAP is not up yet, or down because it is being moved
        # (a move sets a device down), ends it and takes both TAPs with it. Where it was made
        # in the initial namespace and both TAPs moved, IPv6's first frames (router
        # solicitation, MLD) did so whenever the move came soon enough (20 of 20 tries with
        # the move at once). So socat runs in a's namespace with IPv6 off there: its TAPs send
        # nothing until they are configured, and only b is moved. IPv6 is turned back on after.
        for key in ("all", "default"):
            in_ns(a, "sysctl", "-qw", f"net.ipv6.conf.{key}.disable_ipv6=1")
        proc = subprocess.Popen(
            [
                "ip", "netns", "exec", a,  # exec: proc.pid is socat's, whose CPU is measured
                "socat",
                f"TUN,tun-type=tap,tun-name={na},iff-up,iff-no-pi",
                f"TUN,tun-type=tap,tun-name={nb},iff-up,iff-no-pi",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        s = Subject("socat", a, b, na, nb, pid=proc.pid)
        s.undo.append(lambda: _stop(proc))
        # Moved only once socat has set it up: it does so by name, after creating it.
        deadline = time.monotonic() + 5
        while "UP" not in _flags(in_ns(a, "ip", "-o", "link", "show", nb, check=False)):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise BenchError("socat: its TAP devices did not come up")
            time.sleep(0.01)
        sh("ip", "-n", a, "link", "set", nb, "netns", b)
        self._configure(s)
        for key in ("all", "default"):
            in_ns(a, "sysctl", "-qw", f"net.ipv6.conf.{key}.disable_ipv6=0")
        if proc.poll() is not None:
            raise BenchError("socat: it exited while its TAPs were set up")
        return s

    def build_vde(self) -> Subject | None:
        if not shutil.which("vde_switch"):
            return None
        a, b = self._netns_pair("v")
        na, nb = f"tvv{self.tag}a", f"tvv{self.tag}b"
        ctl = f"/tmp/tvbench-vde-{self.tag}"
        for tap in (na, nb):
            sh("ip", "tuntap", "add", "dev", tap, "mode", "tap")
        proc = subprocess.Popen(
            ["vde_switch", "-s", ctl, "-t", na, "-t", nb],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        s = Subject("vde_switch", a, b, na, nb, pid=proc.pid)
        s.undo.append(lambda: _stop(proc))
        s.undo.append(lambda: shutil.rmtree(ctl, True))
        self._move_taps(s)
        self._configure(s)
        return s

    def _move_taps(self, s: Subject) -> None:
        deadline = time.monotonic() + 5
        while sh("ip", "link", "show", s.if_b, check=False) == "":
            if time.monotonic() > deadline:
                raise BenchError(f"{s.name}: its TAP devices did not appear")
            time.sleep(0.05)
        sh("ip", "link", "set", s.if_a, "netns", s.ns_a)
        sh("ip", "link", "set", s.if_b, "netns", s.ns_b)

    def cleanup(self) -> None:
        for s in self.subjects:
            for undo in s.undo:
                with contextlib.suppress(Exception):  # best effort: go on removing the rest
                    undo()
        for daemon in self.daemons:
            daemon.stop()
        for ns in self.namespaces:
            sh("ip", "netns", "del", ns, check=False)

    # -- measuring -------------------------------------------------------------------------

    def measure(self, s: Subject) -> dict[str, float]:
        r: dict[str, float] = {}
        self.log(f"  {s.name}: ping")
        r["ping_p50_us"], r["ping_p99_us"] = self.ping(s)
        if shutil.which("sockperf"):
            self.log(f"  {s.name}: sockperf UDP ping-pong")
            r["sockperf_p50_us"], r["sockperf_p99_us"] = self.sockperf(s)
        self.log(f"  {s.name}: TCP request/response")
        r["tcp_rr"] = self.tcp_rr(s)
        cpu0 = cpu_seconds(s.pid) if s.pid else 0.0
        self.log(f"  {s.name}: iperf3 TCP")
        res = self.iperf(s, "-P", "1")
        r["tcp1_gbps"] = res["end"]["sum_received"]["bits_per_second"] / 1e9
        if s.pid:
            moved = res["end"]["sum_sent"]["bytes"] + res["end"]["sum_received"]["bytes"]
            r["cpu_s_per_gb"] = (cpu_seconds(s.pid) - cpu0) / (moved / 2 / 1e9)
        r["tcp1r_gbps"] = (
            self.iperf(s, "-P", "1", "-R")["end"]["sum_received"]["bits_per_second"] / 1e9
        )
        r["tcp4_gbps"] = self.iperf(s, "-P", "4")["end"]["sum_received"]["bits_per_second"] / 1e9
        r["tcp4r_gbps"] = (
            self.iperf(s, "-P", "4", "-R")["end"]["sum_received"]["bits_per_second"] / 1e9
        )
        self.log(f"  {s.name}: iperf3 UDP 64 B")
        udp = self.iperf(s, "-u", "-b", "0", "-l", "64")["end"]["sum"]
        delivered = udp["packets"] - udp["lost_packets"]
        r["udp64_kpps"] = delivered / udp["seconds"] / 1e3
        r["udp64_loss"] = 100.0 * udp["lost_packets"] / max(1, udp["packets"])
        if s.pid:
            r["rss_mib"] = rss_mib(s.pid)
            time.sleep(0.5)
            c0 = cpu_seconds(s.pid)
            time.sleep(2.0)
            r["idle_cpu_pct"] = 100.0 * (cpu_seconds(s.pid) - c0) / 2.0
        return r

    def ping(self, s: Subject) -> tuple[float, float]:
        out = in_ns(
            s.ns_a,
            *s.client,
            "ping",
            "-c",
            str(self.probes),
            "-i",
            "0.01",
            "-W",
            "1",
            IP_B,
            check=False,
        )
        times = sorted(float(t) * 1000 for t in re.findall(r"time=([\d.]+) ms", out))
        if len(times) < self.probes // 2:
            raise BenchError(f"{s.name}: ping got {len(times)} of {self.probes} replies")
        return (statistics.median(times), times[min(len(times) - 1, int(len(times) * 0.99))])

    def sockperf(self, s: Subject) -> tuple[float, float]:
        """RTT percentiles of back-to-back UDP ping-pong, from an independent tool (sockperf
        measures each round trip itself; ping reports sparse probes)."""
        server = subprocess.Popen(
            ["ip", "netns", "exec", s.ns_b, "sockperf", "server", "-i", IP_B, "-p", "11111"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            time.sleep(0.3)  # sockperf's server has no readiness signal; UDP needs no accept
            out = in_ns(
                s.ns_a,
                "sockperf",
                "ping-pong",
                "-i",
                IP_B,
                "-p",
                "11111",
                "-t",
                str(max(1, int(self.seconds))),
                "--full-rtt",
                timeout=self.seconds + 30,
                check=False,
            )
            pct = dict(re.findall(r"percentile (\d+\.\d+) =\s+([\d.]+)", out))
            if "50.000" not in pct or "99.000" not in pct:
                raise BenchError(f"{s.name}: sockperf gave no percentiles")
            return float(pct["50.000"]), float(pct["99.000"])
        finally:
            server.kill()
            server.wait(5)

    def tcp_rr(self, s: Subject) -> float:
        server = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                s.ns_b,
                sys.executable,
                "-m",
                "tapveth.bench.rr",
                "server",
                "--host",
                IP_B,
                "--seconds",
                str(self.seconds),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        try:
            assert server.stdout is not None
            server.stdout.readline()
            out = in_ns(
                s.ns_a,
                sys.executable,
                "-m",
                "tapveth.bench.rr",
                "client",
                "--host",
                IP_B,
                "--seconds",
                str(self.seconds),
            )
            return float(json.loads(out)["rate"])
        finally:
            server.kill()
            server.wait(5)

    def iperf(self, s: Subject, *args: str) -> Any:
        server = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                s.ns_b,
                *s.server,
                "iperf3",
                "-s",
                "-1",
                "-B",
                IP_B,
                "-p",
                "5777",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 5
            while ":5777" not in in_ns(s.ns_b, "ss", "-ltn"):
                if time.monotonic() > deadline:
                    raise BenchError("iperf3 server did not start")
                time.sleep(0.05)
            out = in_ns(
                s.ns_a,
                *s.client,
                "iperf3",
                "-c",
                IP_B,
                "-p",
                "5777",
                "-t",
                str(self.seconds),
                "-J",
                *args,
                timeout=self.seconds + 60,
                check=False,
            )
            res = json.loads(out)
            if "error" in res:
                raise BenchError(f"{s.name}: iperf3 {' '.join(args)}: {res['error']}")
            return res
        finally:
            server.kill()
            server.wait(5)


def check_plot_available(path: str | None) -> None:
    """Refuse --plot before measuring anything when matplotlib is missing."""
    if path is None:
        return
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise BenchError("--plot needs matplotlib: pip install 'tapveth[plot]'") from None


def plot(samples: Samples, path: str) -> None:
    """Bars of each subject's ratio to the kernel veth (median of the per-round ratios), with
    error bars from the lowest to the highest round."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = medians(samples)
    per_round = round_ratios(samples)
    # Loss is left out: its ratio to a kernel loss near 0% says nothing (the table has it).
    metrics = [m for m in METRICS if m.key in results.get(KERNEL, {}) and m.key != "udp64_loss"]
    names = list(results)
    fig, ax = plt.subplots(figsize=(12, 5.5))
    width = 0.8 / len(names)
    for i, n in enumerate(names):
        runs = [per_round[n].get(m.key, []) for m in metrics]
        mids = [statistics.median(r) if r else 0.0 for r in runs]
        low = [mid - min(r) if r else 0.0 for mid, r in zip(mids, runs, strict=True)]
        high = [max(r) - mid if r else 0.0 for mid, r in zip(mids, runs, strict=True)]
        bars = ax.bar(
            [x + i * width for x in range(len(metrics))],
            mids,
            width,
            label=n,
            yerr=[low, high],
            capsize=2,
            error_kw={"linewidth": 0.8},
        )
        for bar, m in zip(bars, metrics, strict=True):
            raw = results[n].get(m.key)
            if raw is not None:
                ax.annotate(
                    fmt(raw),
                    (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center",
                    va="bottom",
                    fontsize=7,
                    rotation=90,
                )
    ax.axhline(1.0, color="grey", linewidth=0.8)
    ax.set_yscale("log", base=2)
    ax.set_xticks([x + width * (len(names) - 1) / 2 for x in range(len(metrics))])
    ax.set_xticklabels(
        [
            f"{m.label}\n({'higher' if m.better == 'higher' else 'lower'} is better)"
            for m in metrics
        ],
        fontsize=7,
        rotation=20,
        ha="right",
    )
    ax.set_ylabel("ratio to the kernel veth, same round (log scale)")
    rounds = max((len(v) for per in samples.values() for v in per.values()), default=1)
    ax.set_title(
        f"tapveth bench: median of {rounds} interleaved round(s), bars from lowest to highest"
    )
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def guarded(
    body: Callable[[], None], cleanup: Callable[[], None], log: Callable[[str], None]
) -> int:
    """The skeleton every bench run shares: SIGTERM as Ctrl-C, a BenchError as one line and
    exit 1, an interruption as 130, and cleanup always, itself shielded from a second Ctrl-C."""
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        body()
    except KeyboardInterrupt:
        log("interrupted: cleaning up")
        return 130
    except BenchError as exc:
        log(f"tapveth bench: {exc}")
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        cleanup()
        signal.signal(signal.SIGINT, signal.default_int_handler)
    return 0


def run_bench(
    quick: bool,
    peers: bool,
    json_path: str | None,
    plot_path: str | None,
    daemon_args: tuple[str, ...] = (),
    rounds: int | None = None,
    variants: tuple[tuple[str, ...], ...] = (),
) -> int:
    """Build every subject, then measure them in rounds, the order reversed every other round
    so that no subject always runs first (or last) on a machine whose load drifts."""

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    try:
        check_plot_available(plot_path)
    except BenchError as exc:
        log(f"tapveth bench: {exc}")
        return 2
    if rounds is None:
        rounds = 1 if quick else 3
    bench = Bench(quick, peers, log, daemon_args, variants)
    samples: Samples = {}

    def body() -> None:
        builders: list[Callable[[], Subject | None]] = [bench.build_kernel, bench.build_tapveth]
        if peers:
            builders += [bench.build_vde, bench.build_socat]
        for build in builders:
            s = build()
            if s is None:
                log(f"  ({build.__name__.removeprefix('build_')} is not installed: skipped)")
                continue
            bench.subjects.append(s)
            samples[s.name] = {}
        for s in bench.build_variants():
            bench.subjects.append(s)
            samples[s.name] = {}
        for r in range(rounds):
            order = bench.subjects if r % 2 == 0 else bench.subjects[::-1]
            for s in order:
                log(f"round {r + 1}/{rounds}: measuring {s.name}")
                add_round(samples, s.name, bench.measure(s))

    rc = guarded(body, bench.cleanup, log)
    if rc != 0:
        return rc
    results = medians(samples)
    info = {
        "machine": {"cpus": os.cpu_count(), "kernel": os.uname().release},
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "quick": quick,
        "rounds": rounds,
        "samples": samples,
        "results": results,
        "spread": spreads(samples),
        "ratios_to_kernel": ratios(results),
        "round_ratios_to_kernel": round_ratios(samples),
    }
    print(table(samples))
    if json_path:
        with open(json_path, "w") as f:
            json.dump(info, f, indent=2)
    if plot_path:
        plot(samples, plot_path)
    return 0


def run_scale(pairs: int, quick: bool, json_path: str | None) -> int:
    """The --pairs run: see scale.py."""
    from tapveth.bench.scale import Scale, scale_table

    if not 1 <= pairs <= 1024:
        raise BenchError("--pairs takes 1..1024")

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    scale = Scale(pairs, 2.0 if quick else 5.0, log)
    result: dict[str, Any] = {}

    def body() -> None:
        result.update(scale.run())

    rc = guarded(body, scale.cleanup, log)
    if rc != 0:
        return rc
    print(scale_table(result))
    if json_path:
        with open(json_path, "w") as f:
            json.dump(result, f, indent=2)
    return 0
