#!/usr/bin/env bash
# Idle memory per MQTT connection: start iot-core-local (a binary you built, e.g.
# target/release/iot-core-local), open N idle mTLS connections (MQTT 3.1.1, distinct client ids,
# each waits for its CONNACK), and divide the endpoint's RSS growth (VmRSS) by N.
# Then close them all and report the RSS once they are gone.
# Usage: scripts/idle-memory.sh <iot-core-local binary> [N=1000]
# Needs python3 (standard library only). Loopback only; writes only under target/.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
n="${2:-1000}"
work="${CARGO_TARGET_DIR:-$repo/target}/idle-memory"
mkdir -p "$work"

# shellcheck source=lib/endpoint.sh
. "$repo/scripts/lib/endpoint.sh"
start_endpoint "$bin" "$work/account" "$work/endpoint.log"

python3 - "$_endpoint_pid" "$p8883" "$work/account" "$n" <<'EOF'
import asyncio, ssl, sys

pid, port, account, n = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])

def rss_kib():
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])

def connect_packet(client_id):
    cid = client_id.encode()
    body = b"\x00\x04MQTT\x04\x02" + (1200).to_bytes(2, "big") + len(cid).to_bytes(2, "big") + cid
    return bytes([0x10, len(body)]) + body

ctx = ssl.create_default_context(cafile=f"{account}/server-ca.pem")
ctx.load_cert_chain(f"{account}/device.pem", f"{account}/device.key")
ctx.check_hostname = False

async def one(i, sem):
    async with sem:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname="localhost")
        writer.write(connect_packet(f"test-idle-{i}"))
        await writer.drain()
        connack = await asyncio.wait_for(reader.readexactly(4), 30)
        assert connack == b"\x20\x02\x00\x00", connack
        return writer

async def main():
    # Warm up: one connection in and out, so that one-time allocations are not counted.
    w = await one(-1, asyncio.Semaphore(1))
    w.close()
    await asyncio.sleep(1)
    before = rss_kib()
    sem = asyncio.Semaphore(50)
    writers = await asyncio.gather(*(one(i, sem) for i in range(n)))
    await asyncio.sleep(2)
    during = rss_kib()
    for w in writers:
        w.close()
    await asyncio.sleep(3)
    after = rss_kib()
    print(f"connections: {n}")
    print(f"RSS before: {before} KiB, with {n} idle: {during} KiB, after closing: {after} KiB")
    print(f"per idle connection: {(during - before) / n:.1f} KiB")

asyncio.run(main())
EOF
