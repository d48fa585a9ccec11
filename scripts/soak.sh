#!/usr/bin/env bash
# The hostile-client soak of issue 8: storms that reproduced findings 1-11 against the release
# build of iot-core-local, in a few minutes, each followed by a health check (a valid mTLS and a
# valid custom-auth connect, and a publish/subscribe round trip, each under 1 s). Prints RSS,
# descriptors and connect latency per storm; exits non-zero if a health check fails, a panic is
# logged, RSS grows more than 3 MB between rounds 1 and 3 of distinct client ids, peak RSS
# passes 200 MB during the WebSocket flood or the 200 MiB authorizer (or during storms 12, 13
# and 15, or grows more than 20 MB above their start), or a data-plane storm's own check fails.
#
# Everything runs on loopback, in target/soak/ (a scratch account, the endpoint logs). The
# client is scripts/lib/soak_client.py (Python standard library only). It starts `serve` itself,
# rather than through lib/endpoint.sh, because it needs the process id for RSS and descriptors
# and a second endpoint under `ulimit -n 1024` for the descriptor storm.
# Issue 9 added data-plane storms (12-15): lifecycle events under stalled watchers, a publish
# flood against the publish quota, client ids past the versionNumber cap, and abuse of reserved
# topics and topic limits; their thresholds are in the comments of soak_client.py. Each checks
# the endpoint's log lines, so the endpoint runs at RUST_LOG=info (one line per connection).
# Usage: scripts/soak.sh [--only TEXT]   (TEXT: part of a storm's name, e.g. "12 ")
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

# Issue 9's data-plane storms: the device certificate also gets a policy for the topics they use
# (init's policy covers only test/<clientId>/*): watching lifecycle events, the publish flood's
# soak/flood/*, and Basic Ingest to one rule.
arn="arn:aws:iot:us-east-1:123456789012"
dataplane='{"Version":"2012-10-17","Statement":['
dataplane+='{"Effect":"Allow","Action":"iot:Subscribe","Resource":["'"$arn"':topicfilter/$aws/events/presence/*","'"$arn"':topicfilter/$aws/events/subscriptions/*","'"$arn"':topicfilter/soak/flood/*"]},'
dataplane+='{"Effect":"Allow","Action":"iot:Receive","Resource":["'"$arn"':topic/$aws/events/*","'"$arn"':topic/soak/flood/*"]},'
dataplane+='{"Effect":"Allow","Action":"iot:Publish","Resource":["'"$arn"':topic/soak/flood/*","'"$arn"':topic/$aws/rules/soak_rule/*"]}]}'
toml="$account/iot-core-local.toml"
awk -v line="soak-dataplane = '$dataplane'" '{ print } /^\[policies\]$/ { print line }' \
  "$toml" >"$toml.new"
sed -i 's/^policies = \["device-connect"\]$/policies = ["device-connect", "soak-dataplane"]/' \
  "$toml.new"
grep -q '^soak-dataplane = ' "$toml.new" \
  && grep -q '"device-connect", "soak-dataplane"' "$toml.new" \
  || { echo "soak.sh: could not add the soak-dataplane policy to $toml"; exit 2; }
mv "$toml.new" "$toml"

echo "==> Storms (a few minutes)"
export RUST_LOG=info
exec python3 "$repo/scripts/lib/soak_client.py" soak --bin "$bin" --account "$account" \
  --work "$work" "$@"
