#!/usr/bin/env bash
# Start etcd, kube-apiserver, kube-controller-manager and kube-scheduler as local processes on
# 127.0.0.1 with TLS, RBAC and service-account keys; write an admin kubeconfig; wait for /readyz.
# Then start kwok, which simulates the kubelets of fake nodes (e2e/kwok/, e2e/scripts/kwok-nodes.sh).
#   MICROPLANE_STATE=<dir> e2e/scripts/controlplane-up.sh
# Prints `export KUBECONFIG=...`. Stop with controlplane-down.sh (same MICROPLANE_STATE).
set -euo pipefail
. "$(dirname "$0")/lib.sh"

state=$(mkdir -p "$MICROPLANE_STATE" && cd "$MICROPLANE_STATE" && pwd)
pki=$state/pki
for b in "$K8S_BIN/kube-apiserver" "$K8S_BIN/kube-controller-manager" "$K8S_BIN/kube-scheduler" "$K8S_BIN/kubectl" "$ETCD_BIN/etcd" "$KWOK_BIN/kwok"; do
  [[ -x $b ]] || { echo "missing $b: run e2e/scripts/build-controlplane.sh (make controlplane)" >&2; exit 1; }
done

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

kubeconfig() { # file user
  cat >"$1" <<KC
apiVersion: v1
kind: Config
clusters:
- name: microplane-local
  cluster:
    server: https://127.0.0.1:$API_PORT
    certificate-authority: $pki/ca.crt
users:
- name: $2
  user:
    client-certificate: $pki/$2.crt
    client-key: $pki/$2.key
contexts:
- name: microplane-local
  context: {cluster: microplane-local, user: $2}
current-context: microplane-local
KC
}

start() { # name binary args...
  local name=$1 bin=$2; shift 2
  setsid "$bin" "$@" >"$state/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$state/pids/$name.pid"
}

probe() { curl -fsS --max-time 2 --cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key" "$1" >/dev/null 2>&1; }
wait_for() { # what url timeout-seconds
  local deadline=$((SECONDS + $3))
  until probe "$2"; do
    for p in "$state"/pids/*.pid; do
      kill -0 "$(cat "$p")" 2>/dev/null || { echo "$(basename "$p" .pid) exited; last log lines:" >&2; tail -20 "$state/logs/$(basename "$p" .pid).log" >&2; exit 1; }
    done
    ((SECONDS < deadline)) || { echo "timed out waiting for $1 ($2)" >&2; exit 1; }
    sleep 0.2
  done
}

running() { # name: its pid file names a live process of that binary
  local pid exe
  pid=$(cat "$state/pids/$1.pid" 2>/dev/null) || return 1
  exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1
  [[ $(basename "$exe") == "$1" ]]
}

# kwok plays the kubelet of every Node annotated kwok.x-k8s.io/node=fake (e2e/scripts/kwok-nodes.sh
# makes them): it marks them Ready, renews their Leases, and moves the pods bound to them through the
# stages in e2e/kwok/stages/ (node fast + lease heartbeat + pod fast: Running and Ready at once, with a
# pod IP; deleted pods are removed). It runs as its own identity, CN=microplane-kwok, with the RBAC of
# e2e/kwok/rbac.yaml. Its server (/healthz, /readyz, /metrics) listens on 127.0.0.1 only.
start_kwok() {
  cert kwok "/CN=microplane-kwok"; chmod 600 "$pki/kwok.key"
  kubeconfig "$state/kwok.kubeconfig" kwok
  "$K8S_BIN/kubectl" --kubeconfig "$state/kubeconfig" apply --server-side --force-conflicts \
    --field-manager=microplane.dev/controlplane -f "$E2E_DIR/kwok/rbac.yaml" >/dev/null
  local configs=(--config="$E2E_DIR/kwok/kwok.yaml") f
  for f in "$E2E_DIR"/kwok/stages/*.yaml; do configs+=(--config="$f"); done
  KWOK_PORT=$(free_port)
  sed -i '/^KWOK_PORT=/d' "$state/env"; echo "KWOK_PORT=$KWOK_PORT" >>"$state/env"
  # kwok would read ~/.kwok/kwok.yaml too when present; its work directory is kept in the state instead.
  mkdir -p "$state/kwok"; export KWOK_WORKDIR=$state/kwok
  start kwok "$KWOK_BIN/kwok" --kubeconfig="$state/kwok.kubeconfig" "${configs[@]}" \
    --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
    --server-address="127.0.0.1:$KWOK_PORT" \
    --tls-cert-file="$pki/localhost-serving.crt" --tls-private-key-file="$pki/localhost-serving.key"
  wait_for kwok "https://127.0.0.1:$KWOK_PORT/healthz" 60
}

if "$(dirname "$0")/controlplane-status.sh" >/dev/null 2>&1; then
  # A control plane started before kwok was part of it gets kwok added; the rest is left as it is.
  if ! running kwok; then
    . "$state/env"
    log "control plane already running in $state; starting kwok"
    start_kwok
  fi
  log "control plane already running in $state"
  echo "export KUBECONFIG=$state/kubeconfig"; exit 0
fi
"$(dirname "$0")/controlplane-down.sh" >/dev/null 2>&1 || true
rm -rf "$state/etcd" "$state/logs" "$state/pids"
mkdir -p "$pki" "$state/etcd" "$state/logs" "$state/pids"
t0=$(date +%s.%N)
# A start that fails half-way stops what it started, so the next start begins clean.
trap 'rc=$?; if ((rc != 0)); then log "start failed; stopping what was started"; "$(dirname "$0")/controlplane-down.sh" >/dev/null 2>&1; fi' EXIT

ETCD_PORT=$(free_port); ETCD_PEER_PORT=$(free_port); API_PORT=$(free_port); KCM_PORT=$(free_port); SCHED_PORT=$(free_port)

# --- PKI: a CA, serving certificates, client certificates, the service-account key pair. Kept across
# restarts of the same state directory; each piece is made when missing.
if [[ ! -f $pki/ca.crt ]]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 -subj "/CN=microplane-local-ca" \
    -keyout "$pki/ca.key" -out "$pki/ca.crt" 2>/dev/null
fi
cert apiserver "/CN=kube-apiserver" "IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
cert localhost-serving "/CN=localhost" "IP:127.0.0.1,DNS:localhost"
cert admin "/O=system:masters/CN=microplane-admin"
cert kube-controller-manager "/CN=system:kube-controller-manager"
cert kube-scheduler "/CN=system:kube-scheduler"
# The API server's identity towards kubelets (logs, exec, port-forward); authorized by the kubelet
# through RBAC (system:kubelet-api-admin, bound by node-up.sh).
cert apiserver-kubelet-client "/CN=kube-apiserver-kubelet-client"
if [[ ! -f $pki/sa.key ]]; then
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$pki/sa.key" 2>/dev/null
  openssl pkey -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
fi
chmod 600 "$pki"/*.key

kubeconfig "$state/kubeconfig" admin
kubeconfig "$state/kube-controller-manager.kubeconfig" kube-controller-manager
kubeconfig "$state/kube-scheduler.kubeconfig" kube-scheduler

start etcd "$ETCD_BIN/etcd" --name=local --data-dir="$state/etcd" \
  --listen-client-urls="http://127.0.0.1:$ETCD_PORT" --advertise-client-urls="http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster="local=http://127.0.0.1:$ETCD_PEER_PORT" --log-level=warn --unsafe-no-fsync

start kube-apiserver "$K8S_BIN/kube-apiserver" \
  --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
  --bind-address=127.0.0.1 --secure-port="$API_PORT" \
  --advertise-address=127.0.0.1 --endpoint-reconciler-type=none \
  --tls-cert-file="$pki/apiserver.crt" --tls-private-key-file="$pki/apiserver.key" \
  --client-ca-file="$pki/ca.crt" \
  --service-account-key-file="$pki/sa.pub" --service-account-signing-key-file="$pki/sa.key" \
  --service-account-issuer=https://kubernetes.default.svc.cluster.local \
  --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction \
  --service-cluster-ip-range="$SERVICE_CIDR" \
  --kubelet-client-certificate="$pki/apiserver-kubelet-client.crt" --kubelet-client-key="$pki/apiserver-kubelet-client.key" \
  --kubelet-certificate-authority="$pki/ca.crt" --kubelet-preferred-address-types=InternalIP \
  --allow-privileged=false --profiling=false --cert-dir="$state/pki/generated" --v=1

cat >"$state/env" <<ENV
API_PORT=$API_PORT
ETCD_PORT=$ETCD_PORT
KCM_PORT=$KCM_PORT
SCHED_PORT=$SCHED_PORT
KUBECONFIG=$state/kubeconfig
K8S_VERSION=$K8S_VERSION
ENV

# --- Wait for the API server, then for the controller manager and scheduler, then start kwok.
wait_for kube-apiserver "https://127.0.0.1:$API_PORT/readyz" 120
ready=$(python3 -c "import time; print(f'{time.time() - $t0:.1f}')")
# CRDs to install before kube-controller-manager starts (MICROPLANE_CRDS, a kustomize directory):
# its quota controller discovers resources at start and then every 30 s, and a ResourceQuota that
# counts a custom resource stays uncounted until then (a new tenant waits for that).
if [[ -n ${MICROPLANE_CRDS:-} ]]; then
  "$K8S_BIN/kubectl" --kubeconfig "$state/kubeconfig" apply --server-side --field-manager=microplane.dev/install -k "$MICROPLANE_CRDS" >/dev/null
  "$K8S_BIN/kubectl" --kubeconfig "$state/kubeconfig" wait --for condition=Established --timeout=60s crd -l '!none' >/dev/null
fi
# The controller manager and scheduler start once RBAC is bootstrapped (part of /readyz), or they
# fail reading the extension-apiserver-authentication ConfigMap.
start kube-controller-manager "$K8S_BIN/kube-controller-manager" \
  --kubeconfig="$state/kube-controller-manager.kubeconfig" \
  --authentication-kubeconfig="$state/kube-controller-manager.kubeconfig" \
  --authorization-kubeconfig="$state/kube-controller-manager.kubeconfig" \
  --bind-address=127.0.0.1 --secure-port="$KCM_PORT" \
  --tls-cert-file="$pki/localhost-serving.crt" --tls-private-key-file="$pki/localhost-serving.key" --leader-elect=false \
  --service-account-private-key-file="$pki/sa.key" --root-ca-file="$pki/ca.crt" \
  --use-service-account-credentials=true \
  --cluster-signing-cert-file="$pki/ca.crt" --cluster-signing-key-file="$pki/ca.key" \
  --kube-api-qps="${KCM_API_QPS:-200}" --kube-api-burst="${KCM_API_BURST:-400}" \
  --resource-quota-sync-period=20s \
  --profiling=false --v=1

start kube-scheduler "$K8S_BIN/kube-scheduler" \
  --kubeconfig="$state/kube-scheduler.kubeconfig" \
  --authentication-kubeconfig="$state/kube-scheduler.kubeconfig" \
  --authorization-kubeconfig="$state/kube-scheduler.kubeconfig" \
  --bind-address=127.0.0.1 --secure-port="$SCHED_PORT" \
  --tls-cert-file="$pki/localhost-serving.crt" --tls-private-key-file="$pki/localhost-serving.key" --leader-elect=false --profiling=false --v=1 \
  --kube-api-qps="${KCM_API_QPS:-200}" --kube-api-burst="${KCM_API_BURST:-400}"

wait_for kube-controller-manager "https://127.0.0.1:$KCM_PORT/healthz" 60
wait_for kube-scheduler "https://127.0.0.1:$SCHED_PORT/healthz" 60
start_kwok
log "control plane v$K8S_VERSION ready in ${ready}s (apiserver /readyz); state in $state"
echo "export KUBECONFIG=$state/kubeconfig"
