"""tapveth-cni driven as a container runtime drives a CNI plugin: the real executable, CNI_*
variables and the configuration on stdin, against a private daemon and real namespaces. Every
command of the spec, the results' shapes, the error codes, and what is left after DEL."""

import json
import os
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
from cnilab import CniLab, Reply
from netlab import Lab, Netns, Stream, sh

from tapveth.private import PrivateDaemon

pytestmark = pytest.mark.integration


@pytest.fixture
def cni(lab: Lab, daemon: PrivateDaemon) -> Iterator[CniLab]:
    c = CniLab(lab, daemon.socket)
    try:
        yield c
    finally:
        c.cleanup()


def path_of(ns: Netns) -> str:
    return f"/run/netns/{ns.name}"


def pairs(daemon: PrivateDaemon) -> list[dict[str, Any]]:
    return list(daemon.request("show"))


def until(check: Any, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def host_link(name: str) -> dict[str, Any] | None:
    out = sh("ip", "-j", "-d", "link", "show", "dev", name, check=False)
    if out.returncode != 0:
        return None
    data: list[dict[str, Any]] = json.loads(out.stdout)
    return data[0]


def addresses(ns: Netns, ifname: str) -> list[str]:
    out = json.loads(sh("ip", "-n", ns.name, "-j", "addr", "show", "dev", ifname).stdout)
    return [f"{a['local']}/{a['prefixlen']}" for a in out[0]["addr_info"] if a["scope"] == "global"]


def nothing_left(cni: CniLab, daemon: PrivateDaemon) -> None:
    assert pairs(daemon) == []
    assert cni.bridge_ports() == []
    assert cni.leases() == []
    assert cni.masq_rules() == []
    assert cni.records() == []


# -- VERSION ----------------------------------------------------------------------------------


@pytest.mark.parametrize("stdin", [b'{"cniVersion": "1.0.0"}', b'{"cniVersion": "0.4.0"}', b""])
def test_version(cni: CniLab, stdin: bytes) -> None:
    out = cni.call("VERSION", stdin, env={"CNI_CONTAINERID": None, "CNI_IFNAME": None}).ok()
    assert out["supportedVersions"] == ["0.4.0", "1.0.0", "1.1.0"]
    asked = json.loads(stdin)["cniVersion"] if stdin else "1.1.0"
    assert out["cniVersion"] == asked


# -- ADD, CHECK, DEL --------------------------------------------------------------------------


def test_add_bridge_two_containers_talk_and_del_leaves_nothing(
    cni: CniLab, lab: Lab, daemon: PrivateDaemon
) -> None:
    ns1, ns2 = lab.netns("c1"), lab.netns("c2")
    conf = cni.conf(mtu=1400, ipMasq=True)
    r1 = cni.add(conf, path_of(ns1), cid="ctr1")
    r2 = cni.add(conf, path_of(ns2), cid="ctr2")

    # The result, in the spec's 1.0.0 shape: bridge, host end, container end (with sandbox).
    assert r1["cniVersion"] == "1.0.0"
    bridge, host, ctr = r1["interfaces"]
    assert bridge["name"] == cni.bridge and host["name"].startswith("tv")
    assert ctr == {"name": "eth0", "mac": ctr["mac"], "sandbox": path_of(ns1)}
    assert r1["ips"] == [
        {"address": f"{cni.prefix}.2/24", "gateway": f"{cni.prefix}.1", "interface": 2}
    ]
    ip2 = r2["ips"][0]["address"].split("/")[0]

    # In the container: a TAP named CNI_IFNAME, its MAC as reported, the address, the MTU, up.
    link = ns1.link("eth0")
    assert link["linkinfo"]["info_kind"] == "tun" and link["linkinfo"]["info_data"]["type"] == "tap"
    assert link["address"] == ctr["mac"] and link["mtu"] == 1400
    assert "UP" in link["flags"] and "LOWER_UP" in link["flags"]
    assert addresses(ns1, "eth0") == [f"{cni.prefix}.2/24"]
    # On the host: the other end, a port of the bridge, which holds the gateway address.
    hl = host_link(host["name"])
    assert hl is not None and hl["master"] == cni.bridge and hl["mtu"] == 1400
    assert hl["address"] == host["mac"]
    assert sorted(cni.bridge_ports()) == sorted(
        [r1["interfaces"][1]["name"], r2["interfaces"][1]["name"]]
    )
    bridge_addrs = json.loads(sh("ip", "-j", "addr", "show", "dev", cni.bridge).stdout)
    assert f"{cni.prefix}.1" in [a["local"] for a in bridge_addrs[0]["addr_info"]]
    # The daemon owns both pairs, each with the container's namespace by name.
    ends = {(e["ifname"], e["netns"]) for e in pairs(daemon)}
    assert ("eth0", ns1.name) in ends and ("eth0", ns2.name) in ends
    assert (host["name"], None) in ends
    assert len(cni.masq_rules()) == 2

    # Traffic: container to container, and to the host's gateway address.
    assert ns1.ping(ip2).returncode == 0
    assert ns2.ping(f"{cni.prefix}.1").returncode == 0
    Stream(ns1, ns2, ip2, 4 << 20).finish()

    # CHECK with the ADD's result passes.
    cni.call("CHECK", {**conf, "prevResult": r1}, path_of(ns1), cid="ctr1").ok()

    cni.delete(conf, path_of(ns1), cid="ctr1")
    cni.delete(conf, path_of(ns2), cid="ctr2")
    nothing_left(cni, daemon)
    assert not ns1.has_link("eth0") and host_link(host["name"]) is None
    # DEL again, and DEL without a namespace: still success.
    cni.delete(conf, path_of(ns1), cid="ctr1")
    cni.call("DEL", conf, "", cid="ctr2").ok()


@pytest.mark.parametrize("version", ["0.4.0", "1.1.0"])
def test_result_shape_per_version(
    cni: CniLab, lab: Lab, daemon: PrivateDaemon, version: str
) -> None:
    ns = lab.netns("c")
    conf = cni.conf(cniVersion=version, mtu=1450)
    out = cni.add(conf, path_of(ns))
    assert out["cniVersion"] == version
    if version == "0.4.0":
        assert out["ips"][0]["version"] == "4" and "mtu" not in out["interfaces"][2]
    else:
        assert "version" not in out["ips"][0] and out["interfaces"][2]["mtu"] == 1450
    cni.call("CHECK", {**conf, "prevResult": out}, path_of(ns)).ok()
    cni.delete(conf, path_of(ns))
    nothing_left(cni, daemon)


def test_default_gateway_and_ipam_routes(cni: CniLab, lab: Lab) -> None:
    ns = lab.netns("c")
    ipam = cni.conf()["ipam"]
    ipam["routes"] = [{"dst": "192.168.77.0/24"}]
    conf = cni.conf(isDefaultGateway=True, ipam=ipam)
    out = cni.add(conf, path_of(ns))
    assert {"dst": "0.0.0.0/0", "gw": f"{cni.prefix}.1"} in out["routes"]
    assert {"dst": "192.168.77.0/24"} in out["routes"]
    routes = json.loads(ns.ip("-j", "route").stdout)
    via = {r["dst"]: r.get("gateway") for r in routes}
    assert via["default"] == f"{cni.prefix}.1" and via["192.168.77.0/24"] == f"{cni.prefix}.1"


def test_netem_impairs_what_the_container_sends(
    cni: CniLab, lab: Lab, daemon: PrivateDaemon
) -> None:
    ns1, ns2 = lab.netns("n1"), lab.netns("n2")
    slow = cni.conf(netem="delay 50ms")
    r1 = cni.add(slow, path_of(ns1), cid="n1")
    cni.add(cni.conf(), path_of(ns2), cid="n2")
    shown = daemon.request("qdisc", {"action": "show", "name": "eth0", "netns": ns1.name})
    assert shown[0]["kind"] == "netem" and shown[0]["netem"]["latency"] == 50_000_000
    # The delay is a floor under every round trip from the impaired container (noise only
    # adds to it); the other container's own end has no qdisc.
    ping = ns1.ping(r1["ips"][0]["gateway"], count=3)
    assert ping.returncode == 0
    rtt_min = float(ping.stdout.split("min/avg/max/mdev = ")[1].split("/")[0])
    assert rtt_min >= 50.0, ping.stdout
    plain = daemon.request("qdisc", {"action": "show", "name": "eth0", "netns": ns2.name})
    assert plain[0]["kind"] == "noqueue"
    cni.call("CHECK", {**slow, "prevResult": r1}, path_of(ns1), cid="n1").ok()
    daemon.request("qdisc", {"action": "del", "name": "eth0", "netns": ns1.name})
    msg = cni.call("CHECK", {**slow, "prevResult": r1}, path_of(ns1), cid="n1").error(103)
    assert "netem" in msg
    cni.delete(slow, path_of(ns1), cid="n1")
    cni.delete(cni.conf(), path_of(ns2), cid="n2")
    nothing_left(cni, daemon)


def test_without_ipam_a_plain_l2_port(cni: CniLab, lab: Lab, daemon: PrivateDaemon) -> None:
    ns = lab.netns("l2")
    conf = cni.conf(ipam=None, isGateway=None)
    out = cni.add(conf, path_of(ns))
    assert out["ips"] == [] and "routes" not in out
    assert addresses(ns, "eth0") == [] and cni.bridge_ports() == [out["interfaces"][1]["name"]]
    cni.call("CHECK", {**conf, "prevResult": out}, path_of(ns)).ok()
    cni.delete(conf, path_of(ns))
    nothing_left(cni, daemon)


def test_ptp_mode(cni: CniLab, lab: Lab, daemon: PrivateDaemon) -> None:
    ns1, ns2 = lab.netns("p1"), lab.netns("p2")
    conf = cni.conf(mode="ptp", bridge=None, isGateway=None)
    r1 = cni.add(conf, path_of(ns1), cid="p1")
    r2 = cni.add(conf, path_of(ns2), cid="p2")
    assert len(r1["interfaces"]) == 2 and r1["ips"][0]["interface"] == 1
    host = r1["interfaces"][0]["name"]
    ip1, ip2 = (r["ips"][0]["address"].split("/")[0] for r in (r1, r2))
    # The host reaches each container over a host route through its end; no bridge.
    assert host_link(cni.bridge) is None
    route = json.loads(sh("ip", "-j", "route", "show", f"{ip1}/32").stdout)
    assert route and route[0]["dev"] == host
    routes = {r["dst"]: r.get("gateway") for r in json.loads(ns1.ip("-j", "route").stdout)}
    assert routes[f"{cni.prefix}.1"] is None and routes[cni.subnet] == f"{cni.prefix}.1"
    assert ns1.ping(f"{cni.prefix}.1").returncode == 0
    assert ns1.ping(ip2).returncode == 0  # routed by the host
    cni.call("CHECK", {**conf, "prevResult": r1}, path_of(ns1), cid="p1").ok()
    cni.delete(conf, path_of(ns1), cid="p1")
    cni.delete(conf, path_of(ns2), cid="p2")
    assert sh("ip", "route", "show", f"{ip1}/32").stdout.strip() == ""
    nothing_left(cni, daemon)


def test_namespace_by_proc_path(cni: CniLab, lab: Lab, daemon: PrivateDaemon) -> None:
    """CNI_NETNS as /proc/PID/ns/net of a process in a namespace of its own."""
    proc = lab.spawn("unshare", "--net", "sleep", "60")
    until(
        lambda: os.readlink(f"/proc/{proc.pid}/ns/net") != os.readlink("/proc/self/ns/net"),
        "the namespace",
    )
    netns = f"/proc/{proc.pid}/ns/net"
    conf = cni.conf()
    out = cni.add(conf, netns)
    assert out["interfaces"][2]["sandbox"] == netns
    inside = subprocess.run(
        ["nsenter", f"--net={netns}", "ip", "-j", "-d", "link", "show", "eth0"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert json.loads(inside.stdout)[0]["linkinfo"]["info_kind"] == "tun"
    cni.delete(conf, netns)
    nothing_left(cni, daemon)


def test_deleting_the_namespace_removes_the_pair(
    cni: CniLab, lab: Lab, daemon: PrivateDaemon
) -> None:
    ns = lab.netns("gone")
    conf = cni.conf()
    out = cni.add(conf, path_of(ns))
    host = out["interfaces"][1]["name"]
    sh("ip", "netns", "del", ns.name)
    until(lambda: pairs(daemon) == [] and host_link(host) is None, "the pair to go")
    assert not os.path.exists(daemon.socket + ".persist")  # forgotten: nothing to re-attach
    # DEL afterwards (namespace gone) still succeeds and releases the address.
    cni.delete(conf, path_of(ns))
    nothing_left(cni, daemon)


def test_check_finds_what_changed(cni: CniLab, lab: Lab, daemon: PrivateDaemon) -> None:
    ns = lab.netns("c")
    conf = cni.conf()
    out = cni.add(conf, path_of(ns))
    check = {**conf, "prevResult": out}
    cni.call("CHECK", check, path_of(ns)).ok()
    ns.ip("addr", "flush", "dev", "eth0")
    assert "lacks its address" in cni.call("CHECK", check, path_of(ns)).error(103)
    ns.ip("link", "set", "eth0", "down")
    assert "no carrier" in cni.call("CHECK", check, path_of(ns)).error(103)
    sh("ip", "link", "set", out["interfaces"][1]["name"], "nomaster")
    ns.ip("link", "set", "eth0", "up")
    until(lambda: all(e["carrier"] for e in pairs(daemon)), "carrier")
    ns.ip("addr", "add", out["ips"][0]["address"], "dev", "eth0")
    assert "not a port of" in cni.call("CHECK", check, path_of(ns)).error(103)
    no_prev = cni.call("CHECK", conf, path_of(ns))
    assert "prevResult" in no_prev.error(7)
    cni.call("DEL", conf, path_of(ns)).ok()
    assert "no pair" in cni.call("CHECK", check, path_of(ns)).error(103)


# -- persistence across a daemon restart -----------------------------------------------------


def restart(daemon: PrivateDaemon) -> None:
    """Stop the daemon and start another on the same socket."""
    assert daemon.stop() == 0
    print("daemon log before the restart:\n" + daemon.final_log)
    os.makedirs(daemon.dir, exist_ok=True)
    daemon.start()


def test_daemon_restart_keeps_the_links(cni: CniLab, lab: Lab, daemon: PrivateDaemon) -> None:
    """Containers' pairs are persistent: a TCP stream crosses a daemon restart; while the
    daemon is down both ends lose carrier; the new daemon re-attaches them."""
    ns1, ns2 = lab.netns("r1"), lab.netns("r2")
    conf = cni.conf()
    r1 = cni.add(conf, path_of(ns1), cid="r1")
    cni.add(conf, path_of(ns2), cid="r2")
    ip1 = r1["ips"][0]["address"].split("/")[0]
    record = daemon.socket + ".persist"
    with open(record) as f:
        assert len(json.load(f)) == 2
    stream = Stream(ns2, ns1, ip1, 3 << 20, rate=600_000, timeout=60)
    time.sleep(1.0)
    assert daemon.stop() == 0
    assert "keeping 2 persistent" in daemon.final_log
    os.makedirs(daemon.dir, exist_ok=True)
    assert "NO-CARRIER" in ns1.ip("link", "show", "eth0").stdout
    daemon.start()
    until(lambda: len(pairs(daemon)) == 4 and all(e["carrier"] for e in pairs(daemon)), "carrier")
    assert "re-attached" in daemon.log()
    stream.finish()  # every byte, in order, checksummed
    assert ns1.ping(r1["ips"][0]["gateway"]).returncode == 0
    cni.call("CHECK", {**conf, "prevResult": r1}, path_of(ns1), cid="r1").ok()
    cni.delete(conf, path_of(ns1), cid="r1")
    cni.delete(conf, path_of(ns2), cid="r2")
    nothing_left(cni, daemon)
    assert not os.path.exists(record)


def test_after_a_restart_only_del_removes_the_pair(
    cni: CniLab, lab: Lab, daemon: PrivateDaemon
) -> None:
    """A documented difference: the re-attached TAP holds the namespace, so deleting the
    namespace no longer removes the pair; DEL does."""
    ns = lab.netns("pin")
    conf = cni.conf()
    cni.add(conf, path_of(ns))
    restart(daemon)
    until(lambda: len(pairs(daemon)) == 2, "the pair re-attached")
    sh("ip", "netns", "del", ns.name)
    time.sleep(1.0)  # what a veth would have needed to go
    assert len(pairs(daemon)) == 2
    cni.delete(conf, path_of(ns))
    nothing_left(cni, daemon)


def test_record_lost_the_pair_is_left_over_and_del_removes_it(
    cni: CniLab, lab: Lab, daemon: PrivateDaemon
) -> None:
    """What a unit without RuntimeDirectoryPreserve= gets: the record beside the socket is gone
    after the restart; the pair is a left-over one, shown without carrier; DEL removes it."""
    ns = lab.netns("lost")
    conf = cni.conf()
    out = cni.add(conf, path_of(ns))
    assert daemon.stop() == 0
    os.unlink(daemon.socket + ".persist")
    os.makedirs(daemon.dir, exist_ok=True)
    daemon.start()
    until(lambda: len(pairs(daemon)) == 2, "the left-over pair to be found")
    assert all(e.get("orphaned") and not e["carrier"] for e in pairs(daemon))
    assert "no carrier" in cni.call("CHECK", {**conf, "prevResult": out}, path_of(ns)).error(103)
    cni.delete(conf, path_of(ns))
    assert not ns.has_link("eth0") and host_link(out["interfaces"][1]["name"]) is None
    nothing_left(cni, daemon)


def test_del_while_the_daemon_is_down(cni: CniLab, lab: Lab, daemon: PrivateDaemon) -> None:
    ns = lab.netns("d")
    conf = cni.conf()
    out = cni.add(conf, path_of(ns))
    host = out["interfaces"][1]["name"]
    assert daemon.stop() == 0
    os.makedirs(daemon.dir, exist_ok=True)
    assert host_link(host) is not None and ns.has_link("eth0")  # persistent: still there
    cni.delete(conf, path_of(ns))
    assert host_link(host) is None and not ns.has_link("eth0")
    assert cni.leases() == [] and cni.bridge_ports() == []
    daemon.start()  # finds nothing to re-attach, and forgets it
    until(lambda: "not re-attached" in daemon.log(), "the new daemon to give up the pair")
    assert pairs(daemon) == [] and not os.path.exists(daemon.socket + ".persist")


def test_persist_false_pairs_go_with_the_daemon(
    cni: CniLab, lab: Lab, daemon: PrivateDaemon
) -> None:
    ns = lab.netns("np")
    conf = cni.conf(persist=False)
    out = cni.add(conf, path_of(ns))
    assert not os.path.exists(daemon.socket + ".persist")
    restart(daemon)
    assert pairs(daemon) == []
    assert host_link(out["interfaces"][1]["name"]) is None and not ns.has_link("eth0")
    cni.delete(conf, path_of(ns))
    nothing_left(cni, daemon)


# -- errors -----------------------------------------------------------------------------------


def test_no_daemon(cni: CniLab, lab: Lab) -> None:
    ns = lab.netns("c")
    conf = cni.conf(socket=os.path.join(cni.dir, "nobody.sock"))
    msg = cni.call("ADD", conf, path_of(ns)).error(100)
    assert "no tapveth daemon" in msg and "tapveth daemon" in msg and "systemctl" in msg
    assert cni.leases() == [] and not ns.has_link("eth0")
    cni.call("DEL", conf, path_of(ns)).ok()  # nothing to remove: still success
    status = cni.call("STATUS", {**conf, "cniVersion": "1.1.0"}, env={"CNI_CONTAINERID": None})
    status.error(50)


def test_errors_leave_nothing(cni: CniLab, lab: Lab, daemon: PrivateDaemon) -> None:
    ns = lab.netns("c")
    p = path_of(ns)
    # The spec's codes for the runtime's and the user's mistakes.
    cni.call("ADD", cni.conf(cniVersion="0.3.1"), p).error(1)
    cni.call("ADD", cni.conf(hairpinMode=True), p).error(2)
    assert "netem" in cni.call("ADD", cni.conf(netem="delay fast"), p).error(7)
    cni.call("ADD", cni.conf(), path_of(ns) + "-missing").error(3)
    cni.call("ADD", cni.conf(), "/etc/hostname").error(3)
    cni.call("ADD", cni.conf(), p, env={"CNI_IFNAME": None}).error(4)
    cni.call("ADD", cni.conf(), p, env={"CNI_COMMAND": "FROB"}).error(4)
    cni.call("ADD", cni.conf(), p, cid="bad id").error(4)
    cni.call("ADD", cni.conf(), p, ifname="x" * 16).error(4)
    cni.call("ADD", b"{nope", p).error(6)
    cni.call("ADD", cni.conf(mtu=20), p).error(7)
    cni.call("ADD", cni.conf(mode="ptp", ipam=None, bridge=None, isGateway=None), p).error(7)
    cni.call("STATUS", cni.conf(), p).error(1)  # STATUS came with 1.1.0
    # The IPAM plugin is missing, or fails: its error, and nothing made.
    missing = cni.conf(ipam={"type": "no-such-ipam"})
    assert "no-such-ipam" in cni.call("ADD", missing, p).error(101)
    bad_ipam = cni.conf(ipam={"type": "host-local", "ranges": [[{"subnet": "bogus"}]]})
    assert cni.call("ADD", bad_ipam, p).rc == 1
    # The interface name is taken in the container: the daemon refuses, the lease is returned.
    ns.ip("link", "add", "eth0", "type", "bridge")
    assert "refused" in cni.call("ADD", cni.conf(), p).error(100)
    assert cni.leases() == []
    nothing_left(cni, daemon)
    assert not ns.run("ip", "-j", "link", "show", "type", "tun").stdout.strip("[]\n")


def test_bridge_name_taken_by_something_else(cni: CniLab, lab: Lab, daemon: PrivateDaemon) -> None:
    ns = lab.netns("c")
    taken = lab.name("tvnb")
    lab.root_links.append(taken)
    daemon.cli("add", taken, "peer", "name", lab.name("tvnp"))  # a TAP, not a bridge
    msg = cni.call("ADD", cni.conf(bridge=taken), path_of(ns)).error(102)
    assert "not a bridge" in msg
    assert cni.leases() == [] and len(pairs(daemon)) == 2  # only the one made above


# -- STATUS and GC (1.1.0) --------------------------------------------------------------------


def test_status_and_gc(cni: CniLab, lab: Lab, daemon: PrivateDaemon) -> None:
    ns1, ns2 = lab.netns("g1"), lab.netns("g2")
    conf = cni.conf(cniVersion="1.1.0", ipMasq=True)
    status = cni.call("STATUS", conf, env={"CNI_CONTAINERID": None, "CNI_IFNAME": None})
    assert status.ok() is None and status.stdout == ""
    cni.add(conf, path_of(ns1), cid="keep")
    cni.add(conf, path_of(ns2), cid="stale")
    assert len(cni.leases()) == 2 and len(cni.masq_rules()) == 2
    gc = {**conf, "cni.dev/valid-attachments": [{"containerID": "keep", "ifname": "eth0"}]}
    cni.call("GC", gc, env={"CNI_CONTAINERID": None, "CNI_IFNAME": None}).ok()
    assert len(pairs(daemon)) == 2  # one pair: its two ends
    assert ns1.has_link("eth0") and not ns2.has_link("eth0")
    assert cni.leases() == [f"{cni.prefix}.2"]
    assert [c.split()[2] for c in cni.masq_rules()] == ["keep"]


# -- a chain with the reference plugins -------------------------------------------------------


BANDWIDTH = {
    "type": "bandwidth",
    "capabilities": {"bandwidth": True},
    "runtimeConfig": {
        "bandwidth": {
            "ingressRate": 100_000_000,
            "ingressBurst": 1_000_000,
            "egressRate": 100_000_000,
            "egressBurst": 1_000_000,
        }
    },
}


def test_chain_with_reference_plugins(cni: CniLab, lab: Lab, daemon: PrivateDaemon) -> None:
    """ADD through tapveth-cni, tuning, portmap and firewall, each given the previous result,
    then CHECK and DEL in reverse order, as libcni runs a conflist."""
    ns = lab.netns("chain")
    p = path_of(ns)
    ours = cni.conf()
    cni.attached.append((ours, p, "c1", "eth0"))
    chain: list[dict[str, Any]] = [
        ours,
        {"type": "tuning", "sysctl": {"net.ipv4.conf.eth0.rp_filter": "2"}},
        {
            "type": "portmap",
            "capabilities": {"portMappings": True},
            "runtimeConfig": {
                "portMappings": [
                    {"hostPort": 18000 + os.getpid() % 1000, "containerPort": 80, "protocol": "tcp"}
                ]
            },
        },
        {"type": "firewall"},
    ]
    prev: dict[str, Any] | None = None
    ran: list[dict[str, Any]] = []

    def call(command: str, conf: dict[str, Any]) -> Reply:
        full = {"cniVersion": "1.0.0", "name": cni.name, **conf}
        if prev is not None:
            full["prevResult"] = prev
        exe = os.path.join(
            cni.plugin_dir if conf["type"] == "tapveth-cni" else "/usr/lib/cni", conf["type"]
        )
        return cni.call(command, full, p, plugin=exe)

    try:
        for conf in chain:
            prev = call("ADD", conf).ok()
            ran.append(conf)
        assert prev is not None and prev["interfaces"][2]["name"] == "eth0"
        assert ns.run("cat", "/proc/sys/net/ipv4/conf/eth0/rp_filter").stdout.strip() == "2"
        for conf in chain:
            if conf["type"] != "portmap":  # its CHECK fails on IPv4-only results (own bug)
                call("CHECK", conf).ok()
        # bandwidth finds the host's end as the container's veth peer (ethtool's
        # peer_ifindex), which a TAP does not have: it refuses, and says why.
        assert "not a veth" in call("ADD", BANDWIDTH).error(999, ours=False)
        call("DEL", BANDWIDTH).ok()
    finally:
        for conf in reversed(ran):
            call("DEL", conf).ok()
    nothing_left(cni, daemon)
