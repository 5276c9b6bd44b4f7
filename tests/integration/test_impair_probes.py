"""The probes of `bench --impair` through a real impaired tapveth pair, small counts: what must
hold whatever the machine's load (all or nothing, bit counts, delays from below only)."""

import json
import time
from collections import Counter
from typing import Any

import pytest
from netlab import Lab, Netns

from tapveth.bench.probes import run_frames, run_udp, spawn_carrier_watch
from tapveth.private import PrivateDaemon

pytestmark = pytest.mark.integration

N = 300


class Pair:
    def __init__(self, daemon: PrivateDaemon, ns1: Netns, ns2: Netns, if1: str, if2: str):
        self.daemon, self.ns1, self.ns2, self.if1, self.if2 = daemon, ns1, ns2, if1, if2

    def netem(self, *words: str) -> None:
        r = self.daemon.cli("qdisc", "replace", "dev", self.if1, "root", "netem", *words)
        assert r.returncode == 0, r.stderr

    def frames(self, expect: int) -> tuple[Any, Any]:
        sent, got = run_frames(self.ns1.name, self.if1, self.ns2.name, self.if2, N, 500, expect)
        assert sent["sent"] == N
        return sent, got


@pytest.fixture
def pair(lab: Lab, daemon: PrivateDaemon) -> Pair:
    ns1, ns2 = lab.netns("a"), lab.netns("b")
    if1, if2 = lab.name("veth1"), lab.name("veth2")
    daemon.cli("add", if1, "netns", ns1.name, "peer", "name", if2, "netns", ns2.name)
    ns1.configure(if1, "10.0.0.1/24")
    ns2.configure(if2, "10.0.0.2/24")
    deadline = time.monotonic() + 10
    while (r := ns1.ping("10.0.0.2", count=1)).returncode != 0:
        assert time.monotonic() < deadline, r.stdout
    return Pair(daemon, ns1, ns2, if1, if2)


def test_frames_unimpaired_arrive_once_and_intact(pair: Pair) -> None:
    _, got = pair.frames(N)
    assert sorted(got["seq"]) == list(range(N))
    assert got["changed"] == []


def test_loss_100_receives_nothing(pair: Pair) -> None:
    pair.netem("loss", "100%")
    _, got = pair.frames(N)
    assert got["seq"] == []


def test_duplicate_100_receives_every_frame_twice(pair: Pair) -> None:
    pair.netem("duplicate", "100%")
    _, got = pair.frames(2 * N)
    assert Counter(got["seq"]) == {i: 2 for i in range(N)}


def test_corrupt_100_changes_exactly_one_bit_past_the_header(pair: Pair) -> None:
    pair.netem("corrupt", "100%")
    _, got = pair.frames(N)
    assert sorted(got["seq"]) == list(range(N))
    assert len(got["changed"]) == N
    for _, bits, offset in got["changed"]:
        assert bits == 1
        assert offset >= 14


def test_delay_50ms_every_one_way_delay_at_least_50ms(pair: Pair) -> None:
    pair.netem("delay", "50ms")
    sent, got = run_udp(pair.ns1.name, pair.ns2.name, "10.0.0.2", N, 1000)
    assert sent["sent"] == N
    assert sorted(got["seq"]) == list(range(N))
    assert min(got["delay_us"]) >= 50_000


def test_jitter_keeps_order(pair: Pair) -> None:
    pair.netem("delay", "20ms", "5ms", "distribution", "normal")
    _, got = run_udp(pair.ns1.name, pair.ns2.name, "10.0.0.2", N, 1000)
    assert got["seq"] == list(range(N))


def test_carrier_watch_sees_each_cut_and_stops_after_them(pair: Pair) -> None:
    """Both ends' watchers note every change of a cut and its restore, and stop once they have
    seen the changes they expect, long before their bound."""
    start = time.monotonic()
    watchers = [
        spawn_carrier_watch(ns.name, ifname, 60.0, 4)
        for ns, ifname in ((pair.ns1, pair.if1), (pair.ns2, pair.if2))
    ]
    try:
        for state in ("off", "on", "off", "on"):
            assert pair.daemon.cli("link", "set", "dev", pair.if1, "carrier", state).returncode == 0
            time.sleep(0.1)
        outs = [json.loads(w.communicate(timeout=90)[0]) for w in watchers]
    finally:
        for w in watchers:
            if w.poll() is None:
                w.kill()
                w.wait(5)
    assert time.monotonic() - start < 60  # stopped after the changes, not at the bound
    for out in outs:
        assert [up for _, up in out["changes"]] == [False, True, False, True]
