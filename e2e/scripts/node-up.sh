#!/usr/bin/env bash
# Start the real node of MICROPLANE_STATE: upstream containerd (with runc and the CNI plugins),
# kubelet and kube-proxy (nftables), registered as Node `microplane-node`, running every pod as a
# container; then the cluster add-ons CoreDNS and the image registry (e2e/node/).
#
# Where it runs: inside the environment's network namespace (netns-up.sh) and a mount namespace of
# its own, in which /run, /var/lib and /var/log are the node's: the paths containerd and the kubelet
# write whatever their flags say (/run/containerd, /run/nri, /var/lib/kubelet, /var/lib/cni,
# /var/log/pods, /var/log/containers) never touch the host's, and two environments (make up,
# make test) never meet there. The kubelet's cgroups live under /microplane-N. Everything the node
# keeps is in $MICROPLANE_STATE/node; node-down.sh stops it and leaves nothing behind.
#
# Images: every tarball in $MICROPLANE_IMAGES (make images) is imported into the node's containerd,
# as `kind load` does; nothing is ever pulled from outside this machine.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
state=$(cd "$MICROPLANE_STATE" && pwd)
node=$state/node pki=$state/pki
root=$(cd "$E2E_DIR/.." && pwd)
images=${MICROPLANE_IMAGES:-$root/target/images}
NODE_NAME=microplane-node
kubectl=("$K8S_BIN/kubectl" --kubeconfig "$state/kubeconfig")
[[ -f $state/env ]] || { echo "start the control plane first (controlplane-up.sh)" >&2; exit 1; }
. "$state/env"
for b in "$K8S_BIN/kubelet" "$K8S_BIN/kube-proxy" "$CONTAINERD_BIN/containerd" "$CONTAINERD_BIN/containerd-shim-runc-v2" \
  "$CONTAINERD_BIN/ctr" "$RUNC_BIN/runc" "$CNI_BIN/bridge" "$CNI_BIN/host-local" "$CNI_BIN/loopback" "$CNI_BIN/portmap"; do
  [[ -x $b ]] || { echo "missing $b: run e2e/scripts/build-controlplane.sh (make controlplane)" >&2; exit 1; }
done
for t in pause coredns registry; do
  [[ -f $images/$t.tar ]] || { echo "missing $images/$t.tar: run make images" >&2; exit 1; }
done
for c in nft socat nsenter unshare; do
  command -v "$c" >/dev/null || { echo "missing $c (Debian: nftables socat util-linux)" >&2; exit 1; }
done

# The registry mirror (build Jobs' base images, make images' mirror/*.tar) under mirror/<registry>/…
# of the in-cluster registry, and a Service `registry` in kube-system that reaches it from pods
# (the registry shares the node's network: localhost:5000 is only the node's own name for it).
fill_mirror() {
  local t ref
  "${kubectl[@]}" apply --server-side --force-conflicts --field-manager=microplane.dev/node -f - >/dev/null <<YAML
apiVersion: v1
kind: Service
metadata: {name: registry, namespace: kube-system}
spec:
  ports: [{name: http, port: 5000, protocol: TCP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: registry-node
  namespace: kube-system
  labels: {kubernetes.io/service-name: registry, endpointslice.kubernetes.io/managed-by: microplane.dev-node}
addressType: IPv4
endpoints: [{addresses: ["$NODE_IP"], conditions: {ready: true}}]
ports: [{name: http, port: 5000, protocol: TCP}]
YAML
  for t in "$images"/mirror/*.tar; do
    [[ -f $t ]] || continue
    ref=$(tar -xOf "$t" manifest.json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["RepoTags"][0])')
    "$CRANE_BIN/crane" push --insecure "$t" "$NODE_IP:5000/mirror/$ref" >/dev/null 2>"$state/logs/mirror-push.log" ||
      { cat "$state/logs/mirror-push.log" >&2; exit 1; }
  done
}

if "$(dirname "$0")/node-status.sh" >/dev/null 2>&1; then
  "$(dirname "$0")/node-load-images.sh"
  . "$state/netns.env"
  fill_mirror
  log "node $NODE_NAME already running"; exit 0
fi
"$(dirname "$0")/node-down.sh" >/dev/null 2>&1 || true
[[ -f $state/netns.env ]] || "$(dirname "$0")/netns-up.sh"
. "$state/netns.env"
idx=${NETNS#mp}
t0=$SECONDS
mkdir -p "$node"/{pids,var-lib,var-log,config/cni,config/certs.d} "$state/logs"

# --- Identities: the kubelet as system:node:NAME (Node authorizer, NodeRestriction) with a serving
# certificate for the node's address signed by the cluster CA; kube-proxy as system:kube-proxy
# (bound to system:node-proxier by default).
cert kubelet "/O=system:nodes/CN=system:node:$NODE_NAME"
if [[ ! -f $pki/kubelet-serving.ip || $(cat "$pki/kubelet-serving.ip") != "$NODE_IP" ]]; then
  rm -f "$pki/kubelet-serving.crt" "$pki/kubelet-serving.key"
fi
cert kubelet-serving "/CN=$NODE_NAME" "IP:$NODE_IP,DNS:$NODE_NAME"
echo "$NODE_IP" >"$pki/kubelet-serving.ip"
cert kube-proxy "/CN=system:kube-proxy"
# Inside the node namespace the API server is at 127.0.0.1:API_PORT too (bridged below).
for who in kubelet kube-proxy; do
  cat >"$node/config/$who.kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster: {server: "https://127.0.0.1:$API_PORT", certificate-authority: "$pki/ca.crt"}
users:
- name: $who
  user: {client-certificate: "$pki/$who.crt", client-key: "$pki/$who.key"}
contexts:
- name: local
  context: {cluster: local, user: $who}
current-context: local
KC
done
"${kubectl[@]}" apply --server-side --force-conflicts --field-manager=microplane.dev/node -f "$E2E_DIR/node/rbac.yaml" >/dev/null

# --- Configuration.
: >"$node/config/resolv.conf"   # pods with dnsPolicy Default (CoreDNS) get no outside resolver
cat >"$node/config/containerd.toml" <<TOML
# Generated by e2e/scripts/node-up.sh.
version = 3
root = "/var/lib/containerd"
state = "/run/containerd"
[grpc]
  address = "/run/containerd/containerd.sock"
[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "localhost/microplane/pause:$PAUSE_VERSION"
  [plugins.'io.containerd.cri.v1.images'.registry]
    config_path = "$node/config/certs.d"
[plugins.'io.containerd.cri.v1.runtime']
  # Root here lacks CAP_SYS_RESOURCE: without this every sandbox fails to start.
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = "$RUNC_BIN/runc"
        SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["$CNI_BIN"]
    conf_dir = "$node/config/cni"
[plugins.'io.containerd.grpc.v1.cri']
  disable_tcp_service = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
[plugins.'io.containerd.nri.v1.nri']
  disable = true
TOML
# The in-cluster registry listens on the node's address, port 5000, over plain HTTP.
mkdir -p "$node/config/certs.d/localhost:5000"
cat >"$node/config/certs.d/localhost:5000/hosts.toml" <<TOML
server = "http://127.0.0.1:5000"
[host."http://127.0.0.1:5000"]
  capabilities = ["pull", "resolve", "push"]
TOML
cat >"$node/config/cni/10-microplane.conflist" <<JSON
{
  "cniVersion": "1.0.0",
  "name": "microplane-$idx",
  "plugins": [
    {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "$POD_CIDR"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}, "backend": "nftables"}
  ]
}
JSON
cat >"$node/config/kubelet.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: "$NODE_IP"
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: "$pki/ca.crt"}
authorization: {mode: Webhook}
tlsCertFile: "$pki/kubelet-serving.crt"
tlsPrivateKeyFile: "$pki/kubelet-serving.key"
containerRuntimeEndpoint: unix:///run/containerd/containerd.sock
cgroupDriver: cgroupfs
cgroupRoot: /microplane-$idx
failCgroupV1: false
failSwapOn: false
clusterDNS: ["$CLUSTER_DNS"]
clusterDomain: cluster.local
resolvConf: "$node/config/resolv.conf"
serializeImagePulls: false
# Images are loaded into containerd by node-init.sh and node-load-images.sh, also while the kubelet
# runs (make up after make images); none needs credentials, so the kubelet need not re-pull an image
# it did not pull itself to check a pod may use it.
imagePullCredentialsVerificationPolicy: NeverVerify
# Disk and image pressure are the host's business here: never evict the imported images or pods.
imageGCHighThresholdPercent: 100
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%"}
nodeStatusReportFrequency: 10s
shutdownGracePeriod: 0s
YAML
cat >"$node/config/kube-proxy.yaml" <<YAML
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: nftables
clientConnection: {kubeconfig: "$node/config/kube-proxy.kubeconfig"}
hostnameOverride: $NODE_NAME
clusterCIDR: "$POD_CIDR"
# The node's namespace is not the host's: leave its conntrack sysctls alone.
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
nodePortAddresses: ["$NODE_IP/32"]
YAML

# --- The API server listens on the host's loopback; a unix socket bridges it into the node's
# namespace, where it answers on every node address at the same port (node components use
# 127.0.0.1; pods reach it through the `kubernetes` Service, whose endpoint is NODE_IP).
rm -f "$node/apiserver.sock"
setsid socat "UNIX-LISTEN:$node/apiserver.sock,fork,mode=600" "TCP:127.0.0.1:$API_PORT" \
  >>"$state/logs/node-apiserver-bridge.log" 2>&1 </dev/null &
echo $! >"$node/pids/apiserver-bridge.pid"

# --- The node itself, started in its namespaces by node-init.sh.
started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
CGROUP_ROOT=microplane-$idx NODE_DIR=$node API_PORT=$API_PORT NODE_NAME=$NODE_NAME NODE_IP=$NODE_IP LOGS=$state/logs \
  K8S_BIN=$K8S_BIN CONTAINERD_BIN=$CONTAINERD_BIN RUNC_BIN=$RUNC_BIN IMAGES=$images \
  setsid nsenter --net="/run/netns/$NETNS" -- unshare --mount --propagation slave -- \
  bash "$E2E_DIR/scripts/node-init.sh" >>"$state/logs/node-init.log" 2>&1 </dev/null &
echo $! >"$node/pids/node.pid"

deadline=$((SECONDS + 90))
until "${kubectl[@]}" get node "$NODE_NAME" >/dev/null 2>&1; do
  kill -0 "$(cat "$node/pids/node.pid")" 2>/dev/null || { echo "the node failed to start; last lines of its logs:" >&2; tail -20 "$state/logs/node-init.log" "$state/logs/kubelet.log" "$state/logs/containerd.log" >&2 2>/dev/null; exit 1; }
  ((SECONDS < deadline)) || { echo "node $NODE_NAME did not register in 90s; see $state/logs/kubelet.log" >&2; exit 1; }
  sleep 0.2
done
# Ready as reported by this kubelet (a Node object left from an earlier start may still say Ready).
until r=$("${kubectl[@]}" get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status} {.status.conditions[?(@.type=="Ready")].lastHeartbeatTime}' 2>/dev/null) &&
  [[ $r == True* && ! $r < "True $started" ]]; do
  ((SECONDS < deadline)) || { echo "node $NODE_NAME not Ready in 90s; see $state/logs/kubelet.log" >&2; exit 1; }
  sleep 0.2
done
ready=$((SECONDS - t0))
kubelet_ready=$(( $(date +%s) - $(stat -c %Y "$node/pids/kubelet.pid") ))

# --- The `kubernetes` Service's endpoint: the API server does not reconcile it
# (--endpoint-reconciler-type=none, it advertises 127.0.0.1), so it is the node's address.
"${kubectl[@]}" apply --server-side --force-conflicts --field-manager=microplane.dev/node -f - >/dev/null <<YAML
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: kubernetes-node
  namespace: default
  labels:
    kubernetes.io/service-name: kubernetes
    endpointslice.kubernetes.io/managed-by: microplane.dev-node
addressType: IPv4
endpoints:
- addresses: ["$NODE_IP"]
  conditions: {ready: true}
ports:
- {name: https, port: $API_PORT, protocol: TCP}
YAML

# --- Add-ons: cluster DNS and the image registry.
sed -e "s|@CLUSTER_DNS@|$CLUSTER_DNS|g" -e "s|@COREDNS_VERSION@|$COREDNS_VERSION|g" \
  -e "s|@DISTRIBUTION_VERSION@|$DISTRIBUTION_VERSION|g" "$E2E_DIR"/node/addons.yaml |
  "${kubectl[@]}" apply --server-side --force-conflicts --field-manager=microplane.dev/node -f - >/dev/null
"${kubectl[@]}" rollout status -n kube-system deployment/coredns --timeout=90s >/dev/null
"${kubectl[@]}" rollout status -n kube-system deployment/registry --timeout=90s >/dev/null
fill_mirror
log "node $NODE_NAME Ready ${kubelet_ready}s after the kubelet started (${ready}s with containerd and the images), add-ons in $((SECONDS - t0))s (kubelet $K8S_VERSION, containerd $CONTAINERD_VERSION, runc $RUNC_VERSION); pods in $POD_CIDR; registry localhost:5000 on the node, $NODE_IP:5000 from the host"
