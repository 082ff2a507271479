#!/usr/bin/env bash
# Regenerates the anvil conformance corpus (fixtures/anvil/*.transcript) from stock Dovecot
# 2.3.19.1, then replays it against the stock anvil to prove the recording is consistent.
#
#   scripts/record-corpus.sh                 # every scenario
#   scripts/record-corpus.sh NAME…           # only these (see: foreman conformance record --list)
#
# Needs root (stock Dovecot runs its own master, as in the tests) and Debian's dovecot packages,
# which it installs when missing. Review the diff before committing: direct scenarios should
# only change in their times; live scenarios also change in pids and session order.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/deps.sh
install_stock_dovecot
version=$(dovecot --version)
case "$version" in
    2.3.19.1*) ;;
    *) echo "warning: stock Dovecot is $version, the corpus documents 2.3.19.1" >&2 ;;
esac
cargo build --locked --bin foreman
foreman=target/debug/foreman
"$foreman" conformance record --out fixtures/anvil "$@"
if [ $# -eq 0 ]; then
    "$foreman" conformance replay --anvil stock fixtures/anvil
else
    files=()
    for name in "$@"; do files+=("fixtures/anvil/$name.transcript"); done
    "$foreman" conformance replay --anvil stock "${files[@]}"
fi
