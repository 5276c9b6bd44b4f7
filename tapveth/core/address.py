"""Listen addresses written `HOST:PORT` (`[V6]:PORT` for IPv6, a bare `PORT` for the loopback
address), as `--metrics` and the configuration file's [metrics] table take them. Pure: checks
the text, resolves nothing."""

import ipaddress


class AddressError(ValueError):
    """A listen address that cannot be used; the message says how to write one."""


LOOPBACK = "127.0.0.1"


def parse_listen(text: str) -> tuple[str, int]:
    """(host, port) of `HOST:PORT`, or of a bare `PORT` on the loopback address; HOST is an IP
    address (a listener on a name would depend on the resolver), PORT 1..65535."""
    example = "like 9477, 127.0.0.1:9477 or [::1]:9477"
    if isinstance(text, str) and text.isdigit():
        text = f"{LOOPBACK}:{text}"
    if not isinstance(text, str) or ":" not in text:
        raise AddressError(f"{text!r} is not HOST:PORT ({example})")
    host, _, port_text = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if ipaddress.ip_address(_checked(host, text, example)).version != 6:
            raise AddressError(f"{text!r}: brackets are for IPv6 addresses ({example})")
    elif ":" in host:
        raise AddressError(f"{text!r}: write an IPv6 address in brackets ({example})")
    _checked(host, text, example)
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise AddressError(f"{text!r}: the port must be a number from 1 to 65535")
    return host, int(port_text)


def _checked(host: str, text: str, example: str) -> str:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise AddressError(f"{text!r}: {host!r} is not an IP address ({example})") from None
    return host
