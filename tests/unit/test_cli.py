"""The command line without a daemon: help, usage errors, the missing-daemon message, and
iproute2's habits (abbreviations, `help` after a command, -j/-p/-n anywhere)."""

import importlib.util
import json
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from tapveth import control
from tapveth.cli import journal, render
from tapveth.cli import main as cli
from tapveth.cli.main import build_parser, expand_command, main, prepare


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TAPVETH_SOCKET": os.path.join(tempfile.gettempdir(), "tv-none.sock")}
    return subprocess.run(
        [sys.executable, "-m", "tapveth", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )


def test_help_explains_the_commands() -> None:
    r = run("--help")
    assert r.returncode == 0
    for word in ("daemon", "add NAME", "peer [name] PEER", "del NAME", "show", "stats", "demo"):
        assert word in r.stdout


@pytest.mark.parametrize("cmd", [["show"], ["stats"], ["del", "x"], ["add", "a", "peer", "b"]])
def test_without_daemon_one_line_and_nonzero(cmd: list[str]) -> None:
    r = run(*cmd)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "no tapveth daemon is listening" in lines[0]
    assert "tapveth daemon" in lines[0]


@pytest.mark.parametrize(
    ("cmd", "msg"),
    [
        (["add", "a"], "missing 'peer name PEER'"),
        (["add", "a", "mtu", "x", "peer", "b"], "is not a number"),
        (["del"], "which pair?"),
        (["frobnicate"], "invalid choice"),
        (["d"], "'d' is ambiguous: daemon, del, demo"),
        (["s"], "'s' is ambiguous: show, stats"),
        (["add", "a", "txqueuelen", "x", "peer", "b"], "is not a number"),
        (["-j", "demo"], "-j: the demo prints for people"),
        (["bench", "-j"], "-j: bench writes its figures with --json FILE"),
        (["show", "a", "b"], "unknown word"),
    ],
)
def test_usage_errors_exit_2_with_one_line(cmd: list[str], msg: str) -> None:
    r = run(*cmd)
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1 and msg in r.stderr


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "usage: tapveth" in capsys.readouterr().out


def test_abbreviations_expand_when_unambiguous() -> None:
    commands = cli._commands(build_parser())
    assert expand_command("a", commands) == "add"
    assert expand_command("sh", commands) == "show"
    assert expand_command("st", commands) == "stats"
    assert expand_command("dae", commands) == "daemon"
    assert expand_command("del", commands) == "del"
    assert expand_command("dele", commands) == "delete"  # an alias, one command
    assert expand_command("h", commands) == "help"
    assert expand_command("zzz", commands) == "zzz"  # argparse then says it is no command


@pytest.mark.parametrize(
    ("argv", "want_argv", "want_json", "want_pretty"),
    [
        (["sh"], ["show"], False, False),
        (["-j", "-p", "sh"], ["-j", "-p", "show"], False, False),
        (["show", "-j", "-p"], ["show"], True, True),
        (["a", "v1", "peer", "v2", "-j"], ["add", "v1", "peer", "v2"], True, False),
        (["--socket", "/x", "-n", "ns1", "st"], ["--socket", "/x", "-n", "ns1", "stats"], 0, 0),
        (["bench", "--json", "f.json"], ["bench", "--json", "f.json"], False, False),
    ],
)
def test_prepare_expands_and_collects_output_flags(
    argv: list[str], want_argv: list[str], want_json: bool, want_pretty: bool
) -> None:
    p = prepare(argv, build_parser())
    assert (p.argv, p.json, p.pretty) == (want_argv, want_json, want_pretty)


@pytest.mark.parametrize(
    ("argv", "usage"),
    [
        (["add", "help"], "usage: tapveth add [dev] NAME"),
        (["a", "veth1", "help"], "usage: tapveth add [dev] NAME"),
        (["del", "help"], "usage: tapveth del [dev] NAME"),
        (["sh", "help"], "usage: tapveth show"),
        (["stats", "help"], "usage: tapveth stats"),
        (["daemon", "help"], "--check-config FILE"),
        (["reload", "help"], "usage: tapveth reload"),
        (["help", "bench"], "usage: tapveth bench"),
        (["help"], "usage: tapveth"),
    ],
)
def test_help_after_any_command(
    argv: list[str], usage: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 0
    assert usage in capsys.readouterr().out


class FakeDaemon:
    """Stands in for control.request: records requests, answers from a table."""

    def __init__(self, answers: dict[str, Any]) -> None:
        self.answers = answers
        self.requests: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, path: str, op: str, args: Any = None, timeout: float = 60) -> Any:
        self.requests.append((op, args or {}))
        return self.answers[op]


ENDS = [
    {
        "ifname": "veth1",
        "peer": "veth2",
        "netns": "ns1",
        "admin": "UP",
        "carrier": True,
        "mtu": 1500,
        "address": "02:00:00:00:00:01",
    },
    {
        "ifname": "veth2",
        "peer": "veth1",
        "netns": None,
        "admin": "UP",
        "carrier": True,
        "mtu": 1500,
        "address": "02:00:00:00:00:02",
    },
]


def test_show_netns_filters_and_json_pretty(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = FakeDaemon({"show": ENDS})
    monkeypatch.setattr(control, "request", fake)
    assert main(["-j", "sh", "netns", "ns1"]) == 0
    assert [e["ifname"] for e in json.loads(capsys.readouterr().out)] == ["veth1"]
    assert main(["-n", "ns1", "show", "-j", "-p"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("[\n    {") and json.loads(text)[0]["ifname"] == "veth1"
    assert main(["show", "veth1"]) == 0  # a name: both ends of its pair
    assert "veth2" in capsys.readouterr().out
    assert fake.requests == [("show", {"netns": "ns1"})] * 2 + [("show", {"name": "veth1"})]


def test_add_sends_the_whole_spec_and_n_is_the_default_netns(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = FakeDaemon({"add": ENDS})
    monkeypatch.setattr(control, "request", fake)
    assert main(["-n", "ns9", "a", "dev", "x1", "up", "txqueuelen", "10", "peer", "x2", "-j"]) == 0
    assert json.loads(capsys.readouterr().out) == ENDS
    spec = fake.requests[0][1]["spec"]
    assert spec["end"] == {
        "name": "x1",
        "netns": "ns9",
        "mtu": None,
        "address": None,
        "txqueuelen": 10,
        "up": True,
    }
    assert spec["peer"]["netns"] == "ns9" and spec["peer"]["up"] is False


def test_del_and_reload_answer_in_json(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = FakeDaemon({"del": {"deleted": ["a", "b"]}, "reload": "1 added"})
    monkeypatch.setattr(control, "request", fake)
    assert main(["del", "a"]) == 0 and capsys.readouterr().out == ""
    assert main(["-j", "del", "dev", "a"]) == 0
    assert json.loads(capsys.readouterr().out) == {"deleted": ["a", "b"]}
    assert main(["-n", "ns1", "delete", "a"]) == 0
    assert fake.requests[-1] == ("del", {"name": "a", "netns": "ns1"})
    assert main(["rel", "-j"]) == 0
    assert json.loads(capsys.readouterr().out) == {"changes": "1 added"}


def test_stats_reads_like_ip_s_link() -> None:
    text = render.stats_text(
        [
            {
                "ifname": "veth1",
                "peer": "veth2",
                "netns": "ns1",
                "rx_bytes": 123456,
                "rx_packets": 12,
                "rx_dropped": 0,
                "tx_bytes": 98,
                "tx_packets": 1,
                "tx_dropped": 3,
                "drops": {"mtu": 3},
                "carrier_changes": 2,
                "carrier_up_count": 1,
                "carrier_down_count": 1,
            }
        ]
    )
    assert text.splitlines() == [
        "veth1@veth2: netns ns1",
        "    RX:  bytes packets dropped",
        "        123456      12       0",
        "    TX:  bytes packets dropped",
        "            98       1       3",
        "    carrier_changes 2 (up 1, down 1)",
        "    tx dropped by reason: mtu 3",
    ]


def test_check_config(tmp_path: Path) -> None:
    good = Path(__file__).resolve().parents[2] / "examples" / "tapveth.toml"
    r = run("daemon", "--check-config", str(good))
    assert r.returncode == 0 and "valid, 2 pair(s)" in r.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text('[[pair]]\n[pair.end]\nname = "a"\nmtu = 67\n[pair.peer]\nname = "b"\n')
    r = run("daemon", "--check-config", str(bad))
    assert r.returncode == 2
    assert (
        r.stderr.strip() == f"tapveth: {bad}:4: pair[0].end.mtu: MTU 67 is out of range "
        "(68..65521 on a TAP device)"
    )


def test_bench_plot_without_matplotlib_fails_before_measuring(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "matplotlib" else real(n, *a)
    )
    import tapveth.bench.sidebyside as sidebyside

    monkeypatch.setattr(sidebyside, "run_bench", lambda *a: pytest.fail("bench ran"))
    assert main(["bench", "--quick", "--plot", str(tmp_path / "p.png")]) == 2
    assert "--plot needs matplotlib" in capsys.readouterr().err


def test_journal_priorities_follow_levels(tmp_path: Path) -> None:
    assert [journal.priority(lvl) for lvl in (50, 40, 30, 20, 10, 25)] == [2, 3, 4, 6, 7, 6]
    rec = logging.LogRecord("tapveth", logging.ERROR, "", 0, "bad\nsecond", None, None)
    assert journal.JournalFormatter("%(message)s").format(rec) == "<3>bad\n<3>second"
    f = tmp_path / "stream"
    with open(f, "w") as out:
        st = os.fstat(out.fileno())
        here = {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        assert journal.stderr_is_journal(here, out.fileno())
        assert not journal.stderr_is_journal({"JOURNAL_STREAM": "1:2"}, out.fileno())
        assert not journal.stderr_is_journal({}, out.fileno())


def test_daemon_log_lines_carry_level_names_on_a_terminal() -> None:
    """Outside the journal: time, level name, message."""
    code = (
        "import logging; from tapveth.cli import journal; journal.setup('info');"
        "logging.getLogger('tapveth').warning('careful')"
    )
    env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert r.stderr.rstrip().endswith(" WARNING careful")
