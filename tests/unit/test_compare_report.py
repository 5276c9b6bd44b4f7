"""The pure parts of `tapveth compare`: verdicts, the registry's consistency with README, the
renderers, and the mistakes a user can make on its command line."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tapveth.conformance import report
from tapveth.conformance.behaviours import BEHAVIOURS, GROUPS
from tapveth.conformance.registry import (
    DIFFERENCES,
    ENOBUFS,
    MAX_MTU,
    Behaviour,
    Documented,
    Observation,
    Result,
    exit_status,
    verdict,
)

README = Path(__file__).parents[2] / "README.md"


def _never(*_: object) -> Observation:
    raise AssertionError("not run in unit tests")


B = Behaviour(
    "frames",
    "example",
    "an example",
    _never,
    {"send()": ["ok", "ENOBUFS"], "received": [0], "max_mtu": 65535},
    (
        Documented(ENOBUFS, {"send()": ["ok", "ok"]}),
        Documented(MAX_MTU, {"max_mtu": 65521}),
    ),
)
KERNEL: Observation = {"send()": ["ok", "ENOBUFS"], "received": [0], "max_mtu": 65535}


def test_same_facts_agree() -> None:
    assert verdict(B, KERNEL, dict(KERNEL)).outcome == "agree"


def test_documented_difference_with_the_documented_value() -> None:
    v = verdict(B, KERNEL, {**KERNEL, "send()": ["ok", "ok"], "max_mtu": 65521})
    assert v.outcome == "documented"
    assert v.facts == ("send()", "max_mtu")
    assert v.rows == (ENOBUFS, MAX_MTU)


@pytest.mark.parametrize(
    "tapveth",
    [
        {**KERNEL, "received": []},  # a fact no row documents
        {**KERNEL, "send()": ["EIO", "EIO"]},  # a documented fact, but not the documented value
        {"send()": ["ok", "ok"], "received": [0]},  # a fact missing
        {**KERNEL, "extra": 1},  # a fact only tapveth has
        {"error": "LabError: timed out"},
    ],
)
def test_anything_else_differs(tapveth: Observation) -> None:
    assert verdict(B, KERNEL, tapveth).outcome == "differs"


def test_exit_status() -> None:
    agree = Result(B, KERNEL, KERNEL, verdict(B, KERNEL, KERNEL))
    documented_obs = {**KERNEL, "max_mtu": 65521}
    documented = Result(B, KERNEL, documented_obs, verdict(B, KERNEL, documented_obs))
    differs = Result(B, KERNEL, {}, verdict(B, KERNEL, {}))
    assert exit_status([agree, documented]) == 0
    assert exit_status([agree, documented, differs]) == 1


def test_registry_is_consistent() -> None:
    keys = [b.key for b in BEHAVIOURS]
    assert len(keys) == len(set(keys)) == 24
    assert set(GROUPS) == {b.group for b in BEHAVIOURS}
    for b in BEHAVIOURS:
        for d in b.documented:
            assert d.row in DIFFERENCES
            # a documented fact is one the behaviour observes, with a value other than veth's
            for k, v in d.tapveth.items():
                assert k in b.expected and b.expected[k] != v, (b.key, k)
        assert verdict(b, b.expected, b.expected_for("tapveth")).outcome == (
            "documented" if b.documented else "agree"
        )


def test_documented_rows_are_readmes() -> None:
    """Each difference the registry cites is a row of README's table, word for word."""
    rows = [ln for ln in README.read_text().splitlines() if ln.startswith("| ")]
    for d in DIFFERENCES:
        assert any(ln.startswith(f"| {d.kernel} | {d.tapveth} |") for ln in rows), d


HEADER = report.Header("6.18.0", "0.1.0", "2026-12-04 12:00 UTC", "kernel veth", "tapveth")


def _results() -> list[Result]:
    tap = {**KERNEL, "send()": ["ok", "ok"]}
    broken = {**KERNEL, "received": []}
    return [
        Result(B, KERNEL, KERNEL, verdict(B, KERNEL, KERNEL)),
        Result(B, KERNEL, tap, verdict(B, KERNEL, tap)),
        Result(B, KERNEL, broken, verdict(B, KERNEL, broken)),
    ]


def test_table_one_row_per_behaviour_with_verdicts() -> None:
    text = report.table(_results(), HEADER, width=120)
    rows = [ln for ln in text.splitlines() if ln.startswith("frames/example")]
    assert len(rows) == 3
    assert rows[0].endswith("agree") and "the same" in rows[0]
    assert rows[1].endswith("documented [1]")
    assert "send(): [ok, ENOBUFS]" in rows[1] and "send(): [ok, ok]" in rows[1]
    assert rows[2].endswith("differs") and "received: []" in rows[2]
    assert "3 behaviours: 1 agree, 1 differ as documented, 1 differ" in text
    assert f"[1] documented: {ENOBUFS.kernel} -> {ENOBUFS.tapveth}" in text
    assert "Linux 6.18.0" in text and "tapveth 0.1.0" in text


def test_json_has_every_fact_and_verdict() -> None:
    data = json.loads(report.as_json(_results(), HEADER, 1))
    assert data["kernel"] == "6.18.0" and data["exit_status"] == 1
    assert [b["verdict"] for b in data["behaviours"]] == ["agree", "documented", "differs"]
    assert data["behaviours"][1]["tapveth"]["send()"] == ["ok", "ok"]
    assert data["behaviours"][1]["documented_by"] == [
        {"kernel_veth": ENOBUFS.kernel, "tapveth": ENOBUFS.tapveth}
    ]
    assert data["behaviours"][2]["differing"] == ["received"]


def test_pages_name_versions_and_show_every_fact() -> None:
    md = report.markdown(_results(), HEADER)
    assert "Linux 6.18.0" in md and "0.1.0" in md and "2026-12-04" in md
    assert md.count("\n| `frames/example`") == 3
    assert "**received: []**" in md and "max_mtu: 65535" in md
    page = report.html_page(_results(), HEADER)
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert page.count('<tr class="') == 3 and "<b>received: []</b>" in page
    assert "&rarr;" in page and "ENOBUFS" in page


def _compare(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tapveth", "compare", *args],
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--only", "nosuch"], "unknown behaviour group 'nosuch'"),
        (["--report", "out.txt"], "must end in .md or .html"),
        (["--report", "/nonexistent-dir/x.md"], "no directory /nonexistent-dir"),
        (["--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_user_errors_one_line_exit_2(args: list[str], message: str) -> None:
    r = _compare(*args)
    assert r.returncode == 2
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], r.stderr


def test_help_names_the_options() -> None:
    r = _compare("--help")
    assert r.returncode == 0
    for word in ("--only", "--report", "-j"):
        assert word in r.stdout
    top = subprocess.run(
        [sys.executable, "-m", "tapveth", "--help"], capture_output=True, text=True, timeout=30
    )
    assert "compare [--only GROUP] [-j] [--report FILE.md|FILE.html]" in top.stdout
