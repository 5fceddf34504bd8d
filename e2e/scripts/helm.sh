#!/usr/bin/env bash
# helm (built from its Go module by build-controlplane.sh) against the cluster of MICROPLANE_STATE,
# with its cache and configuration inside the state directory. Example:
#   MICROPLANE_STATE=.state/dev e2e/scripts/helm.sh list -A
set -euo pipefail
. "$(dirname "$0")/lib.sh"
state=$MICROPLANE_STATE
[[ -x $HELM_BIN/helm ]] || { echo "missing $HELM_BIN/helm: run make controlplane" >&2; exit 1; }
export HELM_CACHE_HOME=$state/helm/cache HELM_CONFIG_HOME=$state/helm/config HELM_DATA_HOME=$state/helm/data
exec "$HELM_BIN/helm" --kubeconfig "$state/kubeconfig" "$@"
