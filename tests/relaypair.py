"""Two ends whose TAPs are datagram socket pairs, to drive the Relay without a TAP or root:
a datagram written into `a_in` is what src's TAP holds, and what the relay writes to dst
arrives at `b_out`."""

import socket
from collections.abc import Iterator
from typing import Any

from tapveth.daemon.pair import End


class FakeTap:
    """Stands in for a Tap: the relay only needs its fd."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.closed = False


def socket_ends() -> Iterator[tuple[socket.socket, socket.socket, End, End]]:
    """(a_in, b_out, src, dst), both ends up, every socket non-blocking as a TAP's fd is;
    closes the sockets and the ends' impairment timers afterwards. For a fixture:
    `yield from socket_ends()`."""
    a_in, a_relay = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    b_relay, b_out = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    socks = (a_in, a_relay, b_relay, b_out)
    for s in socks:
        s.setblocking(False)
    tap_a: Any = FakeTap(a_relay.fileno())
    tap_b: Any = FakeTap(b_relay.fileno())
    src, dst = End(tap=tap_a, name="a"), End(tap=tap_b, name="b")
    src.up = dst.up = True
    try:
        yield a_in, b_out, src, dst
    finally:
        for end in (src, dst):
            if end.impair is not None:
                end.impair.timer.close()
        for s in socks:
            s.close()
