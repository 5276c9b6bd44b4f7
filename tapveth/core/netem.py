"""The impairment grammar: the words of tc-netem(8) (`tc qdisc add dev X root netem WORDS`) to a
frozen settings object and back. Pure: raises NetemError, touches nothing.

Units are tc's: times take s/sec/secs, ms/msec/msecs, us/usec/usecs, ns/nsec/nsecs (a bare
number is microseconds); rates take bit, kbit, mbit, gbit, tbit and their IEC forms (kibit...),
bps, kbps, mbps, gbps, tbps (bytes per second) and kibps..., case-insensitive (a bare number is
bits per second); probabilities are percentages, with or without '%' ("loss 0.5" is 0.5%), as
tc's parse_percent() reads them. Keywords may be abbreviated as tc allows ("dup" for duplicate),
the first keyword in tc's order winning.
"""

import math
import re
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

DISTRIBUTIONS = ("uniform", "normal", "pareto", "paretonormal")
# netem's fifo is 1000 packets by default; ours is sized by time instead (see default_limit_bytes).
MAX_U32 = 0xFFFFFFFF
MAX_S32 = 0x7FFFFFFF


class NetemError(ValueError):
    """A user mistake in an impairment line; the message is one line that says how to fix it."""


@dataclass(frozen=True, slots=True)
class Netem:
    """One direction's impairments, in tc-netem's terms. Times are ns, probabilities percent
    (0..100), the rate bytes per second (0: no rate)."""

    limit: int | None = None  # packets; None: sized by time (default_limit_bytes)
    latency: int = 0
    jitter: int = 0
    delay_corr: float = 0.0
    distribution: str | None = None  # None: uniform, as netem without a table
    loss: float = 0.0  # loss random
    loss_corr: float = 0.0
    loss_state: tuple[float, float, float, float, float] | None = None  # p13 p31 p32 p23 p14
    loss_gemodel: tuple[float, float, float, float] | None = None  # p r 1-h 1-k
    ecn: bool = False
    corrupt: float = 0.0
    corrupt_corr: float = 0.0
    duplicate: float = 0.0
    duplicate_corr: float = 0.0
    reorder: float = 0.0
    reorder_corr: float = 0.0
    gap: int = 0
    rate: int = 0
    packet_overhead: int = 0
    cell_size: int = 0
    cell_overhead: int = 0
    slot_min: int = 0
    slot_max: int = 0
    slot_distribution: str | None = None  # slot distribution DIST DELAY JITTER
    slot_delay: int = 0
    slot_jitter: int = 0
    slot_packets: int = 0  # 0: no cap
    slot_bytes: int = 0
    seed: int | None = None

    @property
    def slotted(self) -> bool:
        return bool(self.slot_min or self.slot_max or self.slot_jitter or self.slot_delay)

    @property
    def loses(self) -> bool:
        return bool(self.loss) or self.loss_state is not None or self.loss_gemodel is not None

    @property
    def keeps_order(self) -> bool:
        """Our difference from netem: jitter never reorders unless `reorder` is asked for."""
        return not self.reorder

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> "Netem":
        """The inverse of to_dict, checked as strictly as a parsed line (it comes from a socket
        or a file)."""
        if not isinstance(data, dict):
            raise NetemError("netem settings must be an object")
        known = {f.name: f for f in fields(cls)}
        unknown = set(data) - set(known)
        if unknown:
            raise NetemError(f"unknown netem field(s): {', '.join(sorted(unknown))}")
        values: dict[str, Any] = {}
        for name, value in data.items():
            default = getattr(cls(), name)
            if name in ("loss_state", "loss_gemodel"):
                want = 5 if name == "loss_state" else 4
                if value is not None:
                    if not isinstance(value, list | tuple) or len(value) != want:
                        raise NetemError(f"{name} must be a list of {want} numbers")
                    value = tuple(_check_number(name, v, 0.0, 100.0) for v in value)
            elif name in ("distribution", "slot_distribution"):
                if value is not None and value not in DISTRIBUTIONS:
                    raise NetemError(f"{name} must be one of {', '.join(DISTRIBUTIONS)}")
            elif name in ("limit", "seed"):
                if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                    raise NetemError(f"{name} must be an integer")
            elif isinstance(default, bool):
                if not isinstance(value, bool):
                    raise NetemError(f"{name} must be true or false")
            elif isinstance(default, float):
                value = _check_number(name, value, 0.0, 100.0)
            elif not isinstance(value, int) or isinstance(value, bool):
                raise NetemError(f"{name} must be an integer")
            values[name] = value
        return check(cls(**values))

    def words(self) -> list[str]:
        """The settings as tc words (what `parse` reads back to the same settings)."""
        return describe(self).split()

    def __str__(self) -> str:
        return describe(self)


def _check_number(name: str, value: Any, low: float, high: float) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool) or not low <= value <= high:
        raise NetemError(f"{name} must be a number from {low:g} to {high:g}")
    return float(value)


# --- units -----------------------------------------------------------------------------------

_NUMBER = re.compile(r"[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?")
_TIME_UNITS = {
    "": 1_000,
    "s": 1_000_000_000,
    "sec": 1_000_000_000,
    "secs": 1_000_000_000,
    "ms": 1_000_000,
    "msec": 1_000_000,
    "msecs": 1_000_000,
    "us": 1_000,
    "usec": 1_000,
    "usecs": 1_000,
    "ns": 1,
    "nsec": 1,
    "nsecs": 1,
}
# Rate units in bits per second, as tc(8) lists them; matched case-insensitively like tc.
_RATE_UNITS: dict[str, float] = {"": 1, "bit": 1, "bps": 8}
for _i, (_si, _iec) in enumerate((("k", "ki"), ("m", "mi"), ("g", "gi"), ("t", "ti")), start=1):
    _RATE_UNITS[_si + "bit"] = 1000.0**_i
    _RATE_UNITS[_iec + "bit"] = 1024.0**_i
    _RATE_UNITS[_si + "bps"] = 8 * 1000.0**_i
    _RATE_UNITS[_iec + "bps"] = 8 * 1024.0**_i


def _split(word: str) -> tuple[float, str] | None:
    m = _NUMBER.match(word)
    if m is None:
        return None
    return float(m.group()), word[m.end() :].lower()


def parse_time(word: str, what: str) -> int:
    """A tc time to nanoseconds."""
    parts = _split(word)
    if parts is None or parts[1] not in _TIME_UNITS:
        raise NetemError(f'{what} "{word}" is not a time (e.g. 40ms, 500us, 1.5s)')
    ns = parts[0] * _TIME_UNITS[parts[1]]
    if ns > 2**63 - 1:
        raise NetemError(f'{what} "{word}" is too large')
    return round(ns)


def parse_rate(word: str, what: str = "rate") -> int:
    """A tc rate to bytes per second."""
    parts = _split(word)
    if parts is None or parts[1] not in _RATE_UNITS:
        raise NetemError(f'{what} "{word}" is not a rate (e.g. 50mbit, 1gbit, 100kbps)')
    bps = parts[0] * _RATE_UNITS[parts[1]] / 8
    if bps < 1 or bps >= 2**64:
        raise NetemError(f'{what} "{word}" is out of range (1 byte/s to 2^64-1 bytes/s)')
    return int(bps)


def parse_percent(word: str, what: str) -> float:
    """A tc probability: '30%' or '30' are both 30%."""
    text = word[:-1] if word.endswith("%") else word
    m = _NUMBER.fullmatch(text)
    if m is None:
        raise NetemError(f'{what} "{word}" is not a percentage (e.g. 1%, 0.5%, 30)')
    value = float(text)
    if not 0.0 <= value <= 100.0:
        raise NetemError(f'{what} "{word}" is out of range (0% to 100%)')
    return value


def _parse_int(word: str, what: str, low: int, high: int) -> int:
    try:
        value = int(word, 0)
    except ValueError:
        raise NetemError(f'{what} "{word}" is not an integer') from None
    if not low <= value <= high:
        raise NetemError(f'{what} "{word}" is out of range ({low}..{high})')
    return value


def _parse_size(word: str, what: str) -> int:
    """A tc size (bytes; k/m/g and kb/mb/gb are powers of 1024, as tc's get_size)."""
    parts = _split(word)
    units = {"": 1, "b": 1, "k": 1024, "kb": 1024, "m": 1024**2, "mb": 1024**2, "g": 1024**3}
    units["gb"] = 1024**3
    if parts is None or parts[1] not in units:
        raise NetemError(f'{what} "{word}" is not a size (e.g. 1500, 64k)')
    value = int(parts[0] * units[parts[1]])
    if value > MAX_S32:
        raise NetemError(f'{what} "{word}" is too large')
    return value


# --- the grammar ------------------------------------------------------------------------------

# tc's if-chain order: an abbreviation means the first keyword it is a prefix of.
_KEYWORDS = (
    "limit",
    "latency",
    "delay",
    "loss",
    "drop",
    "ecn",
    "reorder",
    "corrupt",
    "gap",
    "duplicate",
    "distribution",
    "rate",
    "slot",
    "seed",
)


def _keyword(word: str) -> str | None:
    for keyword in _KEYWORDS:
        if word and keyword.startswith(word):
            return keyword
    return None


def _is_number(words: list[str], i: int) -> bool:
    """tc's NEXT_IS_NUMBER(): the next word starts with a digit."""
    return i < len(words) and words[i][:1].isdigit()


def _is_signed(words: list[str], i: int) -> bool:
    return i < len(words) and (words[i][:1].isdigit() or words[i][:1] == "-")


class _Words:
    def __init__(self, words: list[str]) -> None:
        self.words = words
        self.i = 0

    def next(self, what: str) -> str:
        if self.i >= len(self.words):
            raise NetemError(f"netem: {what} is missing")
        word = self.words[self.i]
        self.i += 1
        return word

    def number_follows(self) -> bool:
        return _is_number(self.words, self.i)

    def signed_follows(self) -> bool:
        return _is_signed(self.words, self.i)


def parse(words: list[str]) -> Netem:
    """The words after `netem` to settings; every mistake is a NetemError of one line."""
    w = _Words(list(words))
    v: dict[str, Any] = {}
    seen_loss = False
    while w.i < len(w.words):
        word = w.next("option")
        key = _keyword(word)
        if key is None:
            raise NetemError(
                f'netem: "{word}" is not an option (limit, delay, distribution, loss, corrupt, '
                "duplicate, reorder, gap, rate, slot, ecn, seed)"
            )
        if key == "limit":
            v["limit"] = _parse_int(w.next("limit PACKETS"), "limit", 1, MAX_U32)
        elif key in ("latency", "delay"):
            v["latency"] = parse_time(w.next("delay TIME"), "delay")
            if w.number_follows():
                v["jitter"] = parse_time(w.next("jitter"), "jitter")
                if v["jitter"] > MAX_S32:
                    raise NetemError("netem: jitter is too large (at most 2.1s)")
                if w.number_follows():
                    v["delay_corr"] = parse_percent(w.next("correlation"), "delay correlation")
        elif key in ("loss", "drop"):
            if seen_loss:
                raise NetemError("netem: loss is given twice")
            seen_loss = True
            _parse_loss(w, v)
        elif key == "ecn":
            v["ecn"] = True
        elif key == "reorder":
            v["reorder"] = parse_percent(w.next("reorder PERCENT"), "reorder")
            if w.number_follows():
                v["reorder_corr"] = parse_percent(w.next("correlation"), "reorder correlation")
        elif key == "corrupt":
            v["corrupt"] = parse_percent(w.next("corrupt PERCENT"), "corrupt")
            if w.number_follows():
                v["corrupt_corr"] = parse_percent(w.next("correlation"), "corrupt correlation")
        elif key == "gap":
            v["gap"] = _parse_int(w.next("gap DISTANCE"), "gap", 1, MAX_U32)
        elif key == "duplicate":
            v["duplicate"] = parse_percent(w.next("duplicate PERCENT"), "duplicate")
            if w.number_follows():
                v["duplicate_corr"] = parse_percent(w.next("correlation"), "duplicate correlation")
        elif key == "distribution":
            v["distribution"] = _parse_distribution(w.next("distribution NAME"))
        elif key == "rate":
            _parse_rate(w, v)
        elif key == "slot":
            _parse_slot(w, v)
        elif key == "seed":
            v["seed"] = _parse_int(w.next("seed N"), "seed", 0, 2**64 - 1)
    return check(Netem(**v))


def _parse_distribution(word: str) -> str:
    if word not in DISTRIBUTIONS:
        raise NetemError(f'netem: distribution "{word}" is not one of {", ".join(DISTRIBUTIONS)}')
    return word


def _parse_loss(w: _Words, v: dict[str, Any]) -> None:
    model = w.next("loss PERCENT (or loss random|state|gemodel ...)")
    if model[:1].isdigit() or model == "random":
        pct = w.next("loss random PERCENT") if model == "random" else model
        v["loss"] = parse_percent(pct, "loss")
        if w.number_follows():
            v["loss_corr"] = parse_percent(w.next("correlation"), "loss correlation")
    elif model == "state":
        p13 = parse_percent(w.next("loss state P13"), "loss state p13")
        # tc's defaults: p31 = 1 - p13, p32 = 0, p23 = 100%, p14 = 0
        params = [p13, 100.0 - p13, 0.0, 100.0, 0.0]
        for index, name in enumerate(("p31", "p32", "p23", "p14"), start=1):
            if not w.number_follows():
                break
            params[index] = parse_percent(w.next(name), f"loss state {name}")
        v["loss_state"] = tuple(params)
    elif model == "gemodel":
        p = parse_percent(w.next("loss gemodel PERCENT"), "loss gemodel p")
        # tc's defaults: r = 100%, 1-h = 100% (every frame lost in the bad state), 1-k = 0
        params = [p, 100.0, 100.0, 0.0]
        for index, name in enumerate(("r", "1-h", "1-k"), start=1):
            if not w.number_follows():
                break
            params[index] = parse_percent(w.next(name), f"loss gemodel {name}")
        v["loss_gemodel"] = tuple(params)
    else:
        raise NetemError(f'netem: loss "{model}" is not a percentage nor random, state or gemodel')


def _parse_rate(w: _Words, v: dict[str, Any]) -> None:
    word = w.next("rate RATE")
    if word.endswith("%"):
        raise NetemError("netem: a rate as a percentage of the link speed is not supported")
    v["rate"] = parse_rate(word)
    if w.signed_follows():
        v["packet_overhead"] = _parse_int(w.next("overhead"), "packet overhead", -MAX_S32, MAX_S32)
        if w.number_follows():
            v["cell_size"] = _parse_int(w.next("cellsize"), "cell size", 0, MAX_U32)
            if w.signed_follows():
                v["cell_overhead"] = _parse_int(
                    w.next("celloverhead"), "cell overhead", -MAX_S32, MAX_S32
                )


def _parse_slot(w: _Words, v: dict[str, Any]) -> None:
    if w.number_follows():
        v["slot_min"] = parse_time(w.next("slot MIN_DELAY"), "slot min delay")
        v["slot_max"] = v["slot_min"]
        if w.number_follows():
            v["slot_max"] = parse_time(w.next("slot MAX_DELAY"), "slot max delay")
            if v["slot_max"] < v["slot_min"]:
                raise NetemError("netem: slot max delay is shorter than the min delay")
    else:
        word = w.next("slot MIN_DELAY or slot distribution")
        if word != "distribution":
            raise NetemError(f'netem: slot "{word}" is neither a time nor "distribution"')
        v["slot_distribution"] = _parse_distribution(w.next("slot distribution NAME"))
        v["slot_delay"] = parse_time(w.next("slot distribution DELAY"), "slot delay")
        v["slot_jitter"] = parse_time(w.next("slot distribution JITTER"), "slot jitter")
        if v["slot_jitter"] <= 0:
            raise NetemError("netem: slot jitter must be positive")
        v["slot_jitter"] = min(v["slot_jitter"], MAX_S32)
    for key, what in (("packets", "slot_packets"), ("bytes", "slot_bytes")):
        if w.i < len(w.words) and w.words[w.i] == key:
            w.next(key)
            word = w.next(f"slot {key} N")
            v[what] = (
                _parse_int(word, f"slot {key}", 1, MAX_S32)
                if key == "packets"
                else _parse_size(word, "slot bytes")
            )
            if v[what] <= 0:
                raise NetemError(f"netem: slot {key} must be positive")


def check(s: Netem) -> Netem:
    """The cross-option rules tc applies after reading a line."""
    if s.reorder and s.latency == 0:
        raise NetemError("netem: reordering is not possible without some delay")
    if s.gap and not s.reorder:
        raise NetemError("netem: gap given without a reorder probability")
    if s.reorder and not s.gap:
        s = replace(s, gap=1)
    if s.ecn and not s.loses:
        raise NetemError("netem: ecn requested without a loss model")
    if s.distribution is not None and (s.latency == 0 or s.jitter == 0):
        raise NetemError("netem: distribution given without a delay and a jitter")
    if s.loss and (s.loss_state is not None or s.loss_gemodel is not None):
        raise NetemError("netem: only one loss model at a time")
    if s.cell_size and s.cell_size + s.cell_overhead <= 0:
        raise NetemError("netem: cell size plus cell overhead must be positive")
    if (s.packet_overhead or s.cell_size or s.cell_overhead) and not s.rate:
        raise NetemError("netem: packet overhead and cells need a rate")
    if (s.slot_packets or s.slot_bytes) and not s.slotted:
        raise NetemError("netem: slot packets/bytes need a slot delay")
    return s


# --- printing ---------------------------------------------------------------------------------


def format_time(ns: int) -> str:
    """As tc's sprint_time64: the largest unit that keeps the number readable."""
    if ns >= 1_000_000_000:
        return _trim(ns / 1e9) + "s"
    if ns >= 1_000_000:
        return _trim(ns / 1e6) + "ms"
    if ns >= 1_000:
        return _trim(ns / 1e3) + "us"
    return f"{ns}ns"


def _trim(x: float) -> str:
    return f"{x:.3f}".rstrip("0").rstrip(".")


def format_rate(bytes_per_s: int) -> str:
    """As tc's sprint_rate: bits per second with the largest SI prefix that divides evenly-ish."""
    bits = bytes_per_s * 8
    for unit, scale in (("Tbit", 10**12), ("Gbit", 10**9), ("Mbit", 10**6), ("Kbit", 10**3)):
        if bits >= scale:
            return _trim(bits / scale) + unit
    return f"{bits}bit"


def format_percent(pct: float) -> str:
    return f"{pct:g}%"


def format_size(n: int) -> str:
    """As tc's sprint_size: Mb and Kb (powers of 1024) when they say it to within a little."""
    if n >= 1024 * 1024 and abs(n - round(n / 2**20) * 2**20) < 1024:
        return f"{round(n / 2**20)}Mb"
    if n >= 1024 and abs(n - round(n / 1024) * 1024) < 16:
        return f"{round(n / 1024)}Kb"
    if n >= 10 * 1024 * 1024:
        return f"{n / 2**20:.1f}Mb"
    return f"{n}b"


def describe(s: Netem) -> str:
    """The settings as `tc qdisc show` prints a netem's options (and as `parse` reads them)."""
    out: list[str] = []
    if s.limit is not None:
        out.append(f"limit {s.limit}")
    if s.latency or s.jitter:
        out.append(f"delay {format_time(s.latency)}")
        if s.jitter:
            out.append(format_time(s.jitter))
            if s.delay_corr:
                out.append(format_percent(s.delay_corr))
    if s.distribution is not None:
        out.append(f"distribution {s.distribution}")
    if s.loss:
        out.append(f"loss {format_percent(s.loss)}")
        if s.loss_corr:
            out.append(format_percent(s.loss_corr))
    if s.loss_state is not None:
        out.append("loss state " + " ".join(format_percent(p) for p in s.loss_state))
    if s.loss_gemodel is not None:
        out.append("loss gemodel " + " ".join(format_percent(p) for p in s.loss_gemodel))
    if s.ecn:
        out.append("ecn")
    if s.duplicate:
        out.append(f"duplicate {format_percent(s.duplicate)}")
        if s.duplicate_corr:
            out.append(format_percent(s.duplicate_corr))
    if s.reorder:
        out.append(f"reorder {format_percent(s.reorder)}")
        if s.reorder_corr:
            out.append(format_percent(s.reorder_corr))
        if s.gap > 1:
            out.append(f"gap {s.gap}")
    if s.corrupt:
        out.append(f"corrupt {format_percent(s.corrupt)}")
        if s.corrupt_corr:
            out.append(format_percent(s.corrupt_corr))
    if s.rate:
        out.append(f"rate {format_rate(s.rate)}")
        if s.packet_overhead or s.cell_size or s.cell_overhead:
            out.append(str(s.packet_overhead))
            if s.cell_size or s.cell_overhead:
                out.append(str(s.cell_size))
                if s.cell_overhead:
                    out.append(str(s.cell_overhead))
    if s.slot_distribution is not None:
        out.append(
            f"slot distribution {s.slot_distribution} {format_time(s.slot_delay)} "
            f"{format_time(s.slot_jitter)}"
        )
    elif s.slotted:
        out.append(f"slot {format_time(s.slot_min)} {format_time(s.slot_max)}")
    if s.slot_packets:
        out.append(f"packets {s.slot_packets}")
    if s.slot_bytes:
        out.append(f"bytes {s.slot_bytes}")
    if s.seed is not None:
        out.append(f"seed {s.seed}")
    return " ".join(out)


def default_limit_bytes(s: Netem) -> int:
    """Our default queue bound, in bytes (netem's is 1000 packets): enough for everything in
    flight over the longest delay the settings can give, at the configured rate or at 10 Gbit/s,
    twice over, and never less than 4 MiB nor more than 1 GiB. A flow that fits rate x delay is
    never dropped by it; one that exceeds the rate fills it and sees `queue` drops, as a
    bottleneck buffer does."""
    rate = s.rate or 10_000_000_000 // 8
    horizon_ns = s.latency + 4 * s.jitter + max(s.slot_max, s.slot_delay + 4 * s.slot_jitter)
    horizon_ns += 10_000_000  # the time it takes us to notice a due frame, generously
    need = math.ceil(2 * rate * horizon_ns / 1e9)
    return max(4 << 20, min(need, 1 << 30))
