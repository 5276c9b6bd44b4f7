"""The event bus: listeners, JSON descriptions, and a monitor stream that falls behind."""

import asyncio
import json
from typing import Any

from tapveth.daemon.events import STREAM_BACKLOG, Event, EventBus
from tapveth.daemon.pair import End, Pair


class _Fd:
    fd = -1
    closed = False


class _Writer:
    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data

    async def drain(self) -> None:
        await asyncio.sleep(0)


def _pair() -> Pair:
    fd: Any = _Fd()
    return Pair(End(tap=fd, name="veth1"), End(tap=fd, name="veth2"))


def test_listeners_get_events_and_descriptions_name_both_ends() -> None:
    bus = EventBus(lambda end: "ns1" if end.name == "veth1" else None)
    pair = _pair()
    seen: list[Event] = []
    bus.publish("created", pair)  # nobody listens: nothing happens
    bus.listen(seen.append)
    bus.publish("mtu", pair, pair.b, mtu=9000)
    bus.unlisten(seen.append)
    bus.publish("mtu", pair, pair.b, mtu=1500)
    assert [(e.kind, e.end, e.fields) for e in seen] == [("mtu", pair.b, {"mtu": 9000})]
    desc = bus.describe(seen[0])
    assert desc["event"] == "mtu" and desc["mtu"] == 9000
    assert (desc["ifname"], desc["netns"], desc["peer"], desc["peer_netns"]) == (
        "veth2",
        None,
        "veth1",
        "ns1",
    )


def test_a_stream_that_falls_behind_is_told_how_many_it_lost() -> None:
    async def main() -> list[dict[str, Any]]:
        bus = EventBus(lambda end: None)
        pair = _pair()
        stream = bus.stream()
        reader = asyncio.StreamReader()
        writer: Any = _Writer()
        task = asyncio.ensure_future(stream.run(reader, writer))
        await asyncio.sleep(0)  # subscribed
        for i in range(STREAM_BACKLOG + 5):  # more than the backlog before it gets to run
            bus.publish("mtu", pair, pair.a, mtu=1000 + i)
        await asyncio.sleep(0.05)
        bus.publish("carrier", pair, carrier=True)
        await asyncio.sleep(0.05)
        reader.feed_eof()  # the client leaves
        await asyncio.wait_for(task, 5)
        bus.publish("carrier", pair, carrier=False)  # no stream left: nothing to write to
        return [json.loads(ln) for ln in writer.data.splitlines()]

    events = asyncio.run(main())
    mtus = [e["mtu"] for e in events[:STREAM_BACKLOG]]
    assert mtus == list(range(1000, 1000 + STREAM_BACKLOG))  # the oldest are kept
    assert events[STREAM_BACKLOG]["event"] == "lost" and events[STREAM_BACKLOG]["count"] == 5
    assert events[-1]["event"] == "carrier" and events[-1]["carrier"] is True
    assert len(events) == STREAM_BACKLOG + 2


def test_close_ends_streams() -> None:
    async def main() -> bytes:
        bus = EventBus(lambda end: None)
        reader = asyncio.StreamReader()
        writer: Any = _Writer()
        task = asyncio.ensure_future(bus.stream().run(reader, writer))
        await asyncio.sleep(0)
        await asyncio.wait_for(bus.close(), 5)
        assert task.done()
        return bytes(writer.data)

    assert asyncio.run(main()) == b""
