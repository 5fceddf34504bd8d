#!/usr/bin/env bash
# Stop the real node of MICROPLANE_STATE (node-up.sh) and leave nothing behind: the kubelet first
# (so it restarts nothing), then every container (all processes in the node's cgroups under
# /microplane-N), then every process left in the node's mount namespace (shims, containerd,
# kube-proxy, the apiserver bridge), then the host side of the bridge. The node's mounts vanish
# with its mount namespace; its cgroups are removed; its data (images, snapshots) is deleted, its
# logs are kept in $MICROPLANE_STATE/logs and node/var-log until the next start.
set -uo pipefail
. "$(dirname "$0")/lib.sh"
node=$MICROPLANE_STATE/node
[[ -d $node ]] || exit 0
idx=
[[ -f $MICROPLANE_STATE/netns.env ]] && idx=$(. "$MICROPLANE_STATE/netns.env"; echo "${NETNS#mp}")

stop_pid() { # name
  local f=$node/pids/$1.pid pid
  [[ -f $f ]] || return 0
  pid=$(cat "$f")
  if kill -TERM "$pid" 2>/dev/null; then
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null && log "killed $1 ($pid) after 10s"
  fi
  rm -f "$f"
}
# The Node and its pods go with it, as when a node is removed from a cluster: controllers make new
# pods for the next start instead of waiting for these to be found dead (only when the API answers).
kubectl=("$K8S_BIN/kubectl" --kubeconfig "$MICROPLANE_STATE/kubeconfig" --request-timeout=5s)
if [[ -s $node/pids/kubelet.pid ]] && "${kubectl[@]}" get node microplane-node >/dev/null 2>&1; then
  "${kubectl[@]}" delete node microplane-node --wait=false >/dev/null 2>&1
  "${kubectl[@]}" delete pods -A --field-selector spec.nodeName=microplane-node --grace-period=0 --force --wait=false >/dev/null 2>&1
fi
stop_pid kubelet

cgroup_procs() { [[ -n $idx ]] && find /sys/fs/cgroup/*/"microplane-$idx" -name cgroup.procs -exec cat {} + 2>/dev/null | sort -u; }
for _ in 1 2 3; do
  procs=$(cgroup_procs)
  [[ -z $procs ]] && break
  kill -KILL $procs 2>/dev/null
  sleep 0.2
done

if [[ -s $node/mntns ]]; then
  mntns=$(cat "$node/mntns")
  for _ in 1 2 3; do
    pids=()
    for p in /proc/[0-9]*; do
      [[ $(readlink "$p/ns/mnt" 2>/dev/null) == "$mntns" ]] && pids+=("${p#/proc/}")
    done
    ((${#pids[@]})) || break
    kill -KILL "${pids[@]}" 2>/dev/null
    sleep 0.2
  done
  rm -f "$node/mntns"
fi
stop_pid apiserver-bridge
rm -f "$node"/pids/*.pid "$node/apiserver.sock"

# Cgroups, deepest first.
if [[ -n $idx ]]; then
  find /sys/fs/cgroup/*/"microplane-$idx" -depth -type d -exec rmdir {} + 2>/dev/null
fi
# The node's data: images and container snapshots (no mount holds them once the namespace is gone).
rm -rf "$node/var-lib"
log "node of $MICROPLANE_STATE stopped"
