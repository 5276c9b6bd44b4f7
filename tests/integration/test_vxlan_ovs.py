"""Open vSwitch as the far side of a vxlan end. This kernel has no openvswitch module, so OVS
runs its userspace datapath (datapath_type=netdev): a bridge br-phy owns the underlay
interface and the underlay address, a bridge br-int has the vxlan port and the overlay
address. ovsdb-server and ovs-vswitchd are the test's own, in host B's namespace, with their
database, sockets and logs in a temporary directory."""

import os
import re
import shutil
import time
from pathlib import Path

import pytest
from netlab import Lab, Netns, sh
from underlay import (
    IP_A,
    IP_B,
    PORT,
    VNI,
    answered,
    carrier_active,
    has_carrier,
    ping_loss,
    stats,
    tapveth_end,
    two_hosts,
    wait_for,
)

from tapveth.private import PrivateDaemon

pytestmark = pytest.mark.integration

OV_A, OV_B = "10.42.0.1", "10.42.0.2"
SCHEMA = Path("/usr/share/openvswitch/vswitch.ovsschema")


def ovs(lab: Lab, host: Netns, run: Path) -> list[str]:
    """Start a private OVS in host's namespace; the ovs-vsctl command line to drive it."""
    env = [f"OVS_{d}DIR={run}" for d in ("RUN", "DB", "LOG", "SYSCONF")]
    sh("ovsdb-tool", "create", str(run / "conf.db"), str(SCHEMA))
    db = f"unix:{run}/db.sock"
    lab.spawn(
        "env", *env, "ip", "netns", "exec", host.name, "ovsdb-server", str(run / "conf.db"),
        f"--remote=punix:{run}/db.sock", f"--unixctl={run}/db.ctl",
        f"--log-file={run}/db.log", "-vconsole:off",
    )  # fmt: skip
    vsctl = ["ovs-vsctl", f"--db={db}", "--timeout=20"]
    wait_for("ovsdb-server", lambda: (run / "db.sock").exists())
    sh(*vsctl, "--no-wait", "init")
    lab.spawn(
        "env", *env, "ip", "netns", "exec", host.name, "ovs-vswitchd", db,
        f"--unixctl={run}/vswitchd.ctl", f"--log-file={run}/vswitchd.log", "-vconsole:off",
    )  # fmt: skip
    wait_for("ovs-vswitchd", lambda: (run / "vswitchd.ctl").exists())
    return vsctl


def test_ovs_userspace_vxlan_as_far_side(lab: Lab, daemon: PrivateDaemon, tmp_path: Path) -> None:
    if not shutil.which("ovs-vswitchd") or not SCHEMA.exists():
        why = "Open vSwitch is not installed (Debian package openvswitch-switch)"
        if os.environ.get("TAPVETH_REQUIRE_INTEGRATION") == "1":
            pytest.fail(why)  # CI installs it: missing there is a failure, not a skip
        pytest.skip(why)
    hosts = two_hosts(lab)
    b = hosts.b
    b.ip("addr", "flush", "dev", hosts.ub)  # the underlay address moves to OVS's br-phy
    vsctl = ovs(lab, b, tmp_path)
    sh(*vsctl, "add-br", "br-phy", "--", "set", "bridge", "br-phy", "datapath_type=netdev")
    sh(*vsctl, "add-port", "br-phy", hosts.ub)
    b.configure("br-phy", f"{IP_B}/24")
    sh(*vsctl, "add-br", "br-int", "--", "set", "bridge", "br-int", "datapath_type=netdev")
    sh(
        *vsctl, "add-port", "br-int", "vx0", "--", "set", "interface", "vx0", "type=vxlan",
        f"options:remote_ip={IP_A}", f"options:key={VNI}", f"options:dst_port={PORT}",
    )  # fmt: skip
    b.configure("br-int", f"{OV_B}/24")

    o1 = lab.netns("o1")
    v1 = lab.name("veth1")
    tapveth_end(daemon, o1, v1, hosts.a, IP_B)
    o1.configure(v1, f"{OV_A}/24")
    wait_for("carrier", lambda: has_carrier(o1, v1))
    # OVS learns the route to the remote from the kernel's table a little after the address
    # appears: the first pings may go unanswered.
    deadline = time.monotonic() + 20
    while ping_loss(o1, OV_B, count=2) != 0:
        assert time.monotonic() < deadline, (tmp_path / "vswitchd.log").read_text()[-3000:]
    assert answered(o1, OV_B)
    assert answered(b, OV_A)
    far = stats(daemon, "vxlan:42")
    assert far["udp_rx"] >= 5 and far["underlay_drops"] == {}, far

    # Impairments and a cut work with OVS on the other side as with the kernel's vxlan.
    daemon.cli("qdisc", "add", "dev", v1, "root", "netem", "delay", "50ms")
    out = o1.ping(OV_B, count=3).stdout
    m = re.search(r"rtt min/avg/max/mdev = ([\d.]+)/", out)
    assert m is not None and float(m.group(1)) >= 50.0, out
    daemon.cli("link", "set", "dev", v1, "carrier", "off")
    assert ping_loss(b, OV_A, count=3) == 100
    assert stats(daemon, "vxlan:42")["drops"].get("carrier", 0) >= 1
    daemon.cli("link", "set", "dev", v1, "carrier", "on")
    wait_for("carrier back", lambda: carrier_active(o1, v1))
    # A request right after the restore may go unanswered: once in a full run of the suite,
    # one of five was (b's neighbour entry for OV_A failed during the cut and is resolved again
    # through OVS; which hop lost it was not found). Wait for one answer, then ask for five.
    deadline = time.monotonic() + 10
    while ping_loss(b, OV_A, count=1) != 0:
        assert time.monotonic() < deadline, stats(daemon, "vxlan:42")
    replies = b.ping(OV_A, count=5, deadline=20)
    assert replies.returncode == 0 and " 0% packet loss" in replies.stdout, (
        replies.stdout,
        stats(daemon, "vxlan:42"),
    )
