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
