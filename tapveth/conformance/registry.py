"""What a behaviour is, the differences from the kernel veth that README documents, and the
verdict on two observations of one behaviour. Pure: no I/O.

A behaviour is a function (Lab, Backend) -> Observation, a flat dict of plain facts, that is
the same on every run of a correct backend. Its registry entry (in behaviours.BEHAVIOURS) gives
the observation veth's semantics predict (`expected`) and, where a TAP cannot give the kernel's
result, the facts README's "Differences from the kernel veth" table documents for tapveth."""

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, TypeAlias

if TYPE_CHECKING:
    from tapveth.conformance.backends import Backend
    from tapveth.conformance.lab import Lab

Fact: TypeAlias = str | int | bool | list[str] | list[int] | None
Observation: TypeAlias = dict[str, Fact]
Outcome = Literal["agree", "documented", "differs"]


@dataclass(frozen=True)
class Difference:
    """One row of README's table of differences from the kernel veth."""

    kernel: str
    tapveth: str


ENOBUFS = Difference(
    "The sender's `send()` fails with ENOBUFS when veth drops a frame (MTU, peer down)",
    "the send succeeds; the frame is dropped and counted in `tapveth stats`",
)
DRIVER = Difference(
    "`ethtool -i` says `driver: veth`; `ethtool -S` has peer_ifindex and XDP counters",
    "`driver: tun`, no `ethtool -S`",
)
LINK_NETNS = Difference("`ip link` shows `veth1@if5` and `link-netns`", "plain `veth1`")
MAX_MTU = Difference("maxmtu 65535, tso_max_size 512 KiB", "maxmtu 65521, tso_max_size 64 KiB")
FIXED_OFF = Difference(
    "`ethtool -k`: rx-checksumming, tx-checksum-sctp, highdma, rx-vlan-offload,"
    " rx-vlan-stag-hw-parse, GRE, IPIP/SIT (ipxip4/6), SCTP, fraglist (tx-gso-list) and AccECN"
    " segmentation on",
    "`off [fixed]`",
)
QUEUES = Difference(
    "one queue per CPU allocated (`numtxqueues 2` here), one in use; `ethtool -l` shows RX/TX"
    " maximum 2, current 1",
    "one queue (`numtxqueues 1`); `ethtool -l` shows Combined 1",
)
DIFFERENCES = (ENOBUFS, DRIVER, LINK_NETNS, MAX_MTU, FIXED_OFF, QUEUES)


@dataclass(frozen=True)
class Documented:
    """A documented difference as a behaviour shows it: the facts tapveth gives instead."""

    row: Difference
    tapveth: Observation


@dataclass(frozen=True)
class Behaviour:
    """A behaviour of the kernel veth, observed the same way on any backend."""

    group: str
    name: str
    title: str
    run: "Callable[[Lab, Backend], Observation]"
    expected: Observation
    documented: tuple[Documented, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.group}/{self.name}"

    def documented_facts(self) -> Observation:
        facts: Observation = {}
        for d in self.documented:
            facts.update(d.tapveth)
        return facts

    def expected_for(self, backend: str) -> Observation:
        """What a correct backend shows: veth's semantics, with tapveth's documented facts."""
        if backend == "veth":
            return dict(self.expected)
        return {**self.expected, **self.documented_facts()}


@dataclass(frozen=True)
class Verdict:
    """How tapveth's observation compares with the kernel veth's."""

    outcome: Outcome
    facts: tuple[str, ...] = ()  # the facts that differ
    rows: tuple[Difference, ...] = ()  # the README rows that document them


MISSING = "(missing)"


def differing(kernel: Mapping[str, Fact], tapveth: Mapping[str, Fact]) -> tuple[str, ...]:
    """The facts with different values (or present on one side only), in observation order."""
    keys = list(kernel) + [k for k in tapveth if k not in kernel]
    return tuple(k for k in keys if kernel.get(k, MISSING) != tapveth.get(k, MISSING))


def verdict(b: Behaviour, kernel: Mapping[str, Fact], tapveth: Mapping[str, Fact]) -> Verdict:
    """agree: the same facts; documented: every difference is one README documents, with the
    value it documents; differs: anything else."""
    facts = differing(kernel, tapveth)
    if not facts:
        return Verdict("agree")
    rows = []
    for f in facts:
        docs = [d for d in b.documented if f in d.tapveth and d.tapveth[f] == tapveth.get(f)]
        if not docs:
            return Verdict("differs", facts)
        rows += [d.row for d in docs if d.row not in rows]
    return Verdict("documented", facts, tuple(rows))


@dataclass
class Result:
    """One behaviour observed on both backends, with the verdict."""

    behaviour: Behaviour
    kernel: Observation
    tapveth: Observation
    verdict: Verdict = field(default_factory=lambda: Verdict("agree"))


def exit_status(results: list[Result]) -> int:
    """0 when every behaviour agrees or differs as documented, 1 otherwise."""
    return 0 if all(r.verdict.outcome != "differs" for r in results) else 1
