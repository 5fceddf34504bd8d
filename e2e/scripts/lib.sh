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
# Cluster-wide address plan (every environment has its own node namespace, so they may share it).
SERVICE_CIDR=10.96.0.0/16
CLUSTER_DNS=10.96.0.10
# Runtime state of one control plane (certificates, etcd data, logs, pids, kubeconfig).
MICROPLANE_STATE=${MICROPLANE_STATE:-$E2E_DIR/../.state/controlplane}
log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
