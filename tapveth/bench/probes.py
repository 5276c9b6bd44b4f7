"""The probes of `bench --impair`, each a sender in one namespace and a receiver in the other,
run as `python -m tapveth.bench.probes ROLE ...` under `ip netns exec`:

- udp-send / udp-recv: timestamped UDP datagrams (sequence number, CLOCK_MONOTONIC at send).
  Both namespaces share the host's clocks, so the receiver computes each one-way delay itself,
  from the kernel's receive timestamp (SO_TIMESTAMPNS) so that its own scheduling does not
  count. That timestamp is CLOCK_REALTIME, which a time service may step or move against
  CLOCK_MONOTONIC while a run lasts (on one VM here it gained 5 ms a second, which read as
  +0.5 ms on a 100 ms delay); the receiver converts it to CLOCK_MONOTONIC with the offset
  between the two clocks read right after each receive.
  The sender paces a tight loop against a schedule and sends every datagram already due at
  each wake-up, so a late wake-up sends a small burst rather than falling behind; it reports
  the rate it achieved.
- frames-send / frames-recv: raw Ethernet frames on an AF_PACKET socket (ethertype 0x88b5, the
  IEEE local experimental one) carrying three copies of its sequence number and of its send
  time, then a fixed pattern. The receiver sees every frame, a corrupted one too (no IP
  checksum stands in the way), takes each field by majority (one flipped bit leaves two copies
  right) and counts the bits that differ from the frame sent: the copies that disagree and the
  pattern. The Ethernet header is the receiver's filter (broadcast, the ethertype), so a flip
  there would show as a frame missing, never as a changed one.

Every loop is bounded by a count and a deadline; the receiver ends after an idle second."""

import argparse
import contextlib
import json
import os
import select
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

ETHERTYPE = 0x88B5
ETH_HLEN = 14
SO_TIMESTAMPNS = 35
SO_RCVBUFFORCE = 33
SOL_PACKET = 263
PACKET_STATISTICS = 6
PR_SET_TIMERSLACK = 29
_UDP_HEAD = struct.Struct("!IQ")  # seq, send time (ns, CLOCK_MONOTONIC)
_FRAME_HEAD = struct.Struct("!IIIQQQ")  # seq and send time, three copies of each
PATTERN = bytes((i * 37 + 11) & 0xFF for i in range(64))
_TS = struct.Struct("@qq")  # struct timespec


class ProbeError(RuntimeError):
    pass


def _fine_timer_slack() -> None:
    """Let this process's sleeps end within a microsecond of their time rather than the
    default 50 us (prctl PR_SET_TIMERSLACK), so that the sender can sleep between datagrams
    instead of spinning."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_TIMERSLACK, 1000, 0, 0, 0)


def _pace(count: int, pps: float, send_one: Any, deadline: float) -> tuple[int, float]:
    """Call send_one(i) for i in 0..count-1 on a schedule of pps per second, sleeping until the
    next one is due and sending everything due at each wake-up. Returns (sent, seconds).
    It sleeps even 50 us (20 kpps): a sender spinning between datagrams takes one of the
    machine's two vCPUs from the relay it measures."""
    _fine_timer_slack()
    start = time.perf_counter()
    i = 0
    while i < count:
        now = time.perf_counter()
        if now > deadline:
            break
        due = start + i / pps
        if due > now:
            time.sleep(due - now)
            continue
        while i < count and start + i / pps <= now:
            send_one(i)
            i += 1
    return i, time.perf_counter() - start


def _recv_mono(anc: list[tuple[int, int, bytes]]) -> int:
    """The kernel's receive timestamp of a datagram, on CLOCK_MONOTONIC. Call right after the
    receive: the offset between the clocks is read now, so a step of the realtime clock between
    the arrival and this call (microseconds at most) is all that can count."""
    offset = time.time_ns() - time.monotonic_ns()
    for level, kind, data in anc:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
            sec, nsec = _TS.unpack(data[: _TS.size])
            return int(sec) * 1_000_000_000 + int(nsec) - offset
    return time.monotonic_ns()  # no timestamp: the kernel always gives one once asked


def _big_buffer(sock: socket.socket) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 64 << 20)
    except PermissionError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 20)


def udp_send(host: str, port: int, count: int, pps: float, size: int, seconds: float) -> Any:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    pad = bytes(max(0, size - _UDP_HEAD.size))
    errors = 0

    def one(i: int) -> None:
        nonlocal errors
        try:
            sock.sendto(_UDP_HEAD.pack(i, time.monotonic_ns()) + pad, (host, port))
        except OSError:  # ENOBUFS under load: counted, and seen as a loss by the receiver
            errors += 1

    sent, took = _pace(count, pps, one, time.perf_counter() + seconds)
    return {"sent": sent, "seconds": took, "pps": sent / took if took else 0.0, "errors": errors}


def udp_recv(host: str, port: int, count: int, seconds: float) -> Any:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    _big_buffer(sock)
    sock.bind((host, port))
    print("ready", flush=True)
    seqs: list[int] = []
    sent_ns: list[int] = []
    delay_ns: list[int] = []
    deadline = time.monotonic() + seconds
    idle = 5.0  # until the first datagram; then an idle second ends it
    while len(seqs) < count and time.monotonic() < deadline:
        if not select.select([sock], [], [], idle)[0]:
            break
        idle = 1.0
        data, anc, _, _ = sock.recvmsg(2048, 256)
        if len(data) < _UDP_HEAD.size:
            continue
        seq, ts = _UDP_HEAD.unpack_from(data)
        seqs.append(seq)
        sent_ns.append(ts)
        delay_ns.append(_recv_mono(anc) - ts)
    t0 = min(sent_ns) if sent_ns else 0
    return {
        "seq": seqs,
        "t0_ns": t0,  # sent_us counts from this CLOCK_MONOTONIC time, shared by namespaces
        "sent_us": [(t - t0) / 1000 for t in sent_ns],
        "delay_us": [d / 1000 for d in delay_ns],
    }


def frame(seq: int, src: bytes, ts: int) -> bytes:
    return (
        b"\xff" * 6
        + src
        + ETHERTYPE.to_bytes(2, "big")
        + _FRAME_HEAD.pack(seq, seq, seq, ts, ts, ts)
    ) + PATTERN


def frames_send(ifname: str, count: int, pps: float, seconds: float) -> Any:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    sock.bind((ifname, 0))
    with open(f"/sys/class/net/{ifname}/address") as f:
        src = bytes.fromhex(f.read().strip().replace(":", ""))
    retries = 0

    def one(i: int) -> None:
        nonlocal retries
        data = frame(i, src, time.monotonic_ns())
        for _ in range(100):
            try:
                sock.send(data)
                return
            except BlockingIOError:
                pass
            except OSError as exc:
                if exc.errno != 105:  # ENOBUFS: the device's queue is full; wait and retry
                    raise
            retries += 1
            time.sleep(0.0002)
        # Counted as sent, an unsent frame would read as lost: the row's figure would be wrong.
        raise RuntimeError(f"{ifname}: frame {i} not sent, the device's queue full for 20 ms")

    sent, took = _pace(count, pps, one, time.perf_counter() + seconds)
    return {"sent": sent, "seconds": took, "pps": sent / took if took else 0.0, "retries": retries}


@dataclass
class Judged:
    seq: int
    bits: int  # bits that differ from the frame sent
    offset: int  # first byte that differs (from the frame's start), -1 if none
    sent_ns: int


def _popcount(x: int) -> int:
    return bin(x).count("1")


def _majority(copies: Sequence[int]) -> int:
    a, b, c = copies
    return a if a in (b, c) else b


def judge(data: bytes) -> Judged | None:
    """What was sent as this frame and how many bits changed; None for another protocol."""
    if len(data) < ETH_HLEN + _FRAME_HEAD.size or data[12:14] != ETHERTYPE.to_bytes(2, "big"):
        return None
    f = _FRAME_HEAD.unpack_from(data, ETH_HLEN)
    body = data[ETH_HLEN + _FRAME_HEAD.size :]
    # three copies: one flipped bit leaves two agreeing, the value sent
    seq = _majority(f[0:3])
    ts = _majority(f[3:6])
    bits = sum(_popcount(x ^ seq) for x in f[0:3]) + sum(_popcount(x ^ ts) for x in f[3:6])
    offset = -1
    for k, x in enumerate(f):
        xor = x ^ (seq if k < 3 else ts)
        if xor:  # big-endian: the highest differing bit is in the field's earliest byte
            start, size = (4 * k, 4) if k < 3 else (12 + 8 * (k - 3), 8)
            offset = ETH_HLEN + start + size - 1 - (xor.bit_length() - 1) // 8
            break
    if body != PATTERN:
        n = min(len(body), len(PATTERN))
        diff = [i for i in range(n) if body[i] != PATTERN[i]]
        bits += sum(_popcount(body[i] ^ PATTERN[i]) for i in diff)
        bits += 8 * abs(len(body) - len(PATTERN))
        if offset < 0:
            offset = ETH_HLEN + _FRAME_HEAD.size + (diff[0] if diff else n)
    return Judged(seq, bits, offset, ts)


def frames_recv(ifname: str, count: int, seconds: float) -> Any:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETHERTYPE))
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    _big_buffer(sock)
    sock.bind((ifname, ETHERTYPE))
    print("ready", flush=True)
    seqs: list[int] = []
    delay_us: list[float] = []
    changed: list[list[int]] = []
    deadline = time.monotonic() + seconds
    idle = 5.0
    while len(seqs) < count and time.monotonic() < deadline:
        if not select.select([sock], [], [], idle)[0]:
            break
        idle = 1.0
        data, anc, _, _ = sock.recvmsg(4096, 256)
        j = judge(data)
        if j is None:
            continue
        seqs.append(j.seq)
        delay_us.append((_recv_mono(anc) - j.sent_ns) / 1000)
        if j.bits:
            changed.append([j.seq, j.bits, j.offset])
    stats = sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
    _, socket_drops = struct.unpack("II", stats)
    return {"seq": seqs, "delay_us": delay_us, "changed": changed, "socket_drops": socket_drops}


def carrier_watch(ifname: str, seconds: float, count: int = 0) -> Any:
    """Poll the end's carrier in sysfs (netif_carrier_ok itself, not the netlink event, which
    the kernel's linkwatch may hold back up to a second) and note when it changed; stop after
    `count` changes (0: none expected) or `seconds`."""
    path = f"/sys/class/net/{ifname}/carrier"
    changes: list[list[int]] = []
    # Real-time priority, so that a poll is not held back behind the daemon or the other
    # watcher on this 2-vCPU machine (that, not the daemon, made the one gap of 1.6 ms in 40
    # at normal priority). It cannot starve them: it sleeps 50 us between reads of a few us.
    with contextlib.suppress(OSError):
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
    fd = os.open(path, os.O_RDONLY)
    try:
        last = os.pread(fd, 8, 0)
        print("ready", flush=True)
        end = time.monotonic() + seconds
        while time.monotonic() < end and (count == 0 or len(changes) < count):
            try:
                now = os.pread(fd, 8, 0)
            except OSError:  # EINVAL while the device is down: no carrier to read
                now = b"-"
            if now != last:
                changes.append([time.clock_gettime_ns(time.CLOCK_MONOTONIC), now[:1] == b"1"])
                last = now
            time.sleep(0.00005)
    finally:
        os.close(fd)
    return {"changes": changes}


def spawn_carrier_watch(
    ns: str, ifname: str, seconds: float, count: int
) -> "subprocess.Popen[str]":
    """Start a carrier watcher in ns that stops after count changes or seconds; returns once
    it is polling."""
    p = _spawn(
        ns, "carrier-watch", "--ifname", ifname, "--count", str(count), "--seconds", str(seconds)
    )
    assert p.stdout is not None
    if p.stdout.readline().strip() != "ready":
        p.kill()
        raise ProbeError(f"carrier watcher did not start: {p.communicate(timeout=5)[1].strip()}")
    return p


# -- running a pair of them ----------------------------------------------------------------------


def _spawn(ns: str, *args: str) -> "subprocess.Popen[str]":
    return subprocess.Popen(
        ["ip", "netns", "exec", ns, sys.executable, "-m", "tapveth.bench.probes", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _pair(
    recv_ns: str, recv: Sequence[str], send_ns: str, send: Sequence[str], seconds: float
) -> tuple[Any, Any]:
    rx = _spawn(recv_ns, *recv)
    try:
        assert rx.stdout is not None
        if rx.stdout.readline().strip() != "ready":
            raise ProbeError(
                f"probe receiver did not start: {rx.communicate(timeout=5)[1].strip()}"
            )
        tx = _spawn(send_ns, *send)
        out, err = tx.communicate(timeout=seconds + 30)
        if tx.returncode != 0:
            raise ProbeError(f"probe sender failed: {err.strip()}")
        rx_out, rx_err = rx.communicate(timeout=seconds + 30)
        if rx.returncode != 0:
            raise ProbeError(f"probe receiver failed: {rx_err.strip()}")
        return json.loads(out), json.loads(rx_out)
    finally:
        if rx.poll() is None:
            rx.kill()
            rx.wait(5)


def run_udp(
    send_ns: str,
    recv_ns: str,
    host: str,
    count: int,
    pps: float,
    size: int = 64,
    port: int = 5399,
) -> tuple[Any, Any]:
    """Send count timestamped datagrams at pps to host:port; (sender's report, receiver's
    samples). Two probes may run at once through one pair on different ports."""
    seconds = count / pps * 2 + 10
    common = ["--host", host, "--port", str(port), "--count", str(count), "--seconds", str(seconds)]
    return _pair(
        recv_ns,
        ["udp-recv", *common],
        send_ns,
        ["udp-send", *common, "--pps", str(pps), "--size", str(size)],
        seconds,
    )


def run_frames(
    send_ns: str, send_if: str, recv_ns: str, recv_if: str, count: int, pps: float, expect: int
) -> tuple[Any, Any]:
    """Send count raw frames at pps; the receiver stops at `expect` frames or when idle."""
    seconds = count / pps * 2 + 10
    return _pair(
        recv_ns,
        ["frames-recv", "--ifname", recv_if, "--count", str(expect), "--seconds", str(seconds)],
        send_ns,
        [
            "frames-send",
            "--ifname",
            send_if,
            "--count",
            str(count),
            "--pps",
            str(pps),
            "--seconds",
            str(seconds),
        ],
        seconds,
    )


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tapveth.bench.probes")
    ap.add_argument(
        "role", choices=("udp-send", "udp-recv", "frames-send", "frames-recv", "carrier-watch")
    )
    ap.add_argument("--host", default="")
    ap.add_argument("--port", type=int, default=5399)
    ap.add_argument("--ifname", default="")
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--pps", type=float, default=1000.0)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=60.0)
    o = ap.parse_args(argv)
    if o.role == "udp-send":
        res = udp_send(o.host, o.port, o.count, o.pps, o.size, o.seconds)
    elif o.role == "udp-recv":
        res = udp_recv(o.host, o.port, o.count, o.seconds)
    elif o.role == "frames-send":
        res = frames_send(o.ifname, o.count, o.pps, o.seconds)
    elif o.role == "frames-recv":
        res = frames_recv(o.ifname, o.count, o.seconds)
    else:
        res = carrier_watch(o.ifname, o.seconds, o.count)
    json.dump(res, sys.stdout)
    sys.stdout.flush()
    os._exit(0)  # nothing left to flush; skip interpreter teardown under load


if __name__ == "__main__":
    sys.exit(main())
