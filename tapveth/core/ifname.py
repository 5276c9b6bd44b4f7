"""Interface names as the kernel has them: up to 15 bytes, not necessarily UTF-8.

`ip link set X name $'rl\\xff\\xfe'` is allowed, and iproute2 prints such a name's bytes as they
are. A name is text here with the bytes that are not UTF-8 kept as surrogate escapes (PEP 383):
it goes back to the kernel unchanged, travels the control socket as JSON \\u escapes, and the
CLI writes the very bytes `ip link` writes.
"""


def decode(raw: bytes | str) -> str:
    """A name from the kernel, as bytes or as text already decoded."""
    if isinstance(raw, str):
        return raw
    return raw.decode("utf-8", "surrogateescape")


def encode(name: str) -> bytes:
    """A name for the kernel, byte for byte as it was read."""
    return name.encode("utf-8", "surrogateescape")


def printable(name: str) -> str:
    """The name with each byte that is not UTF-8 shown as one printable character, for checks
    that count bytes and refuse separators: such bytes are allowed in an existing name."""
    return "".join("?" if "\udc80" <= ch <= "\udcff" else ch for ch in name)
