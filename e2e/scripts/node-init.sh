#!/usr/bin/env bash
# The node's first process, started by node-up.sh inside the node's network namespace and a fresh
# mount namespace (propagation slave: the host's mounts show here, the node's never reach the host).
# It gives the node its own /run, /var/lib and /var/log, starts the apiserver bridge, containerd,
# imports the images, starts the kubelet and kube-proxy, and stays as the namespace's anchor
# (node-exec.sh enters the node through its pid). Not meant to be run by hand.
set -euo pipefail
log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
: "${CGROUP_ROOT:?}" "${NODE_DIR:?}" "${API_PORT:?}" "${NODE_NAME:?}" "${NODE_IP:?}" "${LOGS:?}" "${IMAGES:?}"

readlink /proc/self/ns/mnt >"$NODE_DIR/mntns"
mount -t tmpfs -o mode=755 microplane-node-run /run
mount --bind "$NODE_DIR/var-lib" /var/lib
mount --bind "$NODE_DIR/var-log" /var/log
mkdir -p /run/containerd /var/lib/kubelet /var/lib/containerd /var/log/pods /var/log/containers

start() { # name binary args...
  local name=$1; shift
  "$@" >>"$LOGS/$name.log" 2>&1 </dev/null &
  echo $! >"$NODE_DIR/pids/$name.pid"
}

# The API server inside the namespace, at the same port on every node address.
start apiserver-bridge-node socat "TCP-LISTEN:$API_PORT,fork,reuseaddr" "UNIX-CONNECT:$NODE_DIR/apiserver.sock"

export PATH=$CONTAINERD_BIN:$PATH
start containerd "$CONTAINERD_BIN/containerd" --config "$NODE_DIR/config/containerd.toml"
for _ in $(seq 300); do
  [[ -S /run/containerd/containerd.sock ]] && "$CONTAINERD_BIN/ctr" version >/dev/null 2>&1 && break
  kill -0 "$(cat "$NODE_DIR/pids/containerd.pid")" || { log "containerd exited"; exit 1; }
  sleep 0.1
done
log "containerd up"

# Images built here (make images): imported under the names they carry, never pulled.
rm -rf "$NODE_DIR/loaded"; mkdir -p "$NODE_DIR/loaded"
for tar in "$IMAGES"/*.tar; do
  "$CONTAINERD_BIN/ctr" -n k8s.io images import "$tar" >/dev/null 2>&1 || { log "cannot import $tar"; exit 1; }
  key=$(cat "$tar.key" 2>/dev/null || sha256sum "$tar" | cut -c1-64)
  echo "$key" >"$NODE_DIR/loaded/$(basename "$tar")"
done
log "imported $(ls "$IMAGES"/*.tar | wc -l) images"

# The kubelet's cgroups (cgroupRoot /microplane-N in every hierarchy) must exist before it starts.
if [[ -f /sys/fs/cgroup/cgroup.controllers ]]; then
  mkdir -p "/sys/fs/cgroup/$CGROUP_ROOT"
else
  for h in /sys/fs/cgroup/*/; do
    [[ -f $h/cgroup.procs ]] && mkdir -p "$h$CGROUP_ROOT"
  done
fi
start kubelet "$K8S_BIN/kubelet" --config "$NODE_DIR/config/kubelet.yaml" \
  --kubeconfig "$NODE_DIR/config/kubelet.kubeconfig" --hostname-override "$NODE_NAME" \
  --node-ip "$NODE_IP" --v=1
start kube-proxy "$K8S_BIN/kube-proxy" --config "$NODE_DIR/config/kube-proxy.yaml" --v=1

# Anchor: the namespace lives while its processes do; exit when the kubelet does.
wait "$(cat "$NODE_DIR/pids/kubelet.pid")"
log "kubelet exited"
