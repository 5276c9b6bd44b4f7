"""Impairments on real pairs: each netem option changes what a real receiver in another
namespace sees. Bounds are generous (the machine is shared and noisy): a delay or a rate can
only make things slower, so times are checked from below, and counts within wide binomial
bounds; drops are checked exactly against the daemon's counters."""

import hashlib
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from netlab import Lab, Netns, Stream, finish

from tapveth.conformance.endpoints import pattern
from tapveth.core.impair import PIECE_NS
from tapveth.private import PrivateDaemon

pytestmark = pytest.mark.integration

MB = 1 << 20


@dataclass
class Link:
    daemon: PrivateDaemon
    ns1: Netns
    ns2: Netns
    if1: str
    if2: str

    def qdisc(self, *words: str, check: bool = True) -> str:
        r = self.daemon.cli("qdisc", *words, check=False)
        if check:
            assert r.returncode == 0, r.stderr
        return r.stdout

    def show(self, dev: str) -> dict[str, object]:
        out = self.daemon.cli("-j", "qdisc", "show", "dev", dev).stdout
        (q,) = json.loads(out)
        assert isinstance(q, dict)
        return q

    def drops(self, dev: str) -> dict[str, int]:
        out = self.daemon.cli("-j", "stats", dev).stdout
        ends = json.loads(out)
        (mine,) = [e for e in ends if e["ifname"] == dev]
        drops: dict[str, int] = mine["drops"]
        return drops

    def settled(self, dev: str) -> tuple[dict[str, int], dict[str, int]]:
        """dev's drops by reason and its qdisc statistics, read between two equal readings of
        the drops: the kernels in the namespaces send frames of their own (IPv6 router
        solicitations, MLD reports) that the impairment may drop between two reads."""
        before = self.drops(dev)
        for _ in range(20):
            stats = self.show(dev)["stats"]
            after = self.drops(dev)
            if after == before:
                assert isinstance(stats, dict)
                return after, stats
            before = after
        raise AssertionError(f"the drops of {dev} never settled: {after}")


@pytest.fixture
def link(lab: Lab, daemon: PrivateDaemon) -> Link:
    ns1, ns2 = lab.netns("a"), lab.netns("b")
    if1, if2 = lab.name("veth1"), lab.name("veth2")
    daemon.cli("add", if1, "netns", ns1.name, "peer", "name", if2, "netns", ns2.name)
    ns1.configure(if1, "10.0.0.1/24")
    ns2.configure(if2, "10.0.0.2/24")
    deadline = time.monotonic() + 10  # until the kernel has activated both ends' queues
    while (r := ns1.ping("10.0.0.2", count=1)).returncode != 0:
        assert time.monotonic() < deadline, r.stdout
    return Link(daemon, ns1, ns2, if1, if2)


def rtts(ns: Netns, addr: str, count: int = 10) -> list[float]:
    r = ns.run(
        "ping", "-c", str(count), "-i", "0.05", "-w", "30", addr, check=False, timeout=60
    )  # fmt: skip
    return [float(x) for x in re.findall(r"time=([0-9.]+) ms", r.stdout)]


def udp(
    src: Netns, dst: Netns, dst_ip: str, n: int, size: int = 200
) -> tuple[list[str], list[str]]:
    """n datagrams 10 ms apart; (sent digests in order, received digests in arrival order)."""
    recv = dst.spawn_traffic(
        "udp-recv", "--host", dst_ip, "--port", "5310", "--count", str(3 * n), "--timeout", "3"
    )
    sent = src.traffic(
        "udp-send", "--host", dst_ip, "--port", "5310", "--sizes", ",".join([str(size)] * n)
    )
    got = finish(recv, timeout=60)
    return [d["sha256"] for d in sent["datagrams"]], [d["sha256"] for d in got["datagrams"]]


def test_delay_adds_to_the_ping_rtt_and_change_applies_in_place(link: Link) -> None:
    link.qdisc("add", "dev", link.if1, "root", "netem", "delay", "40ms")
    got = rtts(link.ns1, "10.0.0.2")
    assert len(got) == 10 and min(got) >= 40.0, got
    link.qdisc("change", "dev", link.if1, "root", "netem", "delay", "80ms")
    got = rtts(link.ns1, "10.0.0.2")
    assert len(got) == 10 and min(got) >= 80.0, got
    # the other direction, independently: both delays add up in the round trip
    link.qdisc("add", "dev", link.if2, "root", "netem", "delay", "30ms")
    got = rtts(link.ns1, "10.0.0.2")
    assert len(got) == 10 and min(got) >= 110.0, got
    assert link.show(link.if1)["options"] == "delay 80ms"
    assert link.show(link.if2)["options"] == "delay 30ms"
    link.qdisc("del", "dev", link.if1, "root")
    link.qdisc("del", "dev", link.if2, "root")
    got = rtts(link.ns1, "10.0.0.2")
    assert len(got) == 10 and min(got) < 30.0, got
    assert link.show(link.if1)["kind"] == "noqueue"


def test_sub_millisecond_delay(link: Link) -> None:
    link.qdisc("add", "dev", link.if1, "root", "netem", "delay", "700us")
    got = rtts(link.ns1, "10.0.0.2", count=20)
    assert len(got) == 20 and min(got) >= 0.7, got


def test_loss_counts_and_the_other_direction_is_untouched(link: Link) -> None:
    link.qdisc("add", "dev", link.if1, "root", "netem", "loss", "30%")
    sent, got = udp(link.ns1, link.ns2, "10.0.0.2", 200)
    assert 100 <= len(got) <= 180, len(got)  # expected 140, sd 6.5
    assert set(got) <= set(sent)
    # every datagram that did not arrive was dropped by the loss model, and counted so (with
    # any neighbour discovery frame it dropped too)
    drops, stats = link.settled(link.if1)
    assert set(drops) == {"loss"} and drops["loss"] >= len(sent) - len(got)
    assert stats["dropped"] == drops["loss"]
    sent, got = udp(link.ns2, link.ns1, "10.0.0.1", 100)
    assert got == sent  # the other direction has no impairment
    assert link.drops(link.if2) == {}


def test_gemodel_loss_comes_in_bursts(link: Link) -> None:
    link.qdisc("add", "dev", link.if2, "root", "netem", "loss", "gemodel", "5%", "20%")
    sent, got = udp(link.ns2, link.ns1, "10.0.0.1", 300)
    lost = len(sent) - len(got)
    assert 0 < lost < 150, lost  # mean 5/25 = 20%
    drops = link.drops(link.if2)
    assert set(drops) == {"loss"} and drops["loss"] >= lost
    arrived = set(got)
    pattern_ = "".join("x" if s not in arrived else "." for s in sent)
    runs = [len(r) for r in re.findall("x+", pattern_)]
    assert max(runs) >= 2, pattern_  # with r = 20% bursts average five frames


def test_rate_limits_the_transfer_time(link: Link) -> None:
    link.qdisc("add", "dev", link.if1, "root", "netem", "rate", "8mbit")
    start = time.monotonic()
    Stream(link.ns1, link.ns2, "10.0.0.2", 1 * MB, port=5311).finish()
    elapsed = time.monotonic() - start
    # 1 MiB of payload is 1.05 s at 8 Mbit/s before any header: it cannot be faster
    assert elapsed >= 1.0, elapsed
    stats = link.show(link.if1)["stats"]
    assert isinstance(stats, dict) and stats["sent_bytes"] >= MB


def test_rate_hands_super_frames_on_in_pieces_intact(link: Link) -> None:
    """Under a rate the sender's TCP super-frames go on in pieces of at most PIECE_NS of wire
    time, each a valid TSO frame: the stream arrives intact and no frame handed on is longer
    than a piece (1448-byte segments, 1514 bytes each on the wire)."""
    link.qdisc("add", "dev", link.if1, "root", "netem", "rate", "200mbit")
    Stream(link.ns1, link.ns2, "10.0.0.2", 8 * MB, port=5314).finish(timeout=60)
    stats = link.show(link.if1)["stats"]
    assert isinstance(stats, dict)
    # the qdisc counts segments, each with its headers, as tc does: at least one a 1448 bytes
    assert stats["sent_bytes"] >= 8 * MB
    assert stats["sent_packets"] >= 8 * MB // 1448, stats
    # what was handed on (written into veth2): pieces no longer than `per` segments
    per = PIECE_NS // (1514 * 8 * 1000 // 200)  # segments in a piece
    longest = 66 + per * 1448
    out = json.loads(link.daemon.cli("-j", "stats", link.if2).stdout)
    (peer,) = [e for e in out if e["ifname"] == link.if2]
    assert peer["rx_bytes"] >= 8 * MB
    assert peer["rx_packets"] * longest >= peer["rx_bytes"], peer
    assert peer["rx_packets"] < stats["sent_packets"], (peer, stats)  # pieces, not segments


def test_change_keeps_a_tcp_stream_intact(link: Link) -> None:
    stream = Stream(link.ns1, link.ns2, "10.0.0.2", 6 * MB, port=5312, rate=2 * MB, timeout=90)
    for words in (
        ("add", "delay", "20ms"),
        ("change", "delay", "80ms", "10ms"),
        ("replace", "delay", "5ms", "rate", "100mbit", "loss", "1%"),
        ("change", "delay", "200us", "duplicate", "2%", "corrupt", "2%"),
    ):
        time.sleep(0.5)
        link.qdisc(words[0], "dev", link.if1, "root", "netem", *words[1:])
    time.sleep(0.5)
    link.qdisc("del", "dev", link.if1, "root")
    stream.finish(timeout=120)


def test_corruption_is_caught_by_checksums(link: Link) -> None:
    link.qdisc("add", "dev", link.if1, "root", "netem", "corrupt", "100%")
    _sent, got = udp(link.ns1, link.ns2, "10.0.0.2", 30)
    assert got == []  # every flipped bit lies under the IP or UDP checksum
    stats = link.show(link.if1)["stats"]
    assert isinstance(stats, dict) and stats["corrupted"] >= 30  # and any ND frame
    link.qdisc("change", "dev", link.if1, "root", "netem", "corrupt", "5%")
    Stream(link.ns1, link.ns2, "10.0.0.2", 2 * MB, port=5313).finish()


def test_duplicate_delivers_twice(link: Link) -> None:
    link.qdisc("add", "dev", link.if1, "root", "netem", "duplicate", "100%")
    sent, got = udp(link.ns1, link.ns2, "10.0.0.2", 40)
    assert sorted(got) == sorted(sent + sent)


def test_jitter_keeps_order_reorder_does_not(link: Link) -> None:
    link.qdisc("add", "dev", link.if1, "root", "netem", "delay", "50ms", "40ms")
    sent, got = udp(link.ns1, link.ns2, "10.0.0.2", 60)
    assert got == sent  # 10 ms apart with 40 ms of jitter, yet in order
    link.qdisc("change", "dev", link.if1, "root", "netem", "delay", "100ms", "reorder", "50%")
    sent, got = udp(link.ns1, link.ns2, "10.0.0.2", 60)
    assert sorted(got) == sorted(sent)
    assert got != sent


def test_peer_rules_are_judged_at_delivery(link: Link) -> None:
    link.qdisc("add", "dev", link.if1, "root", "netem", "delay", "3s")
    recv = link.ns2.spawn_traffic(
        "udp-recv", "--host", "10.0.0.2", "--port", "5314", "--count", "10", "--timeout", "1"
    )
    link.ns1.traffic("udp-send", "--host", "10.0.0.2", "--port", "5314", "--sizes", "100,100")
    link.ns2.ip("link", "set", link.if2, "down")  # before the frames leave the queue
    finish(recv)
    deadline = time.monotonic() + 20
    while link.drops(link.if1).get("peer_down", 0) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    drops = link.drops(link.if1)
    assert set(drops) == {"peer_down"} and drops["peer_down"] >= 2  # and any ND frame


def test_bad_lines_exit_2_and_change_nothing(link: Link) -> None:
    link.qdisc("add", "dev", link.if1, "root", "netem", "delay", "10ms", "loss", "1%")
    before = link.show(link.if1)
    bad = [
        ("change", "dev", link.if1, "root", "netem", "delay", "10parsecs"),
        ("change", "dev", link.if1, "root", "netem", "loss", "120%"),
        ("change", "dev", link.if1, "root", "netem", "reorder", "5%"),
        ("add", "dev", link.if1, "root", "netem", "delay", "5ms"),
        ("change", "dev", link.if2, "root", "netem", "delay", "5ms"),
        ("del", "dev", link.if2, "root"),
        ("add", "dev", link.if1, "parent", "1:1", "netem", "delay", "5ms"),
        ("add", "dev", link.if1, "root", "tbf", "rate", "1mbit"),
        ("add", "dev", "nosuchdev0", "root", "netem", "delay", "5ms"),
        ("frobnicate", "dev", link.if1),
        ("add", "dev", link.if1, "root"),
    ]
    for words in bad:
        r = link.daemon.cli("qdisc", *words, check=False)
        assert r.returncode == 2, (words, r.stdout, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1, (words, r.stderr)
    assert link.show(link.if1)["options"] == before["options"]
    assert link.show(link.if2)["kind"] == "noqueue"


def test_tc_s_qdisc_show_text(link: Link) -> None:
    link.qdisc("add", "dev", link.if1, "root", "netem", "delay", "1ms", "loss", "50%")
    link.ns1.ping("10.0.0.2", count=6)
    out = link.daemon.cli("-s", "qdisc", "show", "dev", link.if1).stdout
    lines = out.splitlines()
    assert lines[0].startswith(f"qdisc netem 8001: dev {link.if1} ")
    assert "delay 1ms loss 50%" in lines[0]
    assert re.match(r" Sent \d+ bytes \d+ pkt \(dropped \d+, overlimits 0 requeues 0\)", lines[1])
    assert lines[2].startswith(" backlog ")


def test_pattern_helper_matches_the_sender() -> None:
    # the digests compared above are the sender's own: make sure they are of the payload
    assert (
        hashlib.sha256(pattern(200, 1)).hexdigest() != hashlib.sha256(pattern(200, 2)).hexdigest()
    )


def test_config_netem_and_reload_change_it_in_place(lab: Lab, tmp_path: Path) -> None:
    ns1, ns2 = lab.netns("c"), lab.netns("d")
    a, b = lab.name("cfga"), lab.name("cfgb")

    def toml(netem: str | None) -> str:
        line = f'netem = "{netem}"\n' if netem else ""
        return (
            f'[[pair]]\n[pair.end]\nname = "{a}"\nnetns = "{ns1.name}"\n'
            f'addresses = ["10.0.1.1/24"]\nup = true\n{line}'
            f'[pair.peer]\nname = "{b}"\nnetns = "{ns2.name}"\n'
            f'addresses = ["10.0.1.2/24"]\nup = true\n'
        )

    cfg = tmp_path / "tv.toml"
    cfg.write_text(toml("delay 30ms"))
    d = PrivateDaemon(log_level="debug", daemon_args=("--config", str(cfg))).start()
    try:
        link = Link(d, ns1, ns2, a, b)
        deadline = time.monotonic() + 30  # the daemon answers before it has made its pairs
        while time.monotonic() < deadline:
            shown = d.cli("-j", "qdisc", "show", "dev", a, check=False)
            if shown.returncode == 0 and json.loads(shown.stdout)[0]["kind"] == "netem":
                break
            time.sleep(0.1)
        assert link.show(a)["options"] == "delay 30ms"
        got = rtts(ns1, "10.0.1.2")
        assert len(got) == 10 and min(got) >= 30.0, got
        index = ns1.link(a)["ifindex"]
        stream = Stream(ns1, ns2, "10.0.1.2", 4 * MB, port=5315, rate=2 * MB, timeout=90)
        time.sleep(0.5)
        cfg.write_text(toml("delay 60ms loss 0.1%"))
        assert "0 added, 0 removed, 1 changed, 0 unchanged" in d.cli("reload").stdout
        assert link.show(a)["options"] == "delay 60ms loss 0.1%"
        got = rtts(ns1, "10.0.1.2")
        assert min(got) >= 60.0, got
        cfg.write_text(toml(None))
        assert "1 changed" in d.cli("reload").stdout
        assert link.show(a)["kind"] == "noqueue"
        stream.finish(timeout=120)
        assert ns1.link(a)["ifindex"] == index  # the pair was changed, not made anew
        bad = toml("delay 5ms reorder 5%").replace("delay 5ms ", "")
        cfg.write_text(bad)
        r = d.cli("reload", check=False)
        assert r.returncode == 2 and "reordering is not possible" in r.stderr
        assert link.show(a)["kind"] == "noqueue"
    finally:
        rc = d.stop()
        print("daemon log:\n" + d.final_log)
        assert rc == 0


def test_carrier_fault(link: Link) -> None:
    def state() -> tuple[list[str], list[str], int]:
        stats = json.loads(link.daemon.cli("-j", "stats", link.if1).stdout)
        changes = {e["carrier_changes"] for e in stats}
        assert len(changes) == 1  # the same on both ends
        return link.ns1.link(link.if1)["flags"], link.ns2.link(link.if2)["flags"], changes.pop()

    flags1, flags2, before = state()
    assert "LOWER_UP" in flags1 and "LOWER_UP" in flags2
    # frames already in an impairment queue when the carrier goes are dropped as `carrier`
    link.qdisc("add", "dev", link.if1, "root", "netem", "delay", "3s")
    link.ns1.traffic("udp-send", "--host", "10.0.0.2", "--port", "5316", "--sizes", "100,100")
    link.daemon.cli("link", "set", "dev", link.if1, "carrier", "off")
    flags1, flags2, cut = state()
    assert "NO-CARRIER" in flags1 and "NO-CARRIER" in flags2
    assert "UP" in flags1 and "UP" in flags2  # still admin-up
    assert cut == before + 1
    assert link.ns1.ping("10.0.0.2", count=2).returncode != 0
    deadline = time.monotonic() + 20
    while link.drops(link.if1).get("carrier", 0) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    drops = link.drops(link.if1)
    assert set(drops) == {"carrier"} and drops["carrier"] >= 2  # with any ND frame queued
    link.qdisc("del", "dev", link.if1, "root")
    link.daemon.cli("link", "set", "dev", link.if2, "carrier", "on")  # either end's name
    flags1, flags2, back = state()
    assert "LOWER_UP" in flags1 and "LOWER_UP" in flags2 and back == before + 2
    # the kernel activates the device's queue when its link watch gets to it, some time after
    # the carrier came on: until then it drops what is sent, so ping until it answers
    deadline = time.monotonic() + 10
    while (r := link.ns1.ping("10.0.0.2", count=1)).returncode != 0:
        assert time.monotonic() < deadline, r.stdout
    # admin changes while cut keep it cut
    link.daemon.cli("link", "set", "dev", link.if1, "carrier", "off")
    link.ns2.ip("link", "set", link.if2, "down")
    link.ns2.ip("link", "set", link.if2, "up")
    assert "NO-CARRIER" in link.ns1.link(link.if1)["flags"]
    r2 = link.daemon.cli("link", "set", "dev", link.if1, "carrier", "sideways", check=False)
    assert r2.returncode == 2 and len(r2.stderr.strip().splitlines()) == 1


def test_del_sends_what_is_queued(link: Link) -> None:
    link.qdisc("add", "dev", link.if1, "root", "netem", "delay", "5s")
    recv = link.ns2.spawn_traffic(
        "udp-recv", "--host", "10.0.0.2", "--port", "5317", "--count", "100", "--timeout", "10"
    )
    sent = link.ns1.traffic(
        "udp-send", "--host", "10.0.0.2", "--port", "5317", "--sizes", ",".join(["300"] * 100)
    )
    stats = link.show(link.if1)["stats"]
    assert isinstance(stats, dict) and stats["backlog_packets"] >= 64  # more than a batch
    link.qdisc("del", "dev", link.if1, "root")
    got = finish(recv, timeout=60)
    assert [d["sha256"] for d in got["datagrams"]] == [d["sha256"] for d in sent["datagrams"]]
