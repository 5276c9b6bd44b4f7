"""`tapveth capture` against real clients: tshark and tcpdump read what it writes, a pipe into
tcpdump works live, drop reasons are found by a display filter, counts match `tapveth stats`."""

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from netlab import Lab, Netns, sh, start_stream
from underlay import IP_A, IP_B, has_carrier, kernel_vxlan, tapveth_end, two_hosts, wait_for

from tapveth import control
from tapveth.conformance.backends import quiet
from tapveth.conformance.lab import wait_until
from tapveth.core import pcapng
from tapveth.private import PrivateDaemon

pytestmark = pytest.mark.integration
# Wait for every reply (up to 20 s): without a deadline, ping gives up two RTTs after its last
# request, and replies slowed by a loaded machine would count as lost.
REPLIES = ("-w", "20")


def tapveth(d: PrivateDaemon, *words: str) -> list[str]:
    return [sys.executable, "-m", "tapveth", "--socket", d.socket, *words]


def quiet_pair(lab: Lab, d: PrivateDaemon) -> tuple[Netns, Netns, str, str]:
    """A pair carrying only what the test sends: no IPv6, static neighbours (no ARP)."""
    a, b = lab.netns("a"), lab.netns("b")
    quiet(a)
    quiet(b)
    x, y = lab.name("capa"), lab.name("capb")
    d.cli("add", x, "netns", a.name, "peer", "name", y, "netns", b.name)
    a.configure(x, "10.0.0.1/24")
    b.configure(y, "10.0.0.2/24")
    a.ip("neigh", "add", "10.0.0.2", "lladdr", b.link(y)["address"], "dev", x, "nud", "permanent")
    b.ip("neigh", "add", "10.0.0.1", "lladdr", a.link(x)["address"], "dev", y, "nud", "permanent")
    return a, b, x, y


def start_capture(lab: Lab, d: PrivateDaemon, *words: str) -> subprocess.Popen[str]:
    """Start `tapveth capture WORDS`; returns once the daemon has it attached."""
    proc: subprocess.Popen[str] = start_stream(lab, d, ("capture", *words), "tapveth: capturing")
    return proc


def stop_capture(proc: subprocess.Popen[str]) -> tuple[str, dict[str, int]]:
    """Ctrl-C; the capture's stdout and its closing counts."""
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    return out, summary(err)


def summary(err: str) -> dict[str, int]:
    counts = {}
    for line in err.splitlines():
        for what in ("captured", "received by filter", "dropped by kernel"):
            if line.endswith(f"packets {what}"):
                counts[what] = int(line.split()[0])
    assert len(counts) == 3, err
    return counts


def tshark(path: Path, display_filter: str, *fields: str) -> list[list[str]]:
    cmd = ["tshark", "-r", str(path), "-Y", display_filter, "-T", "fields"]
    for f in fields:
        cmd += ["-e", f]
    out = sh(*cmd).stdout
    return [ln.split("\t") for ln in out.splitlines() if ln]


def test_capture_read_by_tshark_and_tcpdump(
    lab: Lab, daemon: PrivateDaemon, tmp_path: Path
) -> None:
    a, b, x, y = quiet_pair(lab, daemon)
    trace = tmp_path / "trace.pcapng"
    cap = start_capture(lab, daemon, x, "-w", str(trace))
    second = start_capture(lab, daemon, y, "netns", b.name, "-w", str(tmp_path / "second.pcapng"))
    assert " 0% packet loss" in a.ping("10.0.0.2", count=5, extra=REPLIES).stdout
    b.ip("link", "set", y, "mtu", "1000")
    a.ping("10.0.0.2", count=2, size=1200, extra=("-M", "dont"))  # refused: longer than 1018
    time.sleep(0.3)
    _, counts = stop_capture(cap)
    _, counts2 = stop_capture(second)
    stats = {e["ifname"]: e for e in daemon.request("stats")}
    assert stats[x]["drops"] == {"mtu": 2}

    # tshark: 5 requests and 2 refused ones sent by x, 5 replies sent by y, all outbound
    fields = ("frame.interface_name", "frame.packet_flags_direction", "frame.comment")
    requests = tshark(trace, "icmp.type == 8", *fields)
    assert [r[0] for r in requests] == [x] * 7
    assert {r[1] for r in requests} == {"0x00000002"}  # outbound
    assert [r[2] for r in requests] == [""] * 5 + ["dropped: mtu"] * 2
    replies = tshark(
        trace, "icmp.type == 0", "frame.interface_name", "frame.packet_flags_direction"
    )
    assert replies == [[y, "0x00000002"]] * 5
    refused = tshark(trace, 'frame.comment contains "mtu"', "frame.interface_name", "frame.len")
    assert refused == [[x, str(14 + 20 + 8 + 1200)]] * 2
    names = sh("tshark", "-r", str(trace), "-T", "fields", "-e", "frame.interface_description")
    assert f"netns {a.name}, mtu 1500" in names.stdout
    assert len(tshark(trace, "frame", "frame.number")) == 12  # nothing else crossed
    assert counts == {"captured": 12, "received by filter": 12, "dropped by kernel": 0}

    # tcpdump reads the same file: 7 requests, 5 replies, ICMP decoded
    out = sh("tcpdump", "-n", "-r", str(trace)).stdout
    assert out.count("ICMP echo request") == 7 and out.count("ICMP echo reply") == 5, out

    # the second capture (named by the other end, at the same time) saw the same frames, its
    # interface 0 being y
    assert counts2["captured"] == 12
    ours = f'frame.interface_name == "{y}" && frame.interface_id == 0'
    assert len(tshark(tmp_path / "second.pcapng", ours, "frame.number")) == 5


def test_capture_lines_count_and_drops_only(
    lab: Lab, daemon: PrivateDaemon, tmp_path: Path
) -> None:
    a, b, x, y = quiet_pair(lab, daemon)
    lines = start_capture(lab, daemon, x, "-c", "4")
    drops = start_capture(lab, daemon, x, "--drops", "-w", str(tmp_path / "drops.pcapng"))
    a.ping("10.0.0.2", count=3, extra=REPLIES)
    out, err = lines.communicate(timeout=30)  # -c 4: ends by itself
    assert lines.returncode == 0, err
    printed = out.splitlines()
    assert len(printed) == 4, out
    assert f"{x} Out IP 10.0.0.1 > 10.0.0.2 ICMP echo-request" in printed[0]
    assert f"{y} Out IP 10.0.0.2 > 10.0.0.1 ICMP echo-reply" in printed[1]
    assert summary(err)["captured"] == 4

    b.ip("link", "set", y, "mtu", "1000")
    a.ping("10.0.0.2", count=2, extra=REPLIES)  # delivered: not for --drops
    a.ping("10.0.0.2", count=2, size=1200, extra=("-M", "dont"))  # refused: mtu
    time.sleep(0.3)
    _, counts = stop_capture(drops)
    recs = list(pcapng.read((tmp_path / "drops.pcapng").read_bytes()))
    packets = [r for r in recs if isinstance(r, pcapng.Packet)]
    stats = {e["ifname"]: e for e in daemon.request("stats")}
    assert stats[x]["drops"] == {"mtu": 2}
    assert [(p.comment, p.orig_len) for p in packets] == [("dropped: mtu", 1242)] * 2
    assert counts["captured"] == counts["received by filter"] == 2
    assert counts["dropped by kernel"] == 0
    isb = [r for r in recs if isinstance(r, pcapng.Statistics)]
    assert isb[0].received == stats[x]["tx_packets"] + 2  # everything x sent while it ran


def test_snaplen_truncates(lab: Lab, daemon: PrivateDaemon, tmp_path: Path) -> None:
    a, _, _, _ = quiet_pair(lab, daemon)
    cap = start_capture(lab, daemon, lab.name("capa"), "-s", "64", "-w", str(tmp_path / "s.pcapng"))
    a.ping("10.0.0.2", count=2, size=1000, extra=REPLIES)
    time.sleep(0.2)
    stop_capture(cap)
    rows = tshark(tmp_path / "s.pcapng", "frame", "frame.cap_len", "frame.len")
    assert rows == [["64", "1042"]] * 4


def test_pipe_into_tcpdump_live(lab: Lab, daemon: PrivateDaemon) -> None:
    a, _, x, _ = quiet_pair(lab, daemon)
    cap = start_capture(lab, daemon, x, "-w", "-")
    assert cap.stdout is not None
    dump = subprocess.Popen(
        ["tcpdump", "-n", "-l", "-r", "-"],
        stdin=cap.stdout,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    lab.procs.append(dump)
    cap.stdout.close()
    pinger = lab.spawn("ip", "netns", "exec", a.name, "ping", "-c", "30", "-i", "0.2", "10.0.0.2")
    # Replies show up in tcpdump's output while the capture still runs.
    assert dump.stdout is not None
    seen: list[str] = []
    deadline = time.monotonic() + 20
    while sum("echo reply" in ln for ln in seen) < 3:
        assert time.monotonic() < deadline, seen
        ready, _, _ = select.select([dump.stdout], [], [], 1.0)
        if ready:
            seen.append(dump.stdout.readline())
    assert cap.poll() is None and pinger.poll() is None  # live, not at the end
    pinger.kill()
    cap.send_signal(signal.SIGINT)
    _, err = cap.communicate(timeout=30)
    assert cap.returncode == 0, err
    dump.wait(30)

    # tshark reads the stream from a pipe too; -c 4 ends the capture by itself
    cap = start_capture(lab, daemon, x, "-c", "4", "-w", "-")
    shark = subprocess.Popen(
        ["tshark", "-r", "-", "-T", "fields", "-e", "icmp.type"],
        stdin=cap.stdout,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    lab.procs.append(shark)
    assert cap.stdout is not None
    cap.stdout.close()
    a.ping("10.0.0.2", count=2, extra=REPLIES)
    assert cap.wait(30) == 0
    out, _ = shark.communicate(timeout=30)
    assert out.split() == ["8", "0", "8", "0"], out


def capture_as(path: str, name: str, uid: int) -> str:
    """Ask for a capture from a child running as uid; what it was told."""
    rfd, wfd = os.pipe()
    child = os.fork()
    if child == 0:
        try:
            os.close(rfd)
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            try:
                client = control.StreamClient(path, "capture", {"name": name, "count": 1})
                os.write(wfd, f"granted {client.head}".encode())
            except control.ControlError as exc:
                os.write(wfd, str(exc).encode())
        finally:
            os._exit(0)
    os.close(wfd)
    with os.fdopen(rfd, "rb") as r:
        data = r.read()
    os.waitpid(child, 0)
    return data.decode()


def test_capture_needs_control_rights(lab: Lab, daemon: PrivateDaemon) -> None:
    _, _, x, _ = quiet_pair(lab, daemon)
    os.chmod(daemon.socket, 0o666)  # past the file mode: the daemon itself must refuse
    os.chmod(os.path.dirname(daemon.socket), 0o711)
    assert capture_as(daemon.socket, x, 65534) == "permission denied: only root may control tapveth"
    assert capture_as(daemon.socket, x, 0).startswith("granted")
    res = subprocess.run(
        tapveth(daemon, "capture", "nosuch0", "-c", "1"), capture_output=True, text=True
    )
    assert res.returncode == 2 and "no tapveth pair has an end named 'nosuch0'" in res.stderr
    assert len(res.stderr.splitlines()) == 1


def test_capture_ends_when_the_pair_is_deleted(lab: Lab, daemon: PrivateDaemon) -> None:
    _, _, x, _ = quiet_pair(lab, daemon)
    cap = start_capture(lab, daemon, x, "-w", os.devnull)
    daemon.cli("del", x)
    _, err = cap.communicate(timeout=30)
    assert cap.returncode == 0 and "0 packets dropped by kernel" in err


def iperf(a: Netns, b: Netns, seconds: int) -> float:
    server = b.lab.spawn("ip", "netns", "exec", b.name, "iperf3", "-s", "-1", "-B", "10.0.0.2")
    listening = wait_until(lambda: ":5201 " in b.run("ss", "-Hltn").stdout, timeout=10)
    assert listening, "iperf3 -s did not listen"
    res = a.run("iperf3", "-c", "10.0.0.2", "-t", str(seconds), "-J", timeout=seconds + 30)
    server.wait(10)
    return float(json.loads(res.stdout)["end"]["sum_received"]["bits_per_second"]) / 1e9


def test_capture_under_iperf_loses_frames_not_throughput(
    lab: Lab, daemon: PrivateDaemon, tmp_path: Path
) -> None:
    """A benchmark print: throughput with and without a capture, and what the capture lost."""
    a, b, x, _ = quiet_pair(lab, daemon)
    plain = iperf(a, b, 4)
    trace = tmp_path / "load.pcapng"
    cap = start_capture(lab, daemon, x, "-w", str(trace))
    captured = iperf(a, b, 4)
    _, counts = stop_capture(cap)
    plain2 = iperf(a, b, 4)
    recs = list(pcapng.read(trace.read_bytes()))
    packets = sum(isinstance(r, pcapng.Packet) for r in recs)
    longest = max(r.orig_len for r in recs if isinstance(r, pcapng.Packet))
    stats = [r for r in recs if isinstance(r, pcapng.Statistics)]
    print(
        f"\niperf3 TCP through tapveth: {plain:.2f} Gbit/s without capture, {captured:.2f} "
        f"with one, {plain2:.2f} without again; capture wrote {counts['captured']} frames, "
        f"left out {counts['dropped by kernel']} of {counts['received by filter']}; "
        f"longest frame {longest} bytes"
    )
    # What the summary says is what the file holds, and every frame seen is accounted for.
    assert packets == counts["captured"] == sum(s.delivered for s in stats)
    assert sum(s.received for s in stats) == counts["captured"] + counts["dropped by kernel"]
    assert longest > 1514  # GSO super-frames are recorded whole, as the receiver gets them


def test_a_reader_that_stalls_loses_frames_and_is_told_how_many(
    lab: Lab, daemon: PrivateDaemon
) -> None:
    """The capture's output goes to a pipe nobody reads during an iperf3 run: the capture
    must leave frames out (and say how many) while iperf3 completes."""
    a, b, x, _ = quiet_pair(lab, daemon)
    cap = subprocess.Popen(
        tapveth(daemon, "capture", x, "-B", "256", "-w", "-"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    lab.procs.append(cap)  # type: ignore[arg-type]
    assert cap.stderr is not None and cap.stderr.readline().startswith(b"tapveth: capturing")
    rate = iperf(a, b, 3)  # completes although the capture's reader is stalled
    cap.send_signal(signal.SIGINT)
    out, err = cap.communicate(timeout=30)  # now read everything
    assert cap.returncode == 0, err
    counts = summary(err.decode())
    recs = list(pcapng.read(out))
    stats = [r for r in recs if isinstance(r, pcapng.Statistics)]
    print(
        f"\nstalled reader: iperf3 {rate:.2f} Gbit/s; capture wrote {counts['captured']}, "
        f"left out {counts['dropped by kernel']} of {counts['received by filter']}"
    )
    assert counts["dropped by kernel"] > 0
    assert counts["captured"] == sum(isinstance(r, pcapng.Packet) for r in recs)
    assert sum(s.dropped for s in stats) == counts["dropped by kernel"]
    assert sum(s.received for s in stats) == counts["captured"] + counts["dropped by kernel"]


def test_frames_an_impairment_drops_are_recorded_with_their_reason(
    lab: Lab, daemon: PrivateDaemon, tmp_path: Path
) -> None:
    a, _, x, y = quiet_pair(lab, daemon)
    daemon.cli("qdisc", "add", "dev", x, "root", "netem", "loss", "50%", "seed", "3")
    trace = tmp_path / "impaired.pcapng"
    cap = start_capture(lab, daemon, x, "-w", str(trace))
    a.run("ping", "-c", "40", "-i", "0.02", "-W", "2", "10.0.0.2", check=False, timeout=60)

    def answered() -> bool:  # every request read, and each one let through answered
        s = {e["ifname"]: e for e in daemon.request("stats")}
        through = s[x]["tx_packets"]
        return bool(through + s[x]["drops"].get("loss", 0) == 40 and s[y]["tx_packets"] == through)

    assert wait_until(answered, timeout=10), daemon.request("stats")
    _, counts = stop_capture(cap)
    stats = {e["ifname"]: e for e in daemon.request("stats")}
    lost = stats[x]["drops"]["loss"]
    assert 0 < lost < 40, stats[x]
    assert stats[x]["drops"] == {"loss": lost}
    fields = ("frame.interface_name", "frame.comment")
    requests = tshark(trace, "icmp.type == 8", *fields)
    assert len(requests) == 40
    assert {r[0] for r in requests} == {x}
    assert sorted(r[1] for r in requests) == [""] * (40 - lost) + ["dropped: loss"] * lost
    assert len(tshark(trace, 'frame.comment == "dropped: loss"', "frame.number")) == lost
    replies = tshark(trace, "icmp.type == 0", *fields)
    assert replies == [[y, ""]] * (40 - lost)  # the other direction is not impaired
    assert counts == {
        "captured": 80 - lost,
        "received by filter": 80 - lost,
        "dropped by kernel": 0,
    }


def test_capture_over_vxlan_records_both_directions(
    lab: Lab, daemon: PrivateDaemon, tmp_path: Path
) -> None:
    hosts = two_hosts(lab)
    o1 = lab.netns("o1")
    quiet(o1)
    v1 = lab.name("capv")
    tapveth_end(daemon, o1, v1, hosts.a, IP_B)
    quiet(hosts.b)  # the far host's own IPv6 chatter would cross the tunnel into the capture
    kernel_vxlan(hosts.b, hosts.ub, "vx42", IP_A, "10.42.0.2/24")
    o1.configure(v1, "10.42.0.1/24")
    o1.ip("link", "set", v1, "mtu", "1500")  # the tunnel's 50 bytes no longer fit below 1500
    wait_for("carrier", lambda: has_carrier(o1, v1))
    mac_b, mac_1 = hosts.b.link("vx42")["address"], o1.link(v1)["address"]
    o1.ip("neigh", "add", "10.42.0.2", "lladdr", mac_b, "dev", v1, "nud", "permanent")
    hosts.b.ip("neigh", "add", "10.42.0.1", "lladdr", mac_1, "dev", "vx42", "nud", "permanent")
    trace = tmp_path / "vxlan.pcapng"
    cap = start_capture(lab, daemon, v1, "-w", str(trace))
    lines = start_capture(lab, daemon, v1, "-c", "2")  # one line a frame
    before = stats_of(daemon, v1)
    assert " 0% packet loss" in o1.ping("10.42.0.2", count=5, extra=REPLIES).stdout
    out, err = lines.communicate(timeout=30)
    assert lines.returncode == 0, err
    printed = out.splitlines()
    assert f"{v1} Out IP 10.42.0.1 > 10.42.0.2 ICMP echo-request" in printed[0], out
    assert "vxlan:42 Out IP 10.42.0.2 > 10.42.0.1 ICMP echo-reply" in printed[1], out
    # 1514-byte frames: 1564 bytes on the 1500-byte underlay, refused (DF set), reason mtu
    o1.ping("10.42.0.2", count=2, size=1500 - 28, extra=("-M", "do", "-W", "1"))
    # the far host sends 2 frames longer than v1's MTU: refused on the way to the TAP end
    o1.ip("link", "set", v1, "mtu", "1000")
    hosts.b.ping("10.42.0.1", count=2, size=1200, extra=("-M", "dont", "-W", "1"))
    time.sleep(0.3)
    _, counts = stop_capture(cap)
    after = stats_of(daemon, v1)
    assert after["drops"].get("mtu", 0) - before["drops"].get("mtu", 0) == 2
    fields = ("frame.interface_name", "frame.comment", "frame.len")
    requests = tshark(trace, f'icmp.type == 8 && frame.interface_name == "{v1}"', *fields)
    assert requests == [[v1, "", "98"]] * 5 + [[v1, "dropped: mtu", "1514"]] * 2
    # what the tunnel delivered to v1 is recorded on interface 1, the tunnel end
    replies = tshark(trace, "icmp.type == 0", *fields)
    assert replies == [["vxlan:42", "", "98"]] * 5
    refused = tshark(trace, 'icmp.type == 8 && frame.interface_name == "vxlan:42"', *fields)
    assert refused == [["vxlan:42", "dropped: mtu", str(14 + 20 + 8 + 1200)]] * 2
    names = sh("tshark", "-r", str(trace), "-T", "fields", "-e", "frame.interface_description")
    assert f"netns {o1.name}, mtu 1500" in names.stdout
    assert f"tapveth end vxlan:42 of pair {v1}/vxlan:42, underlay netns" in names.stdout
    recs = list(pcapng.read(trace.read_bytes()))
    isb = [r for r in recs if isinstance(r, pcapng.Statistics)]
    packets = [r for r in recs if isinstance(r, pcapng.Packet)]
    assert isb[0].received == isb[0].delivered == 7, isb
    assert isb[1].received == isb[1].delivered == 7, isb
    assert counts["captured"] == len(packets) == 14
    assert counts["dropped by kernel"] == 0


def stats_of(d: PrivateDaemon, name: str) -> dict[str, Any]:
    (mine,) = [e for e in d.request("stats") if e["ifname"] == name]
    assert isinstance(mine, dict)
    return mine
