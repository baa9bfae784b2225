#!/usr/bin/env bash
# Times opening the diagram of a run of about 100 000 events in headless
# Chromium (the README's performance table). Not run by CI: it prints a
# figure, it asserts nothing.
#   sim/tests/browser/load-time.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")"
root=../../..
[ -d node_modules/playwright-core ] || npm ci --no-audit --no-fund --silent
cargo build --release -q -p ctx-sim
out=${TMPDIR:-/tmp}/ctx-sim-hundred-thousand-events.html
"$root/target/release/ctx-sim" run hundred-thousand-events.toml --html "$out" | sed -n '1,2p'
echo "page: $(du -h "$out" | cut -f1)"
node load-time.js "$out" "${1:-5}"
