"""The shipped units under a real systemd (PID 1 of a systemd-nspawn container).

test_readme_service_section_as_written installs with `./install.sh --system` and runs README's
"Running as a service" commands as they are written there, then the classic experiment and
examples/two-namespaces.sh against the unit, reloads with a good and a bad file, restarts
keeping the persistent pair, stops tapveth.service while tapveth@lab serves, finds a provoked
error with `journalctl -p err`, and uninstalls. The container has no network: pip installs
from wheels built beforehand (PIP_NO_INDEX, PIP_FIND_LINKS), and nothing else differs.

The other tests use a drop-in that only points ExecStart at this checkout's interpreter: start
to active with STATUS, a watchdog timeout restarting a hung daemon, stop leaving nothing."""

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from netlab import tag
from systemd_lab import Container

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "tapveth.service"

CONFIG = """
[[pair]]
[pair.end]
name = "veth1"
netns = "ns1"
addresses = ["10.0.0.1/24"]
up = true
[pair.peer]
name = "veth2"
netns = "ns2"
addresses = ["10.0.0.2/24"]
up = true
"""


def python_in_container() -> str:
    """The interpreter with the project's dependencies, as seen from inside the container
    (the project is bound at /opt/project; /tmp inside is the container's own)."""
    prefix = Path(sys.prefix).resolve()
    if prefix.is_relative_to(ROOT):
        return str(Path("/opt/project") / prefix.relative_to(ROOT) / "bin" / "python")
    return sys.executable


def install_unit(c: Container, *extra: str) -> None:
    """The shipped unit as it is, plus a drop-in that only points ExecStart (and ExecReload's
    check) at this checkout's interpreter and source (and any extra [Service] lines)."""
    c.run("cp", "/opt/project/systemd/tapveth.service", "/etc/systemd/system/")
    tapveth = f"{python_in_container()} -m tapveth"
    c.write(
        "/etc/systemd/system/tapveth.service.d/test.conf",
        "\n".join(
            [
                "[Service]",
                "ExecStart=",
                f"ExecStart={tapveth} daemon --config /etc/tapveth/tapveth.toml",
                "ExecReload=",
                f"ExecReload={tapveth} daemon --check-config /etc/tapveth/tapveth.toml",
                "ExecReload=/bin/kill -HUP $MAINPID",
                "Environment=PYTHONPATH=/opt/project",
                *extra,
            ]
        ),
    )
    c.run("systemctl", "daemon-reload")


@pytest.fixture
def container() -> Iterator[Container]:
    if not shutil.which("systemd-nspawn"):
        pytest.skip("systemd-nspawn is not installed (Debian package systemd-container)")
    c = Container(str(ROOT), tag())
    try:
        yield c
    finally:
        c.close()


def test_verify_is_clean(tmp_path: Path) -> None:
    manpath = tmp_path / "man"
    (manpath / "man8").mkdir(parents=True)
    (manpath / "man8" / "tapveth.8").symlink_to(ROOT / "doc" / "tapveth.8")
    for name in ("tapveth.service", "tapveth@.service", "tapveth-netns@.service"):
        unit = tmp_path / name
        unit.write_text(
            (ROOT / "systemd" / name)
            .read_text()
            .replace("/usr/local/bin/tapveth", shutil.which("true") or "/bin/true")
        )
        r = subprocess.run(
            ["systemd-analyze", "verify", "--recursive-errors=yes", str(unit)],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "MANPATH": f"{manpath}:"},  # Documentation=man:tapveth(8)
        )
        assert r.returncode == 0 and not (r.stdout + r.stderr).strip(), r.stdout + r.stderr


def test_unit_under_real_systemd(container: Container) -> None:
    c = container
    c.run("ip", "netns", "add", "ns1")
    c.run("ip", "netns", "add", "ns2")
    c.write("/etc/tapveth/tapveth.toml", CONFIG)
    install_unit(c, "WatchdogSec=3s")
    c.run("systemctl", "start", "tapveth", timeout=120)
    st = c.show("tapveth", "ActiveState", "SubState", "StatusText", "MainPID")
    assert (st["ActiveState"], st["SubState"]) == ("active", "running"), st
    assert st["StatusText"] == "1 pair(s), 1 with carrier"
    r = c.run("ip", "netns", "exec", "ns1", "ping", "-c", "2", "-i", "0.2", "10.0.0.2", check=False)
    assert r.returncode == 0, r.stdout
    assert c.run("stat", "-c", "%a", "/run/tapveth/tapveth.sock").stdout.strip() == "600"

    c.run("systemctl", "reload", "tapveth", timeout=60)
    assert c.show("tapveth", "ActiveState")["ActiveState"] == "active"

    # a hung event loop stops the watchdog: systemd aborts the daemon and restarts it
    pid = st["MainPID"]
    c.run("kill", "-STOP", pid)
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        now = c.show("tapveth", "ActiveState", "MainPID", "NRestarts")
        if now["NRestarts"] != "0" and now["ActiveState"] == "active" and now["MainPID"] != pid:
            break
        time.sleep(0.2)
    else:
        raise AssertionError(f"no watchdog restart: {now}")
    r = c.run("ip", "netns", "exec", "ns1", "ping", "-c", "2", "-i", "0.2", "10.0.0.2", check=False)
    assert r.returncode == 0, r.stdout  # the restarted daemon made the pair again

    c.run("systemctl", "stop", "tapveth", timeout=60)
    assert c.show("tapveth", "ActiveState")["ActiveState"] == "inactive"
    assert c.run("test", "-e", "/run/tapveth", check=False).returncode != 0
    assert c.run("ip", "-n", "ns1", "link", "show", "veth1", check=False).returncode != 0
    journal = c.run("journalctl", "-u", "tapveth", "-o", "cat", "--no-pager").stdout
    assert "pair veth1 <-> veth2 created" in journal
    # the system install built the native relay, and the unit's sandbox lets it run
    assert "plain ends relayed by the native thread" in journal
    assert "native relay is not built" not in journal
    assert "Watchdog timeout" in journal or "watchdog" in journal.lower()
    assert "reloaded /etc/tapveth/tapveth.toml" in journal


def test_create_netns_is_refused_inside_the_sandbox(container: Container) -> None:
    """Under ProtectSystem= the unit has its own mount namespace: a namespace it made would
    be unusable outside, so the daemon says so instead of making a broken one, and points at
    tapveth-netns@, after which the same file starts."""
    c = container
    c.run("cp", "/opt/project/systemd/tapveth-netns@.service", "/etc/systemd/system/")
    c.write(
        "/etc/tapveth/tapveth.toml",
        CONFIG.replace('netns = "ns1"', 'netns = "ns1"\ncreate_netns = true'),
    )
    c.run("ip", "netns", "add", "ns2")
    install_unit(c)
    assert c.run("systemctl", "start", "tapveth", check=False, timeout=120).returncode != 0
    journal = c.run("journalctl", "-u", "tapveth", "-o", "cat", "--no-pager").stdout
    assert "cannot create namespace ns1 from a private mount namespace" in journal
    assert "systemctl enable --now tapveth-netns@ns1.service" in journal
    assert "Traceback" not in journal
    # what the message says to do
    c.run("systemctl", "enable", "--now", "tapveth-netns@ns1.service", "tapveth-netns@ns2.service")
    c.run("systemctl", "start", "tapveth", timeout=120)
    st = c.show("tapveth", "ActiveState", "StatusText")
    assert (st["ActiveState"], st["StatusText"]) == ("active", "1 pair(s), 1 with carrier"), st


# -- README's service section, as written --------------------------------------------------


def readme_blocks(heading: str) -> list[list[str]]:
    """The ```sh blocks of one README section, as lists of command lines."""
    text = (ROOT / "README.md").read_text()
    section = text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return [
        [ln for ln in block.splitlines() if ln.strip()]
        for block in re.findall(r"```sh\n(.*?)```", section, re.S)
    ]


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Wheels of the package and its dependencies (and setuptools, to build it), for pip in
    the container, which has no network. Built from a copy: the checkout stays clean."""
    base = tmp_path_factory.mktemp("wheelhouse")
    src, out = base / "src", base / "wheels"
    shutil.copytree(
        ROOT,
        src,
        ignore=shutil.ignore_patterns(
            ".venv", ".git", "build", "*.egg-info", "*_cache", "__pycache__"
        ),
    )
    pip = [sys.executable, "-m", "pip", "-q"]
    for args in (
        ["wheel", "-w", str(out), str(src)],
        ["download", "-d", str(out), "setuptools>=77"],
    ):
        r = subprocess.run([*pip, *args], capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr
    shutil.rmtree(src)
    out.chmod(0o755)
    return out


@pytest.fixture
def readme_container(wheelhouse: Path) -> Iterator[Container]:
    if not shutil.which("systemd-nspawn"):
        pytest.skip("systemd-nspawn is not installed (Debian package systemd-container)")
    c = Container(str(ROOT), tag(), binds={str(wheelhouse): "/opt/wheelhouse"})
    try:
        yield c
    finally:
        c.close()


class Shell:
    """Command lines run in the container from the checkout (/opt/project), as a root shell
    would; each one is printed with its output, for the record."""

    def __init__(self, c: Container) -> None:
        self.c = c

    def __call__(self, line: str, ok: bool = True, timeout: float = 300) -> str:
        r = self.c.run(
            "sh",
            "-c",
            f"cd /opt/project && export PIP_NO_INDEX=1 PIP_FIND_LINKS=/opt/wheelhouse && {line}",
            check=False,
            timeout=timeout,
        )
        print(
            f"# {line}\n{r.stdout}{r.stderr}",
            end="" if (r.stdout + r.stderr).endswith("\n") else "\n",
        )
        if ok:
            assert r.returncode == 0, f"{line}: exit {r.returncode}: {r.stdout} {r.stderr}"
        else:
            assert r.returncode != 0, f"{line} should have failed: {r.stdout} {r.stderr}"
        return r.stdout + r.stderr

    def ends(self, *words: str) -> dict[str, dict[str, object]]:
        data = json.loads(self(" ".join(["tapveth", *words, "-j", "show"])))
        return {str(e["ifname"]): e for e in data}


def test_readme_service_section_as_written(readme_container: Container) -> None:
    c, sh = readme_container, Shell(readme_container)
    install, enable, reload, inet = readme_blocks("Running as a service")
    classic = readme_blocks("The classic experiment")[0]

    # Installing: a venv under /opt/tapveth, the command, man page, units, default config.
    assert install == ["./install.sh --system"]
    sh(install[0])
    assert "/opt/tapveth/bin/tapveth" in sh("readlink /usr/local/bin/tapveth")
    assert sh("man -w tapveth").strip().endswith("/share/man/man8/tapveth.8")
    assert "CONFIGURATION FILE" in sh("MANWIDTH=80 man -P cat tapveth")
    sh("test -e /usr/local/share/bash-completion/completions/tapveth")
    sh("cmp /etc/tapveth/tapveth.toml systemd/tapveth.toml")
    sh("systemctl cat tapveth.service tapveth@.service tapveth-netns@.service >/dev/null")

    # The classic experiment against the unit (default configuration: no pairs), as README
    # writes it: the daemon is `systemctl start tapveth`; the ping is bounded.
    sh("systemctl start tapveth")
    sh("sh examples/two-namespaces.sh")  # add without netns, from a script
    for line in classic:
        if line.startswith("tapveth daemon &"):
            assert "# or: systemctl start tapveth" in line
            continue
        if "ping" in line:
            line = line.replace("ping ", "ping -c 2 -i 0.2 -w 20 ")
        out = sh(line)
    assert " 0% packet loss" in out
    sh("ip netns del ns1; ip netns del ns2")  # the experiment's namespaces: its pair goes too
    sh("systemctl stop tapveth")

    # Enabling with the shipped example: namespaces by tapveth-netns@, then the daemon.
    for line in enable:
        out = sh(line)
    assert " 0% packet loss" in out
    ends = sh.ends()
    assert set(ends) == {"veth1", "veth2", "jumbo1", "jumbo2"}
    assert all(e["carrier"] for e in ends.values())
    veth1_index = ends["veth1"]["ifindex"]
    assert sh("systemctl is-enabled tapveth tapveth-netns@ns3").split() == ["enabled"] * 2

    # Reload with a good file (as README writes it), then with a changed good file.
    assert "valid, 2 pair(s)" in sh(reload[0])
    sh(reload[1])
    sh("sed -i 's/mtu = 9000/mtu = 8000/' /etc/tapveth/tapveth.toml")
    for line in reload:
        sh(line)
    ends = sh.ends()
    assert (ends["jumbo1"]["mtu"], ends["jumbo2"]["mtu"]) == (8000, 8000)
    assert ends["veth1"]["ifindex"] == veth1_index  # untouched by the reload
    pid = c.show("tapveth", "MainPID")["MainPID"]

    # A bad file: the check fails, so does the reload; nothing changes.
    sh("sed -i 's/mtu = 8000/mtu = 67/' /etc/tapveth/tapveth.toml")
    assert "MTU 67 is out of range" in sh(reload[0], ok=False)
    sh(reload[1], ok=False)
    assert sh.ends() == ends
    st = c.show("tapveth", "ActiveState", "MainPID")
    assert (st["ActiveState"], st["MainPID"]) == ("active", pid)
    errors = sh("journalctl -u tapveth -p err -o cat --no-pager")
    assert "/etc/tapveth/tapveth.toml:26: pair[1].end.mtu: MTU 67 is out of range" in errors
    assert "cannot follow" not in errors and "Traceback" not in errors
    sh("sed -i 's/mtu = 67/mtu = 8000/' /etc/tapveth/tapveth.toml")

    # Restart: the persistent pair is re-attached (same device), the other made anew.
    sh("systemctl restart tapveth")
    ends = sh.ends()
    assert ends["veth1"]["ifindex"] == veth1_index
    assert "pair veth1 <-> veth2 re-attached" in sh("journalctl -u tapveth -o cat --no-pager")
    assert " 0% packet loss" in sh("ip netns exec ns1 ping -c 2 -i 0.2 -w 20 10.0.0.2")

    # The drop-in that allows IP sockets (vxlan ends, metrics), installed as README writes it.
    for line in inet:
        sh(line)
    allowed = c.show("tapveth", "RestrictAddressFamilies")["RestrictAddressFamilies"].split()
    assert {"AF_UNIX", "AF_NETLINK", "AF_INET", "AF_INET6"} <= set(allowed), allowed
    assert c.show("tapveth", "ActiveState")["ActiveState"] == "active"
    assert sh.ends()["veth1"]["ifindex"] == veth1_index

    # Installing again (an upgrade): the configuration is kept, the daemon restarted on the
    # new code, the persistent pair re-attached once more.
    pid = c.show("tapveth", "MainPID")["MainPID"]
    assert "kept /etc/tapveth/tapveth.toml" in sh("./install.sh --system")
    sh("grep -q 'mtu = 8000' /etc/tapveth/tapveth.toml")
    st = c.show("tapveth", "ActiveState", "MainPID")
    assert st["ActiveState"] == "active" and st["MainPID"] != pid
    assert sh.ends()["veth1"]["ifindex"] == veth1_index

    # tapveth@lab keeps serving when tapveth.service stops (a runtime directory each).
    c.write(
        "/etc/tapveth/lab.toml",
        '[[pair]]\n[pair.end]\nname = "lab1"\nnetns = "ns3"\naddresses = ["10.9.0.1/24"]\n'
        'up = true\n[pair.peer]\nname = "lab2"\nnetns = "ns1"\naddresses = ["10.9.0.2/24"]\n'
        "up = true",
    )
    sh("systemctl start tapveth@lab")
    lab_sock = "--socket /run/tapveth-lab/tapveth.sock"
    assert set(sh.ends(lab_sock)) == {"lab1", "lab2"}
    sh("systemctl stop tapveth")
    assert c.show("tapveth@lab", "ActiveState")["ActiveState"] == "active"
    assert set(sh.ends(lab_sock)) == {"lab1", "lab2"}
    assert " 0% packet loss" in sh("ip netns exec ns3 ping -c 2 -i 0.2 -w 20 10.9.0.2")

    # The persistent pair, dropped from the file while the daemon was stopped: reported at
    # start, shown as orphaned, removed by `tapveth del`.
    example = (ROOT / "examples" / "tapveth.toml").read_text().replace("9000", "8000")
    first, second = (example.index("[[pair]]", i) for i in (0, example.index("[[pair]]") + 1))
    c.write("/etc/tapveth/tapveth.toml", example[:first] + example[second:])
    assert "valid, 1 pair(s)" in sh("tapveth daemon --check-config /etc/tapveth/tapveth.toml")
    sh("systemctl start tapveth")
    warnings = sh("journalctl -u tapveth -p warning -o cat --no-pager")
    assert "persistent pair veth1 (netns ns1) <-> veth2 (netns ns2) is not in the" in warnings
    ends = sh.ends()
    assert ends["veth1"]["orphaned"] is True and ends["jumbo1"]["orphaned"] is False
    sh("tapveth del veth1")
    assert set(sh.ends()) == {"jumbo1", "jumbo2"}
    sh("ip -n ns1 link show veth1", ok=False)

    # Uninstall: units stopped and gone, the command and /opt/tapveth gone, the changed
    # configuration kept.
    sh("./install.sh --system --uninstall")
    sh("test ! -e /usr/local/bin/tapveth && test ! -e /opt/tapveth")
    sh("test ! -e /etc/systemd/system/tapveth.service")
    sh("test ! -e /etc/systemd/system/tapveth.service.d")  # the unchanged drop-in too
    assert sh("ls /etc/tapveth").split() == ["lab.toml", "tapveth.toml"]
    assert c.show("tapveth@lab", "ActiveState")["ActiveState"] == "inactive"


def test_ip_sockets_need_the_inet_drop_in(container: Container) -> None:
    """The shipped unit refuses IP sockets: --metrics and a vxlan end fail with one line that
    names the drop-in; with systemd/tapveth-inet.conf installed both work."""
    c = container
    metrics = '[metrics]\nlisten = "127.0.0.1:9477"\n'
    c.write("/etc/tapveth/tapveth.toml", metrics)
    install_unit(c)
    assert c.run("systemctl", "start", "tapveth", check=False, timeout=120).returncode != 0
    journal = c.run("journalctl", "-u", "tapveth", "-o", "cat", "--no-pager").stdout
    refused = [ln for ln in journal.splitlines() if "RestrictAddressFamilies" in ln]
    assert refused and "tapveth-inet.conf" in refused[0], journal
    assert refused[0].startswith("cannot open metrics on 127.0.0.1:9477: the unit refuses AF_INET")
    assert "Traceback" not in journal

    # Two hosts inside the container's network, joined by a veth underlay; the kernel's vxlan
    # on host B.
    for ns in ("ha", "hb", "o1"):
        c.run("ip", "netns", "add", ns)
    c.run(
        "ip", "-n", "ha", "link", "add", "ua", "type", "veth", "peer", "name", "ub", "netns", "hb"
    )
    for ns, dev, ip in (("ha", "ua", "192.0.2.1/24"), ("hb", "ub", "192.0.2.2/24")):
        c.run("ip", "-n", ns, "addr", "add", ip, "dev", dev)
        c.run("ip", "-n", ns, "link", "set", dev, "up")
    c.run(
        "ip", "-n", "hb", "link", "add", "vx42", "type", "vxlan", "id", "42", "remote",
        "192.0.2.1", "dstport", "4789", "dev", "ub",
    )  # fmt: skip
    c.run("ip", "-n", "hb", "addr", "add", "10.42.0.2/24", "dev", "vx42")
    c.run("ip", "-n", "hb", "link", "set", "vx42", "up")
    cli = ("env", "PYTHONPATH=/opt/project", python_in_container(), "-m", "tapveth")
    add = (
        *cli, "add", "v1", "netns", "o1", "peer", "vxlan", "id", "42", "remote", "192.0.2.2",
        "dstport", "4789", "underlay-netns", "ha",
    )  # fmt: skip

    c.write("/etc/tapveth/tapveth.toml", "")
    c.run("systemctl", "reset-failed", "tapveth")
    c.run("systemctl", "start", "tapveth", timeout=120)
    r = c.run(*add, check=False)
    assert r.returncode == 2, r
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "RestrictAddressFamilies" in lines[0], r.stderr
    assert "cannot open the tunnel's UDP sockets: the unit refuses AF_INET" in lines[0]
    assert c.run("ip", "-n", "o1", "link", "show", "v1", check=False).returncode != 0

    c.run(
        "cp",
        "/opt/project/systemd/tapveth-inet.conf",
        "/etc/systemd/system/tapveth.service.d/inet.conf",
    )
    c.write("/etc/tapveth/tapveth.toml", metrics)
    c.run("systemctl", "daemon-reload")
    c.run("systemctl", "restart", "tapveth", timeout=120)
    assert c.show("tapveth", "ActiveState")["ActiveState"] == "active"
    scrape = c.run(
        python_in_container(),
        "-c",
        "import urllib.request as u; print(u.urlopen('http://127.0.0.1:9477/metrics').read()"
        ".decode())",
    ).stdout
    assert "tapveth_pairs 0.0" in scrape
    c.run(*add)
    c.run("ip", "-n", "o1", "addr", "add", "10.42.0.1/24", "dev", "v1")
    c.run("ip", "-n", "o1", "link", "set", "v1", "up")
    r = c.run("ip", "netns", "exec", "o1", "ping", "-c", "3", "-i", "0.2", "10.42.0.2", check=False)
    assert r.returncode == 0, r.stdout
    c.run("systemctl", "stop", "tapveth", timeout=60)
