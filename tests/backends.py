"""The two backends of the conformance suite, the kernel veth and tapveth, and helpers to drive
a pair between two namespaces. A backend makes the pair and reads its counters in veth's
meaning; where a TAP cannot give the kernel's observable result, the backend states its own
documented one."""

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from netlab import Netns, finish, sh

from tapveth.private import PrivateDaemon


class Backend:
    name = ""
    driver = ""
    # What the sender's send() returns when the pair drops its frame (MTU): the kernel veth
    # fails it with ENOBUFS; through a TAP the drop happens after the send has succeeded.
    send_result_on_drop = ""
    # Whether `ip -d link` shows veth's link-netnsid (the @ifN peer).
    shows_link_netns = False

    def add(self, a: str, ns_a: Netns, b: str, ns_b: Netns, *extra_a: str) -> None:
        raise NotImplementedError

    def delete(self, a: str, ns_a: Netns) -> None:
        raise NotImplementedError

    def counters(self, ifname: str, ns: Netns) -> dict[str, int]:
        raise NotImplementedError


class KernelVeth(Backend):
    name = "veth"
    driver = "veth"
    send_result_on_drop = "ENOBUFS"
    shows_link_netns = True

    def add(self, a: str, ns_a: Netns, b: str, ns_b: Netns, *extra_a: str) -> None:
        sh(
            "ip",
            "link",
            "add",
            a,
            "netns",
            ns_a.name,
            *extra_a,
            "type",
            "veth",
            "peer",
            "name",
            b,
            "netns",
            ns_b.name,
        )

    def delete(self, a: str, ns_a: Netns) -> None:
        ns_a.ip("link", "del", a)

    def counters(self, ifname: str, ns: Netns) -> dict[str, int]:
        s = ns.link(ifname)["stats64"]
        return {
            "rx_packets": s["rx"]["packets"],
            "rx_bytes": s["rx"]["bytes"],
            "rx_dropped": s["rx"]["dropped"],
            "tx_packets": s["tx"]["packets"],
            "tx_bytes": s["tx"]["bytes"],
            "tx_dropped": s["tx"]["dropped"],
        }


class TapVeth(Backend):
    name = "tapveth"
    driver = "tun"
    send_result_on_drop = "ok"
    shows_link_netns = False

    def __init__(self, daemon: PrivateDaemon) -> None:
        self.daemon = daemon

    def add(self, a: str, ns_a: Netns, b: str, ns_b: Netns, *extra_a: str) -> None:
        self.daemon.cli(
            "add", a, "netns", ns_a.name, *extra_a, "peer", "name", b, "netns", ns_b.name
        )

    def delete(self, a: str, ns_a: Netns) -> None:
        self.daemon.cli("del", a, "netns", ns_a.name)

    def counters(self, ifname: str, ns: Netns) -> dict[str, int]:
        out = self.daemon.cli("stats", ifname, "netns", ns.name, "-j").stdout
        mine = [e for e in json.loads(out) if e["ifname"] == ifname]
        assert len(mine) == 1, out
        return {
            k: mine[0][k]
            for k in (
                "rx_packets",
                "rx_bytes",
                "rx_dropped",
                "tx_packets",
                "tx_bytes",
                "tx_dropped",
            )
        }


@dataclass
class PairUnderTest:
    backend: Backend
    ns_a: Netns
    ns_b: Netns
    a: str
    b: str

    def sysfs(self, ns: Netns, ifname: str, attr: str) -> str:
        r = ns.run("cat", f"/sys/class/net/{ifname}/{attr}", check=False)
        return r.stdout.strip() if r.returncode == 0 else "ERR"

    def carrier_changes(self) -> tuple[int, int]:
        return (
            int(self.sysfs(self.ns_a, self.a, "carrier_changes")),
            int(self.sysfs(self.ns_b, self.b, "carrier_changes")),
        )


def quiet(ns: Netns) -> None:
    """No IPv6 on links made in this namespace: no ND or MLD frames to spoil exact counts."""
    ns.run(
        "sysctl",
        "-q",
        "-w",
        "net.ipv6.conf.default.disable_ipv6=1",
        "net.ipv6.conf.all.disable_ipv6=1",
    )


def wait_for(what: str, check: Callable[[], Any], timeout: float = 3.0) -> Any:
    """Poll until check() is truthy (carrier-off events can lag up to ~1 s in the kernel)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def lower_up(ns: Netns, ifname: str) -> bool:
    return "LOWER_UP" in ns.link(ifname)["flags"]


def bring_up(p: PairUnderTest) -> None:
    p.ns_a.ip("link", "set", p.a, "up")
    p.ns_b.ip("link", "set", p.b, "up")
    wait_for("carrier on both ends", lambda: lower_up(p.ns_a, p.a) and lower_up(p.ns_b, p.b))


def send_frames(
    p: PairUnderTest,
    sizes: list[int],
    vlan: int | None = None,
    dst: str | None = None,
    seq0: int = 0,
) -> tuple[list[str], set[int], dict[str, int]]:
    """Send one raw frame per size from A; return each send()'s result, the sequence numbers
    B's AF_PACKET receiver got (seq0 + index), and their packet types."""
    dst = dst or p.ns_b.link(p.b)["address"]
    recv = p.ns_b.spawn_traffic(
        "raw-recv", "--ifname", p.b, "--timeout", "1.5", "--count", str(len(sizes))
    )
    args = [
        "raw-send",
        "--ifname",
        p.a,
        "--dst",
        dst,
        "--sizes",
        ",".join(map(str, sizes)),
        "--seed",
        str(seq0),
    ]
    if vlan is not None:
        args += ["--vlan", str(vlan)]
    sent = p.ns_a.traffic(*args)
    got = finish(recv)
    return sent["results"], set(got["seqs"]), got["pkttypes"]
