"""The bench's socat peer (`tapveth bench --peers`) is built so that no frame can cross while
one of its TAPs is down: socat ends on the first write that fails, taking both TAPs with it.
Built several times in a row, it must carry ping each time with socat still running, and its
namespaces and TAPs must go with the cleanup. Figures are never judged here."""

import shutil

import pytest
from netlab import sh

from tapveth.bench.sidebyside import IP_B, Bench, in_ns

pytestmark = pytest.mark.integration


def _namespaces() -> set[str]:
    return {line.split()[0] for line in sh("ip", "netns", "list").stdout.splitlines() if line}


@pytest.mark.skipif(shutil.which("socat") is None, reason="socat is not installed")
def test_socat_peer_carries_ping_and_survives_its_setup() -> None:
    for _ in range(3):
        bench = Bench(quick=True, peers=True, log=lambda line: None)
        try:
            s = bench.build_socat()
            assert s is not None and s.pid is not None
            bench.subjects.append(s)
            # IPv6 is on again in a's namespace: its first frames cross now, socat stays
            out = in_ns(s.ns_a, "ping", "-c", "3", "-i", "0.2", "-w", "5", IP_B, check=False)
            assert " 0% packet loss" in out, out
            assert sh("ip", "-n", s.ns_a, "-o", "-6", "addr", "show", "dev", s.if_a).stdout
            with open(f"/proc/{s.pid}/comm") as comm:
                assert comm.read().strip() == "socat"
        finally:
            bench.cleanup()
        assert not set(bench.namespaces) & _namespaces()
