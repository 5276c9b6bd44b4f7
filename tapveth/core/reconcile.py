"""What a reload must do: compare the pairs a daemon runs from its configuration with the file's
pairs. Pure: the daemon carries the plan out. A pair whose devices can stay (only MTU,
addresses, admin state, impairments or fault schedules differ) is changed in place; one whose
name, namespace, MAC or persistence differs is made anew; an unchanged pair is not touched."""

from dataclasses import dataclass, field

from tapveth.core.config import Config, PairConfig
from tapveth.core.faults import Schedule
from tapveth.core.netem import Netem

Ident = tuple[str, str | None]


@dataclass
class Plan:
    remove: list[Ident] = field(default_factory=list)
    create: list[PairConfig] = field(default_factory=list)
    change: list[tuple[PairConfig, PairConfig]] = field(default_factory=list)  # (old, new)
    keep: list[Ident] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"{len(self.create)} added, {len(self.remove)} removed, "
            f"{len(self.change)} changed, {len(self.keep)} unchanged"
        )


def plan(running: dict[Ident, PairConfig], wanted: Config) -> Plan:
    p = Plan()
    want = {pc.ident: pc for pc in wanted.pairs}
    for ident, old in running.items():
        new = want.get(ident)
        if new is None:
            p.remove.append(ident)
        elif new == old:
            p.keep.append(ident)
        elif old.same_devices(new):
            p.change.append((old, new))
        else:
            p.remove.append(ident)
            p.create.append(new)
    p.create += [pc for ident, pc in want.items() if ident not in running]
    return p


def fault_changes(old: PairConfig | None, new: PairConfig) -> list[tuple[int, Schedule | None]]:
    """Which ends' fault schedules a change or creation must set (as netem_changes): a
    schedule whose line did not change keeps running, one that did starts again."""
    out: list[tuple[int, Schedule | None]] = []
    for index, side in enumerate(("end", "peer")):
        before = getattr(old, side).faults if old is not None else None
        after = getattr(new, side).faults
        if before != after:
            out.append((index, after))
    return out


def netem_changes(old: PairConfig | None, new: PairConfig) -> list[tuple[int, Netem | None]]:
    """Which ends' impairments a change or creation must set: (0 for end, 1 for peer, the
    settings or None to remove them). An end whose netem line did not change is left alone,
    so impairments set by hand with `tapveth qdisc` survive reloads that do not touch them."""
    out: list[tuple[int, Netem | None]] = []
    for index, side in enumerate(("end", "peer")):
        before = getattr(old, side).netem if old is not None else None
        after = getattr(new, side).netem
        if before != after:
            out.append((index, after))
    return out
