"""BFD (RFC 5880) codec and state machine, driven by a fake clock over a simulated link."""

import itertools
import random
import struct

import pytest

from tapveth.core.bfd import SLOW_TX_US, BfdError, Diag, Packet, Session, State


def test_packet_round_trip() -> None:
    p = Packet(
        state=State.UP,
        diag=Diag.NEIGHBOR_DOWN,
        poll=True,
        detect_mult=5,
        my_disc=0x01020304,
        your_disc=7,
        desired_min_tx=300_000,
        required_min_rx=200_000,
    )
    raw = p.encode()
    assert len(raw) == 24
    assert raw[0] == (1 << 5) | 3  # version 1, diag 3
    assert raw[1] == (3 << 6) | 0x20  # state Up, Poll
    assert Packet.decode(raw) == p


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: b[:20], "shorter"),
        (lambda b: bytes([2 << 5]) + b[1:], "version"),
        (lambda b: b[:2] + b"\x00" + b[3:], "multiplier 0"),
        (lambda b: b[:1] + bytes([b[1] | 1]) + b[2:], "multipoint"),
        (lambda b: b[:4] + bytes(4) + b[8:], "my discriminator 0"),
        (lambda b: b[:3] + b"\x30" + b[4:], "length field"),
    ],
)
def test_decode_discards_what_rfc_5880_discards(mutate: object, message: str) -> None:
    raw = Packet(state=State.DOWN, my_disc=9).encode()
    assert callable(mutate)
    with pytest.raises(BfdError, match=message):
        Packet.decode(mutate(raw))


def test_your_discriminator_zero_only_when_down() -> None:
    raw = Packet(state=State.UP, my_disc=9, your_disc=0).encode()
    with pytest.raises(BfdError, match="your discriminator 0"):
        Packet.decode(raw)


class Link:
    """Two sessions and a one-way delay between them; `cut` drops everything."""

    def __init__(self, interval_us: int = 100_000, mult: int = 3, delay: float = 0.001) -> None:
        self.now = 0.0
        self.a = Session(1111, random.Random(1), self.now, interval_us, interval_us, mult)
        self.b = Session(2222, random.Random(2), self.now, interval_us, interval_us, mult)
        self.delay = delay
        self.cut = False
        self.flight: list[tuple[float, Session, bytes]] = []
        self.changes: list[tuple[float, str, State]] = []

    def run(self, until: float) -> None:
        while True:
            nxt = min(self.a.next_deadline(), self.b.next_deadline())
            if self.flight:
                nxt = min(nxt, min(f[0] for f in self.flight))
            if nxt > until:
                self.now = until
                return
            self.now = max(self.now, nxt)
            arrived = [f for f in self.flight if f[0] <= self.now]
            self.flight = [f for f in self.flight if f[0] > self.now]
            for _, to, data in arrived:
                if to.receive(data, self.now):
                    self.changes.append((self.now, "a" if to is self.a else "b", to.state))
            for me, other, name in ((self.a, self.b, "a"), (self.b, self.a, "b")):
                out, changed = me.due(self.now)
                if changed:
                    self.changes.append((self.now, name, me.state))
                if not self.cut:
                    self.flight += [(self.now + self.delay, other, p) for p in out]


def test_sessions_come_up_and_stay_up() -> None:
    link = Link()
    link.run(10.0)
    assert link.a.state is State.UP and link.b.state is State.UP
    first_up = max(t for t, _, s in link.changes if s is State.UP)
    assert first_up < 3.5  # three-way handshake at the slow (1 s) rate
    link.run(300.0)
    assert [c for c in link.changes if c[2] is not State.UP and c[0] > first_up] == []
    # Once up, both announce the fast rate; the Poll that announced it has ended.
    assert link.a.desired_min_tx == 100_000 and not link.a.poll and not link.b.poll
    assert link.a.detection_time() == pytest.approx(0.3)


def test_packets_never_faster_than_agreed() -> None:
    link = Link()
    sent: list[float] = []
    real_due = link.a.due

    def due(now: float) -> tuple[list[bytes], bool]:
        out, changed = real_due(now)
        for p in out:
            if not Packet.decode(p).final:
                sent.append(now)
        return out, changed

    link.a.due = due  # type: ignore[method-assign]
    link.run(60.0)
    gaps = [b - a for a, b in itertools.pairwise(sent[20:])]
    assert min(gaps) >= 0.75 * 0.1 - 1e-9  # 6.8.7: at most 25% jitter below the interval
    assert max(gaps) <= 0.1 + 1e-9


def test_cut_link_times_out_within_detection_time() -> None:
    link = Link()
    link.run(10.0)
    link.cut = True
    t0 = link.now
    link.run(t0 + 5.0)
    downs = [(t, n) for t, n, s in link.changes if s is State.DOWN and t > t0]
    assert {n for _, n in downs} == {"a", "b"}
    assert all(t - t0 <= 0.3 + 1e-9 for t, _ in downs)  # detect mult x interval
    assert link.a.diag is Diag.TIME_EXPIRED and link.a.remote_disc == 0
    link.cut = False
    link.run(t0 + 20.0)
    assert link.a.up and link.b.up


def test_admin_down_is_signalled_and_recovers() -> None:
    link = Link()
    link.run(10.0)
    t0 = link.now
    assert link.b.set_admin_down(True, t0)
    link.run(t0 + 2.0)
    assert link.b.state is State.ADMIN_DOWN and link.b.diag is Diag.ADMIN_DOWN
    assert link.a.state is State.DOWN and link.a.diag is Diag.NEIGHBOR_DOWN
    went_down = min(t for t, n, s in link.changes if n == "a" and t > t0)
    assert went_down - t0 <= 0.1 + 0.002  # the next periodic packet says AdminDown
    assert link.b.set_admin_down(False, link.now)
    link.run(link.now + 10.0)
    assert link.a.up and link.b.up


def test_poll_is_answered_with_final() -> None:
    s = Session(5, random.Random(0), 0.0)
    s.due(0.0)
    poll = Packet(state=State.DOWN, poll=True, my_disc=77).encode()
    s.receive(poll, 0.01)
    out, _ = s.due(0.01)
    finals = [Packet.decode(p) for p in out if Packet.decode(p).final]
    assert len(finals) == 1 and finals[0].your_disc == 77 and not finals[0].poll


def test_foreign_discriminator_and_auth_discarded() -> None:
    s = Session(5, random.Random(0), 0.0)
    with pytest.raises(BfdError, match="not ours"):
        s.receive(Packet(state=State.INIT, my_disc=3, your_disc=6).encode(), 0.0)
    raw = bytearray(Packet(state=State.DOWN, my_disc=3).encode())
    raw[1] |= 0x04  # A bit
    raw[3] = 26
    with pytest.raises(BfdError, match="authentication"):
        s.receive(bytes(raw) + b"\x01\x02", 0.0)
    assert s.received == 0


def test_slow_rate_until_up() -> None:
    s = Session(5, random.Random(0), 0.0, tx_interval_us=50_000)
    out, _ = s.due(0.0)
    assert Packet.decode(out[0]).desired_min_tx == SLOW_TX_US
    assert s.tx_interval() == 1.0


def test_remote_asking_for_no_packets_gets_none() -> None:
    s = Session(5, random.Random(0), 0.0)
    data = bytearray(Packet(state=State.DOWN, my_disc=3).encode())
    struct.pack_into("!I", data, 16, 0)  # Required Min RX 0
    s.receive(bytes(data), 0.0)
    out, _ = s.due(5.0)
    assert out == []
