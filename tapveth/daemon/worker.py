"""The netlink worker: one thread that runs blocking rtnetlink requests for the event loop.

rtnetlink requests block (a namespace move waits in the kernel for milliseconds), so they run
in a thread of their own, off the event loop (see kernel/netlink.py). One thread keeps the
requests in order.
"""

import asyncio
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from tapveth.kernel.counters import LinkCounters
from tapveth.kernel.netlink import Netlink
from tapveth.kernel.rtnl import NetlinkError
from tapveth.kernel.tap import Tap

T = TypeVar("T")


class NetlinkWorker:
    """Runs fn(netlink, *args) in the worker thread, which owns one Netlink instance.

    A kernel refusal reaches the caller as a plain OSError with its errno, so callers handle
    one kind of failure."""

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
            nl = self._local.nl = Netlink()  # EMFILE here reaches the caller, as OSError
        try:
            return fn(nl, *args)
        except NetlinkError as exc:
            raise OSError(exc.code, os.strerror(exc.code)) from None

    async def close(self) -> None:
        """Close the worker's netlink socket, then the thread."""
        await self.call(lambda nl: nl.close())
        self._executor.shutdown(wait=True)


class CountersWorker:
    """Reads the kernel's counters in a thread of its own: `stats` over many pairs never holds
    up the netlink worker, which adds, deletes and follows ends."""

    def __init__(self) -> None:
        self._counters = LinkCounters()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="tapveth-counters")

    async def drops(self, keys: list[tuple[int | None, int]]) -> list[tuple[int, int]]:
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, self._counters.drops, keys
        )

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self._executor.shutdown, True)
        self._counters.close()


# Closing the fd of a TAP without persistence unregisters it, and the close then waits in the
# kernel for RCU callbacks (rcu_barrier in netdev_run_todo, after rtnl is released): ~16 ms a
# TAP here, nearly all of it waiting. Concurrent waits end together, so closes on this many
# threads take ~1-2 ms a TAP, the part done under rtnl.
CLOSE_THREADS = 32


class TapCloser:
    """Closes the TAPs of many pairs at once, each pair's on a thread of a pool: how a stopping
    daemon deletes its pairs without persistence, ~10x as fast as one delete after another."""

    def __init__(self, threads: int = CLOSE_THREADS) -> None:
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="tapveth-close")

    async def close(self, taps: Sequence[Tap]) -> None:
        """Close these TAPs; a TAP without persistence is deleted by the time this returns."""
        await asyncio.get_running_loop().run_in_executor(self._executor, _close_all, taps)

    async def shutdown(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self._executor.shutdown, True)


def _close_all(taps: Sequence[Tap]) -> None:
    """Close every TAP, even after one close failed; the first failure is then raised."""
    failed: list[OSError] = []
    for tap in taps:
        try:
            tap.close()
        except OSError as exc:
            failed.append(exc)
    if failed:
        raise failed[0]
