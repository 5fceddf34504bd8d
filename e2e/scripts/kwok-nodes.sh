#!/usr/bin/env bash
# Create (server-side apply; idempotent) N fake Nodes kwok-node-0..N-1 for the control plane of
# MICROPLANE_STATE, from e2e/kwok/node.yaml, and wait until kwok reports them Ready.
#   MICROPLANE_STATE=<dir> e2e/scripts/kwok-nodes.sh N
# Each has 32 cpu, 256Gi and 250 pods allocatable and no taints; kwok (started by
# controlplane-up.sh) makes pods scheduled there Running and Ready.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
n=${1:?usage: kwok-nodes.sh N}
[[ $n =~ ^[0-9]+$ ]] || { echo "N must be a number, not $n" >&2; exit 1; }
kubectl=("$K8S_BIN/kubectl" --kubeconfig "$MICROPLANE_STATE/kubeconfig")
((n > 0)) || exit 0
manifest=$(for ((i = 0; i < n; i++)); do echo "---"; sed "s/NODE_NAME/kwok-node-$i/g" "$E2E_DIR/kwok/node.yaml"; done)
# The same field manager as the Rust helper (ensure_kwok_nodes), so either may re-apply.
apply=(apply --server-side --force-conflicts --field-manager=microplane.dev/e2e -f -)
"${kubectl[@]}" "${apply[@]}" <<<"$manifest" >/dev/null
# Allocatable and capacity of Nodes that existed before (a create keeps the status, an update not).
"${kubectl[@]}" "${apply[@]}" --subresource=status <<<"$manifest" >/dev/null
nodes=(); for ((i = 0; i < n; i++)); do nodes+=("node/kwok-node-$i"); done
"${kubectl[@]}" wait --for=condition=Ready --timeout=60s "${nodes[@]}" >/dev/null
log "$n kwok node(s) Ready: kwok-node-0..kwok-node-$((n - 1))"
