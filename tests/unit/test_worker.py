"""The netlink worker: kernel refusals reach the caller as plain OSError, and calls keep their
order (no root needed: a NETLINK_ROUTE socket opens without privileges)."""

import asyncio
import errno
from typing import Any

import pytest

from tapveth.daemon.worker import NetlinkWorker
from tapveth.kernel.netlink import Netlink
from tapveth.kernel.rtnl import NetlinkError


def test_the_worker_turns_kernel_refusals_into_oserror() -> None:
    def refuse(nl: Netlink) -> Any:
        raise NetlinkError(errno.EINVAL, "Invalid argument")

    async def main() -> tuple[OSError, list[int]]:
        w = NetlinkWorker()
        try:
            with pytest.raises(OSError) as info:
                await w.call(refuse)
            results = [await w.call(lambda nl, i: i, i) for i in range(100)]
            return info.value, results
        finally:
            await w.close()

    exc, results = asyncio.run(main())
    assert exc.errno == errno.EINVAL and not isinstance(exc, NetlinkError)
    assert results == list(range(100))  # none lost after a refusal, in order


def test_one_socket_serves_every_call() -> None:
    async def main() -> set[int]:
        w = NetlinkWorker()
        try:
            return {await w.call(lambda nl: id(nl.rtnl)) for _ in range(200)}
        finally:
            await w.close()

    assert len(asyncio.run(main())) == 1
