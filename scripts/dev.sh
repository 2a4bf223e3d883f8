#!/usr/bin/env bash
# Builds certplane and runs a local development cluster (`certplane dev`); pass e.g. `--nodes 3`.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
. ./scripts/env.sh

cargo build --locked --bin certplane
exec "$CARGO_TARGET_DIR/debug/certplane" dev "$@"
