"""Writes tapveth(8) and the bash completion from the command's argument parser, so they never
drift from it: argparse-manpage for the page (plus doc/tapveth.8.include for the configuration
file, exit status, files and examples), shtab for the completion. tests/unit/test_docs.py
fails when the committed files differ from what this writes.

    python doc/generate.py        # from the project root, with the test extra installed
"""

import os
from pathlib import Path

import shtab
from argparse_manpage.manpage import Manpage

from tapveth import __version__
from tapveth.cli.main import build_parser

DOC = Path(__file__).resolve().parent
MANPAGE = DOC / "tapveth.8"
COMPLETION = DOC / "completion" / "tapveth"
# The page's date is that of the last change to the command line, not of the build, so a
# rebuild writes the same bytes.
DATE = "2026-12-04"

# Namespaces for -n and `netns`: the names `ip netns` knows.
COMPLETION_PREAMBLE = """
_tapveth_netns() {
  compgen -W "$(ls /run/netns 2>/dev/null)" -- "$1"
}
"""


def manpage() -> str:
    page = Manpage(
        build_parser(),
        _data={
            "project_name": "tapveth",
            "version": __version__,
            "date": DATE,
            "manual_section": 8,
            "manual_title": "System Manager's Manual",
            "description": "the Linux veth pair rebuilt in userspace",
            "include": str(DOC / "tapveth.8.include"),
        },
        format="single-commands-section",
    )
    return str(page)


def completion() -> str:
    text: str = shtab.complete(build_parser(), shell="bash", preamble=COMPLETION_PREAMBLE)
    return text.rstrip("\n") + "\n"


def main() -> None:
    os.makedirs(COMPLETION.parent, exist_ok=True)
    MANPAGE.write_text(manpage())
    COMPLETION.write_text(completion())


if __name__ == "__main__":
    main()
