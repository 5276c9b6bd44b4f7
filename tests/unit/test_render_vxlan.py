"""How a vxlan end looks in `tapveth show` and `tapveth stats`."""

from tapveth.cli import render

VX = {
    "ifname": "vxlan:42",
    "peer": "veth1",
    "netns": "hosta",
    "admin": "UP",
    "carrier": True,
    "mtu": None,
    "address": None,
    "kind": "vxlan",
    "vni": 42,
    "remote": "192.0.2.2",
    "dstport": 4789,
    "bfd": {"state": "up"},
}


def test_show_names_the_tunnel() -> None:
    out = render.show_table([VX])
    assert "vxlan id 42 remote 192.0.2.2 dstport 4789 bfd up" in out
    assert "vxlan:42  veth1" in out


def test_stats_has_the_underlay_drops() -> None:
    e = {
        "ifname": "vxlan:42",
        "netns": "hosta",
        "peer": "veth1",
        "carrier_changes": 2,
        "carrier_up_count": 1,
        "carrier_down_count": 1,
        "rx_bytes": 10,
        "rx_packets": 1,
        "rx_dropped": 0,
        "tx_bytes": 20,
        "tx_packets": 2,
        "tx_dropped": 0,
        "drops": {},
        "udp_rx": 9,
        "udp_reads": 3,
        "underlay_drops": {"vni": 4, "source": 3},
    }
    out = render.stats_text([e])
    assert "udp received 9, refused: vni 4, source 3" in out
