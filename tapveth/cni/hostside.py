"""The host's side of an attachment, in the plugin's own namespace: the Linux bridge and its
port (mode bridge), the host route and gateway address (mode ptp), IP forwarding, and the
masquerading rules (nftables) for ipMasq."""

import contextlib
import errno
import fcntl
import json
import os
import subprocess
from collections.abc import Iterator
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

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


def _fail(what: str, exc: NetlinkError) -> CniError:
    return CniError(Code.HOST_SETUP, f"{what}: {os.strerror(exc.code)}")


def ensure_bridge(name: str, mtu: int | None) -> dict[str, Any]:
    """The bridge, made (with mtu) if it does not exist, and up; its index and MAC."""
    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=name)
        if not found:
            try:
                kw: dict[str, Any] = {"ifname": name, "kind": "bridge"}
                if mtu is not None:
                    kw["mtu"] = mtu
                ipr.link("add", **kw)
            except NetlinkError as exc:
                if exc.code != errno.EEXIST:  # another plugin made it just now
                    raise _fail(f"creating bridge {name}", exc) from None
            found = ipr.link_lookup(ifname=name)
        msg = ipr.link("get", index=found[0])[0]
        info = msg.get_attr("IFLA_LINKINFO")
        if not info or info.get_attr("IFLA_INFO_KIND") != "bridge":
            raise CniError(Code.HOST_SETUP, f"{name} exists and is not a bridge")
        try:
            ipr.link("set", index=found[0], state="up")
        except NetlinkError as exc:
            raise _fail(f"setting {name} up", exc) from None
        return {"index": found[0], "mac": msg.get_attr("IFLA_ADDRESS")}


def gateway_addresses(bridge_index: int, ips: tuple[IpConf, ...]) -> None:
    """Each family's gateway address on the bridge, with the subnet's prefix (isGateway)."""
    with IPRoute() as ipr:
        for ip in ips:
            if ip.gateway is None:
                continue
            try:
                ipr.addr(
                    "add",
                    index=bridge_index,
                    address=str(ip.gateway),
                    prefixlen=ip.address.network.prefixlen,
                )
            except NetlinkError as exc:
                if exc.code != errno.EEXIST:
                    raise _fail(f"gateway address {ip.gateway}", exc) from None


def attach(host_ifname: str, bridge_index: int | None) -> None:
    """The host end into the bridge (None: no bridge), and up."""
    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=host_ifname)
        if not found:
            raise CniError(Code.HOST_SETUP, f"the host end {host_ifname} is not here")
        try:
            if bridge_index is not None:
                ipr.link("set", index=found[0], master=bridge_index)
            ipr.link("set", index=found[0], state="up")
        except NetlinkError as exc:
            raise _fail(f"attaching {host_ifname}", exc) from None


def ptp_routes(host_ifname: str, ips: tuple[IpConf, ...]) -> None:
    """Mode ptp: the gateway address (host length) on the host end, and a host route to each
    container address through it."""
    with IPRoute() as ipr:
        index = ipr.link_lookup(ifname=host_ifname)[0]
        for ip in ips:
            host_len = 32 if ip.address.version == 4 else 128
            try:
                if ip.gateway is not None:
                    with contextlib.suppress(NetlinkError):
                        ipr.addr("add", index=index, address=str(ip.gateway), prefixlen=host_len)
                ipr.route(
                    "replace",
                    dst=str(ip.address.ip),
                    dst_len=host_len,
                    oif=index,
                    family=10 if ip.address.version == 6 else 2,
                    scope=253,
                )
            except NetlinkError as exc:
                raise _fail(f"route to {ip.address.ip} via {host_ifname}", exc) from None


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
    """A host link: index, kind, MAC, master's name; None if it does not exist."""
    with IPRoute() as ipr:
        try:
            msg = ipr.link("get", ifname=name)[0]
        except NetlinkError:
            return None
        info = msg.get_attr("IFLA_LINKINFO")
        master = msg.get_attr("IFLA_MASTER")
        master_name = None
        if master:
            with contextlib.suppress(NetlinkError):
                master_name = ipr.link("get", index=master)[0].get_attr("IFLA_IFNAME")
        return {
            "index": msg["index"],
            "kind": info.get_attr("IFLA_INFO_KIND") if info else None,
            "mac": msg.get_attr("IFLA_ADDRESS"),
            "master": master_name,
            "up": bool(msg["flags"] & 1),
        }


def delete_tap(name: str) -> bool:
    """Delete a TAP left on the host (its daemon gone); True if there was one."""
    info = link_info(name)
    if info is None or info["kind"] != "tun":
        return False
    with IPRoute() as ipr, contextlib.suppress(NetlinkError):
        ipr.link("del", index=info["index"])
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
