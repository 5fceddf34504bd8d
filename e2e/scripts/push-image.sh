#!/usr/bin/env bash
# Push an image tarball (make images) into the in-cluster registry of MICROPLANE_STATE's node, as
# REPOSITORY:TAG; prints the reference pods use for it (localhost:5000/REPOSITORY:TAG, which the
# node's containerd pulls). --entrypoint PATH pushes a variant with another entrypoint (a second
# binary of the same image).
#   e2e/scripts/push-image.sh target/images/helloworld.tar e2e/helloworld:1 [--entrypoint /usr/local/bin/x]
set -euo pipefail
. "$(dirname "$0")/lib.sh"
tarball=${1:?usage: push-image.sh TARBALL REPOSITORY:TAG [--entrypoint PATH]} ref=${2:?usage: push-image.sh TARBALL REPOSITORY:TAG [--entrypoint PATH]}
entrypoint=
[[ ${3:-} == --entrypoint ]] && entrypoint=${4:?--entrypoint needs a path}
[[ -f $MICROPLANE_STATE/netns.env ]] || { echo "no node for $MICROPLANE_STATE (node-up.sh)" >&2; exit 1; }
. "$MICROPLANE_STATE/netns.env"
crane() { # quiet unless it fails
  local err; err=$(mktemp)
  "$CRANE_BIN/crane" --insecure "$@" >/dev/null 2>"$err" || { cat "$err" >&2; rm -f "$err"; return 1; }
  rm -f "$err"
}
if [[ -z $entrypoint ]]; then
  crane push "$tarball" "$NODE_IP:5000/$ref"
else
  tmp=$NODE_IP:5000/$ref-base
  crane push "$tarball" "$tmp"
  crane mutate "$tmp" --entrypoint "$entrypoint" -t "$NODE_IP:5000/$ref"
fi
echo "localhost:5000/$ref"
