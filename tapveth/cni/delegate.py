"""Calling another CNI plugin (the IPAM plugin) through the spec's exec protocol: found by its
type in CNI_PATH, the same network configuration on stdin, CNI_COMMAND set to the operation,
its result or error JSON read back from stdout."""

import json
import os
import subprocess
from collections.abc import Mapping
from typing import Any

from tapveth.cni.protocol import SUPPORTED_VERSIONS, CniError, Code, version_tuple

TIMEOUT = 60.0


def find_plugin(ptype: str, path: tuple[str, ...]) -> str:
    """The executable named ptype in the first CNI_PATH directory that has one."""
    if "/" in ptype or ptype in ("", ".", ".."):
        raise CniError(Code.INVALID_CONFIG, f"plugin type {ptype!r} is not a plugin name")
    for directory in path:
        candidate = os.path.join(directory, ptype)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise CniError(
        Code.DELEGATE,
        f"no plugin {ptype!r} in CNI_PATH ({':'.join(path) or 'empty'})",
    )


def run(
    ptype: str,
    command: str,
    stdin: bytes,
    environ: Mapping[str, str],
    path: tuple[str, ...],
) -> Any:
    """Run the delegate; if it refuses the configuration's cniVersion (an IPAM plugin of an
    older spec under a 1.1.0 network), run it again with the newest version both support:
    the IPAM result has the same shape from 0.4.0 on."""
    try:
        return _run_once(ptype, command, stdin, environ, path)
    except CniError as exc:
        if exc.code != Code.INCOMPATIBLE_VERSION:
            raise
        older = _common_version(ptype, stdin, environ, path)
        if older is None:
            raise
        data = json.loads(stdin)
        data["cniVersion"] = older
        return _run_once(ptype, command, json.dumps(data).encode(), environ, path)


def _common_version(
    ptype: str, stdin: bytes, environ: Mapping[str, str], path: tuple[str, ...]
) -> str | None:
    """The newest version both this plugin and the delegate support, below the asked one."""
    try:
        asked = version_tuple(json.loads(stdin)["cniVersion"])
        info = _run_once(ptype, "VERSION", stdin, environ, path)
        theirs = set(info["supportedVersions"])
    except (CniError, ValueError, KeyError, TypeError):
        return None
    both = [v for v in SUPPORTED_VERSIONS if v in theirs and version_tuple(v) < asked]
    return both[-1] if both else None


def _run_once(
    ptype: str,
    command: str,
    stdin: bytes,
    environ: Mapping[str, str],
    path: tuple[str, ...],
) -> Any:
    """Run the delegate for one command; its parsed stdout (None when it printed nothing).
    Its failure becomes a CniError carrying the delegate's own code and message."""
    exe = find_plugin(ptype, path)
    env = {**environ, "CNI_COMMAND": command}
    try:
        proc = subprocess.run(
            [exe], input=stdin, capture_output=True, env=env, timeout=TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired:
        raise CniError(
            Code.DELEGATE, f"{ptype} {command} did not finish in {TIMEOUT:.0f} s"
        ) from None
    except OSError as exc:
        raise CniError(Code.DELEGATE, f"cannot run {exe}: {exc.strerror}") from None
    out = proc.stdout.strip()
    parsed: Any = None
    if out:
        try:
            parsed = json.loads(out)
        except ValueError:
            parsed = None
    if proc.returncode != 0:
        if isinstance(parsed, dict) and "code" in parsed:
            msg = str(parsed.get("msg", "")) or "failed"
            details = str(parsed.get("details", ""))
            code = parsed.get("code")
            raise CniError(
                code if isinstance(code, int) else Code.DELEGATE,
                f"{ptype} {command}: {msg}",
                details,
            )
        err = proc.stderr.decode(errors="replace").strip().splitlines()
        raise CniError(
            Code.DELEGATE,
            f"{ptype} {command} failed with status {proc.returncode}"
            + (f": {err[-1]}" if err else ""),
        )
    if out and parsed is None:
        raise CniError(Code.DELEGATE, f"{ptype} {command} printed something that is not JSON")
    return parsed
