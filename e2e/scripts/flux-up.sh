#!/usr/bin/env bash
# Start Flux's source-controller and kustomize-controller (built by build-controlplane.sh from their Go
# modules) as host processes against the control plane of MICROPLANE_STATE, for the GitOps e2e suite
# (e2e/tests/gitops.rs): installs their CRDs (GitRepository, Kustomization, …) from the modules and the
# `flux-system` namespace, then runs both controllers with leader election off, their metrics and
# health servers on free 127.0.0.1 ports, and source-controller's artifact server on loopback, where
# kustomize-controller fetches the artifacts. Idempotent: controllers already running are left alone.
#   MICROPLANE_STATE=<dir> e2e/scripts/flux-up.sh
# Pid files in $state/pids (controlplane-down.sh stops them), logs in $state/logs, ports in $state/flux.env.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

state=$(cd "$MICROPLANE_STATE" && pwd)
kubectl=("$K8S_BIN/kubectl" --kubeconfig "$state/kubeconfig")
for b in "$SOURCE_CONTROLLER_BIN/source-controller" "$KUSTOMIZE_CONTROLLER_BIN/kustomize-controller" "$K8S_BIN/kubectl"; do
  [[ -x $b ]] || { echo "missing $b: run e2e/scripts/build-controlplane.sh (make controlplane)" >&2; exit 1; }
done
[[ -f $state/kubeconfig ]] || { echo "no control plane in $state: run e2e/scripts/controlplane-up.sh" >&2; exit 1; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
running() { # name: its pid file names a live process of that binary
  local pid exe
  pid=$(cat "$state/pids/$1.pid" 2>/dev/null) || return 1
  exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1
  exe=${exe% (deleted)}
  [[ $(basename "$exe") == "$1" ]]
}
start() { # name binary args...
  local name=$1 bin=$2; shift 2
  setsid "$bin" "$@" >"$state/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$state/pids/$name.pid"
}
wait_healthy() { # name port
  local deadline=$((SECONDS + 60))
  until curl -fsS --max-time 2 "http://127.0.0.1:$2/readyz" >/dev/null 2>&1; do
    running "$1" || { echo "$1 exited; last log lines:" >&2; tail -20 "$state/logs/$1.log" >&2; exit 1; }
    ((SECONDS < deadline)) || { echo "timed out waiting for $1 (127.0.0.1:$2/readyz)" >&2; exit 1; }
    sleep 0.2
  done
}

if running source-controller && running kustomize-controller; then
  log "flux already running in $state"; exit 0
fi
mkdir -p "$state/logs" "$state/pids" "$state/flux/storage"

# The CRDs ship in the module zips (config/crd/bases); go.sum of the wrapper module pins them.
moddir() { (cd "$E2E_DIR/controlplane/flux" && GOFLAGS=-mod=readonly go mod download -json "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])'); }
src=$(moddir "github.com/fluxcd/source-controller@v$FLUX_SOURCE_CONTROLLER_VERSION")
kus=$(moddir "github.com/fluxcd/kustomize-controller@v$FLUX_KUSTOMIZE_CONTROLLER_VERSION")
# source-controller runs a controller for each of its kinds and will not start without all of them.
crds=("$src"/config/crd/bases/*.yaml "$kus"/config/crd/bases/*.yaml)
"${kubectl[@]}" apply --server-side --force-conflicts --field-manager=microplane.dev/flux-up "${crds[@]/#/-f}" >/dev/null
"${kubectl[@]}" wait --for condition=Established --timeout=60s "${crds[@]/#/-f}" >/dev/null
"${kubectl[@]}" create namespace flux-system --dry-run=client -o yaml \
  | "${kubectl[@]}" apply --server-side --field-manager=microplane.dev/flux-up -f - >/dev/null

# Each controller is stopped and started together with its ports, so a half-started pair is redone.
for name in source-controller kustomize-controller; do
  if running "$name"; then kill -TERM "$(cat "$state/pids/$name.pid")"; fi
  rm -f "$state/pids/$name.pid"
done
STORAGE_PORT=$(free_port)
SC_METRICS=$(free_port); SC_HEALTH=$(free_port); KC_METRICS=$(free_port); KC_HEALTH=$(free_port)
cat >"$state/flux.env" <<ENV
STORAGE_PORT=$STORAGE_PORT
SOURCE_CONTROLLER_HEALTH=$SC_HEALTH
SOURCE_CONTROLLER_METRICS=$SC_METRICS
KUSTOMIZE_CONTROLLER_HEALTH=$KC_HEALTH
KUSTOMIZE_CONTROLLER_METRICS=$KC_METRICS
ENV

# Both run with the environment's admin kubeconfig: a test harness, where the Kustomizations apply
# whatever the suites put in git (tenants are cluster-scoped) without a ServiceAccount per tenant.
# A real installation runs them in-cluster with their own RBAC (docs/gitops.md).
export KUBECONFIG=$state/kubeconfig RUNTIME_NAMESPACE=flux-system
start source-controller "$SOURCE_CONTROLLER_BIN/source-controller" \
  --enable-leader-election=false --events-addr= \
  --metrics-addr="127.0.0.1:$SC_METRICS" --health-addr="127.0.0.1:$SC_HEALTH" \
  --storage-path="$state/flux/storage" \
  --storage-addr="127.0.0.1:$STORAGE_PORT" --storage-adv-addr="127.0.0.1:$STORAGE_PORT" \
  --log-level=info
# A Kustomization whose dependsOn is not Ready yet is retried after --requeue-dependency (30 s by
# default); 5 s keeps the suites' tenant-then-apps chains short.
start kustomize-controller "$KUSTOMIZE_CONTROLLER_BIN/kustomize-controller" \
  --enable-leader-election=false --events-addr= \
  --metrics-addr="127.0.0.1:$KC_METRICS" --health-addr="127.0.0.1:$KC_HEALTH" \
  --no-remote-bases=true --requeue-dependency=5s --log-level=info
wait_healthy source-controller "$SC_HEALTH"
wait_healthy kustomize-controller "$KC_HEALTH"
log "flux source-controller v$FLUX_SOURCE_CONTROLLER_VERSION and kustomize-controller v$FLUX_KUSTOMIZE_CONTROLLER_VERSION running; state in $state"
