#!/usr/bin/env bash
# Runs every test: unit, datapath and end-to-end (real agents, namespaces
# and traffic). Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cargo build --bins
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --all-targets --no-fail-fast -- --test-threads "${TWILL_TEST_THREADS:-4}" 2>&1 | tee "$log" || status=$?
# One closing line over every test binary.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed;?$/) p += $(i-1); if ($i ~ /^failed;?$/) f += $(i-1) } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
