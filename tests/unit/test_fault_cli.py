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
