#!/bin/sh
# The classic veth experiment. The only line that differs from the kernel version is marked:
#   kernel: ip link add veth1 type veth peer name veth2
# Run as root with a tapveth daemon running (tapveth daemon &, or systemctl start tapveth).
# Makes namespaces ns1/ns2 (10.0.0.1-2/24 inside them) and removes them at the end.
# NS1, NS2, V1, V2 and TAPVETH may be set to use other names or another tapveth command.
set -eu
TAPVETH=${TAPVETH:-tapveth}
NS1=${NS1:-ns1} NS2=${NS2:-ns2} V1=${V1:-veth1} V2=${V2:-veth2}
ip netns add "$NS1"
trap 'ip netns del "$NS1"' EXIT
ip netns add "$NS2"
trap 'ip netns del "$NS1"; ip netns del "$NS2"' EXIT
$TAPVETH add "$V1" peer name "$V2"            # <- the one line that differs
ip link set "$V1" netns "$NS1"
ip link set "$V2" netns "$NS2"
ip netns exec "$NS1" ip addr add 10.0.0.1/24 dev "$V1"
ip netns exec "$NS1" ip link set "$V1" up
ip netns exec "$NS2" ip addr add 10.0.0.2/24 dev "$V2"
ip netns exec "$NS2" ip link set "$V2" up
ip netns exec "$NS1" ping -c 4 -i 0.2 10.0.0.2
