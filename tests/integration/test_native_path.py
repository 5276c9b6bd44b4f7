"""The daemon relays plain ends on its native thread by default, and through the event loop
with `--fast-path python`: both carry a ping and count it, and only the first has the thread."""

import json
import os

import pytest
from netlab import Lab

from tapveth.private import PrivateDaemon

pytestmark = pytest.mark.integration


def _threads(pid: int) -> list[str]:
    names = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/comm") as f:
            names.append(f.read().strip())
    return names


@pytest.mark.parametrize("fast_path", ["native", "python", None])
def test_fast_paths_relay_and_count(
    lab: Lab, monkeypatch: pytest.MonkeyPatch, fast_path: str | None
) -> None:
    monkeypatch.delenv("TAPVETH_FAST_PATH", raising=False)  # None: the default
    d = PrivateDaemon(daemon_args=() if fast_path is None else ("--fast-path", fast_path))
    d.start()
    try:
        ns1, ns2 = lab.netns("a"), lab.netns("b")
        a, b = lab.name("npa"), lab.name("npb")
        d.cli("add", a, "netns", ns1.name, "peer", "name", b, "netns", ns2.name)
        ns1.configure(a, "10.77.0.1/24")
        ns2.configure(b, "10.77.0.2/24")
        r = ns1.ping("10.77.0.2", count=5, deadline=10)
        assert r.returncode == 0, r.stdout + r.stderr
        assert d.proc is not None
        assert ("tapveth-relay" in _threads(d.proc.pid)) == (fast_path != "python")
        stats = json.loads(d.cli("-j", "stats", a).stdout)
        mine = [s for s in stats if s["ifname"] == a]
        assert mine and mine[0]["tx_packets"] >= 5 and mine[0]["rx_packets"] >= 5, stats
    finally:
        rc = d.stop()
        print(d.final_log)
    assert rc == 0
    assert ("native thread" in d.final_log) == (fast_path != "python")
