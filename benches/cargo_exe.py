"""Prints the executable cargo built for a target, from cargo's JSON messages
on stdin (`cargo test/bench/build --message-format=json ...`), for the scripts
that carry binaries to the GPU machine.

Usage: python3 benches/cargo_exe.py TARGET [KIND]   (KIND: test, bench, example; default any)
"""
import json
import sys

target = sys.argv[1]
kind = sys.argv[2] if len(sys.argv) > 2 else None
found = False
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if (m.get("reason") == "compiler-artifact" and m["target"]["name"] == target
            and (kind is None or kind in m["target"]["kind"]) and m.get("executable")):
        print(m["executable"])
        found = True
if not found:
    sys.exit(f"cargo_exe.py: no executable for target {target!r} (kind {kind or 'any'})")
