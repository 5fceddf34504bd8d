#!/usr/bin/env bash
# Stop exactly the processes controlplane-up.sh started (same MICROPLANE_STATE): each pid is checked
# against the binary it must be running before it is signalled.
set -uo pipefail
. "$(dirname "$0")/lib.sh"
pids=$MICROPLANE_STATE/pids
# The real node first: its kubelet stops before the API server it reports to.
"$(dirname "$0")/node-down.sh"
[[ -d $pids ]] || { "$(dirname "$0")/netns-down.sh"; exit 0; }
# Reverse start order: clients first, etcd last. Pid files of other processes (added by later
# scripts) go first of all.
ordered=()
for f in "$pids"/*.pid; do
  case $(basename "$f" .pid) in etcd|kube-apiserver|kube-controller-manager|kube-scheduler) ;; *) ordered+=("$f") ;; esac
done
ordered+=("$pids/kube-scheduler.pid" "$pids/kube-controller-manager.pid" "$pids/kube-apiserver.pid" "$pids/etcd.pid")
for f in "${ordered[@]}"; do
  [[ -e $f ]] || continue
  name=$(basename "$f" .pid); pid=$(cat "$f")
  exe=$(readlink "/proc/$pid/exe" 2>/dev/null || true)
  exe=${exe% (deleted)}  # a binary rebuilt while it runs still counts as that binary
  # `socat@gateway.pid`: a socat process started for one purpose.
  if [[ -n $exe && $(basename "$exe") == "${name%%@*}" ]]; then
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null && log "killed $name ($pid) after 15s" || log "stopped $name ($pid)"
  fi
  rm -f "$f"
done

# The node's network namespace.
"$(dirname "$0")/netns-down.sh"
