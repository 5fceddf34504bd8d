#!/usr/bin/env bash
# Show a step's log of a build pod performed by the dev build node (nodeagent-up.sh):
#   e2e/scripts/build-logs.sh NAMESPACE POD [clone|build]   (default build)
# The build node serves no kubelet API, so `kubectl logs` does not reach these; the files are
# $MICROPLANE_STATE/builder/pods/<namespace>_<pod>_<uid>/<step>.log. Every other pod runs on the real
# node: `kubectl logs`.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
ns=${1:?usage: build-logs.sh NAMESPACE POD [clone|build]} pod=${2:?usage: build-logs.sh NAMESPACE POD [clone|build]}
step=${3:-build}
dir=$(ls -dt "$MICROPLANE_STATE/builder/pods/${ns}_${pod}_"* 2>/dev/null | head -1)
[[ -n $dir ]] || { echo "no build pod $ns/$pod on the build node of $MICROPLANE_STATE" >&2; exit 1; }
cat "$dir/$step.log"
