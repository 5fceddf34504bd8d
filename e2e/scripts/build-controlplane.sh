#!/usr/bin/env bash
# Build the control plane (kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, etcd,
# kwok) and the node (kubelet, kube-proxy, containerd, runc, CNI plugins, CoreDNS, the distribution
# registry, and crane for `make images`) from their published Go modules into $MICROPLANE_CACHE,
# keyed by version.
#
# A cached binary is reused only when it was built from the same inputs: next to each binary a
# `.NAME.key` holds the hash of its wrapper module's go.mod and go.sum, the package, the ldflags and
# the Go version. Anything else (a go.sum bumped by a new tool, a changed ldflag) rebuilds it, so a
# used cache holds exactly what a new machine would build. The Go build cache is shared: it is
# content-addressed, so it only ever saves time. Modules build concurrently (linking is
# single-threaded, so two builds keep two cores busy).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
export GOFLAGS="${GOFLAGS:-} -buildvcs=false -trimpath" CGO_ENABLED=0
# go.sum pins every module: a build that would need to change go.mod or go.sum fails instead.
export GOFLAGS="$GOFLAGS -mod=readonly"

go_version=$(go env GOVERSION)
# MICROPLANE_TOOLS=up (make up) builds what a running environment needs; the default, all, adds the
# tools only the tests use (kwok, the kstatus helper, Flux's controllers), so a first `make up` does
# not wait for them.
tools=${MICROPLANE_TOOLS:-all}
test_tools() { [[ $tools == all ]]; }

build() { # module-dir out-dir ldflags name=package...  (CGO_ENABLED and TAGS may be set per call)
  local mod=$1 out=$2 ldflags=$3; shift 3
  local dir="$E2E_DIR/controlplane/$mod" spec name pkg t0 key
  for spec in "$@"; do
    name=${spec%%=*} pkg=${spec#*=}
    key=$(cat "$dir/go.mod" "$dir/go.sum" <(printf '%s\n' "$pkg" "$ldflags" "$go_version" "$GOFLAGS" "$CGO_ENABLED" "${TAGS:-}") | sha256sum | cut -c1-64)
    if [[ -x "$out/$name" && "$(cat "$out/.$name.key" 2>/dev/null)" == "$key" ]]; then continue; fi
    mkdir -p "$out"
    log "building $name ($pkg)"
    t0=$SECONDS
    # A temporary name per run: two environments building at once never move each other's file.
    (cd "$dir" && go build -tags "${TAGS:-}" -ldflags "-s -w $ldflags" -o "$out/.$name.tmp.$$" "$pkg")
    mv "$out/.$name.tmp.$$" "$out/$name"
    echo "$key" > "$out/.$name.key"
    log "built $name in $((SECONDS - t0))s"
  done
}

[[ -d "$E2E_DIR/controlplane/kubernetes-v$K8S_VERSION" ]] || {
  echo "no wrapper module for Kubernetes v$K8S_VERSION: run e2e/scripts/gen-modules.sh $K8S_VERSION" >&2; exit 1; }
minor=${K8S_VERSION#*.}; minor=${minor%%.*}
kv="-X k8s.io/component-base/version.gitVersion=v$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean"
kv="$kv -X k8s.io/client-go/pkg/version.gitVersion=v$K8S_VERSION -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=$minor"

t_all=$SECONDS
pids=()
build "kubernetes-v$K8S_VERSION" "$K8S_BIN" "$kv" \
  kube-apiserver=k8s.io/kubernetes/cmd/kube-apiserver \
  kube-controller-manager=k8s.io/kubernetes/cmd/kube-controller-manager \
  kube-scheduler=k8s.io/kubernetes/cmd/kube-scheduler \
  kubectl=k8s.io/kubernetes/cmd/kubectl \
  kubelet=k8s.io/kubernetes/cmd/kubelet \
  kube-proxy=k8s.io/kubernetes/cmd/kube-proxy &
pids+=($!)
{ build etcd "$ETCD_BIN" "" etcd=go.etcd.io/etcd/server/v3
  build containerd "$CONTAINERD_BIN" "-X github.com/containerd/containerd/v2/version.Version=v$CONTAINERD_VERSION" \
    containerd=github.com/containerd/containerd/v2/cmd/containerd \
    containerd-shim-runc-v2=github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2 \
    ctr=github.com/containerd/containerd/v2/cmd/ctr
  # runc's nsenter is C, and seccomp (RuntimeDefault) needs libseccomp: cgo, linked to Debian's libseccomp.
  CGO_ENABLED=1 TAGS=seccomp build runc "$RUNC_BIN" "-X main.version=$RUNC_VERSION" runc=github.com/opencontainers/runc
  build kwok "$KWOK_BIN" "" kwok=sigs.k8s.io/kwok/cmd/kwok
  # Health for GitOps: the kstatus helper (its own source, so its hash is in the ldflags and the key)
  # and Flux's source-controller and kustomize-controller (e2e/scripts/flux-up.sh), one module for both.
  test_tools || exit 0
  build kstatus "$KSTATUS_BIN" "-X main.sourceSum=$(cat "$E2E_DIR"/controlplane/kstatus/*.go | sha256sum | cut -c1-16)" kstatus=.
  build flux "$SOURCE_CONTROLLER_BIN" "" source-controller=github.com/fluxcd/source-controller
  build flux "$KUSTOMIZE_CONTROLLER_BIN" "" kustomize-controller=github.com/fluxcd/kustomize-controller; } &
pids+=($!)
{ build cni "$CNI_BIN" "" \
    bridge=github.com/containernetworking/plugins/plugins/main/bridge \
    loopback=github.com/containernetworking/plugins/plugins/main/loopback \
    host-local=github.com/containernetworking/plugins/plugins/ipam/host-local \
    portmap=github.com/containernetworking/plugins/plugins/meta/portmap
  build coredns "$COREDNS_BIN" "" coredns=github.com/coredns/coredns
  build distribution "$REGISTRY_BIN" "-X github.com/distribution/distribution/v3/version.version=v$DISTRIBUTION_VERSION" \
    registry=github.com/distribution/distribution/v3/cmd/registry
  build crane "$CRANE_BIN" "" crane=github.com/google/go-containerregistry/cmd/crane
  # The builder image (build Jobs on the real node): BuildKit, and a runc linked statically (with
  # Debian's libseccomp.a) because the image has no C library for it to load.
  build buildkit "$BUILDKIT_BIN" "-X github.com/moby/buildkit/version.Version=v$BUILDKIT_VERSION" \
    buildkitd=github.com/moby/buildkit/cmd/buildkitd buildctl=github.com/moby/buildkit/cmd/buildctl
  CGO_ENABLED=1 TAGS="seccomp netgo osusergo" build runc "$BUILDKIT_BIN" "-X main.version=$RUNC_VERSION -extldflags -static" \
    runc=github.com/opencontainers/runc
  build helm "$HELM_BIN" "-X helm.sh/helm/v4/internal/version.version=v$HELM_VERSION -X helm.sh/helm/v4/internal/version.gitTreeState=clean" \
    helm=helm.sh/helm/v4/cmd/helm; } &
pids+=($!)
failed=0
for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
((failed == 0)) || { echo "build-controlplane: a build failed (see above)" >&2; exit 1; }
((SECONDS - t_all < 2)) || log "control-plane and node binaries ready in $((SECONDS - t_all))s"
