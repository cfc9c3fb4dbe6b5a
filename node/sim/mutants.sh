#!/usr/bin/env bash
# Mutation testing of spate-core with the simulation as the oracle: cargo-mutants changes one
# thing at a time in node/core/src (an operator, a condition, a return value), runs spate-sim's
# tests (`--test log --test simulation`) and spate-core's unit tests (`--lib`, the oracle for
# what no simulation drives; configured in .cargo/mutants.toml) against it, and
# reports the mutants no test noticed ("missed"). Prints the survivors at the end.
#
#   node/sim/mutants.sh                          # every mutant of spate-core (hours on 2 cores)
#   node/sim/mutants.sh -F 'handle_retention'    # only mutants whose name matches
#   node/sim/mutants.sh --file node/core/src/tail.rs --shard 0/4
#   node/sim/mutants.sh --list                   # what would be run
#
# Extra arguments go to `cargo mutants`. Results land in target/mutants/mutants.out
# (MUTANTS_OUT overrides the directory); it runs at low priority (nice 10), one job at a time
# unless MUTANTS_JOBS says otherwise. An interrupted run resumes with `--iterate` (mutants
# already caught or unviable are skipped).
set -euo pipefail
cd "$(dirname "$0")/../.."

if ! cargo mutants --version >/dev/null 2>&1; then
  cargo install --locked cargo-mutants
fi
out="${MUTANTS_OUT:-target/mutants}"
mkdir -p "$out"
status=0
# No debug info in the mutants' builds: each mutant relinks spate-sim's test binaries, and
# debug info is most of that time; a failing seed is still named by its message.
export CARGO_PROFILE_TEST_DEBUG="${CARGO_PROFILE_TEST_DEBUG:-0}"
# The baseline is skipped: cargo-mutants (27.1) runs the baseline with the mutated package's
# tests (spate-core) whatever --test-package says, and spate-core has no `simulation` target.
# Run `cargo test -p spate-sim` first instead. The build directories do not copy target/
# (MUTANTS_COPY_TARGET=true does): spate-sim's 33 dependencies build in a minute, while a
# developer's target/ holds tens of GB that would be copied once per job.
nice -n 10 cargo mutants --package spate-core --test-package spate-sim --test-package spate-core \
  --baseline skip --timeout "${MUTANTS_TIMEOUT:-180}" --build-timeout 900 --copy-target "${MUTANTS_COPY_TARGET:-false}" \
  --jobs "${MUTANTS_JOBS:-1}" --output "$out" "$@" || status=$?
case "$*" in *--list*) exit "$status" ;; esac
# cargo-mutants exits 2 when mutants were missed, 3 on timeouts: report rather than fail.
for kind in missed timeout unviable; do
  file="$out/mutants.out/$kind.txt"
  if [ -f "$file" ]; then
    printf '\n%s (%s):\n' "$kind" "$(wc -l <"$file")"
    cat "$file"
  fi
done
caught="$out/mutants.out/caught.txt"
[ -f "$caught" ] && printf '\ncaught: %s\n' "$(wc -l <"$caught")"
exit $(( status == 1 || status == 4 ? status : 0 ))
