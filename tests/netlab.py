"""Namespaces, processes and checks for integration tests: everything made here is removed by
Lab.cleanup(), which the fixtures call even when a test fails."""

import hashlib
import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from traffic import pattern

TRAFFIC = str(Path(__file__).with_name("traffic.py"))


def tag() -> str:
    """A short random suffix for names that must not clash with other tests or users."""
    return secrets.token_hex(3)


def sh(*cmd: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def last_json(text: str) -> Any:
    lines = [ln for ln in text.splitlines() if ln.startswith("{") or ln.startswith("[")]
    assert lines, f"no JSON in output: {text!r}"
    return json.loads(lines[-1])


class Netns:
    """A namespace made by a test."""

    def __init__(self, lab: "Lab", name: str) -> None:
        self.lab = lab
        self.name = name

    def run(
        self, *cmd: str, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return sh("ip", "netns", "exec", self.name, *cmd, check=check, timeout=timeout)

    def ip(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return sh("ip", "-n", self.name, *args, check=check)

    def link(self, ifname: str) -> dict[str, Any]:
        out = sh("ip", "-n", self.name, "-j", "-d", "-s", "link", "show", "dev", ifname).stdout
        data: list[dict[str, Any]] = json.loads(out)
        return data[0]

    def has_link(self, ifname: str) -> bool:
        return sh("ip", "-n", self.name, "link", "show", "dev", ifname, check=False).returncode == 0

    def configure(self, ifname: str, cidr: str | None) -> None:
        if cidr:
            self.ip("addr", "add", cidr, "dev", ifname)
        self.ip("link", "set", ifname, "up")

    def ping(
        self, addr: str, count: int = 3, size: int = 56, extra: tuple[str, ...] = ()
    ) -> subprocess.CompletedProcess[str]:
        return self.run(
            "ping",
            "-c",
            str(count),
            "-i",
            "0.05",
            "-W",
            "2",
            "-s",
            str(size),
            *extra,
            addr,
            check=False,
            timeout=30,
        )

    def traffic(self, *args: str, timeout: float = 120) -> Any:
        return last_json(self.run(sys.executable, TRAFFIC, *args, timeout=timeout).stdout)

    def spawn_traffic(self, *args: str) -> subprocess.Popen[str]:
        """Start a traffic endpoint and wait until it says it is ready."""
        proc = self.lab.spawn("ip", "netns", "exec", self.name, sys.executable, TRAFFIC, *args)
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith("{"), f"traffic endpoint did not start: {first!r}"
        return proc

    def link_local(self, ifname: str, timeout: float = 10.0) -> str:
        """The interface's IPv6 link-local address, once duplicate detection has finished."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = json.loads(
                sh("ip", "-n", self.name, "-j", "-6", "addr", "show", "dev", ifname).stdout
            )
            for info in out[0].get("addr_info", []) if out else []:
                if info.get("scope") == "link" and not info.get("tentative"):
                    return str(info["local"])
            time.sleep(0.1)
        raise AssertionError(f"{ifname} in {self.name} got no usable link-local address")


class Lab:
    def __init__(self) -> None:
        self.tag = tag()
        self.namespaces: list[Netns] = []
        self.procs: list[subprocess.Popen[str]] = []
        self.root_links: list[str] = []

    def netns(self, label: str = "") -> Netns:
        name = f"tvt-{self.tag}-{label or len(self.namespaces)}"
        sh("ip", "netns", "add", name)
        ns = Netns(self, name)
        self.namespaces.append(ns)
        return ns

    def name(self, label: str) -> str:
        """An interface name unique to this test (at most 15 bytes)."""
        return f"{label[:8]}{self.tag}"

    def spawn(self, *cmd: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.procs.append(proc)
        return proc

    def cleanup(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
        for link in self.root_links:
            sh("ip", "link", "del", link, check=False)
        for ns in self.namespaces:
            sh("ip", "netns", "del", ns.name, check=False)


def finish(proc: subprocess.Popen[str], timeout: float = 120) -> Any:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"traffic endpoint failed: {err.strip()}"
    return last_json(out)


def is_root_with_tun() -> bool:
    return os.geteuid() == 0 and os.path.exists("/dev/net/tun")


class Stream:
    """A TCP transfer of nbytes from src to dst_ip in dst, started at once; finish() checks that
    every byte arrived intact (SHA-256 on both sides). With rate (bytes/s) it is spread over
    time, so that it spans a reload, a restart or MTU changes."""

    def __init__(
        self,
        src: Netns,
        dst: Netns,
        dst_ip: str,
        nbytes: int,
        port: int = 5301,
        rate: float = 0.0,
        seed: int = 1,
        timeout: float = 60,
    ) -> None:
        self.nbytes, self.seed = nbytes, seed
        self.recv = dst.spawn_traffic(
            "tcp-recv",
            "--host",
            dst_ip,
            "--port",
            str(port),
            "--bytes",
            str(nbytes),
            "--timeout",
            str(timeout),
        )
        args = [
            "tcp-send",
            "--host",
            dst_ip,
            "--port",
            str(port),
            "--bytes",
            str(nbytes),
            "--seed",
            str(seed),
            "--timeout",
            str(timeout),
        ]
        if rate:
            args += ["--rate", str(rate)]
        self.send = src.lab.spawn("ip", "netns", "exec", src.name, sys.executable, TRAFFIC, *args)

    def finish(self, timeout: float = 120) -> None:
        got, sent = finish(self.recv, timeout), finish(self.send, timeout)
        assert got["bytes"] == sent["bytes"] == self.nbytes, (got, sent)
        expected = hashlib.sha256(pattern(self.nbytes, self.seed)).hexdigest()
        assert got["sha256"] == sent["sha256"] == expected
