#!/usr/bin/env python3
"""Checks the Grafana dashboard: the JSON parses, every panel that is not a row has at least one
query, and every query's expr names a certplane_ metric. With --promql-rules FILE, also writes
each expr as a recording rule (template variables replaced by regexes) so that
`promtool check rules FILE` proves the queries are valid PromQL."""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path


def panels(items):
    for p in items:
        yield p
        yield from panels(p.get("panels", []))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dashboard", nargs="?", default="deploy/grafana/certplane.json")
    ap.add_argument("--promql-rules", help="write the queries as recording rules to this file")
    args = ap.parse_args()
    try:
        dash = json.loads(Path(args.dashboard).read_text())
    except (OSError, json.JSONDecodeError) as e:
        print(f"check_dashboard: {args.dashboard}: {e}", file=sys.stderr)
        return 1
    problems, exprs = [], []
    for p in panels(dash.get("panels", [])):
        if p.get("type") == "row":
            continue
        title = p.get("title", f"panel {p.get('id')}")
        targets = p.get("targets", [])
        if not targets:
            problems.append(f'panel "{title}" has no query')
        for t in targets:
            expr = t.get("expr", "")
            if not re.search(r"\bcertplane_[a-z0-9_]+", expr):
                problems.append(f'panel "{title}" query {t.get("refId")} names no certplane_ metric: {expr!r}')
            exprs.append((title, expr))
    if not exprs:
        problems.append("the dashboard has no queries")
    for msg in problems:
        print(f"check_dashboard: {msg}", file=sys.stderr)
    if args.promql_rules:
        rules = []
        for i, (title, expr) in enumerate(exprs):
            concrete = expr.replace("$job", ".*").replace("$instance", ".*")
            rules.append({"record": f"dashboard:query_{i}", "expr": concrete})
        # JSON is YAML, and promtool reads it as a rule file.
        Path(args.promql_rules).write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}, indent=1))
    if problems:
        return 1
    print(f"check_dashboard: {len(exprs)} queries in {sum(1 for p in panels(dash['panels']) if p.get('type') != 'row')} panels, each names a certplane_ metric")
    return 0


if __name__ == "__main__":
    sys.exit(main())
