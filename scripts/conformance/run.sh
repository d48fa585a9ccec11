#!/usr/bin/env bash
# Referee conformance tests: the official AWS IoT Device SDK for Python against iot-core-local.
# Usage: scripts/conformance/run.sh [extra pytest args]   (from any directory)
# Env: IOT_CORE_LOCAL_BIN=<path> uses that server binary and skips the cargo build.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="$repo/target/conformance-venv"
requirements="$here/requirements.txt"
stamp="$venv/.requirements.sha256"

if [[ ! -x "$venv/bin/python" ]]; then
    echo "==> creating the Python venv in $venv"
    mkdir -p "$repo/target"
    python3 -m venv "$venv"
fi

want="$(sha256sum "$requirements" | cut -d' ' -f1)"
have="$(cat "$stamp" 2>/dev/null || true)"
if [[ "$want" != "$have" ]]; then
    echo "==> installing $requirements"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
    echo "$want" > "$stamp"
else
    echo "==> Python packages up to date"
fi

if [[ -n "${IOT_CORE_LOCAL_BIN:-}" ]]; then
    IOT_CORE_LOCAL_BIN="$(realpath "$IOT_CORE_LOCAL_BIN")"
    export IOT_CORE_LOCAL_BIN
    echo "==> using IOT_CORE_LOCAL_BIN=$IOT_CORE_LOCAL_BIN (no build)"
else
    echo "==> cargo build -p iot-core-local"
    (cd "$repo" && cargo build -p iot-core-local)
fi

echo "==> pytest scripts/conformance"
cd "$repo"
# No .pytest_cache or __pycache__ left in the work tree.
export PYTHONDONTWRITEBYTECODE=1
exec "$venv/bin/python" -m pytest -q -p no:cacheprovider scripts/conformance "$@"
