"""The metric families a scrape produces from one sample: names, types, labels and values, as
Prometheus reads them back from the exposition format."""

from collections.abc import Iterable

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from tapveth.core.rules import EndCounters
from tapveth.daemon.metrics import EndSample, Sample, families


class _Fixed(Collector):
    def __init__(self, sample: Sample) -> None:
        self.sample = sample

    def collect(self) -> Iterable[Metric]:
        return list(families(self.sample))


def _end(name: str, ns: str, drops: dict[str, int]) -> EndSample:
    counters = EndCounters(
        rx_packets=10,
        rx_bytes=1000,
        tx_packets=12,
        tx_bytes=1500,
        rx_dropped=1,
        tx_dropped=sum(drops.values()),
        drops=drops,
    )
    return EndSample(["veth1/veth2", name, ns], counters, True, 2, 1, 1, 1500, True)


def test_exposition_names_types_and_labels() -> None:
    sample = Sample(
        ends=[_end("veth1", "ns1", {"mtu": 3, "peer_down": 1}), _end("veth2", "-", {})],
        pairs=1,
        wakeups=7,
        frames=40,
    )
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed(sample))
    text = generate_latest(registry).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["tapveth_pairs"].type == "gauge"
    assert families["tapveth_relay_wakeups"].type == "counter"
    assert families["tapveth_network_mtu_bytes"].type == "gauge"
    counters = "receive_bytes receive_packets transmit_bytes transmit_packets receive_drop"
    for name in [*counters.split(), "transmit_drop", "carrier_changes"]:
        assert families[f"tapveth_network_{name}"].type == "counter"
    values = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in families.values()
        for s in f.samples
    }
    veth1 = (("end", "veth1"), ("netns", "ns1"), ("pair", "veth1/veth2"))
    assert values[("tapveth_network_transmit_bytes_total", veth1)] == 1500
    assert values[("tapveth_network_transmit_drop_total", veth1)] == 4
    mtu = (*veth1, ("reason", "mtu"))
    assert values[("tapveth_relay_drops_total", mtu)] == 3
    assert values[("tapveth_relay_frames_total", ())] == 40
    assert values[("tapveth_relay_wakeups_total", ())] == 7
    assert values[("tapveth_network_carrier", veth1)] == 1
    reasons = [
        s.labels for s in families["tapveth_relay_drops"].samples if s.name.endswith("_total")
    ]
    assert [(r["end"], r["reason"]) for r in reasons] == [("veth1", "mtu"), ("veth1", "peer_down")]
    assert "# HELP tapveth_network_mtu_bytes MTU of this end." in text


def test_impaired_direction_settings_and_backlog() -> None:
    from dataclasses import replace

    from tapveth.core.netem import Netem
    from tapveth.daemon.metrics import NetemSample

    settings = Netem(latency=40_000_000, jitter=5_000_000, loss=0.5, rate=6_250_000, limit=None)
    impaired = replace(
        _end("veth1", "ns1", {"loss": 2, "queue": 1}),
        netem=NetemSample(settings, 4 << 20, 3, 4500),
    )
    sample = Sample(ends=[impaired, _end("veth2", "-", {})], pairs=1, wakeups=1, frames=9)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed(sample))
    text = generate_latest(registry).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    values = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in families.values()
        for s in f.samples
    }
    veth1 = (("end", "veth1"), ("netns", "ns1"), ("pair", "veth1/veth2"))
    assert families["tapveth_netem_info"].type == "gauge"  # info, in the text format
    options = "delay 40ms 5ms loss 0.5% rate 50Mbit"
    assert values[("tapveth_netem_info", (*veth1[:2], ("options", options), veth1[2]))] == 1
    for name, want in (
        ("tapveth_netem_backlog_packets", 3),
        ("tapveth_netem_backlog_bytes", 4500),
        ("tapveth_netem_limit_bytes", 4 << 20),
        ("tapveth_netem_delay_seconds", 0.04),
        ("tapveth_netem_jitter_seconds", 0.005),
        ("tapveth_netem_loss_ratio", 0.005),
        ("tapveth_netem_duplicate_ratio", 0),
        ("tapveth_netem_rate_bytes_per_second", 6_250_000),
    ):
        assert families[name].type == "gauge"
        assert values[(name, veth1)] == pytest.approx(want), name
    # only impaired directions have netem series; a byte bound means no packet limit
    assert not any(n.startswith("tapveth_netem") and ("end", "veth2") in k for n, k in values)
    assert ("tapveth_netem_limit_packets", veth1) not in values
    assert values[("tapveth_relay_drops_total", (*veth1[:2], *veth1[2:], ("reason", "loss")))] == 2
