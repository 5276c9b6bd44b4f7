"""Listen addresses for the metrics endpoint."""

import pytest

from tapveth.core.address import AddressError, parse_listen


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:9477", ("127.0.0.1", 9477)),
        ("9477", ("127.0.0.1", 9477)),
        ("0.0.0.0:1", ("0.0.0.0", 1)),
        ("[::1]:9477", ("::1", 9477)),
        ("[fd00::5]:65535", ("fd00::5", 65535)),
    ],
)
def test_good(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "is not HOST:PORT"),
        ("99999", "from 1 to 65535"),
        ("localhost:9477", "is not an IP address"),
        ("127.0.0.1:0", "from 1 to 65535"),
        ("127.0.0.1:65536", "from 1 to 65535"),
        ("127.0.0.1:http", "from 1 to 65535"),
        ("::1:9477", "in brackets"),
        ("[127.0.0.1]:9477", "brackets are for IPv6"),
        ("[nope]:9477", "is not an IP address"),
        (":9477", "is not an IP address"),
    ],
)
def test_bad(text: str, message: str) -> None:
    with pytest.raises(AddressError, match=message):
        parse_listen(text)
