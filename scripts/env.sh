# Sourced by the scripts: one Cargo target directory outside the clone keeps builds warm across
# clones and CI runs (RocksDB and the gRPC stack take a long time to build cold).
export PATH="$HOME/.cargo/bin:$PATH"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/certplane/target}"
mkdir -p "$CARGO_TARGET_DIR"
