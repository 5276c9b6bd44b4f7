"""A carrier flap storm: an end toggled 500 times while iperf3 runs through the pair."""

import json
import tempfile
from collections.abc import Callable

import pytest
from backends import PairUnderTest, TapVeth, bring_up, lower_up, wait_for
from netlab import sh

pytestmark = pytest.mark.integration


def test_flap_storm_under_iperf3(make_pair: Callable[..., PairUnderTest]) -> None:
    p = make_pair()
    p.ns_a.ip("addr", "add", "10.9.2.1/24", "dev", p.a)
    p.ns_b.ip("addr", "add", "10.9.2.2/24", "dev", p.b)
    bring_up(p)
    server = p.ns_b.lab.spawn(
        "ip", "netns", "exec", p.ns_b.name, "iperf3", "-s", "-1", "-B", "10.9.2.2", "-p", "5501"
    )
    wait_for("iperf3 server", lambda: "5501" in p.ns_b.run("ss", "-ltn").stdout)
    client = p.ns_a.lab.spawn(
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
    result = json.loads(out)
    assert "error" not in result, result.get("error")
    assert result["end"]["sum_received"]["bytes"] > 0

    # the storm is over with B up: carrier on both ends, counters equal on both ends
    wait_for("carrier after storm", lambda: lower_up(p.ns_a, p.a) and lower_up(p.ns_b, p.b))
    changes_a, changes_b = p.carrier_changes()
    assert changes_a == changes_b
    assert changes_a % 2 == 0 and changes_a >= 2  # on again: an even count since creation
    r = p.ns_a.ping("10.9.2.2", count=5)
    assert r.returncode == 0 and " 0% packet loss" in r.stdout, r.stdout

    if isinstance(p.backend, TapVeth):
        d = p.backend.daemon
        assert d.request("ping")["pairs"] == 1  # alive, still serving the pair
        stats = {e["ifname"]: e for e in d.request("stats")}
        assert stats[p.a]["carrier_changes"] == changes_a  # the daemon's count is the kernel's
        # every frame the relay read from A was forwarded or dropped with a reason
        kernel_a = p.ns_a.link(p.a)["stats64"]
        kernel_b = p.ns_b.link(p.b)["stats64"]
        relay_drops = sum(stats[p.a]["drops"].values())
        assert kernel_a["tx"]["packets"] == stats[p.a]["tx_packets"] + relay_drops
        assert kernel_b["rx"]["packets"] == stats[p.b]["rx_packets"] == stats[p.a]["tx_packets"]
