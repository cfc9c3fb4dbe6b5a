#!/usr/bin/env bash
# Proves the simulation catches each deliberately injected bug: applies one patch from this
# directory to node/core at a time, runs the simulation over a fixed seed range (counting the
# failing seeds) and the simulation's tests, then reverts the patch. Every patch must be
# caught; the figures go into docs/reliability.md.
#
#   node/sim/injected/check.sh            # every patch, seeds 0..2000
#   SEEDS=300 node/sim/injected/check.sh b-crc-failure-truncated-as-torn.patch
#
# Refuses to run with uncommitted changes in node/core (it would revert them).
set -euo pipefail
cd "$(dirname "$0")/../../.."
here=node/sim/injected
seeds="${SEEDS:-2000}"
if ! git diff --quiet -- node/core; then
  echo "node/core has uncommitted changes; commit or stash them first" >&2
  exit 2
fi
if [ "$#" -gt 0 ]; then patches=("$@"); else patches=("$here"/*.patch); fi
applied=""
revert() { if [ -n "$applied" ]; then git apply -R "$applied"; applied=""; fi; }
# The release binary is left built from the clean tree, not from the last patch.
finish() { revert; cargo build --release -q -p spate-sim || true; }
trap finish EXIT
escaped=0
for patch in "${patches[@]}"; do
  [ -f "$patch" ] || patch="$here/$patch"
  name="$(basename "$patch" .patch)"
  printf '\n== %s\n' "$name"
  if ! git apply --check "$patch" 2>/dev/null; then
    echo "does not apply to this node/core (refresh the patch)"
    escaped=1
    continue
  fi
  git apply "$patch"
  applied="$patch"
  cargo build --release -q -p spate-sim
  sim="$(./target/release/spate-sim --from 0 --seeds "$seeds" --keep-going 2>&1 || true)"
  echo "$sim" | grep -E '^FAILED' | head -n 1 || true
  verdict="$(echo "$sim" | tail -n 1)"
  echo "simulation: $verdict"
  tests="$(cargo test -q --no-fail-fast -p spate-sim --test log --test simulation 2>&1 || true)"
  failing="$(echo "$tests" | grep -E '^    [a-z_]+$|^test [a-z_]+ \.\.\. FAILED' | sed -E 's/^ +//; s/^test //; s/ \.\.\. FAILED//' | sort -u | tr '\n' ' ')"
  echo "tests failing: ${failing:-none}"
  revert
  case "$verdict" in *failed*) ;; *) escaped=1; echo "NOT CAUGHT by the simulation" ;; esac
done
exit "$escaped"
