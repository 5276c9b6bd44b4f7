"""The daemon's configuration file (TOML): the pairs it owns. Parsing and validation only, no
I/O beyond reading the file; errors name the file, the line, the key and what is wrong.

    [[pair]]
    persist = false                   # the TAPs outlive the daemon (restart keeps the link)
    [pair.end]
    name = "veth1"
    netns = "ns1"                     # omitted: the daemon's own namespace
    create_netns = false              # make the namespace if it is missing
    mtu = 1500
    address = "02:00:00:00:00:01"     # omitted: random, locally administered
    addresses = ["10.0.0.1/24", "fd00::1/64"]
    up = true
    netem = "delay 40ms loss 1%"      # impairments of the frames this end sends (tc-netem)
    faults = "flap every 5s for 1s count 3"   # a fault schedule (README, Impairments)
    [pair.peer]
    name = "veth2"
    netns = "ns2"

    [[pair]]                          # a pair stretched over VXLAN to another machine
    [pair.end]
    name = "veth3"
    [pair.peer]
    vxlan = "id 42 remote 192.0.2.2 dstport 4789"   # the words of `add … peer vxlan …`
    netem = "delay 10ms"              # impairments of the frames the tunnel delivers
    faults = "flap every 60s for 1s"  # (netem and faults are the peer's only other keys)

    [metrics]
    listen = "127.0.0.1:9477"         # Prometheus metrics (read when the daemon starts)
"""

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tapveth.core.address import AddressError, parse_listen
from tapveth.core.faults import FaultError, Schedule
from tapveth.core.faults import parse as parse_faults
from tapveth.core.linkspec import (
    EndSpec,
    PairSpec,
    SpecError,
    check_mac,
    check_mtu,
    check_name,
    check_netns,
    check_pair,
)
from tapveth.core.netem import Netem, NetemError
from tapveth.core.netem import parse as parse_netem
from tapveth.core.vxlanspec import VxlanSpec, parse_vxlan_peer


class ConfigError(ValueError):
    """One line: FILE:LINE: key: what is wrong."""


@dataclass(frozen=True, slots=True)
class EndConfig:
    spec: EndSpec
    create_netns: bool = False
    addresses: tuple[str, ...] = ()
    up: bool = False
    netem: Netem | None = None  # impairments of the frames this end sends
    faults: Schedule | None = None  # a fault schedule (flap, timeline) started with the pair


@dataclass(frozen=True, slots=True)
class VxlanPeerConfig:
    """A peer that is the far end of a VXLAN tunnel: always up (the carrier follows the TAP
    end, and BFD if on); its impairments and faults are those of the frames it delivers."""

    spec: VxlanSpec
    netem: Netem | None = None
    faults: Schedule | None = None
    up: bool = True
    create_netns: bool = False
    addresses: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class PairConfig:
    end: EndConfig
    peer: EndConfig | VxlanPeerConfig
    persist: bool = False

    @property
    def spec(self) -> PairSpec:
        return PairSpec(self.end.spec, self.peer.spec)

    @property
    def ident(self) -> tuple[str, str | None]:
        """What names a pair across reloads: its first end's name and namespace."""
        return (self.end.spec.name, self.end.spec.netns)

    def same_devices(self, other: "PairConfig") -> bool:
        """True when only what can change in place (MTU, addresses, admin state, netem)
        differs."""

        def fixed(e: EndConfig | VxlanPeerConfig) -> object:
            if isinstance(e.spec, VxlanSpec):
                return e.spec  # any change to the tunnel's words makes it anew
            return (e.spec.name, e.spec.netns, e.spec.address, e.create_netns)

        return (fixed(self.end), fixed(self.peer), self.persist) == (
            fixed(other.end),
            fixed(other.peer),
            other.persist,
        )


@dataclass(frozen=True, slots=True)
class Config:
    path: str
    pairs: tuple[PairConfig, ...] = field(default_factory=tuple)
    metrics: str | None = None  # [metrics] listen: HOST:PORT


_PAIR_KEYS = {"persist", "end", "peer"}
_VXLAN_KEYS = {"vxlan", "netem", "faults"}
_END_KEYS = {
    "name",
    "netns",
    "create_netns",
    "mtu",
    "address",
    "addresses",
    "up",
    "netem",
    "faults",
}


def load(path: str) -> Config:
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    return parse(text, path)


def parse(text: str, path: str = "<config>") -> Config:
    import tomllib  # only a daemon with a file reads one: the others start without it

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    where = _Locator(text, path)
    unknown = set(data) - {"pair", "metrics"}
    if unknown:
        key = sorted(unknown)[0]
        raise ConfigError(
            f"{where.top(key)}: unknown key {key!r} (expected [[pair]] tables and [metrics])"
        )
    raw_pairs = data.get("pair", [])
    if not isinstance(raw_pairs, list):
        raise ConfigError(f"{where.top('pair')}: 'pair' must be an array of tables: [[pair]]")
    pairs = [_pair(p, i, where) for i, p in enumerate(raw_pairs)]
    _check_unique(pairs, where)
    return Config(path=path, pairs=tuple(pairs), metrics=_metrics(data.get("metrics"), where))


def _metrics(raw: Any, where: "_Locator") -> str | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ConfigError(f"{where.top('metrics')}: 'metrics' must be a table: [metrics]")
    for key in raw:
        if key != "listen":
            raise ConfigError(f"{where.top(key)}: metrics: unknown key {key!r} (known: listen)")
    listen = raw.get("listen")
    if listen is None:
        return None
    try:
        parse_listen(listen)
    except AddressError as exc:
        raise ConfigError(f"{where.top('listen')}: metrics.listen: {exc}") from None
    return str(listen)


def _pair(raw: Any, i: int, where: "_Locator") -> PairConfig:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where.pair(i)}: pair[{i}] must be a table")
    for key in raw:
        if key not in _PAIR_KEYS:
            raise ConfigError(f"{where.pair(i, key=key)}: pair[{i}]: unknown key {key!r}")
    for side in ("end", "peer"):
        if side not in raw:
            raise ConfigError(f"{where.pair(i)}: pair[{i}]: missing [pair.{side}] table")
    persist = raw.get("persist", False)
    if not isinstance(persist, bool):
        raise ConfigError(
            f"{where.pair(i, key='persist')}: pair[{i}].persist must be true or false"
        )
    end = _end(raw["end"], i, "end", where)
    assert isinstance(end, EndConfig)  # _end refuses `vxlan` there
    cfg = PairConfig(end, _end(raw["peer"], i, "peer", where), persist)
    if persist and isinstance(cfg.peer.spec, VxlanSpec):
        raise ConfigError(
            f"{where.pair(i, key='persist')}: pair[{i}].persist: a pair whose peer is vxlan "
            "cannot persist (its tunnel sockets end with the daemon)"
        )
    try:
        check_pair(cfg.spec)
    except SpecError as exc:
        raise ConfigError(f"{where.pair(i, 'peer', 'name')}: pair[{i}].peer.name: {exc}") from None
    return cfg


def _end(raw: Any, i: int, side: str, where: "_Locator") -> EndConfig | VxlanPeerConfig:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where.pair(i, side)}: pair[{i}].{side} must be a table")

    def fail(key: str, msg: str) -> ConfigError:
        return ConfigError(f"{where.pair(i, side, key)}: pair[{i}].{side}.{key}: {msg}")

    if "vxlan" in raw:
        if side != "peer":
            raise fail("vxlan", "the tunnel goes in [pair.peer]; [pair.end] is the TAP end")
        return _vxlan_peer(raw, fail)
    for key in raw:
        if key not in _END_KEYS:
            known = ", ".join(sorted(_END_KEYS | ({"vxlan"} if side == "peer" else set())))
            raise fail(key, f"unknown key {key!r} (known: {known})")
    if "name" not in raw:
        raise ConfigError(f"{where.pair(i, side)}: pair[{i}].{side}: missing 'name'")
    checks: dict[str, Any] = {}
    validators: tuple[tuple[str, Callable[[Any], Any], type], ...] = (
        ("name", check_name, str),
        ("netns", check_netns, str),
        ("mtu", check_mtu, int),
        ("address", check_mac, str),
    )
    for key, check, kind in validators:
        if key not in raw:
            continue
        value = raw[key]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise fail(
                key,
                f"must be a {'string' if kind is str else 'number'}, not {type(value).__name__}",
            )
        try:
            checks[key] = check(value)
        except SpecError as exc:
            raise fail(key, str(exc)) from None
    for key in ("create_netns", "up"):
        if key in raw and not isinstance(raw[key], bool):
            raise fail(key, "must be true or false")
    if raw.get("create_netns") and "netns" not in raw:
        raise fail("create_netns", "needs 'netns'")
    addresses = raw.get("addresses", [])
    if not isinstance(addresses, list):
        raise fail("addresses", "must be a list of CIDR strings")
    for a in addresses:
        if not isinstance(a, str) or "/" not in a:
            raise fail("addresses", f"{a!r} is not a CIDR (like 10.0.0.1/24 or fd00::1/64)")
        try:
            ipaddress.ip_interface(a)
        except ValueError:
            raise fail("addresses", f"{a!r} is not a valid CIDR") from None
    netem, faults = _impairments(raw, fail)
    return EndConfig(
        spec=EndSpec(checks["name"], checks.get("netns"), checks.get("mtu"), checks.get("address")),
        create_netns=bool(raw.get("create_netns", False)),
        addresses=tuple(addresses),
        up=bool(raw.get("up", False)),
        netem=netem,
        faults=faults,
    )


def _impairments(
    raw: dict[str, Any], fail: Callable[[str, str], ConfigError]
) -> tuple[Netem | None, Schedule | None]:
    """An end's `netem` and `faults` lines."""
    netem = None
    if "netem" in raw:
        if not isinstance(raw["netem"], str):
            raise fail("netem", 'must be a string of tc-netem options, like "delay 40ms loss 1%"')
        try:
            netem = parse_netem(raw["netem"].split())
        except NetemError as exc:
            raise fail("netem", str(exc)) from None
    faults = None
    if "faults" in raw:
        if not isinstance(raw["faults"], str):
            raise fail("faults", 'must be a string, like "flap every 5s for 1s count 3"')
        try:
            faults = parse_faults(raw["faults"].split())
        except FaultError as exc:
            raise fail("faults", str(exc)) from None
    return netem, faults


def _vxlan_peer(raw: dict[str, Any], fail: Callable[[str, str], ConfigError]) -> VxlanPeerConfig:
    """A peer that is the far end of a VXLAN tunnel: `vxlan = "WORDS"`, the words of
    `tapveth add … peer vxlan WORDS`, and the impairments and faults of what it delivers."""
    for key in raw:
        if key not in _VXLAN_KEYS:
            raise fail(
                key,
                f"a vxlan peer takes only {', '.join(sorted(_VXLAN_KEYS))}; {key!r} belongs to "
                "a TAP end (the tunnel's own settings are words of the vxlan line)",
            )
    words = raw["vxlan"]
    if not isinstance(words, str):
        raise fail("vxlan", 'must be a string, like "id 42 remote 192.0.2.2 dstport 4789"')
    try:
        spec = parse_vxlan_peer(words.split())
    except SpecError as exc:
        raise fail("vxlan", str(exc)) from None
    netem, faults = _impairments(raw, fail)
    return VxlanPeerConfig(spec=spec, netem=netem, faults=faults)


def _check_unique(pairs: list[PairConfig], where: "_Locator") -> None:
    seen: dict[tuple[str, str | None], str] = {}
    for i, p in enumerate(pairs):
        for side, e in (("end", p.end), ("peer", p.peer)):
            key = (e.spec.name, e.spec.netns)
            if key in seen:
                ns = f" in namespace {e.spec.netns}" if e.spec.netns else ""
                word = "vxlan" if isinstance(e.spec, VxlanSpec) else "name"
                raise ConfigError(
                    f"{where.pair(i, side, word)}: pair[{i}].{side}.{word}: "
                    f"{e.spec.name!r}{ns} is already used by {seen[key]}"
                )
            seen[key] = f"pair[{i}].{side}"


class _Locator:
    """Finds the line of a key for error messages (tomllib does not keep positions)."""

    def __init__(self, text: str, path: str) -> None:
        self.lines = text.splitlines()
        self.path = path

    def _find(self, pattern: str, start: int = 0, stop: int | None = None) -> int | None:
        rx = re.compile(pattern)
        for n in range(start, len(self.lines) if stop is None else stop):
            if rx.match(self.lines[n]):
                return n
        return None

    def top(self, key: str) -> str:
        n = self._find(rf"\s*(\[+\s*)?{re.escape(key)}\b")
        return f"{self.path}:{n + 1}" if n is not None else self.path

    def pair(self, i: int, side: str | None = None, key: str | None = None) -> str:
        starts = [n for n, ln in enumerate(self.lines) if re.match(r"\s*\[\[\s*pair\s*\]\]", ln)]
        if i >= len(starts):
            return self.path
        start, stop = starts[i], starts[i + 1] if i + 1 < len(starts) else len(self.lines)
        line = start
        if side is not None:
            n = self._find(rf"\s*\[\s*pair\.{side}\s*\]", start, stop)
            if n is None:
                n = self._find(rf"\s*{side}\s*=", start, stop)
            if n is not None:
                line = n
        if key is not None:
            sub_stop = stop
            if side is not None:
                nxt = self._find(r"\s*\[", line + 1, stop)
                sub_stop = nxt if nxt is not None else stop
            n = self._find(rf"\s*{re.escape(key)}\s*=", line, sub_stop)
            if n is not None:
                line = n
        return f"{self.path}:{line + 1}"
