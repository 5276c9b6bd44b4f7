"""Left-over persistent pairs: the alias that marks them, matching their ends, showing them."""

from tapveth.core import orphans
from tapveth.core.orphans import Orphan, OrphanEnd


def end(name: str, peer: str, netns: str | None = "ns1") -> OrphanEnd:
    return OrphanEnd(name, netns, peer, 1500, "02:00:00:00:00:01", False)


SOCK = "/run/tapveth/tapveth.sock"


def test_alias_round_trip_and_foreign_aliases() -> None:
    assert orphans.peer_from_alias(orphans.alias_for("veth2", SOCK), SOCK) == "veth2"
    assert orphans.peer_from_alias(orphans.alias_for("a,b", SOCK), SOCK) == "a,b"
    other = orphans.alias_for("veth2", "/run/tapveth-lab/tapveth.sock")
    for alias in (None, "", "uplink to the VM", orphans.ALIAS_PREFIX, other):
        assert orphans.peer_from_alias(alias, SOCK) is None


def test_ends_naming_each_other_are_one_pair_and_a_lone_end_stays_alone() -> None:
    a, b = end("veth1", "veth2"), end("veth2", "veth1", "ns2")
    lone = end("x1", "x2")
    stranger = end("veth2", "other", "ns3")  # names veth1? no: it names "other"
    got = orphans.match([a, lone, stranger, b])
    assert got == [Orphan(a, b), Orphan(lone, None), Orphan(stranger, None)]
    assert got[0].label() == "veth1 (netns ns1) <-> veth2 (netns ns2)"
    assert Orphan(end("v", "w", None), None).label() == "v (daemon's namespace)"


def test_find_by_name_and_namespace() -> None:
    pair = Orphan(end("veth1", "veth2"), end("veth2", "veth1", "ns2"))
    assert orphans.find([pair], "veth2", None) is pair
    assert orphans.find([pair], "veth2", "ns2") is pair
    assert orphans.find([pair], "veth2", "ns1") is None
    assert orphans.find([pair], "nope", None) is None


def test_shown_as_orphaned_without_carrier() -> None:
    rows = orphans.describe(Orphan(end("veth1", "veth2"), None))
    assert rows == [
        {
            "ifname": "veth1",
            "peer": "veth2",
            "netns": "ns1",
            "ifindex": None,
            "admin": "DOWN",
            "carrier": False,
            "operstate": "DOWN",
            "mtu": 1500,
            "address": "02:00:00:00:00:01",
            "orphaned": True,
        }
    ]


def test_the_record_keeps_names_only_of_namespaces_found_again_by_name() -> None:
    ends = ["ns2", None, "ns1", "inode:4026532000", "ns2"]
    assert orphans.places(ends) == ["ns1", "ns2"]


def test_the_search_looks_where_the_record_says_or_everywhere_without_one() -> None:
    named = ["a", "b", "c", "d"]
    assert orphans.to_scan(None, named) == named  # first start, or the record was lost
    assert orphans.to_scan(["b", "gone", "d"], named) == ["b", "d"]  # deleted ones skipped
    assert orphans.to_scan([], named) == []  # no persistent ends: only the daemon's own
