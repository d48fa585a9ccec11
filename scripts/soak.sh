#!/usr/bin/env bash
# The hostile-client soak of issue 8: storms that reproduced findings 1-11 against the release
# build of iot-core-local, in a few minutes, each followed by a health check (a valid mTLS and a
# valid custom-auth connect, each under 1 s). Prints RSS, descriptors and connect latency per
# storm; exits non-zero if a health check fails, a panic is logged, RSS grows more than 3 MB
# between rounds 1 and 3 of distinct client ids, or peak RSS passes 200 MB during the
# WebSocket flood or the 200 MiB authorizer.
#
# Everything runs on loopback, in target/soak/ (a scratch account, the endpoint logs). The
# client is scripts/lib/soak_client.py (Python standard library only). It starts `serve` itself,
# rather than through lib/endpoint.sh, because it needs the process id for RSS and descriptors
# and a second endpoint under `ulimit -n 1024` for the descriptor storm.
# Usage: scripts/soak.sh
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
target="${CARGO_TARGET_DIR:-$repo/target}"
work="$target/soak"

command -v python3 >/dev/null || { echo "soak.sh needs python3"; exit 2; }
echo "==> Building iot-core-local (release)"
cargo build --release -p iot-core-local
bin="$target/release/iot-core-local"

rm -rf "$work"
mkdir -p "$work"
account="$work/account"
"$bin" init --force "$account" >/dev/null
# Finding 5: an authorizer whose command prints 200 MiB instead of a response.
cat >>"$account/iot-core-local.toml" <<'TOML'

[[authorizer]]
name = "flood-authorizer"
status = "ACTIVE"
signing_disabled = true

[authorizer.function.command]
argv = ["sh", "-c", "cat >/dev/null; head -c 209715200 /dev/zero"]
TOML

echo "==> Storms (a few minutes)"
exec python3 "$repo/scripts/lib/soak_client.py" soak --bin "$bin" --account "$account" --work "$work"
