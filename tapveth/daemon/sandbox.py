"""A socket family the daemon's sandbox refuses, said in one line with its fix. The shipped
units allow AF_UNIX and AF_NETLINK sockets only (RestrictAddressFamilies=): a vxlan end's UDP
sockets and the --metrics listener need the drop-in systemd/tapveth-inet.conf, which adds
AF_INET and AF_INET6."""

import errno
import os

DROP_IN = "systemd/tapveth-inet.conf"


def refused(exc: OSError) -> bool:
    """Whether socket() failed for its family: a seccomp filter (RestrictAddressFamilies=)
    answers EAFNOSUPPORT, as does a kernel without that family (IPv6 disabled)."""
    return exc.errno == errno.EAFNOSUPPORT


def explain(what: str, family: str) -> str:
    """Why `what` (a socket of `family`, AF_INET or AF_INET6) could not be opened, and the fix.
    Under systemd (INVOCATION_ID is set for every unit) the unit's filter is the likely cause;
    elsewhere the kernel's lack of the family."""
    if os.environ.get("INVOCATION_ID"):
        return (
            f"cannot open {what}: the unit refuses {family} sockets (RestrictAddressFamilies=); "
            f"allow them with a drop-in holding '[Service] RestrictAddressFamilies=AF_INET "
            f"AF_INET6', as {DROP_IN} (README: Running as a service)"
        )
    return f"cannot open {what}: this kernel has no {family} sockets (EAFNOSUPPORT)"
