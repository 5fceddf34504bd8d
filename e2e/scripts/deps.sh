#!/usr/bin/env bash
# Install what `make up` and `make test` need beyond Go and Rust, when it is missing: Debian packages
# and the rustup target of the images' static binaries. Quick when everything is there. Run by
# .ci/run, `make up` and `make test-e2e`.
#   openssl (the control plane's PKI), curl, python3, git (source-build suites), make, iproute2
#   (network namespaces), build-essential; pkg-config + libssl-dev (git2 builds libgit2/libssh2 on
#   OpenSSL); for the real node: nftables (kube-proxy), socat (bridges the API server into the node's
#   namespace), util-linux (nsenter, unshare), iptables (CNI plugins), libseccomp-dev (runc, built
#   with cgo, for the RuntimeDefault seccomp profile), musl-tools (static binaries for the images);
#   lua5.4 (the e2e tier runs the Argo CD health checks in a real Lua interpreter); node and npm
#   (the dashboard's Vite build and tests), chromium (its Playwright suite drives Debian's Chromium;
#   Playwright never downloads a browser); and, from PyPI
#   into .state/tools/openapi (a venv of its own), openapi-spec-validator, which validates the
#   gateway's OpenAPI documents in gateway/tests/openapi.rs.
set -euo pipefail
export PATH=$PATH:/usr/sbin:/sbin
missing=()
for pair in openssl:openssl curl:curl python3:python3 git:git make:make ip:iproute2 gcc:build-essential \
  pkg-config:pkg-config nft:nftables socat:socat nsenter:util-linux unshare:util-linux iptables:iptables \
  musl-gcc:musl-tools lua5.4:lua5.4 node:nodejs npm:npm chromium:chromium; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair##*:}")
done
for pkg in libssl-dev libseccomp-dev; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]})); then
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
  echo "deps: installing ${missing[*]}" >&2
  sudo=$([[ $(id -u) -eq 0 ]] || echo sudo)
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq && $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" ca-certificates >/dev/null
fi
if command -v rustup >/dev/null; then
  rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-linux-musl || rustup target add x86_64-unknown-linux-musl
fi

openapi_venv="$(cd "$(dirname "$0")/../.." && pwd)/.state/tools/openapi"
if [[ ! -x $openapi_venv/bin/openapi-spec-validator ]]; then
  echo "deps: installing openapi-spec-validator into $openapi_venv" >&2
  rm -rf "$openapi_venv"
  python3 -m venv "$openapi_venv"
  "$openapi_venv/bin/pip" install -q --disable-pip-version-check 'openapi-spec-validator==0.9.0'
fi
