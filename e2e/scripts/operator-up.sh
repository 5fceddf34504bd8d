#!/usr/bin/env bash
# Start the operator (target/debug/microplane-operator unless MICROPLANE_OPERATOR_BIN says otherwise)
# against the control plane of MICROPLANE_STATE, as its own ServiceAccount with exactly the RBAC of
# config/rbac. Its pid joins the control plane's pid files, so controlplane-down.sh stops it too.
# Writes "<pid> <admin-address> <sync-address>" to $MICROPLANE_STATE/operator.info. Extra arguments go
# to the operator. The gateway sync token ($MICROPLANE_STATE/sync-token) and the gateway's port
# ($MICROPLANE_STATE/gateway.port) are made on first use and shared with gateway-up.sh. Build pods
# go to the dev build node (nodeagent-up.sh: label and taint microplane.dev/builder=dev); images
# are pushed to the in-cluster registry, which the node pulls as localhost:5000.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
state=$MICROPLANE_STATE
root=$(cd "$E2E_DIR/.." && pwd)
bin=${MICROPLANE_OPERATOR_BIN:-$root/target/debug/microplane-operator}
kubectl=("$K8S_BIN/kubectl" --kubeconfig "$state/kubeconfig")
[[ -x $bin ]] || { echo "missing $bin: cargo build -p microplane-operator" >&2; exit 1; }

if [[ -f $state/pids/microplane-operator.pid ]]; then
  pid=$(cat "$state/pids/microplane-operator.pid")
  if [[ $(readlink "/proc/$pid/exe" 2>/dev/null) == *microplane-operator* ]]; then
    kill -TERM "$pid"
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
fi

"${kubectl[@]}" apply --server-side --field-manager=microplane.dev/install -f "$root/config/manager/namespace.yaml" -f "$root/config/rbac/operator.yaml" -f "$root/config/rbac/tenant-admin.yaml" -f "$root/config/rbac/flowschema.yaml" >/dev/null
token=$("${kubectl[@]}" create token microplane-operator -n microplane-system --duration=24h)
server=$(awk '/server:/ {print $2; exit}' "$state/kubeconfig")
cat >"$state/operator.kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster: {server: "$server", certificate-authority: "$state/pki/ca.crt"}
users:
- name: microplane-operator
  user: {token: "$token"}
contexts:
- name: local
  context: {cluster: local, user: microplane-operator}
current-context: local
KC
chmod 600 "$state/operator.kubeconfig"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port=$(free_port)
# Stable across restarts, so a running gateway reconnects to the new operator.
[[ -s $state/sync.port ]] || free_port >"$state/sync.port"
sync_port=$(cat "$state/sync.port")
if [[ ! -s $state/sync-token ]]; then
  (umask 077; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$state/sync-token")
fi
[[ -s $state/gateway.port ]] || echo "${MICROPLANE_GATEWAY_PORT:-$(free_port)}" >"$state/gateway.port"
mkdir -p "$state/logs" "$state/pids"
KUBECONFIG=$state/operator.kubeconfig MICROPLANE_LOG=${MICROPLANE_LOG:-info,microplane_operator=debug} \
  setsid "$bin" --admin-address "127.0.0.1:$port" --lease-namespace microplane-system \
  --sync-address "127.0.0.1:$sync_port" --sync-token-file "$state/sync-token" \
  --gateway-url "http://localhost:$(cat "$state/gateway.port")" \
  --allow-insecure-git-urls --git-cache-dir "$state/git-cache" --registry localhost:5000 \
  --builder-image localhost/microplane/builder:dev --clone-image localhost/microplane/git:dev \
  --build-node-selector microplane.dev/builder=dev --build-toleration microplane.dev/builder=dev:NoSchedule "$@" \
  >>"$state/logs/microplane-operator.log" 2>&1 </dev/null &
pid=$!
echo "$pid" >"$state/pids/microplane-operator.pid"
echo "$pid 127.0.0.1:$port 127.0.0.1:$sync_port" >"$state/operator.info"
for _ in $(seq 300); do
  if curl -fsS --max-time 1 "http://127.0.0.1:$port/readyz" >/dev/null 2>&1; then
    log "operator ready (pid $pid, admin 127.0.0.1:$port, log $state/logs/microplane-operator.log)"
    exit 0
  fi
  kill -0 "$pid" 2>/dev/null || { tail -20 "$state/logs/microplane-operator.log" >&2; exit 1; }
  sleep 0.1
done
echo "operator not ready after 30s; see $state/logs/microplane-operator.log" >&2
exit 1
