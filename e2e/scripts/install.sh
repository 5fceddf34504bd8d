#!/usr/bin/env bash
# Install Microplane onto the cluster of MICROPLANE_STATE as a user does: `helm upgrade --install` of
# charts/microplane with the local cluster's values (charts/microplane/ci/dev-values.yaml: the images
# `make images` built, the gateway on NodePort 30080, the dev build node and registry), then wait
# until operator and gateway have rolled out. Extra arguments go to helm (`-f more.yaml`,
# `--set ...`). The release namespace is created first with the restricted pod security label (Helm's
# --create-namespace cannot label it). --force-conflicts: the chart's values win over fields changed
# by hand since (a `kubectl scale` of a Deployment, as the e2e tier's operator stop does), as they
# would be after `helm upgrade --force-conflicts` (docs/upgrade.md).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
state=$MICROPLANE_STATE
root=$(cd "$E2E_DIR/.." && pwd)
namespace=${MICROPLANE_NAMESPACE:-microplane-system}
release=${MICROPLANE_RELEASE:-microplane}
kubectl=("$K8S_BIN/kubectl" --kubeconfig "$state/kubeconfig")
[[ -x $HELM_BIN/helm ]] || { echo "missing $HELM_BIN/helm: run make controlplane" >&2; exit 1; }

"${kubectl[@]}" apply --server-side --field-manager=microplane.dev/install -f - >/dev/null <<YAML
apiVersion: v1
kind: Namespace
metadata:
  name: $namespace
  labels:
    app.kubernetes.io/part-of: microplane
    pod-security.kubernetes.io/enforce: restricted
YAML
t0=$SECONDS
"$(dirname "$0")/helm.sh" upgrade --install "$release" "$root/charts/microplane" \
  --namespace "$namespace" -f "$root/charts/microplane/ci/dev-values.yaml" --force-conflicts "$@" \
  --wait --timeout 5m >/dev/null
log "helm upgrade --install $release: operator and gateway rolled out in $((SECONDS - t0))s"
