#!/usr/bin/env bash
# Reproduces the start-of-run stall of issue 12 (part 7): runs a lone `produce` at
# durability `none` again and again (a fresh node and gateway each time) until one takes
# longer than 0.8 s to its first acknowledgement, and keeps that run's report and log
# under $OUT (default /tmp/start-stall). About 1 run in 20 stalls on the development VM.
#
#   bench/scripts/start-stall.sh [RUNS]                    # default 40 runs
#   LOGS='warn,spate_node::storage=trace' bench/scripts/start-stall.sh
#
# Needs `cargo build --release -p spate-bench` first.
set -euo pipefail
cd "$(dirname "$0")/../.."
out="${OUT:-/tmp/start-stall}"
mkdir -p "$out"
for i in $(seq 1 "${1:-40}"); do
  run="$out/$i"
  RUST_LOG="${LOGS:-warn}" ./target/release/spate-bench produce --durability none \
    --seconds 3 --out "$run" > "$run.log" 2>&1
  first=$(python3 -c "import json; r = json.load(open('$run/report.json')); print(r['runs'][-1]['figures']['first_ack_seconds_max'])")
  echo "run $i: first acknowledgement after $first s"
  if python3 -c "import sys; sys.exit(0 if $first > 0.8 else 1)"; then
    echo "stalled: $run.log, $run/report.json"
    exit 0
  fi
  rm -rf "$run" "$run.log"
done
echo "no stall in ${1:-40} runs"
