#!/usr/bin/env bash
# Build kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, etcd and kwok from their
# published Go modules into $MICROPLANE_CACHE, keyed by version. Present binaries are reused.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
export GOFLAGS="${GOFLAGS:-} -buildvcs=false -trimpath" CGO_ENABLED=0

build() { # module-dir out-dir ldflags name=package...
  local mod=$1 out=$2 ldflags=$3; shift 3
  local spec name pkg t0
  for spec in "$@"; do
    name=${spec%%=*} pkg=${spec#*=}
    [[ -x "$out/$name" ]] && continue
    mkdir -p "$out"
    log "building $name ($pkg)"
    t0=$SECONDS
    (cd "$E2E_DIR/controlplane/$mod" && go build -ldflags "-s -w $ldflags" -o "$out/.$name.tmp" "$pkg")
    mv "$out/.$name.tmp" "$out/$name"
    log "built $name in $((SECONDS - t0))s"
  done
}

[[ -d "$E2E_DIR/controlplane/kubernetes-v$K8S_VERSION" ]] || {
  echo "no wrapper module for Kubernetes v$K8S_VERSION: run e2e/scripts/gen-modules.sh $K8S_VERSION" >&2; exit 1; }
minor=${K8S_VERSION#*.}; minor=${minor%%.*}
kv="-X k8s.io/component-base/version.gitVersion=v$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean"
kv="$kv -X k8s.io/client-go/pkg/version.gitVersion=v$K8S_VERSION -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=$minor"
build "kubernetes-v$K8S_VERSION" "$K8S_BIN" "$kv" \
  kube-apiserver=k8s.io/kubernetes/cmd/kube-apiserver \
  kube-controller-manager=k8s.io/kubernetes/cmd/kube-controller-manager \
  kube-scheduler=k8s.io/kubernetes/cmd/kube-scheduler \
  kubectl=k8s.io/kubernetes/cmd/kubectl
build etcd "$ETCD_BIN" "" etcd=go.etcd.io/etcd/server/v3
build kwok "$KWOK_BIN" "" kwok=sigs.k8s.io/kwok/cmd/kwok
