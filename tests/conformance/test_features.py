"""Device features (`ethtool -k`), queues and link settings: the same as veth's wherever a TAP
can take them, and the rest exactly the documented differences. A VXLAN tunnel over the pair
carries TCP intact, with UDP-tunnel segmentation offloaded on both backends."""

import os
from collections.abc import Callable

import pytest
from backends import PairUnderTest, bring_up
from netlab import Netns, Stream, finish

pytestmark = pytest.mark.integration
MB = 1 << 20

# veth's defaults that tapveth matches (offloads through TUNSETOFFLOAD, the rest set with the
# ethtool ioctl when the TAP is made).
MATCHED = {
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

# On for veth; fixed off on a TAP (tun does not offer them): README's table of differences.
DIFFERENT = {
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
}


def features(ns: Netns, ifname: str) -> dict[str, str]:
    """`ethtool -k`: feature name to "on", "off", "on [fixed]" or "off [fixed]"."""
    out = ns.run("ethtool", "-k", ifname).stdout
    got = {}
    for line in out.splitlines()[1:]:
        name, _, value = line.strip().partition(": ")
        got[name] = value.strip()
    return got


def test_features_match_veth_where_a_tap_can(make_pair: Callable[..., PairUnderTest]) -> None:
    p = make_pair()
    bring_up(p)  # and after an up, which is when a TAP could reset anything
    for ns, name in ((p.ns_a, p.a), (p.ns_b, p.b)):
        got = features(ns, name)
        for feature, want in MATCHED.items():
            assert got[feature].split()[0] == want, (name, feature, got[feature])
        for feature in DIFFERENT:
            if p.backend.name == "veth":
                assert got[feature] == "on", (feature, got[feature])
            else:
                assert got[feature] == "off [fixed]", (feature, got[feature])


def test_no_undocumented_feature_differences(
    make_pair: Callable[..., PairUnderTest],
) -> None:
    """Every feature `ethtool -k` lists is either matched, or documented as different, or the
    same on both drivers by nature (fixed off on both)."""
    p = make_pair()
    got = features(p.ns_a, p.a)
    for feature, value in got.items():
        if feature in MATCHED or feature in DIFFERENT:
            continue
        assert value == "off [fixed]", (feature, value)


def test_queues_and_link_settings(make_pair: Callable[..., PairUnderTest]) -> None:
    """One receive and one transmit queue in use on both; veth allocates one per CPU (the
    documented difference: `ethtool -l` shows those as its maximum), a TAP one. Speed 10000,
    full duplex, as veth reports."""
    p = make_pair()
    bring_up(p)
    for ns, name in ((p.ns_a, p.a), (p.ns_b, p.b)):
        queues = sorted(ns.run("ls", f"/sys/class/net/{name}/queues").stdout.split())
        assert queues == ["rx-0", "tx-0"]
        link = ns.link(name)
        allocated = os.cpu_count() if p.backend.name == "veth" else 1
        assert (link["num_tx_queues"], link["num_rx_queues"]) == (allocated, allocated)
        settings = ns.run("ethtool", name).stdout
        assert "Speed: 10000Mb/s" in settings and "Duplex: Full" in settings


def test_tcp_through_a_vxlan_tunnel_over_the_pair(
    make_pair: Callable[..., PairUnderTest],
) -> None:
    """VXLAN over the pair: with UDP-tunnel segmentation on, the sender hands the pair whole
    tunnelled TCP super-frames; they must cross with their tunnel offsets intact."""
    p = make_pair()
    p.ns_a.ip("addr", "add", "10.9.5.1/24", "dev", p.a)
    p.ns_b.ip("addr", "add", "10.9.5.2/24", "dev", p.b)
    bring_up(p)
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
    Stream(p.ns_a, p.ns_b, "10.9.6.2", 20 * MB, port=5411, seed=5, timeout=60).finish()
    lengths = finish(sniffer)["lengths"]
    # Frames longer than the MTU on the wire of the pair: tunnelled super-frames crossed whole.
    assert max(lengths) > 1500 + 18, max(lengths)
    Stream(p.ns_b, p.ns_a, "10.9.6.1", 20 * MB, port=5412, seed=6, timeout=60).finish()
