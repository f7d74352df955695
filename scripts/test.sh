#!/usr/bin/env bash
# Runs every test: unit, datapath and end-to-end (real agents, namespaces
# and traffic). Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cargo build --bins
cargo test --workspace -- --test-threads "${TWILL_TEST_THREADS:-4}"
