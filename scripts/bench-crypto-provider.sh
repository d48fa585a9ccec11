#!/usr/bin/env bash
# Start-up and connect cost of the TLS crypto provider: mtls-connect built with ring (the
# default) against the same program built with aws-lc-rs, run side by side against a local
# iot-core-local, alternating, in one run. Reports CPU time per connection and the ratio.
# Usage: scripts/bench-crypto-provider.sh [runs per variant, default 40]
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
runs="${1:-40}"
target="${CARGO_TARGET_DIR:-$repo/target}"
alt="$target/bench-aws-lc-rs"

echo "==> Building mtls-connect (release) with ring and with aws-lc-rs, and iot-core-local"
cargo build --release -p mtls-connect -p iot-core-local
CARGO_TARGET_DIR="$alt" cargo build --release -p mtls-connect --features aws-lc-rs
ring_bin="$target/release/mtls-connect"
lc_bin="$alt/release/mtls-connect"

account="$target/bench-account"
# shellcheck source=lib/endpoint.sh
. "$repo/scripts/lib/endpoint.sh"
RUST_LOG=warn start_endpoint "$target/release/iot-core-local" "$account" "$target/bench-endpoint.log"
args=(--cert "$account/device.pem" --key "$account/device.key" --ca-file "$account/server-ca.pem" --port "$p8883" localhost)
"$ring_bin" "${args[@]}" >/dev/null && "$lc_bin" "${args[@]}" >/dev/null

if command -v hyperfine >/dev/null; then
  hyperfine -N --warmup 5 --runs "$runs" -n ring "$ring_bin ${args[*]}" -n aws-lc-rs "$lc_bin ${args[*]}"
fi

# CPU time (user+sys) of the children, summed over the runs, alternating the two variants.
cpu_ms() { awk '{ printf "%d", ($14 + $15 + $16 + $17) * 1000 / '"$(getconf CLK_TCK)"' }' "/proc/$$/stat"; }
declare -A total=([ring]=0 [aws-lc-rs]=0)
for _ in $(seq 1 "$runs"); do
  for variant in ring aws-lc-rs; do
    bin="$ring_bin"; [ "$variant" = aws-lc-rs ] && bin="$lc_bin"
    before=$(cpu_ms)
    "$bin" "${args[@]}" >/dev/null
    after=$(cpu_ms)
    total[$variant]=$(( ${total[$variant]} + after - before ))
  done
done
echo
echo "CPU time per connection (user+sys, $runs runs each, alternating):"
for variant in ring aws-lc-rs; do
  awk -v t="${total[$variant]}" -v n="$runs" -v v="$variant" 'BEGIN { printf "  %-10s %6.2f ms\n", v, t / n }'
done
awk -v a="${total[aws-lc-rs]}" -v r="${total[ring]}" 'BEGIN { if (r > 0) printf "  aws-lc-rs / ring: %.2f\n", a / r }'
