"""The behaviours of the kernel veth that tapveth reproduces, each written once and run on both
backends: by the conformance tests (with assertions) and by `tapveth compare` (as a report).

Each behaviour makes its own pair in fresh namespaces of the Lab, drives it with iproute2 and
sockets, and returns an Observation: plain facts, the same on every run of a correct backend
(no timings, no random names or addresses). Where it waits for the kernel, it waits a bounded
time and then records what it sees, so a backend that never gets there shows up as a fact.

To add a behaviour: write a function (Lab, Backend) -> Observation here and add one entry to
BEHAVIOURS at the end of this file, with the facts veth's semantics predict."""

import json
import os
import sys
import tempfile

from tapveth.conformance.backends import (
    Backend,
    Pair,
    bring_up,
    make_pair,
    quiet,
    send_frames,
)
from tapveth.conformance.lab import Lab, Netns, Stream, finish, last_json, sh, wait_until
from tapveth.conformance.registry import (
    DRIVER,
    ENOBUFS,
    FIXED_OFF,
    LINK_NETNS,
    MAX_MTU,
    QUEUES,
    Behaviour,
    Documented,
    Observation,
)

MB = 1 << 20
# veth allocates one queue per possible CPU (os.cpu_count() on this VM, as the tests
# assumed): a fact of the machine, so its expectation is computed here.
CPUS = os.cpu_count() or 1
# AF_PACKET packet types (linux/if_packet.h), by the number the receiver reports.
PKTTYPES = {0: "host", 1: "broadcast", 2: "multicast", 3: "otherhost"}


def _state(p: Pair, side: str) -> str:
    """Admin state, carrier flag and operstate as `ip link` prints them."""
    link = p.link(side)
    shown = [f for f in ("NO-CARRIER", "UP", "LOWER_UP") if f in link["flags"]]
    return f"<{','.join(shown)}> state {link['operstate']}"


def _flags(p: Pair, side: str) -> list[str]:
    return [str(f) for f in p.link(side)["flags"]]


# -- carrier ---------------------------------------------------------------------------------


def carrier_follows_admin_states(lab: Lab, backend: Backend) -> Observation:
    """Both ends' state and carrier counters after each combination of admin states."""
    p = make_pair(lab, backend)
    obs: Observation = {}

    def record(step: str, sysfs_side: str) -> None:
        obs[f"{step}: A"] = _state(p, "a")
        obs[f"{step}: B"] = _state(p, "b")
        obs[f"{step}: carrier_changes"] = p.carrier_changes()
        obs[f"{step}: {sysfs_side.upper()} sysfs carrier"] = p.sysfs(sysfs_side, "carrier")

    record("created", "a")  # EINVAL (ERR) while admin-down
    p.ns_a.ip("link", "set", p.a, "up")
    wait_until(lambda: "UP" in _flags(p, "a"))
    record("A up", "a")
    p.ns_b.ip("link", "set", p.b, "up")
    wait_until(lambda: p.lower_up("a") and p.lower_up("b"))
    wait_until(lambda: p.link("a")["operstate"] == p.link("b")["operstate"] == "UP")
    record("both up", "b")
    p.ns_a.ip("link", "set", p.a, "down")
    wait_until(lambda: _state(p, "b") == "<NO-CARRIER,UP> state DOWN")
    record("A down", "b")
    p.ns_b.ip("link", "set", p.b, "down")
    p.ns_a.ip("link", "set", p.a, "up")
    wait_until(lambda: "UP" in _flags(p, "a"))
    record("B down, A up", "a")
    return obs


def carrier_counters_after_flaps(lab: Lab, backend: Backend) -> Observation:
    """Carrier counters on both ends after B up and five up/down cycles of A."""
    p = make_pair(lab, backend)
    p.ns_b.ip("link", "set", p.b, "up")
    for _ in range(5):
        p.ns_a.ip("link", "set", p.a, "up")
        wait_until(lambda: p.lower_up("b"))
        p.ns_a.ip("link", "set", p.a, "down")
        wait_until(lambda: not p.lower_up("b"))
    obs: Observation = {"carrier_changes": p.carrier_changes()}
    for side in ("a", "b"):
        for attr in ("carrier_up_count", "carrier_down_count"):
            obs[f"{side.upper()} {attr}"] = int(p.sysfs(side, attr))
    return obs


def carrier_flap_storm(lab: Lab, backend: Backend) -> Observation:
    """B toggled 500 times (one `ip -batch`) while iperf3 runs from A: the stream survives,
    carrier comes back on both ends with equal counters, and ping works after."""
    p = make_pair(lab, backend, silent=True)  # exact counts: no ND or MLD frames
    p.ns_a.ip("addr", "add", "10.9.2.1/24", "dev", p.a)
    p.ns_b.ip("addr", "add", "10.9.2.2/24", "dev", p.b)
    bring_up(p)
    server = lab.spawn(
        "ip", "netns", "exec", p.ns_b.name, "iperf3", "-s", "-1", "-B", "10.9.2.2", "-p", "5501"
    )
    wait_until(lambda: "5501" in p.ns_b.run("ss", "-ltn").stdout)
    client = lab.spawn(
        "ip",
        "netns",
        "exec",
        p.ns_a.name,
        "iperf3",
        "-c",
        "10.9.2.2",
        "-p",
        "5501",
        "-t",
        "8",
        "-J",
        "--connect-timeout",
        "3000",
    )
    with tempfile.NamedTemporaryFile("w", suffix=".batch") as batch:
        for _ in range(250):
            batch.write(f"link set {p.b} down\nlink set {p.b} up\n")
        batch.flush()
        sh("ip", "-n", p.ns_b.name, "-batch", batch.name, timeout=60)
    out, _ = client.communicate(timeout=60)
    server.wait(30)
    try:
        result = json.loads(out)
        error, received = result.get("error"), result["end"]["sum_received"]["bytes"]
    except (ValueError, KeyError):
        error, received = f"no result: {out[:200]!r}", 0
    obs: Observation = {"iperf3 error": error, "iperf3 received bytes": received > 0}
    obs["carrier on both after"] = wait_until(lambda: p.lower_up("a") and p.lower_up("b"))
    changes = p.carrier_changes()
    obs["carrier_changes equal"] = changes[0] == changes[1]
    obs["carrier_changes even, >= 2"] = changes[0] % 2 == 0 and changes[0] >= 2
    r = p.ns_a.ping("10.9.2.2", count=5, deadline=20)
    obs["ping after: 0% loss"] = r.returncode == 0 and " 0% packet loss" in r.stdout
    obs["backend's own accounts"] = backend.audit(p)
    return obs


# -- frames ----------------------------------------------------------------------------------


def frames_mtu_boundary(lab: Lab, backend: Backend) -> Observation:
    """B's MTU 1400: raw frames of 60..1514 bytes from A, untagged then 802.1Q-tagged; frames
    up to 1400 + 18 bytes pass either way. Then both ends' counters."""
    p = make_pair(lab, backend, silent=True)
    p.ns_b.ip("link", "set", p.b, "mtu", "1400")
    bring_up(p)
    sizes = [60, 1417, 1418, 1419, 1420, 1514]
    obs: Observation = {"sizes": sizes}
    untagged = send_frames(p, sizes)
    obs["untagged: send()"], obs["untagged: received"] = untagged.results, untagged.received
    tagged = send_frames(p, sizes, vlan=5, seq0=100)
    obs["tagged: send()"], obs["tagged: received"] = tagged.results, tagged.received
    c_a, c_b = p.counters("a"), p.counters("b")
    for k in ("tx_packets", "tx_bytes", "tx_dropped", "rx_packets"):
        obs[f"A {k}"] = c_a[k]
    # B's rx_dropped: the 6 frames refused by the pair, plus the 3 untagged frames B's stack
    # had no handler for (their EtherType is unknown; tagged ones count in rx_nohandler
    # instead, as on any device).
    for k in ("rx_packets", "rx_bytes", "rx_dropped", "tx_packets"):
        obs[f"B {k}"] = c_b[k]
    return obs


def frames_jumbo_boundary(lab: Lab, backend: Backend) -> Observation:
    """B's MTU 8999 (A's 9100, so A may send them): 9016 and 9017 bytes pass, 9018 does not."""
    p = make_pair(lab, backend, "mtu", "9100", silent=True)
    p.ns_b.ip("link", "set", p.b, "mtu", "8999")
    bring_up(p)
    sent = send_frames(p, [9016, 9017, 9018])
    return {"sizes": [9016, 9017, 9018], "send()": sent.results, "received": sent.received}


def frames_mtu_change_next_frame(lab: Lab, backend: Backend) -> Observation:
    """A 1419-byte frame right after B's MTU is set to 1400 (refused), then to 1401 (passes)."""
    p = make_pair(lab, backend, silent=True)
    bring_up(p)
    p.ns_b.ip("link", "set", p.b, "mtu", "1400")
    before = send_frames(p, [1419]).received
    p.ns_b.ip("link", "set", p.b, "mtu", "1401")
    after = send_frames(p, [1419], seq0=1).received
    return {"1419 B at MTU 1400: received": before, "1419 B at MTU 1401: received": after}


# -- delivery and counters --------------------------------------------------------------------


def delivery_without_mac_filter(lab: Lab, backend: Backend) -> Observation:
    """Foreign unicast, broadcast, IPv4 and IPv6 multicast frames all reach B without any
    subscription, with the packet type the destination implies."""
    p = make_pair(lab, backend, silent=True)
    bring_up(p)
    dsts = {
        "foreign unicast": "02:00:00:aa:bb:cc",
        "broadcast": "ff:ff:ff:ff:ff:ff",
        "IPv4 multicast": "01:00:5e:00:00:fb",
        "IPv6 multicast": "33:33:00:00:00:01",
    }
    obs: Observation = {}
    for i, (label, dst) in enumerate(dsts.items()):
        sent = send_frames(p, [100], dst=dst, seq0=i)
        got = sent.pkttypes.get(i)
        obs[f"{label}: B got it as"] = "not received" if got is None else PKTTYPES.get(got, got)
    c_b = p.counters("b")
    obs["B rx_packets"], obs["B rx_bytes"] = c_b["rx_packets"], c_b["rx_bytes"]
    return obs


def counters_peer_down(lab: Lab, backend: Backend) -> Observation:
    """Three frames from A while B is admin-down: none arrives; A counts them as tx_dropped."""
    p = make_pair(lab, backend, silent=True)
    bring_up(p)
    p.ns_b.ip("link", "set", p.b, "down")
    # What send() returns is not recorded: on the kernel veth it depends on whether the link
    # watcher has already swapped A's qdisc for noop (then "ok") or not yet (ENOBUFS).
    sent = send_frames(p, [100, 100, 100])
    c_a = p.counters("a")
    return {
        "received": sent.received,
        "A tx_packets": c_a["tx_packets"],
        "A tx_dropped": c_a["tx_dropped"],
    }


# Run inside B's namespace: take A down, then at once send `n` raw frames from B, 1 ms apart.
# Inline rather than a traffic endpoint: the frames must follow the `ip link set down` within
# microseconds, not after an interpreter starts.
_DOWN_THEN_SEND = """
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
DROPPED_FRAMES = 20


def counters_right_after_peer_down(lab: Lab, backend: Backend) -> Observation:
    """A taken down, then at once 20 frames from B: every one is B's drop (tx_dropped) and A
    counts nothing. veth takes B's carrier away at once; a TAP's own carrier change can take up
    to a second to stop its queue (the kernel's linkwatch is rate-limited for it), so tapveth
    must count the frames that still reach it the same way, from the first one.

    The kernel's linkwatch treats a carrier change as urgent only on a device whose ifindex
    differs from its link's (veth: its peer's): ends with the same ifindex number, one in each
    namespace, stop the queue only when the rate-limited linkwatch runs, and meanwhile veth
    counts such frames on both ends (README's table of differences). So the ends here get
    different ifindexes, the usual case."""
    ns_a, ns_b = lab.netns("a"), lab.netns("b")
    quiet(ns_a)
    quiet(ns_b)
    # A spare pair in B's namespace first, so that B's ifindex differs from A's.
    ns_b.ip("link", "add", lab.name("spx"), "type", "veth", "peer", "name", lab.name("spy"))
    p = Pair(backend, ns_a, ns_b, lab.name("cfa"), lab.name("cfb"))
    backend.add(p.a, ns_a, p.b, ns_b)
    obs: Observation = {"ifindexes differ": ns_a.link(p.a)["ifindex"] != ns_b.link(p.b)["ifindex"]}
    obs["carrier after up"] = bring_up(p)
    before_a, before_b = p.counters("a"), p.counters("b")
    out = ns_b.run(
        sys.executable, "-c", _DOWN_THEN_SEND, ns_a.name, p.a, p.b, str(DROPPED_FRAMES), timeout=60
    ).stdout
    # What send() returns is not recorded: it depends on when the queue stops (see above).
    obs["frames sent from B"] = len(last_json(out)["results"])
    after_a, after_b = p.counters("a"), p.counters("b")
    for k in ("tx_dropped", "tx_packets"):
        obs[f"B {k}"] = after_b[k] - before_b[k]
    for k in ("rx_dropped", "rx_packets"):
        obs[f"A {k}"] = after_a[k] - before_a[k]
    return obs


# -- lifecycle --------------------------------------------------------------------------------


def _deleted(p: Pair, a_too: bool) -> Observation:
    """Whether each end is gone, once both are (or after the usual wait)."""

    def gone_a() -> bool:
        return not p.ns_a.has_link(p.a)

    def gone_b() -> bool:
        return not p.ns_b.has_link(p.b)

    wait_until(lambda: gone_b() and (gone_a() or not a_too))
    return {"A gone": gone_a(), "B gone": gone_b()}


def delete_link_a(lab: Lab, backend: Backend) -> Observation:
    """`ip link del` of A deletes both ends."""
    p = make_pair(lab, backend)
    bring_up(p)
    p.ns_a.ip("link", "del", p.a)
    return _deleted(p, True)


def delete_link_b(lab: Lab, backend: Backend) -> Observation:
    """`ip link del` of B deletes both ends."""
    p = make_pair(lab, backend)
    bring_up(p)
    p.ns_b.ip("link", "del", p.b)
    return _deleted(p, True)


def delete_netns(lab: Lab, backend: Backend) -> Observation:
    """`ip netns del` of A's namespace deletes B too."""
    p = make_pair(lab, backend)
    bring_up(p)
    sh("ip", "netns", "del", p.ns_a.name)
    return _deleted(p, False)


def delete_backend(lab: Lab, backend: Backend) -> Observation:
    """The backend's own delete (`ip link del`, `tapveth del`) deletes both ends."""
    p = make_pair(lab, backend)
    bring_up(p)
    backend.delete(p.a, p.ns_a)
    return _deleted(p, True)


def move_and_back(lab: Lab, backend: Backend) -> Observation:
    """A moved to a third namespace and back: it arrives admin-down, B loses carrier, and
    the pair carries ping once A is up again there."""
    p = make_pair(lab, backend)
    bring_up(p)
    ns_c: Netns = lab.netns("c")
    p.ns_a.ip("link", "set", p.a, "netns", ns_c.name)
    moved = Pair(backend, ns_c, p.ns_b, p.a, p.b)
    obs: Observation = {"A admin-up after the move": "UP" in _flags(moved, "a")}
    obs["B loses carrier"] = wait_until(lambda: not p.lower_up("b"))
    ns_c.ip("link", "set", p.a, "up")
    obs["carrier back"] = wait_until(lambda: moved.lower_up("b") and moved.lower_up("a"))
    ns_c.ip("addr", "add", "10.9.1.1/24", "dev", p.a)
    p.ns_b.ip("addr", "add", "10.9.1.2/24", "dev", p.b)
    obs["ping from the new namespace"] = ns_c.ping("10.9.1.2").returncode == 0
    ns_c.ip("link", "set", p.a, "netns", p.ns_a.name)
    p.ns_a.ip("link", "set", p.a, "up")
    obs["carrier after moving back"] = wait_until(lambda: p.lower_up("b"))
    return obs


def rename(lab: Lab, backend: Backend) -> Observation:
    """A renamed while down, then renamed back while up: the pair keeps carrying traffic under
    each name, and the backend's own delete by the current name deletes both ends."""
    p = make_pair(lab, backend)
    p.ns_a.ip("addr", "add", "10.9.3.1/24", "dev", p.a)
    p.ns_b.ip("addr", "add", "10.9.3.2/24", "dev", p.b)
    new = lab.name("cfr")
    p.ns_a.ip("link", "set", p.a, "name", new)
    renamed = Pair(backend, p.ns_a, p.ns_b, new, p.b)
    obs: Observation = {"old name gone": not p.ns_a.has_link(p.a)}
    obs["carrier after up"] = bring_up(renamed)
    obs["ping under the new name"] = p.ns_a.ping("10.9.3.2").returncode == 0
    live = p.ns_a.ip("link", "set", new, "name", p.a, check=False)
    obs["rename back while up"] = "ok" if live.returncode == 0 else "refused"
    current = p if live.returncode == 0 else renamed
    obs["carrier after"] = current.lower_up("a") and current.lower_up("b")
    obs["ping after"] = p.ns_a.ping("10.9.3.2").returncode == 0
    backend.delete(current.a, p.ns_a)
    gone = _deleted(current, True)
    obs["own delete by that name: both gone"] = gone["A gone"] is True and gone["B gone"] is True
    return obs


# -- link attributes --------------------------------------------------------------------------


def attributes_defaults(lab: Lab, backend: Backend) -> Observation:
    """MTU, queue length, qdisc, minimum MTU and MAC kind of both ends once up."""
    p = make_pair(lab, backend)
    bring_up(p)
    obs: Observation = {}
    for side in ("a", "b"):
        link = p.link(side)
        for k in ("mtu", "txqlen", "qdisc", "min_mtu"):
            obs[f"{side.upper()} {k}"] = link[k]
        first = int(str(link["address"]).split(":")[0], 16)
        # random, locally administered (bit 1), unicast (bit 0 clear)
        obs[f"{side.upper()} MAC local unicast"] = bool(first & 0x02) and not first & 0x01
    obs["MACs differ"] = p.link("a")["address"] != p.link("b")["address"]
    return obs


def attributes_identity(lab: Lab, backend: Backend) -> Observation:
    """Driver (`ip -d link`, `ethtool -i`), the link-netns peer reference and the maximum MTU."""
    p = make_pair(lab, backend)
    link = p.link("a")
    info = p.ns_a.run("ethtool", "-i", p.a).stdout
    driver = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ":" in ln), "")
    linkinfo = link.get("linkinfo")
    kind = linkinfo.get("info_kind") if isinstance(linkinfo, dict) else None
    return {
        "ethtool -i driver": driver,
        "ip -d link kind": kind,
        "link-netns shown": "link_netnsid" in link,
        "max_mtu": int(link["max_mtu"]),
    }


def attributes_mtu_range(lab: Lab, backend: Backend) -> Observation:
    """`ip link set mtu` to 65521 and 68 works; 67 is refused and leaves 68."""
    p = make_pair(lab, backend)
    obs: Observation = {}
    for mtu in ("65521", "68", "67"):
        r = p.ns_a.ip("link", "set", p.a, "mtu", mtu, check=False)
        obs[f"mtu {mtu}"] = "ok" if r.returncode == 0 else "refused"
    obs["mtu after"] = int(p.link("a")["mtu"])
    return obs


# -- features ---------------------------------------------------------------------------------

# veth's defaults (`ethtool -k`) that tapveth matches: offloads through TUNSETOFFLOAD, the rest
# set with the ethtool ioctl when the TAP is made. Only the on/off word: whether it is fixed is
# the driver's business.
MATCHED_FEATURES = {
    "tx-checksumming": "on",
    "tx-checksum-ip-generic": "on",
    "scatter-gather": "on",
    "tx-scatter-gather": "on",
    "tx-scatter-gather-fraglist": "on",
    "tcp-segmentation-offload": "on",
    "tx-tcp-segmentation": "on",
    "tx-tcp-ecn-segmentation": "on",
    "tx-tcp-mangleid-segmentation": "on",
    "tx-tcp6-segmentation": "on",
    "generic-segmentation-offload": "on",
    "generic-receive-offload": "off",
    "tx-vlan-offload": "on",
    "tx-vlan-stag-hw-insert": "on",
    "tx-udp_tnl-segmentation": "on",
    "tx-udp_tnl-csum-segmentation": "on",
    "tx-udp-segmentation": "on",
    "rx-gro-list": "off",
    "rx-udp-gro-forwarding": "off",
    "tx-nocache-copy": "off",
}
# On for veth; fixed off on a TAP, since tun does not offer them (registry.FIXED_OFF, a row of
# README's table of differences).
FIXED_OFF_FEATURES = (
    "rx-checksumming",
    "tx-checksum-sctp",
    "tx-tcp-accecn-segmentation",
    "rx-vlan-offload",
    "rx-vlan-stag-hw-parse",
    "highdma",
    "tx-gre-segmentation",
    "tx-gre-csum-segmentation",
    "tx-ipxip4-segmentation",
    "tx-ipxip6-segmentation",
    "tx-sctp-segmentation",
    "tx-gso-list",
)


def _features(ns: Netns, ifname: str) -> dict[str, str]:
    """`ethtool -k`: feature name to "on", "off", "on [fixed]" or "off [fixed]"."""
    got = {}
    for line in ns.run("ethtool", "-k", ifname).stdout.splitlines()[1:]:
        name, _, value = line.strip().partition(": ")
        got[name] = value.strip()
    return got


def features_offloads(lab: Lab, backend: Backend) -> Observation:
    """`ethtool -k` of both ends once up (when a TAP could reset anything): veth's value for
    every matched feature, the documented ones fixed off on tapveth, and, on a new A, every
    other feature fixed off, as on both drivers by nature."""
    p = make_pair(lab, backend)
    others = _features(p.ns_a, p.a)
    obs: Observation = {
        "A other features not off [fixed]": [
            f"{f}: {v}"
            for f, v in others.items()
            if f not in MATCHED_FEATURES and f not in FIXED_OFF_FEATURES and v != "off [fixed]"
        ]
    }
    obs["carrier after up"] = bring_up(p)
    got = [_features(p.ns_a, p.a), _features(p.ns_b, p.b)]
    # One fact per feature, its value on A and on B.
    for f in MATCHED_FEATURES:
        obs[f"{f} (A, B)"] = [g[f].split()[0] if f in g else "(missing)" for g in got]
    for f in FIXED_OFF_FEATURES:
        obs[f"{f} (A, B)"] = [g.get(f, "(missing)") for g in got]
    return obs


def _channels(ns: Netns, ifname: str) -> tuple[str, str]:
    """`ethtool -l`: the maximum and current RX, TX and Combined channels, one line each."""
    out = ns.run("ethtool", "-l", ifname, check=False).stdout
    sections: list[dict[str, str]] = []
    for line in out.splitlines():
        if line.strip().endswith("maximums:") or line.strip().endswith("settings:"):
            sections.append({})
        elif sections and ":" in line:
            k, _, v = line.partition(":")
            sections[-1][k.strip()] = v.strip()
    lines = [", ".join(f"{k} {s.get(k)}" for k in ("RX", "TX", "Combined")) for s in sections]
    maximum, current = [*lines, "none", "none"][:2]  # "none" where ethtool -l answers nothing
    return maximum, current


def features_queues(lab: Lab, backend: Backend) -> Observation:
    """Queues and link settings of both ends once up: one receive and one transmit queue in
    use; veth allocates one per CPU (`ethtool -l` shows them as its maximum), a TAP one.
    Speed 10000, full duplex, as veth reports."""
    p = make_pair(lab, backend)
    obs: Observation = {"carrier after up": bring_up(p)}
    for side in ("a", "b"):
        ns, name = p.end(side)
        end = side.upper()
        obs[f"{end} queues in use"] = sorted(
            ns.run("ls", f"/sys/class/net/{name}/queues").stdout.split()
        )
        link = ns.link(name)
        obs[f"{end} queues allocated (tx, rx)"] = [link["num_tx_queues"], link["num_rx_queues"]]
        obs[f"{end} ethtool -l maximum"], obs[f"{end} ethtool -l current"] = _channels(ns, name)
        settings = ns.run("ethtool", name).stdout
        obs[f"{end} speed 10000Mb/s, full duplex"] = (
            "Speed: 10000Mb/s" in settings and "Duplex: Full" in settings
        )
    return obs


def features_vxlan_tcp(lab: Lab, backend: Backend) -> Observation:
    """VXLAN over the pair: with UDP-tunnel segmentation on, the sender hands the pair whole
    tunnelled TCP super-frames; they must cross with their tunnel offsets intact, both ways."""
    p = make_pair(lab, backend)
    p.ns_a.ip("addr", "add", "10.9.5.1/24", "dev", p.a)
    p.ns_b.ip("addr", "add", "10.9.5.2/24", "dev", p.b)
    obs: Observation = {"carrier after up": bring_up(p)}
    for ns, end, local, remote, inner in (
        (p.ns_a, p.a, "10.9.5.1", "10.9.5.2", "10.9.6.1/24"),
        (p.ns_b, p.b, "10.9.5.2", "10.9.5.1", "10.9.6.2/24"),
    ):
        ns.ip(
            "link", "add", "vx0", "type", "vxlan", "id", "42", "local", local, "remote", remote,
            "dstport", "4789", "dev", end,
        )  # fmt: skip
        ns.ip("addr", "add", inner, "dev", "vx0")
        ns.ip("link", "set", "vx0", "up")
    sniffer = p.ns_b.spawn_traffic("sniff", "--ifname", p.b, "--timeout", "10", "--count", "100")
    stream = Stream(p.ns_a, p.ns_b, "10.9.6.2", 20 * MB, port=5411, seed=5, timeout=60)
    obs["TCP 20 MB A->B over VXLAN"] = stream.outcome()
    lengths: list[int] = finish(sniffer)["lengths"]
    # Frames longer than the MTU on the wire of the pair: tunnelled super-frames crossed whole.
    obs["B saw frames over MTU + 18"] = max(lengths, default=0) > 1500 + 18
    stream = Stream(p.ns_b, p.ns_a, "10.9.6.1", 20 * MB, port=5412, seed=6, timeout=60)
    obs["TCP 20 MB B->A over VXLAN"] = stream.outcome()
    return obs


# -- traffic ----------------------------------------------------------------------------------


def _addresses(p: Pair) -> None:
    p.ns_a.ip("addr", "add", "10.9.0.1/24", "dev", p.a)
    p.ns_b.ip("addr", "add", "10.9.0.2/24", "dev", p.b)


def _tcp(src: Netns, dst: Netns, dst_ip: str, seed: int) -> str:
    return Stream(src, dst, dst_ip, 20 * MB, port=5401, seed=seed, timeout=30).outcome()


def traffic_tcp_mtu_mismatch(lab: Lab, backend: Backend) -> Observation:
    """A at 1500, B at 1400: 20 MB of TCP each way arrives intact, since A's TSO super-frames
    skip the length check, as on veth, and B's segments fit A."""
    p = make_pair(lab, backend)
    p.ns_b.ip("link", "set", p.b, "mtu", "1400")
    _addresses(p)
    bring_up(p)
    return {
        "TCP 20 MB A->B": _tcp(p.ns_a, p.ns_b, "10.9.0.2", 1),
        "TCP 20 MB B->A": _tcp(p.ns_b, p.ns_a, "10.9.0.1", 2),
    }


def traffic_jumbo_9000(lab: Lab, backend: Backend) -> Observation:
    """MTU 9000 on both: a 9000-byte ping with DF passes, 9001 is refused at the sender, TCP
    arrives intact."""
    p = make_pair(lab, backend, "mtu", "9000")
    p.ns_b.ip("link", "set", p.b, "mtu", "9000")
    _addresses(p)
    bring_up(p)
    r = p.ns_a.ping("10.9.0.2", count=3, size=8972, extra=("-M", "do"))
    over = p.ns_a.ping("10.9.0.2", count=1, size=8973, extra=("-M", "do"))
    return {
        "ping 9000 B, DF: 0% loss": r.returncode == 0 and " 0% packet loss" in r.stdout,
        "ping 9001 B, DF: fails": over.returncode != 0,
        "TCP 20 MB A->B": _tcp(p.ns_a, p.ns_b, "10.9.0.2", 3),
    }


def traffic_ipv6_nd(lab: Lab, backend: Backend) -> Observation:
    """IPv6 ping resolves B's MAC by neighbour discovery."""
    p = make_pair(lab, backend)
    p.ns_a.ip("-6", "addr", "add", "fd00:9::1/64", "dev", p.a, "nodad")
    p.ns_b.ip("-6", "addr", "add", "fd00:9::2/64", "dev", p.b, "nodad")
    bring_up(p)
    r = p.ns_a.ping("fd00:9::2", count=3)
    neigh = p.ns_a.ip("-6", "neigh", "show", "dev", p.a).stdout
    entry = [ln for ln in neigh.splitlines() if ln.startswith("fd00:9::2 ")]
    return {
        "ping6: 0% loss": r.returncode == 0 and " 0% packet loss" in r.stdout,
        "neighbour entry has B's MAC": bool(entry) and str(p.link("b")["address"]) in entry[0],
    }


# -- the registry -----------------------------------------------------------------------------

BEHAVIOURS: tuple[Behaviour, ...] = (
    Behaviour(
        "carrier",
        "admin-states",
        "carrier after each up/down combination, with its counters",
        carrier_follows_admin_states,
        {
            "created: A": "<> state DOWN",
            "created: B": "<> state DOWN",
            "created: carrier_changes": [1, 1],
            "created: A sysfs carrier": "ERR",
            "A up: A": "<NO-CARRIER,UP> state DOWN",
            "A up: B": "<> state DOWN",
            "A up: carrier_changes": [1, 1],
            "A up: A sysfs carrier": "0",
            "both up: A": "<UP,LOWER_UP> state UP",
            "both up: B": "<UP,LOWER_UP> state UP",
            "both up: carrier_changes": [2, 2],
            "both up: B sysfs carrier": "1",
            "A down: A": "<> state DOWN",
            "A down: B": "<NO-CARRIER,UP> state DOWN",
            "A down: carrier_changes": [3, 3],
            "A down: B sysfs carrier": "0",
            "B down, A up: A": "<NO-CARRIER,UP> state DOWN",
            "B down, A up: B": "<> state DOWN",
            "B down, A up: carrier_changes": [3, 3],
            "B down, A up: A sysfs carrier": "0",
        },
    ),
    Behaviour(
        "carrier",
        "flap-counters",
        "carrier counters after five up/down cycles",
        carrier_counters_after_flaps,
        {
            "carrier_changes": [11, 11],
            "A carrier_up_count": 5,
            "A carrier_down_count": 6,
            "B carrier_up_count": 5,
            "B carrier_down_count": 6,
        },
    ),
    Behaviour(
        "carrier",
        "flap-storm",
        "500 carrier toggles while iperf3 runs through the pair",
        carrier_flap_storm,
        {
            "iperf3 error": None,
            "iperf3 received bytes": True,
            "carrier on both after": True,
            "carrier_changes equal": True,
            "carrier_changes even, >= 2": True,
            "ping after: 0% loss": True,
            "backend's own accounts": [],
        },
    ),
    Behaviour(
        "frames",
        "mtu-boundary",
        "raw frames around B's MTU + 18, untagged and 802.1Q-tagged, and the counters",
        frames_mtu_boundary,
        {
            "sizes": [60, 1417, 1418, 1419, 1420, 1514],
            "untagged: send()": ["ok", "ok", "ok", "ENOBUFS", "ENOBUFS", "ENOBUFS"],
            "untagged: received": [0, 1, 2],
            "tagged: send()": ["ok", "ok", "ok", "ENOBUFS", "ENOBUFS", "ENOBUFS"],
            "tagged: received": [100, 101, 102],
            "A tx_packets": 6,
            "A tx_bytes": 2 * (60 + 1417 + 1418),
            "A tx_dropped": 6,
            "A rx_packets": 0,
            "B rx_packets": 6,
            "B rx_bytes": 2 * (60 + 1417 + 1418),
            "B rx_dropped": 6 + 3,
            "B tx_packets": 0,
        },
        (Documented(ENOBUFS, {"untagged: send()": ["ok"] * 6, "tagged: send()": ["ok"] * 6}),),
    ),
    Behaviour(
        "frames",
        "jumbo-boundary",
        "raw frames around B's MTU 8999 + 18",
        frames_jumbo_boundary,
        {"sizes": [9016, 9017, 9018], "send()": ["ok", "ok", "ENOBUFS"], "received": [0, 1]},
        (Documented(ENOBUFS, {"send()": ["ok", "ok", "ok"]}),),
    ),
    Behaviour(
        "frames",
        "mtu-change",
        "an MTU change applies to the next frame",
        frames_mtu_change_next_frame,
        {"1419 B at MTU 1400: received": [], "1419 B at MTU 1401: received": [1]},
    ),
    Behaviour(
        "delivery",
        "no-mac-filter",
        "foreign unicast, broadcast and multicast frames reach B",
        delivery_without_mac_filter,
        {
            "foreign unicast: B got it as": "otherhost",
            "broadcast: B got it as": "broadcast",
            "IPv4 multicast: B got it as": "multicast",
            "IPv6 multicast: B got it as": "multicast",
            "B rx_packets": 4,
            "B rx_bytes": 400,
        },
    ),
    Behaviour(
        "counters",
        "peer-down",
        "frames to an admin-down peer are dropped and counted",
        counters_peer_down,
        {"received": [], "A tx_packets": 0, "A tx_dropped": 3},
    ),
    Behaviour(
        "counters",
        "peer-just-down",
        "frames sent right after the peer went down are the sender's drops only",
        counters_right_after_peer_down,
        {
            "ifindexes differ": True,
            "carrier after up": True,
            "frames sent from B": DROPPED_FRAMES,
            "B tx_dropped": DROPPED_FRAMES,
            "B tx_packets": 0,
            "A rx_dropped": 0,
            "A rx_packets": 0,
        },
    ),
    Behaviour(
        "lifecycle",
        "del-a",
        "ip link del of A deletes both ends",
        delete_link_a,
        {"A gone": True, "B gone": True},
    ),
    Behaviour(
        "lifecycle",
        "del-b",
        "ip link del of B deletes both ends",
        delete_link_b,
        {"A gone": True, "B gone": True},
    ),
    Behaviour(
        "lifecycle",
        "del-netns",
        "ip netns del of A's namespace deletes B",
        delete_netns,
        {"A gone": True, "B gone": True},
    ),
    Behaviour(
        "lifecycle",
        "del-own",
        "the backend's own delete (ip link del, tapveth del) deletes both ends",
        delete_backend,
        {"A gone": True, "B gone": True},
    ),
    Behaviour(
        "lifecycle",
        "move",
        "A moved to another namespace and back keeps the pair",
        move_and_back,
        {
            "A admin-up after the move": False,
            "B loses carrier": True,
            "carrier back": True,
            "ping from the new namespace": True,
            "carrier after moving back": True,
        },
    ),
    Behaviour(
        "lifecycle",
        "rename",
        "an end renamed, down and up, keeps the pair; its new name deletes both",
        rename,
        {
            "old name gone": True,
            "carrier after up": True,
            "ping under the new name": True,
            "rename back while up": "ok",
            "carrier after": True,
            "ping after": True,
            "own delete by that name: both gone": True,
        },
    ),
    Behaviour(
        "attributes",
        "defaults",
        "MTU, txqlen, qdisc, min MTU and MACs of a new pair",
        attributes_defaults,
        {
            "A mtu": 1500,
            "A txqlen": 1000,
            "A qdisc": "noqueue",
            "A min_mtu": 68,
            "A MAC local unicast": True,
            "B mtu": 1500,
            "B txqlen": 1000,
            "B qdisc": "noqueue",
            "B min_mtu": 68,
            "B MAC local unicast": True,
            "MACs differ": True,
        },
    ),
    Behaviour(
        "attributes",
        "identity",
        "driver, link-netns and maximum MTU",
        attributes_identity,
        {
            "ethtool -i driver": "veth",
            "ip -d link kind": "veth",
            "link-netns shown": True,
            "max_mtu": 65535,
        },
        (
            Documented(DRIVER, {"ethtool -i driver": "tun", "ip -d link kind": "tun"}),
            Documented(LINK_NETNS, {"link-netns shown": False}),
            Documented(MAX_MTU, {"max_mtu": 65521}),
        ),
    ),
    Behaviour(
        "attributes",
        "mtu-range",
        "MTU 68..65521 accepted, 67 refused",
        attributes_mtu_range,
        {"mtu 65521": "ok", "mtu 68": "ok", "mtu 67": "refused", "mtu after": 68},
    ),
    Behaviour(
        "features",
        "offloads",
        "ethtool -k: veth's features where a TAP can take them",
        features_offloads,
        {
            "A other features not off [fixed]": [],
            "carrier after up": True,
            **{f"{f} (A, B)": [v, v] for f, v in MATCHED_FEATURES.items()},
            **{f"{f} (A, B)": ["on", "on"] for f in FIXED_OFF_FEATURES},
        },
        (
            Documented(
                FIXED_OFF,
                {f"{f} (A, B)": ["off [fixed]", "off [fixed]"] for f in FIXED_OFF_FEATURES},
            ),
        ),
    ),
    Behaviour(
        "features",
        "queues",
        "queues in use and allocated, ethtool -l, speed and duplex",
        features_queues,
        {
            "carrier after up": True,
            **{
                f"{e} {k}": v
                for e in "AB"
                for k, v in (
                    ("queues in use", ["rx-0", "tx-0"]),
                    ("queues allocated (tx, rx)", [CPUS, CPUS]),
                    ("ethtool -l maximum", f"RX {CPUS}, TX {CPUS}, Combined n/a"),
                    ("ethtool -l current", "RX 1, TX 1, Combined n/a"),
                    ("speed 10000Mb/s, full duplex", True),
                )
            },
        },
        (
            Documented(
                QUEUES,
                {
                    f"{e} {k}": v
                    for e in "AB"
                    for k, v in (
                        # with one CPU, veth too allocates one queue
                        *((("queues allocated (tx, rx)", [1, 1]),) if CPUS > 1 else ()),
                        ("ethtool -l maximum", "RX n/a, TX n/a, Combined 1"),
                        ("ethtool -l current", "RX n/a, TX n/a, Combined 1"),
                    )
                },
            ),
        ),
    ),
    Behaviour(
        "features",
        "vxlan-tcp",
        "TCP both ways through a VXLAN tunnel over the pair",
        features_vxlan_tcp,
        {
            "carrier after up": True,
            "TCP 20 MB A->B over VXLAN": "intact",
            "B saw frames over MTU + 18": True,
            "TCP 20 MB B->A over VXLAN": "intact",
        },
    ),
    Behaviour(
        "traffic",
        "tcp-mtu-mismatch",
        "TCP both ways between MTU 1500 and 1400",
        traffic_tcp_mtu_mismatch,
        {"TCP 20 MB A->B": "intact", "TCP 20 MB B->A": "intact"},
    ),
    Behaviour(
        "traffic",
        "jumbo",
        "ping and TCP at MTU 9000",
        traffic_jumbo_9000,
        {
            "ping 9000 B, DF: 0% loss": True,
            "ping 9001 B, DF: fails": True,
            "TCP 20 MB A->B": "intact",
        },
    ),
    Behaviour(
        "traffic",
        "ipv6-nd",
        "IPv6 ping and neighbour discovery",
        traffic_ipv6_nd,
        {"ping6: 0% loss": True, "neighbour entry has B's MAC": True},
    ),
)

GROUPS = tuple(dict.fromkeys(b.group for b in BEHAVIOURS))
