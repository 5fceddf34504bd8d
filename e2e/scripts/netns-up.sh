#!/usr/bin/env bash
# Create the network namespace the node of MICROPLANE_STATE lives in: the kubelet, containerd,
# kube-proxy and every pod's veth sit inside it, and the host reaches it through a veth pair:
#   host  HOST_IP/30 (mphN) <-> NODE_IP/30 (mpnN)  node namespace mpN
# The host routes POD_CIDR to NODE_IP, so processes on the host (the gateway, tests) reach pod
# addresses, as a cluster's nodes do. The namespace has no default route: a pod or the node reaches
# the host's veth address and its own ranges, never an address outside this machine. The service
# range is routed to an empty bridge, so traffic the node itself sends to a ClusterIP has a route to
# be DNATed on and nowhere to leak. Writes $MICROPLANE_STATE/netns.env. Needs root (iproute2).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
state=$(mkdir -p "$MICROPLANE_STATE" && cd "$MICROPLANE_STATE" && pwd)
# One small index per state directory keeps names and ranges of several environments apart.
idx=$(( $(printf '%s' "$state" | cksum | cut -d' ' -f1) % 40 ))
ns=mp$idx host_if=mph$idx ns_if=mpn$idx
pod_cidr=10.$((200 + idx)).0.0/24 host_ip=10.199.$idx.1 ns_ip=10.199.$idx.2
if ip netns list | grep -qw "$ns"; then
  if [[ -f $state/netns.env ]] && grep -q "NETNS=$ns$" "$state/netns.env"; then
    log "network namespace $ns exists"; exit 0
  fi
  echo "network namespace $ns exists but belongs to another environment" >&2; exit 1
fi
ip netns add "$ns"
in_ns() { nsenter --net="/run/netns/$ns" -- "$@"; }
ip -n "$ns" link set lo up
ip link add "$host_if" type veth peer name "$ns_if" netns "$ns"
ip addr add "$host_ip/30" dev "$host_if"
ip link set "$host_if" up
ip -n "$ns" addr add "$ns_ip/30" dev "$ns_if"
ip -n "$ns" link set "$ns_if" up
ip route replace "$pod_cidr" via "$ns_ip" dev "$host_if"
# The node forwards between the host veth and the pods' bridge; bridged pod traffic passes
# netfilter, so a pod reaching a Service whose endpoint is on the same bridge gets its reply
# un-NATed (these sysctls belong to the namespace, not the host).
in_ns sysctl -qw net.ipv4.ip_forward=1
in_ns sysctl -qw net.bridge.bridge-nf-call-iptables=1 2>/dev/null || log "no br_netfilter: same-node Service hairpin traffic may fail"
ip -n "$ns" link add mpsvc type bridge
ip -n "$ns" link set mpsvc up
ip -n "$ns" route add "$SERVICE_CIDR" dev mpsvc
cat >"$state/netns.env" <<ENV
NETNS=$ns
POD_CIDR=$pod_cidr
HOST_IP=$host_ip
NODE_IP=$ns_ip
ENV
log "network namespace $ns: node $ns_ip, pods in $pod_cidr, reached from the host via $host_if"
