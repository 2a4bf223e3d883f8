#!/usr/bin/env bash
# Installs what building and testing certplane needs on a fresh Debian machine (run as root, or with
# sudo available). Idempotent: skips whatever is already there.
set -euo pipefail

need=()
command -v clang >/dev/null 2>&1 || need+=(clang)
[ -e /usr/lib/llvm-14/lib/libclang.so ] || ls /usr/lib/llvm-*/lib/libclang*.so >/dev/null 2>&1 || need+=(libclang-dev)
command -v protoc >/dev/null 2>&1 || need+=(protobuf-compiler)
command -v cc >/dev/null 2>&1 || need+=(build-essential)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)

if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  else
    echo "setup: installing the Rust toolchain from Debian (rustup was not found)" >&2
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq cargo rustc >/dev/null
  fi
fi

# moto (AWS APIs in server mode) and awscli for the AWS driver tests, in the project-local virtualenv
# (the same .venv scripts/check-deploy.sh uses).
root="$(cd "$(dirname "$0")/.." && pwd)"
if [ ! -x "$root/.venv/bin/moto_server" ] || [ ! -x "$root/.venv/bin/aws" ]; then
  if [ -x /usr/bin/python3 ]; then PY=/usr/bin/python3; else PY="$(command -v python3 || true)"; fi
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  if [ -z "$PY" ]; then
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3 python3-venv >/dev/null
    PY=/usr/bin/python3
  fi
  if [ ! -x "$root/.venv/bin/python" ]; then
    if ! "$PY" -m venv "$root/.venv" >/dev/null 2>&1; then
      rm -rf "$root/.venv"
      $SUDO apt-get update -qq
      DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-venv >/dev/null
      "$PY" -m venv "$root/.venv"
    fi
  fi
  echo "setup: installing moto and awscli into .venv" >&2
  "$root/.venv/bin/python" -m pip install -q --disable-pip-version-check \
    "moto==5.2.5" flask flask-cors awscli
fi
