"""The conformance backends for tests written against pairs directly: the product's
(tapveth.conformance.backends, which `tapveth compare` uses too) under the names the tests
use, plus small helpers that only tests need."""

from tapveth.conformance.backends import Backend, KernelVeth, TapVeth
from tapveth.conformance.lab import Netns, wait_for

__all__ = [
    "Backend",
    "KernelVeth",
    "TapVeth",
    "lower_up",
    "wait_for",
]


def lower_up(ns: Netns, ifname: str) -> bool:
    return "LOWER_UP" in ns.link(ifname)["flags"]
