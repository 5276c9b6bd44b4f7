"""tapveth-cni: the CNI plugin's commands (ADD, DEL, CHECK, VERSION, STATUS, GC) on tapveth
pairs, and its entry point. The runtime gives the command and the container in CNI_*
variables and the network configuration on stdin; the result or the error goes to stdout."""

import contextlib
import json
import os
import sys
import traceback
from collections.abc import Callable, Mapping
from typing import Any, TextIO

from tapveth import control
from tapveth.cni import delegate, hostside, sandbox, state
from tapveth.cni.protocol import (
    LATEST,
    SUPPORTED_VERSIONS,
    CniError,
    Code,
    Env,
    IpamResult,
    Link,
    NetConf,
    Route,
    build_result,
    default_routes,
    expected_from,
    host_ifname,
    parse_config,
    parse_env,
    parse_ipam_result,
    require_command_version,
    route_plan,
    version_info,
)


def socket_of(conf: NetConf) -> str:
    """The daemon's socket: the config's `socket`, else $TAPVETH_SOCKET, else the default."""
    return control.socket_path(conf.socket)


def ensure_daemon(sock: str, code: int = Code.DAEMON) -> None:
    try:
        control.request(sock, "ping", timeout=10)
    except control.NoDaemon:
        raise CniError(
            code,
            f"no tapveth daemon is listening on {sock}: start one "
            "('systemctl start tapveth' or 'tapveth daemon &'), or name its socket with "
            '"socket" in the network configuration',
        ) from None
    except control.ControlError as exc:
        raise CniError(code, f"the tapveth daemon on {sock} does not answer: {exc}") from None


def _netns_label(netns_path: str) -> str:
    """How the daemon names the container's namespace: its `ip netns` name, else its inode."""
    return sandbox.netns_name(netns_path) or f"inode:{os.stat(netns_path).st_ino}"


def impair(sock: str, conf: NetConf, env: Env) -> None:
    """`netem`: the impairments of what the container sends, on its end (as `tc qdisc add dev
    eth0 root netem ...` inside the container would)."""
    args = {
        "action": "replace",
        "name": env.ifname,
        "netns": _netns_label(env.netns),
        "netem": conf.netem,
    }
    try:
        control.request(sock, "qdisc", args)
    except control.ControlError as exc:
        raise CniError(Code.DAEMON, f"the daemon refused netem: {exc}") from None


def check_impaired(sock: str, conf: NetConf, env: Env) -> None:
    args = {"action": "show", "name": env.ifname, "netns": _netns_label(env.netns)}
    try:
        shown = control.request(sock, "qdisc", args)
    except control.ControlError as exc:
        raise CniError(Code.DAEMON, f"qdisc show: {exc}") from None
    if not shown or shown[0].get("netem") != conf.netem:
        raise CniError(
            Code.CHECK_FAILED, f"{env.ifname}'s impairments are not the configured netem"
        )


def _ipam(conf: NetConf, command: str, env: Env, environ: Mapping[str, str]) -> Any:
    assert conf.ipam is not None
    return delegate.run(conf.ipam["type"], command, conf.raw, environ, env.path)


def _pair_ends(sock: str) -> list[dict[str, Any]] | None:
    """Every end the daemon owns; None if no daemon answers."""
    try:
        ends = control.request(sock, "show", timeout=30)
    except control.NoDaemon:
        return None
    except control.ControlError as exc:
        raise CniError(Code.DAEMON, f"the tapveth daemon on {sock}: {exc}") from None
    return list(ends)


# -- ADD ------------------------------------------------------------------------------------


def cmd_add(env: Env, conf: NetConf, environ: Mapping[str, str]) -> dict[str, Any]:
    sock = socket_of(conf)
    ensure_daemon(sock)
    if not os.path.exists(env.netns):
        raise CniError(Code.UNKNOWN_CONTAINER, f"network namespace {env.netns} does not exist")
    host_if = host_ifname(conf.name, env.container_id, env.ifname)
    ptp = conf.mode == "ptp"
    ipam = IpamResult()
    undo: list[Callable[[], None]] = []
    try:
        if conf.ipam is not None:
            undo.append(lambda: _ipam(conf, "DEL", env, environ))
            ipam = parse_ipam_result(_ipam(conf, "ADD", env, environ))
            if ptp and not any(ip.gateway for ip in ipam.ips):
                raise CniError(Code.INVALID_CONFIG, 'mode "ptp" needs a gateway from the IPAM')
        undo.append(lambda: _delete_pair(sock, host_if, env.netns, env.ifname))
        addresses = [str(ip.address) for ip in ipam.ips]
        routes = route_plan(ipam, conf.is_default_gateway, ptp)
        name = sandbox.netns_name(env.netns)
        if name is not None:
            ends = sandbox.make_named_pair(sock, env.ifname, name, host_if, conf.mtu, conf.persist)
        else:  # a namespace known only by its path: the pair is asked for from inside it
            ends = sandbox.run_inside(
                env.netns, sandbox.setup, sock, env.ifname, host_if, os.getpid(), conf.mtu
            )
        host_mac = next(e["address"] for e in ends if e["ifname"] == host_if)
        container = sandbox.configure(env.netns, env.ifname, addresses, routes)
        if conf.netem is not None:
            impair(sock, conf, env)
        links: list[Link] = []
        with hostside.locked():
            undo.append(lambda: _unmasquerade(conf, env.container_id, env.ifname))
            if ptp:
                hostside.ptp_routes(host_if, ipam.ips)
                hostside.enable_forwarding(ipam.ips)
            else:
                mac = hostside.bridge_port(
                    conf.bridge, conf.mtu, host_if, ipam.ips, conf.is_gateway
                )
                links.append(Link(conf.bridge, mac))
                if conf.is_gateway:
                    hostside.enable_forwarding(ipam.ips)
            if conf.ip_masq:
                hostside.masquerade_add(conf.name, env.container_id, env.ifname, ipam.ips)
        links.append(Link(host_if, host_mac))
        links.append(Link(env.ifname, container["mac"], env.netns, container["mtu"]))
        state.save(
            conf.data_dir,
            conf.name,
            {
                "containerID": env.container_id,
                "ifname": env.ifname,
                "netns": env.netns,
                "host": host_if,
                "mode": conf.mode,
            },
        )
    except BaseException:
        for step in reversed(undo):
            with contextlib.suppress(Exception):
                step()
        raise
    extra: tuple[Route, ...] = ()
    if conf.is_default_gateway:
        have = {r.dst for r in ipam.routes}
        extra = tuple(r for r in default_routes(ipam) if r.dst not in have)
    return build_result(conf.cni_version, links, len(links) - 1, ipam, extra)


# -- DEL ------------------------------------------------------------------------------------


def _delete_pair(sock: str, host_if: str, netns_path: str, ifname: str) -> None:
    """The pair whose host end is host_if, if the daemon has it. Ends that no daemon holds
    (persistent ones, while the daemon is stopped) are deleted directly. Nothing there is not
    an error."""
    ends = _pair_ends(sock)
    if ends is not None and any(e.get("ifname") == host_if for e in ends):
        try:
            control.request(sock, "del", {"name": host_if})
            return
        except control.ControlError as exc:
            if "no tapveth pair" not in str(exc):  # gone in between: that is what DEL wants
                raise CniError(Code.DAEMON, f"deleting {host_if}: {exc}") from None
    hostside.delete_tap(host_if)
    if netns_path and os.path.exists(netns_path):
        with contextlib.suppress(CniError):
            sandbox.delete_tap(netns_path, ifname)


def cmd_del(env: Env, conf: NetConf, environ: Mapping[str, str]) -> None:
    teardown(conf, env.container_id, env.ifname, env.netns)
    if conf.ipam is not None:
        _ipam(conf, "DEL", env, environ)
    state.remove(conf.data_dir, conf.name, env.container_id, env.ifname)


def teardown(conf: NetConf, container_id: str, ifname: str, netns_path: str = "") -> None:
    host_if = host_ifname(conf.name, container_id, ifname)
    _delete_pair(socket_of(conf), host_if, netns_path, ifname)
    _unmasquerade(conf, container_id, ifname)


def _unmasquerade(conf: NetConf, container_id: str, ifname: str) -> None:
    """The attachment's masquerading rules, if any (also when ipMasq was turned off since)."""
    with hostside.locked():
        hostside.masquerade_del(conf.name, container_id, ifname)


# -- CHECK ----------------------------------------------------------------------------------


def cmd_check(env: Env, conf: NetConf, environ: Mapping[str, str]) -> None:
    if conf.prev_result is None:
        raise CniError(Code.INVALID_CONFIG, "CHECK needs prevResult (the result of the ADD)")
    want = expected_from(conf.prev_result, env.ifname, env.netns)
    sock = socket_of(conf)
    ensure_daemon(sock)
    host_if = host_ifname(conf.name, env.container_id, env.ifname)
    ends = _pair_ends(sock) or []
    mine = [e for e in ends if e.get("ifname") == host_if]
    if not mine:
        raise CniError(Code.CHECK_FAILED, f"the daemon has no pair with host end {host_if}")
    if mine[0].get("peer") != env.ifname:
        raise CniError(
            Code.CHECK_FAILED, f"{host_if}'s peer is {mine[0].get('peer')}, not {env.ifname}"
        )
    if not mine[0].get("carrier"):
        raise CniError(Code.CHECK_FAILED, f"the pair {host_if} <-> {env.ifname} has no carrier")
    if not os.path.exists(env.netns):
        raise CniError(Code.UNKNOWN_CONTAINER, f"network namespace {env.netns} does not exist")
    inside = sandbox.describe(env.netns, env.ifname)
    if inside is None:
        raise CniError(Code.CHECK_FAILED, f"{env.ifname} is missing from {env.netns}")
    if inside["kind"] != "tun":
        raise CniError(Code.CHECK_FAILED, f"{env.ifname} is a {inside['kind']}, not a tapveth end")
    if want.mac and want.mac.lower() != str(inside["mac"]).lower():
        raise CniError(
            Code.CHECK_FAILED, f"{env.ifname} has MAC {inside['mac']}, ADD gave {want.mac}"
        )
    have = set(inside["addresses"])
    for addr in want.addresses:
        if str(addr) not in have:
            raise CniError(Code.CHECK_FAILED, f"{env.ifname} lacks its address {addr}")
    host = hostside.link_info(host_if)
    if host is None:
        raise CniError(Code.CHECK_FAILED, f"the host end {host_if} is missing")
    if conf.mode == "bridge" and host["master"] != conf.bridge:
        raise CniError(
            Code.CHECK_FAILED, f"{host_if} is not a port of {conf.bridge} (master {host['master']})"
        )
    if conf.ip_masq and want.addresses:
        handles, _ = hostside.masquerade_rules(conf.name, env.container_id, env.ifname)
        if len(handles) < len(want.addresses):
            raise CniError(Code.CHECK_FAILED, f"masquerading rules for {env.ifname} are missing")
    if conf.netem is not None:
        check_impaired(sock, conf, env)
    if conf.ipam is not None:
        _ipam(conf, "CHECK", env, environ)


# -- STATUS, GC (1.1.0) ---------------------------------------------------------------------


def cmd_status(env: Env, conf: NetConf, environ: Mapping[str, str]) -> None:
    ensure_daemon(socket_of(conf), Code.NOT_AVAILABLE)
    if conf.ipam is not None:
        try:
            delegate.find_plugin(conf.ipam["type"], env.path)
        except CniError as exc:
            raise CniError(Code.NOT_AVAILABLE, exc.msg) from None


def cmd_gc(env: Env, conf: NetConf, environ: Mapping[str, str]) -> None:
    """Tear down every attachment of this network that the runtime no longer lists."""
    valid = {(a.container_id, a.ifname) for a in conf.valid_attachments or ()}
    failures = []
    for record in state.records(conf.data_dir, conf.name):
        cid, ifname = record["containerID"], record["ifname"]
        if (cid, ifname) in valid:
            continue
        try:
            teardown(conf, cid, ifname, str(record.get("netns", "")))
            if conf.ipam is not None:
                stale = {
                    **environ,
                    "CNI_CONTAINERID": cid,
                    "CNI_IFNAME": ifname,
                    "CNI_NETNS": "",
                }
                delegate.run(conf.ipam["type"], "DEL", _without_attachments(conf), stale, env.path)
            state.remove(conf.data_dir, conf.name, cid, ifname)
        except CniError as exc:
            failures.append(f"{cid}/{ifname}: {exc.msg}")
    if failures:
        raise CniError(Code.IO_FAILURE, "GC could not remove " + "; ".join(failures))


def _without_attachments(conf: NetConf) -> bytes:
    """The configuration as a DEL of one attachment gets it: without the GC list."""
    data = json.loads(conf.raw)
    data.pop("cni.dev/valid-attachments", None)
    return json.dumps(data).encode()


COMMANDS: dict[str, Callable[[Env, NetConf, Mapping[str, str]], dict[str, Any] | None]] = {
    "ADD": cmd_add,
    "DEL": cmd_del,
    "CHECK": cmd_check,
    "STATUS": cmd_status,
    "GC": cmd_gc,
}


def run(environ: Mapping[str, str], stdin: bytes, out: TextIO) -> int:
    """One invocation: 0 and the result (if any) on `out`, or 1 and the error JSON there."""
    version = version_info(stdin)["cniVersion"]
    try:
        env = parse_env(environ)
        if env.command == "VERSION":
            out.write(json.dumps(version_info(stdin)) + "\n")
            return 0
        conf = parse_config(stdin)
        version = conf.cni_version
        require_command_version(env.command, version)
        result = COMMANDS[env.command](env, conf, environ)
        if result is not None:
            out.write(json.dumps(result) + "\n")
        return 0
    except CniError as exc:
        error = exc
    except Exception as exc:  # a bug or an unforeseen failure: still the spec's error JSON
        traceback.print_exc()
        error = CniError(Code.IO_FAILURE, f"internal error: {type(exc).__name__}: {exc}")
    if version not in SUPPORTED_VERSIONS:
        version = LATEST
    out.write(json.dumps(error.to_dict(version)) + "\n")
    return 1


def main() -> None:
    sys.exit(run(os.environ, sys.stdin.buffer.read(), sys.stdout))
