#!/bin/sh
# Set up tapveth on a Debian-like machine, as root. Safe to run again.
#   ./install.sh              Debian packages, then the package in .venv (for a checkout)
#   ./install.sh --test       the same with the test tools, and the packages the tests use
#   ./install.sh --system     a system install for the systemd units: a venv in /opt/tapveth,
#                             /usr/local/bin/tapveth, tapveth(8), bash completion, the units in
#                             /etc/systemd/system, /etc/tapveth/tapveth.toml (kept if present)
#   ./install.sh --system --uninstall   undo --system (a changed configuration file is kept)
set -eu
cd "$(dirname "$0")"
SRC=$(pwd)
PREFIX=/opt/tapveth
BIN=/usr/local/bin/tapveth
CNI_BIN=/usr/local/bin/tapveth-cni  # the CNI plugin (see README, Containers)
MAN=/usr/local/share/man/man8/tapveth.8
COMPLETION=/usr/local/share/bash-completion/completions/tapveth
UNITS="tapveth.service tapveth@.service tapveth-netns@.service"
UNITDIR=/etc/systemd/system
CONFDIR=/etc/tapveth

say() { echo "install.sh: $*"; }
die() { echo "install.sh: $*" >&2; exit 2; }

mode=dev uninstall=no
for arg in "$@"; do
    case $arg in
        --test) mode=test ;;
        --system) mode=system ;;
        --uninstall) uninstall=yes ;;
        -h|--help) sed -n '2,9s/^# \{0,1\}//p' "$0"; exit 0 ;;
        *) die "unknown option $arg (see ./install.sh --help)" ;;
    esac
done
[ "$uninstall" = yes ] && [ "$mode" != system ] && die "--uninstall goes with --system"
[ "$(id -u)" -eq 0 ] || die "run as root (it installs Debian packages; tapveth needs CAP_NET_ADMIN)"

# Only what is missing, so that a machine that has everything needs no package index.
apt_install() {
    missing=""
    for p in "$@"; do
        dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null | grep -qx installed ||
            missing="$missing $p"
    done
    [ -z "$missing" ] && return 0
    say "installing Debian packages:$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
}

systemd_running() { [ -d /run/systemd/system ]; }

uninstall_system() {
    if systemd_running; then
        # every tapveth unit that is loaded (instances included), then the enablement links
        units=$(systemctl list-units --all --plain --no-legend 'tapveth*' | awk '{print $1}')
        # shellcheck disable=SC2086
        [ -n "$units" ] && systemctl stop $units || true
    fi
    find "$UNITDIR" -type l -name 'tapveth*' -delete
    for u in $UNITS; do rm -f "$UNITDIR/$u"; done
    # the IP-socket drop-in, if installed as README says and unchanged
    for d in "$UNITDIR/tapveth.service.d" "$UNITDIR/tapveth@.service.d"; do
        if cmp -s "$d/inet.conf" systemd/tapveth-inet.conf; then rm -f "$d/inet.conf"; fi
        rmdir "$d" 2>/dev/null || true
    done
    systemd_running && systemctl daemon-reload
    [ -L "$BIN" ] && rm -f "$BIN"
    [ -L "$CNI_BIN" ] && rm -f "$CNI_BIN"
    [ -L "$MAN" ] && rm -f "$MAN"
    [ -L "$COMPLETION" ] && rm -f "$COMPLETION"
    if [ -f "$CONFDIR/tapveth.toml" ] && cmp -s "$CONFDIR/tapveth.toml" systemd/tapveth.toml; then
        rm -f "$CONFDIR/tapveth.toml"
    fi
    rmdir "$CONFDIR" 2>/dev/null || [ ! -d "$CONFDIR" ] || say "kept $CONFDIR (your configuration)"
    rm -rf "$PREFIX"
    say "removed the system install (network namespaces made by tapveth-netns@ stay)"
}

install_system() {
    apt_install iproute2 python3 python3-venv util-linux gcc libc6-dev python3-dev
    # Debian's Python, not one under /root: the unit runs with ProtectHome and from boot.
    [ -x "$PREFIX/bin/python" ] || /usr/bin/python3 -m venv "$PREFIX"
    # Built from a copy: the checkout may be read-only, and stays free of build files.
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    tar -C "$SRC" --exclude=./.venv --exclude=./build --exclude='./*.egg-info' -cf - . |
        tar -C "$tmp" -xf -
    "$PREFIX/bin/python" -m pip install -q --upgrade "$tmp"
    ln -sfn "$PREFIX/bin/tapveth" "$BIN"
    ln -sfn "$PREFIX/bin/tapveth-cni" "$CNI_BIN"
    mkdir -p "$(dirname "$MAN")" "$(dirname "$COMPLETION")"
    ln -sfn "$PREFIX/share/man/man8/tapveth.8" "$MAN"
    ln -sfn "$PREFIX/share/bash-completion/completions/tapveth" "$COMPLETION"
    for u in $UNITS; do install -m 0644 "systemd/$u" "$UNITDIR/$u"; done
    mkdir -p "$CONFDIR"
    if [ -e "$CONFDIR/tapveth.toml" ]; then
        say "kept $CONFDIR/tapveth.toml"
    else
        install -m 0644 systemd/tapveth.toml "$CONFDIR/tapveth.toml"
    fi
    if systemd_running; then
        systemctl daemon-reload
        # a running daemon keeps its old code until restarted
        systemctl try-restart tapveth.service 'tapveth@*.service'
    fi
    say "ready ($($BIN --version) in $PREFIX, $BIN; units in $UNITDIR; $CONFDIR/tapveth.toml)"
}

if [ "$mode" = system ]; then
    if [ "$uninstall" = yes ]; then uninstall_system; else install_system; fi
    exit 0
fi

# gcc and python3-dev build the parts in C (daemon/_native_relay.c, core/_offload.c).
packages="iproute2 iputils-ping iperf3 ethtool procps python3 python3-venv gcc libc6-dev
    python3-dev"
# The tests also drive packet captures, peers for the benchmark (vde, socat), containers, the
# firewall tools, pipx, the systemd unit under a real systemd in a systemd-nspawn container,
# and Open vSwitch (its userspace datapath) as a far side of a vxlan end.
[ "$mode" = test ] && packages="$packages tshark tcpdump prometheus podman
    containernetworking-plugins busybox-static vde2 vde-wirefilter socat sockperf pipx runc
    iptables nftables systemd-container util-linux man-db openvswitch-switch"
# shellcheck disable=SC2086
apt_install $packages
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
if [ "$mode" = test ]; then
    .venv/bin/python -m pip install -q -e ".[test]"
else
    .venv/bin/python -m pip install -q .
fi
say "ready ($(.venv/bin/tapveth --version))"
