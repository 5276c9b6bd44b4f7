"""The CNI protocol without a system: environment, configuration, results, errors, names."""

import ipaddress
import json
from typing import Any

import pytest

from tapveth.cni.protocol import (
    SUPPORTED_VERSIONS,
    Attachment,
    CniError,
    Code,
    IpamResult,
    IpConf,
    Link,
    Route,
    build_result,
    default_routes,
    expected_from,
    host_ifname,
    masq_comment,
    parse_cni_args,
    parse_config,
    parse_env,
    parse_ipam_result,
    require_command_version,
    route_plan,
    version_info,
)

ENV = {
    "CNI_COMMAND": "ADD",
    "CNI_CONTAINERID": "c0ffee",
    "CNI_NETNS": "/run/netns/x",
    "CNI_IFNAME": "eth0",
    "CNI_PATH": "/usr/lib/cni:/opt/cni/bin",
}


def conf(**over: Any) -> bytes:
    base: dict[str, Any] = {"cniVersion": "1.0.0", "name": "net1", "type": "tapveth-cni"}
    base.update(over)
    return json.dumps({k: v for k, v in base.items() if v is not None}).encode()


def code_of(fn: Any, *args: Any) -> int:
    with pytest.raises(CniError) as err:
        fn(*args)
    return err.value.code


# -- environment ------------------------------------------------------------------------------


def test_env_parsed() -> None:
    env = parse_env({**ENV, "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAME=web"})
    assert env.command == "ADD" and env.container_id == "c0ffee" and env.ifname == "eth0"
    assert env.path == ("/usr/lib/cni", "/opt/cni/bin")
    assert env.args == {"IgnoreUnknown": "1", "K8S_POD_NAME": "web"}


@pytest.mark.parametrize(
    "change",
    [
        {"CNI_COMMAND": ""},
        {"CNI_COMMAND": "FROB"},
        {"CNI_CONTAINERID": ""},
        {"CNI_CONTAINERID": "-starts-with-dash"},
        {"CNI_CONTAINERID": "has space"},
        {"CNI_NETNS": ""},
        {"CNI_IFNAME": ""},
        {"CNI_IFNAME": "waytoolongname0123"},
        {"CNI_IFNAME": "a/b"},
        {"CNI_PATH": ""},
        {"CNI_ARGS": "novalue"},
    ],
)
def test_bad_env_is_code_4(change: dict[str, str]) -> None:
    assert code_of(parse_env, {**ENV, **change}) == Code.INVALID_ENVIRONMENT


def test_del_without_netns_is_fine_and_version_needs_nothing() -> None:
    assert parse_env({**ENV, "CNI_COMMAND": "DEL", "CNI_NETNS": ""}).netns == ""
    assert parse_env({"CNI_COMMAND": "VERSION"}).command == "VERSION"


def test_cni_args() -> None:
    assert parse_cni_args("") == {}
    assert parse_cni_args("A=1;;B=x=y") == {"A": "1", "B": "x=y"}
    assert code_of(parse_cni_args, "=1") == Code.INVALID_ENVIRONMENT


# -- versions ---------------------------------------------------------------------------------


def test_version_info_echoes_the_asked_version() -> None:
    info = version_info(b'{"cniVersion": "1.0.0"}')
    assert info == {"cniVersion": "1.0.0", "supportedVersions": list(SUPPORTED_VERSIONS)}
    assert version_info(b"")["cniVersion"] == "1.1.0"
    assert version_info(b"garbage")["cniVersion"] == "1.1.0"


def test_unsupported_version_is_code_1_and_malformed_is_7() -> None:
    assert code_of(parse_config, conf(cniVersion="0.3.1")) == Code.INCOMPATIBLE_VERSION
    assert code_of(parse_config, conf(cniVersion="2.0.0")) == Code.INCOMPATIBLE_VERSION
    assert code_of(parse_config, conf(cniVersion="one")) == Code.INVALID_CONFIG
    assert code_of(parse_config, conf(cniVersion=None)) == Code.INVALID_CONFIG


def test_status_and_gc_need_1_1_0() -> None:
    require_command_version("STATUS", "1.1.0")
    require_command_version("ADD", "0.4.0")
    assert code_of(require_command_version, "GC", "1.0.0") == Code.INCOMPATIBLE_VERSION


# -- configuration ----------------------------------------------------------------------------


def test_defaults() -> None:
    c = parse_config(conf())
    assert (c.mode, c.bridge, c.is_gateway, c.ip_masq, c.mtu, c.ipam) == (
        "bridge",
        "cni0",
        False,
        False,
        None,
        None,
    )


def test_full_bridge_config() -> None:
    c = parse_config(
        conf(
            bridge="br7",
            isDefaultGateway=True,
            ipMasq=True,
            mtu=1400,
            socket="/tmp/s.sock",
            ipam={"type": "host-local", "subnet": "10.1.0.0/24"},
            prevResult={"interfaces": []},
            runtimeConfig={"portMappings": []},
            capabilities={"portMappings": True},
            args={"x": 1},
        )
    )
    assert c.bridge == "br7" and c.is_gateway and c.is_default_gateway and c.ip_masq
    assert c.mtu == 1400 and c.socket == "/tmp/s.sock" and c.ipam is not None
    assert c.prev_result == {"interfaces": []}


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"{not json", Code.DECODE_FAILURE),
        (b"[1, 2]", Code.DECODE_FAILURE),
        (conf(name=None), Code.INVALID_CONFIG),
        (conf(name="bad name"), Code.INVALID_CONFIG),
        (conf(type=None), Code.INVALID_CONFIG),
        (conf(hairpinMode=True), Code.UNSUPPORTED_FIELD),
        (conf(mode="macvlan"), Code.INVALID_CONFIG),
        (conf(mode="ptp", bridge="br0"), Code.INVALID_CONFIG),
        (conf(mode="ptp"), Code.INVALID_CONFIG),  # ptp without addresses
        (conf(bridge="this-name-is-too-long"), Code.INVALID_CONFIG),
        (conf(mtu=67), Code.INVALID_CONFIG),
        (conf(mtu=65522), Code.INVALID_CONFIG),
        (conf(mtu="1500"), Code.INVALID_CONFIG),
        (conf(mtu=True), Code.INVALID_CONFIG),
        (conf(isGateway="yes"), Code.INVALID_CONFIG),
        (conf(ipam="host-local"), Code.INVALID_CONFIG),
        (conf(ipam={"subnet": "10.0.0.0/8"}), Code.INVALID_CONFIG),
        (conf(socket=""), Code.INVALID_CONFIG),
        (conf(netem=5), Code.INVALID_CONFIG),
        (conf(netem=" "), Code.INVALID_CONFIG),
        (conf(prevResult=[]), Code.INVALID_CONFIG),
        (conf(**{"cni.dev/valid-attachments": [{"containerID": "a"}]}), Code.INVALID_CONFIG),
    ],
)
def test_bad_config(raw: bytes, code: int) -> None:
    assert code_of(parse_config, raw) == code


def test_netem_string_parsed_with_the_netem_grammar() -> None:
    settings = parse_config(conf(netem="delay 50ms loss 1%")).netem
    assert settings is not None and settings["latency"] == 50_000_000  # ns
    assert settings["loss"] == 1.0
    assert code_of(parse_config, conf(netem="delay fast")) == Code.INVALID_CONFIG
    assert code_of(parse_config, conf(netem="wobble 3")) == Code.INVALID_CONFIG


def test_valid_attachments() -> None:
    key = "cni.dev/valid-attachments"
    c = parse_config(conf(cniVersion="1.1.0", **{key: [{"containerID": "a", "ifname": "e"}]}))
    assert c.valid_attachments == (Attachment("a", "e"),)


# -- IPAM results and ours ---------------------------------------------------------------------

IPAM = {
    "cniVersion": "1.0.0",
    "ips": [
        {"address": "10.1.0.5/24", "gateway": "10.1.0.1"},
        {"address": "fd00::5/64", "gateway": "fd00::1"},
    ],
    "routes": [{"dst": "0.0.0.0/0"}, {"dst": "192.168.0.0/16", "gw": "10.1.0.254"}],
    "dns": {"nameservers": ["10.1.0.1"]},
}


def test_ipam_result_parsed() -> None:
    r = parse_ipam_result(IPAM)
    assert r.ips[0] == IpConf(
        ipaddress.ip_interface("10.1.0.5/24"), ipaddress.ip_address("10.1.0.1")
    )
    assert r.routes[1] == Route(
        ipaddress.ip_network("192.168.0.0/16"), ipaddress.ip_address("10.1.0.254")
    )
    assert r.dns == {"nameservers": ["10.1.0.1"]}


@pytest.mark.parametrize(
    "bad", [None, [], {"ips": [{"gateway": "10.0.0.1"}]}, {"ips": [{"address": "10.0.0.300/24"}]}]
)
def test_bad_ipam_result(bad: Any) -> None:
    assert code_of(parse_ipam_result, bad) == Code.DELEGATE


LINKS = [
    Link("cni0", "aa:aa:aa:aa:aa:01"),
    Link("tv0123456789abc", "aa:aa:aa:aa:aa:02"),
    Link("eth0", "aa:aa:aa:aa:aa:03", "/run/netns/x", 1500),
]


def test_result_1_0_0() -> None:
    out = build_result("1.0.0", LINKS, 2, parse_ipam_result(IPAM))
    assert out["cniVersion"] == "1.0.0"
    assert out["interfaces"][2] == {
        "name": "eth0",
        "mac": "aa:aa:aa:aa:aa:03",
        "sandbox": "/run/netns/x",
    }
    assert out["ips"][0] == {"address": "10.1.0.5/24", "gateway": "10.1.0.1", "interface": 2}
    assert out["routes"] == [{"dst": "0.0.0.0/0"}, {"dst": "192.168.0.0/16", "gw": "10.1.0.254"}]
    assert out["dns"] == {"nameservers": ["10.1.0.1"]}


def test_result_1_1_0_has_mtu_and_0_4_0_has_ip_version() -> None:
    new = build_result("1.1.0", LINKS, 2, parse_ipam_result(IPAM))
    assert new["interfaces"][2]["mtu"] == 1500 and "mtu" not in new["interfaces"][0]
    old = build_result("0.4.0", LINKS, 2, parse_ipam_result(IPAM))
    assert [ip["version"] for ip in old["ips"]] == ["4", "6"]
    assert "mtu" not in old["interfaces"][2]


def test_error_json() -> None:
    err = CniError(Code.DAEMON, "no daemon", "details here")
    assert err.to_dict("1.0.0") == {
        "cniVersion": "1.0.0",
        "code": 100,
        "msg": "no daemon",
        "details": "details here",
    }
    assert "details" not in CniError(7, "x").to_dict("1.0.0")


def test_expected_from_prev_result() -> None:
    prev = build_result("1.0.0", LINKS, 2, parse_ipam_result(IPAM))
    want = expected_from(prev, "eth0", "/run/netns/x")
    assert want.mac == "aa:aa:aa:aa:aa:03"
    assert [str(a) for a in want.addresses] == ["10.1.0.5/24", "fd00::5/64"]
    assert code_of(expected_from, prev, "eth1", "/run/netns/x") == Code.INVALID_CONFIG


# -- routes -----------------------------------------------------------------------------------


def test_route_plan_bridge() -> None:
    r = parse_ipam_result(IPAM)
    assert route_plan(r, default_gateway=False, ptp=False) == [
        ["0.0.0.0/0", "10.1.0.1"],  # no gw in the route: the family's gateway
        ["192.168.0.0/16", "10.1.0.254"],
    ]
    with_default = route_plan(r, default_gateway=True, ptp=False)
    assert ["::/0", "fd00::1"] in with_default
    assert with_default.count(["0.0.0.0/0", "10.1.0.1"]) == 1


def test_route_plan_ptp_reaches_the_gateway_first() -> None:
    r = IpamResult(ips=parse_ipam_result(IPAM).ips[:1])
    assert route_plan(r, default_gateway=False, ptp=True) == [
        ["10.1.0.1/32", None],
        ["10.1.0.0/24", "10.1.0.1"],
    ]


def test_default_routes_one_per_family() -> None:
    routes = default_routes(parse_ipam_result(IPAM))
    assert [str(r.dst) for r in routes] == ["0.0.0.0/0", "::/0"]


# -- names ------------------------------------------------------------------------------------


def test_host_ifname_is_stable_unique_and_fits() -> None:
    a = host_ifname("net1", "c0ffee", "eth0")
    assert a == host_ifname("net1", "c0ffee", "eth0") and len(a) == 15 and a.startswith("tv")
    others = {host_ifname("net2", "c0ffee", "eth0"), host_ifname("net1", "c0ffee", "eth1")}
    assert len({a, *others}) == 3
    assert a != host_ifname("net1", "c0ffef", "eth0")


def test_masq_comment_fits_nft() -> None:
    long = masq_comment("n" * 200, "c" * 64, "eth0")
    assert len(long) <= 128
    assert masq_comment("net1", "abc", "eth0") == "tapveth-cni net1 abc eth0"
