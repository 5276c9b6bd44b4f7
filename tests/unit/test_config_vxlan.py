"""Pairs stretched over VXLAN in the configuration file: the peer's `vxlan` line (the words of
`tapveth add … peer vxlan`), its netem and faults, mistakes, and what a reload does with them."""

import pytest

from tapveth.core.config import ConfigError, EndConfig, VxlanPeerConfig, parse
from tapveth.core.faults import parse as parse_faults
from tapveth.core.netem import parse as parse_netem
from tapveth.core.reconcile import fault_changes, netem_changes, plan
from tapveth.core.vxlanspec import VxlanSpec

VX = """
[[pair]]
[pair.end]
name = "veth1"
netns = "ns1"
addresses = ["10.42.0.1/24"]
up = true
netem = "delay 10ms"
[pair.peer]
vxlan = "id 42 remote 192.0.2.2 dstport 4789 underlay-netns host bfd"
netem = "loss 1%"
faults = "flap every 60s for 1s"
"""


def test_vxlan_peer_reads_as_the_cli_words() -> None:
    cfg = parse(VX, "t.toml")
    (pc,) = cfg.pairs
    assert isinstance(pc.end, EndConfig) and pc.end.netem == parse_netem(["delay", "10ms"])
    assert isinstance(pc.peer, VxlanPeerConfig)
    assert pc.peer.spec == VxlanSpec(
        vni=42, remote="192.0.2.2", dstport=4789, underlay_netns="host", bfd=True
    )
    assert pc.peer.netem == parse_netem(["loss", "1%"])
    assert pc.peer.faults == parse_faults(["flap", "every", "60s", "for", "1s"])
    assert pc.spec.peer == pc.peer.spec  # what the daemon makes, as `tapveth add` would
    assert pc.ident == ("veth1", "ns1")


def test_vxlan_peer_defaults() -> None:
    (pc,) = parse(VX.replace(" dstport 4789 underlay-netns host bfd", "")).pairs
    assert isinstance(pc.peer, VxlanPeerConfig)
    assert pc.peer.spec.dstport == 8472 and pc.peer.spec.underlay_netns is None
    assert not pc.peer.spec.bfd


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            'vxlan = "id 42 remote 192.0.2.2',
            'vxlan = "id 42 remote 224.0.0.1',
            "t.toml:10: pair[0].peer.vxlan: vxlan remote 224.0.0.1 is not a unicast address",
        ),
        ('vxlan = "id 42 ', 'vxlan = "', "t.toml:10: pair[0].peer.vxlan: missing 'id VNI'"),
        (
            'bfd"\n',
            'bfd ttl 4"\n',
            "t.toml:10: pair[0].peer.vxlan: unknown word 'ttl' in 'peer vxlan' arguments",
        ),
        (
            'vxlan = "id 42 remote 192.0.2.2 dstport 4789 underlay-netns host bfd"',
            "vxlan = 42",
            "t.toml:10: pair[0].peer.vxlan: must be a string",
        ),
        (
            'netem = "loss 1%"',
            'mtu = 1400\nnetem = "loss 1%"',
            "t.toml:11: pair[0].peer.mtu: a vxlan peer takes only faults, netem, vxlan",
        ),
        (
            'netem = "loss 1%"',
            'name = "x"',
            "t.toml:11: pair[0].peer.name: a vxlan peer takes only",
        ),
        ('netem = "loss 1%"', 'netem = "loss"', "t.toml:11: pair[0].peer.netem:"),
        ('faults = "flap', 'faults = "flop', "t.toml:12: pair[0].peer.faults:"),
        ("[[pair]]\n", "[[pair]]\npersist = true\n", "t.toml:3: pair[0].persist: a pair whose"),
        (
            'name = "veth1"',
            'vxlan = "id 1 remote 192.0.2.2"',
            "t.toml:4: pair[0].end.vxlan: the tunnel goes in [pair.peer]",
        ),
    ],
)
def test_vxlan_mistakes_name_file_line_and_key(old: str, new: str, message: str) -> None:
    assert old in VX
    with pytest.raises(ConfigError) as err:
        parse(VX.replace(old, new, 1), "t.toml")
    assert str(err.value).startswith(message), str(err.value)
    assert "\n" not in str(err.value)


def test_same_tunnel_twice_is_refused() -> None:
    second = VX.replace('"veth1"', '"veth2"')
    with pytest.raises(ConfigError) as err:
        parse(VX + second, "t.toml")
    assert "pair[1].peer.vxlan: 'vxlan:42' in namespace host is already used by pair[0].peer" in (
        str(err.value)
    )
    # Another VNI, or the same one in another underlay namespace, is another tunnel end.
    parse(VX + second.replace("id 42", "id 43"))
    parse(VX + second.replace("underlay-netns host", "underlay-netns other"))


def test_reload_changes_impairments_in_place_and_remakes_a_changed_tunnel() -> None:
    old = parse(VX)
    running = {pc.ident: pc for pc in old.pairs}
    # netem, faults and the TAP end's addresses and MTU change in place.
    new = parse(
        VX.replace('netem = "loss 1%"', 'netem = "loss 5%"')
        .replace('faults = "flap every 60s for 1s"\n', "")
        .replace('up = true\nnetem = "delay 10ms"', 'up = true\nmtu = 1400\nnetem = "delay 10ms"')
    )
    p = plan(running, new)
    assert p.change == [(old.pairs[0], new.pairs[0])] and not p.create and not p.remove
    assert netem_changes(old.pairs[0], new.pairs[0]) == [(1, parse_netem(["loss", "5%"]))]
    assert fault_changes(old.pairs[0], new.pairs[0]) == [(1, None)]
    # Unchanged: untouched.
    assert plan(running, parse(VX)).keep == [("veth1", "ns1")]
    # Any word of the tunnel changed: made anew.
    for words in ("id 43", "remote 192.0.2.3", "dstport 4790", "underlay-netns other"):
        key = words.split()[0]
        line = next(w for w in VX.splitlines() if w.startswith("vxlan"))
        before = {"id": "id 42", "remote": "remote 192.0.2.2", "dstport": "dstport 4789"}
        before["underlay-netns"] = "underlay-netns host"
        changed = parse(VX.replace(line, line.replace(before[key], words)))
        p = plan(running, changed)
        assert p.remove == [("veth1", "ns1")] and p.create == [changed.pairs[0]], words
    # A vxlan peer replaced by a TAP peer (and back): made anew.
    tap_peer = VX.replace(
        'vxlan = "id 42 remote 192.0.2.2 dstport 4789 underlay-netns host bfd"',
        'name = "veth2"\nnetns = "ns2"',
    )
    p = plan(running, parse(tap_peer))
    assert p.remove == [("veth1", "ns1")] and len(p.create) == 1
