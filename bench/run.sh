#!/usr/bin/env bash
# Runs Twill's benchmarks and prints one table of results and ratios, all
# measured in this run. Needs root; installs what it needs.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cargo build --release --bins
exec target/release/twill-bench "$@"
