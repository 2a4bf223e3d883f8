#!/usr/bin/env python3
"""Renders deploy/cloud-init/user-data.yaml.tftpl the way the Terraform module's templatefile call
does (sample values, the real systemd unit), then checks the result: it is #cloud-config YAML,
writes the unit, the drop-in and both scripts, runs the bootstrap script, and each script passes
`bash -n`. Terraform itself is not needed."""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "deploy/cloud-init/user-data.yaml.tftpl"
UNIT = ROOT / "deploy/systemd/certplane.service"

SAMPLE = {
    "cluster_name": "certplane-prod",
    "node_id": "2",
    "node_ip": "10.40.2.10",
    "api_port": "8200",
    "cluster_port": "8201",
    "data_dir": "/var/lib/certplane",
    "data_volume_id": "vol-0123456789abcdef0",
    "region": "eu-west-1",
    "kek_source_type": "ssm",
    "kek_source_id": "/certplane/prod/kek",
    "tls_ssm_prefix": "/certplane/prod/tls",
    "join_token_parameter": "",
    "initial_cluster": "1=10.40.1.10:8201,2=10.40.2.10:8201,3=10.40.3.10:8201",
    "join_urls": "http://10.40.1.10:8200 http://10.40.2.10:8200 http://10.40.3.10:8200",
    "start_mode": "bootstrap",
    "certplane_binary": "/usr/local/bin/certplane",
    "heartbeat_ms": "50",
    "election_min_ms": "300",
    "election_max_ms": "600",
    "log_filter": "info,openraft=warn",
}

EXPECTED_FILES = {
    "/etc/systemd/system/certplane.service",
    "/etc/systemd/system/certplane.service.d/10-aws-secrets.conf",
    "/usr/local/libexec/certplane/fetch-secrets",
    "/usr/local/libexec/certplane/bootstrap",
}


def indent(n: int, text: str) -> str:
    # Terraform's indent(): every line but the first gets n spaces.
    lines = text.split("\n")
    return "\n".join([lines[0]] + [(" " * n + l) if l else l for l in lines[1:]])


def render(text: str, values: dict[str, str]) -> str:
    unit = UNIT.read_text()
    out, i = [], 0
    while i < len(text):
        if text.startswith("$${", i):
            out.append("${")
            i += 3
            continue
        if text.startswith("%{", i) and not text.startswith("%%{", i):
            raise SystemExit("check_cloud_init: template directives (%{...}) are not supported by this renderer")
        if text.startswith("${", i):
            j = text.index("}", i)
            expr = text[i + 2 : j].strip()
            m = re.fullmatch(r"indent\((\d+),\s*systemd_unit\)", expr)
            if m:
                out.append(indent(int(m.group(1)), unit))
            elif expr in values:
                out.append(values[expr])
            else:
                raise SystemExit(f"check_cloud_init: the template interpolates {expr!r}, which this check does not know")
            i = j + 1
            continue
        out.append(text[i])
        i += 1
    return "".join(out)


def main() -> int:
    problems = []
    rendered = render(TEMPLATE.read_text(), SAMPLE)
    if not rendered.startswith("#cloud-config\n"):
        problems.append("the rendered user data does not start with #cloud-config")
    try:
        doc = yaml.safe_load(rendered)
    except yaml.YAMLError as e:
        print(f"check_cloud_init: the rendered user data is not YAML: {e}", file=sys.stderr)
        return 1
    files = {f["path"]: f for f in doc.get("write_files", [])}
    for path in sorted(EXPECTED_FILES - set(files)):
        problems.append(f"write_files does not write {path}")
    if files.get("/etc/systemd/system/certplane.service", {}).get("content", "").strip() != UNIT.read_text().strip():
        problems.append("the unit written by cloud-init differs from deploy/systemd/certplane.service")
    if ["/usr/local/libexec/certplane/bootstrap"] not in doc.get("runcmd", []):
        problems.append("runcmd does not run /usr/local/libexec/certplane/bootstrap")
    with tempfile.TemporaryDirectory() as tmp:
        for path, f in files.items():
            content = f.get("content", "")
            if content.startswith("#!/bin/bash"):
                script = Path(tmp) / Path(path).name
                script.write_text(content)
                r = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
                if r.returncode != 0:
                    problems.append(f"{path} fails bash -n: {r.stderr.strip()}")
    boot = files.get("/usr/local/libexec/certplane/bootstrap", {}).get("content", "")
    if "node-id = 2" not in boot or 'initial-cluster = \\"$initial_cluster\\"' not in boot:
        problems.append("the bootstrap script does not write node-id and initial-cluster as expected")
    for p in problems:
        print(f"check_cloud_init: {p}", file=sys.stderr)
    if problems:
        return 1
    print(f"check_cloud_init: user data renders to valid cloud-config writing {len(files)} files; its scripts pass bash -n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
