"""Fault schedules: the grammar, and the plan stepped with a fake clock."""

import pytest

from tapveth.core.faults import FaultError, Plan, Schedule, parse

S = 10**9


def run(schedule: Schedule, start: int, until: int, tick: int) -> list[tuple[int, str, str]]:
    """Step a plan with a fake clock: (time since start, action, origin) as they come due."""
    plan = Plan(schedule, start)
    out = []
    now = start
    while now <= start + until:
        out += [(now - start, s.action, s.origin) for s in plan.due(now)]
        now += tick
    return out


def test_flap_every_for_count() -> None:
    sched = parse("flap every 5s for 1s count 3".split())
    got = run(sched, 1000, 60 * S, S // 2)
    assert got == [
        (5 * S, "cut", "flap 1/3"),
        (6 * S, "restore", "flap 1/3"),
        (10 * S, "cut", "flap 2/3"),
        (11 * S, "restore", "flap 2/3"),
        (15 * S, "cut", "flap 3/3"),
        (16 * S, "restore", "flap 3/3"),
    ]
    assert str(sched) == "flap every 5s for 1s count 3"


def test_plan_next_time_and_done() -> None:
    plan = Plan(parse("flap every 2s for 500ms count 1".split()), 7)
    assert plan.next_time() == 7 + 2 * S
    assert plan.due(7 + 2 * S - 1) == []
    assert [s.action for s in plan.due(7 + 2 * S)] == ["cut"]
    assert plan.next_time() == 7 + 2 * S + S // 2
    assert not plan.done()
    # late: everything due at once, in order, and only once
    assert [s.action for s in plan.due(100 * S)] == ["restore"]
    assert plan.due(200 * S) == []
    assert plan.next_time() is None and plan.done()
    assert plan.fired == 2


def test_flap_without_count_goes_on() -> None:
    plan = Plan(parse("flap every 1s for 100ms".split()), 0)
    steps = plan.due(1000 * S + S // 2)
    assert len(steps) == 2000
    assert steps[-1].origin == "flap 1000"
    assert plan.next_time() == 1001 * S


def test_timeline_loss_cut_restore() -> None:
    sched = parse("at +10s netem loss 5% at +30s cut for 2s at +40s clear".split())
    got = run(sched, 0, 60 * S, S)
    assert [(t, a) for t, a, _ in got] == [
        (10 * S, "netem"),
        (30 * S, "cut"),
        (32 * S, "restore"),
        (40 * S, "clear"),
    ]
    assert sched.timeline[0].netem is not None and sched.timeline[0].netem.loss == 5.0
    assert str(sched) == "at +10s netem loss 5% at +30s cut at +32s restore at +40s clear"
    assert str(parse(str(sched).split())) == str(sched)
    assert sched.uses_netem()


def test_timeline_is_sorted_and_merges_with_a_flap() -> None:
    sched = parse("at +3s restore at 1s cut flap every 2s for 1s count 2".split())
    got = run(sched, 0, 10 * S, S // 4)
    assert got == [
        (1 * S, "cut", "at +1s"),
        (2 * S, "cut", "flap 1/2"),
        (3 * S, "restore", "at +3s"),  # the timeline's first at the same instant
        (3 * S, "restore", "flap 1/2"),
        (4 * S, "cut", "flap 2/2"),
        (5 * S, "restore", "flap 2/2"),
    ]
    assert not sched.uses_netem()


def test_netem_options_end_at_the_next_at() -> None:
    sched = parse("at +0 netem delay 40ms 5ms loss 1% at +1s netem rate 1mbit".split())
    a, b = sched.timeline
    assert a.netem is not None and a.netem.latency == 40 * 10**6 and a.netem.loss == 1.0
    assert b.netem is not None and b.netem.rate == 125000


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("", "empty schedule"),
        ("flap every 5s", "flap needs 'every T for D'"),
        ("flap for 1s", "flap needs 'every T for D'"),
        ("flap every 1s for 1s", "must be shorter than the period"),
        ("flap every 0s for 0s", "must be more than zero"),
        ("flap every 5s for 1s count 0", "count must be from 1"),
        ("flap every 5s for 1s count x", 'count "x" is not a whole number'),
        ("flap every 5x for 1s", 'flap every "5x" is not a time'),
        ("flap every 5s for 1s flap every 6s for 1s", "one 'flap' per schedule"),
        ("at", "at needs an offset"),
        ("at +10s", "what then?"),
        ("at +10s explode", '"explode" is not an action'),
        ("at +10s netem", "give its options"),
        ("at +10s netem loss 200%", "at +10s netem:"),
        ("at +10s cut for 0s", "must be more than zero"),
        ("at +10s cut for", "needs a time"),
        ("at +10s cut 2x", 'cut for "2x" is not a time'),
        ("at +10s r 5%", '"r" is not an action'),
        ("at +30d cut", "is not a time"),
        ("at +1000000s cut", "more than a week"),
        ("every 5s", '"every" is not understood'),
    ],
)
def test_mistakes(line: str, message: str) -> None:
    with pytest.raises(FaultError) as exc:
        parse(line.split())
    assert message in str(exc.value)
    assert "\n" not in str(exc.value)


def test_too_many_steps() -> None:
    words = []
    for k in range(1001):
        words += ["at", f"+{k}s", "restore"]
    with pytest.raises(FaultError, match="at most 1000 steps"):
        parse(words)


def test_offset_zero_reads_0s() -> None:
    sched = parse("at +0 cut for 1500ms".split())
    assert str(sched) == "at +0s cut at +1.5s restore"
    assert sched.timeline[0].origin == "at +0s"


def test_short_forms_cut_d_and_bare_netem_options() -> None:
    short = parse("at +10s loss 5% at +30s cut 2s at +40s delay 10ms at +50s cut".split())
    long = parse(
        "at +10s netem loss 5% at +30s cut for 2s at +40s netem delay 10ms at +50s cut".split()
    )
    assert short == long
    assert str(short) == (
        "at +10s netem loss 5% at +30s cut at +32s restore at +40s netem delay 10ms at +50s cut"
    )
