#!/usr/bin/env python3
"""Verify a certplane audit export (JSON lines) without certplane: docs/audit-chain.md.

Usage: verify-audit-export.py EXPORT.jsonl [EXPECTED_HEAD_HASH]
Exit 0 and print the head when the chain holds; exit 1 naming the first broken record otherwise.
"""

import hashlib
import json
import sys


def main() -> int:
    prev = None
    seq = None
    with open(sys.argv[1], encoding="utf-8") as export:
        for line in export:
            if not line.strip():
                continue
            record = json.loads(line)  # dicts keep the field order of the line
            if seq is not None and record["seq"] != seq + 1:
                print(f"broken at record {seq + 1}: found record {record['seq']}")
                return 1
            if prev is not None and record["prev_hash"] != prev:
                print(f"broken at record {record['seq']}: prev_hash does not match")
                return 1
            claimed = record["hash"]
            record["hash"] = ""
            canonical = json.dumps(record, separators=(",", ":"), ensure_ascii=False)
            if hashlib.sha256(canonical.encode("utf-8")).hexdigest() != claimed:
                print(f"broken at record {record['seq']}: content does not match its hash")
                return 1
            prev, seq = claimed, record["seq"]
    if len(sys.argv) > 2 and sys.argv[2] != prev:
        print(f"the export ends at {prev}, not at the expected head {sys.argv[2]}")
        return 1
    print(f"ok: {seq or 0} records, head {prev}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
