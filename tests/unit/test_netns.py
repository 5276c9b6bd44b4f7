"""Whether a namespace made here would be visible outside, read from mountinfo."""

from pathlib import Path

from tapveth.kernel.netns import mounts_propagate_out

HOST = """\
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw
42 27 254:0 /run/netns /run/netns rw,relatime shared:1 - ext4 /dev/vda rw
"""
UNIT = """\
198 101 0:40 / / ro,relatime shared:23 master:2 - overlay overlay rw
213 198 0:47 / /run ro,nosuid,nodev shared:38 master:7 - tmpfs tmpfs rw
224 213 0:47 /netns /run/netns rw,nosuid,nodev shared:45 master:7 - tmpfs tmpfs rw
"""
NO_NETNS_YET = """\
1 0 0:1 / / rw shared:1 - ext4 /dev/vda rw
5 1 0:5 / /run rw shared:7 - tmpfs tmpfs rw
6 1 0:6 / /runner rw master:9 - tmpfs tmpfs rw
"""


def test_mountinfo(tmp_path: Path) -> None:
    for text, expected in ((HOST, True), (UNIT, False), (NO_NETNS_YET, True)):
        f = tmp_path / "mountinfo"
        f.write_text(text)
        assert mounts_propagate_out(str(f)) is expected, text
