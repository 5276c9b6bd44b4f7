"""`tapveth demo`: the classic veth experiment, self-contained, each step printed as a user
would type it. Its namespaces, names and daemon are its own and are removed even on Ctrl-C."""

import secrets
import shlex
import signal
import subprocess
import sys
from types import FrameType

from tapveth.private import PrivateDaemon


def _step(cmd: list[str], check: bool = True) -> int:
    print(f"$ {shlex.join(cmd)}", flush=True)
    proc = subprocess.run(cmd, stdout=sys.stdout, stderr=sys.stderr, timeout=60)
    if check and proc.returncode != 0:
        raise RuntimeError(f"step failed with status {proc.returncode}: {shlex.join(cmd)}")
    return proc.returncode


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run_demo() -> int:
    """Run the experiment; 0 if the ping got through with no loss."""
    tag = secrets.token_hex(2)
    ns1, ns2 = f"tvdemo-{tag}-1", f"tvdemo-{tag}-2"
    v1, v2 = f"veth1-{tag}", f"veth2-{tag}"
    signal.signal(signal.SIGTERM, _terminate)
    daemon = PrivateDaemon()
    made: list[str] = []
    try:
        print("# The classic veth experiment; only the line that makes the pair differs.")
        for ns in (ns1, ns2):
            _step(["ip", "netns", "add", ns])
            made.append(ns)
        print(f"$ tapveth daemon &        # private daemon on {daemon.socket}", flush=True)
        daemon.start()
        tv = [sys.executable, "-m", "tapveth", "--socket", daemon.socket]
        print(f"# kernel veth would be: ip link add {v1} type veth peer name {v2}")
        print(f"$ tapveth add {v1} peer name {v2}", flush=True)
        if subprocess.run([*tv, "add", v1, "peer", "name", v2], timeout=60).returncode:
            raise RuntimeError("tapveth add failed")
        _step(["ip", "link", "set", v1, "netns", ns1])
        _step(["ip", "link", "set", v2, "netns", ns2])
        _step(["ip", "netns", "exec", ns1, "ip", "addr", "add", "10.0.0.1/24", "dev", v1])
        _step(["ip", "netns", "exec", ns1, "ip", "link", "set", v1, "up"])
        _step(["ip", "netns", "exec", ns2, "ip", "addr", "add", "10.0.0.2/24", "dev", v2])
        _step(["ip", "netns", "exec", ns2, "ip", "link", "set", v2, "up"])
        _step(["ip", "netns", "exec", ns1, "ip", "-br", "link", "show", v1])
        rc = _step(
            ["ip", "netns", "exec", ns1, "ping", "-c", "4", "-i", "0.2", "-W", "2", "10.0.0.2"],
            check=False,
        )
        print("$ tapveth show", flush=True)
        subprocess.run([*tv, "show"], timeout=60)
        print("$ tapveth stats", flush=True)
        subprocess.run([*tv, "stats"], timeout=60)
        print("# ping " + ("worked: 0% loss" if rc == 0 else "FAILED"))
        return 0 if rc == 0 else 1
    except KeyboardInterrupt:
        print("\n# interrupted: cleaning up", file=sys.stderr)
        return 130
    except RuntimeError as exc:
        print(f"tapveth demo: {exc}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not stop cleanup
        daemon.stop()
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], timeout=30, check=False)
        print(f"# cleaned up: namespaces {' '.join(made) or '-'}, pair and daemon removed")
        signal.signal(signal.SIGINT, signal.default_int_handler)
