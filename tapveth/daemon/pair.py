"""A pair's live state: its two ends, where each is, its carrier and its counters."""

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tapveth.core.rules import Carrier, EndCounters, Flow
from tapveth.kernel.netlink import Location
from tapveth.kernel.tap import Tap

if TYPE_CHECKING:
    from tapveth.daemon.impaired import ImpairedLink


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
    a: End
    b: End
    carrier: Carrier = field(default_factory=Carrier)
    closed: bool = False
    persist: bool = False  # the TAPs outlive the daemon

    def ends(self) -> tuple[End, End]:
        return (self.a, self.b)

    def peer_of(self, end: End) -> End:
        return self.b if end is self.a else self.a

    def counters(self, end: End, kernel_drops: tuple[int, int] | None = None) -> EndCounters:
        return EndCounters.of(end.out, self.peer_of(end).out, kernel_drops)
