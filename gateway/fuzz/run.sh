#!/usr/bin/env bash
# Builds the gateway's fuzz targets on stable Rust and runs each for SECONDS (default 15).
#
#   gateway/fuzz/run.sh [SECONDS] [TARGET...]
#
# libfuzzer-sys links libFuzzer; SanitizerCoverage (the rustc flags below, what cargo-fuzz passes
# without its nightly-only AddressSanitizer) guides it. Debug assertions and overflow checks are on
# (the fuzz crate's release profile). Each target keeps its corpus in .state/fuzz/<target>, so runs
# build on each other; gateway/fuzz/seeds/<target> seeds it. A failing input is written to
# .state/fuzz/<target>/crash-… and the script fails: make it a regression test, then fix.
# `make test` runs it for seconds (CI keeps the targets compiling and exercised), `make fuzz` longer.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
seconds=${1:-15}
shift || true
targets=("$@")
((${#targets[@]})) || targets=(token_parse path_resolve rules_decide transcode)

host=$(rustc -vV | sed -n 's/^host: //p')
export CARGO_TARGET_DIR=${FUZZ_TARGET_DIR:-$root/target/fuzz}
# --target keeps build scripts and proc macros uninstrumented.
RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares" \
  cargo build --release --locked --quiet --manifest-path "$root/gateway/fuzz/Cargo.toml" --target "$host" --bins

status=0
for t in "${targets[@]}"; do
  corpus=$root/.state/fuzz/$t
  mkdir -p "$corpus"
  seeds=()
  [[ -d $root/gateway/fuzz/seeds/$t ]] && seeds=("$root/gateway/fuzz/seeds/$t")
  log=$corpus.log
  if "$CARGO_TARGET_DIR/$host/release/$t" "$corpus" "${seeds[@]}" \
      -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=4096 \
      -artifact_prefix="$corpus/" -print_final_stats=1 >"$log" 2>&1; then
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    echo "fuzz $t: ${runs:-?} inputs in ${seconds}s, no failure (corpus $(ls "$corpus" | wc -l) files)"
  else
    status=1
    echo "fuzz $t: FAILED — the input is in $corpus/crash-*:" >&2
    grep -A6 -m1 'panicked' "$log" >&2 || true
    grep -B2 -A4 'Test unit written' "$log" >&2 || tail -20 "$log" >&2
  fi
done
exit $status
