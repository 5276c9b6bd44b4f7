"""Faults. `tapveth link set dev NAME [netns NS] carrier on|off` cuts a pair's carrier and
restores it, as `ip link set … carrier off` does on devices that allow it: both ends show
NO-CARRIER while admin-up, frames either end sends are dropped (reason `carrier`),
carrier_changes moves. `link set dev NAME flap every T for D [count N]` cuts it every T for D.
On a pair stretched over VXLAN (NAME the TAP end, or the tunnel end vxlan:VNI) the cut is the
stretched link's: the TAP end shows NO-CARRIER, frames both ways are dropped (`carrier`), and
with bfd the far tapveth is told (AdminDown) and loses carrier too.

    tapveth fault {add|replace} dev NAME [netns NS] SCHEDULE
    tapveth fault del dev NAME [netns NS]
    tapveth [-j] fault show [dev NAME [netns NS]]

    SCHEDULE := ITEM...
    ITEM     := flap every T for D [count N]    cuts at +T, +2T... each lasting D (D < T);
                                                without count, until the schedule is removed
              | at +T ACTION                    at offset T from when the schedule is set
    ACTION   := cut [[for] D] | restore | [netem] OPTIONS | clear

`netem OPTIONS` (as `tapveth qdisc`; the word netem may be left out) sets the impairments of
the frames NAME sends (vxlan:VNI: the frames the tunnel delivers), up to the next `at`; `clear`
removes them. Example:

    tapveth fault add dev veth1 at +10s netem loss 5% at +30s cut for 2s at +40s clear
"""

from typing import Any

from tapveth.core.faults import FaultError
from tapveth.core.faults import parse as parse_faults
from tapveth.core.linkspec import SpecError, check_end_name, check_netns

USAGE = "tapveth link set dev NAME [netns NS] {carrier on|off | flap every T for D [count N]}"
FAULT_USAGE = "tapveth fault {add|replace|del|show} dev NAME [netns NS] [SCHEDULE]"
FAULT_ACTIONS = {"add": "add", "replace": "replace", "del": "del", "delete": "del"}
FAULT_ACTIONS |= {"show": "show", "list": "show", "ls": "show"}


def request_args(words: list[str]) -> dict[str, Any]:
    """The control request for a `link set` line; SpecError (exit 2) for every mistake.
    A flap line gives a `fault` request (it has 'schedule'), a carrier line a `carrier` one."""
    if not words or words[0] != "set":
        raise SpecError(f"link: only 'set … carrier on|off' or 'set … flap' is available: {USAGE}")
    args: dict[str, Any] = {}
    i = 1
    while i < len(words):
        w = words[i]
        if w == "flap":
            args["schedule"] = _schedule(words[i:])
            args["action"] = "replace"
            break
        if i + 1 >= len(words):
            raise SpecError(f"link set: '{w}' needs a value ({USAGE})")
        value = words[i + 1]
        if w == "dev":
            args["name"] = check_end_name(value)
        elif w == "netns":
            args["netns"] = check_netns(value)
        elif w == "carrier":
            if value not in ("on", "off"):
                raise SpecError(f'link set: carrier "{value}" is neither on nor off')
            args["on"] = value == "on"
        else:
            raise SpecError(f'link set: "{w}" is not understood ({USAGE})')
        i += 2
    if "name" not in args:
        raise SpecError(f"link set: which end? give 'dev NAME' ({USAGE})")
    if "on" not in args and "schedule" not in args:
        raise SpecError(f"link set: give 'carrier on' or 'carrier off' ({USAGE})")
    if "on" in args and "schedule" in args:
        raise SpecError("link set: either carrier or flap, not both")
    return args


def _schedule(words: list[str]) -> list[str]:
    """Check a schedule here, so a mistake is one line and exit 2 before the daemon is asked."""
    try:
        parse_faults(words)
    except FaultError as exc:
        raise SpecError(f"fault: {exc}") from None
    return words


def fault_args(words: list[str]) -> dict[str, Any]:
    """The control request for a `fault` line; SpecError (exit 2) for every mistake."""
    if not words or words[0] not in FAULT_ACTIONS:
        raise SpecError(f"fault: give add, replace, del or show ({FAULT_USAGE})")
    args: dict[str, Any] = {"action": FAULT_ACTIONS[words[0]]}
    i = 1
    while i < len(words) and words[i] in ("dev", "netns"):
        if i + 1 >= len(words):
            raise SpecError(f"fault: '{words[i]}' needs a value ({FAULT_USAGE})")
        if words[i] == "dev":
            args["name"] = check_end_name(words[i + 1])
        else:
            args["netns"] = check_netns(words[i + 1])
        i += 2
    rest = words[i:]
    if args["action"] in ("add", "replace"):
        if "name" not in args:
            raise SpecError(f"fault {words[0]}: which end? give 'dev NAME' ({FAULT_USAGE})")
        args["schedule"] = _schedule(rest)
    elif rest:
        raise SpecError(f'fault {words[0]}: "{rest[0]}" is not understood ({FAULT_USAGE})')
    elif args["action"] == "del" and "name" not in args:
        raise SpecError(f"fault del: which end? give 'dev NAME' ({FAULT_USAGE})")
    return args


def show_text(rows: list[dict[str, Any]]) -> str:
    """`fault show`: one line per end with a schedule."""
    lines = []
    for r in rows:
        ns = f" netns {r['netns']}" if r.get("netns") else ""
        nxt = r.get("next_in")
        when = "done" if nxt is None else f"next in {nxt:.1f}s"
        lines.append(f"dev {r['dev']}{ns} {r['schedule']} (fired {r['fired']}, {when})")
    return "\n".join(lines)
