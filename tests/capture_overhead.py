"""What a capture costs the relay, per frame: Relay.pump over datagram socket pairs (no TAP, no
root), without a capture, with one recording every frame, and with one whose client is behind
(the capture then steps out of the relay's way). Prints figures; asserts nothing.

    python tests/capture_overhead.py [--size BYTES] [--rounds N]
"""

import argparse
import asyncio
import socket
import time
from typing import Any

from tapveth.core import vnet
from tapveth.daemon.capture import Capture
from tapveth.daemon.pair import End, Pair
from tapveth.daemon.pending_events import PendingEvents
from tapveth.daemon.relay import BATCH, Relay


class _Fd:
    """Stands in for a Tap: the relay only needs its fd."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.closed = False


class _Transport:
    def __init__(self, behind: bool) -> None:
        self.behind = behind
        self.written = 0

    def get_write_buffer_size(self) -> int:
        return 1 << 40 if self.behind else 0

    def is_closing(self) -> bool:
        return False

    def write(self, data: bytes) -> None:
        self.written += len(data)


class _Writer:
    def __init__(self, behind: bool) -> None:
        self.transport = _Transport(behind)


def _sockets() -> tuple[socket.socket, socket.socket, socket.socket, socket.socket]:
    a_in, a_relay = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    b_relay, b_out = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    for s in (a_in, a_relay, b_relay, b_out):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    a_relay.setblocking(False)
    b_out.setblocking(False)
    return a_in, a_relay, b_relay, b_out


async def measure(size: int, rounds: int) -> None:
    a_in, a_relay, b_relay, b_out = _sockets()
    tap_a: Any = _Fd(a_relay.fileno())
    tap_b: Any = _Fd(b_relay.fileno())
    src, dst = End(tap=tap_a, name="a"), End(tap=tap_b, name="b")
    src.up = dst.up = True
    pair = Pair(src, dst)
    relay = Relay(PendingEvents(lambda: None), lambda end, exc: None)
    frame = bytes(vnet.HDR_LEN) + bytes(size)  # a zero virtio header, then the frame
    cases = (("no capture", None), ("capture recording", False), ("capture behind", True))
    for label, behind in cases:
        src.captures = dst.captures = ()
        cap = None
        if behind is not None:
            writer: Any = _Writer(behind)
            cap = Capture(pair, src, writer, 262144, 0, False, 2 << 20)
            cap.start()
        runs = []
        for _ in range(5):
            spent = 0.0
            for _ in range(rounds):
                for _ in range(BATCH):
                    a_in.send(frame)
                t = time.perf_counter()
                relay.pump(src, dst)
                spent += time.perf_counter() - t
                for _ in range(BATCH):
                    b_out.recv(1 << 17)
            runs.append(spent / (rounds * BATCH) * 1e9)
        if cap is not None:
            cap.stop()
        runs.sort()
        print(
            f"{size:>6} B frames, {label:<18} {runs[0]:7.0f} ns/frame (best of 5), "
            f"median {runs[2]:.0f}"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=0, help="frame size (default: 100 and 1500)")
    p.add_argument("--rounds", type=int, default=2000, help="batches of 64 frames per run")
    opts = p.parse_args()
    for size in [opts.size] if opts.size else [100, 1500]:
        asyncio.run(measure(size, opts.rounds))


if __name__ == "__main__":
    main()
