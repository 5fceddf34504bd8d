#!/usr/bin/env bash
# Run a command inside the real node of MICROPLANE_STATE (its network and mount namespaces), with
# the node's tools on PATH. Examples:
#   e2e/scripts/node-exec.sh ctr -n k8s.io containers ls
#   e2e/scripts/node-exec.sh ctr -n k8s.io images ls -q
#   e2e/scripts/node-exec.sh nft list ruleset
set -euo pipefail
. "$(dirname "$0")/lib.sh"
pid=$(cat "$MICROPLANE_STATE/node/pids/node.pid" 2>/dev/null) && kill -0 "$pid" 2>/dev/null ||
  { echo "no node running for $MICROPLANE_STATE (node-up.sh)" >&2; exit 1; }
PATH=$CONTAINERD_BIN:$RUNC_BIN:$K8S_BIN:$PATH exec nsenter --target "$pid" --mount --net -- "$@"
