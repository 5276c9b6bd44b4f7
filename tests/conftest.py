"""Fixtures shared by the integration suites, and the `backend` fixture that runs each
conformance test against both the kernel veth and tapveth.

Integration tests need root and /dev/net/tun; without them they are skipped, unless
TAPVETH_REQUIRE_INTEGRATION=1 (as in CI) makes that a failure."""

import os
from collections.abc import Iterator

import pytest
from netlab import Lab, is_root_with_tun

from tapveth.conformance.backends import Backend, KernelVeth, TapVeth
from tapveth.private import PrivateDaemon


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if is_root_with_tun():
        return
    if os.environ.get("TAPVETH_REQUIRE_INTEGRATION") == "1":
        raise pytest.UsageError("integration tests need root and /dev/net/tun")
    skip = pytest.mark.skip(reason="needs root and /dev/net/tun")
    for item in items:
        if "integration" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def lab() -> Iterator[Lab]:
    lab = Lab()
    try:
        yield lab
    finally:
        lab.cleanup()


@pytest.fixture
def daemon() -> Iterator[PrivateDaemon]:
    d = PrivateDaemon(log_level="debug")
    d.start()
    try:
        yield d
    finally:
        rc = d.stop()
        print("daemon log:\n" + d.final_log)
        assert rc == 0, f"daemon exited with {rc}"


@pytest.fixture(params=["veth", "tapveth"])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    if request.param == "veth":
        yield KernelVeth()
        return
    d = PrivateDaemon(log_level="debug")
    d.start()
    try:
        yield TapVeth(d)
    finally:
        rc = d.stop()
        print("daemon log:\n" + d.final_log)
        assert rc == 0, f"daemon exited with {rc}"
