"""The netlink worker: one thread that runs blocking rtnetlink requests for the event loop.

pyroute2's asyncio transport does not run on uvloop, so its synchronous IPRoute is used from a
thread of its own (see kernel/netlink.py). One thread keeps the requests in order.
"""

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from tapveth.kernel.netlink import Netlink

T = TypeVar("T")


class NetlinkWorker:
    """Runs fn(netlink, *args) in the worker thread, which owns one Netlink instance."""

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="tapveth-netlink")
        self._local = threading.local()

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, self._in_worker, fn, args
        )

    def _in_worker(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        nl = getattr(self._local, "nl", None)
        if nl is None:
            nl = self._local.nl = Netlink()
        try:
            return fn(nl, *args)
        finally:
            nl.tick()

    async def close(self) -> None:
        """Close the worker's netlink socket, then the thread."""
        await self.call(lambda nl: nl.close())
        self._executor.shutdown(wait=True)
