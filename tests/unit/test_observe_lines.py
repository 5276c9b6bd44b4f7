"""What `tapveth capture` prints for a frame and `tapveth monitor` for an event."""

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6
from scapy.layers.l2 import ARP, Dot1Q, Ether

from tapveth.cli.capture import summarize
from tapveth.cli.monitor import event_line

ETH = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")


@pytest.mark.parametrize(
    ("pkt", "line"),
    [
        (
            ETH / IP(src="10.0.0.1", dst="10.0.0.2") / ICMP(),
            "IP 10.0.0.1 > 10.0.0.2 ICMP echo-request",
        ),
        (
            ETH / IP(src="10.0.0.2", dst="10.0.0.1") / ICMP(type=0),
            "IP 10.0.0.2 > 10.0.0.1 ICMP echo-reply",
        ),
        (
            ETH / Dot1Q(vlan=5) / IP(src="10.0.0.1", dst="10.0.0.2") / ICMP(),
            "vlan 5 IP 10.0.0.1 > 10.0.0.2 ICMP echo-request",
        ),
        (
            ETH
            / IP(src="10.0.0.1", dst="10.0.0.2")
            / TCP(sport=40000, dport=5201, flags="S", seq=7),
            "IP 10.0.0.1.40000 > 10.0.0.2.5201 TCP [S] seq 7 ack 0 len 0",
        ),
        (
            ETH / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=53, dport=53),
            "IP 10.0.0.1.53 > 10.0.0.2.53 UDP",
        ),
        (ETH / ARP(op=1, psrc="10.0.0.1", pdst="10.0.0.2"), "ARP who-has 10.0.0.2 tell 10.0.0.1"),
        (
            ETH / IPv6(src="fd00::1", dst="fd00::2") / ICMPv6EchoRequest(),
            "IP6 fd00::1 > fd00::2 ICMPv6 Echo Request",
        ),
    ],
)
def test_summaries(pkt: Ether, line: str) -> None:
    frame = bytes(pkt)
    assert summarize(frame) == f"{line}, length {len(frame)}"


def test_a_runt_still_gets_a_line() -> None:
    assert summarize(b"\x01\x02\x03") == "runt, length 3"


EV = {"time": 1.5, "ifname": "veth1", "netns": "ns1", "peer": "veth2", "peer_netns": None}


@pytest.mark.parametrize(
    ("extra", "line"),
    [
        ({"event": "created", "reattached": False}, "created veth1 netns ns1 peer veth2"),
        (
            {"event": "created", "reattached": True},
            "created veth1 netns ns1 peer veth2 (re-attached)",
        ),
        (
            {"event": "deleted", "why": "deleted on request"},
            "deleted veth1 netns ns1 peer veth2: deleted on request",
        ),
        ({"event": "moved"}, "moved veth1 to netns ns1"),
        ({"event": "moved", "netns": None}, "moved veth1 to the daemon's namespace"),
        ({"event": "renamed", "old": "a", "new": "b"}, "renamed a to b"),
        ({"event": "carrier", "carrier": True}, "carrier up veth1 netns ns1 peer veth2"),
        ({"event": "carrier", "carrier": False}, "carrier down veth1 netns ns1 peer veth2"),
        ({"event": "mtu", "mtu": 9000}, "mtu 9000 veth1 netns ns1"),
        ({"event": "lost", "count": 3}, "lost 3 events: the monitor fell behind"),
        (
            {"event": "fault", "fault": "cut", "detail": "cut", "step": "flap 2/3"},
            "fault cut veth1 netns ns1 (flap 2/3)",
        ),
        ({"event": "fault", "fault": "done"}, "fault done veth1 netns ns1"),
        (
            {"event": "qdisc", "action": "add", "netem": "delay 10ms"},
            "qdisc add veth1 netns ns1 netem delay 10ms",
        ),
        ({"event": "qdisc", "action": "del", "netem": None}, "qdisc del veth1 netns ns1"),
        ({"event": "other", "what": "x"}, "other veth1 netns ns1 peer veth2 what x"),
    ],
)
def test_event_lines(extra: dict[str, object], line: str) -> None:
    assert event_line({**EV, **extra}) == line


def test_event_line_with_a_timestamp() -> None:
    line = event_line({**EV, "event": "mtu", "mtu": 1500}, timestamps=True)
    assert line.startswith("[19") and line.endswith(".500000] mtu 1500 veth1 netns ns1")
