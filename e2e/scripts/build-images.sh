#!/usr/bin/env bash
# `make images`: build the OCI images the local node runs, on this machine, from static binaries,
# with no base image pulled and no Docker engine. Writes one image tarball per image to
# $MICROPLANE_IMAGES (default target/images/), which node-up.sh imports into the node's containerd.
#
#   product images (what users run; the Dockerfile builds the same from source):
#     ghcr.io/microplane-dev/microplane-operator:<version>   operator (musl, static)
#     ghcr.io/microplane-dev/microplane-gateway:<version>    gateway (musl, static) and the built dashboard
#                                                            (dashboard/dist → /usr/share/microplane/dashboard)
#     ghcr.io/microplane-dev/helloworld:<version>            helloworld and helloworld-call
#   the node's add-ons:
#     localhost/microplane/pause:<tag>       kubernetes' own pause.c, gcc -static
#     localhost/microplane/coredns:v<ver>    CoreDNS from its Go module (CGO off: static)
#     localhost/microplane/registry:v<ver>   distribution's registry from its Go module
#     localhost/microplane/kubectl:v<ver>    kubectl (the control plane's), for in-cluster checks
#
# Every image is the same two layers: a base (passwd/group with the nonroot user 65532, the CA
# bundle, an empty /tmp) and the binary; entrypoint the binary, user 65532:65532. crane
# (go-containerregistry) assembles them against a throwaway registry on 127.0.0.1 and saves each as
# a tarball. Inputs are hashed: an image whose inputs did not change is not rebuilt.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
root=$(cd "$E2E_DIR/.." && pwd)
out=${MICROPLANE_IMAGES:-$root/target/images}
version=$(awk -F'"' '/^\[workspace.package\]/ {p=1} p && /^version/ {print $2; exit}' "$root/Cargo.toml")
crane=$CRANE_BIN/crane
[[ -x $crane && -x $REGISTRY_BIN/registry && -x $COREDNS_BIN/coredns && -x $K8S_BIN/kubectl ]] ||
  { echo "missing crane, registry or coredns in $MICROPLANE_CACHE: run make controlplane" >&2; exit 1; }
mkdir -p "$out"
work=$(mktemp -d)
reg_pid=
cleanup() { [[ -n $reg_pid ]] && kill "$reg_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
t0=$SECONDS

# --- Static binaries.
# pause: the kubelet's sandbox process, from the Kubernetes module's own source.
pause_bin=$MICROPLANE_CACHE/pause-$PAUSE_VERSION/pause
if [[ ! -x $pause_bin ]]; then
  src=$(cd "$E2E_DIR/controlplane/kubernetes-v$K8S_VERSION" && go mod download -json k8s.io/kubernetes | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
  mkdir -p "$(dirname "$pause_bin")"
  gcc -Os -static -Wall -Werror -DVERSION="v$PAUSE_VERSION-microplane" -o "$pause_bin.tmp" "$src/build/pause/linux/pause.c"
  strip "$pause_bin.tmp"; mv "$pause_bin.tmp" "$pause_bin"
fi
# The workspace's services: musl, static.
musl=x86_64-unknown-linux-musl
rustup target list --installed 2>/dev/null | grep -qx "$musl" || rustup target add "$musl"
command -v musl-gcc >/dev/null || { echo "missing musl-gcc (Debian: musl-tools)" >&2; exit 1; }
(cd "$root" && cargo build --quiet --profile image --target "$musl" \
  -p microplane-operator -p microplane-gateway -p helloworld --bins)
rust_out=$root/target/$musl/image

# --- The base layer.
base=$work/base
mkdir -p "$base/etc/ssl/certs" "$base/tmp"
chmod 1777 "$base/tmp"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$base/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$base/etc/group"
[[ -f /etc/ssl/certs/ca-certificates.crt ]] && cp /etc/ssl/certs/ca-certificates.crt "$base/etc/ssl/certs/"
layer() { # dir tarball: a reproducible tar of dir's contents
  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$1" -cf "$2" .
}
layer "$base" "$work/base.tar"
# Kept for the dev build node, which packages what it builds on the same base.
mkdir -p "$out/layers"
cmp -s "$work/base.tar" "$out/layers/base.tar" || cp "$work/base.tar" "$out/layers/base.tar"

# --- Images: reference | entrypoint name (/usr/local/bin/NAME) | binaries | environment.
images=()
add() { images+=("$1|$2|$3|${4:-}|${5:-}"); }
add "localhost/microplane/pause:$PAUSE_VERSION" pause "$pause_bin"
add "localhost/microplane/coredns:v$COREDNS_VERSION" coredns "$COREDNS_BIN/coredns"
add "localhost/microplane/registry:v$DISTRIBUTION_VERSION" registry "$REGISTRY_BIN/registry"
# kubectl in a pod: in-cluster configuration with the pod's service-account token (e2e, debugging).
add "localhost/microplane/kubectl:v$K8S_VERSION" kubectl "$K8S_BIN/kubectl"
add "ghcr.io/microplane-dev/microplane-operator:$version" microplane-operator "$rust_out/microplane-operator"
# The gateway serves the dashboard's built files (`make dashboard`) when the chart enables it.
[[ -f $root/dashboard/dist/index.html ]] || { echo "missing dashboard/dist: run make dashboard" >&2; exit 1; }
mkdir -p "$work/gateway-files/usr/share/microplane"
cp -r "$root/dashboard/dist" "$work/gateway-files/usr/share/microplane/dashboard"
add "ghcr.io/microplane-dev/microplane-gateway:$version" microplane-gateway "$rust_out/microplane-gateway" "" "$work/gateway-files"
add "ghcr.io/microplane-dev/helloworld:$version" helloworld "$rust_out/helloworld $rust_out/helloworld-call" "MICRO_SERVICE_ADDRESS=:8080"

# --- The build Jobs' images (operator --builder-image, --clone-image), run on the real node.
# Debian's git, ssh and dash are dynamic: each image carries them with exactly the shared libraries
# `ldd` lists, at the same paths, so nothing is pulled and no distribution is needed.
[[ -x $BUILDKIT_BIN/buildkitd && -x $BUILDKIT_BIN/buildctl && -x $BUILDKIT_BIN/runc ]] ||
  { echo "missing BuildKit in $BUILDKIT_BIN: run make controlplane" >&2; exit 1; }
closure() { # dir file...: the files, the shared libraries they load, /bin/sh = dash
  local dir=$1 f l; shift
  for f in /bin/dash "$@"; do
    install -D -m 755 "$(readlink -f "$f")" "$dir$f"
    for l in $(ldd "$f" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}'); do
      [[ -e $dir$l ]] || install -D -m 755 "$(readlink -f "$l")" "$dir$l"
    done
  done
  ln -sf dash "$dir/bin/sh"
}
tool_dirs=$work/tools
closure "$tool_dirs/git" /usr/bin/git /usr/lib/git-core/git-remote-http /usr/bin/ssh /usr/bin/install /usr/bin/cat
ln -sf git-remote-http "$tool_dirs/git/usr/lib/git-core/git-remote-https"
git_version=$(git --version | awk '{print $3}')
closure "$tool_dirs/buildkit" /usr/bin/chmod /usr/bin/mkdir /usr/bin/cat /usr/bin/sed /usr/bin/tr /usr/bin/sleep /usr/bin/dirname /usr/bin/basename
install -D -m 755 "$BUILDKIT_BIN/buildkitd" "$BUILDKIT_BIN/buildctl" "$BUILDKIT_BIN/runc" -t "$tool_dirs/buildkit/usr/local/bin/"
# BuildKit's runc for RUN steps, without a new session keyring per container: keyctl is what the
# runtime's default seccomp profile refuses, and the build container keeps that profile.
cat >"$tool_dirs/buildkit/usr/local/bin/buildkit-runc" <<'SH'
#!/bin/sh
# shellcheck disable=SC2086 # BUILDKIT_RUNC_FLAGS: more flags of `runc run`, split at spaces
for a; do shift; set -- "$@" "$a"; case $a in run|create) set -- "$@" --no-new-keyring ${BUILDKIT_RUNC_FLAGS:-} ;; esac; done
exec /usr/local/bin/runc "$@"
SH
chmod 755 "$tool_dirs/buildkit/usr/local/bin/buildkit-runc"
add "localhost/microplane/git:v$git_version" git "" "" "$tool_dirs/git"
add "localhost/microplane/buildkit:v$BUILDKIT_VERSION" buildkit "" "" "$tool_dirs/buildkit"

file_name() { local n=${1%%:*}; n=${n##*/}; echo "${n#microplane-}"; }
registry_started=0
start_registry() {
  ((registry_started)) && return
  local port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  cat >"$work/registry.yml" <<YAML
version: 0.1
log: {level: error}
storage: {filesystem: {rootdirectory: $work/registry}}
http: {addr: "127.0.0.1:$port"}
YAML
  "$REGISTRY_BIN/registry" serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
  reg_pid=$!
  for _ in $(seq 100); do curl -fsS "http://127.0.0.1:$port/v2/" >/dev/null 2>&1 && break; sleep 0.05; done
  REG=127.0.0.1:$port
  "$crane" append --insecure --oci-empty-base --platform linux/amd64 -f "$work/base.tar" -t "$REG/microplane/base:1" >/dev/null 2>"$work/crane.log" ||
    { cat "$work/crane.log" >&2; exit 1; }
  registry_started=1
}

built=0
for spec in "${images[@]}"; do
  IFS='|' read -r ref name bins env tree <<<"$spec"
  tarball=$out/$(file_name "$ref").tar
  # shellcheck disable=SC2086 # bins is a list of paths
  key=$(cat "$work/base.tar" $bins <([[ -z $tree ]] || layer "$tree" -) <(echo "$ref|$name|$bins|$env v3") | sha256sum | cut -c1-64)
  [[ -f $tarball && $(cat "$tarball.key" 2>/dev/null) == "$key" ]] && continue
  start_registry
  # Binaries go to /usr/local/bin (the entrypoint); a tree is laid over them; a tree alone is a
  # tool image whose entrypoint is its shell.
  entrypoint=/usr/local/bin/$name
  [[ -z $bins ]] && entrypoint=/bin/sh
  mkdir -p "$work/$name"
  [[ -n $tree ]] && cp -a "$tree/." "$work/$name/"
  if [[ -n $bins ]]; then
    mkdir -p "$work/$name/usr/local/bin"
    # shellcheck disable=SC2086
    cp $bins "$work/$name/usr/local/bin/"
  fi
  layer "$work/$name" "$work/$name.tar"
  env_args=(--env PATH=/usr/local/bin:/usr/bin:/bin)
  [[ -n $env ]] && env_args+=(--env "$env")
  "$crane" mutate --insecure "$REG/microplane/base:1" --append "$work/$name.tar" \
    --entrypoint "$entrypoint" --user 65532:65532 --workdir / "${env_args[@]}" \
    --set-platform linux/amd64 \
    --label "org.opencontainers.image.source=https://github.com/microplane-dev/microplane" \
    -t "$ref" -o "$tarball.tmp" >/dev/null 2>"$work/crane.log" || { cat "$work/crane.log" >&2; exit 1; }
  mv "$tarball.tmp" "$tarball"; echo "$key" >"$tarball.key"
  built=$((built + 1))
done
# --- The registry mirror's base images (node-up.sh pushes them to the in-cluster registry under
# mirror/<registry>/…, where the build Jobs' BuildKit resolves docker.io and gcr.io): the bases the
# operator's generated Dockerfiles name, made here. golang = this machine's Go toolchain and a shell;
# distroless/static = the base layer.
goroot=$(go env GOROOT)
go_version=$(go env GOVERSION)
mirror=$out/mirror
mkdir -p "$mirror"
go_key=$(echo "$go_version $(sha256sum <"$work/base.tar") v1" | sha256sum | cut -c1-16)
if [[ ! -f $mirror/golang.tar || $(cat "$mirror/golang.tar.key" 2>/dev/null) != "$go_key" ]]; then
  start_registry
  mkdir -p "$work/go/usr/local/go"
  closure "$work/go" /usr/bin/mkdir /usr/bin/cat
  # The toolchain without its tests, docs and other platforms' tools.
  tar -C "$goroot" --exclude=./test --exclude=./doc --exclude=./api --exclude=./misc --exclude='testdata' \
    --exclude=./pkg/obj --exclude='./pkg/*_*_race' -cf - . | tar -C "$work/go/usr/local/go" -xf -
  layer "$work/go" "$work/go.tar"
  "$crane" mutate --insecure "$REG/microplane/base:1" --append "$work/go.tar" --user 0:0 --workdir /go \
    --env PATH=/usr/local/go/bin:/usr/local/bin:/usr/bin:/bin --env GOPATH=/go --env HOME=/root \
    --env GOTOOLCHAIN=local --env GOPROXY=off --env GOFLAGS=-mod=mod \
    --set-platform linux/amd64 -t "docker.io/library/golang:1-bookworm" -o "$mirror/golang.tar.tmp" >/dev/null 2>"$work/crane.log" ||
    { cat "$work/crane.log" >&2; exit 1; }
  mv "$mirror/golang.tar.tmp" "$mirror/golang.tar"; echo "$go_key" >"$mirror/golang.tar.key"
  built=$((built + 1))
fi
static_key=$(sha256sum <"$work/base.tar" | cut -c1-16)
if [[ ! -f $mirror/static-debian12.tar || $(cat "$mirror/static-debian12.tar.key" 2>/dev/null) != "$static_key" ]]; then
  start_registry
  "$crane" mutate --insecure "$REG/microplane/base:1" --user 65532:65532 --workdir / \
    --env PATH=/usr/local/bin:/usr/bin:/bin --set-platform linux/amd64 \
    -t "gcr.io/distroless/static-debian12:nonroot" -o "$mirror/static-debian12.tar.tmp" >/dev/null 2>"$work/crane.log" ||
    { cat "$work/crane.log" >&2; exit 1; }
  mv "$mirror/static-debian12.tar.tmp" "$mirror/static-debian12.tar"; echo "$static_key" >"$mirror/static-debian12.tar.key"
  built=$((built + 1))
fi

log "images in $out: ${#images[@]} ($built built) in $((SECONDS - t0))s"
