#!/usr/bin/env bash
# Exit 0 when the real node of MICROPLANE_STATE runs: its anchor, containerd and the kubelet are alive.
set -uo pipefail
. "$(dirname "$0")/lib.sh"
for n in node containerd kubelet kube-proxy; do
  pid=$(cat "$MICROPLANE_STATE/node/pids/$n.pid" 2>/dev/null) || exit 1
  kill -0 "$pid" 2>/dev/null || exit 1
done
