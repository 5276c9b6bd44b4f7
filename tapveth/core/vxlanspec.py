"""The vxlan peer of `tapveth add NAME … peer vxlan …`: its grammar, with the words and meanings
of `ip link add … type vxlan`, and the validation of each value. Pure: raises SpecError."""

import ipaddress
from dataclasses import asdict, dataclass
from typing import Any

from tapveth.core import vxlan
from tapveth.core.linkspec import SpecError, check_netns

# BFD timers (RFC 5880): what this end asks for once the session is up. 300 ms x 3 detects a
# dead far side within about a second; RFC 5880 keeps 1 s while the session is not up.
BFD_INTERVAL_MS = 300
BFD_MULTIPLIER = 3


@dataclass(frozen=True, slots=True)
class VxlanSpec:
    """The far end of a pair, reached through a VXLAN tunnel."""

    vni: int
    remote: str
    dstport: int = vxlan.DEFAULT_DSTPORT
    local: str | None = None
    srcport: tuple[int, int] | None = None  # None: the underlay's ip_local_port_range
    underlay_netns: str | None = None  # None: the namespace of who runs `tapveth add`
    bfd: bool = False
    bfd_interval_ms: int = BFD_INTERVAL_MS
    bfd_multiplier: int = BFD_MULTIPLIER
    kind: str = "vxlan"

    @property
    def name(self) -> str:
        """How the end is named in show/stats; ':' keeps it apart from any interface name."""
        return f"vxlan:{self.vni}"

    @property
    def netns(self) -> str | None:
        return self.underlay_netns

    @property
    def ipv6(self) -> bool:
        return ":" in self.remote

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "VxlanSpec":
        if not isinstance(data, dict) or data.get("kind") != "vxlan":
            raise SpecError("a vxlan peer must be an object of kind 'vxlan'")
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise SpecError(f"unknown vxlan field(s): {', '.join(sorted(unknown))}")
        words = ["id", str(data.get("vni")), "remote", str(data.get("remote"))]
        words += ["dstport", str(data.get("dstport", vxlan.DEFAULT_DSTPORT))]
        if data.get("local") is not None:
            words += ["local", str(data["local"])]
        srcport = data.get("srcport")
        if srcport is not None:
            if not isinstance(srcport, list | tuple) or len(srcport) != 2:
                raise SpecError("srcport must be two numbers")
            words += ["srcport", str(srcport[0]), str(srcport[1])]
        if data.get("underlay_netns") is not None:
            words += ["underlay-netns", str(data["underlay_netns"])]
        if data.get("bfd"):
            words += ["bfd"]
        words += ["bfd-interval", str(data.get("bfd_interval_ms", BFD_INTERVAL_MS))]
        words += ["bfd-multiplier", str(data.get("bfd_multiplier", BFD_MULTIPLIER))]
        return parse_vxlan_peer(words)


def _number(word: str, value: str, lo: int, hi: int) -> int:
    if not value.isdigit() or not lo <= int(value) <= hi:
        raise SpecError(f"vxlan {word} {value!r} is not a number in {lo}..{hi}")
    return int(value)


def _address(word: str, value: str) -> str:
    try:
        addr = ipaddress.ip_address(value)
    except ValueError:
        raise SpecError(f"vxlan {word} {value!r} is not an IPv4 or IPv6 address") from None
    if addr.is_multicast or addr.is_unspecified:
        raise SpecError(
            f"vxlan {word} {value} is not a unicast address (multicast groups and learning "
            "are not supported: give the far end's address)"
        )
    return str(addr)


_VALUED = {
    "id",
    "vni",
    "remote",
    "local",
    "dstport",
    "underlay-netns",
    "bfd-interval",
    "bfd-multiplier",
}


def parse_vxlan_peer(words: list[str]) -> VxlanSpec:
    """Parse the words after `peer vxlan`: id VNI remote ADDR [local ADDR] [dstport PORT]
    [srcport MIN MAX] [underlay-netns NS] [bfd] [bfd-interval MS] [bfd-multiplier N].

    id, remote, local, dstport and srcport mean what they mean to `ip link add … type vxlan`
    (srcport MAX excluded, as the kernel does).
    """
    fields: dict[str, str] = {}
    srcport: tuple[int, int] | None = None
    bfd = False
    i = 0
    while i < len(words):
        word = words[i]
        if word in _VALUED:
            key = "id" if word == "vni" else word
            if i + 1 >= len(words):
                raise SpecError(f"'peer vxlan {word}' needs a value")
            if key in fields:
                raise SpecError(f"'peer vxlan {word}' is given twice")
            fields[key] = words[i + 1]
            i += 2
        elif word == "srcport":
            if i + 2 >= len(words):
                raise SpecError("'peer vxlan srcport' needs MIN and MAX")
            lo = _number("srcport", words[i + 1], 1, 65535)
            hi = _number("srcport", words[i + 2], 1, 65535)
            if lo >= hi:
                raise SpecError(f"vxlan srcport {lo} {hi}: MIN must be below MAX")
            srcport = (lo, hi)
            i += 3
        elif word == "bfd":
            bfd = True
            i += 1
        else:
            raise SpecError(f"unknown word {word!r} in 'peer vxlan' arguments")
    if "id" not in fields:
        raise SpecError("missing 'id VNI' (usage: peer vxlan id VNI remote ADDR [dstport PORT])")
    if "remote" not in fields:
        raise SpecError("missing 'remote ADDR': the address of the far end of the tunnel")
    remote = _address("remote", fields["remote"])
    local = _address("local", fields["local"]) if "local" in fields else None
    if local is not None and (":" in local) != (":" in remote):
        raise SpecError(f"vxlan local {local} and remote {remote} are not of the same family")
    return VxlanSpec(
        vni=_number("id", fields["id"], 0, vxlan.MAX_VNI),
        remote=remote,
        dstport=_number("dstport", fields.get("dstport", str(vxlan.DEFAULT_DSTPORT)), 1, 65535),
        local=local,
        srcport=srcport,
        underlay_netns=(
            check_netns(fields["underlay-netns"]) if "underlay-netns" in fields else None
        ),
        bfd=bfd,
        bfd_interval_ms=_number("bfd-interval", fields.get("bfd-interval", "300"), 10, 60000),
        bfd_multiplier=_number("bfd-multiplier", fields.get("bfd-multiplier", "3"), 1, 255),
    )
