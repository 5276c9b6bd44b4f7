"""The sockets of a vxlan end: opened in its underlay namespace, with the options the tunnel
needs (large buffers, DF, UDP_GRO, a receive-nothing filter on the sending pool).

They are opened inside the underlay namespace by the netlink worker thread (setns for that
moment only); an open socket keeps its namespace alive, so `ip netns del` of the underlay
namespace does not destroy it while the pair exists.

One socket bound to dstport receives the tunnel; a small pool of sockets connected to
remote:dstport sends it, one per outer source port, so that the source port can follow a hash
of the inner flow (RFC 7348 section 5) without a raw socket. The pool's sockets never receive
(a socket filter drops everything addressed to them).
"""

import contextlib
import ctypes
import errno
import os
import random
import secrets
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

from tapveth.core.vxlanspec import VxlanSpec
from tapveth.kernel import netns
from tapveth.kernel.netlink import Netlink

POOL = 16  # outer source ports per end: entropy for an ECMP underlay
# The receiving socket asks for UDP_GRO: datagrams the underlay's GRO merged come in one read
# (TAPVETH_VXLAN_GRO=0: one read per datagram, for measurements; see README, Across machines).
GRO = os.environ.get("TAPVETH_VXLAN_GRO", "1") != "0"

# Linux values; Python's socket module lacks some of them.
_IP_MTU_DISCOVER, _IP_PMTUDISC_DO = 10, 2
_IPV6_MTU_DISCOVER, _IPV6_PMTUDISC_DO = 23, 2
_SO_ATTACH_FILTER = 26
SOL_UDP, UDP_SEGMENT, UDP_GRO = 17, 103, 104
_SO_SNDBUFFORCE = 32
_SO_RCVBUFFORCE = 33
_SOCKBUF = 4 << 20
_UDP = socket.SOCK_DGRAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC


class UnderlayError(OSError):
    """The tunnel's sockets could not be opened; the message says why in one line."""


@dataclass
class Underlay:
    """The sockets of one vxlan end, opened in its underlay namespace."""

    rx: socket.socket
    tx: list[socket.socket]
    ns_inode: int
    local_ip: str
    src_ports: list[int] = field(default_factory=list)

    def close(self) -> None:
        for s in [self.rx, *self.tx]:
            s.close()


def _drop_all(sock: socket.socket) -> None:
    """Attach a classic BPF program that returns 0: the socket never queues a datagram."""
    prog = (ctypes.c_ubyte * 8).from_buffer_copy(struct.pack("HBBI", 0x06, 0, 0, 0))  # ret #0
    fprog = struct.pack("HL", 1, ctypes.addressof(prog))
    sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, fprog)


def _buffer(sock: socket.socket, forced: int, plain: int) -> None:
    """A large socket buffer: bursts from the TAP (a whole TCP window at once) must not fail
    with EAGAIN, which would drop frames the sender then retransmits. The forced option
    (CAP_NET_ADMIN) goes past net.core.[rw]mem_max."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, forced, _SOCKBUF)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, plain, _SOCKBUF)


def _no_fragments(sock: socket.socket, v6: bool) -> None:
    """DF on, no local fragmentation: an oversize send fails with EMSGSIZE (counted as a
    drop) instead of leaving as fragments."""
    if v6:
        sock.setsockopt(socket.IPPROTO_IPV6, _IPV6_MTU_DISCOVER, _IPV6_PMTUDISC_DO)
    else:
        sock.setsockopt(socket.IPPROTO_IP, _IP_MTU_DISCOVER, _IP_PMTUDISC_DO)


def open_underlay(nl: Netlink, spec: VxlanSpec, caller_ns: int | None) -> Underlay:
    """Open the end's sockets inside its underlay namespace (run in the worker thread): the
    one named, else the client's (`caller_ns`, an fd), else the daemon's own."""
    fam = socket.AF_INET6 if spec.ipv6 else socket.AF_INET
    any_addr = "::" if spec.ipv6 else "0.0.0.0"
    made: list[socket.socket] = []
    try:
        with _underlay_ns(spec, caller_ns):
            ns_inode = os.stat("/proc/thread-self/ns/net").st_ino
            rx = socket.socket(fam, _UDP)
            made.append(rx)
            _buffer(rx, _SO_RCVBUFFORCE, socket.SO_RCVBUF)
            if GRO:
                rx.setsockopt(SOL_UDP, UDP_GRO, 1)
            try:
                rx.bind((spec.local or any_addr, spec.dstport))
            except OSError as exc:
                raise UnderlayError(
                    exc.errno,
                    f"cannot receive on {spec.local or any_addr} port {spec.dstport}: "
                    f"{exc.strerror} (is another vxlan end or device using it?)",
                ) from None
            tx: list[socket.socket] = []
            ports: list[int] = []
            rng = random.Random(secrets.randbits(64))
            attempts = 0
            while len(tx) < POOL:
                attempts += 1
                if attempts > POOL * 20:
                    raise UnderlayError(errno.EADDRINUSE, "no free source ports in srcport range")
                s = socket.socket(fam, _UDP)
                port = 0 if spec.srcport is None else rng.randrange(*spec.srcport)
                try:
                    s.bind((spec.local or any_addr, port))
                except OSError:
                    s.close()
                    continue
                made.append(s)
                _buffer(s, _SO_SNDBUFFORCE, socket.SO_SNDBUF)
                _drop_all(s)
                _no_fragments(s, spec.ipv6)
                try:
                    s.connect((spec.remote, spec.dstport))
                except OSError as exc:
                    raise UnderlayError(
                        exc.errno, f"cannot reach {spec.remote}: {exc.strerror}"
                    ) from None
                tx.append(s)
                ports.append(s.getsockname()[1])
            local_ip = tx[0].getsockname()[0]
        return Underlay(rx, tx, ns_inode, local_ip, ports)
    except BaseException:
        for s in made:
            s.close()
        raise


@contextlib.contextmanager
def _underlay_ns(spec: VxlanSpec, caller_ns: int | None) -> Iterator[None]:
    """This thread in the underlay namespace for the duration."""
    if spec.underlay_netns is not None:
        with netns.inside(spec.underlay_netns):
            yield
    elif caller_ns is not None:
        with netns.entered(caller_ns):
            yield
    else:
        yield  # the daemon's own namespace, where this thread already is
