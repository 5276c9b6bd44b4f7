"""Pair descriptions a hostile or careless client may send: refused in one short line."""

import pytest

from tapveth.core.linkspec import PairSpec, SpecError, check_mtu, check_name

ODD_MTUS = ["²", "\u0661\u0665\u0660\u0660", "\uff11\uff15\uff10\uff10", "15_00", " 1500", "0x5dc"]


@pytest.mark.parametrize("mtu", [*ODD_MTUS, "9" * 5000])
def test_an_mtu_that_is_not_plain_ascii_digits_or_is_huge(mtu: str) -> None:
    with pytest.raises(SpecError) as info:
        check_mtu(mtu)
    assert len(str(info.value)) < 100


def test_names_thousands_long_are_cut_in_the_message() -> None:
    for bad in ("x" * 5000, "/" * 5000, "a b" * 2000):
        with pytest.raises(SpecError) as info:
            check_name(bad)
        assert len(str(info.value)) < 120


def test_a_spec_of_the_wrong_types() -> None:
    bad: list[object] = [None, [], {"end": 1, "peer": 2}, {"end": {"name": 5}, "peer": {}}]
    for data in bad:
        with pytest.raises(SpecError):
            PairSpec.from_dict(data)
