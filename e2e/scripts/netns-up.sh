#!/usr/bin/env bash
# Create the network namespace the pods of MICROPLANE_STATE live in, and route its pod range from the
# host through a veth pair. EndpointSlices reject loopback addresses, so pods get addresses of their
# own range, each a /32 on the namespace's loopback (added by the node agent). Traffic stays on this
# machine: host <-> veth <-> namespace. Writes $MICROPLANE_STATE/netns.env. Needs root (iproute2).
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
ip -n "$ns" link set lo up
ip link add "$host_if" type veth peer name "$ns_if" netns "$ns"
ip addr add "$host_ip/30" dev "$host_if"
ip link set "$host_if" up
ip -n "$ns" addr add "$ns_ip/30" dev "$ns_if"
ip -n "$ns" link set "$ns_if" up
ip route replace "$pod_cidr" via "$ns_ip" dev "$host_if"
ip -n "$ns" route add default via "$host_ip"
cat >"$state/netns.env" <<ENV
NETNS=$ns
POD_CIDR=$pod_cidr
HOST_IP=$host_ip
ENV
log "network namespace $ns: pods in $pod_cidr, reached from the host via $host_if"
