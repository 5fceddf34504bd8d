#!/usr/bin/env bash
# Exit 0 when the control plane of MICROPLANE_STATE runs and its API server is ready.
set -uo pipefail
. "$(dirname "$0")/lib.sh"
[[ -f $MICROPLANE_STATE/env ]] || exit 1
. "$MICROPLANE_STATE/env"
for n in etcd kube-apiserver kube-controller-manager kube-scheduler; do
  pid=$(cat "$MICROPLANE_STATE/pids/$n.pid" 2>/dev/null) || exit 1
  kill -0 "$pid" 2>/dev/null || exit 1
done
pki=$MICROPLANE_STATE/pki
curl -fsS --max-time 2 --cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key" "https://127.0.0.1:$API_PORT/readyz"
