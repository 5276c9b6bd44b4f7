"""Bad input, hostile frames and faults: nothing crashes, nothing leaks, nothing is left behind."""

import contextlib
import grp
import json
import os
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hostile import MARK
from netlab import ENDPOINTS, Lab, Netns, Stream, finish, sh

from tapveth.private import PrivateDaemon

pytestmark = pytest.mark.integration
HOSTILE = str(Path(__file__).parents[1] / "hostile.py")


def links_everywhere(lab: Lab, pid: int) -> set[str]:
    """Every interface in the test's namespaces, those of the root namespace a test here could
    have made, and every TAP the daemon holds open (other users of the machine make and delete
    theirs meanwhile, scratch-named ones included)."""
    ours = {w.split("@")[0] for words, _ in BAD_INPUT for w in words} | {"fresh" + lab.tag}
    found = {
        f"root:{name}"
        for ln in sh("ip", "-br", "link").stdout.splitlines()
        if (name := ln.split()[0].split("@")[0]) in ours
    }
    for fd in os.listdir(f"/proc/{pid}/fdinfo"):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/fdinfo/{fd}") as f:
            found |= {f"tap:{ln.split()[1]}" for ln in f if ln.startswith("iff:")}
    for ns in lab.namespaces:
        r = sh("ip", "-n", ns.name, "-br", "link", check=False)
        found |= {f"{ns.name}:{ln.split()[0]}" for ln in r.stdout.splitlines()}
    return found


def make_pair(lab: Lab, d: PrivateDaemon, net: str = "10.0.0") -> tuple[Netns, Netns, str, str]:
    a, b = lab.netns(), lab.netns()
    x, y = lab.name(f"h{len(lab.namespaces)}a"), lab.name(f"h{len(lab.namespaces)}b")
    d.cli("add", x, "netns", a.name, "peer", "name", y, "netns", b.name)
    a.configure(x, f"{net}.1/24")
    b.configure(y, f"{net}.2/24")
    return a, b, x, y


BAD_INPUT = [
    (["add", "abcdefghijklmnop", "peer", "name", "b"], "longer than 15 bytes"),
    (["add", "", "peer", "name", "b"], "interface name is empty"),
    (["add", "a/b", "peer", "name", "b"], "contains '/'"),
    (["add", "a b", "peer", "name", "b"], "contains ' '"),
    (["add", "a%d", "peer", "name", "b"], "contains '%'"),
    (["add", "TAKEN", "netns", "NS", "peer", "name", "FRESH", "netns", "NS2"], "already taken"),
    (["add", "same", "peer", "name", "same"], "is the same as the name"),
    (["add", "a", "netns", "no-such-ns-x9", "peer", "name", "b"], "does not exist"),
    (["add", "a", "mtu", "0", "peer", "name", "b"], "out of range"),
    (["add", "a", "mtu", "67", "peer", "name", "b"], "out of range"),
    (["add", "a", "mtu", "65522", "peer", "name", "b"], "out of range"),
    (["add", "a", "mtu", "lots", "peer", "name", "b"], "is not a number"),
    (["add", "a", "mtu", "²", "peer", "name", "b"], "is not a number"),
    (["add", "a", "mtu", "\u0661\u0665\u0660\u0660", "peer", "name", "b"], "is not a number"),
    (["add", "a", "mtu", "9" * 5000, "peer", "name", "b"], "out of range"),
    (["add", "a" * 5000, "peer", "name", "b"], "longer than 15 bytes"),
    (["add", "a", "netns", "n" * 300, "peer", "name", "b"], "cannot open namespace"),
    (["add", "a", "address", "01:00:5e:00:00:01", "peer", "name", "b"], "multicast"),
    (["add", "a", "address", "00:00:00:00:00:00", "peer", "name", "b"], "all zeros"),
    (["add", "a", "address", "00:11:22", "peer", "name", "b"], "malformed"),
    (["add", "a", "colour", "red", "peer", "name", "b"], "unknown word 'colour'"),
    (["add"], "missing 'peer name PEER'"),
    (["add", "a", "peer"], "missing peer interface name"),
    (["del"], "which pair?"),
    (["del", "nosuchend"], "no tapveth pair has an end named"),
    (["show", "a", "b"], "unknown word"),
]


def test_bad_input_table(lab: Lab, daemon: PrivateDaemon) -> None:
    a, b, taken, _ = make_pair(lab, daemon)
    pid = daemon.request("ping")["pid"]
    before = links_everywhere(lab, pid)
    for words, message in BAD_INPUT:
        words = [
            w.replace("NS2", b.name)
            .replace("NS", a.name)
            .replace("TAKEN", taken)
            .replace("FRESH", "fresh" + lab.tag)
            for w in words
        ]
        r = daemon.cli(*words, check=False)
        assert r.returncode == 2, (words, r.stdout, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], (words, r.stderr)
        assert links_everywhere(lab, pid) == before, words  # nothing half made
    assert daemon.request("ping")["pairs"] == 1


def test_control_socket_abuse(lab: Lab, daemon: PrivateDaemon) -> None:
    make_pair(lab, daemon)
    silent = socket.socket(socket.AF_UNIX)
    silent.connect(daemon.socket)
    silent.sendall(b'{"op": "sh')  # half a request, then silence
    answers = []
    for payload in (
        b"\x00\xff garbage\n",
        b"[]\n",
        b'{"op": "bogus"}\n',
        b"y" * (200 * 1024) + b"\n",
    ):
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(daemon.socket)
            try:
                s.sendall(payload)
                answers.append(s.recv(4096))
            except (BrokenPipeError, ConnectionResetError):
                answers.append(b"closed")
    assert all(b'"ok": false' in x or x == b"closed" for x in answers), answers
    many = [socket.socket(socket.AF_UNIX) for _ in range(200)]
    try:
        for s in many:
            s.settimeout(10)
            s.connect(daemon.socket)
            s.sendall(b'{"op": "ping"}\n')
        replies = [json.loads(s.recv(4096)) for s in many]
    finally:
        for s in many:
            s.close()
    assert all(r["ok"] for r in replies)
    assert daemon.request("show")  # still serving everyone, the silent client included
    silent.close()


def ask_as(path: str, uid: int, gid: int) -> dict[str, object]:
    """One request over the control socket from a child running as uid/gid (SO_PEERCRED
    records who connected)."""
    rfd, wfd = os.pipe()
    child = os.fork()
    if child == 0:
        try:
            os.close(rfd)
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(10)
                s.connect(path)
                s.sendall(b'{"op": "ping"}\n')
                os.write(wfd, s.recv(4096))
        finally:
            os._exit(0)
    os.close(wfd)
    with os.fdopen(rfd, "rb") as r:
        data = r.read()
    os.waitpid(child, 0)
    reply: dict[str, object] = json.loads(data)
    return reply


def test_non_root_is_refused(lab: Lab, daemon: PrivateDaemon) -> None:
    os.chmod(daemon.socket, 0o666)  # past the file mode: the daemon itself must refuse
    os.chmod(os.path.dirname(daemon.socket), 0o711)
    reply = ask_as(daemon.socket, 65534, 65534)
    assert reply == {"ok": False, "error": "permission denied: only root may control tapveth"}


def test_a_configured_group_may_control() -> None:
    group = grp.getgrgid(65534).gr_name  # nogroup: exists on every Debian system
    d = PrivateDaemon(daemon_args=("--group", group)).start()
    try:
        st = os.stat(d.socket)
        assert (st.st_mode & 0o777, st.st_gid) == (0o660, 65534)
        os.chmod(os.path.dirname(d.socket), 0o711)
        assert ask_as(d.socket, 65534, 65534)["ok"] is True  # a member
        os.chmod(d.socket, 0o666)
        refused = ask_as(d.socket, 65534, 1)  # not a member
        assert refused["ok"] is False
        assert f"only root or members of group {group}" in str(refused["error"])
    finally:
        d.stop()


def test_only_netlink_control_and_tunnel_sockets(lab: Lab, daemon: PrivateDaemon) -> None:
    """In its own namespace the daemon has netlink and control sockets only; UDP sockets exist
    only for a vxlan end, in that end's underlay namespace: one bound to dstport, the rest
    connected to remote:dstport (the outer source ports). No TCP, raw or packet socket."""
    make_pair(lab, daemon)
    underlay = lab.netns("u")
    underlay.configure("lo", "192.0.2.1/24")  # the remote is reached through it
    daemon.cli(
        "add", lab.name("vx"), "netns", lab.netns().name, "peer", "vxlan", "id", "7",
        "remote", "192.0.2.2", "dstport", "4789", "underlay-netns", underlay.name,
    )  # fmt: skip
    pid = daemon.request("ping")["pid"]
    out = sh("ss", "-a", "-n", "-p", "-A", "all").stdout
    mine = [ln.split()[0] for ln in out.splitlines() if f"pid={pid}," in ln]
    assert mine and set(mine) <= {"u_str", "nl"}, mine
    out = underlay.run("ss", "-a", "-n", "-p", "-A", "all").stdout
    there = [ln.split() for ln in out.splitlines() if f"pid={pid}," in ln]
    assert {f[0] for f in there} == {"udp"}, there
    bound = [f for f in there if f[1] == "UNCONN"]
    assert [f[4] for f in bound] == ["0.0.0.0:4789"], there
    senders = [f for f in there if f[1] != "UNCONN"]
    assert senders and all(f[1] == "ESTAB" and f[5] == "192.0.2.2:4789" for f in senders), there


def test_metrics_adds_exactly_one_tcp_listener(lab: Lab) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    d = PrivateDaemon(daemon_args=("--metrics", f"127.0.0.1:{port}")).start()
    try:
        make_pair(lab, d)
        pid = d.request("ping")["pid"]
        out = sh("ss", "-a", "-n", "-p", "-A", "all").stdout
        mine = [ln.split() for ln in out.splitlines() if f"pid={pid}," in ln]
        others = [f[0] for f in mine if f[0] not in ("u_str", "nl")]
        assert others == ["tcp"], mine
        tcp = next(f for f in mine if f[0] == "tcp")
        assert tcp[1] == "LISTEN" and tcp[4] == f"127.0.0.1:{port}", tcp
    finally:
        d.stop()


def test_hostile_frames(lab: Lab, daemon: PrivateDaemon) -> None:
    a, b, x, y = make_pair(lab, daemon, "10.0.0")
    witness = make_pair(lab, daemon, "10.0.0")  # another pair, same addresses
    a.ip("link", "set", x, "mtu", "9000")  # lets A send what B's MTU refuses
    mark = ("--mark", MARK.decode())
    sniffer = witness[1].spawn_traffic(
        "sniff", "--ifname", witness[3], "--timeout", "8", "--count", "100000", *mark
    )
    target = b.spawn_traffic("sniff", "--ifname", y, "--timeout", "8", "--count", "1000000", *mark)
    outside = lab.spawn(
        *ENDPOINTS,
        "sniff",
        "--ifname",
        "",
        "--timeout",
        "8",
        "--count",
        "1000000",
        *mark,
    )
    assert outside.stdout is not None and outside.stdout.readline().startswith("{")
    pinger = lab.spawn(
        "ip", "netns", "exec", a.name, "ping", "-c", "60", "-i", "0.1", "-w", "30", "10.0.0.2"
    )
    sent = json.loads(
        a.run(
            sys.executable,
            HOSTILE,
            "--ifname",
            x,
            "--dst",
            b.link(y)["address"],
            "--count",
            "500",
            timeout=120,
        ).stdout
    )
    assert sent["random"] > 0 and sent["broadcast_storm"] > 0
    out, _ = pinger.communicate(timeout=60)
    assert pinger.returncode == 0 and " 0% packet loss" in out, out  # good traffic kept going
    assert daemon.request("ping")["pairs"] == 2  # alive
    seen = finish(sniffer)
    witness_macs = {witness[0].link(witness[2])["address"], witness[1].link(witness[3])["address"]}
    assert set(seen["by_src"]) <= witness_macs, seen["by_src"]  # nothing crossed pairs
    assert seen["marked"] == 0
    assert finish(outside)["marked"] == 0  # nor reached any interface of the root namespace
    assert finish(target)["marked"] > 0  # the marker is seen where the frames do go
    # Every frame the kernel sent on x was read and accounted for: forwarded or dropped with a
    # reason. The kernel's count is read between two equal readings of the relay's, since A's
    # kernel may send a frame of its own (IPv6 neighbour discovery) at any moment.
    deadline = time.monotonic() + 10
    while True:
        before = {e["ifname"]: e for e in daemon.request("stats")}[x]
        kernel_a = a.link(x)["stats64"]["tx"]["packets"]
        stats = {e["ifname"]: e for e in daemon.request("stats")}
        relay = stats[x]["tx_packets"] + sum(stats[x]["drops"].values())
        if before == stats[x] and kernel_a == relay:
            break
        assert time.monotonic() < deadline, (kernel_a, relay, stats[x])
        time.sleep(0.1)
    assert stats[x]["drops"].get("mtu", 0) >= 1


def test_kill_9_removes_plain_pairs(lab: Lab) -> None:
    d = PrivateDaemon().start()
    try:
        a, b, x, y = make_pair(lab, d)
        assert d.proc is not None
        d.proc.kill()
        d.proc.wait(10)
        deadline = time.monotonic() + 5
        while a.has_link(x) or b.has_link(y):
            assert time.monotonic() < deadline, "ends outlived a killed daemon"
            time.sleep(0.05)
    finally:
        d.stop()


def test_stalled_reader_overflows_the_ring_and_recovers(lab: Lab, daemon: PrivateDaemon) -> None:
    a, _b, x, _y = make_pair(lab, daemon)
    pid = daemon.request("ping")["pid"]
    assert a.ping("10.0.0.2", count=1).returncode == 0  # neighbour resolved before the stall
    os.kill(pid, 19)  # SIGSTOP: the relay stops reading while A keeps sending
    try:
        a.run(
            sys.executable,
            "-c",
            "import socket\n"
            "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            "for _ in range(3000): s.sendto(b'x' * 100, ('10.0.0.2', 9))",
            timeout=60,
        )
    finally:
        os.kill(pid, 18)  # SIGCONT
    stats = {e["ifname"]: e for e in daemon.request("stats")}
    assert stats[x]["tx_dropped"] > 0  # the ring overflowed: counted, as veth counts drops
    r = a.ping("10.0.0.2", count=3)
    assert r.returncode == 0, r.stdout
    assert daemon.request("ping")["tasks"] == 0


def test_mtu_changes_mid_stream_and_1000_flaps(lab: Lab, daemon: PrivateDaemon) -> None:
    a, b, x, y = make_pair(lab, daemon)
    nbytes = 30 << 20
    stream = Stream(a, b, "10.0.0.2", nbytes, port=5801, rate=nbytes / 3)
    for mtu in ("9000", "4000", "1500", "65000", "1500"):
        a.ip("link", "set", x, "mtu", mtu)
        b.ip("link", "set", y, "mtu", mtu)
        time.sleep(0.3)
    stream.finish(90)
    batch = "".join(f"link set {y} down\nlink set {y} up\n" for _ in range(500))
    subprocess.run(
        ["ip", "-n", b.name, "-batch", "-"], input=batch, text=True, check=True, timeout=120
    )
    # The daemon may still be working through the flaps' events, and the kernel activates the
    # queue some time after the last carrier change: ping until it answers.
    deadline = time.monotonic() + 20
    while (r := a.ping("10.0.0.2", count=1)).returncode != 0:
        assert time.monotonic() < deadline, r.stdout
    info = daemon.request("ping")
    assert info["pairs"] == 1 and info["tasks"] == 0


def test_out_of_file_descriptors(lab: Lab) -> None:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (40, 40))

    d = PrivateDaemon()
    d.start_hook = limit
    d.start()
    try:
        made, error = [], ""
        for i in range(30):
            ns1, ns2 = lab.netns(), lab.netns()
            r = d.cli(
                "add",
                f"fd{i}a",
                "netns",
                ns1.name,
                "peer",
                "name",
                f"fd{i}b",
                "netns",
                ns2.name,
                check=False,
            )
            if r.returncode != 0:
                error = r.stderr
                break
            made.append((ns1, ns2, i))
        assert made and error, "the fd limit was never reached"
        assert r.returncode == 2 and len(error.strip().splitlines()) == 1
        assert "too many open files" in error.lower(), error
        ns1, ns2, i = made[0]
        ns1.configure(f"fd{i}a", "10.0.0.1/24")
        ns2.configure(f"fd{i}b", "10.0.0.2/24")
        assert ns1.ping("10.0.0.2").returncode == 0  # the others untouched
        tmp = [ln for ln in sh("ip", "-br", "link").stdout.splitlines() if ln.startswith("tvtmp")]
        assert tmp == []
    finally:
        d.stop()
