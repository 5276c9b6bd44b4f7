"""The impaired paths of a vxlan end, both directions, over sockets on loopback (no TAP, no
root): frames queued by the netem model, the veth rules judged when they leave the queue, the
carrier cut, captures, and Impairments wired to the tunnel end."""

import asyncio
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tapveth.core import vnet, vxlan
from tapveth.core.linkspec import SpecError, check_end_name, parse_select
from tapveth.core.netem import parse
from tapveth.core.rules import DropReason
from tapveth.core.vxlanspec import VxlanSpec
from tapveth.daemon.impaired import Impairments
from tapveth.daemon.pair import End, Pair
from tapveth.daemon.pending_events import PendingEvents
from tapveth.daemon.vxlan_end import Underlay, VxlanEnd

HDR = bytes(vnet.HDR_LEN)
VNI = 42


class _Fd:
    """Stands in for a Tap: the end only needs its fd (and whether it is closed)."""

    closed = False

    def __init__(self, fd: int) -> None:
        self.fd = fd


class _Recorder:
    def __init__(self) -> None:
        self.frames: list[tuple[str, bytes, str | None]] = []

    def frame(self, sender: Any, frame: memoryview, reason: str | None) -> None:
        self.frames.append((sender.name, bytes(frame), reason))

    def flush(self) -> None:
        pass


class Rig:
    """A TAP stand-in (a datagram socket pair), the tunnel's sockets on 127.0.0.1 and a far
    side that receives what the end sends."""

    def __init__(self) -> None:
        self.tap_user, tap_daemon = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        tap_daemon.setblocking(False)
        self.tap_user.setblocking(False)
        self.far = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.far.bind(("127.0.0.1", 0))
        self.far.setblocking(False)
        rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rx.bind(("127.0.0.1", 0))
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        tx.bind(("127.0.0.1", 0))
        tx.connect(self.far.getsockname())
        self.socks = [self.tap_user, tap_daemon, self.far, rx, tx]
        spec = VxlanSpec(vni=VNI, remote="127.0.0.1", dstport=self.far.getsockname()[1])
        underlay = Underlay(rx, [tx], 0, "127.0.0.1", [tx.getsockname()[1]])
        self.gone: list[OSError] = []
        self.end = VxlanEnd(
            spec,
            underlay,
            on_change=lambda: None,
            on_gone=lambda end, exc: self.gone.append(exc),
            events=PendingEvents(lambda: None),
            on_traffic=lambda: None,
        )
        tap: Any = _Fd(tap_daemon.fileno())
        self.tap = End(tap=tap, name="veth1", up=True, mtu=1450)
        self.pair = Pair(self.tap, self.end)

    def close(self) -> None:
        for e in (self.tap, self.end):
            if e.impair is not None:
                e.impair.timer.close()
        for s in self.socks:
            s.close()

    def tunnel_out(self) -> list[bytes]:
        """Frames that reached the far side, checked to carry our VXLAN header."""
        out: list[bytes] = []
        while True:
            try:
                d = self.far.recv(1 << 17)
            except BlockingIOError:
                return out
            assert d[: vxlan.HLEN] == vxlan.header(VNI)
            out.append(d[vxlan.HLEN :])

    def tap_in(self) -> list[bytes]:
        """Frames the end wrote to the TAP (their virtio header: no offloads)."""
        out: list[bytes] = []
        while True:
            try:
                d = self.tap_user.recv(1 << 17)
            except BlockingIOError:
                return out
            assert d[: vnet.HDR_LEN] == HDR
            out.append(d[vnet.HDR_LEN :])

    def from_tunnel(self, frame: bytes) -> bool:
        dgram = memoryview(vxlan.header(VNI) + frame)
        return self.end.receiver.decap(self.tap, dgram, len(dgram), self.end.captures)


def _frames(n: int) -> list[bytes]:
    return [bytes([i + 1]) * 60 for i in range(n)]


@pytest.fixture
def rig() -> Iterator[Rig]:
    r = Rig()
    try:
        yield r
    finally:
        r.close()


def _in_loop(fn: Callable[[], None]) -> None:
    """Run fn where the end is started (its readers on a running loop), then stop it."""

    async def main() -> None:
        fn()

    asyncio.run(main())


def test_netem_on_the_tap_end_queues_what_enters_the_tunnel(rig: Rig) -> None:
    def body() -> None:
        rig.end.start(rig.tap)
        imp = Impairments(asyncio.get_running_loop(), lambda src, dst: None)
        imp.set(rig.pair, rig.tap, parse(["delay", "10s"]), "add")
        for f in _frames(3):
            rig.tap_user.send(HDR + f)
        rig.end._tap_readable()
        assert rig.tunnel_out() == []  # held for 10 s
        assert rig.tap.impair is not None and len(rig.tap.impair.model) == 3
        # Deleting the qdisc sends what is queued at once, in order, into the tunnel.
        imp.set(rig.pair, rig.tap, None, "del")
        assert rig.tunnel_out() == _frames(3)
        assert rig.tap.out.packets == 3 and rig.tap.impair is None
        # Without impairments the plain path runs again.
        rig.tap_user.send(HDR + _frames(1)[0])
        rig.end._tap_readable()
        assert rig.tunnel_out() == _frames(1)
        rig.end.stop()

    _in_loop(body)


def test_loss_is_counted_and_shown_on_the_way_into_the_tunnel(rig: Rig) -> None:
    def body() -> None:
        rig.end.start(rig.tap)
        imp = Impairments(asyncio.get_running_loop(), lambda src, dst: None)
        imp.set(rig.pair, rig.tap, parse(["loss", "100%"]), "add")
        rec = _Recorder()
        rig.tap.captures = (rec,)  # type: ignore[assignment]
        for f in _frames(4):
            rig.tap_user.send(HDR + f)
        rig.end._tap_readable()
        assert rig.tunnel_out() == []
        assert rig.tap.out.drops == {DropReason.LOSS: 4}
        assert [(n, r) for n, _, r in rec.frames] == [("veth1", "loss")] * 4
        rig.end.stop()

    _in_loop(body)


def test_veth_rules_are_judged_when_a_frame_leaves_for_the_tunnel(rig: Rig) -> None:
    def body() -> None:
        rig.end.start(rig.tap)
        imp = Impairments(asyncio.get_running_loop(), lambda src, dst: None)
        imp.set(rig.pair, rig.tap, parse(["delay", "10s"]), "add")
        rig.tap_user.send(HDR + _frames(1)[0])
        rig.tap_user.send(HDR + b"\x01" * 10)  # a runt: refused at delivery, as veth would
        rig.end._tap_readable()
        rig.tap.cut = rig.end.cut = True  # cut while it waits
        rig.tap_user.send(HDR + _frames(1)[0])  # read while cut: queued, dropped on leaving
        rig.end._tap_readable()
        imp.set(rig.pair, rig.tap, None, "del")
        assert rig.tunnel_out() == []
        assert rig.tap.out.drops == {DropReason.CARRIER: 3}
        # Cut without impairments: refused as it is read.
        rig.tap_user.send(HDR + _frames(1)[0])
        rig.end._tap_readable()
        assert rig.tap.out.drops == {DropReason.CARRIER: 4}
        rig.tap.cut = rig.end.cut = False
        imp.set(rig.pair, rig.tap, parse(["delay", "10s"]), "add")
        rig.tap_user.send(HDR + b"\x01" * 10)
        rig.end._tap_readable()
        imp.set(rig.pair, rig.tap, None, "del")
        assert rig.tap.out.drops[DropReason.RUNT] == 1
        rig.end.stop()

    _in_loop(body)


def test_netem_on_the_tunnel_end_queues_what_it_delivers(rig: Rig) -> None:
    def body() -> None:
        rig.end.start(rig.tap)
        imp = Impairments(asyncio.get_running_loop(), lambda src, dst: None)
        imp.set(rig.pair, rig.end, parse(["delay", "10s"]), "add")
        rec = _Recorder()
        rig.end.captures = (rec,)  # type: ignore[assignment]
        for f in _frames(3):
            assert rig.from_tunnel(f)
        assert rig.tap_in() == []
        assert rig.tap.impair is None  # the other direction is untouched
        imp.set(rig.pair, rig.end, None, "del")
        assert rig.tap_in() == _frames(3)
        assert rig.end.out.packets == 3
        assert [(n, r) for n, _, r in rec.frames] == [("vxlan:42", None)] * 3
        # Loss on this direction: counted as the tunnel end's drops.
        imp.set(rig.pair, rig.end, parse(["loss", "100%"]), "add")
        assert rig.from_tunnel(_frames(1)[0])
        assert rig.tap_in() == []
        assert rig.end.out.drops == {DropReason.LOSS: 1}
        rig.end.stop()

    _in_loop(body)


def test_tap_state_and_cut_are_judged_when_a_frame_leaves_the_tunnel(rig: Rig) -> None:
    def body() -> None:
        rig.end.start(rig.tap)
        imp = Impairments(asyncio.get_running_loop(), lambda src, dst: None)
        imp.set(rig.pair, rig.end, parse(["delay", "10s"]), "add")
        assert rig.from_tunnel(_frames(1)[0])
        assert rig.from_tunnel(bytes(1500))  # longer than the TAP's MTU + 18
        rig.tap.up = False  # the TAP goes down while the frame waits
        imp.set(rig.pair, rig.end, None, "del")
        assert rig.tap_in() == []
        assert rig.end.out.drops == {DropReason.PEER_DOWN: 2}
        rig.tap.up = True
        imp.set(rig.pair, rig.end, parse(["delay", "10s"]), "add")
        assert rig.from_tunnel(bytes(1500))
        imp.set(rig.pair, rig.end, None, "del")
        assert rig.end.out.drops[DropReason.MTU] == 1
        # Cut, with and without impairments: dropped as carrier.
        rig.end.cut = True
        assert rig.from_tunnel(_frames(1)[0])
        imp.set(rig.pair, rig.end, parse(["delay", "10s"]), "add")
        assert rig.from_tunnel(_frames(1)[0])
        imp.set(rig.pair, rig.end, None, "del")
        assert rig.tap_in() == []
        assert rig.end.out.drops[DropReason.CARRIER] == 2
        rig.end.cut = False
        assert rig.from_tunnel(_frames(1)[0])  # the plain path again
        assert rig.tap_in() == _frames(1)
        rig.end.stop()

    _in_loop(body)


def test_end_names_of_requests() -> None:
    assert check_end_name("veth1") == "veth1"
    assert check_end_name("vxlan:42") == "vxlan:42"
    assert check_end_name(f"vxlan:{vxlan.MAX_VNI}") == f"vxlan:{vxlan.MAX_VNI}"
    for bad in (f"vxlan:{vxlan.MAX_VNI + 1}", "vxlan:", "vxlan:x", "vx:42", "a:b", "vxlan:٤٢"):
        with pytest.raises(SpecError):
            check_end_name(bad)


def test_cli_names_the_tunnel_end() -> None:
    from tapveth.cli import fault, qdisc

    args = qdisc.request_args(["add", "dev", "vxlan:42", "root", "netem", "delay", "5ms"])
    assert args["name"] == "vxlan:42"
    assert fault.request_args(["set", "dev", "vxlan:42", "carrier", "off"])["name"] == "vxlan:42"
    assert fault.fault_args(["add", "dev", "vxlan:42", "at", "+1s", "cut"])["name"] == "vxlan:42"
    with pytest.raises(SpecError):
        qdisc.request_args(["add", "dev", "vxlan:x", "root", "netem", "delay", "5ms"])
    assert parse_select(["vxlan:42", "netns", "host"], required=True).name == "vxlan:42"
    with pytest.raises(SpecError):
        parse_select(["vxlan:-1"], required=True)
