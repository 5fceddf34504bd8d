# Shared settings of the control-plane scripts. Sourced, not run.
E2E_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# versions.env holds the defaults; a version already in the environment (`make test K8S_VERSION=…`) wins.
_override_k8s=${K8S_VERSION:-}
# shellcheck source=../versions.env
. "$E2E_DIR/versions.env"
K8S_VERSION=${_override_k8s:-$K8S_VERSION}
# Binaries are built once per version into a cache outside the repository.
MICROPLANE_CACHE=${MICROPLANE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/microplane}
K8S_BIN="$MICROPLANE_CACHE/kubernetes-v$K8S_VERSION"
ETCD_BIN="$MICROPLANE_CACHE/etcd-v$ETCD_VERSION"
KWOK_BIN="$MICROPLANE_CACHE/kwok-v$KWOK_VERSION"
# The node's components (kubelet and kube-proxy live in K8S_BIN).
CONTAINERD_BIN="$MICROPLANE_CACHE/containerd-v$CONTAINERD_VERSION"
RUNC_BIN="$MICROPLANE_CACHE/runc-v$RUNC_VERSION"
CNI_BIN="$MICROPLANE_CACHE/cni-plugins-v$CNI_PLUGINS_VERSION"
COREDNS_BIN="$MICROPLANE_CACHE/coredns-v$COREDNS_VERSION"
REGISTRY_BIN="$MICROPLANE_CACHE/distribution-v$DISTRIBUTION_VERSION"
CRANE_BIN="$MICROPLANE_CACHE/crane-v$CRANE_VERSION"
HELM_BIN="$MICROPLANE_CACHE/helm-v$HELM_VERSION"
# Cluster-wide address plan (every environment has its own node namespace, so they may share it).
SERVICE_CIDR=10.96.0.0/16
CLUSTER_DNS=10.96.0.10
# Runtime state of one control plane (certificates, etcd data, logs, pids, kubeconfig).
MICROPLANE_STATE=${MICROPLANE_STATE:-$E2E_DIR/../.state/controlplane}
log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# A certificate signed by the environment's CA ($pki/ca.crt, $pki/ca.key), made when missing:
#   cert NAME SUBJECT [SERVING-SANS]   (without SANs a client certificate)
cert() {
  [[ -f $pki/$1.crt ]] && return
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "$2" -keyout "$pki/$1.key" -out "$pki/$1.csr" 2>/dev/null
  local ext; ext=$(mktemp)
  if [[ -n ${3:-} ]]; then printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\n' "$3" >"$ext"
  else printf 'extendedKeyUsage=clientAuth\n' >"$ext"; fi
  openssl x509 -req -in "$pki/$1.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial -days 3650 \
    -extfile "$ext" -out "$pki/$1.crt" 2>/dev/null
  rm -f "$ext" "$pki/$1.csr"; chmod 600 "$pki/$1.key"
}
# Health for GitOps: the kstatus helper and Flux's controllers (e2e/scripts/flux-up.sh).
KSTATUS_BIN="$MICROPLANE_CACHE/kstatus-v$KSTATUS_VERSION"
SOURCE_CONTROLLER_BIN="$MICROPLANE_CACHE/source-controller-v$FLUX_SOURCE_CONTROLLER_VERSION"
KUSTOMIZE_CONTROLLER_BIN="$MICROPLANE_CACHE/kustomize-controller-v$FLUX_KUSTOMIZE_CONTROLLER_VERSION"
# The builder image's BuildKit (e2e/scripts/build-images.sh packages it with a static runc).
BUILDKIT_BIN="$MICROPLANE_CACHE/buildkit-v$BUILDKIT_VERSION"
