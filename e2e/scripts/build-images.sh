#!/usr/bin/env bash
# `make images`: build the OCI images the local node runs, on this machine, from static binaries,
# with no base image pulled and no Docker engine. Writes one image tarball per image to
# $MICROPLANE_IMAGES (default target/images/), which node-up.sh imports into the node's containerd.
#
#   product images (what users run; the Dockerfile builds the same from source):
#     ghcr.io/microplane-dev/microplane-operator:<version>   operator (musl, static)
#     ghcr.io/microplane-dev/microplane-gateway:<version>    gateway (musl, static)
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
add() { images+=("$1|$2|$3|${4:-}"); }
add "localhost/microplane/pause:$PAUSE_VERSION" pause "$pause_bin"
add "localhost/microplane/coredns:v$COREDNS_VERSION" coredns "$COREDNS_BIN/coredns"
add "localhost/microplane/registry:v$DISTRIBUTION_VERSION" registry "$REGISTRY_BIN/registry"
# kubectl in a pod: in-cluster configuration with the pod's service-account token (e2e, debugging).
add "localhost/microplane/kubectl:v$K8S_VERSION" kubectl "$K8S_BIN/kubectl"
add "ghcr.io/microplane-dev/microplane-operator:$version" microplane-operator "$rust_out/microplane-operator"
add "ghcr.io/microplane-dev/microplane-gateway:$version" microplane-gateway "$rust_out/microplane-gateway"
add "ghcr.io/microplane-dev/helloworld:$version" helloworld "$rust_out/helloworld $rust_out/helloworld-call" "MICRO_SERVICE_ADDRESS=:8080"

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
  IFS='|' read -r ref name bins env <<<"$spec"
  tarball=$out/$(file_name "$ref").tar
  # shellcheck disable=SC2086 # bins is a list of paths
  key=$(cat "$work/base.tar" $bins <(echo "$ref|$name|$bins|$env v3") | sha256sum | cut -c1-64)
  [[ -f $tarball && $(cat "$tarball.key" 2>/dev/null) == "$key" ]] && continue
  start_registry
  mkdir -p "$work/$name/usr/local/bin"
  # shellcheck disable=SC2086
  cp $bins "$work/$name/usr/local/bin/"
  layer "$work/$name" "$work/$name.tar"
  env_args=(--env PATH=/usr/local/bin:/usr/bin:/bin)
  [[ -n $env ]] && env_args+=(--env "$env")
  "$crane" mutate --insecure "$REG/microplane/base:1" --append "$work/$name.tar" \
    --entrypoint "/usr/local/bin/$name" --user 65532:65532 --workdir / "${env_args[@]}" \
    --set-platform linux/amd64 \
    --label "org.opencontainers.image.source=https://github.com/microplane-dev/microplane" \
    -t "$ref" -o "$tarball.tmp" >/dev/null 2>"$work/crane.log" || { cat "$work/crane.log" >&2; exit 1; }
  mv "$tarball.tmp" "$tarball"; echo "$key" >"$tarball.key"
  built=$((built + 1))
done
log "images in $out: ${#images[@]} ($built built) in $((SECONDS - t0))s"
