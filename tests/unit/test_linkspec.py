"""The `add` grammar (that of ip link add … type veth) and input validation."""

from typing import Any

import pytest

from tapveth.core.linkspec import EndSpec, PairSpec, Selector, SpecError, parse_add, parse_select


def test_the_iproute2_line_with_ip_link_replaced() -> None:
    spec = parse_add("veth1 type veth peer name veth2".split())
    assert spec == PairSpec(EndSpec("veth1"), EndSpec("veth2"))


def test_full_grammar() -> None:
    spec = parse_add(
        "name a1 netns ns1 mtu 9000 address 02:00:00:00:00:01 type veth "
        "peer name b1 netns ns2 mtu 1400 addr 02:00:00:00:00:02".split()
    )
    assert spec.end == EndSpec("a1", "ns1", 9000, "02:00:00:00:00:01")
    assert spec.peer == EndSpec("b1", "ns2", 1400, "02:00:00:00:00:02")


def test_peer_without_name_keyword_and_dict_roundtrip() -> None:
    spec = parse_add(["a", "peer", "b"])
    assert spec.peer.name == "b"
    assert PairSpec.from_dict(spec.to_dict()) == spec


BAD = [
    ("", "missing 'peer name PEER'"),
    ("a", "missing 'peer name PEER'"),
    ("a peer", "missing peer interface name"),
    ("peer name b", "missing interface name"),
    ("a peer name a", "is the same as the name"),
    ("abcdefghijklmnop peer name b", "longer than 15 bytes"),
    ("a/b peer name b", "contains '/'"),
    ("a%d peer name b", "contains '%'"),
    ("a:1 peer name b", "contains ':'"),
    ("a mtu 0 peer name b", "out of range"),
    ("a mtu 67 peer name b", "out of range"),
    ("a mtu 65522 peer name b", "out of range"),
    ("a mtu big peer name b", "is not a number"),
    ("a mtu -5 peer name b", "is not a number"),
    ("a address 01:00:00:00:00:01 peer name b", "multicast"),
    ("a address 00:00:00:00:00:00 peer name b", "all zeros"),
    ("a address 00:11:22:33:44 peer name b", "malformed"),
    ("a address zz:11:22:33:44:55 peer name b", "malformed"),
    ("a netns peer name b", "'netns' needs a value"),
    ("a mtu", "missing 'peer"),
    ("a mtu 1500 mtu 1400 peer name b", "given twice"),
    ("a type bridge peer name b", "only 'type veth'"),
    ("a bogus peer name b", "unknown word 'bogus'"),
    ("a peer name b type veth", "goes before 'peer'"),
    ("a peer name b mtu", "needs a value"),
    ("a netns bad/ns peer name b", "not valid"),
]


@pytest.mark.parametrize(("line", "message"), BAD)
def test_mistakes_say_what_is_wrong(line: str, message: str) -> None:
    with pytest.raises(SpecError, match=message.replace("(", r"\(")):
        parse_add(line.split())


def test_mtu_range_edges_accepted() -> None:
    assert parse_add("a mtu 68 peer name b mtu 65521".split()).peer.mtu == 65521


def test_same_name_in_different_namespaces_is_allowed() -> None:
    spec = parse_add("v netns ns1 peer name v netns ns2".split())
    assert spec.end.name == spec.peer.name


def test_from_dict_rejects_unknown_and_mistyped_fields() -> None:
    with pytest.raises(SpecError, match="unknown end field"):
        PairSpec.from_dict({"end": {"name": "a", "color": 1}, "peer": {"name": "b"}})
    with pytest.raises(SpecError, match="not a number"):
        PairSpec.from_dict({"end": {"name": "a", "mtu": True}, "peer": {"name": "b"}})
    with pytest.raises(SpecError, match="'end' and 'peer'"):
        PairSpec.from_dict(["a", "b"])


def test_dev_up_and_txqueuelen_as_ip_link_add_takes_them() -> None:
    spec = parse_add("dev a1 up txqueuelen 500 type veth peer name b1 qlen 0 up".split())
    assert spec.end == EndSpec("a1", txqueuelen=500, up=True)
    assert spec.peer == EndSpec("b1", txqueuelen=0, up=True)
    assert parse_add("a txqlen 7 down peer b".split()).end == EndSpec("a", txqueuelen=7)
    assert PairSpec.from_dict(spec.to_dict()) == spec


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("a txqueuelen peer name b", "needs a value"),
        ("a txqueuelen many peer name b", "is not a number"),
        ("a txqueuelen -1 peer name b", "is not a number"),
        ("a txqueuelen 4294967296 peer name b", "out of range"),
        ("a dev b peer name c", "given twice"),
        ("a peer name b txqueuelen", "needs a value"),
    ],
)
def test_new_words_say_what_is_wrong(line: str, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        parse_add(line.split())


def test_from_dict_checks_up_and_txqueuelen() -> None:
    with pytest.raises(SpecError, match="true or false"):
        PairSpec.from_dict({"end": {"name": "a", "up": "yes"}, "peer": {"name": "b"}})
    with pytest.raises(SpecError, match="out of range"):
        PairSpec.from_dict({"end": {"name": "a", "txqueuelen": 2**32}, "peer": {"name": "b"}})


def test_default_netns_is_for_ends_that_name_none() -> None:
    """`tapveth -n ns1 add …`, as `ip -n ns1 link add …`."""
    spec = parse_add("a peer b netns ns2".split(), default_netns="ns1")
    assert (spec.end.netns, spec.peer.netns) == ("ns1", "ns2")


@pytest.mark.parametrize(
    ("line", "want"),
    [
        ("", Selector()),
        ("veth1", Selector("veth1")),
        ("dev veth1", Selector("veth1")),
        ("netns ns1", Selector(None, "ns1")),
        ("netns ns1 veth1", Selector("veth1", "ns1")),
        ("veth1 netns ns1", Selector("veth1", "ns1")),
    ],
)
def test_selector_grammar(line: str, want: Selector) -> None:
    assert parse_select(line.split(), required=False) == want


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("a b", "unknown word 'b'"),
        ("netns", "'netns' needs a value"),
        ("netns a netns b", "given twice"),
        ("dev a dev b", "given twice"),
        ("netns bad/ns", "not valid"),
    ],
)
def test_selector_mistakes(line: str, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        parse_select(line.split(), required=False)


def test_selector_requires_a_name_for_del_and_takes_the_default_netns() -> None:
    with pytest.raises(SpecError, match="which pair"):
        parse_select(["netns", "ns1"], required=True)
    assert parse_select(["a"], required=True, default_netns="ns1") == Selector("a", "ns1")
    assert parse_select(["a", "netns", "x"], True, default_netns="ns1") == Selector("a", "x")


def test_selector_filters_by_namespace_only_without_a_name() -> None:
    ends: list[dict[str, Any]] = [{"ifname": "a", "netns": "ns1"}, {"ifname": "b", "netns": None}]
    assert [e["ifname"] for e in ends if Selector(None, "ns1").keeps(e)] == ["a"]
    assert [e["ifname"] for e in ends if Selector().keeps(e)] == ["a", "b"]
    assert [e["ifname"] for e in ends if Selector("a", "ns1").keeps(e)] == ["a", "b"]
    assert Selector("a", "ns1").to_dict() == {"name": "a", "netns": "ns1"}
    assert Selector(None, "ns1").to_dict() == {"netns": "ns1"}
