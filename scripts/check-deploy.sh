#!/usr/bin/env bash
# Checks of the deployment kit (terraform/ and deploy/), as CI runs them; no cloud access needed.
# Installs what it needs on a fresh Debian machine (run as root, or with sudo available) and skips
# whatever is already there: promtool (Debian package prometheus), systemd-analyze (systemd),
# python3-venv, and python-hcl2 and checkov in a project-local virtualenv .venv.
#
#   terraform   every .tf parses and every reference resolves (tests/deploy/check_terraform.py),
#               and the checker is shown to fail on broken copies
#   checkov     no failed check over terraform/; skips only inline, each with a reason
#   promtool    the alert rules load and their unit tests pass
#   dashboard   the Grafana JSON parses, every query names a certplane_ metric and is valid PromQL
#   systemd     systemd-analyze verify accepts the unit
#   config      the example config and the cloud-init config use only real `certplane server` settings
#   cloud-init  the user data renders to valid cloud-config whose scripts pass bash -n
#
# Ends with one line: "check-deploy: N passed, N failed"; exits nonzero when any check failed.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"

PYTHON_TOOLS=(python-hcl2==8.1.4 checkov==3.3.30)

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
apt_updated=no
apt_install() {
  if [ "$apt_updated" = no ]; then
    $SUDO apt-get update -qq
    apt_updated=yes
  fi
  echo "check-deploy: installing $*" >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# --- tools --------------------------------------------------------------------------------------
need=()
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
[ -x /usr/bin/python3 ] || command -v python3 >/dev/null 2>&1 || need+=(python3)
[ ${#need[@]} -eq 0 ] || apt_install "${need[@]}"
# promtool ships in the prometheus package; Debian installs it as /usr/bin/promtool.
PROMTOOL="$(command -v promtool)"

# Debian's interpreter when present (python3-venv belongs to it), otherwise the first on PATH.
if [ -x /usr/bin/python3 ]; then PY=/usr/bin/python3; else PY="$(command -v python3)"; fi
VENV="$root/.venv"
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
  rm -rf "$VENV"
  if ! "$PY" -m venv "$VENV" >/dev/null 2>&1; then
    rm -rf "$VENV"
    apt_install python3-venv
    "$PY" -m venv "$VENV"
  fi
fi
if ! "$VENV/bin/python" -c 'import hcl2' >/dev/null 2>&1 || ! [ -x "$VENV/bin/checkov" ]; then
  echo "check-deploy: installing ${PYTHON_TOOLS[*]} into .venv" >&2
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "${PYTHON_TOOLS[@]}"
fi
VPY="$VENV/bin/python"

# --- running checks -------------------------------------------------------------------------------
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
passed=0
failed=0
failed_names=()
check() { # check NAME COMMAND...: run, show its output, count the result
  local name="$1"
  shift
  echo "== $name"
  if "$@"; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
    failed_names+=("$name")
    echo "check-deploy: FAILED: $name" >&2
  fi
}

# (a) Terraform references, and proof that the checker fails on broken copies.
terraform_refs() {
  "$VPY" tests/deploy/check_terraform.py terraform
}

checker_fails_on_broken_copies() {
  local mod="terraform/modules/certplane-cluster" ex="terraform/examples/multi-az" case_dir out ok=0
  # name | file to change (relative) | text appended | what the failure must name
  local cases=(
    "undeclared variable|$mod/outputs.tf|output \"broken\" {\n  value = var.does_not_exist\n}|var.does_not_exist"
    "undeclared local|$mod/outputs.tf|output \"broken\" {\n  value = local.no_such_local\n}|local.no_such_local"
    "undeclared resource|$mod/outputs.tf|output \"broken\" {\n  value = aws_s3_bucket.no_such_bucket.arn\n}|aws_s3_bucket.no_such_bucket"
    "undeclared data source|$mod/outputs.tf|output \"broken\" {\n  value = data.aws_iam_policy_document.nothing.json\n}|data.aws_iam_policy_document.nothing"
    "undeclared module|$ex/outputs.tf|output \"broken\" {\n  value = module.ghost.api_url\n}|module.ghost"
    "missing module output|$ex/outputs.tf|output \"broken\" {\n  value = module.certplane.no_such_output\n}|no_such_output"
    "unknown module input|$ex/main.tf|module \"second\" {\n  source = \"../../modules/certplane-cluster\"\n  no_such_input = 1\n}|no_such_input"
    "undocumented variable|$mod/variables.tf|variable \"zzz_undocumented\" {\n  type    = string\n  default = \"x\"\n}|zzz_undocumented"
    "unparsable file|$mod/broken.tf|resource \"aws_s3_bucket\" \"x\" {\n  bucket = |does not parse"
  )
  for c in "${cases[@]}"; do
    IFS='|' read -r name file text expect <<<"$c"
    case_dir="$(mktemp -d "$tmp/broken.XXXXXX")"
    cp -r terraform deploy "$case_dir/"
    printf '\n%b\n' "$text" >>"$case_dir/$file"
    if out="$("$VPY" tests/deploy/check_terraform.py "$case_dir/terraform" 2>&1)"; then
      echo "  the checker passed a broken copy ($name)"
      ok=1
    elif ! grep -qF -- "$expect" <<<"$out"; then
      echo "  the checker failed a broken copy ($name) but did not name $expect:"
      sed 's/^/    /' <<<"$out"
      ok=1
    else
      echo "  fails as it should ($name): $(grep -F -- "$expect" <<<"$out" | head -1)"
    fi
  done
  return $ok
}

# (b) checkov: no failed check, and every inline skip carries a reason.
checkov_scan() {
  local out status summary
  set +e
  out="$("$VENV/bin/checkov" -d terraform --framework terraform --skip-download --quiet --compact 2>&1)"
  status=$?
  set -e
  summary="$(grep -E 'Passed checks: [0-9]+, Failed checks: [0-9]+, Skipped checks: [0-9]+' <<<"$out" | head -1)"
  if [ "$status" -ne 0 ] || [ -z "$summary" ]; then
    echo "$out" | grep -v -E '^\s*$' | tail -60
    return 1
  fi
  echo "  checkov: $summary"
  local bad
  bad="$(grep -rn --include='*.tf' 'checkov:skip=' terraform | grep -v -E 'checkov:skip=CKV2?_[A-Z0-9]+_[0-9]+:.{10,}' || true)"
  if [ -n "$bad" ]; then
    echo "  inline skips without a reason:"
    echo "$bad"
    return 1
  fi
}

# (c) promtool
promtool_rules() {
  "$PROMTOOL" check rules deploy/prometheus/certplane-alerts.yml &&
    (cd deploy/prometheus && "$PROMTOOL" test rules certplane-alerts.test.yml)
}

# (d) dashboard
dashboard() {
  "$VPY" tests/deploy/check_dashboard.py deploy/grafana/certplane.json --promql-rules "$tmp/dashboard-queries.json" &&
    "$PROMTOOL" check rules "$tmp/dashboard-queries.json" >/dev/null &&
    echo "  every dashboard query is valid PromQL (promtool)"
}

# (e) systemd-analyze verify. The unit names /usr/local/bin/certplane, which verify requires to
# exist; a copy points ExecStart at a stub instead. systemd need not be PID 1 (containers, CI).
# Warnings about the unit itself (unknown keys, bad values) fail the check even though verify
# exits 0 for them; notes about the host's other units do not.
verify_unit() { # verify_unit UNIT_FILE: the stubbed copy of UNIT_FILE passes verify
  local dir out status ours
  dir="$(mktemp -d "$tmp/systemd.XXXXXX")"
  printf '#!/bin/sh\nexit 0\n' >"$dir/certplane"
  chmod +x "$dir/certplane"
  sed "s#/usr/local/bin/certplane#$dir/certplane#g" "$1" >"$dir/certplane.service"
  set +e
  out="$(SYSTEMD_LOG_LEVEL=warning systemd-analyze verify --man=no --generators=no "$dir/certplane.service" 2>&1)"
  status=$?
  set -e
  ours="$(grep -F 'certplane.service' <<<"$out" || true)"
  if [ "$status" -ne 0 ] || [ -n "$ours" ]; then
    echo "$out" | sed 's/^/    /'
    return 1
  fi
}

systemd_unit() {
  verify_unit deploy/systemd/certplane.service || return 1
  echo "  systemd-analyze verify: deploy/systemd/certplane.service is valid"
  # The same check must reject a unit with a misspelt hardening key.
  sed 's/^ProtectSystem=strict/ProtectSytem=strict/' deploy/systemd/certplane.service >"$tmp/misspelt.service"
  if verify_unit "$tmp/misspelt.service" >/dev/null; then
    echo "  the unit check accepted a unit with a misspelt key"
    return 1
  fi
  echo "  and it rejects a copy with a misspelt key (ProtectSytem=)"
}

check "terraform references" terraform_refs
check "terraform checker fails on broken copies" checker_fails_on_broken_copies
check "checkov" checkov_scan
check "promtool rules and tests" promtool_rules
check "grafana dashboard" dashboard
check "systemd unit" systemd_unit
check "node config keys" "$VPY" tests/deploy/check_config.py
check "cloud-init user data" "$VPY" tests/deploy/check_cloud_init.py

if [ "$failed" -gt 0 ]; then
  echo "check-deploy: failed: ${failed_names[*]}" >&2
fi
echo "check-deploy: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
