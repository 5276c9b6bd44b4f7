"""kernel/counters.py against the kernel: the drop counters of many links in another
namespace, read by nsid in pipelined requests, equal what `ip -s link` reports."""

import json
import subprocess

import pytest
from netlab import Lab, sh

from tapveth.kernel.counters import IN_FLIGHT, LinkCounters

pytestmark = pytest.mark.integration

SEND = """
import socket, sys
for i, name in enumerate(sys.argv[1:]):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((name, 0))
    for _ in range(i % 7 + 1):
        s.send(b"\\xff" * 6 + b"\\x02" * 6 + b"\\x88\\xb5" + b"x" * 50)
"""


def test_drops_of_many_links_by_nsid_match_ip(lab: Lab) -> None:
    ns = lab.netns()
    sh("ip", "netns", "set", ns.name, "auto")  # an nsid here, as the daemon gives one
    n = IN_FLIGHT * 2 + 5  # several batches
    batch = "".join(f"link add a{i} type veth peer name b{i}\nlink set a{i} up\n" for i in range(n))
    subprocess.run(["ip", "-n", ns.name, "-batch", "-"], input=batch, text=True, check=True)
    # A veth whose peer is down drops what it sends, and counts it in tx_dropped.
    ns.run("python3", "-c", SEND, *(f"a{i}" for i in range(n)))
    ids = json.loads(sh("ip", "-j", "netns", "list-id").stdout)
    nsid = next(x["nsid"] for x in ids if x.get("name") == ns.name)
    links = json.loads(sh("ip", "-n", ns.name, "-j", "-s", "link").stdout)
    keys: list[tuple[int | None, int]] = [(nsid, ln["ifindex"]) for ln in links]
    keys.append((nsid, 999_999))  # no such link: (0, 0), not a failure
    counters = LinkCounters()
    try:
        got = counters.drops(keys)
        again = counters.drops(keys[:3])  # the same socket serves the next request too
    finally:
        counters.close()
    want = [(ln["stats64"]["rx"]["dropped"], ln["stats64"]["tx"]["dropped"]) for ln in links]
    assert got == [*want, (0, 0)]
    assert again == want[:3]
    assert sum(tx for _, tx in got) == sum(i % 7 + 1 for i in range(n))  # not all zeros
