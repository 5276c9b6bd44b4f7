"""The record of pairs that requests asked to persist: written, read back, forgotten."""

import json
import os
from pathlib import Path

from tapveth.core.linkspec import EndSpec, PairSpec
from tapveth.daemon.persisted import PersistedPairs, PersistentPlaces

SPEC = PairSpec(EndSpec("eth0", "netns-1", 1400), EndSpec("tv0123456789abc", None, 1400))
OTHER = PairSpec(EndSpec("eth0", "netns-2"), EndSpec("tvfedcba9876543"))


def test_written_read_back_and_forgotten(tmp_path: Path) -> None:
    sock = str(tmp_path / "t.sock")
    kept = PersistedPairs(sock)
    assert kept.load() == []
    kept.add(SPEC)
    kept.add(OTHER)
    assert oct(os.stat(sock + ".persist").st_mode & 0o777) == "0o600"
    assert PersistedPairs(sock).load() == [SPEC, OTHER]
    kept.drop({"eth0", "tv0123456789abc"})
    assert PersistedPairs(sock).load() == [OTHER]
    kept.drop({"eth0", "nothing"})  # no such pair: nothing changes
    assert PersistedPairs(sock).load() == [OTHER]
    kept.drop({"tvfedcba9876543", "eth0"})
    assert not os.path.exists(sock + ".persist")  # empty: no file left


def test_a_damaged_record_is_ignored(tmp_path: Path) -> None:
    sock = str(tmp_path / "t.sock")
    for text in ("not json", json.dumps([{"end": {"name": "a"}}]), json.dumps({"x": 1})):
        (tmp_path / "t.sock.persist").write_text(text)
        assert PersistedPairs(sock).load() == []


def test_places_of_persistent_ends_written_and_read_back(tmp_path: Path) -> None:
    sock = str(tmp_path / "t.sock")
    assert PersistentPlaces(sock).load() is None  # no record: the search looks everywhere
    places = PersistentPlaces(sock)
    places.save(["ns1", "ns2"])
    assert oct(os.stat(sock + ".places").st_mode & 0o777) == "0o600"
    assert PersistentPlaces(sock).load() == ["ns1", "ns2"]
    places.save([])  # none left: an empty record, not a missing one
    assert PersistentPlaces(sock).load() == []


def test_a_damaged_places_record_means_no_record(tmp_path: Path) -> None:
    sock = str(tmp_path / "t.sock")
    for text in ("{not json", '{"ns1": 1}', '["ns1", 2]'):
        Path(sock + ".places").write_text(text)
        assert PersistentPlaces(sock).load() is None
