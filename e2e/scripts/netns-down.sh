#!/usr/bin/env bash
# Remove the network namespace of MICROPLANE_STATE (and anything still running in it).
set -uo pipefail
. "$(dirname "$0")/lib.sh"
env_file=$MICROPLANE_STATE/netns.env
[[ -f $env_file ]] || exit 0
. "$env_file"
if ip netns list | grep -qw "$NETNS"; then
  pids=$(ip netns pids "$NETNS" 2>/dev/null)
  [[ -n $pids ]] && kill -KILL $pids 2>/dev/null
  ip route del "$POD_CIDR" 2>/dev/null
  ip netns del "$NETNS"
  log "removed network namespace $NETNS"
fi
rm -f "$env_file"
