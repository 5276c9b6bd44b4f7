"""BFD (RFC 5880), asynchronous mode, without I/O: the control packet codec and one session's
state machine. Time is passed in (`now`, seconds on a monotonic clock) and jitter comes from a
random source the caller gives, so tests drive it with a fake clock.

No authentication, no demand mode, no echo function: packets asking for them are discarded or
answered as RFC 5880 says for a system that does not support them.
"""

import random
import struct
from dataclasses import dataclass
from enum import IntEnum

VERSION = 1
LENGTH = 24  # a control packet without authentication section
SLOW_TX_US = 1_000_000  # RFC 5880 6.8.3: at least 1 s while the session is not Up


class State(IntEnum):
    ADMIN_DOWN = 0
    DOWN = 1
    INIT = 2
    UP = 3


class Diag(IntEnum):
    NONE = 0
    TIME_EXPIRED = 1  # Control Detection Time Expired
    ECHO_FAILED = 2
    NEIGHBOR_DOWN = 3  # Neighbor Signaled Session Down
    FORWARDING_RESET = 4
    PATH_DOWN = 5
    CONCAT_PATH_DOWN = 6
    ADMIN_DOWN = 7  # Administratively Down
    REVERSE_CONCAT_PATH_DOWN = 8


class BfdError(ValueError):
    """A received packet that RFC 5880 6.8.6 says to discard; the message says which rule."""


_FMT = "!BBBBIIIII"
_P, _F, _C, _A, _D, _M = 0x20, 0x10, 0x08, 0x04, 0x02, 0x01


@dataclass(frozen=True, slots=True)
class Packet:
    """A BFD control packet (RFC 5880 section 4.1); intervals in microseconds."""

    state: State
    diag: Diag = Diag.NONE
    poll: bool = False
    final: bool = False
    detect_mult: int = 3
    my_disc: int = 0
    your_disc: int = 0
    desired_min_tx: int = SLOW_TX_US
    required_min_rx: int = SLOW_TX_US
    required_min_echo_rx: int = 0
    control_plane_independent: bool = False
    auth: bool = False
    demand: bool = False
    multipoint: bool = False

    def encode(self) -> bytes:
        flags = (self.state << 6) | (_P if self.poll else 0) | (_F if self.final else 0)
        flags |= _C if self.control_plane_independent else 0
        flags |= (_A if self.auth else 0) | (_D if self.demand else 0)
        flags |= _M if self.multipoint else 0
        return struct.pack(
            _FMT,
            (VERSION << 5) | self.diag,
            flags,
            self.detect_mult,
            LENGTH,
            self.my_disc,
            self.your_disc,
            self.desired_min_tx,
            self.required_min_rx,
            self.required_min_echo_rx,
        )

    @classmethod
    def decode(cls, data: bytes) -> "Packet":
        """Parse a packet and apply the checks of RFC 5880 6.8.6 that need no session."""
        if len(data) < LENGTH:
            raise BfdError(f"{len(data)} bytes: shorter than a control packet")
        vd, flags, mult, length, mine, yours, tx, rx, echo = struct.unpack_from(_FMT, data)
        if vd >> 5 != VERSION:
            raise BfdError(f"version {vd >> 5}")
        auth = bool(flags & _A)
        if length < (LENGTH + 2 if auth else LENGTH) or length > len(data):
            raise BfdError(f"length field {length} for {len(data)} bytes")
        if mult == 0:
            raise BfdError("detect multiplier 0")
        if flags & _M:
            raise BfdError("multipoint bit set")
        if mine == 0:
            raise BfdError("my discriminator 0")
        state = State(flags >> 6)
        if yours == 0 and state not in (State.DOWN, State.ADMIN_DOWN):
            raise BfdError(f"your discriminator 0 in state {state.name}")
        diag = vd & 0x1F
        return cls(
            state=state,
            diag=Diag(diag) if diag <= max(Diag) else Diag.NONE,
            poll=bool(flags & _P),
            final=bool(flags & _F),
            detect_mult=mult,
            my_disc=mine,
            your_disc=yours,
            desired_min_tx=tx,
            required_min_rx=rx,
            required_min_echo_rx=echo,
            control_plane_independent=bool(flags & _C),
            auth=auth,
            demand=bool(flags & _D),
            multipoint=False,
        )


class Session:
    """One BFD session in asynchronous mode (RFC 5880 section 6.8).

    The caller delivers received packets with receive(), asks for due packets with due(now)
    (periodic transmissions, Final replies, detection time-outs) and sleeps until
    next_deadline(). Both return whether the session's state changed.
    """

    def __init__(
        self,
        my_disc: int,
        rng: random.Random,
        now: float,
        tx_interval_us: int = 300_000,
        rx_interval_us: int = 300_000,
        detect_mult: int = 3,
    ) -> None:
        if my_disc == 0:
            raise ValueError("a local discriminator must be non-zero")
        self.state = State.DOWN
        self.remote_state = State.DOWN
        self.my_disc = my_disc
        self.remote_disc = 0
        self.diag = Diag.NONE
        self.detect_mult = detect_mult
        self.up_tx_us = tx_interval_us  # DesiredMinTx once Up
        self.desired_min_tx = SLOW_TX_US
        self.required_min_rx = rx_interval_us
        self.remote_min_rx = 1  # RFC 5880 6.8.1: initialised to 1 (microsecond)
        self.remote_desired_min_tx = 0
        self.remote_detect_mult = 0
        self.poll = False  # a Poll Sequence is under way
        self._final_due = False
        self._rng = rng
        self._last_rx: float | None = None
        self._next_tx = now  # the first packet goes out at once
        self.received = 0
        self.sent = 0

    @property
    def up(self) -> bool:
        return self.state is State.UP

    # -- timers ------------------------------------------------------------------------------

    def tx_interval(self) -> float:
        """The interval between periodic packets, before jitter (6.8.7), in seconds."""
        return max(self.desired_min_tx, self.remote_min_rx) / 1e6

    def detection_time(self) -> float:
        """How long without a packet before the session goes down (6.8.4), in seconds."""
        return self.remote_detect_mult * max(self.required_min_rx, self.remote_desired_min_tx) / 1e6

    def next_deadline(self) -> float:
        at = self._next_tx
        if self._last_rx is not None and self.state in (State.INIT, State.UP):
            at = min(at, self._last_rx + self.detection_time())
        return at

    def _schedule(self, now: float) -> None:
        # 6.8.7: jitter of 0-25% below the interval; 10-25% when the multiplier is 1.
        low = 0.75
        high = 0.90 if self.detect_mult == 1 else 1.0
        self._next_tx = now + self.tx_interval() * self._rng.uniform(low, high)

    # -- events ------------------------------------------------------------------------------

    def due(self, now: float) -> tuple[list[bytes], bool]:
        """Packets to send now, and whether the state changed (a detection time-out)."""
        changed = False
        if (
            self._last_rx is not None
            and self.state in (State.INIT, State.UP)
            and now >= self._last_rx + self.detection_time()
        ):
            self._set_state(State.DOWN, Diag.TIME_EXPIRED, now)
            self.remote_disc = 0
            self.remote_state = State.DOWN
            self._last_rx = None
            changed = True
        out: list[bytes] = []
        if self._final_due:
            # 6.8.7: a Final is sent at once, whatever the transmission timer says.
            self._final_due = False
            out.append(self._packet(final=True))
        # 6.8.7: no periodic packets while the remote asks for none (RequiredMinRx 0).
        if now >= self._next_tx:
            if self.remote_min_rx != 0:
                out.append(self._packet(final=False))
            self._schedule(now)
        self.sent += len(out)
        return out, changed

    def receive(self, data: bytes, now: float) -> bool:
        """Apply a received control packet (6.8.6); True when the state changed. Raises
        BfdError for a packet to discard."""
        pkt = Packet.decode(data)
        if pkt.your_disc != 0 and pkt.your_disc != self.my_disc:
            raise BfdError(f"your discriminator {pkt.your_disc} is not ours")
        if pkt.auth:
            raise BfdError("authentication asked for, and none is configured")
        self.received += 1
        self.remote_disc = pkt.my_disc
        self.remote_state = pkt.state
        self.remote_desired_min_tx = pkt.desired_min_tx
        self.remote_detect_mult = pkt.detect_mult
        slower = pkt.required_min_rx > self.remote_min_rx
        self.remote_min_rx = pkt.required_min_rx
        if slower:
            self._schedule(now)  # 6.8.3: never send faster than the remote now accepts
        if pkt.final and self.poll:
            self.poll = False
        self._last_rx = now
        if self.state is State.ADMIN_DOWN:
            return False
        changed = False
        if pkt.state is State.ADMIN_DOWN:
            if self.state is not State.DOWN:
                self._set_state(State.DOWN, Diag.NEIGHBOR_DOWN, now)
                changed = True
        elif self.state is State.DOWN:
            if pkt.state is State.DOWN:
                self._set_state(State.INIT, Diag.NONE, now)
                changed = True
            elif pkt.state is State.INIT:
                self._set_state(State.UP, Diag.NONE, now)
                changed = True
        elif self.state is State.INIT:
            if pkt.state in (State.INIT, State.UP):
                self._set_state(State.UP, Diag.NONE, now)
                changed = True
        elif pkt.state is State.DOWN:  # local Up
            self._set_state(State.DOWN, Diag.NEIGHBOR_DOWN, now)
            changed = True
        if pkt.poll:
            self._final_due = True
        return changed

    def set_admin_down(self, down: bool, now: float) -> bool:
        """The local end was set down (or up again): AdminDown with diagnostic 7 is what the
        far side is told (6.8.16). True when the state changed."""
        if down and self.state is not State.ADMIN_DOWN:
            self._set_state(State.ADMIN_DOWN, Diag.ADMIN_DOWN, now)
            return True
        if not down and self.state is State.ADMIN_DOWN:
            self._set_state(State.DOWN, Diag.NONE, now)
            return True
        return False

    def _set_state(self, state: State, diag: Diag, now: float) -> None:
        self.state = state
        self.diag = diag
        # 6.8.3: 1 s at least while not Up; the faster rate once Up, announced by a Poll.
        want = self.up_tx_us if state is State.UP else max(self.up_tx_us, SLOW_TX_US)
        if want != self.desired_min_tx:
            faster = want < self.desired_min_tx
            self.desired_min_tx = want
            if state is State.UP:
                self.poll = True
            if faster:
                # The far side times us out on the rate we now announce: a packet sent on the
                # old, slower schedule would come too late.
                self._next_tx = min(self._next_tx, now + self.tx_interval() * 0.75)

    def _packet(self, final: bool) -> bytes:
        return Packet(
            state=self.state,
            diag=self.diag,
            poll=self.poll and not final,
            final=final,
            detect_mult=self.detect_mult,
            my_disc=self.my_disc,
            your_disc=self.remote_disc,
            desired_min_tx=self.desired_min_tx,
            required_min_rx=self.required_min_rx,
            required_min_echo_rx=0,
        ).encode()
