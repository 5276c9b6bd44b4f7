"""The link registry: the pairs a daemon owns, found by end name, by netlink key or by end, and
described as the CLI shows them."""

import os
from typing import Any

from tapveth.control import ControlError, one_line, shorten
from tapveth.core.linkspec import EndSpec, SpecError, check_existing_name
from tapveth.core.vxlanspec import VxlanSpec
from tapveth.daemon.pair import End, Pair
from tapveth.daemon.vxlan_end import VxlanEnd
from tapveth.kernel import netns


class Registry:
    """Pairs and the indexes that link events and requests look them up by. Changed only on the
    event loop's thread."""

    def __init__(self, own_inode: int) -> None:
        self.own_inode = own_inode
        self.pairs: list[Pair] = []
        self.by_key: dict[tuple[int | None, int], End] = {}  # (nsid, ifindex) as events say
        self.pair_of: dict[End, Pair] = {}

    def add(self, pair: Pair) -> None:
        self.pairs.append(pair)
        for end in pair.taps():
            self.pair_of[end] = pair
            self.by_key[end.key] = end

    def remove(self, pair: Pair) -> None:
        self.pairs.remove(pair)
        for end in pair.taps():
            self.pair_of.pop(end, None)
            self.unkey(end)

    def unkey(self, end: End) -> None:
        """Forget where an end was: its (nsid, ifindex) no longer names it."""
        if self.by_key.get(end.key) is end:
            del self.by_key[end.key]

    # -- finding pairs by what users name ----------------------------------------------------

    def check_free(self, want: EndSpec | VxlanSpec, caller_inode: int) -> None:
        """Refuse a name one of our ends already has in the namespace asked for (an end without
        netns: the caller's, `caller_inode`)."""
        try:
            inode = (
                caller_inode if want.netns is None else os.stat(netns.path_of(want.netns)).st_ino
            )
        except FileNotFoundError:
            raise ControlError(
                f"namespace {want.netns!r} does not exist (create it with: ip netns add "
                f"{want.netns})"
            ) from None
        except OSError as exc:  # EACCES, ENAMETOOLONG, ELOOP...: one line, whatever it is
            raise ControlError(
                f"cannot open namespace {shorten(want.netns)}: {one_line(exc)}"
            ) from None
        for pair in self.pairs:
            for end in pair.ends():
                if end.name == want.name and end.ns_inode == inode:
                    raise ControlError(f"interface name {want.name!r} is already taken")

    def find(self, name: object, ns: object = None) -> Pair:
        """The pair of which `name` (in namespace `ns`, if given) is an end."""
        if not isinstance(name, str):
            raise ControlError("which pair? give an end's name")
        try:
            check_existing_name(name)  # not UTF-8: see core/ifname; or a tunnel's vxlan:VNI
        except SpecError as exc:
            raise ControlError(str(exc)) from None
        hits = [
            (p, e)
            for p in self.pairs
            for e in p.ends()
            if e.name == name and (ns is None or self.ns_name(e) == ns)
        ]
        if not hits:
            raise ControlError(f"no tapveth pair has an end named {name!r}")
        if len(hits) > 1:
            raise ControlError(f"{name!r} names ends in several namespaces: add 'netns NS'")
        return hits[0][0]

    def select(self, args: dict[str, Any]) -> list[tuple[Pair, End | VxlanEnd]]:
        """The ends a show/stats request asks for: all, or both ends of one pair."""
        name = args.get("name")
        if name is None:
            return [(p, e) for p in self.pairs for e in p.ends()]
        pair = self.find(name, args.get("netns"))
        return [(pair, e) for e in pair.ends()]

    # -- what the CLI shows ------------------------------------------------------------------

    def ns_name(self, end: End | VxlanEnd) -> str | None:
        """The `ip netns` name of an end's namespace; None for the daemon's own."""
        if end.ns_inode == self.own_inode:
            return None
        return netns.name_of_inode(end.ns_inode) or f"inode:{end.ns_inode}"

    def ns_label(self, end: End | VxlanEnd) -> str:
        name = self.ns_name(end)
        return f"netns {name}" if name else "daemon's namespace"

    def describe(self, pair: Pair, end: End | VxlanEnd) -> dict[str, Any]:
        if isinstance(end, VxlanEnd):
            return {
                "ifname": end.name,
                "peer": pair.a.name,
                "netns": self.ns_name(end),
                "ifindex": None,
                "admin": "UP",
                "carrier": pair.carrier.on,
                "operstate": "UP" if pair.carrier.on else "DOWN",
                "mtu": None,
                "address": None,
                **end.describe(),
            }
        return {
            "ifname": end.name,
            "peer": pair.peer_of(end).name,
            "netns": self.ns_name(end),
            "ifindex": end.index,
            "admin": "UP" if end.up else "DOWN",
            "carrier": pair.carrier.on,
            "operstate": "UP" if pair.carrier.on else "DOWN",
            "mtu": end.mtu,
            "address": end.address,
            "orphaned": False,
        }

    def stats(
        self, pair: Pair, end: End | VxlanEnd, kernel_drops: tuple[int, int] | None
    ) -> dict[str, Any]:
        c = pair.counters(end, kernel_drops)
        extra = end.counters() if isinstance(end, VxlanEnd) else {}
        return {
            "ifname": end.name,
            "netns": self.ns_name(end),
            "peer": pair.peer_of(end).name,
            "rx_packets": c.rx_packets,
            "rx_bytes": c.rx_bytes,
            "tx_packets": c.tx_packets,
            "tx_bytes": c.tx_bytes,
            "rx_dropped": c.rx_dropped,
            "tx_dropped": c.tx_dropped,
            "drops": c.drops,
            "carrier_changes": pair.carrier.changes,
            "carrier_up_count": pair.carrier.up_count,
            "carrier_down_count": pair.carrier.down_count,
            **extra,
        }
