"""The configuration file: what is accepted, and that every mistake names file, line and key."""

import pytest

from tapveth.core.config import ConfigError, EndConfig, load, parse

GOOD = """\
# two pairs
[[pair]]
persist = true
[pair.end]
name = "veth1"
netns = "ns1"
create_netns = true
mtu = 9000
address = "02:00:00:00:00:01"
addresses = ["10.0.0.1/24", "fd00::1/64"]
up = true
[pair.peer]
name = "veth2"
netns = "ns2"

[[pair]]
[pair.end]
name = "a"
[pair.peer]
name = "b"
"""


def test_good_config() -> None:
    cfg = parse(GOOD, "t.toml")
    assert len(cfg.pairs) == 2
    p = cfg.pairs[0]
    assert p.persist and p.end.up and p.end.create_netns
    assert p.end.spec.mtu == 9000 and p.end.addresses == ("10.0.0.1/24", "fd00::1/64")
    assert isinstance(p.peer, EndConfig)
    assert p.peer.spec.netns == "ns2" and not p.peer.up and p.peer.spec.mtu is None
    assert cfg.pairs[1].end.spec.netns is None
    assert p.ident == ("veth1", "ns1")


def test_same_devices() -> None:
    a = parse(GOOD).pairs[0]
    b = parse(GOOD.replace("mtu = 9000", "mtu = 1400").replace("up = true", "up = false")).pairs[0]
    c = parse(GOOD.replace('netns = "ns2"', 'netns = "ns3"')).pairs[0]
    assert a.same_devices(b) and a != b
    assert not a.same_devices(c)


def test_empty_config_is_no_pairs() -> None:
    assert parse("").pairs == ()


BAD = [
    ("mtu = 9000", "mtu = 67", ":8: pair[0].end.mtu: MTU 67 is out of range"),
    ("mtu = 9000", 'mtu = "big"', ":8: pair[0].end.mtu: must be a number, not str"),
    ("mtu = 9000", "mtu = true", ":8: pair[0].end.mtu: must be a number, not bool"),
    ("mtu = 9000", "colour = 1", ":8: pair[0].end.colour: unknown key 'colour'"),
    ("persist = true", 'persist = "yes"', ":3: pair[0].persist must be true or false"),
    ("persist = true", "persistent = true", ":3: pair[0]: unknown key 'persistent'"),
    ('address = "02:00:00:00:00:01"', 'address = "01:00:00:00:00:01"', ":9: pair[0].end.address"),
    ('"10.0.0.1/24"', '"10.0.0.300/24"', ":10: pair[0].end.addresses: '10.0.0.300/24' is not"),
    ('"10.0.0.1/24"', '"10.0.0.1"', ":10: pair[0].end.addresses: '10.0.0.1' is not a CIDR"),
    (
        'name = "veth2"\nnetns = "ns2"',
        'name = "veth1"\nnetns = "ns1"',
        ":13: pair[0].peer.name: peer name 'veth1' is the same",
    ),
    ('name = "b"', 'name = "veth1"\nnetns = "ns1"', ":20: pair[1].peer.name: 'veth1' in namespace"),
    ('name = "veth2"', 'name = "a/b"', ":13: pair[0].peer.name: interface name 'a/b' contains"),
    ('name = "veth2"', 'nome = "veth2"', ":13: pair[0].peer.nome: unknown key 'nome'"),
    ('[pair.peer]\nname = "veth2"', "[pair.peer]\nmtu = 1500", ":12: pair[0].peer: missing 'name'"),
    ("up = true", "up = 1", ":11: pair[0].end.up: must be true or false"),
    (
        '[[pair]]\n[pair.end]\nname = "a"',
        '[[pair]]\n[pair.end]\nname = "a"\n[pair.x]',
        "pair[1]: unknown key 'x'",
    ),
    ("# two pairs", "verbose = true", ":1: unknown key 'verbose'"),
    ('[pair.peer]\nname = "b"', "", "pair[1]: missing [pair.peer] table"),
    ("mtu = 9000", "mtu = 9000 9000", "invalid TOML"),
]


@pytest.mark.parametrize(("old", "new", "message"), BAD)
def test_mistakes_name_file_line_and_key(old: str, new: str, message: str) -> None:
    assert old in GOOD
    with pytest.raises(ConfigError) as info:
        parse(
            GOOD.replace(old, new, 1)
            if old != '[pair.peer]\nname = "b"'
            else GOOD[: GOOD.rindex(old)],
            "t.toml",
        )
    text = str(info.value)
    assert text.startswith("t.toml"), text
    assert message in text, text
    assert "\n" not in text


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load("/nonexistent/tapveth.toml")


def test_create_netns_needs_netns() -> None:
    with pytest.raises(ConfigError, match="create_netns: needs 'netns'"):
        parse('[[pair]]\n[pair.end]\nname = "a"\ncreate_netns = true\n[pair.peer]\nname = "b"\n')


def test_netem_per_end() -> None:
    text = GOOD.replace("up = true", 'up = true\nnetem = "delay 40ms 5ms loss 1%"')
    p = parse(text).pairs[0]
    assert p.end.netem is not None and p.end.netem.latency == 40_000_000
    assert p.end.netem.loss == 1.0 and p.peer.netem is None
    changed = parse(text.replace("loss 1%", "loss 2%")).pairs[0]
    assert p.same_devices(changed) and p != changed  # a netem change is made in place


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('"delay 4parsecs"', ':12: pair[0].end.netem: delay "4parsecs" is not a time'),
        ('"reorder 5%"', ":12: pair[0].end.netem: netem: reordering is not possible"),
        ("40", ":12: pair[0].end.netem: must be a string of tc-netem options"),
    ],
)
def test_bad_netem(value: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse(GOOD.replace("up = true", f"up = true\nnetem = {value}"), "t.toml")
    assert message in str(err.value)


def test_metrics_table() -> None:
    cfg = parse(GOOD + '\n[metrics]\nlisten = "127.0.0.1:9477"\n', "/etc/t.toml")
    assert cfg.metrics == "127.0.0.1:9477"
    assert parse(GOOD).metrics is None
    assert parse("[metrics]\n").metrics is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[metrics]\nlisten = "localhost:9477"\n', "/t.toml:2: metrics.listen: 'localhost:9477'"),
        ('[metrics]\nlisten = "127.0.0.1:0"\n', "/t.toml:2: metrics.listen: .* from 1 to 65535"),
        ("[metrics]\nport = 9477\n", "/t.toml:2: metrics: unknown key 'port'"),
        ('metrics = "127.0.0.1:9477"\n', "/t.toml:1: 'metrics' must be a table"),
    ],
)
def test_metrics_mistakes(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse(text, "/t.toml")


def test_faults_per_end() -> None:
    text = GOOD.replace("up = true", 'up = true\nfaults = "flap every 5s for 1s count 3"')
    p = parse(text).pairs[0]
    assert p.end.faults is not None and str(p.end.faults) == "flap every 5s for 1s count 3"
    assert p.peer.faults is None
    changed = parse(text.replace("count 3", "count 4")).pairs[0]
    assert p.same_devices(changed) and p != changed  # a schedule change is made in place


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('"flap every 1s"', ":12: pair[0].end.faults: flap needs 'every T for D'"),
        ('"at +1s netem loss 200%"', ":12: pair[0].end.faults: at +1s netem:"),
        ("3", ":12: pair[0].end.faults: must be a string"),
    ],
)
def test_bad_faults(value: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse(GOOD.replace("up = true", f"up = true\nfaults = {value}"), "t.toml")
    assert message in str(err.value)
