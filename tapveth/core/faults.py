"""Fault schedules: a flap (cut the carrier every T for D, N times) and a timeline of faults at
offsets from the start ("at +10s netem loss 5% at +30s cut for 2s"). Pure: parse the words,
then a Plan answers, given `now`, which steps are due and when the next one is.

    SCHEDULE := ITEM...
    ITEM     := flap every T for D [count N]      cuts at +T, +2T... each lasting D (D < T)
              | at [+]T ACTION                     one step at offset T from the start
    ACTION   := cut [[for] D] | restore | [netem] OPTIONS | clear

`netem OPTIONS` (tc-netem's; the word netem may be left out) runs up to the next `at` or
`flap`; `clear` removes the impairments; `cut for D` cuts the carrier and restores it D later.
Without `count`, a flap goes on until the schedule is removed.
"""

from collections.abc import Iterator
from dataclasses import dataclass, field

from tapveth.core.netem import Netem, NetemError, parse_time
from tapveth.core.netem import format_time as _netem_time
from tapveth.core.netem import parse as parse_netem

MAX_STEPS = 1000  # timeline steps in one schedule
MAX_OFFSET_NS = 7 * 86400 * 10**9  # a week: far enough for any test, bounded for the loop
MAX_COUNT = 10**6

ACTIONS = ("cut", "restore", "netem", "clear")
# tc-netem options that may start a netem action without the word `netem` (in full only: an
# abbreviation such as `r` would be ambiguous with `restore`).
NETEM_FIRST = frozenset(
    {
        "limit",
        "delay",
        "latency",
        "loss",
        "drop",
        "ecn",
        "reorder",
        "corrupt",
        "duplicate",
        "distribution",
        "rate",
        "slot",
        "seed",
    }
)


def format_time(ns: int) -> str:
    """A time as tc prints it; zero as 0s (an offset, not a delay)."""
    return _netem_time(ns) if ns else "0s"


class FaultError(ValueError):
    """A user mistake in a schedule; one line that says how to fix it."""


@dataclass(frozen=True, slots=True)
class Step:
    """One thing to do at `at` ns from the start: cut, restore, netem (with settings), clear.
    origin says where it comes from ("at +10s", "flap 2/3") for the log and the events."""

    at: int
    action: str
    netem: Netem | None = None
    origin: str = ""

    def describe(self) -> str:
        if self.action == "netem":
            assert self.netem is not None
            return f"netem {self.netem}"
        return self.action


@dataclass(frozen=True, slots=True)
class Flap:
    every: int  # ns between the starts of two cuts
    duration: int  # ns each cut lasts
    count: int | None  # None: until removed

    def steps(self) -> Iterator[Step]:
        """Cut at every*k, restore duration later, for k = 1..count (or for ever)."""
        k = 1
        while self.count is None or k <= self.count:
            of = f"/{self.count}" if self.count is not None else ""
            start = self.every * k
            yield Step(start, "cut", origin=f"flap {k}{of}")
            yield Step(start + self.duration, "restore", origin=f"flap {k}{of}")
            k += 1


@dataclass(frozen=True, slots=True)
class Schedule:
    flap: Flap | None = None
    timeline: tuple[Step, ...] = field(default_factory=tuple)  # sorted by offset, stable

    def __str__(self) -> str:
        """The schedule in its own grammar (what `fault show` prints; it parses back)."""
        out: list[str] = []
        if self.flap is not None:
            f = self.flap
            out.append(f"flap every {format_time(f.every)} for {format_time(f.duration)}")
            if f.count is not None:
                out.append(f"count {f.count}")
        for s in self.timeline:
            out.append(f"at +{format_time(s.at)} {s.describe()}")
        return " ".join(out)

    def uses_netem(self) -> bool:
        return any(s.action in ("netem", "clear") for s in self.timeline)


def parse(words: list[str]) -> Schedule:
    """Words of a schedule (as split on the command line) to a Schedule; FaultError if wrong."""
    if not words:
        raise FaultError("empty schedule: give 'flap every T for D [count N]' or 'at +T ACTION'")
    flap: Flap | None = None
    steps: list[Step] = []
    i = 0
    while i < len(words):
        w = words[i]
        if w == "flap":
            if flap is not None:
                raise FaultError("one 'flap' per schedule")
            flap, i = _parse_flap(words, i + 1)
        elif w == "at":
            new, i = _parse_at(words, i + 1)
            steps.extend(new)
            if len(steps) > MAX_STEPS:
                raise FaultError(f"at most {MAX_STEPS} steps in a schedule")
        else:
            raise FaultError(f'"{w}" is not understood: a schedule is made of flap … and at +T …')
    steps.sort(key=lambda s: s.at)  # stable: steps at the same offset keep their order
    return Schedule(flap, tuple(steps))


def _time(words: list[str], i: int, what: str, positive: bool = True) -> int:
    if i >= len(words):
        raise FaultError(f"{what} needs a time (e.g. 5s, 500ms)")
    word = words[i]
    try:
        ns = parse_time(word, what)
    except NetemError as exc:
        raise FaultError(str(exc)) from None
    if positive and ns <= 0:
        raise FaultError(f'{what} "{word}" must be more than zero')
    if ns > MAX_OFFSET_NS:
        raise FaultError(f'{what} "{word}" is more than a week')
    return ns


def _parse_flap(words: list[str], i: int) -> tuple[Flap, int]:
    got: dict[str, int] = {}
    while i < len(words) and words[i] in ("every", "for", "count") and words[i] not in got:
        key = words[i]
        if key == "count":
            if i + 1 >= len(words):
                raise FaultError("flap: count needs a number")
            try:
                n = int(words[i + 1])
            except ValueError:
                raise FaultError(f'flap: count "{words[i + 1]}" is not a whole number') from None
            if not 1 <= n <= MAX_COUNT:
                raise FaultError(f"flap: count must be from 1 to {MAX_COUNT}")
            got[key] = n
        else:
            got[key] = _time(words, i + 1, f"flap {key}")
        i += 2
    if "every" not in got or "for" not in got:
        raise FaultError("flap needs 'every T for D' (e.g. flap every 5s for 1s count 3)")
    if got["for"] >= got["every"]:
        raise FaultError("flap: the cut ('for') must be shorter than the period ('every')")
    return Flap(got["every"], got["for"], got.get("count")), i


def _parse_at(words: list[str], i: int) -> tuple[list[Step], int]:
    if i >= len(words):
        raise FaultError("at needs an offset, like 'at +10s'")
    at = _time([words[i].removeprefix("+")], 0, "at", positive=False)
    origin = f"at +{format_time(at)}"
    i += 1
    if i >= len(words):
        raise FaultError(f"{origin}: what then? cut [for D], restore, netem OPTIONS or clear")
    action = words[i]
    i += 1
    if action == "cut":
        if i < len(words) and words[i] == "for":
            i += 1
        elif i >= len(words) or not words[i][:1].isdigit():
            return [Step(at, "cut", origin=origin)], i
        d = _time(words, i, "cut for")
        return [Step(at, "cut", origin=origin), Step(at + d, "restore", origin=origin)], i + 1
    if action in ("restore", "clear"):
        return [Step(at, action, origin=origin)], i
    if action in NETEM_FIRST:  # netem's options without the word netem
        action, i = "netem", i - 1
    if action == "netem":
        stop = i
        while stop < len(words) and words[stop] not in ("at", "flap"):
            stop += 1
        if stop == i:
            raise FaultError(f"{origin} netem: give its options (e.g. loss 5%), or use 'clear'")
        try:
            settings = parse_netem(words[i:stop])
        except NetemError as exc:
            raise FaultError(f"{origin} netem: {exc}") from None
        return [Step(at, "netem", settings, origin)], stop
    raise FaultError(
        f'{origin}: "{action}" is not an action (cut [for D], restore, netem OPTIONS, clear)'
    )


class Plan:
    """A schedule running from `start` (monotonic ns): which steps are due at `now`, and the
    time of the next one. Steps are given once each, in time order (the timeline's before a
    flap's at the same instant)."""

    def __init__(self, schedule: Schedule, start: int) -> None:
        self.schedule = schedule
        self.start = start
        self._timeline = list(schedule.timeline)
        self._next_line = 0
        self._flap = schedule.flap.steps() if schedule.flap is not None else iter(())
        self._flap_head: Step | None = next(self._flap, None)
        self.fired = 0

    def _head(self) -> Step | None:
        line = self._timeline[self._next_line] if self._next_line < len(self._timeline) else None
        flap = self._flap_head
        if line is None:
            return flap
        if flap is None or line.at <= flap.at:
            return line
        return flap

    def next_time(self) -> int | None:
        """When the next step is due (monotonic ns), None once all have been given."""
        head = self._head()
        return None if head is None else self.start + head.at

    def due(self, now: int) -> list[Step]:
        """The steps due at `now`, in order; each only once."""
        out: list[Step] = []
        while (head := self._head()) is not None and self.start + head.at <= now:
            out.append(head)
            if head is self._flap_head:
                self._flap_head = next(self._flap, None)
            else:
                self._next_line += 1
        self.fired += len(out)
        return out

    def done(self) -> bool:
        return self._head() is None
