#!/usr/bin/env bash
# Runs every test of the project on a fresh Debian 12 machine: installs what the tests need
# (stock Dovecot 2.3 from Debian's packages), builds, and runs the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/deps.sh
install_stock_dovecot
install_debian_packages valgrind
cargo build --locked --all-targets
cargo test --locked --all-targets -- --test-threads="${TEST_THREADS:-4}"
