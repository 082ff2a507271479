#!/usr/bin/env bash
# The demo: stock Dovecot 2.3 services with Foreman on 127.0.0.1 high ports, a demo user,
# instructions on how to log in. Installs stock Dovecot when missing; stops with Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/deps.sh
install_stock_dovecot
cargo build --locked --release --bin foreman
exec target/release/foreman demo
