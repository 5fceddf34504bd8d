#!/usr/bin/env bash
# Show the log of a pod run by the dev node agent: e2e/scripts/pod-logs.sh NAMESPACE POD [CONTAINER]
# (kubectl logs needs a kubelet API the agent does not serve; the files are in
# $MICROPLANE_STATE/node/pods/<namespace>_<pod>_<uid>/<container>.log).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
ns=${1:?usage: pod-logs.sh NAMESPACE POD [CONTAINER]} pod=${2:?usage: pod-logs.sh NAMESPACE POD [CONTAINER]}
container=${3:-service}
dir=$(ls -dt "$MICROPLANE_STATE/node/pods/${ns}_${pod}_"* 2>/dev/null | head -1)
[[ -n $dir ]] || { echo "no pod $ns/$pod on the node agent of $MICROPLANE_STATE" >&2; exit 1; }
cat "$dir/$container.log"
