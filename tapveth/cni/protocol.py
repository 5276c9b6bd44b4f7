"""The CNI protocol, pure: the CNI_* environment, the network configuration on stdin, the
result and error JSON on stdout, in the spec's shapes for versions 0.4.0, 1.0.0 and 1.1.0.

Nothing here touches the system; every mistake a runtime or a user can make raises CniError
with the spec's well-known code (plugin-specific failures use codes from 100 up, as the spec
reserves 0-99 for itself)."""

import hashlib
import ipaddress
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from tapveth.core.linkspec import SpecError, check_name
from tapveth.core.rules import MAX_MTU, MIN_MTU

SUPPORTED_VERSIONS = ("0.4.0", "1.0.0", "1.1.0")
LATEST = SUPPORTED_VERSIONS[-1]
COMMANDS = ("ADD", "DEL", "CHECK", "VERSION", "STATUS", "GC")
# STATUS and GC exist from spec 1.1.0 on.
COMMANDS_SINCE = {"STATUS": "1.1.0", "GC": "1.1.0"}
VALID_ATTACHMENTS = "cni.dev/valid-attachments"
DEFAULT_DATA_DIR = "/var/lib/tapveth-cni"


class Code(IntEnum):
    """The spec's well-known error codes, then this plugin's own (100 and up)."""

    INCOMPATIBLE_VERSION = 1
    UNSUPPORTED_FIELD = 2
    UNKNOWN_CONTAINER = 3
    INVALID_ENVIRONMENT = 4
    IO_FAILURE = 5
    DECODE_FAILURE = 6
    INVALID_CONFIG = 7
    TRY_AGAIN_LATER = 11
    NOT_AVAILABLE = 50
    LIMITED_CONNECTIVITY = 51
    DAEMON = 100  # the tapveth daemon is not running, or refused the pair
    DELEGATE = 101  # the IPAM plugin failed, or is missing
    HOST_SETUP = 102  # bridge, routes, masquerading on the host side
    CHECK_FAILED = 103  # CHECK found the attachment not as ADD left it


class CniError(Exception):
    """An error for the runtime: printed as the spec's error JSON, exit status 1."""

    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.code = int(code)
        self.msg = msg
        self.details = details

    def to_dict(self, version: str) -> dict[str, Any]:
        out: dict[str, Any] = {"cniVersion": version, "code": self.code, "msg": self.msg}
        if self.details:
            out["details"] = self.details
        return out


# -- versions ---------------------------------------------------------------------------------


def version_tuple(version: str) -> tuple[int, int, int]:
    m = re.fullmatch(r"(\d+)\.(\d+)\.(\d+)", version)
    if m is None:
        raise CniError(Code.INVALID_CONFIG, f"cniVersion {version!r} is not a version (x.y.z)")
    return (int(m[1]), int(m[2]), int(m[3]))


def check_version(version: object) -> str:
    if not isinstance(version, str):
        raise CniError(Code.INVALID_CONFIG, "cniVersion is missing or not a string")
    version_tuple(version)
    if version not in SUPPORTED_VERSIONS:
        raise CniError(
            Code.INCOMPATIBLE_VERSION,
            f"cniVersion {version} is not supported "
            f"(tapveth-cni supports {', '.join(SUPPORTED_VERSIONS)})",
        )
    return version


def version_info(stdin: bytes) -> dict[str, Any]:
    """The VERSION answer: the version asked for on stdin (when readable), and ours."""
    asked = LATEST
    try:
        data = json.loads(stdin) if stdin.strip() else {}
        if isinstance(data, dict) and isinstance(data.get("cniVersion"), str):
            version_tuple(data["cniVersion"])
            asked = data["cniVersion"]
    except (ValueError, CniError):
        pass
    return {"cniVersion": asked, "supportedVersions": list(SUPPORTED_VERSIONS)}


# -- the environment --------------------------------------------------------------------------

_CONTAINER_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_NETWORK_NAME_RE = _CONTAINER_ID_RE


@dataclass(frozen=True, slots=True)
class Env:
    """The CNI_* variables of one invocation, checked."""

    command: str
    container_id: str = ""
    netns: str = ""
    ifname: str = ""
    args: dict[str, str] = field(default_factory=dict)
    path: tuple[str, ...] = ()


# Which variables each command needs (CNI_NETNS may be absent on DEL: clean up what is left).
_REQUIRED = {
    "ADD": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"),
    "CHECK": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"),
    "DEL": ("CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"),
    "VERSION": (),
    "STATUS": ("CNI_PATH",),
    "GC": ("CNI_PATH",),
}


def parse_env(environ: Mapping[str, str]) -> Env:
    command = environ.get("CNI_COMMAND", "")
    if command not in COMMANDS:
        raise CniError(
            Code.INVALID_ENVIRONMENT,
            f"CNI_COMMAND {command!r} is not one of {', '.join(COMMANDS)}"
            if command
            else "CNI_COMMAND is not set (this is a CNI plugin: a container runtime runs it)",
        )
    missing = [k for k in _REQUIRED[command] if not environ.get(k)]
    if missing:
        raise CniError(
            Code.INVALID_ENVIRONMENT, f"{command} needs {', '.join(missing)} in the environment"
        )
    container_id = environ.get("CNI_CONTAINERID", "")
    if container_id and not _CONTAINER_ID_RE.match(container_id):
        raise CniError(
            Code.INVALID_ENVIRONMENT,
            f"CNI_CONTAINERID {container_id!r} is not valid (letters, digits, _ . - only, "
            "starting with a letter or digit)",
        )
    ifname = environ.get("CNI_IFNAME", "")
    if ifname:
        try:
            check_name(ifname)
        except SpecError as exc:
            raise CniError(Code.INVALID_ENVIRONMENT, f"CNI_IFNAME: {exc}") from None
    return Env(
        command=command,
        container_id=container_id,
        netns=environ.get("CNI_NETNS", ""),
        ifname=ifname,
        args=parse_cni_args(environ.get("CNI_ARGS", "")),
        path=tuple(p for p in environ.get("CNI_PATH", "").split(":") if p),
    )


def parse_cni_args(text: str) -> dict[str, str]:
    """CNI_ARGS: KEY=VALUE pairs separated by semicolons."""
    out: dict[str, str] = {}
    for item in text.split(";"):
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CniError(Code.INVALID_ENVIRONMENT, f"CNI_ARGS item {item!r} is not KEY=VALUE")
        out[key] = value
    return out


# -- the network configuration ----------------------------------------------------------------

# Keys a runtime may add to any plugin's configuration.
_RUNTIME_KEYS = {
    "cniVersion",
    "cniVersions",
    "name",
    "type",
    "args",
    "runtimeConfig",
    "capabilities",
    "prevResult",
    "ipam",
    "dns",
    VALID_ATTACHMENTS,
}
_OWN_KEYS = {
    "mode",
    "bridge",
    "isGateway",
    "isDefaultGateway",
    "ipMasq",
    "mtu",
    "socket",
    "dataDir",
    "netem",
    "persist",
}


@dataclass(frozen=True, slots=True)
class Attachment:
    container_id: str
    ifname: str


@dataclass(frozen=True, slots=True)
class NetConf:
    """One network configuration as this plugin reads it."""

    cni_version: str
    name: str
    type: str
    mode: str = "bridge"
    bridge: str = "cni0"
    is_gateway: bool = False
    is_default_gateway: bool = False
    ip_masq: bool = False
    mtu: int | None = None
    socket: str | None = None
    data_dir: str = DEFAULT_DATA_DIR
    netem: dict[str, Any] | None = None  # the settings, as the daemon's qdisc request takes them
    persist: bool = True
    ipam: dict[str, Any] | None = None
    dns: dict[str, Any] | None = None
    prev_result: dict[str, Any] | None = None
    valid_attachments: tuple[Attachment, ...] | None = None
    raw: bytes = b""


def _bool(data: Mapping[str, Any], key: str) -> bool:
    value = data.get(key, False)
    if not isinstance(value, bool):
        raise CniError(Code.INVALID_CONFIG, f"{key} must be true or false, not {value!r}")
    return value


def _str(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is not None and (not isinstance(value, str) or not value):
        raise CniError(Code.INVALID_CONFIG, f"{key} must be a non-empty string, not {value!r}")
    return value


def parse_config(raw: bytes) -> NetConf:
    """The network configuration from stdin, checked; CniError says what is wrong."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CniError(
            Code.DECODE_FAILURE, f"the network configuration on stdin is not JSON: {exc}"
        ) from None
    if not isinstance(data, dict):
        raise CniError(Code.DECODE_FAILURE, "the network configuration must be a JSON object")
    version = check_version(data.get("cniVersion"))
    name = data.get("name")
    if not isinstance(name, str) or not _NETWORK_NAME_RE.match(name):
        raise CniError(
            Code.INVALID_CONFIG,
            f"network name {name!r} is not valid (letters, digits, _ . - only)"
            if name is not None
            else "the network configuration has no name",
        )
    ptype = data.get("type")
    if not isinstance(ptype, str) or not ptype:
        raise CniError(Code.INVALID_CONFIG, "the network configuration has no type")
    unknown = sorted(set(data) - _RUNTIME_KEYS - _OWN_KEYS)
    if unknown:
        raise CniError(
            Code.UNSUPPORTED_FIELD,
            f"unsupported field(s) in the network configuration: {', '.join(unknown)}",
        )
    mode = data.get("mode", "bridge")
    if mode not in ("bridge", "ptp"):
        raise CniError(Code.INVALID_CONFIG, f'mode must be "bridge" or "ptp", not {mode!r}')
    if mode == "ptp":
        misplaced = sorted({"bridge", "isGateway", "isDefaultGateway"} & set(data))
        if misplaced:
            raise CniError(
                Code.INVALID_CONFIG,
                f'{", ".join(misplaced)} belong(s) to mode "bridge", not "ptp"',
            )
    bridge = _str(data, "bridge") or "cni0"
    try:
        check_name(bridge)
    except SpecError as exc:
        raise CniError(Code.INVALID_CONFIG, f"bridge: {exc}") from None
    mtu = data.get("mtu")
    if mtu is not None and (
        isinstance(mtu, bool) or not isinstance(mtu, int) or not MIN_MTU <= mtu <= MAX_MTU
    ):
        raise CniError(Code.INVALID_CONFIG, f"mtu {mtu!r} is not a number in {MIN_MTU}..{MAX_MTU}")
    ipam = data.get("ipam")
    if ipam is not None and (not isinstance(ipam, dict) or not isinstance(ipam.get("type"), str)):
        raise CniError(Code.INVALID_CONFIG, 'ipam must be an object with a "type"')
    if ipam is not None and not ipam:
        ipam = None
    if mode == "ptp" and ipam is None:
        raise CniError(Code.INVALID_CONFIG, 'mode "ptp" needs an ipam section (addresses)')
    dns = data.get("dns")
    if dns is not None and not isinstance(dns, dict):
        raise CniError(Code.INVALID_CONFIG, "dns must be an object")
    prev = data.get("prevResult")
    if prev is not None and not isinstance(prev, dict):
        raise CniError(Code.INVALID_CONFIG, "prevResult must be an object")
    netem = _netem(data.get("netem"))
    is_default_gw = _bool(data, "isDefaultGateway")
    return NetConf(
        cni_version=version,
        name=name,
        type=ptype,
        mode=mode,
        bridge=bridge,
        # The default gateway is the bridge: it must hold the gateway address.
        is_gateway=_bool(data, "isGateway") or is_default_gw,
        is_default_gateway=is_default_gw,
        ip_masq=_bool(data, "ipMasq"),
        mtu=mtu,
        socket=_str(data, "socket"),
        data_dir=_str(data, "dataDir") or DEFAULT_DATA_DIR,
        netem=netem,
        persist=_bool(data, "persist") if "persist" in data else True,
        ipam=ipam,
        dns=dns,
        prev_result=prev,
        valid_attachments=_attachments(data.get(VALID_ATTACHMENTS)),
        raw=raw,
    )


def _netem(value: object) -> dict[str, Any] | None:
    """`"netem": "delay 50ms loss 1%"`: tc-netem's options, checked with tapveth's grammar."""
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise CniError(Code.INVALID_CONFIG, f"netem must be a tc-netem string, not {value!r}")
    from tapveth.core import netem as netem_grammar  # only with netem: a faster start without

    try:
        return netem_grammar.parse(value.split()).to_dict()
    except netem_grammar.NetemError as exc:
        raise CniError(Code.INVALID_CONFIG, f"netem {value!r}: {exc}") from None


def _attachments(value: object) -> tuple[Attachment, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise CniError(Code.INVALID_CONFIG, f"{VALID_ATTACHMENTS} must be a list")
    out = []
    for item in value:
        if (
            not isinstance(item, dict)
            or not isinstance(item.get("containerID"), str)
            or not isinstance(item.get("ifname"), str)
        ):
            raise CniError(
                Code.INVALID_CONFIG,
                f"each of {VALID_ATTACHMENTS} needs a containerID and an ifname",
            )
        out.append(Attachment(item["containerID"], item["ifname"]))
    return tuple(out)


def require_command_version(command: str, version: str) -> None:
    since = COMMANDS_SINCE.get(command)
    if since is not None and version_tuple(version) < version_tuple(since):
        raise CniError(
            Code.INCOMPATIBLE_VERSION, f"{command} needs cniVersion {since} or later, not {version}"
        )


# -- IPAM results -----------------------------------------------------------------------------

Interface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class IpConf:
    address: Interface
    gateway: Address | None = None


@dataclass(frozen=True, slots=True)
class Route:
    dst: Network
    gw: Address | None = None


@dataclass(frozen=True, slots=True)
class IpamResult:
    ips: tuple[IpConf, ...] = ()
    routes: tuple[Route, ...] = ()
    dns: dict[str, Any] = field(default_factory=dict)


def parse_ipam_result(data: object) -> IpamResult:
    """What an IPAM plugin printed, in any supported version (0.4.0 adds "version" to ips)."""
    if not isinstance(data, dict):
        raise CniError(Code.DELEGATE, "the IPAM plugin printed no result object")
    try:
        ips = tuple(
            IpConf(
                ipaddress.ip_interface(ip["address"]),
                ipaddress.ip_address(ip["gateway"]) if ip.get("gateway") else None,
            )
            for ip in data.get("ips") or []
        )
        routes = tuple(
            Route(
                ipaddress.ip_network(r["dst"], strict=False),
                ipaddress.ip_address(r["gw"]) if r.get("gw") else None,
            )
            for r in data.get("routes") or []
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CniError(Code.DELEGATE, f"the IPAM plugin's result is malformed: {exc}") from None
    dns = data.get("dns") or {}
    return IpamResult(ips, routes, dns if isinstance(dns, dict) else {})


def default_routes(ipam: IpamResult) -> list[Route]:
    """isDefaultGateway: a default route through each family's gateway."""
    out: list[Route] = []
    seen: set[int] = set()
    for ip in ipam.ips:
        if ip.gateway is not None and ip.address.version not in seen:
            seen.add(ip.address.version)
            dst = "0.0.0.0/0" if ip.address.version == 4 else "::/0"
            out.append(Route(ipaddress.ip_network(dst), ip.gateway))
    return out


def route_plan(ipam: IpamResult, default_gateway: bool, ptp: bool) -> list[list[str | None]]:
    """The container's routes: the IPAM routes (without a gw: through the gateway of their
    family, as the reference plugins do), a default route when asked, and for ptp the host
    route to the gateway and the subnet through it."""
    gateways: dict[int, Address] = {}
    for ip in ipam.ips:
        if ip.gateway is not None:
            gateways.setdefault(ip.address.version, ip.gateway)
    plan: list[list[str | None]] = []
    if ptp:
        for ip in ipam.ips:
            if ip.gateway is not None:
                plen = 32 if ip.gateway.version == 4 else 128
                plan.append([f"{ip.gateway}/{plen}", None])
                plan.append([str(ip.address.network), str(ip.gateway)])
    wanted = list(ipam.routes)
    if default_gateway:
        wanted += default_routes(ipam)
    for r in wanted:
        gw = r.gw if r.gw is not None else gateways.get(r.dst.version)
        entry: list[str | None] = [str(r.dst), str(gw) if gw is not None else None]
        if entry not in plan:
            plan.append(entry)
    return plan


# -- this plugin's result ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Link:
    name: str
    mac: str
    sandbox: str = ""  # the netns path, for the container's interface
    mtu: int | None = None


def build_result(
    version: str,
    links: list[Link],
    container_index: int,
    ipam: IpamResult,
    extra_routes: tuple[Route, ...] = (),
) -> dict[str, Any]:
    """The ADD result in the spec's shape for `version`: interfaces, ips (pointing at the
    container's interface), routes and dns."""
    newer = version_tuple(version) >= (1, 1, 0)
    interfaces = []
    for link in links:
        item: dict[str, Any] = {"name": link.name, "mac": link.mac}
        if newer and link.mtu is not None:
            item["mtu"] = link.mtu  # the interface's MTU joined the result in 1.1.0
        if link.sandbox:
            item["sandbox"] = link.sandbox
        interfaces.append(item)
    ips = []
    for ip in ipam.ips:
        entry: dict[str, Any] = {"address": str(ip.address), "interface": container_index}
        if version == "0.4.0":
            entry["version"] = str(ip.address.version)
        if ip.gateway is not None:
            entry["gateway"] = str(ip.gateway)
        ips.append(entry)
    routes = []
    for r in (*ipam.routes, *extra_routes):
        route: dict[str, Any] = {"dst": str(r.dst)}
        if r.gw is not None:
            route["gw"] = str(r.gw)
        routes.append(route)
    out: dict[str, Any] = {"cniVersion": version, "interfaces": interfaces, "ips": ips}
    if routes:
        out["routes"] = routes
    out["dns"] = ipam.dns
    return out


@dataclass(frozen=True, slots=True)
class Expected:
    """What CHECK must find, read from prevResult: the container's interface and addresses."""

    mac: str | None
    addresses: tuple[Interface, ...]


def expected_from(prev: dict[str, Any], ifname: str, netns: str) -> Expected:
    """The container interface named ifname in prevResult, and the addresses given to it."""
    interfaces = prev.get("interfaces") or []
    if not isinstance(interfaces, list):
        raise CniError(Code.INVALID_CONFIG, "prevResult.interfaces must be a list")
    index = None
    mac = None
    for i, item in enumerate(interfaces):
        if isinstance(item, dict) and item.get("name") == ifname and item.get("sandbox"):
            index, mac = i, item.get("mac")
            break
    if index is None:
        raise CniError(
            Code.INVALID_CONFIG,
            f"prevResult lists no interface {ifname} in a sandbox (was it made by this ADD?)",
        )
    addresses = []
    try:
        for ip in prev.get("ips") or []:
            if ip.get("interface") == index:
                addresses.append(ipaddress.ip_interface(ip["address"]))
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise CniError(Code.INVALID_CONFIG, f"prevResult.ips is malformed: {exc}") from None
    return Expected(mac if isinstance(mac, str) else None, tuple(addresses))


# -- names ------------------------------------------------------------------------------------


def host_ifname(network: str, container_id: str, ifname: str) -> str:
    """The host end's name: one per (network, container, interface), as the spec keys state,
    so that DEL finds it without any other record. "tv" + 13 hex digits = 15 bytes."""
    digest = hashlib.sha256(f"{network}\0{container_id}\0{ifname}".encode()).hexdigest()
    return "tv" + digest[:13]


def masq_comment(network: str, container_id: str, ifname: str) -> str:
    """The comment that marks the masquerading rules of one attachment (nft allows 128 bytes;
    a container id is at most 64, so a long network name is shortened to a digest)."""
    net = network if len(network) <= 32 else hashlib.sha256(network.encode()).hexdigest()[:16]
    return f"tapveth-cni {net} {container_id} {ifname}"


def state_key(container_id: str, ifname: str) -> str:
    return f"{container_id}-{ifname}"
