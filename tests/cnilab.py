"""Driving CNI plugins as a runtime does (CNI_* variables, configuration on stdin, result on
stdout), for the tests: names, subnet, bridge and state directories unique to one test, and a
cleanup that undoes every attachment and what the plugins left on the host."""

import contextlib
import json
import os
import random
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from typing import Any

from netlab import Lab, sh

PLUGIN = os.path.join(os.path.dirname(sys.executable), "tapveth-cni")
REFERENCE_DIR = "/usr/lib/cni"
FORWARD = "/proc/sys/net/ipv4/ip_forward"


@dataclass
class Reply:
    rc: int
    out: Any  # the JSON on stdout, or None
    stdout: str
    stderr: str

    def ok(self) -> Any:
        assert self.rc == 0, f"plugin failed ({self.rc}): {self.stdout} {self.stderr}"
        return self.out

    def error(self, code: int, ours: bool = True) -> str:
        """The error's message, after checking its shape and code (the reference plugins
        leave cniVersion out of theirs)."""
        assert self.rc != 0, f"expected error {code}, got success: {self.stdout}"
        assert isinstance(self.out, dict), f"no error JSON on stdout: {self.stdout!r}"
        assert self.out.get("code") == code, f"expected code {code}: {self.out}"
        assert isinstance(self.out.get("msg"), str) and self.out["msg"]
        assert "cniVersion" in self.out or not ours
        return str(self.out["msg"])


def random_subnet() -> str:
    """A /24 in 10.200-249.x.0, unlikely to meet another test's."""
    return f"10.{random.randint(200, 249)}.{random.randint(0, 255)}.0/24"


class CniLab:
    """One network (name, bridge, subnet, state dirs) for one test, torn down by cleanup()."""

    def __init__(self, lab: Lab, socket: str) -> None:
        self.lab = lab
        self.socket = socket
        self.name = f"tvt{lab.tag}"
        self.bridge = f"tvbr{lab.tag}"
        self.subnet = random_subnet()
        self.prefix = self.subnet.rsplit(".", 1)[0]  # "10.x.y"
        self.dir = tempfile.mkdtemp(prefix="tapveth-cni-")
        self.plugin_dir = os.path.join(self.dir, "bin")
        os.makedirs(self.plugin_dir)
        os.symlink(PLUGIN, os.path.join(self.plugin_dir, "tapveth-cni"))
        self.path = f"{self.plugin_dir}:{REFERENCE_DIR}"
        self.attached: list[tuple[dict[str, Any], str, str, str]] = []
        with open(FORWARD) as f:
            self._forward = f.read().strip()
        self._chains = iptables_chains()
        self._tables = nft_tables()

    @property
    def ipam_dir(self) -> str:
        return os.path.join(self.dir, "ipam")

    @property
    def state_dir(self) -> str:
        return os.path.join(self.dir, "state")

    def conf(self, **over: Any) -> dict[str, Any]:
        """A bridge network of this test; keys given as None are left out."""
        conf: dict[str, Any] = {
            "cniVersion": "1.0.0",
            "name": self.name,
            "type": "tapveth-cni",
            "bridge": self.bridge,
            "isGateway": True,
            "socket": self.socket,
            "dataDir": self.state_dir,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": self.subnet}]],
                "dataDir": self.ipam_dir,
            },
        }
        conf.update(over)
        return {k: v for k, v in conf.items() if v is not None}

    def call(
        self,
        command: str,
        conf: dict[str, Any] | bytes | None,
        netns: str = "",
        cid: str = "c1",
        ifname: str = "eth0",
        plugin: str = PLUGIN,
        env: dict[str, str | None] | None = None,
    ) -> Reply:
        """Run a plugin once, as a runtime does."""
        environ = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
        environ.pop("TAPVETH_SOCKET", None)
        environ.update(
            {
                "CNI_COMMAND": command,
                "CNI_CONTAINERID": cid,
                "CNI_NETNS": netns,
                "CNI_IFNAME": ifname,
                "CNI_PATH": self.path,
            }
        )
        for k, v in (env or {}).items():
            if v is None:
                environ.pop(k, None)
            else:
                environ[k] = v
        data = conf if isinstance(conf, bytes) else json.dumps(conf or {}).encode()
        proc = subprocess.run(
            [plugin], input=data, capture_output=True, env=environ, timeout=120, check=False
        )
        stdout = proc.stdout.decode()
        out = None
        with contextlib.suppress(ValueError):
            out = json.loads(stdout) if stdout.strip() else None
        return Reply(proc.returncode, out, stdout, proc.stderr.decode())

    def add(
        self, conf: dict[str, Any], netns: str, cid: str = "c1", ifname: str = "eth0"
    ) -> dict[str, Any]:
        """ADD that must succeed; remembered so that cleanup() deletes it."""
        self.attached.append((conf, netns, cid, ifname))
        result: dict[str, Any] = self.call("ADD", conf, netns, cid, ifname).ok()
        return result

    def delete(
        self, conf: dict[str, Any], netns: str, cid: str = "c1", ifname: str = "eth0"
    ) -> None:
        self.call("DEL", conf, netns, cid, ifname).ok()

    # -- what is left -------------------------------------------------------------------------

    def leases(self) -> list[str]:
        """host-local's reservations (files named by address) in this network."""
        try:
            names = os.listdir(os.path.join(self.ipam_dir, self.name))
        except FileNotFoundError:
            return []
        return sorted(n for n in names if n[0].isdigit())

    def bridge_ports(self) -> list[str]:
        out = sh("ip", "-j", "link", "show", "master", self.bridge, check=False)
        if out.returncode != 0 or not out.stdout.strip():
            return []
        return [link["ifname"] for link in json.loads(out.stdout)]

    def masq_rules(self) -> list[str]:
        """The comments of nft masquerading rules that name this network."""
        out = sh("nft", "-j", "list", "chain", "inet", "tapveth_cni", "postrouting", check=False)
        if out.returncode != 0:
            return []
        return [
            i["rule"].get("comment", "")
            for i in json.loads(out.stdout)["nftables"]
            if "rule" in i and f" {self.name} " in i["rule"].get("comment", "")
        ]

    def records(self) -> list[str]:
        try:
            return os.listdir(os.path.join(self.state_dir, self.name))
        except FileNotFoundError:
            return []

    def cleanup(self) -> None:
        for conf, netns, cid, ifname in reversed(self.attached):
            self.call("DEL", conf, netns, cid, ifname)
        sh("ip", "link", "del", self.bridge, check=False)
        remove_new_chains(self._chains)
        remove_new_tables(self._tables)
        with open(FORWARD, "w") as f:
            f.write(self._forward)
        shutil.rmtree(self.dir, ignore_errors=True)


def iptables_chains() -> dict[str, set[str]]:
    """The CNI-* chains in the filter and nat tables, which the reference firewall and portmap
    plugins make and never remove."""
    out: dict[str, set[str]] = {}
    for table in ("filter", "nat"):
        rules = sh("iptables", "-t", table, "-S", check=False).stdout.splitlines()
        out[table] = {r.split()[1] for r in rules if r.startswith("-N CNI-")}
    return out


IPTABLES_TABLES = {("ip", "filter"), ("ip", "nat"), ("ip6", "filter"), ("ip6", "nat")}


def nft_tables() -> set[tuple[str, str]]:
    out = sh("nft", "-j", "list", "tables", check=False)
    if out.returncode != 0:
        return set()
    return {
        (i["table"]["family"], i["table"]["name"])
        for i in json.loads(out.stdout)["nftables"]
        if "table" in i
    }


def remove_new_tables(before: set[tuple[str, str]]) -> None:
    """iptables-nft's tables that the reference plugins' iptables calls brought in, once no
    rule is left in them."""
    for family, name in (nft_tables() - before) & IPTABLES_TABLES:
        out = sh("nft", "-j", "list", "table", family, name, check=False)
        if out.returncode == 0 and not any("rule" in i for i in json.loads(out.stdout)["nftables"]):
            sh("nft", "delete", "table", family, name, check=False)


def remove_new_chains(before: dict[str, set[str]]) -> None:
    """Remove the CNI-* chains that were not there before, with the rules that jump to them."""
    for table, chains in iptables_chains().items():
        new = chains - before.get(table, set())
        if not new:
            continue
        for rule in sh("iptables", "-t", table, "-S").stdout.splitlines():
            words = shlex.split(rule)
            jumps = words[words.index("-j") + 1] if "-j" in words else None
            if words[0] == "-A" and words[1] not in new and jumps in new:
                sh("iptables", "-t", table, "-D", *words[1:], check=False)
        for chain in new:
            sh("iptables", "-t", table, "-F", chain, check=False)
        for chain in new:
            sh("iptables", "-t", table, "-X", chain, check=False)
