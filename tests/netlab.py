"""Namespaces, processes and checks for integration tests. The lab itself is product code
(tapveth.conformance.lab, which `tapveth compare` uses too); this module names it for the tests
and adds what only tests need."""

import os

from tapveth.conformance.lab import (
    ENDPOINTS,
    Lab,
    LabError,
    Netns,
    Stream,
    finish,
    last_json,
    sh,
    tag,
    wait_for,
)

__all__ = [
    "ENDPOINTS",
    "Lab",
    "LabError",
    "Netns",
    "Stream",
    "finish",
    "is_root_with_tun",
    "last_json",
    "sh",
    "tag",
    "wait_for",
]


def is_root_with_tun() -> bool:
    return os.geteuid() == 0 and os.path.exists("/dev/net/tun")
