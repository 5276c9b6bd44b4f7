"""tapveth(8) and the bash completion are generated from the argument parser (doc/generate.py):
the committed files must be what it writes now, and both must work."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "doc"))
generate = pytest.importorskip("generate", reason="doc/generate.py needs the test extra")


def test_committed_man_page_and_completion_are_current() -> None:
    assert generate.MANPAGE.read_text() == generate.manpage(), "run: python doc/generate.py"
    assert generate.COMPLETION.read_text() == generate.completion(), "run: python doc/generate.py"


def test_man_page_covers_commands_and_the_configuration_file() -> None:
    page = generate.MANPAGE.read_text()
    assert page.startswith(".TH TAPVETH") and '"8"' in page.splitlines()[0]
    for word in (
        "tapveth add",
        "\\-\\-check\\-config",
        "CONFIGURATION FILE",
        "create_netns",
        "tapveth\\-netns@",
        "EXIT STATUS",
        "TAPVETH_SOCKET",
        "SEE ALSO",
    ):
        assert word in page, word


@pytest.mark.skipif(shutil.which("man") is None, reason="man is not installed")
def test_man_renders_it_without_warnings() -> None:
    r = subprocess.run(
        ["man", "--warnings", "-l", "-Tutf8", str(generate.MANPAGE)],
        capture_output=True,
        text=True,
        timeout=60,
        env={"MANWIDTH": "100", "PATH": "/usr/bin:/bin"},
    )
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert "tapveth add" in r.stdout


def complete(line: str) -> list[str]:
    """What bash offers for the last word of `line`, with the generated completion."""
    words = line.split(" ")
    script = (
        f"source {generate.COMPLETION}; COMP_WORDS=({' '.join(repr(w) for w in words)}); "
        f"COMP_CWORD={len(words) - 1}; COMP_LINE={line!r}; COMP_POINT={len(line)}; "
        "_shtab_tapveth; printf '%s\\n' \"${COMPREPLY[@]}\""
    )
    r = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return r.stdout.split()


def test_bash_completes_commands_and_options() -> None:
    assert complete("tapveth s") == ["show", "stats"]
    assert "--check-config" in complete("tapveth daemon --")
    assert "--plot" in complete("tapveth bench --")
