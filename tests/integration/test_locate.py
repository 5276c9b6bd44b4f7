"""Looking a TAP up through its fd while it is renamed and moved back to back: the lookup
never says it is gone, and every answer is a place it really was; and a pair whose end is
moved in a loop with no pause is still whole."""

import os
import subprocess
import threading

import pytest
from backends import lower_up, wait_for
from netlab import Lab

from tapveth.kernel import netns
from tapveth.kernel.netlink import Netlink, Unsettled
from tapveth.kernel.tap import Tap
from tapveth.private import PrivateDaemon

pytestmark = pytest.mark.integration

ROUNDS = 100  # each: a move with a rename, a rename back, and a plain rename there and back


def test_locate_never_loses_a_tap_that_moves_and_is_renamed(lab: Lab) -> None:
    x, y = lab.netns("x"), lab.netns("y")
    names = [lab.name("lka"), lab.name("lkb")]
    inodes = {os.stat(netns.path_of(ns.name)).st_ino: ns for ns in (x, y)}
    nl = Netlink()
    tap = Tap(lab.name("lkt"))
    try:
        fd = netns.open_netns(x.name)
        try:
            nl.place(tap, names[0], fd, None, None)
        finally:
            os.close(fd)
        a, b = names
        script = "\n".join(
            [
                f"for i in $(seq {ROUNDS}); do",
                f"  ip -n {x.name} link set dev {a} netns {y.name} name {b}",
                f"  ip -n {y.name} link set dev {b} name {a}",
                f"  ip -n {y.name} link set dev {a} netns {x.name}",
                f"  ip -n {x.name} -batch - <<EOF",
                f"link set dev {a} name {b}",
                f"link set dev {b} name {a}",
                "EOF",
                "done",
            ]
        )
        mover = subprocess.Popen(["sh", "-ec", script], stderr=subprocess.PIPE, text=True)
        calls = unsettled = 0
        try:
            while mover.poll() is None:
                calls += 1
                try:
                    loc = nl.locate(tap)
                except Unsettled:
                    unsettled += 1
                    continue
                assert loc is not None, f"lookup {calls} took a moving TAP for deleted"
                assert loc.name in names and loc.ns_inode in inodes, loc
        finally:
            _, err = mover.communicate(timeout=300)
        assert mover.returncode == 0, err
        loc = nl.locate(tap)
        assert loc is not None
        assert (loc.name, inodes[loc.ns_inode]) == (a, x)
        assert x.link(a)["ifindex"] == loc.index
        print(f"{calls} lookups while moving, {unsettled} unsettled, none lost")
    finally:
        tap.close()
        nl.close()


def test_pair_survives_a_loop_of_moves_with_no_pause(lab: Lab, daemon: PrivateDaemon) -> None:
    """The case first seen: one end moved between two namespaces 20 times by a shell loop
    with no pause, then given an address and set up: the pair follows and carries a ping."""
    x, y, peer = lab.netns("x"), lab.netns("y"), lab.netns("p")
    a, b = lab.name("lpa"), lab.name("lpb")
    daemon.cli("add", a, "netns", x.name, "peer", "name", b, "netns", peer.name)
    script = f"""
for i in $(seq 10); do
  ip -n {x.name} link set dev {a} netns {y.name}
  ip -n {y.name} link set dev {a} netns {x.name}
done
ip -n {x.name} addr add 10.67.0.1/24 dev {a}
ip -n {x.name} link set dev {a} up
ip -n {peer.name} addr add 10.67.0.2/24 dev {b}
ip -n {peer.name} link set dev {b} up
"""
    subprocess.run(["sh", "-ec", script], check=True, timeout=120)
    wait_for("carrier", lambda: lower_up(x, a) and lower_up(peer, b))
    r = x.ping("10.67.0.2", count=2)
    assert r.returncode == 0, r.stdout
    shown = {e["ifname"]: e["netns"] for e in daemon.request("show")}
    assert shown == {a: x.name, b: peer.name}


def test_moves_while_twenty_clients_add_and_delete_pairs(lab: Lab, daemon: PrivateDaemon) -> None:
    """Moves 20 ms apart while 20 clients add and delete other pairs (their requests queue
    in front of the lookups): the moved pair still follows every move."""
    x, y, peer, other = lab.netns("x"), lab.netns("y"), lab.netns("p"), lab.netns("o")
    a, b = lab.name("cma"), lab.name("cmb")
    daemon.cli("add", a, "netns", x.name, "peer", "name", b, "netns", peer.name)
    failures: list[BaseException] = []

    def client(i: int) -> None:
        try:
            for _ in range(3):
                end = {"name": f"c{i:02d}a{lab.tag}", "netns": other.name}
                spec = {"end": end, "peer": {"name": f"c{i:02d}b{lab.tag}", "netns": other.name}}
                daemon.request("add", {"spec": spec})
                daemon.request("del", {"name": end["name"], "netns": other.name})
        except BaseException as exc:  # reported by the main thread
            failures.append(exc)

    clients = [threading.Thread(target=client, args=(i,)) for i in range(20)]
    for t in clients:
        t.start()
    moves = 15
    script = "\n".join(
        f"ip -n {(x, y)[i % 2].name} link set dev {a} netns {(y, x)[i % 2].name}; sleep 0.02"
        for i in range(moves)
    )
    try:
        subprocess.run(["sh", "-ec", script], check=True, timeout=120)
    finally:
        for t in clients:
            t.join(120)
    assert not failures, failures
    here = (x, y)[moves % 2]
    here.ip("addr", "add", "10.68.0.1/24", "dev", a)
    here.ip("link", "set", a, "up")
    peer.ip("addr", "add", "10.68.0.2/24", "dev", b)
    peer.ip("link", "set", b, "up")
    wait_for("carrier", lambda: lower_up(here, a) and lower_up(peer, b))
    r = here.ping("10.68.0.2", count=2)
    assert r.returncode == 0, r.stdout
    shown = {e["ifname"]: e["netns"] for e in daemon.request("show")}
    assert shown == {a: here.name, b: peer.name}
