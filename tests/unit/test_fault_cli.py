"""`tapveth link set dev NAME carrier on|off` words to a control request."""

import pytest

from tapveth.cli.fault import request_args
from tapveth.core.linkspec import SpecError


def test_carrier_off_and_on() -> None:
    assert request_args("set dev veth1 carrier off".split()) == {"name": "veth1", "on": False}
    assert request_args("set dev veth1 netns ns1 carrier on".split()) == {
        "name": "veth1",
        "netns": "ns1",
        "on": True,
    }


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("", "only 'set … carrier on|off'"),
        ("add dev v1", "only 'set … carrier on|off'"),
        ("set carrier off", "which end?"),
        ("set dev v1", "give 'carrier on' or 'carrier off'"),
        ("set dev v1 carrier maybe", 'carrier "maybe" is neither on nor off'),
        ("set dev v1 mtu 1400", '"mtu" is not understood'),
        ("set dev", "'dev' needs a value"),
    ],
)
def test_mistakes(line: str, message: str) -> None:
    with pytest.raises(SpecError) as err:
        request_args(line.split())
    assert message in str(err.value)


def test_flap_gives_a_fault_request() -> None:
    assert request_args("set dev veth1 flap every 5s for 1s count 3".split()) == {
        "name": "veth1",
        "action": "replace",
        "schedule": "flap every 5s for 1s count 3".split(),
    }


def test_fault_lines() -> None:
    from tapveth.cli.fault import fault_args

    line = "add dev v1 netns ns1 at +10s netem loss 5% at +30s cut for 2s"
    assert fault_args(line.split()) == {
        "action": "add",
        "name": "v1",
        "netns": "ns1",
        "schedule": "at +10s netem loss 5% at +30s cut for 2s".split(),
    }
    assert fault_args("del dev v1".split()) == {"action": "del", "name": "v1"}
    assert fault_args(["show"]) == {"action": "show"}
    assert fault_args("ls dev v1".split()) == {"action": "show", "name": "v1"}


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("", "give add, replace, del or show"),
        ("start dev v1", "give add, replace, del or show"),
        ("add flap every 5s for 1s", "which end?"),
        ("add dev v1", "fault: empty schedule"),
        ("add dev v1 flap every 1s for 2s", "fault: flap: the cut"),
        ("del", "which end?"),
        ("del dev v1 now", '"now" is not understood'),
        ("add dev", "'dev' needs a value"),
    ],
)
def test_fault_mistakes(line: str, message: str) -> None:
    from tapveth.cli.fault import fault_args

    with pytest.raises(SpecError) as exc:
        fault_args(line.split())
    assert message in str(exc.value)


def test_link_set_flap_mistakes() -> None:
    with pytest.raises(SpecError, match="flap needs 'every T for D'"):
        request_args("set dev v1 flap every 5s".split())
