"""Persistent pairs nobody owns: TAPs an earlier daemon left (`persist = true`) that the running
daemon did not re-attach, e.g. a pair removed from the configuration while it was stopped. Pure:
how such a TAP is marked, how its two ends are matched, and how they are shown.

Where to look for them at start: in the daemon's own namespace, and in the named namespaces
where its persistent ends were, as its record says (kept beside the control socket, written
whenever a persistent end is made, moves, or is left behind at stop). Only without a record (a
first start, or one lost) does it look in every named namespace: entering thousands of
namespaces to find nothing is what the record spares.

A persistent TAP carries an interface alias naming its peer and the daemon that made it, by its
control socket (`ip -d link` shows it): a later daemon on that socket can tell its own leftovers
from other persistent TAPs (a VM's, `ip tuntap add`'s, another tapveth daemon's)."""

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

ALIAS_PREFIX = "tapveth persistent pair, peer "
_OWNER = " daemon "


def alias_for(peer: str, owner: str) -> str:
    """`owner`: the daemon's control socket. An interface name has no whitespace, so the peer
    ends at the first space."""
    return f"{ALIAS_PREFIX}{peer}{_OWNER}{owner}"


def peer_from_alias(alias: str | None, owner: str) -> str | None:
    """The peer's name if the alias is one this daemon (`owner`) set, else None."""
    if alias is None or not alias.startswith(ALIAS_PREFIX):
        return None
    peer, sep, who = alias[len(ALIAS_PREFIX) :].partition(_OWNER)
    if not peer or not sep or who != owner:
        return None
    return peer


@dataclass(frozen=True, slots=True)
class OrphanEnd:
    """A persistent tapveth TAP found in a namespace (None: the daemon's own), not attached."""

    name: str
    netns: str | None
    peer: str
    mtu: int
    address: str
    up: bool


@dataclass(frozen=True, slots=True)
class Orphan:
    """One left-over pair; `b` is None when only one end was found."""

    a: OrphanEnd
    b: OrphanEnd | None

    def ends(self) -> list[OrphanEnd]:
        return [self.a] if self.b is None else [self.a, self.b]

    def label(self) -> str:
        where = [f"netns {e.netns}" if e.netns else "daemon's namespace" for e in self.ends()]
        return " <-> ".join(f"{e.name} ({w})" for e, w in zip(self.ends(), where, strict=True))


def match(found: list[OrphanEnd]) -> list[Orphan]:
    """Pair ends whose aliases name each other; an end whose peer is not there stays alone."""
    left = list(found)
    out = []
    while left:
        a = left.pop(0)
        b = next((e for e in left if e.name == a.peer and e.peer == a.name), None)
        if b is not None:
            left.remove(b)
        out.append(Orphan(a, b))
    return out


def find(orphans: list[Orphan], name: str, netns: str | None) -> Orphan | None:
    """The left-over pair that `name` (in `netns`, if given) is an end of."""
    for o in orphans:
        for e in o.ends():
            if e.name == name and (netns is None or e.netns == netns):
                return o
    return None


def describe(o: Orphan) -> list[dict[str, Any]]:
    """As `show` reports ends, marked orphaned: no relay, so no carrier."""
    return [
        {
            "ifname": e.name,
            "peer": e.peer,
            "netns": e.netns,
            "ifindex": None,
            "admin": "UP" if e.up else "DOWN",
            "carrier": False,
            "operstate": "DOWN",
            "mtu": e.mtu,
            "address": e.address,
            "orphaned": True,
        }
        for e in o.ends()
    ]


def places(netns_of_ends: Iterable[str | None]) -> list[str]:
    """The record of where persistent ends are: the `ip netns` names among their namespaces
    (the daemon's own, None, is always looked in; a namespace without a name, shown as
    `inode:N`, cannot be found again by name)."""
    return sorted({n for n in netns_of_ends if n and not n.startswith("inode:")})


def to_scan(recorded: list[str] | None, named: list[str]) -> list[str]:
    """The named namespaces the start-up search looks in, besides the daemon's own: those of
    the record that still exist, or every one (`named`) when there is no record."""
    if recorded is None:
        return list(named)
    have = set(named)
    return [n for n in recorded if n in have]
