"""The reload plan: unchanged pairs untouched, in-place changes, re-creation, adds, removals."""

from tapveth.core.config import parse
from tapveth.core.reconcile import plan

BASE = """
[[pair]]
[pair.end]
name = "a1"
netns = "n1"
mtu = 1500
up = true
[pair.peer]
name = "b1"
[[pair]]
[pair.end]
name = "a2"
[pair.peer]
name = "b2"
[[pair]]
[pair.end]
name = "a3"
[pair.peer]
name = "b3"
"""


def running(text: str) -> dict[tuple[str, str | None], object]:
    return {pc.ident: pc for pc in parse(text).pairs}


def test_nothing_changed_touches_nothing() -> None:
    p = plan(running(BASE), parse(BASE))  # type: ignore[arg-type]
    assert (p.create, p.remove, p.change) == ([], [], [])
    assert len(p.keep) == 3


def test_each_kind_of_change() -> None:
    new = (
        BASE.replace("mtu = 1500", "mtu = 9000")  # a1: in place
        .replace('name = "b2"', 'name = "c2"')  # a2: recreated (peer renamed)
        .replace('[[pair]]\n[pair.end]\nname = "a3"\n[pair.peer]\nname = "b3"\n', "")
        + '[[pair]]\n[pair.end]\nname = "a4"\n[pair.peer]\nname = "b4"\n'
    )
    p = plan(running(BASE), parse(new))  # type: ignore[arg-type]
    assert [(o.ident, n.end.spec.mtu) for o, n in p.change] == [(("a1", "n1"), 9000)]
    assert sorted(p.remove) == [("a2", None), ("a3", None)]
    assert sorted(pc.ident for pc in p.create) == [("a2", None), ("a4", None)]
    assert p.keep == []
    assert p.summary() == "2 added, 2 removed, 1 changed, 0 unchanged"


def test_netem_changes_in_place_and_only_where_it_changed() -> None:
    from tapveth.core.reconcile import netem_changes

    with_netem = BASE.replace("up = true", 'up = true\nnetem = "delay 10ms"')
    old, new = parse(BASE).pairs[0], parse(with_netem).pairs[0]
    p = plan(running(BASE), parse(with_netem))  # type: ignore[arg-type]
    assert [o.ident for o, _ in p.change] == [("a1", "n1")] and p.create == []
    ((index, settings),) = netem_changes(old, new)
    assert index == 0 and settings is not None and settings.latency == 10_000_000
    assert netem_changes(new, new) == []
    assert netem_changes(new, old) == [(0, None)]  # removed from the file: removed
    assert netem_changes(None, old) == []  # a new pair without netem: nothing to set


def test_fault_changes_only_where_the_line_changed() -> None:
    from tapveth.core.reconcile import fault_changes

    with_faults = BASE.replace("up = true", 'up = true\nfaults = "at +1s cut for 1s"')
    old, new = parse(BASE).pairs[0], parse(with_faults).pairs[0]
    p = plan(running(BASE), parse(with_faults))  # type: ignore[arg-type]
    assert [o.ident for o, _ in p.change] == [("a1", "n1")] and p.create == []
    ((index, schedule),) = fault_changes(old, new)
    assert index == 0 and str(schedule) == "at +1s cut at +2s restore"
    assert fault_changes(new, new) == []
    assert fault_changes(new, old) == [(0, None)]
    assert fault_changes(None, old) == []
