"""The host's side of an attachment, in the plugin's own namespace: the Linux bridge and its
port (mode bridge), the host route and gateway address (mode ptp), IP forwarding, and the
masquerading rules (nftables) for ipMasq."""

import contextlib
import fcntl
import json
import os
import subprocess
from collections.abc import Iterator
from typing import Any

from tapveth.cni import iproute
from tapveth.cni.iproute import IpError
from tapveth.cni.protocol import CniError, Code, IpConf, masq_comment

LOCK_PATH = "/run/lock/tapveth-cni.lock"
NFT_TABLE = "tapveth_cni"
NFT_CHAIN = "postrouting"
NFT_TIMEOUT = 30.0


@contextlib.contextmanager
def locked() -> Iterator[None]:
    """One plugin at a time changes host-wide state (the bridge, the nft table): a runtime
    may add several containers at once."""
    os.makedirs(os.path.dirname(LOCK_PATH), exist_ok=True)
    with open(LOCK_PATH, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _fail(what: str, exc: IpError) -> CniError:
    return CniError(Code.HOST_SETUP, f"{what}: {exc}")


def bridge_port(
    bridge: str, mtu: int | None, host_ifname: str, ips: tuple[IpConf, ...], gateway: bool
) -> str:
    """The bridge (made, with mtu, if it does not exist) up, each family's gateway address on
    it with the subnet's prefix if it is the gateway, and the host end its port, up: one
    `ip -batch`. Returns the bridge's MAC."""
    info = iproute.link(bridge)
    if info is not None and iproute.kind(info) != "bridge":
        raise CniError(Code.HOST_SETUP, f"{bridge} exists and is not a bridge")
    commands = [f"link set dev {bridge} up"]
    if gateway:
        commands += [
            f"addr replace {ip.gateway}/{ip.address.network.prefixlen} dev {bridge}"
            for ip in ips
            if ip.gateway is not None
        ]
    commands.append(f"link set dev {host_ifname} master {bridge} up")
    create = f"link add name {bridge}{f' mtu {mtu}' if mtu else ''} type bridge"
    try:
        iproute.batch(([create] if info is None else []) + commands)
    except IpError as exc:
        if info is not None or "exists" not in str(exc):
            raise _fail(f"bridge {bridge}", exc) from None
        try:  # made by someone else in between: use it
            iproute.batch(commands)
        except IpError as again:
            raise _fail(f"bridge {bridge}", again) from None
    if info is None:
        info = iproute.link(bridge)
    if info is None or iproute.kind(info) != "bridge":
        raise CniError(Code.HOST_SETUP, f"{bridge} exists and is not a bridge")
    return str(info.get("address"))


def ptp_routes(host_ifname: str, ips: tuple[IpConf, ...]) -> None:
    """Mode ptp: the host end up, the gateway address (host length) on it, and a host route to
    each container address through it."""
    commands = [f"link set dev {host_ifname} up"]
    for ip in ips:
        host_len = 32 if ip.address.version == 4 else 128
        if ip.gateway is not None:
            commands.append(f"addr replace {ip.gateway}/{host_len} dev {host_ifname}")
        commands.append(f"route replace {ip.address.ip}/{host_len} dev {host_ifname} scope link")
    try:
        iproute.batch(commands)
    except IpError as exc:
        raise _fail(f"routes via {host_ifname}", exc) from None


def enable_forwarding(ips: tuple[IpConf, ...]) -> None:
    """The host routes for the containers, as the reference plugins do for a gateway."""
    paths = {
        4: "/proc/sys/net/ipv4/ip_forward",
        6: "/proc/sys/net/ipv6/conf/all/forwarding",
    }
    for version in sorted({ip.address.version for ip in ips}):
        path = paths[version]
        try:
            with open(path) as f:
                if f.read().strip() == "1":
                    continue
            with open(path, "w") as f:
                f.write("1")
        except OSError as exc:
            raise CniError(
                Code.HOST_SETUP, f"enabling forwarding ({path}): {exc.strerror}"
            ) from None


def link_info(name: str) -> dict[str, Any] | None:
    """A host link: kind, MAC, its bridge's name; None if it does not exist."""
    try:
        info = iproute.link(name)
    except IpError as exc:
        raise _fail(f"looking up {name}", exc) from None
    if info is None:
        return None
    return {
        "kind": iproute.kind(info),
        "mac": info.get("address"),
        "master": info.get("master"),
        "up": "UP" in info.get("flags", []),
    }


def delete_tap(name: str) -> bool:
    """Delete a TAP left on the host (its daemon gone); True if there was one."""
    info = link_info(name)
    if info is None or info["kind"] != "tun":
        return False
    with contextlib.suppress(IpError):
        iproute.ip("link", "del", "dev", name)
    return True


# -- masquerading -----------------------------------------------------------------------------


def _nft(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            ["nft", *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=NFT_TIMEOUT,
            check=False,
        )
    except FileNotFoundError:
        raise CniError(Code.HOST_SETUP, "ipMasq needs nft (apt-get install nftables)") from None


def masquerade_script(comment: str, ips: tuple[IpConf, ...]) -> str:
    """The nft commands that masquerade what the container's addresses send off their subnet
    (multicast excepted), as the reference bridge plugin's rules do."""
    lines = [
        f"add table inet {NFT_TABLE}",
        f"add chain inet {NFT_TABLE} {NFT_CHAIN} "
        "{ type nat hook postrouting priority srcnat; policy accept; }",
    ]
    for ip in ips:
        fam, mcast = ("ip", "224.0.0.0/4") if ip.address.version == 4 else ("ip6", "ff00::/8")
        lines.append(
            f"add rule inet {NFT_TABLE} {NFT_CHAIN} {fam} saddr {ip.address.ip} "
            f"{fam} daddr != {ip.address.network} {fam} daddr != {mcast} "
            f'masquerade comment "{comment}"'
        )
    return "\n".join(lines) + "\n"


def masquerade_add(network: str, container_id: str, ifname: str, ips: tuple[IpConf, ...]) -> None:
    if not ips:
        return
    proc = _nft(
        "-f", "-", stdin=masquerade_script(masq_comment(network, container_id, ifname), ips)
    )
    if proc.returncode != 0:
        raise CniError(Code.HOST_SETUP, f"nft: {proc.stderr.strip().splitlines()[-1:]}")


def masquerade_rules(network: str, container_id: str, ifname: str) -> tuple[list[int], int]:
    """The handles of one attachment's rules, and how many rules the chain has in all."""
    proc = _nft("-j", "list", "chain", "inet", NFT_TABLE, NFT_CHAIN)
    if proc.returncode != 0:
        return [], 0  # no table or chain: nothing of ours
    comment = masq_comment(network, container_id, ifname)
    rules = [item["rule"] for item in json.loads(proc.stdout).get("nftables", []) if "rule" in item]
    return [r["handle"] for r in rules if r.get("comment") == comment], len(rules)


def masquerade_del(network: str, container_id: str, ifname: str) -> None:
    """Remove one attachment's rules (none: nothing to do); the table goes with the last."""
    handles, total = masquerade_rules(network, container_id, ifname)
    script = "".join(f"delete rule inet {NFT_TABLE} {NFT_CHAIN} handle {h}\n" for h in handles)
    if total and total == len(handles):
        script = f"delete table inet {NFT_TABLE}\n"
    if script:
        proc = _nft("-f", "-", stdin=script)
        if proc.returncode != 0:
            raise CniError(Code.HOST_SETUP, f"nft: {proc.stderr.strip()}")


def masquerade_comments() -> list[str]:
    """Every attachment comment in the chain (for GC)."""
    proc = _nft("-j", "list", "chain", "inet", NFT_TABLE, NFT_CHAIN)
    if proc.returncode != 0:
        return []
    return [
        item["rule"].get("comment", "")
        for item in json.loads(proc.stdout).get("nftables", [])
        if "rule" in item
    ]
