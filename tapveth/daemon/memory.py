"""The daemon process's memory, set up once before the first pair: what start-up made leaves
the cyclic collector's walk, and the heap keeps the memory that queued frames free."""

import ctypes
import gc
import os

# glibc's mallopt() parameter (malloc.h) and the two ways the environment sets it, which win:
# the old variable and the tunable (GLIBC_TUNABLES=glibc.malloc.trim_threshold=N:...).
M_TRIM_THRESHOLD = -1
TRIM_ENV = "MALLOC_TRIM_THRESHOLD_"
TRIM_TUNABLE = "glibc.malloc.trim_threshold="

# Freed memory the heap keeps before it gives any back to the kernel. A frame that the
# impairments queue is a bytes object of up to 64 KiB, under glibc's mmap threshold
# (128 KiB), so it comes from the top of the heap. With glibc's default threshold
# (128 KiB), a batch of three or more such frames freed together was returned to the kernel
# (brk), and the next batch faulted in fresh zeroed pages, 16 per frame: 222k to 275k minor
# faults in 4 s of one TCP stream through `rate 100gbit`, none with 8 MiB. Setting it also
# stops glibc from raising its mmap threshold as large blocks are freed (mallopt(3)): it stays
# at 128 KiB, above any frame, so frames keep coming from the heap.
TRIM_THRESHOLD = 8 << 20


def freeze_startup_heap() -> None:
    """Take what start-up made (modules, classes, functions: ~20k objects that live as long as
    the process) out of the cyclic collector's walk. A full collection walked them all, 2-5 ms
    in which no frame moved; now it walks only what was made since. No pair exists yet, so
    nothing that may later be freed is frozen."""
    gc.collect()
    gc.freeze()


def keep_freed_memory() -> bool:
    """Raise the heap's trim threshold to TRIM_THRESHOLD, unless the environment sets one or
    the C library has no mallopt() (not glibc): True if it was set."""
    if TRIM_ENV in os.environ or TRIM_TUNABLE in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is None:
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
