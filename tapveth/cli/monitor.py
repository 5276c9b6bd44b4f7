"""`tapveth monitor` on the client side: the daemon's events, one line or one JSON object each,
until Ctrl-C (as `ip monitor`)."""

import json
import signal
import sys
import time
from typing import Any

from tapveth.control import StreamClient


def run_monitor(path: str, as_json: bool, timestamps: bool) -> int:
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    client = StreamClient(path, "monitor", {})
    print("tapveth: monitoring pair events (Ctrl-C to stop)", file=sys.stderr, flush=True)
    buf = b""
    try:
        while True:
            data = client.read()
            if not data:
                print("tapveth: the daemon closed the stream", file=sys.stderr)
                return 1
            buf += data
            *lines, buf = buf.split(b"\n")
            for line in lines:
                ev = json.loads(line)
                print(json.dumps(ev) if as_json else event_line(ev, timestamps), flush=True)
    except (BrokenPipeError, KeyboardInterrupt):
        return 0
    finally:
        client.close()


def event_line(ev: dict[str, Any], timestamps: bool = False) -> str:
    """An event as one line, ip-monitor-like: `carrier up veth1 peer veth2`."""

    def at(name: str, ns: str | None) -> str:
        return f"{name} netns {ns}" if ns else name

    kind = ev.get("event", "?")
    end = at(ev.get("ifname", "?"), ev.get("netns"))
    peer = at(ev.get("peer", "?"), ev.get("peer_netns"))
    if kind == "created":
        text = f"created {end} peer {peer}" + (" (re-attached)" if ev.get("reattached") else "")
    elif kind == "deleted":
        text = f"deleted {end} peer {peer}: {ev.get('why', '')}"
    elif kind == "moved":
        text = f"moved {ev.get('ifname')} to " + (
            f"netns {ev['netns']}" if ev.get("netns") else "the daemon's namespace"
        )
    elif kind == "renamed":
        text = f"renamed {ev.get('old')} to {ev.get('new')}"
    elif kind == "carrier":
        text = f"carrier {'up' if ev.get('carrier') else 'down'} {end} peer {peer}"
    elif kind == "mtu":
        text = f"mtu {ev.get('mtu')} {end}"
    elif kind == "fault":
        what = ev.get("detail") or ev.get("fault")
        text = f"fault {what} {end} ({ev.get('step')})" if ev.get("step") else f"fault {what} {end}"
    elif kind == "qdisc":
        netem = ev.get("netem")
        text = f"qdisc {ev.get('action')} {end}" + (f" netem {netem}" if netem else "")
    elif kind == "lost":
        text = f"lost {ev.get('count')} events: the monitor fell behind"
    else:
        skip = {"time", "event", "ifname", "netns", "peer", "peer_netns"}
        extra = " ".join(f"{k} {v}" for k, v in ev.items() if k not in skip)
        text = f"{kind} {end} peer {peer}" + (f" {extra}" if extra else "")
    if timestamps:
        t = ev.get("time", 0.0)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t)) + f".{int(t % 1 * 1e6):06d}"
        return f"[{stamp}] {text}"
    return text
