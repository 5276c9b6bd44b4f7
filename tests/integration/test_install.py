"""Packaging as users and packagers meet it: pipx installs a working `tapveth` with its man page
and completion; the sdist carries what it must; setuptools as install.sh gets it (the newest
that pip fetches for the build) builds both with no warning at all."""

import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
KEEP_OUT = shutil.ignore_patterns(".venv", ".git", "build", "*.egg-info", "*_cache", "__pycache__")


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """A copy of the checkout, as a user's clone would be."""
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=KEEP_OUT)
    return src


def run(*cmd: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> str:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=cwd)
    assert r.returncode == 0, f"{cmd}: {r.stdout} {r.stderr}"
    return r.stdout + r.stderr


@pytest.mark.skipif(shutil.which("pipx") is None, reason="pipx is not installed")
def test_pipx_install(source: Path, tmp_path: Path) -> None:
    home, bindir = tmp_path / "pipx", tmp_path / "bin"
    env = {"PATH": "/usr/bin:/bin", "PIPX_HOME": str(home), "PIPX_BIN_DIR": str(bindir)}
    run("pipx", "install", str(source), env=env)
    tapveth = bindir / "tapveth"
    assert run(str(tapveth), "--version").strip() == "tapveth 0.1.0"
    example = source / "examples" / "tapveth.toml"
    assert "valid, 2 pair(s)" in run(str(tapveth), "daemon", "--check-config", str(example))
    venv = home / "venvs" / "tapveth"
    assert (venv / "share" / "man" / "man8" / "tapveth.8").read_text().startswith(".TH TAPVETH")
    assert (venv / "share" / "bash-completion" / "completions" / "tapveth").exists()
    run("pipx", "uninstall", "tapveth", env=env)
    assert not tapveth.exists()


def test_sdist_and_wheel_build_without_warnings(source: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", str(venv))
    run(str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "setuptools>=77")
    out = tmp_path / "out"
    build = (
        "from setuptools import build_meta as b; import sys; "
        "print(b.build_sdist(sys.argv[1])); print(b.build_wheel(sys.argv[1]))"
    )
    # -W error: a deprecated metadata form (a license table, License classifiers) fails here
    run(str(venv / "bin" / "python"), "-W", "error", "-c", build, str(out), cwd=source)
    with tarfile.open(out / "tapveth-0.1.0.tar.gz") as sdist:
        names = {n.split("/", 1)[1] for n in sdist.getnames() if "/" in n}
        pkg_info = sdist.extractfile("tapveth-0.1.0/PKG-INFO")
        assert pkg_info is not None
        meta = pkg_info.read().decode()
    for path in (
        "LICENSE",
        "install.sh",
        "systemd/tapveth.service",
        "systemd/tapveth@.service",
        "systemd/tapveth-netns@.service",
        "systemd/tapveth.toml",
        "examples/tapveth.toml",
        "examples/two-namespaces.sh",
        "tests/unit/test_cli.py",
        "tests/netlab.py",
        "doc/tapveth.8",
        "setup.py",
        "tapveth/daemon/_native_relay.c",
        "tapveth/daemon/_native_relay.pyi",
    ):
        assert path in names, path
    assert "License-Expression: MIT" in meta and "License-File: LICENSE" in meta
    assert "Classifier: Operating System :: POSIX :: Linux" in meta
    assert "Classifier: License ::" not in meta
    assert "Requires-Dist: scapy" in meta and 'extra == "test"' in meta.split("scapy")[1][:30]
    assert "Author: the tapveth authors" in meta
