"""Fixtures shared by the integration suites, and the `backend` fixture that runs each
conformance test against both the kernel veth and tapveth.

Integration tests need root and /dev/net/tun; without them they are skipped, unless
TAPVETH_REQUIRE_INTEGRATION=1 (as in CI) makes that a failure."""

import os
from collections.abc import Callable, Iterator

import pytest
from netlab import Lab, is_root_with_tun, private_daemon

from tapveth.conformance.backends import Backend, KernelVeth, Pair, TapVeth, make_pair
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
    with private_daemon() as d:
        yield d


@pytest.fixture(params=["veth", "tapveth"])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    if request.param == "veth":
        yield KernelVeth()
        return
    with private_daemon() as d:
        yield TapVeth(d)


@pytest.fixture(name="make_pair")
def make_pair_fixture(lab: Lab, backend: Backend) -> Callable[..., Pair]:
    """make_pair(*extra_a, silent=False): a pair of the backend under test, in two fresh
    namespaces."""

    def make(*extra_a: str, silent: bool = False) -> Pair:
        return make_pair(lab, backend, *extra_a, silent=silent)

    return make
