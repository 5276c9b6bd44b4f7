"""Prometheus metrics (`tapveth daemon --metrics HOST:PORT`): per-end counters named as
node_exporter's netdev metrics, drops by reason, carrier and MTU, the relay's wake-ups, and
the settings and queue backlog of each impaired direction.

prometheus-client serves them from its own thread. A scrape reads the counters the relay keeps
anyway (plain integers, see core/rules.py) in one pass on the event loop, so it sees one
consistent moment and the hot path pays nothing; the kernel's own drop counters of the TAPs
come through the netlink worker, as for `tapveth stats`.
"""

import asyncio
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from tapveth.control import ControlError
from tapveth.core.address import parse_listen
from tapveth.core.netem import Netem, describe
from tapveth.core.rules import EndCounters, Flow
from tapveth.daemon import provision, sandbox
from tapveth.daemon.events import Event
from tapveth.daemon.pair import End
from tapveth.daemon.relay import Relay

if TYPE_CHECKING:
    from tapveth.daemon.service import Daemon
    from tapveth.daemon.vxlan_end import VxlanEnd

log = logging.getLogger("tapveth")

SCRAPE_TIMEOUT = 5.0  # the loop must answer within this; a stuck daemon fails the scrape
LABELS = ["pair", "end", "netns"]


@dataclass(frozen=True, slots=True)
class NetemSample:
    """One impaired direction at the scrape: its settings and what its queue holds."""

    settings: Netem
    limit_bytes: int  # the queue's byte bound when no packet limit is set, else 0
    backlog_packets: int
    backlog_bytes: int


@dataclass(frozen=True, slots=True)
class EndSample:
    labels: list[str]
    counters: EndCounters
    carrier: bool
    carrier_changes: int
    carrier_up: int
    carrier_down: int
    mtu: int
    up: bool
    netem: NetemSample | None = None  # the frames this end sends go through netem


@dataclass(frozen=True, slots=True)
class Sample:
    """What one scrape reads, taken on the event loop in one go."""

    ends: list[EndSample]
    pairs: int
    wakeups: int
    frames: int


class Metrics(Collector):
    def __init__(self, daemon: "Daemon", relay: Relay, listen: str) -> None:
        self._d = daemon
        self._relay = relay
        self._host, self._port = parse_listen(listen)
        host = f"[{self._host}]" if ":" in self._host else self._host
        self.listen = f"{host}:{self._port}"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: WSGIServer | None = None
        self._retired = 0  # frames relayed for pairs deleted since the daemon started

    def start(self) -> None:
        """Bind and serve; ControlError with one line if the address cannot be used."""
        self._loop = asyncio.get_running_loop()
        registry = CollectorRegistry(auto_describe=False)
        registry.register(self)
        ProcessCollector(registry=registry)
        try:
            self._server, _ = start_http_server(self._port, self._host, registry)
        except OSError as exc:
            if sandbox.refused(exc):
                family = "AF_INET6" if ":" in self._host else "AF_INET"
                raise ControlError(sandbox.explain(f"metrics on {self.listen}", family)) from None
            raise ControlError(f"cannot serve metrics on {self.listen}: {exc.strerror}") from None
        self._d.events.listen(self._on_event)
        log.info("metrics on http://%s/metrics", self.listen)

    async def close(self) -> None:
        self._d.events.unlisten(self._on_event)
        if self._server is not None:
            await asyncio.to_thread(self._server.shutdown)  # waits for its poll loop (0.5 s)
            self._server.server_close()
            self._server = None

    def _on_event(self, ev: Event) -> None:
        if ev.kind == "deleted":
            self._retired += _frames(ev.pair.a.out) + _frames(ev.pair.b.out)

    async def _sample(self) -> Sample:
        reg = self._d.registry
        chosen = [(p, e) for p in reg.pairs for e in p.ends()]
        try:
            drops: list[tuple[int, int] | None] = list(
                await self._d.worker.call(provision.kernel_drops, [e.key for _, e in chosen])
            )
        except OSError:  # an end moving right now: the relay's own counts still hold
            drops = [None] * len(chosen)
        ends = []
        frames = self._retired
        for (pair, end), kernel in zip(chosen, drops, strict=True):
            if pair.closed:
                continue
            frames += _frames(end.out)
            ends.append(
                EndSample(
                    labels=[f"{pair.a.name}/{pair.b.name}", end.name, reg.ns_name(end) or "-"],
                    counters=pair.counters(end, kernel),
                    carrier=pair.carrier.on,
                    carrier_changes=pair.carrier.changes,
                    carrier_up=pair.carrier.up_count,
                    carrier_down=pair.carrier.down_count,
                    mtu=end.mtu,
                    up=end.up,
                    netem=_netem(end),
                )
            )
        return Sample(ends, len(reg.pairs), self._relay.wakeups, frames)

    def collect(self) -> Iterable[Metric]:
        """Called by prometheus-client in its thread, once per scrape."""
        assert self._loop is not None
        sample = asyncio.run_coroutine_threadsafe(self._sample(), self._loop).result(SCRAPE_TIMEOUT)
        return list(families(sample))


def _frames(flow: Flow) -> int:
    return flow.packets + flow.dropped


def _netem(end: "End | VxlanEnd") -> NetemSample | None:
    """The impairments of the frames `end` sends (a VXLAN end: those it delivers)."""
    link = end.impair
    if link is None:
        return None
    model = link.model
    stats = model.stats
    return NetemSample(
        model.settings, model.limit_bytes, stats.backlog_packets, stats.backlog_bytes
    )


def families(s: Sample) -> Iterator[Metric]:
    yield GaugeMetricFamily("tapveth_pairs", "Pairs the daemon owns.", value=s.pairs)
    yield CounterMetricFamily(
        "tapveth_relay_wakeups",
        "Batches the relay handled (each a wake-up for one readable TAP, up to 64 frames).",
        value=s.wakeups,
    )
    yield CounterMetricFamily(
        "tapveth_relay_frames",
        "Frames the relay read from any TAP, delivered or dropped (deleted pairs included).",
        value=s.frames,
    )

    def per_end(name: str, doc: str, value: Any, gauge: bool = False) -> Metric:
        family: CounterMetricFamily | GaugeMetricFamily = (
            GaugeMetricFamily(name, doc, labels=LABELS)
            if gauge
            else CounterMetricFamily(name, doc, labels=LABELS)
        )
        for e in s.ends:
            family.add_metric(e.labels, float(value(e)))
        return family

    yield per_end(
        "tapveth_network_receive_bytes",
        "Bytes this end received (whole L2 frames, no FCS, no virtio header).",
        lambda e: e.counters.rx_bytes,
    )
    yield per_end(
        "tapveth_network_receive_packets",
        "Frames this end received (a GSO super-frame counts once).",
        lambda e: e.counters.rx_packets,
    )
    yield per_end(
        "tapveth_network_transmit_bytes",
        "Bytes this end sent that reached its peer.",
        lambda e: e.counters.tx_bytes,
    )
    yield per_end(
        "tapveth_network_transmit_packets",
        "Frames this end sent that reached its peer.",
        lambda e: e.counters.tx_packets,
    )
    yield per_end(
        "tapveth_network_receive_drop",
        "Frames for this end that were dropped (rx_dropped of tapveth stats).",
        lambda e: e.counters.rx_dropped,
    )
    yield per_end(
        "tapveth_network_transmit_drop",
        "Frames from this end that were dropped (tx_dropped of tapveth stats).",
        lambda e: e.counters.tx_dropped,
    )
    reasons = CounterMetricFamily(
        "tapveth_relay_drops",
        "Frames this end sent that the relay refused, by reason.",
        labels=[*LABELS, "reason"],
    )
    for e in s.ends:
        for reason, count in e.counters.drops.items():
            reasons.add_metric([*e.labels, reason], float(count))
    yield reasons
    yield per_end(
        "tapveth_network_carrier",
        "1 when the pair has carrier (both ends admin-up), else 0.",
        lambda e: e.carrier,
        gauge=True,
    )
    yield per_end(
        "tapveth_network_up",
        "1 when this end is administratively up, else 0.",
        lambda e: e.up,
        gauge=True,
    )
    yield per_end(
        "tapveth_network_carrier_changes",
        "Carrier transitions of the pair (starts at 1, as on a new veth).",
        lambda e: e.carrier_changes,
    )
    yield per_end(
        "tapveth_network_carrier_up_changes",
        "Carrier transitions to up.",
        lambda e: e.carrier_up,
    )
    yield per_end(
        "tapveth_network_carrier_down_changes",
        "Carrier transitions to down.",
        lambda e: e.carrier_down,
    )
    yield per_end(
        "tapveth_network_mtu_bytes",
        "MTU of this end.",
        lambda e: e.mtu,
        gauge=True,
    )

    yield from netem_families(s.ends)


_NS_PER_S = 1e9


def netem_families(ends: list[EndSample]) -> Iterator[Metric]:
    """Impaired directions only: one gauge per numeric setting, in base units (seconds, ratios,
    bytes), so each can be graphed and alerted on; the whole setting line as an info metric's
    label, for what has no number (distribution, loss model, seed)."""
    impaired = [(e.labels, e.netem) for e in ends if e.netem is not None]

    def gauge(name: str, doc: str, value: Any, when: Any = lambda n: True) -> Metric:
        family = GaugeMetricFamily(name, doc, labels=LABELS)
        for labels, n in impaired:
            if when(n):
                family.add_metric(labels, float(value(n)))
        return family

    info = InfoMetricFamily(
        "tapveth_netem",
        "The netem settings of this end's direction, as tapveth qdisc show prints them.",
        labels=LABELS,
    )
    for labels, n in impaired:
        info.add_metric(labels, {"options": describe(n.settings)})
    yield info
    yield gauge(
        "tapveth_netem_backlog_packets",
        "Frames waiting in this direction's impairment queue.",
        lambda n: n.backlog_packets,
    )
    yield gauge(
        "tapveth_netem_backlog_bytes",
        "Bytes waiting in this direction's impairment queue (L2 frames, no virtio header).",
        lambda n: n.backlog_bytes,
    )
    yield gauge(
        "tapveth_netem_limit_packets",
        "Packet limit of the impairment queue (limit N); absent when bounded in bytes.",
        lambda n: n.settings.limit,
        lambda n: n.settings.limit is not None,
    )
    yield gauge(
        "tapveth_netem_limit_bytes",
        "Byte bound of the impairment queue when no packet limit is set.",
        lambda n: n.limit_bytes,
        lambda n: n.settings.limit is None,
    )
    yield gauge(
        "tapveth_netem_delay_seconds",
        "Added delay (netem delay TIME).",
        lambda n: n.settings.latency / _NS_PER_S,
    )
    yield gauge(
        "tapveth_netem_jitter_seconds",
        "Delay jitter (netem delay TIME JITTER).",
        lambda n: n.settings.jitter / _NS_PER_S,
    )
    yield gauge(
        "tapveth_netem_loss_ratio",
        "Random loss probability (netem loss PERCENT / 100); 0 with a Markov loss model.",
        lambda n: n.settings.loss / 100,
    )
    yield gauge(
        "tapveth_netem_duplicate_ratio",
        "Duplication probability (netem duplicate PERCENT / 100).",
        lambda n: n.settings.duplicate / 100,
    )
    yield gauge(
        "tapveth_netem_corrupt_ratio",
        "Corruption probability (netem corrupt PERCENT / 100).",
        lambda n: n.settings.corrupt / 100,
    )
    yield gauge(
        "tapveth_netem_reorder_ratio",
        "Reordering probability (netem reorder PERCENT / 100).",
        lambda n: n.settings.reorder / 100,
    )
    yield gauge(
        "tapveth_netem_rate_bytes_per_second",
        "Rate limit in bytes per second (netem rate); 0 when the rate is not limited.",
        lambda n: n.settings.rate,
    )
