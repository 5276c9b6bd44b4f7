"""`tapveth qdisc …`: tc's qdisc grammar for the netem impairments of an end (a `tc qdisc` line
works once `tc` becomes `tapveth`), and how `qdisc show` prints, as `tc [-s] qdisc show`.

    tapveth qdisc {add|change|replace} dev NAME [netns NS] root [handle H:] netem OPTIONS
    tapveth qdisc del dev NAME [netns NS] root
    tapveth [-s] [-j] qdisc show [dev NAME [netns NS]]

The qdisc acts on the frames NAME sends to its peer. On a pair stretched over VXLAN the
tunnel end is named vxlan:VNI, as `tapveth show` lists it: `dev veth1` impairs what veth1
sends into the tunnel, `dev vxlan:42` what the tunnel delivers to veth1 (netns NS, if given,
is the underlay namespace). OPTIONS, as tc-netem(8):

    limit PACKETS
    delay TIME [JITTER [CORRELATION]]  distribution uniform|normal|pareto|paretonormal
    loss [random] PERCENT [CORRELATION]
    loss state P13 [P31 [P32 [P23 [P14]]]]     loss gemodel P [R [1-H [1-K]]]     ecn
    corrupt PERCENT [CORRELATION]      duplicate PERCENT [CORRELATION]
    reorder PERCENT [CORRELATION] [gap DISTANCE]
    rate RATE [PACKETOVERHEAD [CELLSIZE [CELLOVERHEAD]]]
    slot MIN [MAX] [packets N] [bytes N]   slot distribution DIST DELAY JITTER [...]
    seed N

Times: 40ms, 500us, 1.5s (bare: us). Rates: 50mbit, 1gbit, 10kbps (bare: bit/s).
Probabilities: 1% or 1. Jitter keeps frames in order unless reorder is given (README).
"""

from typing import Any

from tapveth.core.linkspec import SpecError, check_end_name, check_netns
from tapveth.core.netem import NetemError, format_size, parse

ACTIONS = {
    "add": "add",
    "change": "change",
    "replace": "replace",
    "del": "del",
    "delete": "del",
    "show": "show",
    "list": "show",
    "ls": "show",
}

USAGE = "tapveth qdisc {add|change|replace|del|show} dev NAME [netns NS] root [netem OPTIONS]"


def request_args(words: list[str]) -> dict[str, Any]:
    """The control request for a `qdisc` line; SpecError (exit 2) for every mistake."""
    if not words:
        raise SpecError(f"qdisc needs an action: {USAGE}")
    action = ACTIONS.get(words[0])
    if action is None:
        raise SpecError(f'qdisc: "{words[0]}" is not add, change, replace, del or show')
    args: dict[str, Any] = {"action": action}
    i = 1
    root = False
    while i < len(words):
        w = words[i]
        if w in ("dev", "netns", "handle") and i + 1 >= len(words):
            raise SpecError(f"qdisc: '{w}' needs a value")
        if w == "dev":
            args["name"] = check_end_name(words[i + 1])
            i += 2
        elif w == "netns":
            args["netns"] = check_netns(words[i + 1])
            i += 2
        elif w == "handle":
            i += 2  # accepted for tc's sake; an end has one qdisc, shown as 8001:
        elif w == "root":
            root = True
            i += 1
        elif w == "parent":
            raise SpecError("qdisc: only 'root' is supported (an end has a single qdisc)")
        elif w == "netem" and action in ("add", "change", "replace"):
            try:
                args["netem"] = parse(words[i + 1 :]).to_dict()
            except NetemError as exc:
                raise SpecError(str(exc)) from None
            break
        elif w == "netem" and action == "del":
            break  # tc accepts the kind after del; nothing to read in it
        elif action == "show":
            raise SpecError(f'qdisc show: "{w}" is not understood (show [dev NAME])')
        else:
            raise SpecError(f'qdisc {action}: "{w}" is not understood (only netem: {USAGE})')
    if action == "show":
        return args
    if "name" not in args:
        raise SpecError(f"qdisc {action}: which end? give 'dev NAME'")
    if not root:
        raise SpecError(f"qdisc {action}: give 'root' (an end has a single qdisc)")
    if action != "del" and "netem" not in args:
        raise SpecError(f"qdisc {action}: give 'netem OPTIONS' (the only qdisc available)")
    return args


def show_text(qdiscs: list[dict[str, Any]], with_stats: bool) -> str:
    """As `tc [-s] qdisc show`: one line per end, and with -s the counters below it."""
    out = []
    for q in qdiscs:
        where = f" netns {q['netns']}" if q.get("netns") else ""
        if q["kind"] != "netem":
            out.append(f"qdisc noqueue 0: dev {q['dev']}{where} root refcnt 2")
            continue
        limit = q["limit"]
        options = q["options"]
        limit_text = f"limit {limit}" if isinstance(limit, int) else f"limit {limit} (bytes)"
        if options.startswith("limit "):
            limit_text = ""
        line = f"qdisc netem {q['handle']} dev {q['dev']}{where} root refcnt 2 "
        out.append((line + " ".join(x for x in (limit_text, options) if x)).rstrip())
        if with_stats:
            s = q["stats"]
            out.append(
                f" Sent {s['sent_bytes']} bytes {s['sent_packets']} pkt (dropped {s['dropped']}, "
                f"overlimits {s['overlimits']} requeues {s['requeues']})"
            )
            out.append(
                f" backlog {format_size(s['backlog_bytes'])} {s['backlog_packets']}p "
                f"requeues {s['requeues']}"
            )
            drops = ", ".join(f"{k} {v}" for k, v in s["drops"].items())
            extra = (
                f" duplicated {s['duplicated']} corrupted {s['corrupted']} "
                f"ecn_marked {s['ecn_marked']}"
            )
            out.append(extra + (f" drops: {drops}" if drops else ""))
    return "\n".join(out) if out else "no pairs"
