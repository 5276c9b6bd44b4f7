"""The two backends the behaviours run on, the kernel veth and tapveth, and the pair between
two namespaces that a behaviour drives. A backend makes and deletes a pair and reads its
counters in veth's meaning (for tapveth: from `tapveth stats`, since userspace cannot change a
TAP's own counters); everything else a behaviour observes through iproute2 and sockets, the
same way on both."""

import json
import time
from dataclasses import dataclass
from typing import Any

from tapveth.conformance.lab import Lab, LabError, Netns, finish, sh, wait_until
from tapveth.control import ControlError
from tapveth.private import PrivateDaemon

COUNTERS = ("rx_packets", "rx_bytes", "rx_dropped", "tx_packets", "tx_bytes", "tx_dropped")


class Backend:
    """What makes a veth-like pair; subclasses implement add, delete and counters."""

    name = ""  # short, for JSON and test ids: "veth", "tapveth"
    label = ""  # for people: "kernel veth"

    def add(self, a: str, ns_a: Netns, b: str, ns_b: Netns, *extra_a: str) -> None:
        """Make the pair a (in ns_a, with `ip link add` words extra_a) and b (in ns_b)."""
        raise NotImplementedError

    def delete(self, a: str, ns_a: Netns) -> None:
        """Delete the pair of which a is an end, the backend's own way."""
        raise NotImplementedError

    def counters(self, ifname: str, ns: Netns) -> dict[str, int]:
        """The end's COUNTERS, in veth's meaning."""
        raise NotImplementedError

    def settle(self) -> None:
        """Wait until the backend has let go of every pair deleted with its namespaces, so
        that the next behaviour starts from nothing."""

    def audit(self, pair: "Pair") -> list[str]:
        """Where the backend's own bookkeeping disagrees with the kernel's, one line each;
        empty when it agrees or has none beyond the kernel's (the kernel veth)."""
        return []


class KernelVeth(Backend):
    name = "veth"
    label = "kernel veth"

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
        return {f"{d}_{k}": s[d][k] for d in ("rx", "tx") for k in ("packets", "bytes", "dropped")}


class TapVeth(Backend):
    """Pairs made with the `tapveth` command, as a user types it, on a private daemon."""

    name = "tapveth"
    label = "tapveth"

    def __init__(self, daemon: PrivateDaemon) -> None:
        self.daemon = daemon

    def add(self, a: str, ns_a: Netns, b: str, ns_b: Netns, *extra_a: str) -> None:
        self._cli("add", a, "netns", ns_a.name, *extra_a, "peer", "name", b, "netns", ns_b.name)

    def delete(self, a: str, ns_a: Netns) -> None:
        self._cli("del", a, "netns", ns_a.name)

    def _cli(self, *words: str) -> str:
        r = self.daemon.cli(*words, check=False)
        if r.returncode != 0:
            raise LabError(f"tapveth {' '.join(words)} failed: {r.stderr.strip()}")
        return r.stdout

    def _stats(self, ifname: str, ns: Netns) -> dict[str, object]:
        out = self._cli("stats", ifname, "netns", ns.name, "-j")
        mine = [e for e in json.loads(out) if e["ifname"] == ifname]
        if len(mine) != 1:
            raise LabError(f"tapveth stats {ifname} netns {ns.name}: {len(mine)} entries")
        entry: dict[str, object] = mine[0]
        return entry

    def counters(self, ifname: str, ns: Netns) -> dict[str, int]:
        entry = self._stats(ifname, ns)
        return {k: int(str(entry[k])) for k in COUNTERS}

    def settle(self) -> None:
        def idle() -> bool:
            try:
                return bool(self.daemon.request("ping")["pairs"] == 0)
            except ControlError:  # no daemon left to wait for
                return True

        wait_until(idle, timeout=10)

    def audit(self, pair: "Pair") -> list[str]:
        """The daemon still serves the pair, its carrier count is the kernel's, and every frame
        it read from A was forwarded to B or dropped with a reason. The daemon's counts and the
        kernel's are read one after the other, and a frame may pass between the reads: what
        does not add up is read again, for up to two seconds."""
        deadline = time.monotonic() + 2
        while (problems := self._audit_once(pair)) and time.monotonic() < deadline:
            time.sleep(0.1)
        return problems

    def _audit_once(self, pair: "Pair") -> list[str]:
        problems = []
        pairs = self.daemon.request("ping")["pairs"]
        if pairs != 1:
            problems.append(f"the daemon serves {pairs} pairs, not 1")
        stats = {e["ifname"]: e for e in self.daemon.request("stats")}
        kernel_changes = int(pair.sysfs("a", "carrier_changes"))
        if stats[pair.a]["carrier_changes"] != kernel_changes:
            problems.append(
                f"carrier_changes: daemon {stats[pair.a]['carrier_changes']}, "
                f"kernel {kernel_changes}"
            )
        kernel_a = pair.ns_a.link(pair.a)["stats64"]
        kernel_b = pair.ns_b.link(pair.b)["stats64"]
        relayed, drops = stats[pair.a]["tx_packets"], sum(stats[pair.a]["drops"].values())
        if kernel_a["tx"]["packets"] != relayed + drops:
            problems.append(
                f"A sent {kernel_a['tx']['packets']} frames; relayed {relayed} + dropped {drops}"
            )
        if not kernel_b["rx"]["packets"] == stats[pair.b]["rx_packets"] == relayed:
            problems.append(
                f"B received {kernel_b['rx']['packets']} frames, the daemon counts "
                f"{stats[pair.b]['rx_packets']}, relayed {relayed}"
            )
        return problems


@dataclass
class Pair:
    """A pair under observation: end a in ns_a, end b in ns_b, made by backend."""

    backend: Backend
    ns_a: Netns
    ns_b: Netns
    a: str
    b: str

    def end(self, side: str) -> tuple[Netns, str]:
        return (self.ns_a, self.a) if side == "a" else (self.ns_b, self.b)

    def link(self, side: str) -> dict[str, Any]:
        ns, name = self.end(side)
        return ns.link(name)

    def sysfs(self, side: str, attr: str) -> str:
        """/sys/class/net/END/attr as seen in the end's namespace; "ERR" if reading fails
        (carrier is EINVAL while the end is admin-down)."""
        ns, name = self.end(side)
        r = ns.run("cat", f"/sys/class/net/{name}/{attr}", check=False)
        return r.stdout.strip() if r.returncode == 0 else "ERR"

    def carrier_changes(self) -> list[int]:
        return [int(self.sysfs("a", "carrier_changes")), int(self.sysfs("b", "carrier_changes"))]

    def lower_up(self, side: str) -> bool:
        return "LOWER_UP" in self.link(side)["flags"]

    def counters(self, side: str) -> dict[str, int]:
        ns, name = self.end(side)
        return self.backend.counters(name, ns)


def make_pair(lab: Lab, backend: Backend, *extra_a: str, silent: bool = False) -> Pair:
    """Two fresh namespaces and a pair between them (extra_a: `ip link add` words for a);
    silent: no IPv6 there, so that no ND or MLD frame spoils exact counts."""
    ns_a, ns_b = lab.netns("a"), lab.netns("b")
    if silent:
        quiet(ns_a)
        quiet(ns_b)
    a, b = lab.name("cfa"), lab.name("cfb")
    backend.add(a, ns_a, b, ns_b, *extra_a)
    return Pair(backend, ns_a, ns_b, a, b)


def quiet(ns: Netns) -> None:
    """No IPv6 on links made in this namespace: no ND or MLD frames to spoil exact counts."""
    ns.run(
        "sysctl",
        "-q",
        "-w",
        "net.ipv6.conf.default.disable_ipv6=1",
        "net.ipv6.conf.all.disable_ipv6=1",
    )


def bring_up(p: Pair) -> bool:
    """Both ends up; whether both got carrier within the usual wait."""
    p.ns_a.ip("link", "set", p.a, "up")
    p.ns_b.ip("link", "set", p.b, "up")
    return wait_until(lambda: p.lower_up("a") and p.lower_up("b"))


@dataclass
class Sent:
    """What became of raw frames sent from A: each send()'s result ("ok" or an errno name),
    the sequence numbers B's AF_PACKET receiver got, and their packet types by number."""

    results: list[str]
    received: list[int]
    pkttypes: dict[int, int]


def send_frames(
    p: Pair, sizes: list[int], vlan: int | None = None, dst: str | None = None, seq0: int = 0
) -> Sent:
    """Send one raw frame per size from A (sequence numbers seq0 + index), to B's MAC unless
    dst is given, 802.1Q-tagged with vlan if given. B's receiver listens for 3 s from when it
    is ready, the sender's start-up included (it stops early once every frame has come)."""
    dst = dst or str(p.link("b")["address"])
    recv = p.ns_b.spawn_traffic(
        "raw-recv", "--ifname", p.b, "--timeout", "3", "--count", str(len(sizes))
    )
    args = ["raw-send", "--ifname", p.a, "--dst", dst, "--sizes", ",".join(map(str, sizes))]
    args += ["--seed", str(seq0)]
    if vlan is not None:
        args += ["--vlan", str(vlan)]
    sent = p.ns_a.traffic(*args)
    got = finish(recv)
    return Sent(sent["results"], got["seqs"], {int(k): int(v) for k, v in got["pkttypes"].items()})
