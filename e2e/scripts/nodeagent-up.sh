#!/usr/bin/env bash
# Start the dev build node of MICROPLANE_STATE: the node agent (e2e/nodeagent), registered as Node
# `microplane-builder`, labelled and tainted microplane.dev/builder=dev so that only the operator's
# build pods land on it (operator-up.sh gives them that node selector and toleration). It performs
# them itself until the real BuildKit build exists: clone, cargo (musl) or go build, the executable
# packaged on the base layer of `make images` and pushed with crane to the in-cluster registry,
# which it reaches at $NODE_IP:5000 (the node's localhost:5000). Every other pod runs on the real
# node (node-up.sh first). Its compiler caches live in MICROPLANE_BUILD_CACHE, outside the state
# directory, so they stay warm across `make test-e2e` runs. Its pid joins the control plane's pid
# files, so controlplane-down.sh stops it with the rest.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
state=$MICROPLANE_STATE
root=$(cd "$E2E_DIR/.." && pwd)
images=${MICROPLANE_IMAGES:-$root/target/images}
NODE_NAME=microplane-builder
bin=${MICROPLANE_NODEAGENT_BIN:-$root/target/debug/microplane-nodeagent}
[[ -x $bin ]] || { echo "missing $bin: cargo build -p microplane-nodeagent" >&2; exit 1; }
[[ -x $CRANE_BIN/crane ]] || { echo "missing $CRANE_BIN/crane: run make controlplane" >&2; exit 1; }
[[ -f $images/layers/base.tar ]] || { echo "missing $images/layers/base.tar: run make images" >&2; exit 1; }
[[ -f $state/netns.env ]] || { echo "start the node first (node-up.sh): the registry lives there" >&2; exit 1; }
. "$state/netns.env"
pidfile=$state/pids/microplane-nodeagent.pid
if [[ -f $pidfile ]] && [[ $(readlink "/proc/$(cat "$pidfile")/exe" 2>/dev/null) == *microplane-nodeagent* ]]; then
  log "build node already running (pid $(cat "$pidfile"))"; exit 0
fi
mkdir -p "$state/logs" "$state/pids" "$state/builder"
KUBECONFIG=$state/kubeconfig MICROPLANE_LOG=${MICROPLANE_LOG:-info} setsid "$bin" \
  --node "$NODE_NAME" --state-dir "$state/builder" \
  --builder-image "${MICROPLANE_BUILDER_IMAGE:-localhost/microplane/builder}" \
  --build-cache "${MICROPLANE_BUILD_CACHE:-$MICROPLANE_CACHE/nodeagent-build}" \
  --crane "$CRANE_BIN/crane" --base-layer "$images/layers/base.tar" --registry-address "$NODE_IP:5000" \
  >>"$state/logs/microplane-nodeagent.log" 2>&1 </dev/null &
echo $! >"$pidfile"
kubectl=("$K8S_BIN/kubectl" --kubeconfig "$state/kubeconfig")
if ! "${kubectl[@]}" wait --for=create "node/$NODE_NAME" --timeout=30s >/dev/null 2>&1; then
  echo "node $NODE_NAME did not register; last lines of $state/logs/microplane-nodeagent.log:" >&2
  tail -5 "$state/logs/microplane-nodeagent.log" >&2; exit 1
fi
"${kubectl[@]}" wait --for=condition=Ready "node/$NODE_NAME" --timeout=60s >/dev/null
log "build node ready: node $NODE_NAME (build pods only), pushing to $NODE_IP:5000; build logs in $state/builder/pods/<namespace>_<pod>_<uid>/{clone,build}.log"
