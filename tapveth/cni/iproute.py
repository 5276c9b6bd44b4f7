"""iproute2's `ip`, run by the plugin on the host or inside a container's namespace (through
nsenter, which takes the namespace as a path, as CNI gives it).

Why not pyroute2: every CNI command is a new process, and importing
pyroute2 costs ~150 ms of it (measured here), several times what all of an ADD's `ip` calls
take together."""

import json
import subprocess
from typing import Any

TIMEOUT = 30.0


class IpError(Exception):
    """`ip` failed; the message is its own last line of stderr."""


def _argv(args: tuple[str, ...], netns: str | None) -> list[str]:
    argv = ["ip", *args]
    if netns is not None:
        argv = ["nsenter", f"--net={netns}", "--", *argv]
    return argv


def ip(*args: str, netns: str | None = None, stdin: str | None = None) -> str:
    """Run `ip ARGS` (in the namespace at path netns, if given); its stdout."""
    try:
        proc = subprocess.run(
            _argv(args, netns),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
    except FileNotFoundError as exc:
        raise IpError(f"{exc.filename} is not installed (iproute2, util-linux)") from None
    except subprocess.TimeoutExpired:
        raise IpError(f"ip {' '.join(args)} did not finish in {TIMEOUT:.0f} s") from None
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        raise IpError(lines[-1] if lines else f"ip {' '.join(args)} failed")
    return proc.stdout


def batch(commands: list[str], netns: str | None = None) -> None:
    """Several `ip` commands in one run (`ip -batch -`), stopping at the first failure."""
    if commands:
        ip("-batch", "-", netns=netns, stdin="\n".join(commands) + "\n")


def link(name: str, netns: str | None = None) -> dict[str, Any] | None:
    """`ip -d addr show dev NAME` as JSON (link details and addresses); None if it does not
    exist."""
    try:
        out = ip("-j", "-d", "addr", "show", "dev", name, netns=netns)
    except IpError as exc:
        if "does not exist" in str(exc):
            return None
        raise
    data = json.loads(out) if out.strip() else []
    return data[0] if data else None


def kind(info: dict[str, Any]) -> str | None:
    linkinfo = info.get("linkinfo") or {}
    value = linkinfo.get("info_kind")
    return str(value) if value is not None else None


def global_addresses(info: dict[str, Any]) -> list[str]:
    return [
        f"{a['local']}/{a['prefixlen']}"
        for a in info.get("addr_info", [])
        if a.get("scope") == "global"
    ]
