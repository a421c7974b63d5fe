#!/usr/bin/env python3
"""Prints the executables among cargo's JSON messages on stdin (a cargo
build, test or bench with --message-format=json): the test-profile ones,
or with `--target NAME` those of that target (test.sh, .ci/steps/40-emu.sh)."""
import json
import sys

name = sys.argv[2] if len(sys.argv) > 2 and sys.argv[1] == "--target" else None
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") != "compiler-artifact" or not m.get("executable"):
        continue
    if name is None and not m["profile"]["test"]:
        continue
    if name is not None and m["target"]["name"] != name:
        continue
    print(m["executable"])
