"""What a pair is asked to be: the `add` grammar (that of `ip link add … type veth peer …`),
the `NAME [netns NS]` selector of del/show/stats, and the validation of names, namespaces,
MTUs, queue lengths and MAC addresses. Pure: raises SpecError, touches nothing."""

import re
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from tapveth.core import ifname, vxlan
from tapveth.core.rules import MAX_MTU, MIN_MTU

if TYPE_CHECKING:
    from tapveth.core.vxlanspec import VxlanSpec

IFNAMSIZ = 16  # including the NUL: 15 usable bytes
MAX_TXQUEUELEN = 2**32 - 1  # IFLA_TXQLEN is a u32


class SpecError(ValueError):
    """A user mistake in a pair description; the message is one line that says how to fix it."""


@dataclass(frozen=True, slots=True)
class EndSpec:
    """One end as requested: name, target namespace (None: the caller's), MTU, MAC, transmit
    queue length (None: the TAP's default), and whether it starts admin-up."""

    name: str
    netns: str | None = None
    mtu: int | None = None
    address: str | None = None
    txqueuelen: int | None = None
    up: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "EndSpec":
        if not isinstance(data, dict):
            raise SpecError("an end must be an object")
        unknown = set(data) - {"name", "netns", "mtu", "address", "txqueuelen", "up"}
        if unknown:
            raise SpecError(f"unknown end field(s): {', '.join(sorted(unknown))}")
        name = data.get("name")
        if not isinstance(name, str):
            raise SpecError("an end needs a name")
        netns = data.get("netns")
        if netns is not None and not isinstance(netns, str):
            raise SpecError("netns must be a string")
        mtu = data.get("mtu")
        address = data.get("address")
        qlen = data.get("txqueuelen")
        up = data.get("up", False)
        if not isinstance(up, bool):
            raise SpecError("up must be true or false")
        return cls(
            name=check_name(name),
            netns=check_netns(netns) if netns is not None else None,
            mtu=check_mtu(mtu) if mtu is not None else None,
            address=check_mac(address) if address is not None else None,
            txqueuelen=check_txqueuelen(qlen) if qlen is not None else None,
            up=up,
        )


@dataclass(frozen=True, slots=True)
class PairSpec:
    end: EndSpec
    peer: "EndSpec | VxlanSpec"  # a TAP, or the far end of a VXLAN tunnel (core/vxlanspec.py)

    def to_dict(self) -> dict[str, Any]:
        return {"end": self.end.to_dict(), "peer": self.peer.to_dict()}

    @classmethod
    def from_dict(cls, data: Any) -> "PairSpec":
        if not isinstance(data, dict) or set(data) != {"end", "peer"}:
            raise SpecError("a pair must be an object with 'end' and 'peer'")
        from tapveth.core.vxlanspec import VxlanSpec

        raw = data["peer"]
        kind = raw.get("kind") if isinstance(raw, dict) else None
        peer = VxlanSpec.from_dict(raw) if kind == "vxlan" else EndSpec.from_dict(raw)
        spec = cls(EndSpec.from_dict(data["end"]), peer)
        check_pair(spec)
        return spec


def check_name(name: str) -> str:
    """An interface name as the kernel's dev_valid_name() accepts it, minus '%' (a format)."""
    if not name:
        raise SpecError("interface name is empty")
    shown = _shown(name)
    if len(name.encode(errors="surrogateescape")) >= IFNAMSIZ:
        raise SpecError(f"interface name {shown} is longer than {IFNAMSIZ - 1} bytes")
    if name in (".", ".."):
        raise SpecError(f"interface name {shown} is not allowed")
    for ch in name:
        if ch in "/:%" or ch.isspace() or not ch.isprintable():
            raise SpecError(f"interface name {shown} contains {ch!r}, which is not allowed")
    return name


_NETNS_RE = re.compile(r"^[^/\s\x00]+$")


def check_netns(netns: str) -> str:
    """A namespace as `ip netns` names it (a file under /run/netns), or a process id."""
    if not netns or netns in (".", "..") or not _NETNS_RE.match(netns):
        raise SpecError(f"namespace name {_shown(netns)} is not valid")
    return netns


def _shown(value: str) -> str:
    """A name for an error message: quoted, and cut if it is long (a hostile client may send
    thousands of characters)."""
    return repr(value) if len(value) <= 32 else repr(value[:16]) + f"... ({len(value)} chars)"


def check_mtu(value: object) -> int:
    if isinstance(value, bool):
        raise SpecError(f"MTU {value!r} is not a number")
    if isinstance(value, str):
        # isdigit() also holds for '²' and other digits int() refuses: ASCII digits only.
        if not (value.isascii() and value.isdigit()):
            raise SpecError(f"MTU {value[:16]!r} is not a number")
        if len(value) > 9:  # int() refuses thousands of digits; any 10 are out of range
            raise SpecError(f"MTU {value[:16]}... is out of range ({MIN_MTU}..{MAX_MTU})")
        value = int(value)
    if not isinstance(value, int):
        raise SpecError(f"MTU {value!r} is not a number")
    if not MIN_MTU <= value <= MAX_MTU:
        raise SpecError(f"MTU {value} is out of range ({MIN_MTU}..{MAX_MTU} on a TAP device)")
    return value


def check_txqueuelen(value: object) -> int:
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(f"txqueuelen {value!r} is not a number")
    if not 0 <= value <= MAX_TXQUEUELEN:
        raise SpecError(f"txqueuelen {value} is out of range (0..{MAX_TXQUEUELEN})")
    return value


_MAC_RE = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")


def check_mac(value: object) -> str:
    """A unicast, non-zero Ethernet address, written aa:bb:cc:dd:ee:ff; returned lower-case."""
    if not isinstance(value, str) or not _MAC_RE.match(value):
        raise SpecError(f"MAC address {value!r} is malformed (expected aa:bb:cc:dd:ee:ff)")
    octets = bytes(int(x, 16) for x in value.split(":"))
    if octets[0] & 1:
        raise SpecError(f"MAC address {value} is a multicast address")
    if octets == bytes(6):
        raise SpecError(f"MAC address {value} is all zeros")
    return value.lower()


def check_pair(spec: PairSpec) -> None:
    if spec.end.name == spec.peer.name and spec.end.netns == spec.peer.netns:
        raise SpecError(f"peer name {spec.peer.name!r} is the same as the name of its end")


# The words ip link add takes for these settings, with the spellings iproute2 also accepts.
_WORDS = {
    "name": "name",
    "dev": "name",
    "netns": "netns",
    "mtu": "mtu",
    "address": "address",
    "addr": "address",
    "txqueuelen": "txqueuelen",
    "txqlen": "txqueuelen",
    "qlen": "txqueuelen",
}
_KEYWORDS = {*_WORDS, "type", "peer", "up", "down"}


def parse_add(words: list[str], default_netns: str | None = None) -> PairSpec:
    """Parse the words after `tapveth add`, as `ip link add` reads them for a veth.

    Accepted: NAME|name NAME|dev NAME, netns NS, mtu N, address MAC, txqueuelen N, up, type
    veth, then peer [name] PEER with its own netns/mtu/address/txqueuelen/up, or `peer vxlan
    …` (see core/vxlanspec.py). `type veth` may stand anywhere before `peer`. `default_netns`
    (`tapveth -n NS`, as `ip -n NS`) is the namespace of an end that names none.
    """
    if "peer" not in words:
        raise SpecError("missing 'peer name PEER' (usage: tapveth add NAME peer name PEER)")
    cut = words.index("peer")
    end = _parse_end(words[:cut], "", default_netns)
    peer: EndSpec | VxlanSpec
    if words[cut + 1 : cut + 2] == ["vxlan"]:
        from tapveth.core.vxlanspec import parse_vxlan_peer

        peer = parse_vxlan_peer(words[cut + 2 :])
    else:
        peer = _parse_end(words[cut + 1 :], "peer ", default_netns)
    spec = PairSpec(end, peer)
    check_pair(spec)
    return spec


def _parse_end(words: list[str], where: str, default_netns: str | None) -> EndSpec:
    fields: dict[str, str] = {}
    up = False
    i = 0

    def take(key: str) -> str:
        nonlocal i
        if i + 1 >= len(words):
            raise SpecError(f"'{where}{words[i]}' needs a value")
        if key in fields:
            raise SpecError(f"'{where}{words[i]}' is given twice")
        value = words[i + 1]
        i += 2
        return value

    while i < len(words):
        word = words[i]
        if word == "type":
            if i + 1 >= len(words) or words[i + 1] != "veth":
                raise SpecError("only 'type veth' is supported")
            if where:
                raise SpecError("'type veth' goes before 'peer'")
            i += 2
        elif word in _WORDS:
            fields[_WORDS[word]] = take(_WORDS[word])
        elif word in ("up", "down"):  # down is the default, as for ip link add
            up = word == "up"
            i += 1
        elif word not in _KEYWORDS and "name" not in fields:
            fields["name"] = word
            i += 1
        else:
            raise SpecError(f"unknown word {word!r} in '{where or 'add'}' arguments")
    if "name" not in fields:
        raise SpecError(f"missing {'peer ' if where else ''}interface name")
    netns = fields.get("netns", default_netns)
    return EndSpec(
        name=check_name(fields["name"]),
        netns=check_netns(netns) if netns is not None else None,
        mtu=check_mtu(fields["mtu"]) if "mtu" in fields else None,
        address=check_mac(fields["address"]) if "address" in fields else None,
        txqueuelen=check_txqueuelen(fields["txqueuelen"]) if "txqueuelen" in fields else None,
        up=up,
    )


@dataclass(frozen=True, slots=True)
class Selector:
    """Which ends del/show/stats mean: `[dev] NAME` (the pair NAME is an end of) and/or
    `netns NS` (the end of that name in NS; without a name, every end in NS)."""

    name: str | None = None
    netns: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    def keeps(self, end: dict[str, Any]) -> bool:
        """Whether an end the daemon reported passes the namespace filter. With a name the
        daemon already chose the pair (both ends, wherever they are)."""
        return self.name is not None or self.netns is None or end.get("netns") == self.netns


def is_tunnel_end(name: str) -> bool:
    """Whether a name is a tunnel end's `vxlan:VNI`, as show lists it (no interface can have a
    ':' in its name, so it never names a device)."""
    prefix, _, vni = name.partition(":")
    return prefix == "vxlan" and vni.isascii() and vni.isdigit() and int(vni) <= vxlan.MAX_VNI


def check_end_name(name: str) -> str:
    """The name of an end as qdisc and fault requests give it: an interface name, or a tunnel
    end's `vxlan:VNI`."""
    return name if is_tunnel_end(name) else check_name(name)


def check_existing_name(name: str) -> str:
    """The name of an end that exists, to show, count or delete: as `ip link` takes it, it may
    hold bytes that are not UTF-8 (someone renamed the end so), which argv hands over as
    surrogate escapes; or a tunnel end's `vxlan:VNI`."""
    if not is_tunnel_end(name):
        check_name(ifname.printable(name))
    return name


def parse_select(words: list[str], required: bool, default_netns: str | None = None) -> Selector:
    """`[dev] NAME [netns NS]` in any order, as iproute2 reads `ip link show`/`del`."""
    name: str | None = None
    netns: str | None = None
    i = 0
    while i < len(words):
        w = words[i]
        if w in ("netns", "dev", "name"):
            if i + 1 >= len(words):
                raise SpecError(f"'{w}' needs a value")
            if (netns if w == "netns" else name) is not None:
                raise SpecError(f"'{w}' is given twice")
            if w == "netns":
                netns = check_netns(words[i + 1])
            else:
                name = check_existing_name(words[i + 1])
            i += 2
        elif name is None:
            name = check_existing_name(w)
            i += 1
        else:
            raise SpecError(f"unknown word {w!r}")
    if required and name is None:
        raise SpecError("which pair? give an end's name")
    return Selector(name, netns if netns is not None else default_netns)
