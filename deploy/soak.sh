#!/usr/bin/env bash
# Long runs of the deterministic simulation (`bash deploy/soak.sh sim`) or of the randomized
# fault suite (tests/fault_suite.rs; the default): many seeds, longer fault phases.
#
#   bash deploy/soak.sh sim       # SIM_SEEDS (default 1000000) seeds from SIM_FIRST_SEED
#                                 # (default 1), release build; SIM_WORKLOAD=full adds key
#                                 # moves, legacy number reuse, sides without foreign keys.
#                                 # A failing seed replays with SIM_SEED=n.
#
# The fault suite: Every seed prints its setup and fault schedule; a failing one prints how to replay it
# (FAULT_SEED=n) and keeps its evidence (tandem logs, both sides' tandem tables) under
# target/tmp/fault-suite/seed-n/.
#
#   FAULT_SEEDS=50 FAULT_SECONDS=20 bash deploy/soak.sh
#
# Settings (environment):
#   FAULT_SEEDS       how many seeds (default 50)
#   FAULT_SECONDS     seconds of workload and faults per seed (default 20)
#   FAULT_FIRST_SEED  the first seed (default: random, printed; seeds are consecutive)
#   FAULT_SEED        replay exactly this one seed instead
#   FAULT_WORKLOAD    full (default here: conflicts on shared records, racing `run --once`)
#                     or safe (what a plain `cargo test` runs)
#   FAULT_LOG         tandem's RUST_LOG for the instances under test (default tandem=debug)
# Runs every seed even after a failure (FAULT_KEEP_GOING=1) and exits non-zero if any failed.
# The whole output also goes to target/soak-<date>.log.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

if [[ "${1:-}" == "sim" ]]; then
    export SIM_SEEDS="${SIM_SEEDS:-1000000}"
    mkdir -p target
    log="target/soak-sim-$(date +%Y%m%d-%H%M%S).log"
    echo "soak: simulation, ${SIM_SEEDS} seed(s) from ${SIM_FIRST_SEED:-1}, workload ${SIM_WORKLOAD:-safe}; log: $log"
    status=0
    SIM_LIST=1 cargo test --release --test simulation -- --nocapture 2>&1 | tee "$log" || status=$?
    grep '^simulation:' "$log" || true
    exit "$status"
fi

bash deploy/install-postgres.sh >/dev/null

export FAULT_SEEDS="${FAULT_SEEDS:-50}"
export FAULT_SECONDS="${FAULT_SECONDS:-20}"
export FAULT_FIRST_SEED="${FAULT_FIRST_SEED:-$(( (RANDOM << 15 | RANDOM) + 1000 ))}"
export FAULT_WORKLOAD="${FAULT_WORKLOAD:-full}"
export FAULT_KEEP_GOING=1

mkdir -p target
log="target/soak-$(date +%Y%m%d-%H%M%S).log"
if [[ -n "${FAULT_SEED:-}" ]]; then
    echo "soak: replaying seed $FAULT_SEED, ${FAULT_SECONDS} s of faults; log: $log"
else
    echo "soak: ${FAULT_SEEDS} seed(s) from ${FAULT_FIRST_SEED}, ${FAULT_SECONDS} s of faults each, workload ${FAULT_WORKLOAD}; log: $log"
fi
start=$(date +%s)
status=0
cargo test --test fault_suite randomized -- --nocapture --test-threads=1 2>&1 | tee "$log" || status=$?
minutes=$(( ($(date +%s) - start + 59) / 60 ))
passed=$(grep -c ': PASSED in ' "$log" || true)
failed=$(grep -c ': FAILED after ' "$log" || true)
echo
echo "soak: ${passed} passed, ${failed} failed, ${minutes} min; log: $log"
exit "$status"
