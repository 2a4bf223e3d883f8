#!/usr/bin/env python3
"""Checks that the node configuration files in deploy/ use only settings `certplane server` parses.

The settings are the fields of `ServerOptions` in crates/certplane-server/src/config.rs (TOML keys
are the kebab-case long flag names; `config` itself is not a file key). Checked:

  deploy/certplane.toml                    parses as TOML, every key is a setting, required ones present
  deploy/cloud-init/user-data.yaml.tftpl   every key of the TOML it writes is a setting
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONFIG_RS = ROOT / "crates/certplane-server/src/config.rs"
EXAMPLE = ROOT / "deploy/certplane.toml"
TEMPLATE = ROOT / "deploy/cloud-init/user-data.yaml.tftpl"
REQUIRED = {"node-id", "data-dir"}


def settings() -> dict[str, str]:
    text = CONFIG_RS.read_text()
    struct = re.search(r"pub struct ServerOptions \{(.*?)\n\}", text, flags=re.S)
    if not struct:
        raise SystemExit(f"check_config: no ServerOptions struct in {CONFIG_RS}")
    fields = {}
    for name, ty in re.findall(r"pub (\w+): Option<([^>]+)>", struct.group(1)):
        if name != "config":
            fields[name.replace("_", "-")] = ty
    return fields


def main() -> int:
    known = settings()
    problems = []
    try:
        example = tomllib.loads(EXAMPLE.read_text())
    except tomllib.TOMLDecodeError as e:
        problems.append(f"{EXAMPLE.relative_to(ROOT)} is not valid TOML: {e}")
        example = {}
    for key, value in example.items():
        if key not in known:
            problems.append(f"{EXAMPLE.relative_to(ROOT)}: {key} is not a setting of certplane server")
            continue
        ty = known[key]
        expected = (
            bool if ty == "bool"
            else int if ty in {"u64", "usize", "u32"}
            else float if ty in {"f64", "f32"}
            else str
        )
        if type(value) is not expected:
            problems.append(f"{EXAMPLE.relative_to(ROOT)}: {key} = {value!r} does not fit its type {known[key]}")
    for key in sorted(REQUIRED - set(example)):
        problems.append(f"{EXAMPLE.relative_to(ROOT)}: the required setting {key} is missing")

    template = TEMPLATE.read_text()
    block = re.search(r"<<TOML\n(.*?)\n\s*TOML\n", template, flags=re.S)
    if not block:
        problems.append(f"{TEMPLATE.relative_to(ROOT)}: no <<TOML heredoc found")
        keys = []
    else:
        keys = re.findall(r"^\s*([a-z][a-z-]*) = ", block.group(1), flags=re.M)
    # Lines added on first boot: bootstrap_lines="initial-cluster = ..." / "join = ..."
    keys += re.findall(r'bootstrap_lines="([a-z][a-z-]*) = ', template)
    for key in keys:
        if key not in known:
            problems.append(f"{TEMPLATE.relative_to(ROOT)}: writes {key}, which is not a setting of certplane server")
    for key in sorted(REQUIRED - set(keys)):
        problems.append(f"{TEMPLATE.relative_to(ROOT)}: does not write the required setting {key}")

    for p in problems:
        print(f"check_config: {p}", file=sys.stderr)
    if problems:
        return 1
    print(f"check_config: {len(example)} keys in deploy/certplane.toml and {len(keys)} in the cloud-init config are settings of certplane server")
    return 0


if __name__ == "__main__":
    sys.exit(main())
