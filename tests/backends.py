"""The conformance backends for tests written against pairs directly: the product's
(tapveth.conformance.backends, which `tapveth compare` uses too) under the names the tests
use, plus small helpers that only tests need."""

from tapveth.conformance import backends
from tapveth.conformance.backends import Backend, KernelVeth, TapVeth, quiet
from tapveth.conformance.lab import Netns, wait_for

PairUnderTest = backends.Pair

__all__ = [
    "Backend",
    "KernelVeth",
    "PairUnderTest",
    "TapVeth",
    "bring_up",
    "lower_up",
    "quiet",
    "wait_for",
]


def lower_up(ns: Netns, ifname: str) -> bool:
    return "LOWER_UP" in ns.link(ifname)["flags"]


def bring_up(p: PairUnderTest) -> None:
    """Both ends up, and carrier on both (an AssertionError otherwise)."""
    assert backends.bring_up(p), f"no carrier on {p.a} and {p.b}"
