#!/usr/bin/env bash
# Start the dev node agent for MICROPLANE_STATE: a Node `microplane-node` whose pods run as processes
# of target/debug binaries inside the environment's network namespace (netns-up.sh first), and which
# performs the operator's build Jobs itself (pods running MICROPLANE_BUILDER_IMAGE). Its compiler
# caches live in MICROPLANE_BUILD_CACHE, outside the state directory, so they stay warm across
# `make test-e2e` runs. Its pid joins the control plane's pid files, so controlplane-down.sh stops it
# with the rest.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
state=$MICROPLANE_STATE
root=$(cd "$E2E_DIR/.." && pwd)
bin=${MICROPLANE_NODEAGENT_BIN:-$root/target/debug/microplane-nodeagent}
[[ -x $bin ]] || { echo "missing $bin: cargo build -p microplane-nodeagent" >&2; exit 1; }
[[ -f $state/netns.env ]] || "$(dirname "$0")/netns-up.sh"
. "$state/netns.env"
pidfile=$state/pids/microplane-nodeagent.pid
if [[ -f $pidfile ]] && [[ $(readlink "/proc/$(cat "$pidfile")/exe" 2>/dev/null) == *microplane-nodeagent* ]]; then
  log "node agent already running (pid $(cat "$pidfile"))"; exit 0
fi
mkdir -p "$state/logs" "$state/pids" "$state/node"
KUBECONFIG=$state/kubeconfig MICROPLANE_LOG=${MICROPLANE_LOG:-info} setsid "$bin" \
  --node microplane-node --netns "$NETNS" --pod-cidr "$POD_CIDR" \
  --bin-dir "${MICROPLANE_BIN_DIR:-$root/target/debug}" --state-dir "$state/node" \
  --builder-image "${MICROPLANE_BUILDER_IMAGE:-localhost/microplane/builder}" \
  --build-cache "${MICROPLANE_BUILD_CACHE:-$MICROPLANE_CACHE/nodeagent-build}" \
  >>"$state/logs/microplane-nodeagent.log" 2>&1 </dev/null &
echo $! >"$pidfile"
"$K8S_BIN/kubectl" --kubeconfig "$state/kubeconfig" wait --for=create node/microplane-node --timeout=30s >/dev/null
"$K8S_BIN/kubectl" --kubeconfig "$state/kubeconfig" wait --for=condition=Ready node/microplane-node --timeout=60s >/dev/null
log "node agent ready: node microplane-node, pods in $POD_CIDR (netns $NETNS), logs: e2e/scripts/pod-logs.sh NAMESPACE POD"
