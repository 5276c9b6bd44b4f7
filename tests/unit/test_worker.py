"""The netlink worker and the recycling of its socket, with pyroute2's IPRoute stood in for
where it must fail (no root needed)."""

import asyncio
import errno
from typing import Any

import pytest
from pyroute2.netlink.exceptions import NetlinkError

from tapveth.daemon.worker import NetlinkWorker
from tapveth.kernel import netlink
from tapveth.kernel.netlink import Netlink


class FakeIPRoute:
    made = 0
    fail: OSError | None = None

    def __init__(self) -> None:
        if FakeIPRoute.fail is not None:
            raise FakeIPRoute.fail
        FakeIPRoute.made += 1
        self.closed = False

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def fake_iproute(monkeypatch: pytest.MonkeyPatch) -> type[FakeIPRoute]:
    FakeIPRoute.made, FakeIPRoute.fail = 0, None
    monkeypatch.setattr(netlink, "IPRoute", FakeIPRoute)
    return FakeIPRoute


def test_recycling_opens_the_new_socket_before_closing_the_old(
    fake_iproute: type[FakeIPRoute],
) -> None:
    nl = Netlink()
    first = nl.ipr
    for _ in range(Netlink.RECYCLE_EVERY):
        nl.tick()
    assert nl.ipr is not first and first.closed and not nl.ipr.closed


def test_recycling_that_fails_keeps_the_socket_and_never_raises(
    fake_iproute: type[FakeIPRoute],
) -> None:
    nl = Netlink()
    first = nl.ipr
    fake_iproute.fail = OSError(errno.EMFILE, "Too many open files")
    for _ in range(Netlink.RECYCLE_EVERY * 3):
        nl.tick()  # would raise EMFILE into the call that just succeeded
    assert nl.ipr is first and not first.closed  # still the working one
    fake_iproute.fail = None
    for _ in range(Netlink.RECYCLE_EVERY):
        nl.tick()
    assert nl.ipr is not first and first.closed  # replaced once it could be


def test_the_worker_turns_kernel_refusals_into_oserror(fake_iproute: type[FakeIPRoute]) -> None:
    def refuse(nl: Netlink) -> Any:
        raise NetlinkError(errno.EINVAL, "Invalid argument")

    async def main() -> tuple[OSError, int]:
        w = NetlinkWorker()
        try:
            with pytest.raises(OSError) as info:
                await w.call(refuse)
            fake_iproute.fail = OSError(errno.EMFILE, "Too many open files")
            results = [await w.call(lambda nl: 7) for _ in range(Netlink.RECYCLE_EVERY + 5)]
            fake_iproute.fail = None
            return info.value, sum(results)
        finally:
            await w.close()

    exc, total = asyncio.run(main())
    assert exc.errno == errno.EINVAL and not isinstance(exc, NetlinkError)
    assert total == 7 * (Netlink.RECYCLE_EVERY + 5)  # no call lost to a failed recycling
