"""How `show` and `stats` look to a person (tables like `ip -br link` / `ip -s link`) or a
script (JSON, as with iproute2's -j, indented with -p)."""

import json
from typing import Any


def as_json(data: Any, pretty: bool = False) -> str:
    """As `ip -j` (indented with -p): names written as they are (the caller's stdout keeps
    bytes that are not UTF-8, see core/ifname.py), not as \\u escapes."""
    return json.dumps(data, indent=4 if pretty else None, sort_keys=False, ensure_ascii=False)


def show_table(ends: list[dict[str, Any]]) -> str:
    if not ends:
        return "no pairs"
    cols = ("ifname", "peer", "netns", "admin", "carrier", "mtu", "address")
    rows = [[_cell(e, c) for c in cols] for e in ends]
    for e, row in zip(ends, rows, strict=True):
        if e.get("orphaned"):  # a persistent pair nobody relays: `tapveth del` removes it
            row[cols.index("carrier")] = "orphaned"
    return _table([c.upper() for c in cols], rows)


def stats_text(ends: list[dict[str, Any]]) -> str:
    """As `ip -s link`: a line naming the end, then RX and TX blocks with right-aligned
    numbers under their headers; then what ip cannot show, the carrier and the drop reasons."""
    if not ends:
        return "no pairs"
    out = []
    for e in ends:
        where = f" netns {e['netns']}" if e["netns"] else ""
        out.append(f"{e['ifname']}@{e['peer']}:{where}")
        out += _counter_blocks(e)
        out.append(
            f"    carrier_changes {e['carrier_changes']} "
            f"(up {e['carrier_up_count']}, down {e['carrier_down_count']})"
        )
        if e["drops"]:
            reasons = " ".join(f"{k} {v}" for k, v in e["drops"].items())
            out.append(f"    tx dropped by reason: {reasons}")
    return "\n".join(out)


def _counter_blocks(e: dict[str, Any]) -> list[str]:
    """`    RX:  bytes packets dropped` over the values, then TX; each column right-aligned and
    as wide in both blocks, as ip -s link prints them."""
    names = ("bytes", "packets", "dropped")
    rows = {side: [str(e[f"{side}_{n}"]) for n in names] for side in ("rx", "tx")}
    widths = [max(len(n), *(len(r[i]) for r in rows.values())) for i, n in enumerate(names)]
    head = " ".join(n.rjust(w) for n, w in zip(names, widths, strict=True))
    lines = []
    for side, values in rows.items():
        lines.append(f"    {side.upper()}: {head}")
        lines.append("        " + " ".join(v.rjust(w) for v, w in zip(values, widths, strict=True)))
    return lines


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
