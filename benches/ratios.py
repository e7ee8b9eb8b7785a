#!/usr/bin/env python3
"""Prints each criterion group's results as ratios of its baseline.

Reads target/criterion/<group>/<bench>/new/estimates.json (the last run)
and divides every bench's median by the group's baseline bench (the first
of: service_fn, direct).  Usage: python3 benches/ratios.py [target/criterion]
"""
import json
import pathlib
import sys

root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "target/criterion")
BASELINES = ("service_fn", "direct")

groups = {}
for est in sorted(root.glob("**/new/estimates.json")):
    bench_dir = est.parent.parent
    group = bench_dir.parent.relative_to(root).as_posix()
    median = json.loads(est.read_text())["median"]["point_estimate"]
    groups.setdefault(group, {})[bench_dir.name] = median

for group, benches in sorted(groups.items()):
    base_name = next((b for b in BASELINES if b in benches), None)
    print(f"{group}")
    for name, ns in sorted(benches.items(), key=lambda kv: kv[1]):
        ratio = f"{ns / benches[base_name]:.2f}x" if base_name else "-"
        added = f"{ns - benches[base_name]:+.1f} ns" if base_name else ""
        print(f"  {name:32} {ns:12.1f} ns  {ratio:>8}  {added}")
