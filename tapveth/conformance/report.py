"""The results of `tapveth compare` for people and scripts: a terminal table, JSON, and a
shareable Markdown or HTML page. Pure: strings in, strings out."""

import html
import json
import shutil
import textwrap
from dataclasses import dataclass

from tapveth.conformance.registry import Difference, Fact, Observation, Result


@dataclass(frozen=True)
class Header:
    """What the comparison ran on."""

    kernel: str  # kernel release, as uname -r
    tapveth: str  # tapveth's version
    date: str  # ISO 8601, UTC
    reference: str  # the reference backend's label: "kernel veth"
    subject: str  # the compared backend's label: "tapveth"


def fact(value: Fact) -> str:
    """A fact as people read it: lists without quotes, None as "none", booleans as yes/no."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return str(value)


def facts(obs: Observation, keys: list[str] | tuple[str, ...] | None = None) -> list[str]:
    """`key: value` lines for the given facts of obs (all by default)."""
    return [f"{k}: {fact(obs.get(k, '(missing)'))}" for k in (obs if keys is None else keys)]


def _rows_noted(results: list[Result]) -> list[Difference]:
    """The README rows that documented differences cite, numbered in order of appearance."""
    rows: list[Difference] = []
    for r in results:
        rows += [d for d in r.verdict.rows if d not in rows]
    return rows


def _outcome(r: Result, notes: list[Difference]) -> str:
    if r.verdict.outcome != "documented":
        return r.verdict.outcome
    return "documented " + ",".join(f"[{notes.index(d) + 1}]" for d in r.verdict.rows)


def summary(results: list[Result]) -> str:
    counts = {o: sum(r.verdict.outcome == o for r in results) for o in ("agree", "documented")}
    differs = len(results) - counts["agree"] - counts["documented"]
    return (
        f"{len(results)} behaviours: {counts['agree']} agree, "
        f"{counts['documented']} differ as documented, {differs} differ"
    )


def table(results: list[Result], header: Header, width: int = 0) -> str:
    """One row per behaviour: what each backend did, whether they agree. Rows that agree show
    the start of the facts once; rows that differ show only the differing facts, in full."""
    width = width or max(100, shutil.get_terminal_size((120, 24)).columns)
    notes = _rows_noted(results)
    names = [r.behaviour.key for r in results]
    outcomes = [_outcome(r, notes) for r in results]
    w_name = max([len("BEHAVIOUR"), *map(len, names)])
    w_out = max([len("RESULT"), *map(len, outcomes)])
    w_cell = max(20, (width - w_name - w_out - 6) // 2)
    lines = [
        f"compare: {header.reference} (Linux {header.kernel}) and {header.subject} "
        f"{header.tapveth}, {header.date}",
        "",
        f"{'BEHAVIOUR':<{w_name}}  {header.reference.upper():<{w_cell}}  "
        f"{header.subject.upper():<{w_cell}}  RESULT",
    ]
    for r, name, outcome in zip(results, names, outcomes, strict=True):
        if r.verdict.outcome == "agree":
            text = "; ".join(facts(r.kernel))
            left = [textwrap.shorten(text, w_cell, placeholder=" …")]
            right = ["the same"]
        else:
            left = _wrap(facts(r.kernel, r.verdict.facts), w_cell)
            right = _wrap(facts(r.tapveth, r.verdict.facts), w_cell)
        for i in range(max(len(left), len(right))):
            lines.append(
                f"{name if i == 0 else '':<{w_name}}  "
                f"{left[i] if i < len(left) else '':<{w_cell}}  "
                f"{right[i] if i < len(right) else '':<{w_cell}}  "
                f"{outcome if i == 0 else ''}".rstrip()
            )
    lines += ["", summary(results)]
    for i, d in enumerate(notes, 1):
        lines.append(f"[{i}] documented: {d.kernel} -> {d.tapveth}")
    return "\n".join(lines)


def _wrap(lines: list[str], width: int) -> list[str]:
    out: list[str] = []
    for ln in lines:
        out += textwrap.wrap(ln, width, subsequent_indent="  ") or [""]
    return out


def as_dict(results: list[Result], header: Header, status: int) -> dict[str, object]:
    """The JSON document of `compare -j`."""
    return {
        "kernel": header.kernel,
        "tapveth": header.tapveth,
        "date": header.date,
        "reference": header.reference,
        "subject": header.subject,
        "behaviours": [
            {
                "group": r.behaviour.group,
                "name": r.behaviour.name,
                "title": r.behaviour.title,
                "kernel_veth": r.kernel,
                "tapveth": r.tapveth,
                "verdict": r.verdict.outcome,
                "differing": list(r.verdict.facts),
                "documented_by": [
                    {"kernel_veth": d.kernel, "tapveth": d.tapveth} for d in r.verdict.rows
                ],
            }
            for r in results
        ],
        "summary": summary(results),
        "exit_status": status,
    }


def as_json(results: list[Result], header: Header, status: int) -> str:
    return json.dumps(as_dict(results, header, status), indent=2)


def _intro(header: Header) -> str:
    return (
        f"Kernel: Linux {header.kernel}. tapveth: {header.tapveth}. Date: {header.date}. "
        f"Each behaviour ran on a {header.reference} pair and a {header.subject} pair, each "
        "between two network namespaces of its own."
    )


def markdown(results: list[Result], header: Header) -> str:
    """A page to share: every fact of both backends, differing ones in bold."""
    notes = _rows_noted(results)

    def cell(obs: Observation, r: Result) -> str:
        shown = [
            f"**{ln}**" if k in r.verdict.facts else ln
            for k, ln in zip(obs, facts(obs), strict=True)
        ]
        return "<br>".join(s.replace("|", "\\|") for s in shown)

    out = [
        f"# {header.subject} compared with the {header.reference}",
        "",
        _intro(header),
        "",
        summary(results) + ".",
        "",
        f"| behaviour | {header.reference} | {header.subject} | result |",
        "|---|---|---|---|",
    ]
    for r in results:
        name = f"`{r.behaviour.key}`<br>{r.behaviour.title}"
        out.append(
            f"| {name} | {cell(r.kernel, r)} | {cell(r.tapveth, r)} | {_outcome(r, notes)} |"
        )
    if notes:
        out += ["", 'Documented differences (README, "Differences from the kernel veth"):', ""]
        out += [f"{i}. {d.kernel} -> {d.tapveth}" for i, d in enumerate(notes, 1)]
    return "\n".join(out) + "\n"


def html_page(results: list[Result], header: Header) -> str:
    """The same page as markdown(), as a standalone HTML document."""
    notes = _rows_noted(results)
    esc = html.escape

    def cell(obs: Observation, r: Result) -> str:
        return "<br>".join(
            f"<b>{esc(ln)}</b>" if k in r.verdict.facts else esc(ln)
            for k, ln in zip(obs, facts(obs), strict=True)
        )

    title = f"{header.subject} compared with the {header.reference}"
    rows = "\n".join(
        f'<tr class="{r.verdict.outcome}"><td><code>{esc(r.behaviour.key)}</code><br>'
        f"{esc(r.behaviour.title)}</td><td>{cell(r.kernel, r)}</td>"
        f"<td>{cell(r.tapveth, r)}</td><td>{esc(_outcome(r, notes))}</td></tr>"
        for r in results
    )
    noted = "".join(f"<li>{esc(d.kernel)} &rarr; {esc(d.tapveth)}</li>" for d in notes)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; }}
table {{ border-collapse: collapse; }}
td, th {{ border: 1px solid #ccc; padding: 4px 8px; vertical-align: top; font-size: 90%; }}
tr.documented td:last-child {{ background: #fff4d6; }}
tr.differs td:last-child {{ background: #ffd6d6; }}
tr.agree td:last-child {{ background: #dcf5dc; }}
</style></head><body>
<h1>{esc(title)}</h1>
<p>{esc(_intro(header))}</p>
<p>{esc(summary(results))}.</p>
<table><tr><th>behaviour</th><th>{esc(header.reference)}</th><th>{esc(header.subject)}</th>
<th>result</th></tr>
{rows}
</table>
{f"<p>Documented differences (README):</p><ol>{noted}</ol>" if notes else ""}
</body></html>
"""
