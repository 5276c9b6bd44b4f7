#!/bin/sh
# Set up tapveth on a Debian-like machine, as root: system packages, then a virtualenv in .venv
# with the package (and, with --test, the test tools). Safe to run again.
set -eu
cd "$(dirname "$0")"
if [ "$(id -u)" -ne 0 ]; then
    echo "install.sh: run as root (it installs Debian packages; tapveth needs CAP_NET_ADMIN)" >&2
    exit 2
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
packages="iproute2 iputils-ping iperf3 ethtool procps python3 python3-venv"
# the tests also run the systemd unit under a real systemd in a systemd-nspawn container
[ "${1:-}" = "--test" ] && packages="$packages systemd-container util-linux"
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $packages >/dev/null
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
if [ "${1:-}" = "--test" ]; then
    .venv/bin/python -m pip install -q -e ".[test]"
else
    .venv/bin/python -m pip install -q .
fi
echo "install.sh: ready ($(.venv/bin/tapveth --version))"
