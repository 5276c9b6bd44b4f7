"""Frames sent in the first moments after the peer went down count where veth counts them.

When A goes down, veth takes B's carrier away at once and B's queue stops: what B sends next is
dropped on B (tx_dropped) and A counts nothing. A TAP's own carrier change can take up to a
second to stop its queue (the kernel's linkwatch is rate-limited for it), so meanwhile the
frames still reach the relay; they must be counted the same way from the first one.

The kernel's linkwatch treats a carrier change as urgent only on a device whose ifindex differs
from its link's (veth: its peer's): ends that happen to have the same ifindex number in their
own namespaces stop the queue only when the rate-limited linkwatch runs, and meanwhile veth
counts such frames on both ends. The test gives the ends different ifindexes, the usual case.
"""

import sys

import pytest
from backends import Backend, PairUnderTest, bring_up, quiet
from netlab import Lab, last_json

pytestmark = pytest.mark.integration

FRAMES = 20

# Run inside B's namespace: take A down, then at once send FRAMES raw frames from B.
SENDER = """
import json, socket, subprocess, sys, time
ns_a, a, b = sys.argv[1:4]
n = int(sys.argv[4])
sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
sock.bind((b, 0))
src = bytes.fromhex(open(f"/sys/class/net/{b}/address").read().strip().replace(":", ""))
frame = (b"\\xff" * 6 + src + b"\\x88\\xb5").ljust(100, b"\\0")
subprocess.run(["ip", "-n", ns_a, "link", "set", a, "down"], check=True)
results = []
for _ in range(n):
    try:
        sock.send(frame)
        results.append("ok")
    except OSError as exc:
        results.append(str(exc.errno))
    time.sleep(0.001)
print(json.dumps({"results": results}))
"""


def test_drops_right_after_the_peer_goes_down(lab: Lab, backend: Backend) -> None:
    ns_a, ns_b = lab.netns("a"), lab.netns("b")
    quiet(ns_a)
    quiet(ns_b)
    # A spare pair in B's namespace first, so that B's ifindex differs from A's.
    ns_b.ip("link", "add", lab.name("spx"), "type", "veth", "peer", "name", lab.name("spy"))
    p = PairUnderTest(backend, ns_a, ns_b, lab.name("cfa"), lab.name("cfb"))
    backend.add(p.a, ns_a, p.b, ns_b)
    assert ns_a.link(p.a)["ifindex"] != ns_b.link(p.b)["ifindex"]
    bring_up(p)
    before_a = p.backend.counters(p.a, p.ns_a)
    before_b = p.backend.counters(p.b, p.ns_b)
    out = p.ns_b.run(
        sys.executable, "-c", SENDER, p.ns_a.name, p.a, p.b, str(FRAMES), timeout=60
    ).stdout
    assert len(last_json(out)["results"]) == FRAMES
    after_a = p.backend.counters(p.a, p.ns_a)
    after_b = p.backend.counters(p.b, p.ns_b)
    delta_a = {k: after_a[k] - before_a[k] for k in after_a}
    delta_b = {k: after_b[k] - before_b[k] for k in after_b}
    # Every frame is B's drop; A saw nothing, neither delivered nor dropped.
    assert delta_b["tx_dropped"] == FRAMES, (delta_a, delta_b)
    assert delta_b["tx_packets"] == 0, (delta_a, delta_b)
    assert delta_a["rx_dropped"] == 0, (delta_a, delta_b)
    assert delta_a["rx_packets"] == 0, (delta_a, delta_b)
