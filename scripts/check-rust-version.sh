#!/usr/bin/env bash
# Checks that the workspace's `rust-version` is the true minimum: the highest `rust-version`
# declared by any package in the resolved dependency graph (Cargo.lock). A dependency update that
# raises it makes this fail, naming the package, until Cargo.toml says the new minimum.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo metadata --format-version 1 --locked | python3 -c '
import json, sys

def key(v):
    return tuple(int(x) for x in v.split("."))

meta = json.load(sys.stdin)
members = set(meta["workspace_members"])
in_graph = {node["id"] for node in meta["resolve"]["nodes"]}
packages = {p["id"]: p for p in meta["packages"]}
declared = {packages[m]["rust_version"] for m in members}
if len(declared) != 1 or None in declared:
    sys.exit(f"workspace members declare different rust-versions: {sorted(map(str, declared))}")
ours = declared.pop()
deps = [(key(p["rust_version"]), p["rust_version"], p["name"])
        for i, p in packages.items() if i in in_graph and i not in members and p["rust_version"]]
highest = max(deps)
names = sorted({name for k, _, name in deps if k == highest[0]})
shown = ", ".join(names[:3]) + (" ..." if len(names) > 3 else "")
if key(ours) != highest[0]:
    sys.exit(f"rust-version is {ours} in Cargo.toml, but the dependency graph needs {highest[1]} "
             f"({shown}): set rust-version = \"{highest[1]}\" in the top-level Cargo.toml")
print(f"rust-version {ours}: the highest any dependency declares ({shown})")
'
