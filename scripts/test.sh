#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it: formatting, lints, then every test (unit, property,
# storage conformance, in-process cluster, bad input, multi-process).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
. ./scripts/env.sh

cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# Cluster tests start several nodes each; two at a time keeps a 2-core machine's timings sane.
cargo test --workspace --locked -- --test-threads=2
