"""The daemon's memory set-up: its start-up heap is frozen (what exists then leaves the cyclic
collector's walk, what is made afterwards is still collected), and the heap keeps the memory
that batches of queued frames free instead of faulting it in again."""

import gc
import os
import subprocess
import sys
import weakref

from tapveth.daemon.memory import TRIM_ENV, TRIM_TUNABLE, freeze_startup_heap


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


def test_startup_objects_are_frozen_and_later_cycles_still_collected() -> None:
    before = gc.get_freeze_count()
    try:
        freeze_startup_heap()
        assert gc.get_freeze_count() > before
        a, b = _Node(), _Node()
        a.other, b.other = b, a  # a cycle only the collector can free
        gone = weakref.ref(a)
        del a, b
        gc.collect()
        assert gone() is None
    finally:
        gc.unfreeze()


# Batches of four 64 KiB frames made and freed together, as the impaired path queues and sends
# them; the minor page faults of 500 batches after a warm-up, printed.
_BATCHES = """
import resource, sys
from tapveth.daemon.memory import keep_freed_memory
print(keep_freed_memory() if sys.argv[1] == "keep" else None)
view = memoryview(bytearray(65546))
def run(n):
    for _ in range(n):
        batch = [bytes(view) for _ in range(4)]
        del batch
run(50)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
run(500)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str, **env: str) -> tuple[str, int]:
    clean = {k: v for k, v in os.environ.items() if k not in (TRIM_ENV, "GLIBC_TUNABLES")}
    out = subprocess.run(
        [sys.executable, "-c", _BATCHES, mode],
        env={**clean, **env},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return out[0], int(out[1])


def test_freed_frames_stay_with_the_heap() -> None:
    # glibc's default gives the freed top back and faults it in again: 16 pages a frame
    said, faults = _faults("default")
    assert said == "None"
    assert faults >= 500 * 16
    said, faults = _faults("keep")
    assert said == "True"
    assert faults < 100


def test_the_environment_wins() -> None:
    # 128 KiB, glibc's default, either way: its faults come back
    for env in ({TRIM_ENV: "131072"}, {"GLIBC_TUNABLES": f"{TRIM_TUNABLE}131072"}):
        said, faults = _faults("keep", **env)
        assert said == "False"
        assert faults >= 500 * 16
