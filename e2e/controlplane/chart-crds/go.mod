// Not built: pins the third-party CRDs the chart e2e suite (e2e/tests/chart.rs) installs before a
// server-side dry run of the chart's HTTPRoute and ServiceMonitor. The suite reads them from the
// module zips (`go mod download -json <module>` here), checked against go.sum:
//   sigs.k8s.io/gateway-api: config/crd/standard/*.yaml
//   github.com/prometheus-operator/prometheus-operator:
//     example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml
module microplane.dev/e2e/controlplane/chart-crds

go 1.26.0

require (
	github.com/prometheus-operator/prometheus-operator v0.85.0
	sigs.k8s.io/gateway-api v1.6.3
)
