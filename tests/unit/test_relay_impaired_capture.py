"""Captures on an impaired direction see every frame: those the model drops when they arrive
(with the model's reason), the rest when they leave the queue; the counters are unchanged by a
capture. Relay.pump over datagram socket pairs, no TAP, no root."""

import socket
from collections.abc import Iterator
from typing import Any

import pytest
from relaypair import socket_ends

from tapveth.core import vnet
from tapveth.core.impair import Impairment
from tapveth.core.netem import Netem
from tapveth.core.rules import DropReason
from tapveth.daemon.impaired import ImpairedLink
from tapveth.daemon.pair import End
from tapveth.daemon.pending_events import PendingEvents
from tapveth.daemon.relay import Relay
from tapveth.kernel.timerfd import Timer

HDR = bytes(vnet.HDR_LEN)  # a zero virtio header


class _Recorder:
    """A capture as the relay sees one: frame() for each decided frame, flush() per batch."""

    def __init__(self) -> None:
        self.frames: list[tuple[str, bytes, str | None]] = []
        self.flushes = 0

    def frame(self, sender: End, frame: memoryview, reason: str | None) -> None:
        self.frames.append((sender.name, bytes(frame), reason))

    def flush(self) -> None:
        self.flushes += 1


@pytest.fixture
def link() -> Iterator[tuple[socket.socket, socket.socket, End, End]]:
    yield from socket_ends()


def _impair(src: End, settings: Netem) -> None:
    model = Impairment(settings, now=0, on_drop=src.out.refused)
    src.impair = ImpairedLink(model, Timer())


def _received(b_out: socket.socket) -> list[bytes]:
    out = []
    while True:
        try:
            out.append(b_out.recv(1 << 17)[len(HDR) :])
        except BlockingIOError:
            return out


def _frames(n: int) -> list[bytes]:
    return [bytes([i]) * 60 for i in range(n)]


def test_loss_is_shown_with_its_reason(link: tuple[Any, Any, End, End]) -> None:
    a_in, b_out, src, dst = link
    _impair(src, Netem(loss=50.0, seed=7))
    rec = _Recorder()
    src.captures = (rec,)  # type: ignore[assignment]
    sent = _frames(40)
    for f in sent:
        a_in.send(HDR + f)
    Relay(PendingEvents(lambda: None), lambda end, exc: None).pump(src, dst)
    got = _received(b_out)
    lost = [f for _, f, reason in rec.frames if reason == "loss"]
    delivered = [f for _, f, reason in rec.frames if reason is None]
    assert 0 < len(lost) < 40
    assert delivered == got  # in order, as written to the peer
    assert sorted(lost + delivered) == sorted(sent)  # every frame once, as it arrived
    assert {name for name, _, _ in rec.frames} == {"a"}
    assert src.out.drops == {DropReason.LOSS: len(lost)}  # counted once, not twice
    assert src.impair is not None
    assert src.impair.model.stats.drops == {DropReason.LOSS: len(lost)}
    assert rec.flushes >= 1
    # the hook is gone after the batch: drops without a capture still count, shown to nobody
    src.captures = ()
    for f in sent:
        a_in.send(HDR + f)
    Relay(PendingEvents(lambda: None), lambda end, exc: None).pump(src, dst)
    assert src.out.drops[DropReason.LOSS] > len(lost)
    assert len(rec.frames) == 40


def test_queue_overflow_and_carrier_cut_are_shown(link: tuple[Any, Any, End, End]) -> None:
    a_in, b_out, src, dst = link
    _impair(src, Netem(limit=3, latency=10_000_000_000))  # nothing leaves for 10 s
    rec = _Recorder()
    src.captures = (rec,)  # type: ignore[assignment]
    for f in _frames(5):
        a_in.send(HDR + f)
    relay = Relay(PendingEvents(lambda: None), lambda end, exc: None)
    relay.pump(src, dst)
    assert [(f[0], reason) for _, f, reason in rec.frames] == [(3, "queue"), (4, "queue")]
    assert _received(b_out) == []
    # the carrier cut without impairments: refused at once, reason carrier
    src.impair.timer.close()  # type: ignore[union-attr]
    src.impair, src.cut = None, True
    a_in.send(HDR + bytes([9]) * 60)
    relay.pump(src, dst)
    assert rec.frames[-1] == ("a", bytes([9]) * 60, "carrier")
    assert src.out.drops == {DropReason.QUEUE: 2, DropReason.CARRIER: 1}
