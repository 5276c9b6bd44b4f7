"""`persist` in the add request: a pair that outlives its daemon and is re-attached by the
next one on the same socket, and the requests that cannot be persistent."""

import os

import pytest
from netlab import Lab, sh

from tapveth.control import ControlError
from tapveth.private import PrivateDaemon

pytestmark = pytest.mark.integration


def add(
    daemon: PrivateDaemon, end: dict[str, object], peer: dict[str, object], **kw: object
) -> object:
    return daemon.request("add", {"spec": {"end": end, "peer": peer}, **kw})


def test_persistent_pair_is_reattached_by_the_next_daemon(lab: Lab, daemon: PrivateDaemon) -> None:
    ns = lab.netns("p")
    a, b = lab.name("pa"), lab.name("pb")
    lab.root_links.append(b)
    add(daemon, {"name": a, "netns": ns.name}, {"name": b}, persist=True)
    assert daemon.stop() == 0
    os.makedirs(daemon.dir, exist_ok=True)
    assert ns.has_link(a) and sh("ip", "link", "show", b, check=False).returncode == 0
    daemon.start()
    ends = daemon.request("show")
    assert {e["ifname"] for e in ends} == {a, b}
    assert "re-attached" in daemon.log()
    daemon.request("del", {"name": b})
    assert not os.path.exists(daemon.socket + ".persist")
    assert not ns.has_link(a)


def test_what_cannot_persist(lab: Lab, daemon: PrivateDaemon) -> None:
    ns = lab.netns("q")
    proc = lab.spawn("sleep", "60")
    a, b = lab.name("qa"), lab.name("qb")
    with pytest.raises(ControlError, match="persist must be true or false"):
        add(daemon, {"name": a, "netns": ns.name}, {"name": b}, persist="yes")
    with pytest.raises(ControlError, match="given by PID"):
        add(daemon, {"name": a, "netns": str(proc.pid)}, {"name": b}, persist=True)
    assert daemon.request("show") == [] and not os.path.exists(daemon.socket + ".persist")
