"""`tapveth compare` on this machine: every behaviour agrees or differs as documented, the
outputs (table, JSON, pages) say so, a backend that behaves wrongly is reported as differing
with exit status 1, and nothing is left behind, even on Ctrl-C."""

import json
import os
import signal
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest
from netlab import Netns, sh

from tapveth.conformance.backends import Backend, KernelVeth
from tapveth.conformance.behaviours import BEHAVIOURS
from tapveth.conformance.compare import namespace_prefix, run_compare
from tapveth.conformance.lab import wait_until

pytestmark = pytest.mark.integration


def compare_namespaces(pid: int) -> set[str]:
    """The namespaces the compare run of process pid has now (others may run at once)."""
    names = (ln.split()[0] for ln in sh("ip", "netns", "list").stdout.splitlines())
    return {n for n in names if n.startswith(f"{namespace_prefix(pid)}-")}


def compare(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run `tapveth compare` to its end; then none of its namespaces may be left."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tapveth", "compare", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out, err = proc.communicate(timeout=timeout)
    assert compare_namespaces(proc.pid) == set()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.mark.parametrize("fast_path", ["native", "python"])
def test_compare_all_agree_or_documented(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fast_path: str
) -> None:
    """Both relay paths of the daemon (daemon/native.py, daemon/relay.py) pass every behaviour."""
    monkeypatch.setenv("TAPVETH_FAST_PATH", fast_path)  # the daemon compare starts
    page = tmp_path / "compare.html"
    r = compare("-j", "--report", str(page))
    assert r.returncode == 0, r.stdout + r.stderr
    data = json.loads(r.stdout)
    assert [f"{b['group']}/{b['name']}" for b in data["behaviours"]] == [b.key for b in BEHAVIOURS]
    by_key = {f"{b['group']}/{b['name']}": b for b in data["behaviours"]}
    for b in BEHAVIOURS:
        got = by_key[b.key]
        assert got["kernel_veth"] == b.expected_for("veth"), b.key
        assert got["tapveth"] == b.expected_for("tapveth"), b.key
        assert got["verdict"] == ("documented" if b.documented else "agree"), b.key
    assert data["kernel"] == os.uname().release and data["exit_status"] == 0
    html = page.read_text()
    assert os.uname().release in html and html.count('<tr class="') == len(BEHAVIOURS)


def test_compare_one_group_table_and_markdown(tmp_path: Path) -> None:
    page = tmp_path / "compare.md"
    r = compare("--only", "attributes", "--report", str(page))
    assert r.returncode == 0, r.stdout + r.stderr
    rows = [ln for ln in r.stdout.splitlines() if ln.startswith("attributes/")]
    assert [ln.split()[0] for ln in rows] == [b.key for b in BEHAVIOURS if b.group == "attributes"]
    assert rows[0].endswith("agree") and rows[1].endswith("documented [1],[2],[3]")
    assert "3 behaviours: 2 agree, 1 differ as documented, 0 differ" in r.stdout
    md = page.read_text()
    assert "| `attributes/identity`" in md and "**max_mtu: 65521**" in md


class BareTaps(Backend):
    """Deliberately wrong: two TAP devices that no process opens, so never any carrier."""

    name = "bare-taps"
    label = "bare TAPs"
    veth = KernelVeth()

    def add(self, a: str, ns_a: Netns, b: str, ns_b: Netns, *extra_a: str) -> None:
        ns_a.ip("tuntap", "add", "dev", a, "mode", "tap")
        ns_b.ip("tuntap", "add", "dev", b, "mode", "tap")
        if extra_a:
            ns_a.ip("link", "set", a, *extra_a)

    def delete(self, a: str, ns_a: Netns) -> None:
        ns_a.ip("link", "del", a)

    def counters(self, ifname: str, ns: Netns) -> dict[str, int]:
        return self.veth.counters(ifname, ns)


def test_a_wrong_backend_is_reported_as_differing(capsys: pytest.CaptureFixture[str]) -> None:
    status = run_compare("carrier/admin-states", as_json=True, subject=BareTaps())
    out = capsys.readouterr().out
    assert status == 1
    data = json.loads(out)
    assert data["subject"] == "bare TAPs" and data["exit_status"] == 1
    [row] = data["behaviours"]
    assert row["verdict"] == "differs"
    assert "both up: A" in row["differing"] and "both up: carrier_changes" in row["differing"]
    assert row["kernel_veth"]["both up: A"] == "<UP,LOWER_UP> state UP"
    assert row["tapveth"]["both up: A"] == "<NO-CARRIER,UP> state DOWN"

    status = run_compare("carrier/admin-states", subject=BareTaps())
    table = capsys.readouterr().out
    assert status == 1
    [line] = [ln for ln in table.splitlines() if ln.startswith("carrier/admin-states")]
    assert line.endswith("differs")
    assert "1 behaviours: 0 agree, 0 differ as documented, 1 differ" in table


def descendants(pid: int) -> set[int]:
    found: set[int] = set()
    todo = [pid]
    while todo:
        p = todo.pop()
        try:  # a process may end while it is looked at
            tasks = list(Path(f"/proc/{p}/task").iterdir())
        except OSError:
            continue
        for task in tasks:
            try:
                kids = {int(c) for c in (task / "children").read_text().split()}
            except OSError:
                continue
            todo += list(kids - found)
            found |= kids
    return found


def exited(pid: int) -> bool:
    return not Path(f"/proc/{pid}").exists()


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")
    except OSError:
        return ""


@pytest.mark.parametrize(
    ("moment", "group"),
    [("first pair", True), ("iperf3 running", True), ("iperf3 running", False)],
    ids=["ctrl-c-first-pair", "ctrl-c-iperf3", "kill-int-iperf3"],
)
def test_sigint_removes_everything(moment: str, group: bool) -> None:
    """Ctrl-C signals the whole process group (the daemon and traffic processes too);
    `kill -INT` only compare itself, which must then stop everything it started."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tapveth", "compare"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, which Ctrl-C signals as a whole
    )
    seen: set[str] = set()
    try:

        def reached() -> bool:
            mine = compare_namespaces(proc.pid)
            seen.update(mine)
            if moment == "first pair":
                return any(sh("ip", "-n", ns, "-br", "link").stdout.count("\n") > 1 for ns in mine)
            return any("iperf3 -c" in cmdline(p) for p in descendants(proc.pid))

        assert wait_until(reached, timeout=60), f"compare never reached: {moment}"
        assert seen  # so the checks after the signal are about something
        kids = descendants(proc.pid)
        daemon = [p for p in kids if " daemon " in cmdline(p) and "--socket" in cmdline(p)]
        assert len(daemon) == 1
        words = cmdline(daemon[0]).split()
        socket_dir = Path(words[words.index("--socket") + 1]).parent
        tags = {ns.split("-")[2] for ns in seen}
        if group:
            os.killpg(proc.pid, signal.SIGINT)
        else:
            proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:  # the test failed before its signal: let compare clean up
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
    assert proc.returncode == 130, err
    assert "interrupted, cleaning up" in err
    assert compare_namespaces(proc.pid) == set()
    root_links = sh("ip", "-br", "link").stdout
    assert not any(tag in root_links for tag in tags)  # no end left in the root namespace
    for p in kids:
        assert wait_until(partial(exited, p), timeout=5), cmdline(p)
    assert not socket_dir.exists()
