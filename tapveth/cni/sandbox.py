"""The container's side: a forked child enters CNI_NETNS (setns) and works from there.

The daemon makes an end without `netns` in the namespace of the process that asks, so the
child asks for the pair: the container's end lands in CNI_NETNS under CNI_IFNAME, and the
host's end in the plugin's own namespace (named by the plugin's PID). The same child then
gives the container's end its addresses, routes and admin state. A child, not a thread: the
daemon reads the caller's namespace from its PID (/proc/PID/ns/net), which follows the main
thread, and setns() moves only the calling thread."""

import ipaddress
import json
import os
from collections.abc import Callable
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from tapveth import control
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
    addresses: list[str],
    routes: list[list[str | None]],
    ptp: bool,
) -> dict[str, Any]:
    """The pair, then the container's end configured: one child for both."""
    make_pair(socket, ifname, host_ifname, host_pid, mtu)
    return configure(ifname, addresses, routes, ptp)


def configure(
    ifname: str, addresses: list[str], routes: list[list[str | None]], ptp: bool
) -> dict[str, Any]:
    """Addresses, admin up, then routes ([dst, gw] pairs; gw None: on-link) on ifname here.
    ptp: the gateway is reached over a host route, and the subnet through the gateway."""
    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=ifname)
        if not found:
            raise CniError(Code.IO_FAILURE, f"{ifname} is not in the container's namespace")
        index = found[0]
        try:
            for cidr in addresses:
                iface = ipaddress.ip_interface(cidr)
                ipr.addr(
                    "add", index=index, address=str(iface.ip), prefixlen=iface.network.prefixlen
                )
            ipr.link("set", index=index, state="up")
            for dst, gw in routes:
                net = ipaddress.ip_network(dst or "", strict=False)
                kw: dict[str, Any] = {"oif": index, "dst_len": net.prefixlen}
                if net.prefixlen:
                    kw["dst"] = str(net.network_address)
                kw["family"] = 10 if net.version == 6 else 2
                if gw:
                    kw["gateway"] = gw
                else:
                    kw["scope"] = 253  # link: the destination is on this wire
                # replace: in ptp mode the subnet's route goes through the gateway instead
                # of the on-link route the kernel made with the address.
                ipr.route("replace", **kw)
        except NetlinkError as exc:
            raise CniError(
                Code.IO_FAILURE, f"configuring {ifname} in the container: {os.strerror(exc.code)}"
            ) from None
        return describe(ifname) or {}


def delete_tap(ifname: str) -> bool:
    """Delete the TAP named ifname here (a persistent end its daemon let go of)."""
    with IPRoute() as ipr:
        try:
            msg = ipr.link("get", ifname=ifname)[0]
        except NetlinkError:
            return False
        info = msg.get_attr("IFLA_LINKINFO")
        if not info or info.get_attr("IFLA_INFO_KIND") != "tun":
            return False
        ipr.link("del", index=msg["index"])
        return True


def describe(ifname: str) -> dict[str, Any] | None:
    """ifname here: kind, MAC, MTU, admin state, addresses; None if it does not exist."""
    with IPRoute() as ipr:
        try:
            msg = ipr.link("get", ifname=ifname)[0]
        except NetlinkError:
            return None
        info = msg.get_attr("IFLA_LINKINFO")
        addrs = [
            f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}"
            for a in ipr.get_addr(index=msg["index"])
            if a["scope"] == 0  # global: not the link-local one the kernel adds
        ]
        master = msg.get_attr("IFLA_MASTER")
        return {
            "name": ifname,
            "index": msg["index"],
            "kind": info.get_attr("IFLA_INFO_KIND") if info else None,
            "mac": msg.get_attr("IFLA_ADDRESS"),
            "mtu": msg.get_attr("IFLA_MTU"),
            "up": bool(msg["flags"] & 1),
            "addresses": addrs,
            "master": master,
        }
