"""Types of the C extension _offload.c (see core/offload.py and core/vxlan.py)."""

def segment_tcp(
    frame: bytes | bytearray | memoryview,
    l4: int,
    mss: int,
    prefix: bytes,
    out: bytearray | memoryview,
    /,
) -> tuple[int, int, int]: ...
def merge_tcp(
    data: bytes | bytearray | memoryview,
    size: int,
    count: int,
    vni_field: bytes,
    out: bytearray | memoryview,
    /,
) -> tuple[int, int, int, int]: ...
