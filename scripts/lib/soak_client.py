#!/usr/bin/env python3
"""Hostile and ordinary MQTT clients for scripts/soak.sh and scripts/bench-connect.sh.

Python standard library only (asyncio + ssl), loopback only, every loop bounded in count and
time. MQTT 3.1.1 / 5 and WebSocket frames are encoded by hand from the specifications.

  soak  --bin B --account DIR --work DIR
        runs the storms of issue 8 (findings 1-11) against `B serve`, each followed by a health
        check, prints a table, exits 1 if a check fails.
  bench --port P --ca F --cert F --key F --connects N
        N sequential mTLS connects (CONNECT, CONNACK, DISCONNECT); prints the seconds taken.
  idle  --port P --ca F --cert F --key F --count N --pid PID
        holds N connected clients; prints the RSS of PID (kB) before and with them open.
"""

import argparse
import asyncio
import os
import resource
import signal
import ssl
import statistics
import subprocess
import sys
import time

HOST = "127.0.0.1"
SNI = "localhost"
STEP = 10.0  # seconds any single client operation may take before it counts as a stall

# ---------------------------------------------------------------------------------------------
# MQTT encoding


def varint(n):
    out = bytearray()
    while True:
        byte = n % 128
        n //= 128
        out.append(byte | 0x80 if n else byte)
        if not n:
            return bytes(out)


def mqtt_string(b):
    if isinstance(b, str):
        b = b.encode()
    return len(b).to_bytes(2, "big") + b


def connect_packet(client_id, v5=True, username=None, password=None, keep_alive=60):
    flags = 0x02  # clean session / clean start
    if username is not None:
        flags |= 0x80
    if password is not None:
        flags |= 0x40
    body = mqtt_string("MQTT") + bytes([5 if v5 else 4, flags]) + keep_alive.to_bytes(2, "big")
    if v5:
        body += b"\x00"  # no properties
    body += mqtt_string(client_id)
    if username is not None:
        body += mqtt_string(username)
    if password is not None:
        body += mqtt_string(password)
    return b"\x10" + varint(len(body)) + body


def disconnect_packet(v5=True):
    return b"\xe0\x01\x00" if v5 else b"\xe0\x00"


async def read_packet(reader, timeout=STEP):
    """One MQTT packet (first byte, body), or None if the connection ends first."""
    try:
        first = await asyncio.wait_for(reader.readexactly(1), timeout)
        length, shift = 0, 0
        for _ in range(4):
            b = (await asyncio.wait_for(reader.readexactly(1), timeout))[0]
            length |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
        body = await asyncio.wait_for(reader.readexactly(length), timeout)
        return first[0], body
    except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError, OSError):
        return None


async def read_connack(reader, timeout=STEP):
    """The CONNACK's return/reason code, or None if the connection ended without one."""
    p = await read_packet(reader, timeout)
    if p is None or p[0] != 0x20 or len(p[1]) < 2:
        return None
    return p[1][1]


async def closed_within(reader, timeout):
    """True if the peer ends the connection within `timeout` (anything it sends is skipped)."""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            data = await asyncio.wait_for(reader.read(65536), deadline - time.monotonic())
            if not data:
                return True
    except asyncio.TimeoutError:
        return False
    except (ConnectionError, ssl.SSLError, OSError):
        return True
    return False


def close(writer):
    try:
        writer.transport.abort()
    except Exception:  # noqa: BLE001 - closing a broken connection must not stop a storm
        pass


# ---------------------------------------------------------------------------------------------
# WebSocket (RFC 6455), client side


def ws_upgrade_request(host, path="/mqtt"):
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Protocol: mqtt\r\n\r\n"
    ).encode()


def ws_frame_header(length, opcode=0x2, fin=True):
    """A client frame header with mask key 0 (masked, and the payload unchanged by the mask)."""
    first = (0x80 if fin else 0) | opcode
    if length < 126:
        head = bytes([first, 0x80 | length])
    elif length <= 0xFFFF:
        head = bytes([first, 0x80 | 126]) + length.to_bytes(2, "big")
    else:
        head = bytes([first, 0x80 | 127]) + length.to_bytes(8, "big")
    return head + b"\x00\x00\x00\x00"


async def read_http_head(reader, timeout=STEP):
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
    return head.decode(errors="replace")


async def read_ws_binary(reader, timeout=STEP):
    """The payload of the next server frame (unmasked), or None if the connection ends."""
    try:
        h = await asyncio.wait_for(reader.readexactly(2), timeout)
        n = h[1] & 0x7F
        if n == 126:
            n = int.from_bytes(await reader.readexactly(2), "big")
        elif n == 127:
            n = int.from_bytes(await reader.readexactly(8), "big")
        payload = await asyncio.wait_for(reader.readexactly(n), timeout)
        if h[0] & 0x0F == 0x8:
            return None
        return payload
    except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError, OSError):
        return None


# ---------------------------------------------------------------------------------------------
# The account and the endpoint


class Account:
    def __init__(self, account_dir, port443=None, port8883=None):
        self.dir = account_dir
        self.port443 = port443
        self.port8883 = port8883
        self.password = open(os.path.join(account_dir, "custom-auth-password")).read().strip()
        self.username = "demo-user?x-amz-customauthorizer-name=unsigned-authorizer"

    def context(self, alpn=None, cert=True):
        ctx = ssl.create_default_context(cafile=os.path.join(self.dir, "server-ca.pem"))
        if cert:
            ctx.load_cert_chain(
                os.path.join(self.dir, "device.pem"), os.path.join(self.dir, "device.key")
            )
        if alpn:
            ctx.set_alpn_protocols([alpn])
        return ctx


class Contexts:
    def __init__(self, account):
        self.mtls = account.context()
        self.mtls443 = account.context("x-amzn-mqtt-ca")
        self.custom = account.context("mqtt", cert=False)
        self.ws = account.context(None, cert=False)


async def open_tls(port, ctx, timeout=STEP):
    return await asyncio.wait_for(
        asyncio.open_connection(
            HOST, port, ssl=ctx, server_hostname=SNI, ssl_handshake_timeout=timeout
        ),
        timeout,
    )


async def mqtt_connect(port, ctx, client_id, v5=True, username=None, password=None,
                       keep_alive=60, hold=False):
    """Connect, CONNECT, read CONNACK; DISCONNECT unless `hold`.
    Returns (code or None, seconds, (reader, writer) if held and accepted)."""
    start = time.monotonic()
    try:
        reader, writer = await open_tls(port, ctx)
    except (OSError, ssl.SSLError, asyncio.TimeoutError, ConnectionError):
        return None, time.monotonic() - start, None
    try:
        writer.write(connect_packet(client_id, v5, username, password, keep_alive))
        await writer.drain()
        code = await read_connack(reader)
    except (OSError, ssl.SSLError, ConnectionError):
        code = None
    elapsed = time.monotonic() - start
    if hold and code == 0:
        return code, elapsed, (reader, writer)
    if code == 0:
        try:
            writer.write(disconnect_packet(v5))
            await writer.drain()
        except (OSError, ConnectionError):
            pass
    close(writer)
    return code, elapsed, None


class Endpoint:
    """`iot-core-local serve` on free loopback ports, its log in a file."""

    def __init__(self, binary, account_dir, log_path, nofile=None, extra=()):
        self.binary = binary
        self.account_dir = account_dir
        self.log_path = log_path
        self.nofile = nofile
        self.extra = list(extra)
        self.proc = None

    def start(self):
        def limits():
            if self.nofile:
                resource.setrlimit(resource.RLIMIT_NOFILE, (self.nofile, self.nofile))

        self.log = open(self.log_path, "w")
        env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "info"))
        self.proc = subprocess.Popen(
            [self.binary, "serve", "--dir", self.account_dir, "--port-443", "0",
             "--port-8883", "0", *self.extra],
            stdout=subprocess.PIPE, stderr=self.log, env=env, preexec_fn=limits, text=True,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            if line.startswith("ready "):
                ports = dict(w.split("=") for w in line.split()[1:])
                self.port443 = int(ports["port_443"])
                self.port8883 = int(ports["port_8883"])
                return self
        raise SystemExit(f"iot-core-local did not start; see {self.log_path}")

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        if self.proc and self.alive():
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    def log_lines(self):
        with open(self.log_path, errors="replace") as f:
            return f.read().splitlines()


# ---------------------------------------------------------------------------------------------
# Measurements of the endpoint's process


def rss_mb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def hwm_mb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def reset_hwm(pid):
    """Reset the kernel's peak-RSS mark (VmHWM); False where that is not allowed."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def fd_count(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


class PeakSampler:
    """Peak RSS of a process over a storm: the kernel's VmHWM where it can be reset, and a
    sample every 20 ms in any case (the larger of the two)."""

    def __init__(self, pid):
        self.pid = pid
        self.peak = rss_mb(pid)
        self.hwm = reset_hwm(pid)
        self.task = asyncio.get_running_loop().create_task(self.run())

    async def run(self):
        while True:
            self.peak = max(self.peak, rss_mb(self.pid))
            await asyncio.sleep(0.02)

    async def stop(self):
        self.task.cancel()
        try:
            await self.task
        except asyncio.CancelledError:
            pass
        self.peak = max(self.peak, rss_mb(self.pid))
        if self.hwm:
            self.peak = max(self.peak, hwm_mb(self.pid))
        return self.peak


def percentiles(values):
    if not values:
        return None
    v = sorted(values)

    def at(p):
        return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))] * 1000

    return at(50), at(95), at(99)


async def gather_bounded(coros, limit):
    """Run coroutines with at most `limit` at once; results in order."""
    sem = asyncio.Semaphore(limit)

    async def run(c):
        async with sem:
            return await c

    return await asyncio.gather(*(run(c) for c in coros))


def codes_summary(codes):
    counts = {}
    for c in codes:
        key = "none" if c is None else f"0x{c:02X}"
        counts[key] = counts.get(key, 0) + 1
    return " ".join(f"{k}:{n}" for k, n in sorted(counts.items()))


# ---------------------------------------------------------------------------------------------
# The storms. Each returns (ok, result text, connect latencies in seconds or []).


class Storms:
    def __init__(self, ep, account):
        self.ep = ep
        self.acct = account
        self.ctx = Contexts(account)

    # Finding 1: shared client ids, MQTT 5 and 3.1.1 alternating, retries.
    async def churn(self):
        total, ids, concurrency = 1600, 4, 8
        deadline = time.monotonic() + 90
        counter = iter(range(total))
        results = []

        async def worker():
            for i in counter:
                if time.monotonic() > deadline:
                    return
                port, ctx = ((self.ep.port8883, self.ctx.mtls) if i % 3
                             else (self.ep.port443, self.ctx.mtls443))
                # Each id alternates MQTT 5 and 3.1.1 from one connect to its next.
                results.append(await mqtt_connect(port, ctx, f"test-churn-{i % ids}",
                                                  v5=bool((i // ids) % 2)))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        codes = [r[0] for r in results]
        refused = sum(1 for c in codes if c not in (0, None))
        ok = refused == 0 and len(results) == total
        text = f"{len(results)} connects on {ids} ids, v5/v3.1.1 alternating: {codes_summary(codes)}"
        return ok, text, [r[1] for r in results if r[0] == 0]

    # Finding 2: distinct client ids; RSS after each round.
    async def distinct_ids(self):
        rounds, per_round, concurrency = 3, 3000, 16
        after, latencies, failed = [], [], 0
        for r in range(rounds):
            res = await gather_bounded(
                [mqtt_connect(self.ep.port8883, self.ctx.mtls, f"test-id-{r}-{i}", v5=bool(i % 2))
                 for i in range(per_round)],
                concurrency,
            )
            failed += sum(1 for c, _, _ in res if c != 0)
            latencies += [t for c, t, _ in res if c == 0]
            await asyncio.sleep(2)
            after.append(rss_mb(self.ep.pid))
        growth = after[-1] - after[0]
        self.id_growth = growth
        ok = failed == 0 and growth <= 3.0
        text = (f"{rounds}x{per_round} ids, {failed} failed; RSS after each round "
                + " / ".join(f"{a:.1f}" for a in after) + f" MB (round 3 - round 1: {growth:+.1f} MB,"
                " limit 3)")
        return ok, text, latencies

    # Finding 3: unauthenticated WebSocket, huge non-final fragments.
    async def ws_flood(self):
        clients, fragments, size = 8, 4, 15 << 20
        chunk = bytes(1 << 20)
        host = f"localhost:{self.ep.port443}"

        async def one():
            sent = 0
            try:
                reader, writer = await open_tls(self.ep.port443, self.ctx.ws)
                writer.write(ws_upgrade_request(host))
                await writer.drain()
                head = await read_http_head(reader)
                if not head.startswith("HTTP/1.1 101"):
                    close(writer)
                    return sent, "no 101"
                for f in range(fragments):
                    writer.write(ws_frame_header(size, 0x2 if f == 0 else 0x0, fin=False))
                    for _ in range(size // len(chunk)):
                        writer.write(chunk)
                        await asyncio.wait_for(writer.drain(), STEP)
                        sent += len(chunk)
                ended = await closed_within(reader, 15)
                close(writer)
                return sent, "closed" if ended else "still open"
            except (OSError, ssl.SSLError, ConnectionError, asyncio.TimeoutError,
                    asyncio.IncompleteReadError):
                return sent, "closed"

        res = await asyncio.wait_for(asyncio.gather(*(one() for _ in range(clients))), 120)
        closed = sum(1 for _, how in res if how == "closed")
        most = max(s for s, _ in res) / (1 << 20)
        text = (f"{clients} clients x {fragments} x 15 MiB non-final fragments: {closed} closed "
                f"by the server, at most {most:.0f} MiB sent by one")
        return closed == clients, text, []

    # Finding 4: CONNECT claiming a huge remaining length; and many claiming the largest allowed.
    async def huge_remaining_length(self):
        async def claim(header, send_bytes):
            try:
                reader, writer = await open_tls(self.ep.port8883, self.ctx.mtls)
            except (OSError, ssl.SSLError, asyncio.TimeoutError, ConnectionError):
                return "no TLS"
            try:
                writer.write(header)
                for _ in range(send_bytes // 65536):
                    writer.write(bytes(65536))
                    await asyncio.wait_for(writer.drain(), STEP)
                await writer.drain()
            except (OSError, ConnectionError, asyncio.TimeoutError):
                close(writer)
                return "closed"
            ended = await closed_within(reader, 3)
            close(writer)
            return "closed" if ended else "open"

        huge = await asyncio.gather(*(claim(b"\x10\xff\xff\xff\x7f", 1 << 20) for _ in range(20)))
        # 400 connections each announcing 65,535 bytes and sending 1: what they cost while held.
        before = rss_mb(self.ep.pid)

        async def hold():
            try:
                _, writer = await open_tls(self.ep.port8883, self.ctx.mtls)
                writer.write(b"\x10\xff\xff\x03\x00")
                await writer.drain()
                return writer
            except (OSError, ssl.SSLError, asyncio.TimeoutError, ConnectionError):
                return None

        # Concurrently, so that all are held before the server's 10 s CONNECT deadline.
        held = [w for w in await gather_bounded([hold() for _ in range(400)], 50) if w]
        await asyncio.sleep(1)
        during = rss_mb(self.ep.pid)
        for w in held:
            close(w)
        closed = sum(1 for h in huge if h == "closed")
        text = (f"20 claiming 256 MiB: {closed} closed; {len(held)} held claiming 64 KiB: "
                f"RSS {during - before:+.1f} MB while held")
        return closed == len(huge), text, []

    # Finding 4: many connections that never authenticate.
    async def pending(self):
        count = 700
        conns = []
        for _ in range(count):
            try:
                conns.append(await asyncio.wait_for(
                    asyncio.open_connection(HOST, self.ep.port443), STEP))
            except (OSError, asyncio.TimeoutError):
                pass
        await asyncio.sleep(1)
        refused = 0
        for reader, _ in conns:
            if await closed_within(reader, 0.01):
                refused += 1
        for _, writer in conns:
            close(writer)
        ok = refused > 0
        text = (f"{len(conns)} TCP connections that never start TLS: {refused} closed at once "
                "(over the pending cap)")
        return ok, text, []

    # Finding 5: an authorizer command printing 200 MiB.
    async def authorizer_flood(self):
        user = "demo-user?x-amz-customauthorizer-name=flood-authorizer"
        res = await asyncio.gather(*(
            mqtt_connect(self.ep.port443, self.ctx.custom, f"test-flood-{i}", True, user, "pw")
            for i in range(2)))
        codes = [c for c, _, _ in res]
        ok = all(c not in (0, None) for c in codes)
        return ok, f"2 connects to a 200 MiB authorizer: {codes_summary(codes)}", []

    # Finding 6: a burst of simultaneous connects.
    async def burst(self):
        n = 2000
        res = await asyncio.wait_for(asyncio.gather(*(
            mqtt_connect(self.ep.port8883, self.ctx.mtls, f"test-burst-{i}", v5=bool(i % 2))
            for i in range(n))), 180)
        codes = [c for c, _, _ in res]
        refused = [t for c, t, _ in res if c is None]
        slow = sum(1 for c, t, _ in res if c == 0 and t > 1.0)
        text = (f"{n} simultaneous mTLS connects: {codes_summary(codes)} (none: closed without "
                f"CONNACK, e.g. over the pending cap, slowest after {max(refused, default=0):.1f} s); "
                f"{slow} accepted after more than 1 s")
        # Accepted or visibly refused: no CONNACK other than 0 (0x88: the broker failed).
        ok = all(c in (0, None) for c in codes) and any(c == 0 for c in codes)
        return ok, text, [t for c, t, _ in res if c == 0]

    # Finding 8: control characters in the client id and the authorizer name.
    async def control_chars(self):
        forged = "[2026-01-01T00:00:00Z INFO  iot_core_local::server] 127.0.0.1:1 [8883 mtls] client 'test-x': allowed: FORGED"
        await mqtt_connect(self.ep.port8883, self.ctx.mtls, "test-ctl\n" + forged + "\x1b[2K")
        user = "demo-user?x-amz-customauthorizer-name=evil%0A" + forged.replace(" ", "%20")
        await mqtt_connect(self.ep.port443, self.ctx.custom, "test-ctl-2", True, user, "pw")
        await asyncio.sleep(0.5)
        lines = self.ep.log_lines()
        bad = [line for line in lines if "FORGED" in line and "\\n" not in line]
        esc = [line for line in lines if "\x1b" in line]
        ok = not bad and not esc
        text = (f"newline in the client id and in the authorizer name: {len(bad)} forged lines, "
                f"{len(esc)} lines with a raw escape character")
        return ok, text, []

    # Finding 9: keep-alive 0.
    async def keep_alive_zero(self):
        codes = []
        for v5 in (True, False):
            c, _, _ = await mqtt_connect(self.ep.port8883, self.ctx.mtls, "test-ka0", v5,
                                         keep_alive=0)
            codes.append(c)
        ok = codes == [0, 0]
        return ok, f"keep-alive 0, MQTT 5 then 3.1.1: {codes_summary(codes)} (want 0x00 twice)", []

    # Finding 10: the first WebSocket frame in the same write as the upgrade request.
    async def pipelined_ws(self):
        start = time.monotonic()
        reader, writer = await open_tls(self.ep.port443, self.ctx.ws)
        connect = connect_packet("test-pipelined", True, self.acct.username, self.acct.password)
        writer.write(ws_upgrade_request(f"localhost:{self.ep.port443}")
                     + ws_frame_header(len(connect)) + connect)
        await writer.drain()
        head = await read_http_head(reader)
        payload = await read_ws_binary(reader, timeout=8)
        took = time.monotonic() - start
        close(writer)
        code = payload[3] if payload and len(payload) >= 4 and payload[0] == 0x20 else None
        ok = head.startswith("HTTP/1.1 101") and code == 0
        what = "none" if code is None else f"0x{code:02X}"
        return ok, f"upgrade + CONNECT in one write: CONNACK {what} after {took * 1000:.0f} ms", [took]

    # Finding 11: a second CONNECT on a connection.
    async def second_connect(self):
        code, _, held = await mqtt_connect(self.ep.port8883, self.ctx.mtls, "test-second",
                                           hold=True)
        if held is None:
            return False, f"first CONNECT not accepted: {code}", []
        reader, writer = held
        writer.write(connect_packet("test-second"))
        await writer.drain()
        ended = await closed_within(reader, 5)
        close(writer)
        return ended, f"second CONNECT: connection {'closed' if ended else 'left open'}", []

    # Finding 7: descriptor exhaustion, against a separate endpoint under ulimit -n 1024
    # (started with --max-pending above 1024, so that its accepts, not the cap, hit the limit).
    async def descriptors(self):
        n = 1500
        start = time.monotonic()

        async def open_one():
            try:
                return await asyncio.wait_for(asyncio.open_connection(HOST, self.ep.port8883), 3)
            except (OSError, asyncio.TimeoutError):
                return None

        conns = [c for c in await gather_bounded([open_one() for _ in range(n)], 100) if c]
        fds_full = fd_count(self.ep.pid)
        # Devices trying to connect meanwhile: they cannot, but they must not break anything.
        during = await gather_bounded(
            [mqtt_connect(self.ep.port8883, self.ctx.mtls, f"test-fd-{i}") for i in range(50)],
            10)
        await asyncio.sleep(2)
        window = time.monotonic() - start
        for _, w in conns:
            close(w)
        await asyncio.sleep(1.5)
        lines = [line for line in self.ep.log_lines() if "accept failed" in line]
        most = int(window) + 2
        ok = len(lines) <= most
        text = (f"{len(conns)} of {n} TCP connections opened under ulimit -n 1024 (fds at most "
                f"{fds_full}); {sum(1 for c, _, _ in during if c == 0)} of 50 devices connected "
                f"meanwhile; {len(lines)} 'accept failed' lines in {window:.0f} s (limit {most})")
        if lines:
            text += f"; last: {lines[-1].split('] ', 1)[-1]}"
        return ok, text, [t for c, t, _ in during if c == 0]


async def health(ep, acct):
    """A valid mTLS and a valid custom-auth connect, each under 1 s."""
    ctx = Contexts(acct)
    c1, t1, _ = await mqtt_connect(ep.port8883, ctx.mtls, "test-health-mtls")
    c2, t2, _ = await mqtt_connect(ep.port443, ctx.custom, "test-health-custom", True,
                                   acct.username, acct.password)
    ok = c1 == 0 and c2 == 0 and t1 < 1.0 and t2 < 1.0
    return ok, f"{'ok' if ok else 'FAILED'} ({t1 * 1000:.0f}/{t2 * 1000:.0f} ms)"


async def soak(args):
    raise_nofile()
    account = Account(args.account)
    main_log = os.path.join(args.work, "soak-serve.log")
    ep = Endpoint(args.bin, args.account, main_log).start()
    storms = Storms(ep, account)
    plan = [
        ("1 churn, shared ids", "churn"),
        ("2 distinct ids 3x3000", "distinct_ids"),
        ("3 ws fragment flood", "ws_flood"),
        ("4 huge remaining length", "huge_remaining_length"),
        ("4 pending, no TLS", "pending"),
        ("5 authorizer 200 MiB", "authorizer_flood"),
        ("6 burst of 2000", "burst"),
        ("8 control characters", "control_chars"),
        ("9 keep-alive 0", "keep_alive_zero"),
        ("10 pipelined ws frame", "pipelined_ws"),
        ("11 second CONNECT", "second_connect"),
    ]
    rows, failures = [], []
    peak_limits = {"3 ws fragment flood": 200.0, "5 authorizer 200 MiB": 200.0}

    async def run(name, storm, endpoint):
        before, fds_before = rss_mb(endpoint.pid), fd_count(endpoint.pid)
        sampler = PeakSampler(endpoint.pid)
        t0 = time.monotonic()
        try:
            ok, text, lat = await asyncio.wait_for(storm(), 300)
        except Exception as e:  # noqa: BLE001 - a storm that breaks is reported, not fatal
            ok, text, lat = False, f"storm error: {type(e).__name__}: {e}", []
        peak = await sampler.stop()
        await asyncio.sleep(1)
        after, fds_after = rss_mb(endpoint.pid), fd_count(endpoint.pid)
        if not endpoint.alive():
            ok, text = False, text + "; THE ENDPOINT EXITED"
            hok, htext = False, "FAILED (no endpoint)"
        else:
            hok, htext = await health(endpoint, account)
        limit = peak_limits.get(name)
        if limit is not None and peak > limit:
            ok = False
            text += f"; peak RSS {peak:.0f} MB over {limit:.0f} MB"
        p = percentiles(lat)
        rows.append((name, "ok" if ok else "FAILED", text, before, peak, after, fds_before,
                     fds_after, p, htext, time.monotonic() - t0))
        if not ok:
            failures.append(name)
        if not hok:
            failures.append(name + " (health)")
        print(f"  {name}: {'ok' if ok else 'FAILED'}; health {htext}", flush=True)
        return hok

    print(f"endpoint pid {ep.pid}, ports {ep.port443}/{ep.port8883}, log {main_log}", flush=True)
    logs = [main_log]
    for name, method in plan:
        if not await run(name, getattr(storms, method), ep):
            # A broken endpoint would fail every storm after this one: measure those on a fresh
            # one, and say so.
            ep.stop()
            main_log = os.path.join(args.work, f"soak-serve-{len(logs)}.log")
            logs.append(main_log)
            ep = Endpoint(args.bin, args.account, main_log).start()
            storms = Storms(ep, account)
            print(f"  endpoint restarted after '{name}': pid {ep.pid}, log {main_log}", flush=True)
            rows[-1] = rows[-1][:2] + (rows[-1][2] + "; endpoint restarted after it",) + rows[-1][3:]
    ep.stop()

    fd_log = os.path.join(args.work, "soak-serve-nofile.log")
    fd_ep = Endpoint(args.bin, args.account, fd_log, nofile=1024,
                     extra=["--max-pending", "4096"]).start()
    await run("7 descriptors, ulimit 1024", Storms(fd_ep, account).descriptors, fd_ep)
    fd_ep.stop()

    panics = [line for log in logs + [fd_log] for line in open(log, errors="replace")
              if "panicked" in line]
    print_table(rows)
    print()
    for r in rows:
        print(f"{r[0]}: {r[1]}: {r[2]}")
    if panics:
        failures.append("panics")
        print(f"\n{len(panics)} log line(s) with 'panicked', first: {panics[0].strip()}")
    else:
        print("\nno log line contains 'panicked'")
    if failures:
        print("FAILED: " + ", ".join(failures))
        return 1
    print("all storms passed")
    return 0


def print_table(rows):
    head = ("storm", "result", "RSS MB before/peak/after", "fds before/after",
            "connect ms p50/p95/p99", "health mtls/custom", "secs")
    out = [head]
    for name, res, _, before, peak, after, fb, fa, p, h, secs in rows:
        lat = "-" if p is None else f"{p[0]:.0f}/{p[1]:.0f}/{p[2]:.0f}"
        out.append((name, res, f"{before:.1f}/{peak:.1f}/{after:.1f}", f"{fb}/{fa}", lat, h,
                    f"{secs:.0f}"))
    widths = [max(len(r[i]) for r in out) for i in range(len(head))]
    print()
    for i, r in enumerate(out):
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 16384) if hard != resource.RLIM_INFINITY else 16384
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


# ---------------------------------------------------------------------------------------------
# Benchmark helpers


def bench_context(args):
    ctx = ssl.create_default_context(cafile=args.ca)
    ctx.load_cert_chain(args.cert, args.key)
    return ctx


async def bench(args):
    ctx = bench_context(args)
    start = time.monotonic()
    for i in range(args.connects):
        code, _, _ = await mqtt_connect(args.port, ctx, f"test-bench-{i}", v5=False)
        if code != 0:
            print(f"connect {i} failed: CONNACK {code}", file=sys.stderr)
            return 1
    print(f"{time.monotonic() - start:.4f}")
    return 0


async def idle(args):
    raise_nofile()
    ctx = bench_context(args)
    before = rss_mb(args.pid)
    held = []
    for i in range(args.count):
        code, _, h = await mqtt_connect(args.port, ctx, f"test-idle-{i}", v5=False,
                                        keep_alive=600, hold=True)
        if h is None:
            print(f"idle connect {i} failed: CONNACK {code}", file=sys.stderr)
            return 1
        held.append(h)
    await asyncio.sleep(2)
    during = rss_mb(args.pid)
    print(f"{before * 1024:.0f} {during * 1024:.0f}")
    for _, w in held:
        close(w)
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("soak")
    s.add_argument("--bin", required=True)
    s.add_argument("--account", required=True)
    s.add_argument("--work", required=True)
    for name in ("bench", "idle"):
        b = sub.add_parser(name)
        b.add_argument("--port", type=int, required=True)
        b.add_argument("--ca", required=True)
        b.add_argument("--cert", required=True)
        b.add_argument("--key", required=True)
        if name == "bench":
            b.add_argument("--connects", type=int, default=300)
        else:
            b.add_argument("--count", type=int, default=1000)
            b.add_argument("--pid", type=int, required=True)
    args = p.parse_args()
    run = {"soak": soak, "bench": bench, "idle": idle}[args.cmd]
    sys.exit(asyncio.run(run(args)))


if __name__ == "__main__":
    main()
