#!/usr/bin/env bash
# The issuance benchmark of docs/benchmarks.md: certplane against `cfssl serve` and the raw
# keygen+sign ceiling, in one run. Installs cfssl (Debian golang-cfssl) when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
. ./scripts/env.sh
if ! command -v cfssl >/dev/null 2>&1; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq golang-cfssl >/dev/null
fi
# `--profile dev` first reuses the test build (no second RocksDB build); otherwise `cargo bench`
# builds the optimised bench profile (decision 0014).
profile=()
if [ "${1:-}" = "--profile" ] && [ $# -ge 2 ]; then
  profile=(--profile "$2")
  shift 2
fi
exec cargo bench -p certplane-server --bench issuance "${profile[@]}" -- "$@"
