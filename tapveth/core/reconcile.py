"""What a reload must do: compare the pairs a daemon runs from its configuration with the file's
pairs. Pure: the daemon carries the plan out. A pair whose devices can stay (only MTU,
addresses or admin state differ) is changed in place; one whose name, namespace, MAC or
persistence differs is made anew; an unchanged pair is not touched at all."""

from dataclasses import dataclass, field

from tapveth.core.config import Config, PairConfig

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
