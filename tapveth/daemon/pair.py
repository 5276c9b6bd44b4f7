"""A pair's live state: its two ends, where each is, its carrier and its counters."""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tapveth.core.rules import Carrier, EndCounters, Flow
from tapveth.kernel.netlink import Location
from tapveth.kernel.tap import Tap

if TYPE_CHECKING:
    from tapveth.daemon.capture import Capture
    from tapveth.daemon.impaired import ImpairedLink
    from tapveth.daemon.vxlan_end import VxlanEnd


# What the relay judges an end's frames by: a change is told to End.watch (daemon/native.py).
_WATCHED = frozenset({"up", "mtu", "impair", "cut", "captures"})


@dataclass(eq=False, slots=True)
class End:
    """One end: its TAP, what netlink last told about it, and the flow of frames it sends."""

    tap: Tap
    name: str
    nsid: int | None = None
    index: int = 0
    up: bool = False
    mtu: int = 1500
    address: str = ""
    ns_inode: int = 0
    out: Flow = field(default_factory=Flow)
    locating: bool = False  # a lookup of where it is now is under way
    stale: bool = False  # what we know of its place may be out of date
    impair: "ImpairedLink | None" = None  # netem on the frames it sends; None: straight relay
    cut: bool = False  # the pair's carrier is cut (a fault): what it sends is dropped
    captures: tuple["Capture", ...] = ()  # captures watching the frames this end sends
    native: bool = False  # the native thread relays what it sends (daemon/native.py)
    watch: "Callable[[End], None] | None" = None  # told of each change of a _WATCHED field

    def __setattr__(self, name: str, value: object) -> None:
        object.__setattr__(self, name, value)
        if name in _WATCHED:
            watch = getattr(self, "watch", None)  # unset while __init__ runs
            if watch is not None:
                watch(self)

    @property
    def fd(self) -> int:
        return self.tap.fd

    @property
    def key(self) -> tuple[int | None, int]:
        return (self.nsid, self.index)

    def moved_to(self, loc: Location) -> None:
        self.nsid = loc.nsid
        self.index = loc.index
        self.name = loc.name
        self.up = loc.up
        self.mtu = loc.mtu
        self.address = loc.address
        self.ns_inode = loc.ns_inode


@dataclass(eq=False, slots=True)
class Pair:
    """Two ends: a is always a TAP; b is a TAP, or the far end of a VXLAN tunnel."""

    a: End
    b: "End | VxlanEnd"
    carrier: Carrier = field(default_factory=Carrier)
    closed: bool = False
    persist: bool = False  # the TAPs outlive the daemon

    def ends(self) -> "tuple[End, End | VxlanEnd]":
        return (self.a, self.b)

    def taps(self) -> tuple[End, ...]:
        """The ends that are TAPs: what link events, carrier and deletion apply to."""
        return (self.a, self.b) if isinstance(self.b, End) else (self.a,)

    def peer_of(self, end: "End | VxlanEnd") -> "End | VxlanEnd":
        return self.b if end is self.a else self.a

    def counters(
        self, end: "End | VxlanEnd", kernel_drops: tuple[int, int] | None = None
    ) -> EndCounters:
        return EndCounters.of(end.out, self.peer_of(end).out, kernel_drops)
