"""Carrier coupling: carrier(A) = carrier(B) = up(A) and up(B), with equal transition counters."""

from collections.abc import Callable

import pytest
from backends import PairUnderTest, lower_up, wait_for

pytestmark = pytest.mark.integration


def state(p: PairUnderTest, side: str) -> tuple[bool, bool, str]:
    ns, name = (p.ns_a, p.a) if side == "a" else (p.ns_b, p.b)
    link = ns.link(name)
    return ("UP" in link["flags"], "LOWER_UP" in link["flags"], link["operstate"])


def test_carrier_follows_both_admin_states(make_pair: Callable[..., PairUnderTest]) -> None:
    p = make_pair()
    # just created: both admin down, no carrier, one down transition counted
    assert state(p, "a") == (False, False, "DOWN")
    assert state(p, "b") == (False, False, "DOWN")
    assert p.carrier_changes() == (1, 1)
    assert p.sysfs(p.ns_a, p.a, "carrier") == "ERR"  # EINVAL while admin-down

    # A up, B down: A is UP with NO-CARRIER, state DOWN; B unchanged
    p.ns_a.ip("link", "set", p.a, "up")
    wait_for("A up", lambda: state(p, "a")[0])
    assert "NO-CARRIER" in p.ns_a.link(p.a)["flags"]
    assert state(p, "a") == (True, False, "DOWN")
    assert state(p, "b") == (False, False, "DOWN")
    assert p.sysfs(p.ns_a, p.a, "carrier") == "0"
    assert p.carrier_changes() == (1, 1)

    # both up: carrier on both, operstate UP, two transitions each
    p.ns_b.ip("link", "set", p.b, "up")
    wait_for("carrier on both", lambda: lower_up(p.ns_a, p.a) and lower_up(p.ns_b, p.b))
    wait_for("operstate UP", lambda: state(p, "a")[2] == "UP" and state(p, "b")[2] == "UP")
    assert p.carrier_changes() == (2, 2)
    assert p.sysfs(p.ns_b, p.b, "carrier") == "1"

    # A down again: B keeps UP but loses carrier
    p.ns_a.ip("link", "set", p.a, "down")
    wait_for("B loses carrier", lambda: not lower_up(p.ns_b, p.b))
    wait_for("B operstate DOWN", lambda: state(p, "b") == (True, False, "DOWN"))
    assert "NO-CARRIER" in p.ns_b.link(p.b)["flags"]
    assert state(p, "a") == (False, False, "DOWN")
    assert p.carrier_changes() == (3, 3)

    # B down too, then A up: still no carrier, no transition
    p.ns_b.ip("link", "set", p.b, "down")
    p.ns_a.ip("link", "set", p.a, "up")
    wait_for("A up", lambda: state(p, "a")[0])
    assert not lower_up(p.ns_a, p.a)
    assert p.carrier_changes() == (3, 3)


def test_counters_match_after_flaps(make_pair: Callable[..., PairUnderTest]) -> None:
    p = make_pair()
    p.ns_b.ip("link", "set", p.b, "up")
    for _ in range(5):
        p.ns_a.ip("link", "set", p.a, "up")
        wait_for("carrier", lambda: lower_up(p.ns_b, p.b))
        p.ns_a.ip("link", "set", p.a, "down")
        wait_for("no carrier", lambda: not lower_up(p.ns_b, p.b))
    assert p.carrier_changes() == (11, 11)
    up_a = int(p.sysfs(p.ns_a, p.a, "carrier_up_count"))
    down_b = int(p.sysfs(p.ns_b, p.b, "carrier_down_count"))
    assert (up_a, down_b) == (5, 6)
