"""The impairment model of one direction: netem's decisions (loss, duplication, corruption,
reordering, delay with jitter and distributions, rate pacing, slots) and its time-ordered queue.
Pure: it is given the time and the frames, and answers what leaves when; no clock, no I/O.

Randomness follows net/sched/sch_netem.c draw for draw: 32-bit uniform numbers, correlated ones
as get_crandom() makes them, the Gilbert-Elliott and 4-state Markov chains as loss_gilb_ell()
and loss_4state() step them, and delay tables scaled as tabledist() scales them. The tables for
normal, pareto and paretonormal are built here the way iproute2's generators build the .dist
files (4096 signed 16-bit entries, in units of sigma/8192), with the inverse normal CDF computed
exactly instead of by a search. With `seed N` a Random(N) drives every draw, so the same seed
and the same frames give the same decisions.

Where tapveth differs from netem on purpose (README, "Impairments"):
- without `reorder`, a frame never overtakes the one before it: its time is
  max(its own, the previous frame's), so jitter delays but does not reorder;
- the queue's default bound is in bytes, sized by time (netem.default_limit_bytes), and its
  overflow is its own drop reason, `queue`;
- rate pacing counts each segment of a GSO super-frame with its own headers, packet overhead
  and cells, as the wire would carry them, and hands a TCP super-frame on in pieces of at
  most PIECE_NS of wire time (core/offload.split_tcp), each when its segments have been paced;
- a GSO super-frame picked for corruption is dropped (reason `corrupt`), where netem would
  segment it and corrupt one segment, which the receiver then drops for its bad checksum.
"""

import heapq
import random
import struct
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from functools import cache

from tapveth.core import offload, vnet
from tapveth.core.netem import MAX_U32, Netem, default_limit_bytes
from tapveth.core.rules import DropReason

NETEM_DIST_SCALE = 8192
TABLE_SIZE = 4096  # entries in each iproute2 .dist table
ETH_HLEN = 14
_ETH_P_IP = 0x0800
_ETH_P_IPV6 = 0x86DD


# Why the impairments drop a frame: shown in `tapveth stats` next to veth's own reasons.
ImpairDrop = DropReason


def percent_u32(pct: float) -> int:
    """A percentage as netem's u32 probability (tc's set_percent: rint(p * 0xffffffff))."""
    return round(pct / 100.0 * MAX_U32)


# --- distribution tables ------------------------------------------------------------------------


def _clamp16(x: float) -> int:
    return max(-32768, min(32767, round(x)))


def _normal_entries() -> list[float]:
    # iproute2's normal.c fills table[rint(16384 * Phi(x))] = x and prints every 4th entry;
    # the x that lands in slot i is (to the search's step) Phi^-1((i + 0.5) / 16384).
    import statistics  # only here: the daemon does not pay for it until a table is built

    inv = statistics.NormalDist().inv_cdf
    return [inv((4 * k + 0.5) / 16384) for k in range(TABLE_SIZE)]


def _pareto_value(i: int) -> float:
    # pareto.c with a = 3: x = u^(-1/a) - 1.5, scaled by 4/3 (mean 0, sd about 1)
    x: float = (i / 65536) ** (-1 / 3.0) - 1.5
    return min(32767.0, x * (4 / 3) * NETEM_DIST_SCALE)


@cache
def dist_table(name: str) -> tuple[int, ...]:
    """The 4096-entry table netem would be given for `distribution NAME`."""
    if name == "normal":
        return tuple(_clamp16(x * NETEM_DIST_SCALE) for x in _normal_entries())
    if name == "pareto":
        return tuple(_clamp16(_pareto_value(65536 - 16 * k)) for k in range(TABLE_SIZE))
    if name == "paretonormal":
        # paretonormal.c: (normal + 3 * pareto) / 4, its pareto part taken at 65536 - 4i
        out = []
        for k, x in enumerate(_normal_entries()):
            norm = round(x * NETEM_DIST_SCALE)
            par = round(_pareto_value(65536 - 16 * k))
            out.append(_clamp16(int((norm + 3 * par) / 4)))
        return tuple(out)
    raise ValueError(f"no table for distribution {name!r}")


def _table_for(name: str | None) -> tuple[int, ...] | None:
    return None if name is None or name == "uniform" else dist_table(name)


# --- random sources -----------------------------------------------------------------------------


class CorrelatedRandom:
    """netem's get_crandom(): a uniform u32 mixed with the previous answer by rho."""

    __slots__ = ("_last", "_rand", "_rho")

    def __init__(self, rng: random.Random, correlation_pct: float) -> None:
        self._rand = rng.getrandbits
        self._rho = percent_u32(correlation_pct)
        self._last = self._rand(32) if self._rho else 0

    def next(self) -> int:
        value = self._rand(32)
        if not self._rho:
            return value
        rho = self._rho + 1
        answer = (value * ((1 << 32) - rho) + self._last * rho) >> 32
        self._last = answer
        return answer


def tabledist(mu: int, sigma: int, rnd: CorrelatedRandom, table: tuple[int, ...] | None) -> int:
    """netem's tabledist(): mu plus a draw of the distribution scaled to sigma (ns)."""
    if sigma == 0:
        return mu
    r = rnd.next()
    if table is None:
        return (r % (2 * sigma)) + mu - sigma
    t = table[r % len(table)]
    x = (sigma % NETEM_DIST_SCALE) * t
    x += NETEM_DIST_SCALE // 2 if x >= 0 else -(NETEM_DIST_SCALE // 2)
    # C division truncates toward zero
    return int(x / NETEM_DIST_SCALE) + (sigma // NETEM_DIST_SCALE) * t + mu


class _GoodBad:
    """Gilbert-Elliott (loss gemodel p r 1-h 1-k), stepped as loss_gilb_ell() steps it."""

    __slots__ = ("_bad", "_h", "_k1", "_p", "_r", "_rand")

    def __init__(self, rng: random.Random, p: float, r: float, one_h: float, one_k: float):
        self._rand = rng.getrandbits
        self._p, self._r = percent_u32(p), percent_u32(r)
        self._h = MAX_U32 - percent_u32(one_h)  # the kernel is given h; a loss is rnd > h
        self._k1 = percent_u32(one_k)
        self._bad = False

    def lost(self) -> bool:
        rand = self._rand
        if not self._bad:
            if rand(32) < self._p:
                self._bad = True
            return rand(32) < self._k1
        if rand(32) < self._r:
            self._bad = False
        return rand(32) > self._h


class _FourState:
    """The 4-state Markov chain (loss state p13 p31 p32 p23 p14), as loss_4state() steps it."""

    TX_GAP, TX_BURST, LOST_GAP, LOST_BURST = 1, 2, 3, 4
    __slots__ = ("_a1", "_a2", "_a3", "_a4", "_a5", "_rand", "state")

    def __init__(self, rng: random.Random, p: tuple[float, float, float, float, float]):
        self._rand = rng.getrandbits
        p13, p31, p32, p23, p14 = (percent_u32(x) for x in p)
        self._a1, self._a2, self._a3, self._a4, self._a5 = p13, p31, p32, p14, p23
        self.state = self.TX_GAP

    def lost(self) -> bool:
        rnd = self._rand(32)
        a1, a2, a3, a4, a5 = self._a1, self._a2, self._a3, self._a4, self._a5
        state = self.state
        if state == self.TX_GAP:
            if rnd < a4:
                self.state = self.LOST_GAP
                return True
            if a4 < rnd < a1 + a4:
                self.state = self.LOST_BURST
                return True
        elif state == self.TX_BURST:
            if rnd < a5:
                self.state = self.LOST_BURST
                return True
        elif state == self.LOST_BURST:
            if rnd < a3:
                self.state = self.TX_BURST
            elif a3 < rnd < a2 + a3:
                self.state = self.TX_GAP
            elif a2 + a3 < rnd:
                return True
        else:  # LOST_GAP: an isolated loss, back to the gap
            self.state = self.TX_GAP
        return False


# --- frame edits --------------------------------------------------------------------------------


def ecn_mark(buf: bytearray, l2: int) -> bool:
    """Set CE on an ECN-capable IPv4 or IPv6 packet, as INET_ECN_set_ce(); False when the packet
    is not ECN-capable (then netem drops it instead)."""
    if len(buf) < l2 + ETH_HLEN + 2:
        return False
    ethertype = (buf[l2 + 12] << 8) | buf[l2 + 13]
    ip = l2 + ETH_HLEN
    if ethertype == _ETH_P_IP and len(buf) >= ip + 20:
        tos = buf[ip + 1]
        if tos & 3 in (0, 3):
            return tos & 3 == 3
        buf[ip + 1] = tos | 3
        # RFC 1624 incremental update of the header checksum for the changed 16-bit word
        old = (buf[ip] << 8) | tos
        new = (buf[ip] << 8) | (tos | 3)
        (check,) = struct.unpack_from("!H", buf, ip + 10)
        total = (~check & 0xFFFF) + (~old & 0xFFFF) + new
        total = (total & 0xFFFF) + (total >> 16)
        total = (total & 0xFFFF) + (total >> 16)
        struct.pack_into("!H", buf, ip + 10, ~total & 0xFFFF)
        return True
    if ethertype == _ETH_P_IPV6 and len(buf) >= ip + 2:
        ecn = (buf[ip + 1] >> 4) & 3
        if ecn in (0, 3):
            return ecn == 3
        buf[ip + 1] |= 0x30
        return True
    return False


def wire_time_ns(length: int, s: Netem) -> int:
    """netem's packet_time_ns(): time to send `length` bytes at the rate, with the packet
    overhead and cell rounding."""
    length += s.packet_overhead
    if s.cell_size:
        cells = -(-length // s.cell_size) if length > 0 else 0
        length = cells * (s.cell_size + s.cell_overhead)
    return max(0, length) * 1_000_000_000 // s.rate


# A super-frame under a rate is handed on in pieces of at most this much wire time (one
# segment each where a segment takes longer): the first segments leave when the wire would
# have carried them, not when the last has been paced (held whole, a 64 KiB super-frame kept
# its first ACK back 52 ms at 10 Mbit/s and TCP fell 2% short of the rate), while a fast
# rate keeps its super-frames nearly whole and the relay its per-frame cost.
PIECE_NS = 250_000


def qdisc_size(length: int, gso_size: int, hdr_len: int) -> tuple[int, int]:
    """(packets, bytes) that a frame of `length` bytes counts for in the qdisc's statistics, as
    the kernel's qdisc_pkt_len() and bstats count a GSO super-frame: each segment one packet,
    each with its own headers."""
    if not gso_size or length <= hdr_len:
        return 1, length
    segs = -(-(length - hdr_len) // gso_size)
    return segs, length + (segs - 1) * hdr_len


def segments_time_ns(length: int, gso_size: int, hdr_len: int, s: Netem) -> int:
    """Wire time of a frame, each GSO segment counted with its own headers."""
    if not gso_size or length <= hdr_len:
        return wire_time_ns(length, s)
    payload = length - hdr_len
    full, rest = divmod(payload, gso_size)
    t = full * wire_time_ns(hdr_len + gso_size, s)
    if rest:
        t += wire_time_ns(hdr_len + rest, s)
    return t


# --- the model ----------------------------------------------------------------------------------


@dataclass(slots=True)
class QdiscStats:
    """What `tc -s qdisc show` prints for a qdisc, plus our drops by reason."""

    sent_packets: int = 0
    sent_bytes: int = 0
    dropped: int = 0
    overlimits: int = 0
    requeues: int = 0
    backlog_packets: int = 0
    backlog_bytes: int = 0
    duplicated: int = 0
    corrupted: int = 0
    ecn_marked: int = 0
    drops: dict[DropReason, int] = field(default_factory=dict)
    on_drop: Callable[[DropReason], None] | None = None  # also told of each drop (veth counters)

    def drop(self, reason: DropReason) -> None:
        self.dropped += 1
        self.drops[reason] = self.drops.get(reason, 0) + 1
        if self.on_drop is not None:
            self.on_drop(reason)

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name not in ("drops", "on_drop")
        }
        out["drops"] = {str(k): v for k, v in sorted(self.drops.items())}
        return out


class Impairment:
    """One direction's netem: `enqueue` frames as they arrive, `due` takes what may leave now,
    `next_time` says when to look again. Frames are bytes objects that start with the virtio
    header (vnet.HDR_LEN bytes), which the model leaves alone except to clear NEEDS_CSUM."""

    def __init__(
        self,
        settings: Netem,
        rng: random.Random | None = None,
        now: int = 0,
        on_drop: Callable[[DropReason], None] | None = None,
    ) -> None:
        self.stats = QdiscStats(on_drop=on_drop)
        # Entries carry a frame's size as the qdisc counts it (qdisc_size): reordered frames,
        # out before anything else, as (packets, bytes, frame); the others as (time, seq,
        # packets, bytes, frame).
        self._urgent: deque[tuple[int, int, bytes]] = deque()
        self._heap: list[tuple[int, int, int, int, bytes]] = []
        self._seq = 0
        self._last_time = 0  # latest time given to a frame still to leave (rate, order)
        self.settings = settings
        self._configure(settings, rng, now)

    def _configure(self, s: Netem, rng: random.Random | None, now: int) -> None:
        if s.seed is not None:
            rng = random.Random(s.seed)
        self._rng = rng if rng is not None else random.Random()
        r = self._rng
        self._delay_rnd = CorrelatedRandom(r, s.delay_corr)
        self._loss_rnd = CorrelatedRandom(r, s.loss_corr)
        self._dup_rnd = CorrelatedRandom(r, s.duplicate_corr)
        self._reorder_rnd = CorrelatedRandom(r, s.reorder_corr)
        self._corrupt_rnd = CorrelatedRandom(r, s.corrupt_corr)
        self._loss_p = percent_u32(s.loss)
        self._dup_p = percent_u32(s.duplicate)
        self._corrupt_p = percent_u32(s.corrupt)
        self._reorder_p = percent_u32(s.reorder)
        self._chain: _GoodBad | _FourState | None = None
        if s.loss_gemodel is not None:
            self._chain = _GoodBad(r, *s.loss_gemodel)
        elif s.loss_state is not None:
            self._chain = _FourState(r, s.loss_state)
        self._table = _table_for(s.distribution)
        self._slot_table = _table_for(s.slot_distribution)
        self._limit_bytes = default_limit_bytes(s) if s.limit is None else 0
        self._counter = 0  # frames since the last reordered one (netem's q->counter)
        self._slotted = s.slotted
        self._slot_next = now if s.slotted else 0
        self._slot_packets = s.slot_packets or MAX_U32
        self._slot_bytes = s.slot_bytes or MAX_U32

    def change(self, settings: Netem, now: int, rng: random.Random | None = None) -> None:
        """New settings in place (tc qdisc change): queued frames keep their times and order,
        later frames follow the new settings; the random state is kept unless a seed is given."""
        self.settings = settings
        self._configure(settings, rng if rng is not None else self._rng, now)

    # --- arrival -----------------------------------------------------------------------------

    def enqueue(
        self, now: int, frame: bytes | bytearray, gso_size: int = 0, hdr_len: int = 0
    ) -> int:
        """Take one frame that arrived at `now` (ns); returns how many copies were queued."""
        return self._enqueue(now, frame, gso_size, hdr_len, self._dup_p)

    def _enqueue(
        self, now: int, frame: bytes | bytearray, gso_size: int, hdr_len: int, dup_p: int
    ) -> int:
        s = self.settings
        stats = self.stats
        length = len(frame) - vnet.HDR_LEN
        segs, qlen = qdisc_size(length, gso_size, hdr_len) if gso_size else (1, length)
        count = 1
        if dup_p and dup_p >= self._dup_rnd.next():
            count += 1
        marked: bytearray | None = None
        if self._lost():
            if s.ecn:
                marked = bytearray(frame)
                if ecn_mark(marked, vnet.HDR_LEN):
                    stats.ecn_marked += 1
                else:
                    marked = None
                    count -= 1
            else:
                count -= 1
        if count == 0:
            stats.drop(ImpairDrop.LOSS)
            return 0
        original: bytes | bytearray = frame if marked is None else marked
        clone = bytes(original) if count > 1 else None  # taken before this frame is changed
        if self._corrupt_p and self._corrupt_p >= self._corrupt_rnd.next():
            edited = self._corrupt(original, gso_size)
            if edited is None:
                stats.drop(ImpairDrop.CORRUPT)
                original = b""
            else:
                original = edited
                stats.corrupted += 1
        if original and (
            (s.limit is not None and stats.backlog_packets >= s.limit)
            or (s.limit is None and stats.backlog_bytes + qlen > self._limit_bytes)
        ):
            stats.overlimits += 1
            stats.drop(ImpairDrop.QUEUE)
            if clone is not None:
                stats.drop(ImpairDrop.QUEUE)
            return 0
        queued = 0
        if clone is not None:
            # the copy makes its own way through the model, without being duplicated again,
            # before the original is queued, as netem's clone re-enters the root qdisc
            stats.duplicated += 1
            queued += self._enqueue(now, clone, gso_size, hdr_len, 0)
        if not original:
            return queued
        data = bytes(original)
        if s.gap == 0 or self._counter < s.gap - 1 or self._reorder_p < self._reorder_rnd.next():
            t = now + tabledist(s.latency, s.jitter, self._delay_rnd, self._table)
            if s.rate:
                if self._heap and self._last_time > t:
                    t = self._last_time
                if gso_size:
                    per = PIECE_NS // max(1, wire_time_ns(hdr_len + gso_size, s))
                    pieces = offload.split_tcp(data, max(1, per))
                    if pieces is not None and len(pieces) > 1:
                        self._enqueue_pieces(t, pieces, gso_size, hdr_len)
                        return queued + 1
                t += segments_time_ns(length, gso_size, hdr_len, s)
            stats.backlog_packets += 1
            stats.backlog_bytes += qlen
            if s.keeps_order and t < self._last_time:
                t = self._last_time
            if t > self._last_time or not self._heap:
                self._last_time = t
            self._counter += 1
            self._seq += 1
            heapq.heappush(self._heap, (t, self._seq, segs, qlen, data))
        else:
            # reordered: sent at once, ahead of every queued frame (netem's enqueue at head)
            stats.backlog_packets += 1
            stats.backlog_bytes += qlen
            self._counter = 0
            stats.requeues += 1
            self._urgent.append((segs, qlen, data))
        return queued + 1

    def _enqueue_pieces(self, t: int, pieces: list[bytes], gso_size: int, hdr_len: int) -> None:
        """Queue a super-frame's pieces under the rate, from t on, each leaving once its own
        segments' wire time has passed."""
        s = self.settings
        stats = self.stats
        heap = self._heap
        for piece in pieces:
            length = len(piece) - vnet.HDR_LEN
            t += segments_time_ns(length, gso_size, hdr_len, s)
            self._seq += 1
            segs, qlen = qdisc_size(length, gso_size, hdr_len)
            heapq.heappush(heap, (t, self._seq, segs, qlen, piece))
            stats.backlog_packets += 1
            stats.backlog_bytes += qlen
        self._last_time = t
        self._counter += 1

    def _lost(self) -> bool:
        if self._chain is not None:
            return self._chain.lost()
        return bool(self._loss_p) and self._loss_p >= self._loss_rnd.next()

    def _corrupt(self, frame: bytes | bytearray, gso_size: int) -> bytearray | None:
        if gso_size:
            return None
        buf = bytearray(frame)
        if not offload.complete_checksum(buf):
            return None
        start = vnet.HDR_LEN + ETH_HLEN
        if len(buf) <= start:
            return buf  # nothing past the Ethernet header: netem would hit the header; we spare it
        rand = self._rng.getrandbits
        index = start + rand(32) % (len(buf) - start)
        buf[index] ^= 1 << (rand(32) % 8)
        return buf

    # --- departure ---------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._urgent) + len(self._heap)

    def next_time(self) -> int | None:
        """When the head frame may leave (ns), or None with nothing queued."""
        if self._urgent:
            return self._slot_next
        if not self._heap:
            return None
        return max(self._heap[0][0], self._slot_next)

    def due(self, now: int) -> Iterator[bytes]:
        """The frames that may leave at `now`, in order; each is counted as sent."""
        stats = self.stats
        heap = self._heap
        while True:
            if self._urgent:
                t = now
                segs, length, data = self._urgent[0]
            elif heap and heap[0][0] <= now:
                t, _, segs, length, data = heap[0]
            else:
                return
            if self._slotted:
                if self._slot_next < t:
                    self._next_slot(now)  # netem draws a new slot when the head is younger
                if self._slot_next > now:
                    return
            if self._urgent:
                self._urgent.popleft()
            else:
                heapq.heappop(heap)
            stats.backlog_packets -= 1
            stats.backlog_bytes -= length
            stats.sent_packets += segs
            stats.sent_bytes += length
            if self._slotted:
                self._slot_packets -= 1
                self._slot_bytes -= length
                if self._slot_packets <= 0 or self._slot_bytes <= 0:
                    self._next_slot(now)
            if not heap:
                self._last_time = 0
            yield data

    def _next_slot(self, now: int) -> None:
        s = self.settings
        if s.slot_distribution is None:
            span = s.slot_max - s.slot_min
            delay = s.slot_min + ((self._rng.getrandbits(32) * span) >> 32)
        else:
            delay = tabledist(
                s.slot_delay, s.slot_jitter, CorrelatedRandom(self._rng, 0), self._slot_table
            )
        self._slot_next = now + max(0, delay)
        self._slot_packets = s.slot_packets or MAX_U32
        self._slot_bytes = s.slot_bytes or MAX_U32

    @property
    def limit_bytes(self) -> int:
        """The byte bound of the queue when no packet limit is set (0 with one)."""
        return self._limit_bytes

    def release_all(self) -> None:
        """Make every queued frame due now, in the order it would have left (for removing the
        impairments without losing what they hold)."""
        self._urgent.extend((entry[2], entry[3], entry[4]) for entry in sorted(self._heap))
        self._heap.clear()
        self._slotted = False
        self._last_time = 0

    def flush(self) -> list[bytes]:
        """Everything still queued, in order (for `qdisc del`: the frames are dropped)."""
        out = [data for _, _, data in self._urgent]
        out += [entry[4] for entry in sorted(self._heap)]
        self._urgent.clear()
        self._heap.clear()
        self.stats.backlog_packets = 0
        self.stats.backlog_bytes = 0
        self._last_time = 0
        return out
