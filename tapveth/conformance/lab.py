"""Namespaces and processes for running behaviours against real devices: everything a Lab makes
(namespaces, links in the root namespace, processes) is removed by Lab.cleanup(), which callers
run in a `finally`, so nothing is left behind even when a step fails or on Ctrl-C."""

import hashlib
import json
import secrets
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from tapveth.conformance.endpoints import pattern

# The traffic endpoints, run inside a namespace by the same Python as this process.
ENDPOINTS = (sys.executable, "-m", "tapveth.conformance.endpoints")


class LabError(RuntimeError):
    """A command or traffic endpoint of the lab failed."""


def tag() -> str:
    """A short random suffix for names that must not clash with other labs or users."""
    return secrets.token_hex(3)


def sh(*cmd: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run a command; with check, a non-zero status raises LabError with its stderr."""
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise LabError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def last_json(text: str) -> Any:
    """The last JSON line a traffic endpoint printed."""
    lines = [ln for ln in text.splitlines() if ln.startswith("{") or ln.startswith("[")]
    if not lines:
        raise LabError(f"no JSON in output: {text!r}")
    return json.loads(lines[-1])


def wait_until(check: Callable[[], Any], timeout: float = 3.0) -> bool:
    """Poll until check() is truthy; False if it never was within timeout. The kernel can lag
    up to ~1 s with a carrier-off event, hence the default."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def wait_for(what: str, check: Callable[[], Any], timeout: float = 3.0) -> None:
    """As wait_until, but a timeout is an error naming what was awaited."""
    if not wait_until(check, timeout):
        raise LabError(f"timed out waiting for {what}")


class Netns:
    """A namespace made by a Lab."""

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
        """`ip -j -d -s link show` of one interface."""
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
        self,
        addr: str,
        count: int = 3,
        size: int = 56,
        extra: tuple[str, ...] = (),
        deadline: int | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """ping -c count; with a deadline (s), until count replies or the deadline. Without
        one, ping waits two round trips after its last request, so a reply slowed by a
        loaded machine counts as lost: give one wherever every reply is expected."""
        wait = ("-w", str(deadline)) if deadline is not None else ()
        return self.run(
            "ping",
            "-c",
            str(count),
            "-i",
            "0.05",
            "-W",
            "2",
            *wait,
            "-s",
            str(size),
            *extra,
            addr,
            check=False,
            timeout=30 + (deadline or 0),
        )

    def traffic(self, *args: str, timeout: float = 120) -> Any:
        """Run a traffic endpoint to its end; its JSON result."""
        return last_json(self.run(*ENDPOINTS, *args, timeout=timeout).stdout)

    def spawn_traffic(self, *args: str) -> subprocess.Popen[str]:
        """Start a traffic endpoint and wait until it says it is ready."""
        proc = self.lab.spawn("ip", "netns", "exec", self.name, *ENDPOINTS, *args)
        assert proc.stdout is not None  # spawn always pipes stdout
        first = proc.stdout.readline()
        if not first.startswith("{"):
            raise LabError(f"traffic endpoint did not start: {first!r}")
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
        raise LabError(f"{ifname} in {self.name} got no usable link-local address")


class Lab:
    """Namespaces named `PREFIX-TAG-LABEL` and interface names ending in TAG, TAG random."""

    def __init__(self, prefix: str = "tvt") -> None:
        self.prefix = prefix
        self.tag = tag()
        self.namespaces: list[Netns] = []
        self.procs: list[subprocess.Popen[str]] = []
        self.root_links: list[str] = []

    def netns(self, label: str = "") -> Netns:
        name = f"{self.prefix}-{self.tag}-{label or len(self.namespaces)}"
        # Recorded before it exists: an interrupt between the two must not leak it.
        ns = Netns(self, name)
        self.namespaces.append(ns)
        sh("ip", "netns", "add", name)
        return ns

    def name(self, label: str) -> str:
        """An interface name unique to this lab (at most 15 bytes)."""
        return f"{label[:8]}{self.tag}"

    def spawn(self, *cmd: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.procs.append(proc)
        return proc

    def cleanup(self) -> None:
        """Kill what it started, delete what it made; safe to call more than once."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
        self.procs.clear()
        for link in self.root_links:
            sh("ip", "link", "del", link, check=False)
        self.root_links.clear()
        for ns in self.namespaces:
            sh("ip", "netns", "del", ns.name, check=False)
        self.namespaces.clear()


def finish(proc: subprocess.Popen[str], timeout: float = 120) -> Any:
    """Wait for a traffic endpoint; its JSON result, or LabError if it failed."""
    out, err = proc.communicate(timeout=timeout)
    if proc.returncode != 0:
        raise LabError(f"traffic endpoint failed: {err.strip()}")
    return last_json(out)


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
        self.send = src.lab.spawn("ip", "netns", "exec", src.name, *ENDPOINTS, *args)

    def outcome(self, timeout: float = 120) -> str:
        """ "intact" when every byte arrived unchanged, otherwise what went wrong."""
        try:
            got, sent = finish(self.recv, timeout), finish(self.send, timeout)
        except LabError as exc:
            return str(exc)
        if not got["bytes"] == sent["bytes"] == self.nbytes:
            return f"sent {sent['bytes']} bytes, received {got['bytes']} of {self.nbytes}"
        expected = hashlib.sha256(pattern(self.nbytes, self.seed)).hexdigest()
        if not got["sha256"] == sent["sha256"] == expected:
            return "the bytes received differ from those sent"
        return "intact"

    def finish(self, timeout: float = 120) -> None:
        """Wait for the transfer; LabError unless every byte arrived intact."""
        outcome = self.outcome(timeout)
        if outcome != "intact":
            raise LabError(f"TCP stream: {outcome}")
