#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it: formatting, lints, then every test (unit, property,
# storage conformance, network, in-process cluster with fault injection, bad input, multi-process).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
./scripts/check-deploy.sh
. ./scripts/env.sh

cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings

log="$(mktemp)"
trap 'rm -f "$log"' EXIT
# Cluster tests start several nodes each; two at a time keeps a 2-core machine's timings sane.
set +e
cargo test --workspace --locked -- --test-threads=2 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line for the whole run (cargo prints one per test binary, doc tests last).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "summary: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
