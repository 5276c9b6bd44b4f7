"""`tapveth qdisc …` words to control requests, and `[-s] qdisc show` text, without a daemon."""

import pytest

from tapveth.cli.qdisc import request_args, show_text
from tapveth.core.linkspec import SpecError
from tapveth.core.netem import Netem, parse


def test_a_tc_line_with_tc_replaced() -> None:
    words = "add dev veth1 root netem delay 40ms 5ms distribution normal loss 0.5% rate 50mbit"
    args = request_args(words.split())
    assert args["action"] == "add" and args["name"] == "veth1"
    assert Netem.from_dict(args["netem"]) == parse(words.split()[5:])


@pytest.mark.parametrize(
    ("line", "action"),
    [
        ("change dev veth1 root netem delay 80ms", "change"),
        ("replace dev veth1 root handle 1: netem loss 1%", "replace"),
        ("del dev veth1 root", "del"),
        ("delete dev veth1 root netem", "del"),
        ("show", "show"),
        ("ls dev veth1", "show"),
    ],
)
def test_actions(line: str, action: str) -> None:
    assert request_args(line.split())["action"] == action


def test_netns_picks_the_end() -> None:
    assert request_args("del dev v1 netns ns1 root".split())["netns"] == "ns1"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("", "qdisc needs an action"),
        ("frob dev v1 root netem", '"frob" is not add, change, replace, del or show'),
        ("add root netem delay 1ms", "which end? give 'dev NAME'"),
        ("add dev v1 netem delay 1ms", "give 'root'"),
        ("add dev v1 root", "give 'netem OPTIONS'"),
        ("add dev v1 parent 1:1 netem delay 1ms", "only 'root' is supported"),
        ("add dev v1 root tbf rate 1mbit", '"tbf" is not understood'),
        ("add dev v1 root netem delay 1x", 'delay "1x" is not a time'),
        ("add dev", "'dev' needs a value"),
        ("show foo", '"foo" is not understood'),
        ("add dev a/b root netem delay 1ms", "contains '/'"),
    ],
)
def test_mistakes(line: str, message: str) -> None:
    with pytest.raises(SpecError) as err:
        request_args(line.split())
    assert message in str(err.value)


def test_show_text_as_tc() -> None:
    q = {
        "kind": "netem",
        "handle": "8001:",
        "dev": "veth1",
        "netns": "ns1",
        "options": "delay 40ms",
        "limit": "4Mb",
        "stats": {
            "sent_bytes": 980,
            "sent_packets": 10,
            "dropped": 1,
            "overlimits": 0,
            "requeues": 0,
            "backlog_bytes": 0,
            "backlog_packets": 0,
            "duplicated": 0,
            "corrupted": 0,
            "ecn_marked": 0,
            "drops": {"loss": 1},
        },
    }
    text = show_text([q, {"kind": "noqueue", "dev": "veth2", "netns": None}], with_stats=True)
    lines = text.splitlines()
    assert (
        lines[0]
        == "qdisc netem 8001: dev veth1 netns ns1 root refcnt 2 limit 4Mb (bytes) delay 40ms"
    )
    assert lines[1] == " Sent 980 bytes 10 pkt (dropped 1, overlimits 0 requeues 0)"
    assert lines[2] == " backlog 0b 0p requeues 0"
    assert lines[-1] == "qdisc noqueue 0: dev veth2 root refcnt 2"
