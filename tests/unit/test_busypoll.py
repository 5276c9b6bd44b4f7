"""The busy-poll ticks deliver an impaired direction's head frame when it is due, and say when
a timer is still needed, on a real event loop (no devices)."""

import asyncio
import time

from tapveth.daemon.busypoll import BusyPoll


def test_a_due_time_inside_the_window_is_delivered_by_a_tick_without_a_timer() -> None:
    calls: list[int] = []

    async def main() -> None:
        busy = BusyPoll(asyncio.get_running_loop(), 5000)  # a 5 ms window
        busy.traffic()
        when = time.monotonic_ns() + 1_000_000
        assert busy.watch("a", lambda: calls.append(time.monotonic_ns()), when) is True
        await asyncio.sleep(0.02)
        assert len(calls) == 1 and calls[0] >= when

    asyncio.run(main())


def test_a_due_time_past_the_window_needs_the_timer() -> None:
    async def main() -> None:
        busy = BusyPoll(asyncio.get_running_loop(), 1000)
        assert busy.watch("a", lambda: None, time.monotonic_ns()) is False  # not polling
        busy.traffic()
        assert busy.watch("a", lambda: None, time.monotonic_ns() + 50_000_000) is False

    asyncio.run(main())


def test_forgotten_and_disabled_watches_deliver_nothing() -> None:
    calls: list[str] = []

    async def main() -> None:
        busy = BusyPoll(asyncio.get_running_loop(), 5000)
        busy.traffic()
        busy.watch("a", lambda: calls.append("a"), time.monotonic_ns() + 500_000)
        assert busy.watch("a", lambda: calls.append("a"), None) is False
        off = BusyPoll(asyncio.get_running_loop(), 0)
        off.traffic()
        assert off.watch("b", lambda: calls.append("b"), time.monotonic_ns()) is False
        await asyncio.sleep(0.02)

    asyncio.run(main())
    assert calls == []


def test_a_delivery_that_watches_again_is_called_at_its_next_time() -> None:
    times: list[int] = []
    start = time.monotonic_ns()

    async def main() -> None:
        busy = BusyPoll(asyncio.get_running_loop(), 200_000)  # 200 ms: room for a stall

        def deliver() -> None:
            times.append(time.monotonic_ns())
            if len(times) < 3:  # as ImpairedLink.rearm() does for the next head frame
                busy.watch("a", deliver, start + 1_000_000 * (len(times) + 1))

        busy.traffic()
        busy.watch("a", deliver, start + 1_000_000)
        await asyncio.sleep(0.3)

    asyncio.run(main())
    assert len(times) == 3
    assert all(t >= start + 1_000_000 * (i + 1) for i, t in enumerate(times))  # none early
