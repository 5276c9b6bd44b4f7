"""Fault schedules run on the event loop: one Plan per end, a call_later armed at its next
step (milliseconds are plenty for faults of seconds). Each step is logged and published on
the event bus as a `fault` event, so `tapveth monitor` shows it. Also the carrier cut that
steps and `tapveth link set … carrier off|on` share."""

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from tapveth.control import ControlError
from tapveth.core.faults import Plan, Schedule, Step
from tapveth.daemon.pair import End, Pair
from tapveth.daemon.vxlan_end import VxlanEnd

if TYPE_CHECKING:
    from tapveth.daemon.service import Daemon

log = logging.getLogger("tapveth")


def set_cut(d: "Daemon", pair: Pair, cut: bool) -> None:
    """Cut a pair's carrier (both ends NO-CARRIER while up) or restore it. On a pair stretched
    over VXLAN the cut is the stretched link's: the TAP end loses carrier, frames both ways
    are dropped, and with BFD the far side is told (the session goes AdminDown, tracking.py)."""
    pair.carrier.cut = cut
    for end in pair.ends():
        end.cut = cut
    d.tracker.update_carrier(pair)


class _Running:
    __slots__ = ("handle", "pair", "plan")

    def __init__(self, pair: Pair, plan: Plan) -> None:
        self.pair = pair
        self.plan = plan
        self.handle: asyncio.TimerHandle | None = None


class Faults:
    """The schedules that run, one per end at most."""

    def __init__(self, daemon: "Daemon") -> None:
        self._d = daemon
        self._running: dict[End | VxlanEnd, _Running] = {}

    def set(self, pair: Pair, end: End | VxlanEnd, schedule: Schedule | None, mode: str) -> None:
        """mode as tc's: add (refused if one runs), replace (either), del (refused if none)."""
        current = self._running.get(end)
        if mode == "add" and current is not None:
            raise ControlError(f"{end.name} already has a fault schedule (use 'replace')")
        if mode == "del" and current is None:
            raise ControlError(f"{end.name} has no fault schedule")
        self.stop(end)
        if schedule is None:
            log.info("fault schedule of %s removed", end.name)
            return
        run = _Running(pair, Plan(schedule, time.monotonic_ns()))
        self._running[end] = run
        log.info("fault schedule of %s: %s", end.name, schedule)
        self._arm(end, run)

    def stop(self, end: End | VxlanEnd) -> None:
        """Forget an end's schedule (replaced, removed, or its pair gone); no step runs."""
        run = self._running.pop(end, None)
        if run is not None and run.handle is not None:
            run.handle.cancel()

    def get(self, end: End | VxlanEnd) -> Schedule | None:
        run = self._running.get(end)
        return run.plan.schedule if run is not None else None

    def show(self, end: End | VxlanEnd) -> dict[str, Any] | None:
        run = self._running.get(end)
        if run is None:
            return None
        nxt = run.plan.next_time()
        return {
            "schedule": str(run.plan.schedule),
            "fired": run.plan.fired,
            "next_in": None if nxt is None else max(0.0, (nxt - time.monotonic_ns()) / 1e9),
        }

    def _arm(self, end: End | VxlanEnd, run: _Running) -> None:
        nxt = run.plan.next_time()
        if nxt is None:
            self._running.pop(end, None)
            log.info("fault schedule of %s done", end.name)
            self._d.events.publish("fault", run.pair, end, fault="done")
            return
        delay = max(0.0, (nxt - time.monotonic_ns()) / 1e9)
        run.handle = asyncio.get_running_loop().call_later(delay, self._fire, end, run)

    def _fire(self, end: End | VxlanEnd, run: _Running) -> None:
        run.handle = None
        if self._running.get(end) is not run or run.pair.closed:
            return
        for step in run.plan.due(time.monotonic_ns()):
            try:
                self._apply(run.pair, end, step)
            except ControlError as exc:  # e.g. the end went away meanwhile: say so, go on
                log.warning(
                    "fault %s on %s (%s) failed: %s", step.action, end.name, step.origin, exc
                )
        self._arm(end, run)

    def _apply(self, pair: Pair, end: End | VxlanEnd, step: Step) -> None:
        if step.action in ("cut", "restore"):
            set_cut(self._d, pair, step.action == "cut")
        elif step.action == "netem":
            self._d.impairments.set(pair, end, step.netem, "replace")
        elif step.action == "clear" and end.impair is not None:
            self._d.impairments.set(pair, end, None, "del")
        log.info("fault on %s (%s): %s", end.name, step.origin, step.describe())
        self._d.events.publish(
            "fault", pair, end, fault=step.action, detail=step.describe(), step=step.origin
        )
