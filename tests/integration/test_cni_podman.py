"""A real rootful podman runs two containers on a tapveth network: addresses from host-local,
ping and a checksummed TCP transfer between them and to the host, TAP devices inside, both
pairs in `tapveth show`; stopping and removing them leaves no pair, TAP, bridge port, lease
or rule. Podman runs with storage, state, network configuration and plugin directories of
the test's own (CONTAINERS_CONF and --root/--runroot/--tmpdir), all removed at the end."""

import json
import os
import shutil
import subprocess
import tarfile
import time
from collections.abc import Iterator
from typing import Any

import pytest
from cnilab import CniLab
from netlab import Lab, sh

from tapveth.private import PrivateDaemon

pytestmark = pytest.mark.integration

BUSYBOX = "/bin/busybox"  # Debian's busybox-static: one static binary, no libraries needed
APPLETS = ("sh", "nc", "ping", "sleep", "sha256sum", "head", "cat", "wc", "ip", "ls")
# What this VM's podman 4.3 needs: crun refuses its hybrid cgroups and its rlimits.
RUN_FLAGS = (
    "--runtime",
    "runc",
    "--cgroup-manager",
    "cgroupfs",
    "--ulimit",
    "nofile=1024:1024",
    "--ulimit",
    "nproc=1024:1024",
    "--cap-add",
    "NET_RAW",
)
NBYTES = 4 << 20


def static_busybox() -> bool:
    if not os.path.exists(BUSYBOX):
        return False
    out = subprocess.run(["file", "-L", BUSYBOX], capture_output=True, text=True, check=False)
    return "statically linked" in out.stdout or out.returncode != 0


needs_podman = pytest.mark.skipif(
    shutil.which("podman") is None or shutil.which("runc") is None or not static_busybox(),
    reason="needs podman, runc and busybox-static",
)


class Podman:
    """podman with the test's own storage, state and configuration; prints every command and
    its output (pytest -s shows them)."""

    def __init__(self, base: str, conf: str) -> None:
        self.base = base
        self.env = {**os.environ, "CONTAINERS_CONF": conf}
        self.glob = [
            "--root",
            os.path.join(base, "root"),
            "--runroot",
            os.path.join(base, "runroot"),
            "--tmpdir",
            os.path.join(base, "libpod"),
            "--storage-driver",
            "vfs",
        ]
        self.transcript: list[str] = []
        self.image = ""

    def __call__(
        self, *args: str, check: bool = True, timeout: float = 90
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            ["podman", *self.glob, *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=timeout,
            check=False,
        )
        shown = f"# podman {' '.join(args)}\n{proc.stdout}{proc.stderr}".rstrip()
        self.transcript.append(shown)
        print(shown)
        if check and proc.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc

    def inspect(self, name: str) -> tuple[int, str, str]:
        """The container's PID, network namespace path and address."""
        form = "{{.State.Pid}} {{.NetworkSettings.SandboxKey}} {{.NetworkSettings.IPAddress}}"
        pid, sandbox, ip = self("inspect", "--format", form, name).stdout.split()
        return int(pid), sandbox, ip


@pytest.fixture
def podman_net(lab: Lab, daemon: PrivateDaemon) -> Iterator[tuple[Podman, CniLab]]:
    cni = CniLab(lab, daemon.socket)
    base = os.path.join(cni.dir, "podman")
    netd = os.path.join(base, "net.d")
    os.makedirs(netd)
    conf = os.path.join(base, "containers.conf")
    with open(conf, "w") as f:
        f.write(
            "[network]\n"
            'network_backend = "cni"\n'
            f'cni_plugin_dirs = ["{cni.plugin_dir}", "/usr/lib/cni"]\n'
            f'network_config_dir = "{netd}"\n'
            f'default_network = "{cni.name}"\n'
            "[engine]\n"
            'runtime = "runc"\n'
            'cgroup_manager = "cgroupfs"\n'
        )
    # The network as `podman network create` lays one out, with tapveth-cni first.
    ours = {k: v for k, v in cni.conf(ipMasq=True).items() if k not in ("cniVersion", "name")}
    conflist = {
        "cniVersion": "1.0.0",
        "name": cni.name,
        "plugins": [
            ours,
            {"type": "portmap", "capabilities": {"portMappings": True}},
            {"type": "firewall", "backend": "iptables"},
            {"type": "tuning"},
        ],
    }
    with open(os.path.join(netd, f"{cni.name}.conflist"), "w") as f:
        json.dump(conflist, f, indent=2)
    print(f"# cat {netd}/{cni.name}.conflist\n{json.dumps(conflist, indent=2)}")
    podman = Podman(base, conf)
    image = f"localhost/tapveth-busybox-{lab.tag}:test"
    try:
        rootfs = os.path.join(base, "rootfs.tar")
        with tarfile.open(rootfs, "w") as tar:
            tar.add(BUSYBOX, arcname="bin/busybox")
            for applet in APPLETS:
                link = tarfile.TarInfo(f"bin/{applet}")
                link.type, link.linkname = tarfile.SYMTYPE, "busybox"
                tar.addfile(link)
            for d in ("tmp", "proc", "sys", "dev", "etc"):
                info = tarfile.TarInfo(d)
                info.type, info.mode = tarfile.DIRTYPE, 0o1777 if d == "tmp" else 0o755
                tar.addfile(info)
        podman("import", rootfs, image)
        podman.image = image
        yield podman, cni
    finally:
        sandboxes = []
        for line in podman("ps", "-aq", check=False).stdout.split():
            got = podman(
                "inspect", "--format", "{{.NetworkSettings.SandboxKey}}", line, check=False
            )
            sandboxes.append(got.stdout.strip())
        podman("rm", "-af", "-t", "0", check=False)
        podman("rmi", "-af", check=False)
        for path in sandboxes:  # a namespace podman could not remove (it would say so)
            if path.startswith("/run/netns/") and os.path.exists(path):
                sh("ip", "netns", "del", os.path.basename(path), check=False)
        shutil.rmtree(base, ignore_errors=True)
        cni.cleanup()


def until(check: Any, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@needs_podman
def test_podman_two_containers_on_tapveth(
    podman_net: tuple[Podman, CniLab], daemon: PrivateDaemon, lab: Lab
) -> None:
    podman, cni = podman_net
    image = podman.image
    c1, c2 = f"tvc1-{lab.tag}", f"tvc2-{lab.tag}"
    gateway = f"{cni.prefix}.1"
    for name in (c1, c2):
        podman(
            "run", "-d", "--name", name, "--network", cni.name, *RUN_FLAGS, image, "sleep", "600"
        )
    info = {name: podman.inspect(name) for name in (c1, c2)}
    ip = {n: i[2] for n, i in info.items()}
    sandbox = {n: i[1] for n, i in info.items()}
    assert sorted(ip.values()) == [f"{cni.prefix}.2", f"{cni.prefix}.3"]

    # Inside: a TAP, as the kernel sees it from the container's namespace and as sysfs says.
    for name in (c1, c2):
        pid = str(info[name][0])
        out = sh("nsenter", "-t", pid, "-n", "ip", "-d", "link", "show", "eth0").stdout
        print(f"# nsenter -t {pid} -n ip -d link show eth0\n{out}")
        assert "tun type tap" in out
        flags = podman("exec", name, "cat", "/sys/class/net/eth0/tun_flags").stdout
        assert int(flags, 16) & 0x0002  # IFF_TAP

    # Ping each other and the host (the bridge's gateway address).
    podman("exec", c1, "ping", "-c", "3", "-W", "2", ip[c2])
    podman("exec", c2, "ping", "-c", "3", "-W", "2", ip[c1])
    podman("exec", c1, "ping", "-c", "3", "-W", "2", gateway)

    # TCP from c1 to c2 with busybox nc; the checksums match.
    podman("exec", c1, "sh", "-c", f"head -c {NBYTES} /dev/urandom > /tmp/data")
    sent = podman("exec", c1, "sha256sum", "/tmp/data").stdout.split()[0]
    # busybox nc quits when its stdin ends: the listener's is held open by sleep, and it
    # quits when the sender closes the connection.
    podman("exec", "-d", c2, "sh", "-c", "sleep 120 | nc -l -p 5301 > /tmp/recv")
    time.sleep(0.5)  # the listener binds; the sender retries below if it is not there yet
    deadline = time.monotonic() + 30
    while True:
        done = podman("exec", c1, "sh", "-c", f"nc -w 10 {ip[c2]} 5301 < /tmp/data", check=False)
        if done.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.3)

    def received() -> int:
        out = podman("exec", c2, "sh", "-c", "wc -c < /tmp/recv", check=False).stdout.strip()
        return int(out) if out.isdigit() else -1

    until(lambda: received() == NBYTES, f"{NBYTES} bytes in c2", timeout=60)
    got = podman("exec", c2, "sha256sum", "/tmp/recv").stdout.split()[0]
    assert got == sent

    # A daemon restart keeps the containers' links: the new daemon re-attaches them.
    assert daemon.stop() == 0
    print("# (tapveth daemon stopped)\n" + daemon.final_log.split("stopping:")[-1].strip())
    os.makedirs(daemon.dir, exist_ok=True)
    daemon.start()
    until(
        lambda: sum(e["carrier"] for e in json.loads(daemon.cli("-j", "show").stdout)) == 4,
        "the pairs re-attached with carrier",
    )
    podman("exec", c1, "ping", "-c", "3", "-W", "2", ip[c2])

    # The daemon has both pairs, the container ends in the containers' namespaces.
    show = daemon.cli("show").stdout
    print(f"# tapveth show\n{show}")
    ends = json.loads(daemon.cli("-j", "show").stdout)
    for name in (c1, c2):
        mine = [e for e in ends if e["netns"] == os.path.basename(sandbox[name])]
        assert [e["ifname"] for e in mine] == ["eth0"] and mine[0]["carrier"]
    assert len(ends) == 4
    hosts = [e["ifname"] for e in ends if e["netns"] is None]
    assert sorted(cni.bridge_ports()) == sorted(hosts)
    assert len(cni.leases()) == 2 and len(cni.masq_rules()) == 2

    podman("stop", "-t", "1", c1, c2)
    podman("rm", c1, c2)
    print(f"# tapveth show\n{daemon.cli('show').stdout}")
    ports = sh("ip", "link", "show", "master", cni.bridge).stdout
    print(f"# ip link show master {cni.bridge}\n{ports}")
    print(f"# leases in {cni.ipam_dir}: {cni.leases()}")
    assert json.loads(daemon.cli("-j", "show").stdout) == []
    for host in hosts:
        assert sh("ip", "link", "show", "dev", host, check=False).returncode != 0
    assert cni.bridge_ports() == [] and cni.leases() == []
    assert cni.masq_rules() == [] and cni.records() == []
    for path in sandbox.values():
        assert not os.path.exists(path)
