#!/usr/bin/env bash
# Start the gateway (target/debug/microplane-gateway unless MICROPLANE_GATEWAY_BIN says otherwise),
# following the sync stream of the operator that operator-up.sh started for MICROPLANE_STATE. It
# listens on 127.0.0.1:$(cat $MICROPLANE_STATE/gateway.port) and reaches pods at their EndpointSlice
# addresses through the host route netns-up.sh made. Its pid joins the control plane's pid files.
# Writes "<pid> <address> <admin-address>" to $MICROPLANE_STATE/gateway.info. Extra arguments go to
# the gateway.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
state=$MICROPLANE_STATE
root=$(cd "$E2E_DIR/.." && pwd)
bin=${MICROPLANE_GATEWAY_BIN:-$root/target/debug/microplane-gateway}
[[ -x $bin ]] || { echo "missing $bin: cargo build -p microplane-gateway" >&2; exit 1; }
[[ -s $state/operator.info && -s $state/sync-token ]] || { echo "start the operator first (operator-up.sh)" >&2; exit 1; }
sync=$(awk '{print $3}' "$state/operator.info")

if [[ -f $state/pids/microplane-gateway.pid ]]; then
  pid=$(cat "$state/pids/microplane-gateway.pid")
  if [[ $(readlink "/proc/$pid/exe" 2>/dev/null) == *microplane-gateway* ]]; then
    kill -TERM "$pid"
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
fi

port=$(cat "$state/gateway.port")
admin=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p "$state/logs" "$state/pids"
MICROPLANE_LOG=${MICROPLANE_LOG_GATEWAY:-info} \
  setsid "$bin" --address "127.0.0.1:$port" --admin-address "127.0.0.1:$admin" \
  --sync-endpoint "http://$sync" --sync-token-file "$state/sync-token" "$@" \
  >>"$state/logs/microplane-gateway.log" 2>&1 </dev/null &
pid=$!
echo "$pid" >"$state/pids/microplane-gateway.pid"
echo "$pid 127.0.0.1:$port 127.0.0.1:$admin" >"$state/gateway.info"
for _ in $(seq 300); do
  if curl -fsS --max-time 1 "http://127.0.0.1:$admin/readyz" >/dev/null 2>&1; then
    log "gateway ready (pid $pid, http://127.0.0.1:$port, admin 127.0.0.1:$admin, log $state/logs/microplane-gateway.log)"
    exit 0
  fi
  kill -0 "$pid" 2>/dev/null || { tail -20 "$state/logs/microplane-gateway.log" >&2; exit 1; }
  sleep 0.1
done
echo "gateway not ready after 30s; see $state/logs/microplane-gateway.log" >&2
exit 1
