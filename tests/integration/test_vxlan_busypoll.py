"""A busy-polling daemon lets a task that its frame woke on the same CPU run at once, instead of
keeping the CPU until its poll window closes (each hop of a two-daemon tunnel used to wait out
the window).

Shown by order, not by time: the daemon and the receiving process share one CPU at the same
SCHED_FIFO priority, where neither preempts the other. The receiver, once running, reads the
daemon's state. A daemon that polls through its window runs on until it sleeps in epoll, so the
receiver would always find it sleeping (S); one that yields while nothing arrives is found
runnable (R), still inside its window.
"""

import os
import sys
from collections.abc import Iterator

import pytest
from netlab import Lab, Netns
from underlay import IP_A, IP_B, has_carrier, kernel_vxlan, tapveth_end, two_hosts, wait_for

from tapveth.private import PrivateDaemon

pytestmark = pytest.mark.integration

OV_A, OV_B = "10.42.0.1", "10.42.0.2"
PORT = 5301
FRAMES = 5
WINDOW_US = 300_000  # long beside a hop (microseconds): the frame is surely within it
PRIO = 1

RECEIVER = """
import os, socket, sys
cpu, daemon, count = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
os.sched_setaffinity(0, {cpu})
os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(int(sys.argv[4])))
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[5], int(sys.argv[6])))
s.settimeout(20)
print("ready", flush=True)
for _ in range(count):
    s.recv(64)
    with open(f"/proc/{daemon}/stat") as f:  # the first thing done once running
        print(f.read().rsplit(")", 1)[1].split()[0], flush=True)
"""

SENDER = """
import os, socket, sys
os.sched_setaffinity(0, {int(sys.argv[1])})
socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", (sys.argv[2], int(sys.argv[3])))
"""


@pytest.fixture
def daemon() -> Iterator[PrivateDaemon]:
    """A daemon whose poll window is long beside a hop."""
    d = PrivateDaemon(log_level="debug", daemon_args=("--busy-poll", str(WINDOW_US)))
    d.start()
    try:
        yield d
    finally:
        rc = d.stop()
        print("daemon log:\n" + d.final_log)
        assert rc == 0, f"daemon exited with {rc}"


def python(ns: Netns, script: str, *args: object) -> list[str]:
    return ["ip", "netns", "exec", ns.name, sys.executable, "-c", script, *map(str, args)]


def test_a_woken_task_on_the_polling_cpu_runs_within_the_window(
    lab: Lab, daemon: PrivateDaemon
) -> None:
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("needs two CPUs: one shared by daemon and receiver, one for the sender")
    cpu, other = cpus[-1], cpus[0]
    assert daemon.proc is not None
    pid = daemon.proc.pid  # the daemon's main thread, which runs the event loop
    hosts = two_hosts(lab)
    o1 = lab.netns("o1")
    v1 = lab.name("veth1")
    tapveth_end(daemon, o1, v1, hosts.a, IP_B)
    o1.configure(v1, f"{OV_A}/24")
    wait_for("carrier", lambda: has_carrier(o1, v1))
    kernel_vxlan(hosts.b, hosts.ub, "vx42", IP_A, f"{OV_B}/24")
    out = o1.ping(OV_B, count=2)  # resolves the neighbour: later frames go straight
    assert out.returncode == 0, out.stdout + out.stderr

    try:
        os.sched_setaffinity(pid, {cpu})
        os.sched_setscheduler(pid, os.SCHED_FIFO, os.sched_param(PRIO))
    except PermissionError:
        pytest.skip("SCHED_FIFO is not allowed here")
    receiver = lab.spawn(*python(hosts.b, RECEIVER, cpu, pid, FRAMES, PRIO, OV_B, PORT))
    assert receiver.stdout is not None
    assert receiver.stdout.readline().strip() == "ready"
    states = []
    for _ in range(FRAMES):
        lab.spawn(*python(o1, SENDER, other, OV_B, PORT)).wait(20)
        states.append(receiver.stdout.readline().strip())
    assert states == ["R"] * FRAMES, states
