"""`tapveth capture` on the client side: reading the daemon's pcapng stream until Ctrl-C, and
writing it to a file or a pipe, or printing one line per frame (decoded here, with scapy's
dissectors, never in the daemon)."""

import contextlib
import os
import select
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

from tapveth.control import ControlError, StreamClient
from tapveth.core import pcapng


def run_capture(
    path: str,
    target: dict[str, Any],
    write: str | None,
    count: int,
    snaplen: int,
    drops: bool,
    buffer_kib: int,
) -> int:
    args = {
        **target,
        "count": count,
        "snaplen": snaplen or pcapng.DEFAULT_SNAPLEN,
        "drops": drops,
        "buffer_kib": buffer_kib,
    }
    client = StreamClient(path, "capture", args)
    wake = _stop_on_signals()
    head = client.head
    sink: Callable[[bytes], None]
    out: int | None = None  # the output's fd
    printer = None
    if write is None:
        printer = _LinePrinter(count)
        sink = printer.feed
    else:
        try:
            out = (
                sys.stdout.fileno()
                if write == "-"
                else os.open(write, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            )
        except OSError as exc:
            client.close()
            raise ControlError(f"cannot write {write}: {exc.strerror}") from None
        sink = _writer(out)
    where = "stdout" if write == "-" else (write or "")
    what = "refused frames of" if drops else "frames of"
    print(
        f"tapveth: capturing {what} {head['ifnames'][0]} <-> {head['ifnames'][1]}"
        + (f" into {where}" if write else "")
        + f", snapshot length {head['snaplen']} bytes (Ctrl-C to stop)",
        file=sys.stderr,
    )
    stats = _Totals()
    try:
        _pump(client, sink, stats, wake)
    finally:
        client.close()
        if out is not None and write != "-":
            os.close(out)
    print(f"{stats.captured} packets captured", file=sys.stderr)
    if not stats.ended:
        print("tapveth: the daemon ended the capture without its counts", file=sys.stderr)
        return 1
    print(f"{stats.accepted} packets received by filter", file=sys.stderr)
    print(f"{stats.dropped} packets dropped by kernel", file=sys.stderr)
    return 0


class _Totals:
    """What the capture amounted to: the frames that arrived, and the daemon's counts from the
    statistics blocks that end the stream."""

    def __init__(self) -> None:
        self.reader = pcapng.Reader(packets=False)
        self.accepted = self.dropped = 0
        self.ended = False  # the statistics blocks arrived

    def feed(self, data: bytes) -> None:
        for rec in self.reader.feed(data):
            if isinstance(rec, pcapng.Statistics):
                self.ended = True
                self.accepted += rec.accepted
                self.dropped += rec.dropped

    @property
    def captured(self) -> int:
        return self.reader.packets_seen


def _stop_on_signals() -> int:
    """Ctrl-C or SIGTERM (also when a shell started us in the background, ignoring SIGINT)
    asks the daemon to end the stream, so the last frames and the counts still arrive and no
    block is cut in half; a second one gives up at once. The handler only notes the signal:
    Python writes its number to the returned pipe, which the pump waits on beside the socket,
    and the pump half-closes. (A handler that touched the socket ran in the middle of a read
    or a write, and a read that the signal interrupted is retried blocking, PEP 475.)"""
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    stopping = False

    def handler(signum: int, frame: object) -> None:
        nonlocal stopping
        if stopping:
            raise KeyboardInterrupt
        stopping = True

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return wake_r


def _pump(client: StreamClient, sink: Callable[[bytes], None], stats: _Totals, wake: int) -> None:
    """Read until the daemon closes the stream, half-closing once a signal came (see
    _stop_on_signals). A reader that went away (a closed pipe) also asks the daemon to finish."""
    while True:
        if not client.buffered:
            timeout = None
            if client.finish_by is not None:
                timeout = max(0.0, client.finish_by - time.monotonic())
            sock = client.sock.fileno()
            ready, _, _ = select.select([sock, wake], [], [], timeout)
            if not ready:
                raise ControlError("the daemon did not end the capture in time")
            if wake in ready:
                with contextlib.suppress(BlockingIOError):
                    os.read(wake, 64)
                client.done()
            if sock not in ready:
                continue
        data = client.read()
        if not data:
            return
        stats.feed(data)
        try:
            sink(data)
        except BrokenPipeError:
            sink = _discard
            client.done()
        except _Enough:
            sink = _discard


class _Enough(Exception):
    """-c frames printed: the rest of the stream only matters for its counts."""


def _discard(data: bytes) -> None:
    pass


def _writer(fd: int) -> Callable[[bytes], None]:
    """Write straight to the fd, each chunk at once, so a reader at the other end of a pipe sees
    frames as they come. Not through a BufferedWriter: a signal that interrupts it in a write to
    a full pipe loses data (CPython), and Ctrl-C does exactly that when the reader lags."""

    def write(data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]

    return write


class _LinePrinter:
    """One line per frame: time since the first frame, the end that sent it, what it is."""

    def __init__(self, count: int) -> None:
        self.reader = pcapng.Reader()
        self.count = count
        self.printed = 0
        self.first: int | None = None

    def feed(self, data: bytes) -> None:
        for rec in self.reader.feed(data):
            if not isinstance(rec, pcapng.Packet):
                continue
            if self.first is None:
                self.first = rec.ts_ns
            iface = self.reader.interfaces[rec.interface_id]
            line = f"{(rec.ts_ns - self.first) / 1e9:.6f} {iface.name} Out {summarize(rec.data)}"
            if rec.orig_len > len(rec.data):
                line += f" [{rec.orig_len - len(rec.data)} bytes not captured]"
            if rec.comment:
                line += f" [{rec.comment}]"
            print(line, flush=True)
            self.printed += 1
            if self.count and self.printed >= self.count:
                raise _Enough


def summarize(frame: bytes) -> str:
    """A frame in one line, tcpdump-like: `IP 10.0.0.1 > 10.0.0.2 ICMP echo-request`."""
    from scapy.layers.inet import ICMP, IP, TCP, UDP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import ARP, Dot1Q, Ether

    length = f", length {len(frame)}"
    if len(frame) < 14:
        return f"runt{length}"  # shorter than an Ethernet header: nothing to decode
    pkt = Ether(frame)
    vlan = f"vlan {pkt[Dot1Q].vlan} " if Dot1Q in pkt else ""
    if ARP in pkt:
        a = pkt[ARP]
        if a.op == 1:
            return f"{vlan}ARP who-has {a.pdst} tell {a.psrc}{length}"
        return f"{vlan}ARP {a.psrc} is-at {a.hwsrc}{length}"
    for proto, layer in (("IP", IP), ("IP6", IPv6)):
        if layer not in pkt:
            continue
        ip = pkt[layer]
        if TCP in pkt:
            t = pkt[TCP]
            return (
                f"{vlan}{proto} {ip.src}.{t.sport} > {ip.dst}.{t.dport} TCP "
                f"[{t.sprintf('%TCP.flags%')}] seq {t.seq} ack {t.ack} "
                f"len {len(t.payload)}{length}"
            )
        if UDP in pkt:
            u = pkt[UDP]
            return f"{vlan}{proto} {ip.src}.{u.sport} > {ip.dst}.{u.dport} UDP{length}"
        if ICMP in pkt:
            return (
                f"{vlan}{proto} {ip.src} > {ip.dst} ICMP {pkt[ICMP].sprintf('%ICMP.type%')}{length}"
            )
        inner = ip.payload
        name = inner.name if inner is not None and inner.name != "Raw" else "payload"
        return f"{vlan}{proto} {ip.src} > {ip.dst} {name}{length}"
    return f"{pkt.summary()}{length}"
