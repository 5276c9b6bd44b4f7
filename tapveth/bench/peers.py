"""The peers `bench --impair` measures tapveth against, each driven by the same settings:
vde_switch + wirefilter (two switches, one TAP each, joined by a wirefilter: the userspace
impairment tool of Debian's vde2) and, for rates, the kernel's tbf on a kernel veth pair. A
setting a peer cannot express is answered with False, and its cells in the table show "-"."""

import functools
import os
import shutil
import subprocess
import time
from dataclasses import dataclass

from tapveth.bench.sidebyside import Bench, BenchError, Subject, _stop, in_ns, sh


def _del_link(name: str) -> None:
    sh("ip", "link", "del", name, check=False)  # gone with its namespace once moved there


@dataclass(frozen=True)
class Setting:
    """One row's impairments: the netem line tapveth is given and the same numbers for the
    peers (times in ms, probabilities in %, rate in bit/s)."""

    netem: str
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss: float = 0.0
    duplicate: float = 0.0
    rate_bit: int = 0
    other: bool = False  # gemodel, corrupt, reorder: netem only


class Wirefilter:
    """Two vde_switch, a TAP on each, a wirefilter between them; each setting restarts the
    wirefilter with its options for the left-to-right direction (A's TAP to B's)."""

    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        self.proc: subprocess.Popen[bytes] | None = None
        self.subject: Subject | None = None
        self.ctl: tuple[str, str] = ("", "")

    def build(self) -> Subject | None:
        if not (shutil.which("vde_switch") and shutil.which("wirefilter")):
            return None
        b = self.bench
        a_ns, b_ns = b._netns_pair("w")
        na, nb = f"tvw{b.tag}a", f"tvw{b.tag}b"
        self.ctl = (f"/tmp/tvbench-wf-{b.tag}-a", f"/tmp/tvbench-wf-{b.tag}-b")
        s = Subject("wirefilter", a_ns, b_ns, na, nb)
        b.subjects.append(s)  # from here on, cleanup undoes what is made
        for tap, ctl in zip((na, nb), self.ctl, strict=True):
            sh("ip", "tuntap", "add", "dev", tap, "mode", "tap")
            s.undo.append(functools.partial(_del_link, tap))
            proc = subprocess.Popen(
                ["vde_switch", "-s", ctl, "-t", tap],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            s.undo.append(functools.partial(_stop, proc))
            s.undo.append(functools.partial(shutil.rmtree, ctl, True))
        s.undo.insert(0, self.stop)
        deadline = time.monotonic() + 5
        while not all(os.path.exists(f"{c}/ctl") for c in self.ctl):
            if time.monotonic() > deadline:
                raise BenchError("wirefilter: vde_switch did not start")
            time.sleep(0.05)
        self.apply(Setting(""))
        b._move_taps(s)
        b._configure(s)
        self.subject = s
        return s

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc)
            self.proc = None

    @staticmethod
    def options(st: Setting) -> list[str] | None:
        """wirefilter's options for a setting, None when it has no equivalent."""
        if st.other:
            return None
        opts: list[str] = []
        if st.delay_ms:
            if st.jitter_ms:
                # wirefilter's N: "more than 98% of the values inside the limits", so the
                # variation is 2.326 standard deviations (the 99th percentile of a normal)
                opts += ["-d", f"LR{st.delay_ms:g}+{st.jitter_ms * 2.326:.3f}N"]
            else:
                opts += ["-d", f"LR{st.delay_ms:g}"]
        if st.loss:
            opts += ["-l", f"LR{st.loss:g}"]
        if st.duplicate:
            opts += ["-D", f"LR{st.duplicate:g}"]
        if st.rate_bit:
            opts += ["-b", f"LR{st.rate_bit // 8}"]
        return opts

    def apply(self, st: Setting) -> bool:
        opts = self.options(st)
        if opts is None:
            return False
        self.stop()
        self.proc = subprocess.Popen(
            ["wirefilter", "-v", f"{self.ctl[0]}:{self.ctl[1]}", *opts],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(0.3)  # wirefilter has no readiness signal; it plugs into both switches
        if self.proc.poll() is not None:
            raise BenchError(f"wirefilter {' '.join(opts)}: exited {self.proc.returncode}")
        return True


class Tbf:
    """The kernel's token bucket filter on a kernel veth: the reference for `rate`."""

    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        self.subject: Subject | None = None

    def build(self) -> Subject:
        s = self.bench.build_kernel()
        s.name = "tbf"
        self.bench.subjects.append(s)
        self.subject = s
        return s

    def apply(self, st: Setting) -> bool:
        assert self.subject is not None
        s = self.subject
        if st.delay_ms or st.jitter_ms or st.loss or st.duplicate or st.other:
            return False
        if not st.rate_bit:
            in_ns(s.ns_a, "tc", "qdisc", "del", "dev", s.if_a, "root", check=False)
            return True
        # a bucket of 4 ms of the rate (at least 64 KiB: a GSO frame must fit), 100 ms queue
        burst = max(64 * 1024, st.rate_bit // 8 // 250)
        in_ns(
            s.ns_a,
            "tc",
            "qdisc",
            "replace",
            "dev",
            s.if_a,
            "root",
            "tbf",
            "rate",
            f"{st.rate_bit}bit",
            "burst",
            str(burst),
            "latency",
            "100ms",
        )
        return True
