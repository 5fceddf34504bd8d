#!/usr/bin/env bash
# What `make up` adds for a developer on this machine, beside the user install (install.sh):
#   - the gateway at 127.0.0.1:$MICROPLANE_GATEWAY_PORT (default 8080): a socat forward to the
#     gateway Service's NodePort on the node, as a cloud load balancer would forward to node ports;
#   - this working copy served over smart HTTP at http://$HOST_IP:9080/microplane.git (written to
#     $MICROPLANE_STATE/git.url), so a MicroService can build from it: the operator runs in a pod and
#     reaches the host at HOST_IP, never the host's file:// paths.
# Both pids join the control plane's pid files, so controlplane-down.sh stops them.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
state=$MICROPLANE_STATE
root=$(cd "$E2E_DIR/.." && pwd)
port=${MICROPLANE_GATEWAY_PORT:-8080}
node_port=${MICROPLANE_GATEWAY_NODE_PORT:-30080}
serve=${MICROPLANE_GIT_SERVE_BIN:-$root/target/debug/microplane-git-serve}
. "$state/netns.env"
mkdir -p "$state/pids" "$state/logs" "$state/git"

running() { [[ -f $state/pids/$1.pid ]] && [[ $(readlink "/proc/$(cat "$state/pids/$1.pid")/exe" 2>/dev/null) == *"$2"* ]]; }

if ! running socat@gateway socat; then
  setsid socat "TCP-LISTEN:$port,bind=127.0.0.1,fork,reuseaddr" "TCP:$NODE_IP:$node_port" \
    >>"$state/logs/gateway-forward.log" 2>&1 </dev/null &
  echo $! >"$state/pids/socat@gateway.pid"
fi
echo "$port" >"$state/gateway.port"

ln -sfn "$root/.git" "$state/git/microplane.git"
if ! running microplane-git-serve microplane-git-serve; then
  [[ -x $serve ]] || { echo "missing $serve: cargo build -p microplane-e2e" >&2; exit 1; }
  setsid "$serve" "$HOST_IP:9080" "$state/git" >>"$state/logs/git-serve.log" 2>&1 </dev/null &
  echo $! >"$state/pids/microplane-git-serve.pid"
fi
echo "http://$HOST_IP:9080/microplane.git" >"$state/git.url"
for _ in $(seq 50); do
  curl -fsS --max-time 1 "http://$HOST_IP:9080/microplane.git/info/refs?service=git-upload-pack" >/dev/null 2>&1 && exit 0
  sleep 0.1
done
echo "the git server at $HOST_IP:9080 does not answer; see $state/logs/git-serve.log" >&2
exit 1
