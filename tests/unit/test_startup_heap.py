"""The daemon freezes its start-up heap: what exists then leaves the cyclic collector's
walk, while what is made afterwards (queued frames, pairs) is still collected."""

import gc
import weakref

from tapveth.daemon.service import _freeze_startup_heap


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


def test_startup_objects_are_frozen_and_later_cycles_still_collected() -> None:
    before = gc.get_freeze_count()
    try:
        _freeze_startup_heap()
        assert gc.get_freeze_count() > before
        a, b = _Node(), _Node()
        a.other, b.other = b, a  # a cycle only the collector can free
        gone = weakref.ref(a)
        del a, b
        gc.collect()
        assert gone() is None
    finally:
        gc.unfreeze()
