# Microplane task runner. CI runs `bash .ci/run`, which runs `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
include e2e/versions.env
export K8S_VERSION ETCD_VERSION KWOK_VERSION

MICROPLANE_CACHE ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/microplane
export MICROPLANE_CACHE
K8S_BIN := $(MICROPLANE_CACHE)/kubernetes-v$(K8S_VERSION)
KUBECTL := $(K8S_BIN)/kubectl
HELM := $(MICROPLANE_CACHE)/helm-v$(HELM_VERSION)/helm
DEV_STATE := $(CURDIR)/.state/dev
# Port of the dev gateway (`make up`); the e2e tier picks a free one.
GATEWAY_PORT ?= 8080
# What `make controlplane` builds: all, or up (what `make up` runs; not the test-only tools).
MICROPLANE_TOOLS ?= all
E2E_STATE := $(CURDIR)/.state/e2e
# The e2e suites (e2e/tests/*.rs). Built with --workspace, so they share compiled dependencies with
# the unit tier instead of rebuilding them with another feature set.
# `lifecycle` uninstalls and reinstalls the shared release, so it runs alone, after the others.
E2E_SUITES := $(filter-out lifecycle,$(basename $(notdir $(wildcard e2e/tests/*.rs))))

.PHONY: help up down status test test-unit test-e2e fuzz generate check-generated chart-lint deps controlplane images modules fmt operator binaries bench bench-operator bench-gateway dashboard

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

up: deps ## Bring Microplane up on the local control plane and node: the chart (operator and gateway pods), the `micro` tenant and helloworld
	@$(MAKE) --no-print-directory -j2 controlplane binaries MICROPLANE_TOOLS=up
	@$(MAKE) --no-print-directory images MICROPLANE_TOOLS=up
	@MICROPLANE_STATE=$(DEV_STATE) MICROPLANE_CRDS=config/crd e2e/scripts/controlplane-up.sh >/dev/null
	@$(KUBECTL) --kubeconfig $(DEV_STATE)/kubeconfig apply --server-side --field-manager=microplane.dev/install -k config/crd >/dev/null
	@$(KUBECTL) --kubeconfig $(DEV_STATE)/kubeconfig wait --for condition=Established --timeout=60s \
	  crd/microservices.microplane.dev crd/tenants.microplane.dev crd/configs.microplane.dev crd/authrules.microplane.dev >/dev/null
	@MICROPLANE_STATE=$(DEV_STATE) e2e/scripts/node-up.sh
	@MICROPLANE_STATE=$(DEV_STATE) e2e/scripts/nodeagent-up.sh
	@MICROPLANE_STATE=$(DEV_STATE) e2e/scripts/install.sh --set gateway.url=http://localhost:$(GATEWAY_PORT)
	@MICROPLANE_STATE=$(DEV_STATE) MICROPLANE_GATEWAY_PORT=$(GATEWAY_PORT) e2e/scripts/dev-access.sh
	@$(KUBECTL) --kubeconfig $(DEV_STATE)/kubeconfig apply --server-side --field-manager=microplane.dev/install -f config/samples/tenant.yaml >/dev/null
	@$(KUBECTL) --kubeconfig $(DEV_STATE)/kubeconfig wait --for condition=Ready --timeout=60s tenant/micro >/dev/null
	@$(KUBECTL) --kubeconfig $(DEV_STATE)/kubeconfig apply --server-side --field-manager=microplane.dev/install \
	  -f config/samples/helloworld-secrets.yaml -f config/samples/config.yaml -f config/samples/helloworld.yaml >/dev/null
	@$(KUBECTL) --kubeconfig $(DEV_STATE)/kubeconfig wait --for condition=Ready --timeout=60s -n micro microservice/helloworld >/dev/null
	@$(KUBECTL) --kubeconfig $(DEV_STATE)/kubeconfig wait --for condition=Routed --timeout=60s -n micro microservice/helloworld >/dev/null
	@echo "Microplane is up on Kubernetes v$(K8S_VERSION): operator and gateway installed by the chart, tenant micro, MicroService helloworld Ready and routed."
	@echo "  curl -s http://localhost:$(GATEWAY_PORT)/helloworld/call -d '{\"name\":\"John\"}'    # -> {\"message\":\"Hello John\"}"
	@echo "  curl -s 'http://localhost:$(GATEWAY_PORT)/helloworld/call?name=Jane'"
	@echo "  the dashboard: http://localhost:$(GATEWAY_PORT)/.dashboard/"
	@echo "  export KUBECONFIG=$(DEV_STATE)/kubeconfig PATH=$(K8S_BIN):\$$PATH"
	@echo "  kubectl get pods -n microplane-system; kubectl get microplane -A; kubectl explain microservice.spec"
	@echo "This clone is served to the cluster at $$(cat $(DEV_STATE)/git.url) (git sources). Stop everything with: make down"

operator: binaries
binaries: ## Build the operator, the gateway, the dev build node and the services (debug)
	cargo build --workspace --bins

deps: ## Install missing Debian packages and the musl target (e2e/scripts/deps.sh)
	@e2e/scripts/deps.sh

# The web dashboard (dashboard/, Vite + TypeScript): built when its sources change; the gateway image
# carries dashboard/dist. npm ci runs only when the lock file changed.
DASHBOARD_SOURCES := $(shell find dashboard/src dashboard/public -type f 2>/dev/null) dashboard/index.html dashboard/vite.config.ts dashboard/tsconfig.json dashboard/tsconfig.node.json dashboard/package-lock.json
dashboard: dashboard/dist/index.html ## Build the web dashboard (dashboard/dist), served by the gateway at /.dashboard/
dashboard/node_modules/.package-lock.json: dashboard/package-lock.json
	cd dashboard && npm ci --no-audit --no-fund --loglevel=error
dashboard/dist/index.html: $(DASHBOARD_SOURCES) dashboard/node_modules/.package-lock.json
	cd dashboard && npm run --silent build -- --logLevel warn

images: controlplane dashboard ## Build the node's images (pause, CoreDNS, registry, helloworld) from static binaries into target/images
	@e2e/scripts/build-images.sh

down: ## Stop exactly what `make up` started
	@MICROPLANE_STATE=$(DEV_STATE) e2e/scripts/controlplane-down.sh

status: ## Is the dev control plane up?
	@MICROPLANE_STATE=$(DEV_STATE) e2e/scripts/controlplane-status.sh && echo " (up: export KUBECONFIG=$(DEV_STATE)/kubeconfig)"

test: deps ## Unit, mocked and e2e tiers (starts and stops its own control plane and node)
	@$(MAKE) --no-print-directory -j2 controlplane binaries
	@$(MAKE) --no-print-directory test-unit test-e2e

# Seconds each gateway fuzz target runs in `make test` (kept compiling and exercised) and in `make fuzz`.
FUZZ_TEST_SECONDS ?= 15
FUZZ_SECONDS ?= 300
test-unit: deps controlplane dashboard ## Unit and mocked tiers, plus formatting, lints, generated-file drift, the dashboard's unit tests and the gateway's fuzz targets for FUZZ_TEST_SECONDS each (the build node's tests push with crane to a real registry)
	cd dashboard && npm test --silent
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --features microplane-e2e/e2e -- -D warnings
	cargo test --workspace
	@$(MAKE) --no-print-directory check-generated chart-lint
	gateway/fuzz/run.sh $(FUZZ_TEST_SECONDS)

fuzz: ## Fuzz the gateway (tokens, paths the rules and the backend see, rule evaluation, request decoding) for FUZZ_SECONDS each
	gateway/fuzz/run.sh $(FUZZ_SECONDS)

test-e2e: deps ## e2e tier against a fresh real control plane and node (operator), stopped afterwards
	@$(MAKE) --no-print-directory -j2 controlplane binaries
	@$(MAKE) --no-print-directory images
	@MICROPLANE_STATE=$(E2E_STATE) e2e/scripts/controlplane-down.sh
	@rm -rf $(E2E_STATE)/etcd $(E2E_STATE)/operator.info $(E2E_STATE)/gateway.info $(E2E_STATE)/gateway.port $(E2E_STATE)/sync.port $(E2E_STATE)/operator.replicas $(E2E_STATE)/helm $(E2E_STATE)/node
	@trap 'MICROPLANE_STATE=$(E2E_STATE) e2e/scripts/controlplane-down.sh' EXIT; \
	  MICROPLANE_STATE=$(E2E_STATE) e2e/scripts/controlplane-up.sh >/dev/null; \
	  MICROPLANE_STATE=$(E2E_STATE) e2e/scripts/node-up.sh; \
	  MICROPLANE_STATE=$(E2E_STATE) e2e/scripts/nodeagent-up.sh; \
	  MICROPLANE_STATE=$(E2E_STATE) e2e/scripts/install.sh -f e2e/values/e2e.yaml; \
	  MICROPLANE_STATE=$(E2E_STATE) KUBECONFIG=$(E2E_STATE)/kubeconfig KUBECTL=$(KUBECTL) MICROPLANE_E2E_INSTALL=chart \
	    cargo test --workspace --features microplane-e2e/e2e $(E2E_SUITES:%=--test %) -- --test-threads=4; \
	  MICROPLANE_STATE=$(E2E_STATE) KUBECONFIG=$(E2E_STATE)/kubeconfig KUBECTL=$(KUBECTL) MICROPLANE_E2E_INSTALL=chart \
	    cargo test --workspace --features microplane-e2e/e2e --test lifecycle -- --nocapture

BENCH_STATE := $(CURDIR)/.state/bench
bench: bench-operator bench-gateway ## All benchmarks

# Extra operator flags for bench-operator, e.g. BENCH_OPERATOR_ARGS=--status-settle-ms=0 (every status change written at once).
BENCH_OPERATOR_ARGS ?=
bench-operator: controlplane ## 1000 plain Deployments+Services vs 1000 MicroServices on kwok nodes, one control plane: rate ratio, operator CPU, peak RSS, writes per object, idle writes
	cargo build --release -p microplane-operator
	cargo build --profile bench-tools -p microplane-e2e --features e2e --bin bench-operator
	@MICROPLANE_STATE=$(BENCH_STATE) e2e/scripts/controlplane-down.sh
	@rm -rf $(BENCH_STATE)/etcd $(BENCH_STATE)/operator.info
	@trap 'MICROPLANE_STATE=$(BENCH_STATE) e2e/scripts/controlplane-down.sh' EXIT; \
	  MICROPLANE_STATE=$(BENCH_STATE) KCM_API_QPS=1000 KCM_API_BURST=2000 e2e/scripts/controlplane-up.sh >/dev/null; \
	  MICROPLANE_STATE=$(BENCH_STATE) e2e/scripts/kwok-nodes.sh 10 >/dev/null; \
	  $(KUBECTL) --kubeconfig $(BENCH_STATE)/kubeconfig apply --server-side -k config/crd >/dev/null; \
	  $(KUBECTL) --kubeconfig $(BENCH_STATE)/kubeconfig wait --for condition=Established --timeout=60s crd -l '!none' >/dev/null; \
	  MICROPLANE_STATE=$(BENCH_STATE) MICROPLANE_OPERATOR_BIN=$(CURDIR)/target/release/microplane-operator \
	    MICROPLANE_LOG=info e2e/scripts/operator-up.sh --resync-seconds 10 $(BENCH_OPERATOR_ARGS); \
	  MICROPLANE_STATE=$(BENCH_STATE) KUBECONFIG=$(BENCH_STATE)/kubeconfig BENCH_RESYNC_SECONDS=10 MICROPLANE_E2E_INSTALL=process \
	    target/bench-tools/bench-operator

# Debian packages of the gateway bench: `command:package` pairs (nginx and haproxy live in /usr/sbin).
BENCH_GATEWAY_PACKAGES := wrk:wrk haproxy:haproxy nginx:nginx-light taskset:util-linux
bench-gateway: ## Gateway vs haproxy/nginx throughput, transcoding latency, route/rule-change latency, auth on/off (report in .state/bench)
	@PATH=$$PATH:/usr/sbin:/sbin; missing=(); for pair in $(BENCH_GATEWAY_PACKAGES); do \
	  command -v "$${pair%%:*}" >/dev/null 2>&1 || missing+=("$${pair##*:}"); done; \
	  if (($${#missing[@]})); then \
	    echo "bench-gateway: installing $${missing[*]}"; \
	    sudo=$$( [ "$$(id -u)" -eq 0 ] || echo sudo ); \
	    export DEBIAN_FRONTEND=noninteractive; \
	    $$sudo apt-get update -qq && $$sudo apt-get install -y -qq --no-install-recommends "$${missing[@]}"; \
	  fi
	cargo build --release -p microplane-gateway -p helloworld
	cargo build --profile bench-tools -p microplane-e2e --features e2e --bin bench-gateway
	@mkdir -p $(BENCH_STATE)/gateway
	BENCH_STATE=$(BENCH_STATE) BENCH_GATEWAY_BINARIES=$(CURDIR)/target/release target/bench-tools/bench-gateway

controlplane: ## Build the control-plane and node binaries and the test tools into $(MICROPLANE_CACHE) (reused when built from the same inputs)
	@MICROPLANE_TOOLS=$(MICROPLANE_TOOLS) e2e/scripts/build-controlplane.sh

modules: ## Regenerate the wrapper Go modules for the versions in e2e/versions.env
	e2e/scripts/gen-modules.sh

generate: controlplane ## Write the CRD manifests from the Rust types, and config/manager and config/rbac from the chart
	cargo run -q -p microplane-crds --bin crdgen -- .
	HELM=$(HELM) config/default/generate.sh

check-generated: controlplane ## Fail when committed manifests differ from the types or from a fresh render of the chart
	cargo run -q -p microplane-crds --bin crdgen -- --check .
	HELM=$(HELM) config/default/generate.sh --check

chart-lint: controlplane ## helm lint --strict charts/microplane with every charts/microplane/ci/*-values.yaml
	@for f in charts/microplane/ci/*-values.yaml; do \
	  $(HELM) lint --strict --quiet charts/microplane --namespace microplane-system -f "$$f" >/dev/null \
	    || { echo "chart-lint: $$f"; $(HELM) lint --strict charts/microplane --namespace microplane-system -f "$$f"; exit 1; }; \
	done

fmt: ## Format the code
	cargo fmt --all
