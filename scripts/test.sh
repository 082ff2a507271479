#!/usr/bin/env bash
# Runs every test of the project on a fresh Debian 12 machine: installs what the tests need
# (stock Dovecot 2.3 from Debian's packages, valgrind for the bench smoke test), builds, and
# runs the whole suite. Ends with one summary line over all test binaries.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/deps.sh
install_stock_dovecot
install_debian_packages valgrind gdb
cargo build --locked --all-targets
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --locked --all-targets -- --test-threads="${TEST_THREADS:-4}" 2>&1 | tee "$log" || status=$?
awk '/^test result:/ { p += $4; f += $6; s += $8 }
     END { printf "all test binaries: %d passed, %d failed, %d skipped\n", p, f, s }' "$log"
exit "$status"
