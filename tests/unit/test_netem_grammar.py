"""The tc-netem grammar: every line of tc-netem(8) we accept, its units, and clear errors."""

import pytest

from tapveth.core.netem import Netem, NetemError, default_limit_bytes, describe, parse


def p(line: str) -> Netem:
    return parse(line.split())


def test_the_users_line() -> None:
    s = p("delay 40ms 5ms distribution normal loss 0.5% rate 50mbit")
    assert (s.latency, s.jitter, s.distribution, s.loss) == (40_000_000, 5_000_000, "normal", 0.5)
    assert s.rate == 50_000_000 // 8


@pytest.mark.parametrize(
    ("word", "ns"),
    [
        ("40ms", 40_000_000),
        ("40msec", 40_000_000),
        ("1.5s", 1_500_000_000),
        ("2sec", 2_000_000_000),
        ("300us", 300_000),
        ("300usec", 300_000),
        ("250", 250_000),  # a bare number is microseconds, as in tc(8)
        ("10ns", 10),
        ("1MS", 1_000_000),
    ],
)
def test_times(word: str, ns: int) -> None:
    assert p(f"delay {word}").latency == ns


@pytest.mark.parametrize(
    ("word", "bytes_per_s"),
    [
        ("50mbit", 6_250_000),
        ("1gbit", 125_000_000),
        ("1Gbit", 125_000_000),
        ("8kbit", 1000),
        ("1kibit", 128),
        ("1mibit", 131072),
        ("1tbit", 125_000_000_000),
        ("100bps", 100),
        ("1kbps", 1000),
        ("1KiBps", 1024),
        ("1mbps", 1_000_000),
        ("8000", 1000),  # a bare number is bits per second
        ("800bit", 100),
    ],
)
def test_rates(word: str, bytes_per_s: int) -> None:
    assert p(f"rate {word}").rate == bytes_per_s


def test_percentages_with_or_without_the_sign() -> None:
    assert p("loss 0.5%").loss == 0.5
    assert p("loss 0.5").loss == 0.5
    assert p("loss random 3% 25%").loss_corr == 25.0


def test_every_option() -> None:
    s = p(
        "limit 300 delay 10ms 2ms 25% distribution pareto loss state 1% 20% 30% 40% 0.1% "
        "duplicate 1% 5% reorder 25% 50% gap 5 corrupt 0.1% 2% rate 1mbit 20 48 5 "
        "slot 1ms 3ms packets 10 bytes 64k seed 42"
    )
    assert s.limit == 300
    assert (s.jitter, s.delay_corr, s.distribution) == (2_000_000, 25.0, "pareto")
    assert s.loss_state == (1.0, 20.0, 30.0, 40.0, 0.1)
    assert (s.duplicate, s.duplicate_corr) == (1.0, 5.0)
    assert (s.reorder, s.reorder_corr, s.gap) == (25.0, 50.0, 5)
    assert (s.corrupt, s.corrupt_corr) == (0.1, 2.0)
    assert (s.rate, s.packet_overhead, s.cell_size, s.cell_overhead) == (125_000, 20, 48, 5)
    assert (s.slot_min, s.slot_max, s.slot_packets, s.slot_bytes) == (
        1_000_000,
        3_000_000,
        10,
        65536,
    )
    assert s.seed == 42
    assert parse(s.words()) == s
    assert Netem.from_dict(s.to_dict()) == s


def test_loss_model_defaults_are_tcs() -> None:
    assert p("loss state 5%").loss_state == (5.0, 95.0, 0.0, 100.0, 0.0)
    assert p("loss gemodel 1%").loss_gemodel == (1.0, 100.0, 100.0, 0.0)
    assert p("loss gemodel 1% 30%").loss_gemodel == (1.0, 30.0, 100.0, 0.0)
    assert p("loss gemodel 1% 30% 80% 2%").loss_gemodel == (1.0, 30.0, 80.0, 2.0)


def test_abbreviations_and_synonyms() -> None:
    assert p("dup 1%").duplicate == 1.0
    assert p("latency 5ms").latency == 5_000_000
    assert p("drop 2%").loss == 2.0
    assert p("delay 1ms reorder 10%").gap == 1  # tc's default gap with reorder


def test_slot_distribution_and_negative_overhead() -> None:
    s = p("slot distribution normal 10ms 2ms packets 4")
    assert (s.slot_distribution, s.slot_delay, s.slot_jitter, s.slot_packets) == (
        "normal",
        10_000_000,
        2_000_000,
        4,
    )
    assert p("rate 1mbit -4").packet_overhead == -4
    assert parse(s.words()) == s


def test_ecn_with_a_loss_model() -> None:
    assert p("loss 1% ecn").ecn


def test_describe_is_what_tc_shows() -> None:
    assert describe(p("delay 40ms 5ms loss 0.5% rate 50mbit")) == (
        "delay 40ms 5ms loss 0.5% rate 50Mbit"
    )
    assert describe(p("delay 1.5s")) == "delay 1.5s"
    assert describe(p("delay 300us")) == "delay 300us"
    assert describe(Netem()) == ""


def test_default_limit_holds_rate_times_delay() -> None:
    s = p("delay 1s rate 100mbit")
    assert default_limit_bytes(s) >= 100_000_000 // 8  # one second of the rate in flight
    assert default_limit_bytes(p("delay 1ms")) >= 10_000_000_000 // 8 // 1000
    assert default_limit_bytes(p("delay 100s")) == 1 << 30  # capped


BAD = [
    ("delay", "delay TIME is missing"),
    ("delay 4x", 'delay "4x" is not a time'),
    ("delay -5ms", 'delay "-5ms" is not a time'),
    ("loss 101%", "out of range"),
    ("loss -1", 'loss "-1" is not a percentage'),
    ("loss foo", 'loss "foo" is not a percentage nor random, state or gemodel'),
    ("loss 1% loss 2%", "loss is given twice"),
    ("loss 1% 2% 3%", '"3%" is not an option'),
    ("loss gemodel", "loss gemodel PERCENT is missing"),
    ("rate", "rate RATE is missing"),
    ("rate 5furlongs", 'rate "5furlongs" is not a rate'),
    ("rate 10%", "percentage of the link speed is not supported"),
    ("rate 0bit", "out of range"),
    ("delay 10ms 1ms distribution gauss", 'distribution "gauss" is not one of'),
    ("distribution normal", "distribution given without a delay and a jitter"),
    ("delay 10ms distribution normal", "distribution given without a delay and a jitter"),
    ("reorder 10%", "reordering is not possible without some delay"),
    ("delay 1ms gap 5", "gap given without a reorder probability"),
    ("ecn", "ecn requested without a loss model"),
    ("limit -1", "out of range"),
    ("limit many", 'limit "many" is not an integer'),
    ("seed x", 'seed "x" is not an integer'),
    ("slot 3ms 1ms", "slot max delay is shorter than the min delay"),
    ("slot fast", 'slot "fast" is neither a time nor "distribution"'),
    ("slot distribution normal 1ms 0ms", "slot jitter must be positive"),
    ("frobnicate", '"frobnicate" is not an option'),
    ("rate 1mbit 10 4 -5", "cell size plus cell overhead must be positive"),
]


@pytest.mark.parametrize(("line", "message"), BAD)
def test_bad_lines_say_what_is_wrong(line: str, message: str) -> None:
    with pytest.raises(NetemError) as err:
        p(line)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "data",
    [
        {"latency": "40ms"},
        {"loss": 120.0},
        {"nope": 1},
        {"loss_state": [1, 2]},
        {"distribution": "gauss", "latency": 1, "jitter": 1},
        {"ecn": 1},
        {"reorder": 5.0},
        [],
    ],
)
def test_from_dict_is_as_strict_as_the_grammar(data: object) -> None:
    with pytest.raises(NetemError):
        Netem.from_dict(data)
