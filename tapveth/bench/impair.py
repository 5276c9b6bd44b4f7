"""`tapveth bench --impair`: how closely a real receiver sees what netem settings ask for. One
tapveth pair in two namespaces of its own; for each setting, the figure a receiver measures
(ping RTT above the unimpaired one, its spread, iperf3 UDP loss, iperf3 TCP goodput) next to the
configured value. Everything it makes is removed at the end."""

import json
import re
import signal
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass

from tapveth.bench.sidebyside import IP_B, Bench, BenchError, Subject, _interrupt, in_ns


@dataclass
class Row:
    setting: str
    figure: str
    unit: str
    configured: float
    measured: float

    @property
    def ratio(self) -> float:
        return self.measured / self.configured if self.configured else float("nan")


def _rtts(s: Subject, count: int) -> list[float]:
    out = in_ns(s.ns_a, "ping", "-c", str(count), "-i", "0.01", "-W", "2", IP_B, check=False)
    return [float(t) for t in re.findall(r"time=([\d.]+) ms", out)]


class ImpairBench:
    def __init__(self, bench: Bench, s: Subject, log: Callable[[str], None]) -> None:
        self.bench, self.s, self.log = bench, s, log
        self.count = 50 if bench.quick else 200

    def netem(self, line: str | None) -> None:
        assert self.bench.daemon is not None
        if line is None:
            self.bench.daemon.request("qdisc", {"action": "del", "name": self.s.if_a})
            return
        from tapveth.core.netem import parse

        self.bench.daemon.request(
            "qdisc",
            {"action": "replace", "name": self.s.if_a, "netem": parse(line.split()).to_dict()},
        )

    def run(self) -> list[Row]:
        rows: list[Row] = []
        base = statistics.median(_rtts(self.s, self.count))
        self.log(f"  unimpaired ping RTT p50 {base * 1000:.0f} us")
        for delay_ms in (0.3, 1.0, 10.0, 50.0):
            line = f"delay {delay_ms:g}ms"
            self.log(f"  {line}")
            self.netem(line)
            got = statistics.median(_rtts(self.s, self.count))
            rows.append(Row(line, "added RTT p50", "ms", delay_ms, got - base))
        line = "delay 20ms 4ms distribution normal"
        self.log(f"  {line}")
        self.netem(line)
        got_rtts = _rtts(self.s, self.count * 2)
        rows.append(Row(line, "RTT std dev", "ms", 4.0, statistics.pstdev(got_rtts)))
        rows.append(Row(line, "added RTT mean", "ms", 20.0, statistics.mean(got_rtts) - base))
        for pct in (1.0, 10.0):
            line = f"loss {pct:g}%"
            self.log(f"  {line}")
            self.netem(line)
            udp = self.bench.iperf(self.s, "-u", "-b", "20M", "-l", "1000")["end"]["sum"]
            rows.append(
                Row(line, "UDP loss", "%", pct, 100.0 * udp["lost_packets"] / udp["packets"])
            )
        for mbit in (10, 100, 1000):
            line = f"rate {mbit}mbit"
            self.log(f"  {line}")
            self.netem(line)
            res = self.bench.iperf(self.s, "-P", "1")
            got = res["end"]["sum_received"]["bits_per_second"] / 1e6
            rows.append(Row(line, "TCP goodput", "Mbit/s", float(mbit), got))
        line = "delay 20ms rate 100mbit"
        self.log(f"  {line}")
        self.netem(line)
        res = self.bench.iperf(self.s, "-P", "1")
        got = res["end"]["sum_received"]["bits_per_second"] / 1e6
        rows.append(Row(line, "TCP goodput", "Mbit/s", 100.0, got))
        self.netem(None)
        return rows


def table(rows: list[Row]) -> str:
    head = ("setting", "figure", "unit", "configured", "measured", "measured / configured")
    body = [
        (r.setting, r.figure, r.unit, f"{r.configured:g}", f"{r.measured:.3g}", f"{r.ratio:.2f}")
        for r in rows
    ]
    widths = [max(len(x) for x in col) for col in zip(head, *body, strict=True)]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in (head, *body)
    )


def run_impair_bench(quick: bool, json_path: str | None) -> int:
    signal.signal(signal.SIGTERM, _interrupt)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    bench = Bench(quick, False, log)
    try:
        s = bench.build_tapveth()
        bench.subjects.append(s)
        log("measuring impairments on tapveth")
        rows = ImpairBench(bench, s, log).run()
    except KeyboardInterrupt:
        log("interrupted: cleaning up")
        return 130
    except BenchError as exc:
        log(f"tapveth bench: {exc}")
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        bench.cleanup()
        signal.signal(signal.SIGINT, signal.default_int_handler)
    print(table(rows))
    if json_path:
        with open(json_path, "w") as f:
            json.dump([r.__dict__ for r in rows], f, indent=2)
    return 0
