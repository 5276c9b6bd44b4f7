"""The netlink worker: kernel refusals reach the caller as plain OSError, and calls keep their
order (no root needed: a NETLINK_ROUTE socket opens without privileges). The closer of TAPs at
stop: pairs closed at once, and every TAP closed even when one close fails."""

import asyncio
import errno
import threading
import time
from typing import Any

import pytest

from tapveth.daemon.worker import NetlinkWorker, TapCloser
from tapveth.kernel.netlink import Netlink
from tapveth.kernel.rtnl import NetlinkError
from tapveth.kernel.tap import Tap


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


class SlowTap(Tap):
    """Stands for a TAP whose close waits in the kernel, as the delete of a TAP does. With a
    barrier, the close waits until as many closes as it has parties are under way at once."""

    def __init__(self, fail: bool = False, together: threading.Barrier | None = None) -> None:
        self.closed = False  # no device behind it
        self.fail = fail
        self.together = together

    def close(self) -> None:
        if self.together is not None:
            self.together.wait(30)  # BrokenBarrierError unless the others close meanwhile
        else:
            time.sleep(0.05)
        self.closed = True
        if self.fail:
            raise OSError(errno.EIO, "Input/output error")


def test_the_closer_closes_the_taps_of_many_pairs_at_once() -> None:
    """16 pairs' closes must all be under way together, or none of them returns."""
    together = threading.Barrier(16)
    pairs = [[SlowTap(together=together), SlowTap()] for _ in range(16)]

    async def main() -> None:
        closer = TapCloser()
        try:
            await asyncio.gather(*(closer.close(taps) for taps in pairs))
        finally:
            await closer.shutdown()

    asyncio.run(main())
    assert all(t.closed for taps in pairs for t in taps)
    assert not together.broken


def test_a_close_that_fails_leaves_no_tap_of_the_pair_open() -> None:
    taps = [SlowTap(fail=True), SlowTap()]

    async def main() -> None:
        closer = TapCloser(threads=2)
        try:
            await closer.close(taps)
        finally:
            await closer.shutdown()

    with pytest.raises(OSError) as info:
        asyncio.run(main())
    assert info.value.errno == errno.EIO
    assert all(t.closed for t in taps)
