#!/usr/bin/env bash
# Import the image tarballs of $MICROPLANE_IMAGES (make images; default target/images) into the running
# node's containerd, as `kind load` does: a changed image replaces the one of the same name (running
# pods keep theirs until they are replaced). Images whose tarball did not change since the last
# import are skipped. node-up.sh runs it when the node is already up.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
root=$(cd "$E2E_DIR/.." && pwd)
images=${MICROPLANE_IMAGES:-$root/target/images}
loaded=$MICROPLANE_STATE/node/loaded
mkdir -p "$loaded"
n=0
for tar in "$images"/*.tar; do
  key=$(cat "$tar.key" 2>/dev/null || sha256sum "$tar" | cut -c1-64)
  name=$(basename "$tar")
  [[ $(cat "$loaded/$name" 2>/dev/null) == "$key" ]] && continue
  "$(dirname "$0")/node-exec.sh" ctr -n k8s.io images import "$tar" >/dev/null 2>&1 ||
    { echo "cannot import $tar into the node" >&2; exit 1; }
  echo "$key" >"$loaded/$name"
  n=$((n + 1))
done
((n == 0)) || log "loaded $n changed images into the node"
