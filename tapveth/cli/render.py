"""How `show` and `stats` look to a person (tables like `ip -br link` / `ip -s link`) or a
script (JSON, as with iproute2's -j)."""

import json
from typing import Any


def as_json(data: Any) -> str:
    """As `ip -j`: names written as they are (the caller's stdout keeps bytes that are not
    UTF-8, see core/ifname.py), not as \\u escapes."""
    return json.dumps(data, indent=None, sort_keys=False, ensure_ascii=False)


def show_table(ends: list[dict[str, Any]]) -> str:
    if not ends:
        return "no pairs"
    cols = ("ifname", "peer", "netns", "admin", "carrier", "mtu", "address")
    rows = [[_cell(e, c) for c in cols] for e in ends]
    return _table([c.upper() for c in cols], rows)


def stats_text(ends: list[dict[str, Any]]) -> str:
    if not ends:
        return "no pairs"
    out = []
    for e in ends:
        where = f" netns {e['netns']}" if e["netns"] else ""
        out.append(f"{e['ifname']}@{e['peer']}:{where} carrier_changes {e['carrier_changes']}")
        out.append(
            _table(
                ["", "bytes", "packets", "dropped"],
                [
                    ["RX:", str(e["rx_bytes"]), str(e["rx_packets"]), str(e["rx_dropped"])],
                    ["TX:", str(e["tx_bytes"]), str(e["tx_packets"]), str(e["tx_dropped"])],
                ],
                indent="    ",
            )
        )
        if e["drops"]:
            reasons = ", ".join(f"{k} {v}" for k, v in e["drops"].items())
            out.append(f"    tx drops by reason: {reasons}")
    return "\n".join(out)


def _cell(e: dict[str, Any], col: str) -> str:
    v = e.get(col)
    if col == "carrier":
        return "on" if v else "off"
    if v is None:
        return "-"
    return str(v)


def _table(header: list[str], rows: list[list[str]], indent: str = "") -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        indent + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
        for r in [header, *rows]
    ]
    return "\n".join(lines)
