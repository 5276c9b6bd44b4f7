"""The command line without a daemon: help, usage errors, and the missing-daemon message."""

import os
import subprocess
import sys
import tempfile

import pytest

from tapveth.cli.main import main


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


@pytest.mark.parametrize(
    ("cmd", "message"),
    [
        (["capture"], "which pair? give an end's name"),
        (["capture", "veth1", "-c", "-1"], "-c takes a number of frames"),
        (["capture", "veth1", "-s", "300000"], "-s takes a snapshot length"),
        (["capture", "veth1", "-B", "0"], "-B takes a buffer size"),
        (["capture", "veth1", "-B", "x"], "invalid int value"),
        (["daemon", "--metrics", "localhost:9477"], "--metrics: 'localhost:9477'"),
        (["capture", "veth1"], "no tapveth daemon is listening"),
        (["monitor"], "no tapveth daemon is listening"),
    ],
)
def test_observe_commands_usage_errors(cmd: list[str], message: str) -> None:
    r = run(*cmd)
    assert r.returncode == 2, r
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], r.stderr


def test_help_of_capture_and_monitor() -> None:
    r = run("--help")
    assert "capture NAME" in r.stdout and "monitor [-j]" in r.stdout
    r = run("capture", "--help")
    assert r.returncode == 0 and "--drops" in r.stdout and "outbound" in r.stdout
