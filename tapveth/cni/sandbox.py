"""The container's side: the container's end of the pair, asked of the daemon, then its
addresses, routes and admin state, set with `ip` inside CNI_NETNS.

The daemon makes an end without `netns` in the namespace of the process that asks. A
namespace under /run/netns is named in the request; one known only by its path is entered
by a forked child (setns) that asks from there, the host's end then named by the plugin's
PID. A child, not a thread: the daemon reads the caller's namespace from its PID
(/proc/PID/ns/net), which follows the main thread, and setns() moves only the calling thread.
"""

import contextlib
import json
import os
from collections.abc import Callable
from typing import Any

from tapveth import control
from tapveth.cni import iproute
from tapveth.cni.iproute import IpError
from tapveth.cni.protocol import CniError, Code
from tapveth.kernel import netns


def run_inside(netns_path: str, fn: Callable[..., Any], *args: Any) -> Any:
    """fn(*args) in a child process inside the namespace at netns_path; its JSON-able return
    value, or the CniError it raised."""
    try:
        ns_fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise CniError(
            Code.UNKNOWN_CONTAINER, f"network namespace {netns_path}: {exc.strerror}"
        ) from None
    try:
        rd, wr = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: never returns
            os.close(rd)
            reply: dict[str, Any]
            try:
                reply = {"ok": _call_inside(ns_fd, netns_path, fn, args)}
            except CniError as exc:
                reply = {"code": exc.code, "msg": exc.msg, "details": exc.details}
            except BaseException as exc:  # anything else: report it, never fall through
                reply = {"code": int(Code.IO_FAILURE), "msg": f"in {netns_path}: {exc}"}
            try:
                data = json.dumps(reply).encode()
                while data:
                    data = data[os.write(wr, data) :]
            finally:
                os._exit(0)
        os.close(wr)
        chunks = []
        with os.fdopen(rd, "rb") as pipe:
            while chunk := pipe.read(1 << 16):
                chunks.append(chunk)
        os.waitpid(pid, 0)
    finally:
        os.close(ns_fd)
    try:
        reply = json.loads(b"".join(chunks))
    except ValueError:
        raise CniError(
            Code.IO_FAILURE, f"the child in {netns_path} died without answering"
        ) from None
    if "ok" in reply:
        return reply["ok"]
    raise CniError(reply["code"], reply["msg"], reply.get("details", ""))


def _call_inside(ns_fd: int, netns_path: str, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    try:
        ctx = netns.entered(ns_fd)
        ctx.__enter__()  # for good: this child exits when fn returns
    except OSError:
        raise CniError(Code.UNKNOWN_CONTAINER, f"{netns_path} is not a network namespace") from None
    return fn(*args)


# -- functions run inside the container's namespace -------------------------------------------


def netns_name(path: str) -> str | None:
    """The `ip netns` name of a namespace path under /run/netns (where podman, containerd and
    CRI-O put theirs), or None for any other path."""
    real = os.path.realpath(path)
    if os.path.dirname(real) == netns.NETNS_DIR:
        return os.path.basename(real)
    return None


def make_pair(
    socket: str, ifname: str, host_ifname: str, host_pid: int, mtu: int | None
) -> list[dict[str, Any]]:
    """Ask the daemon for the pair from inside the container's namespace: this namespace gets
    ifname, the host (named by the plugin's PID) host_ifname."""
    spec = {
        "end": {"name": ifname, "mtu": mtu},
        "peer": {"name": host_ifname, "netns": str(host_pid), "mtu": mtu},
    }
    return request_pair(socket, spec, persist=False)


def make_named_pair(
    socket: str, ifname: str, name: str, host_ifname: str, mtu: int | None, persist: bool
) -> list[dict[str, Any]]:
    """Ask the daemon for the pair from the host: ifname in the namespace named `name`,
    host_ifname here. Namespaces by name let the daemon find a persistent pair again."""
    spec = {
        "end": {"name": ifname, "netns": name, "mtu": mtu},
        "peer": {"name": host_ifname, "mtu": mtu},
    }
    return request_pair(socket, spec, persist)


def request_pair(socket: str, spec: dict[str, Any], persist: bool) -> list[dict[str, Any]]:
    args: dict[str, Any] = {"spec": spec}
    if persist:
        args["persist"] = True
    try:
        reply = control.request(socket, "add", args)
    except control.NoDaemon as exc:
        raise CniError(Code.DAEMON, str(exc)) from None
    except control.ControlError as exc:
        raise CniError(Code.DAEMON, f"the tapveth daemon refused the pair: {exc}") from None
    ends = reply["ends"] if isinstance(reply, dict) else reply
    return list(ends)


def setup(
    socket: str,
    ifname: str,
    host_ifname: str,
    host_pid: int,
    mtu: int | None,
) -> list[dict[str, Any]]:
    """Run in the child inside the container's namespace: ask for the pair from there."""
    return make_pair(socket, ifname, host_ifname, host_pid, mtu)


def configure(
    netns_path: str, ifname: str, addresses: list[str], routes: list[list[str | None]]
) -> dict[str, Any]:
    """Addresses, admin up, then routes ([dst, gw] pairs; gw None: on-link) on ifname in the
    container; what it then looks like. Routes are replaced, not added: in ptp mode the
    subnet goes through the gateway instead of the on-link route the address made."""
    commands = [f"addr add {cidr} dev {ifname}" for cidr in addresses]
    commands.append(f"link set dev {ifname} up")
    for dst, gw in routes:
        commands.append(
            f"route replace {dst} via {gw} dev {ifname}"
            if gw
            else f"route replace {dst} dev {ifname} scope link"
        )
    try:
        iproute.batch(commands, netns=netns_path)
    except IpError as exc:
        raise CniError(Code.IO_FAILURE, f"configuring {ifname} in the container: {exc}") from None
    found = describe(netns_path, ifname)
    if found is None:
        raise CniError(Code.IO_FAILURE, f"{ifname} vanished from the container")
    return found


def delete_tap(netns_path: str, ifname: str) -> bool:
    """Delete the TAP named ifname in the container (a persistent end its daemon let go of)."""
    found = describe(netns_path, ifname)
    if found is None or found["kind"] != "tun":
        return False
    with contextlib.suppress(IpError):
        iproute.ip("link", "del", "dev", ifname, netns=netns_path)
    return True


def describe(netns_path: str, ifname: str) -> dict[str, Any] | None:
    """ifname in the container: kind, MAC, MTU, admin state, global addresses; None if it
    does not exist."""
    try:
        info = iproute.link(ifname, netns=netns_path)
    except IpError as exc:
        raise CniError(Code.UNKNOWN_CONTAINER, f"in {netns_path}: {exc}") from None
    if info is None:
        return None
    return {
        "name": ifname,
        "kind": iproute.kind(info),
        "mac": info.get("address"),
        "mtu": info.get("mtu"),
        "up": "UP" in info.get("flags", []),
        "addresses": iproute.global_addresses(info),
    }
