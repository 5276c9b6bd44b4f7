"""`tapveth link set dev NAME [netns NS] carrier on|off`: cut a pair's carrier and restore it,
as `ip link set … carrier off` does on devices that allow it. Both ends show NO-CARRIER while
admin-up, frames either end sends are dropped (reason `carrier`), carrier_changes moves."""

from typing import Any

from tapveth.core.linkspec import SpecError, check_name, check_netns

USAGE = "tapveth link set dev NAME [netns NS] carrier on|off"


def request_args(words: list[str]) -> dict[str, Any]:
    """The control request for a `link set` line; SpecError (exit 2) for every mistake."""
    if not words or words[0] != "set":
        raise SpecError(f"link: only 'set … carrier on|off' is available: {USAGE}")
    args: dict[str, Any] = {}
    i = 1
    while i < len(words):
        w = words[i]
        if i + 1 >= len(words):
            raise SpecError(f"link set: '{w}' needs a value ({USAGE})")
        value = words[i + 1]
        if w == "dev":
            args["name"] = check_name(value)
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
    if "on" not in args:
        raise SpecError(f"link set: give 'carrier on' or 'carrier off' ({USAGE})")
    return args
