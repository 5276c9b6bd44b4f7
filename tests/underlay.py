"""Two "hosts" for tunnel tests: two namespaces joined by a kernel veth underlay, each with its
own address (192.0.2.1/24 and 192.0.2.2/24, inside the test's namespaces only), and the ends
of a stretched pair on either side."""

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from netlab import Lab, Netns

from tapveth.private import PrivateDaemon

IP_A, IP_B = "192.0.2.1", "192.0.2.2"
VNI = 42
PORT = 4789


@dataclass
class Hosts:
    a: Netns  # host A: underlay namespace
    b: Netns
    ua: str  # underlay interface on A
    ub: str


def two_hosts(lab: Lab, mtu: int = 1500) -> Hosts:
    a, b = lab.netns("ha"), lab.netns("hb")
    ua, ub = lab.name("ua"), lab.name("ub")
    a.ip("link", "add", ua, "mtu", str(mtu), "type", "veth", "peer", "name", ub, "netns", b.name)
    b.ip("link", "set", ub, "mtu", str(mtu))
    for ns, dev, ip in ((a, ua, IP_A), (b, ub, IP_B)):
        ns.ip("link", "set", "lo", "up")
        # A veth hands checksum-partial packets to its peer as they are: the far side would
        # decapsulate inner TCP whose checksum was never computed (no NIC on a wire does that).
        ns.run("ethtool", "-K", dev, "tx", "off")
        ns.configure(dev, f"{ip}/24")
    return Hosts(a, b, ua, ub)


def kernel_vxlan(host: Netns, dev: str, name: str, remote: str, cidr: str) -> None:
    """The kernel's own vxlan device on a host, with an overlay address."""
    host.ip(
        "link", "add", name, "type", "vxlan", "id", str(VNI), "remote", remote,
        "dstport", str(PORT), "dev", dev,
    )  # fmt: skip
    host.configure(name, cidr)


def tapveth_end(
    daemon: PrivateDaemon,
    ns: Netns,
    name: str,
    host: Netns,
    remote: str,
    end: tuple[str, ...] = (),
    far: tuple[str, ...] = (),
) -> None:
    """A tapveth pair whose peer is the tunnel: `name` in ns, the tunnel in host's namespace.
    end: more words for the TAP end (mtu N); far: more words for the tunnel (bfd)."""
    daemon.cli(
        "add", name, "netns", ns.name, *end, "peer", "vxlan", "id", str(VNI), "remote",
        remote, "dstport", str(PORT), "underlay-netns", host.name, *far,
    )  # fmt: skip


def show(daemon: PrivateDaemon, name: str) -> dict[str, Any]:
    ends: list[dict[str, Any]] = json.loads(daemon.cli("-j", "show").stdout)
    return next(e for e in ends if e["ifname"] == name)


def stats(daemon: PrivateDaemon, name: str) -> dict[str, Any]:
    ends: list[dict[str, Any]] = json.loads(daemon.cli("-j", "stats").stdout)
    return next(e for e in ends if e["ifname"] == name)


def wait_for(what: str, cond: Callable[[], bool], timeout: float = 20.0) -> float:
    """Poll until cond() holds; returns the seconds it took. The bound only keeps a broken
    build from hanging the suite: no assertion is made on the time itself."""
    start = time.monotonic()
    while not cond():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.02)
    return time.monotonic() - start


def has_carrier(ns: Netns, ifname: str) -> bool:
    flags: list[str] = ns.link(ifname)["flags"]
    return "LOWER_UP" in flags and "NO-CARRIER" not in flags


def carrier_active(ns: Netns, ifname: str) -> bool:
    """Carrier, and the kernel has acted on it: linkwatch, which may hold a carrier change
    back up to a second after an earlier one, sets operstate UP and only then activates the
    device's queue; until it runs, frames sent on the device are dropped."""
    link = ns.link(ifname)
    flags: list[str] = link["flags"]
    return "LOWER_UP" in flags and "NO-CARRIER" not in flags and link["operstate"] == "UP"


def tcp_checksum_errors(ns: Netns) -> int:
    """TCP's InCsumErrors in a namespace (/proc/net/snmp is per namespace)."""
    lines = [ln.split() for ln in ns.run("cat", "/proc/net/snmp").stdout.splitlines()]
    head, values = (ln for ln in lines if ln[0] == "Tcp:")
    return int(values[head.index("InCsumErrors")])


def answered(ns: Netns, addr: str, count: int = 5) -> bool:
    """Every one of count pings answered (waiting up to 20 s for slow replies)."""
    out = ns.ping(addr, count=count, deadline=20)
    return out.returncode == 0 and " 0% packet loss" in out.stdout


def ping_loss(ns: Netns, addr: str, count: int = 5) -> int:
    """The percentage of count pings left unanswered, each waited for 1 s."""
    out = ns.ping(addr, count=count, extra=("-W", "1")).stdout
    m = re.search(r"(\d+)% packet loss", out)
    assert m is not None, out
    return int(m.group(1))


def forget_neighbours(ns: Netns, dev: str) -> None:
    """Flush ns's neighbour entries on dev, for a test that pings right after a cut ends.
    A ping sent during the cut leaves its entry resolving, with probes the cut drops; when
    the last probe runs out just after the carrier returns, the frames queued on the entry
    are lost (a kernel veth does the same). A fresh entry resolves over the restored link."""
    ns.ip("neigh", "flush", "dev", dev)
