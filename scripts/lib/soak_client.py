#!/usr/bin/env python3
"""Hostile and ordinary MQTT clients for scripts/soak.sh and scripts/bench-connect.sh.

Python standard library only (asyncio + ssl), loopback only, every loop bounded in count and
time. MQTT 3.1.1 / 5 and WebSocket frames are encoded by hand from the specifications.

  soak  --bin B --account DIR --work DIR [--only TEXT]
        runs the storms of issue 8 (findings 1-11) and the data-plane storms of issue 9 (12-15)
        against `B serve`, each followed by a health check, prints a table and the size of the
        endpoint's logs, exits 1 if a check fails.
  bench --port P --ca F --cert F --key F --connects N
        N sequential mTLS connects (CONNECT, CONNACK, DISCONNECT); prints the seconds taken.
  idle  --port P --ca F --cert F --key F --count N --pid PID
        holds N connected clients; prints the RSS of PID (kB) before and with them open.
"""

import argparse
import asyncio
import json
import os
import re
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


def publish_packet(topic, payload, qos=0, pkid=0, v5=True, retain=False):
    body = mqtt_string(topic)
    if qos:
        body += pkid.to_bytes(2, "big")
    if v5:
        body += b"\x00"  # no properties
    body += payload
    first = 0x30 | (qos << 1) | (1 if retain else 0)
    return bytes([first]) + varint(len(body)) + body


def subscribe_packet(pkid, filters, v5=True):
    """SUBSCRIBE of (filter, qos) pairs."""
    body = pkid.to_bytes(2, "big") + (b"\x00" if v5 else b"")
    for f, qos in filters:
        body += mqtt_string(f) + bytes([qos])
    return b"\x82" + varint(len(body)) + body


def unsubscribe_packet(pkid, filters, v5=True):
    body = pkid.to_bytes(2, "big") + (b"\x00" if v5 else b"")
    for f in filters:
        body += mqtt_string(f)
    return b"\xa2" + varint(len(body)) + body


def puback_packet(pkid):
    return b"\x40\x02" + pkid.to_bytes(2, "big")


def suback_codes(body, v5=True):
    """The return/reason codes of a SUBACK body."""
    rest = body[2:]
    if v5:
        n, i = 0, 0
        shift = 0
        while True:  # the properties' length
            b = rest[i]
            n |= (b & 0x7F) << shift
            shift += 7
            i += 1
            if not b & 0x80:
                break
        rest = rest[i + n:]
    return list(rest)


def parse_publish(first, body, v5=True):
    """(topic, qos, pkid, payload) of a PUBLISH packet."""
    qos = (first >> 1) & 3
    n = int.from_bytes(body[:2], "big")
    topic = body[2:2 + n].decode(errors="replace")
    i = 2 + n
    pkid = 0
    if qos:
        pkid = int.from_bytes(body[i:i + 2], "big")
        i += 2
    if v5:
        length, shift = 0, 0
        while True:
            b = body[i]
            length |= (b & 0x7F) << shift
            shift += 7
            i += 1
            if not b & 0x80:
                break
        i += length
    return topic, qos, pkid, body[i:]


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


async def skip_to(reader, kind, timeout=STEP):
    """The next packet of type `kind` (first byte & 0xF0), skipping others; None if the
    connection ends first. Raises asyncio.TimeoutError if nothing arrives in `timeout`."""
    while True:
        p = await read_packet(reader, timeout)
        if p is None or p[0] & 0xF0 == kind:
            return p


async def subscribe(reader, writer, filters, v5=True, pkid=1):
    """SUBSCRIBE and the SUBACK's codes (None if the connection ended first)."""
    writer.write(subscribe_packet(pkid, filters, v5))
    await writer.drain()
    p = await skip_to(reader, 0x90)
    return None if p is None else suback_codes(p[1], v5)


async def ends_as(reader, v5, code, timeout=5):
    """None if the server ends the connection as IoT Core would for `code`: MQTT 3.1.1 closed
    with nothing sent, MQTT 5 DISCONNECT `code` and then closed; otherwise what it did."""
    try:
        p = await read_packet(reader, timeout)
        if v5:
            if p is None:
                return "closed without DISCONNECT"
            if p[0] != 0xE0 or not p[1] or p[1][0] != code:
                return f"packet 0x{p[0]:02X} {p[1][:1].hex()} instead of DISCONNECT 0x{code:02X}"
            p = await read_packet(reader, timeout)
        if p is not None:
            return f"packet 0x{p[0]:02X} before the close"
    except asyncio.TimeoutError:
        return "left open"
    return None


QUOTA_LINE = re.compile(r"client '([^']*)': (.*): over the publish quota")


def quota_counts(lines):
    """From the log's publish-quota lines: (inbound PUBLISH discarded, QoS 0 deliveries
    dropped), each a dict client id -> count."""
    inbound, outbound = {}, {}
    for line in lines:
        m = QUOTA_LINE.search(line)
        if not m:
            continue
        cid, what = m.group(1), m.group(2)
        i = re.search(r"(\d+) inbound PUBLISH discarded", what)
        o = re.search(r"(\d+) QoS 0 deliveries dropped", what)
        if i:
            inbound[cid] = inbound.get(cid, 0) + int(i.group(1))
        if o:
            outbound[cid] = outbound.get(cid, 0) + int(o.group(1))
    return inbound, outbound


class StormError(Exception):
    """A storm could not set itself up (e.g. a watcher was refused)."""


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

    def log_size(self):
        return os.path.getsize(self.log_path)

    def log_lines_from(self, offset):
        """The log's lines from byte `offset` on (a storm's own lines)."""
        with open(self.log_path, "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace").splitlines()


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

    # -----------------------------------------------------------------------------------------
    # Data-plane storms (issue 9): lifecycle events, the publish quota, the versionNumber cap,
    # topic limits, reserved topics and Basic Ingest. The account gives the device certificate
    # the policy `soak-dataplane` (scripts/soak.sh) for the `$aws/events/...`, `soak/flood/...`
    # and `$aws/rules/soak_rule/...` topics.

    async def held(self, client_id, v5=True, keep_alive=60):
        """A connected mTLS client (reader, writer); raises StormError if refused."""
        code, _, held = await mqtt_connect(self.ep.port8883, self.ctx.mtls, client_id, v5,
                                           keep_alive=keep_alive, hold=True)
        if held is None:
            raise StormError(f"'{client_id}' not connected: CONNACK {code}")
        return held

    # Event flood with stalled watchers: two clients subscribe to every presence and
    # subscription event, then never read their sockets again (one QoS 1 over MQTT 5, one QoS 0
    # over 3.1.1, keep-alive 30 s); meanwhile 6000 connect/disconnect churns with distinct
    # 120-byte client ids (a quarter also subscribe) publish ~13,500 events. Each watcher's
    # queue is capped (1000 messages), so RSS must not grow between the two halves of the
    # churn: uncapped, the second half's ~6,700 events (~0.7 kB each with such ids) would add
    # ~4.5 MB (measured +6.1 MB with QUEUE_CAP lifted, +0.1 with it); the limit is 2 MB. Then
    # both watchers must be closed by the keep-alive (45 s after their SUBSCRIBE), and the log
    # must say the QoS 1 one's queue was capped and the QoS 0 one's deliveries were dropped over
    # the publish quota.
    async def event_flood(self):
        churns, concurrency = 6000, 16
        log_from = self.ep.log_size()
        watchers = []
        for name, qos, v5 in (("test-soak-watch-q1", 1, True), ("test-soak-watch-q0", 0, False)):
            reader, writer = await self.held(name, v5, keep_alive=30)
            codes = await subscribe(reader, writer, [("$aws/events/presence/#", qos),
                                                     ("$aws/events/subscriptions/#", qos)], v5)
            if codes != [qos, qos]:
                raise StormError(f"{name}: SUBACK {codes}, want {[qos, qos]}")
            watchers.append((name, reader, writer))
        last_packet = time.monotonic()

        async def churn(i):
            cid = f"test-ev-{i:05d}-".ljust(120, "x")
            if i % 4:
                code, _, _ = await mqtt_connect(self.ep.port8883, self.ctx.mtls, cid, v5=False)
                return code
            try:
                reader, writer = await self.held(cid, v5=False)
            except StormError:
                return None
            try:
                codes = await subscribe(reader, writer, [(f"test/{cid}/a", 1)], False)
                writer.write(disconnect_packet(False))
                await writer.drain()
            except (OSError, ConnectionError, asyncio.TimeoutError):
                codes = None
            close(writer)
            return 0 if codes == [1] else None

        half = churns // 2
        after, failed = [], 0
        for h in range(2):
            codes = await gather_bounded([churn(i) for i in range(h * half, (h + 1) * half)],
                                         concurrency)
            failed += sum(1 for c in codes if c != 0)
            await asyncio.sleep(2)
            after.append(rss_mb(self.ep.pid))
        growth = after[1] - after[0]

        # The keep-alive closes each watcher 45 s after its last packet.
        want = {name: f"client '{name}': no packet within 1.5 x the keep-alive"
                for name, _, _ in watchers}
        deadline = last_packet + 45 + 15
        while time.monotonic() < deadline:
            lines = self.ep.log_lines_from(log_from)
            if all(any(w in line for line in lines) for w in want.values()):
                break
            await asyncio.sleep(1)
        waited = time.monotonic() - last_packet
        for _, _, writer in watchers:
            close(writer)
        lines = self.ep.log_lines_from(log_from)
        closed = [n for n, w in want.items() if any(w in line for line in lines)]
        capped = [line for line in lines if "client 'test-soak-watch-q1'" in line
                  and "new messages are dropped" in line]
        dropped = quota_counts(lines)[1].get("test-soak-watch-q0", 0)
        ok = (failed == 0 and growth <= 2.0 and len(closed) == len(watchers) and capped
              and dropped > 0)
        text = (f"{churns} churns with distinct 120-byte ids ({failed} failed) under 2 stalled "
                f"watchers: RSS after each half {after[0]:.1f} / {after[1]:.1f} MB ({growth:+.1f},"
                f" limit 2); QoS 1 watcher's queue capped: {'yes' if capped else 'NO'}; QoS 0 "
                f"watcher: {dropped} deliveries dropped over the quota; closed by keep-alive: "
                f"{len(closed)} of {len(watchers)} ({waited:.0f} s after their SUBSCRIBE)")
        return ok, text, []

    # Publish flood: 50 clients (MQTT 5 and 3.1.1) each write QoS 0 and QoS 1 PUBLISHes of 1 kB
    # to soak/flood/<n> as fast as they can for 10 s, never waiting for a PUBACK; one subscriber
    # of soak/flood/# never reads, another reads and acknowledges (quickly enough that only the
    # quota slows it). Each publisher then DISCONNECTs and waits for the server to close, so that
    # every PUBLISH it sent was either accepted or counted in the log's drop lines: accepted =
    # sent - discarded must stay within 100 per 1 s window of the connection's life, as must
    # what the reading subscriber receives.
    async def publish_flood(self):
        pubs, secs, payload = 50, 10.0, bytes(1024)
        quota = 100
        log_from = self.ep.log_size()
        stalled_r, stalled_w = await self.held("test-soak-sub-stalled", v5=True)
        codes = await subscribe(stalled_r, stalled_w, [("soak/flood/#", 1)], True)
        slow_r, slow_w = await self.held("test-soak-sub-slow", v5=False)
        codes += await subscribe(slow_r, slow_w, [("soak/flood/#", 1)], False)
        if codes != [1, 1]:
            raise StormError(f"subscribers' SUBACK {codes}, want [1, 1]")
        stop = asyncio.Event()
        slow_start = time.monotonic()

        got = [0]

        async def slow_reader():
            while not stop.is_set():
                try:
                    p = await read_packet(slow_r, timeout=1)
                except asyncio.TimeoutError:
                    continue
                if p is None:
                    break
                if p[0] >> 4 == 3:
                    got[0] += 1
                    _, qos, pkid, _ = parse_publish(p[0], p[1], v5=False)
                    if qos:
                        slow_w.write(puback_packet(pkid))
                await asyncio.sleep(0.002)
            return time.monotonic() - slow_start

        slow_task = asyncio.get_running_loop().create_task(slow_reader())

        async def publisher(n):
            cid = f"test-soak-pub-{n}"
            v5 = bool(n % 2)
            reader, writer = await self.held(cid, v5)
            topic = f"soak/flood/{n}"

            async def acks():
                count = 0
                try:
                    while True:
                        p = await read_packet(reader, timeout=30)
                        if p is None:
                            return count, True
                        if p[0] >> 4 == 4:
                            count += 1
                except asyncio.TimeoutError:
                    return count, False

            ack_task = asyncio.get_running_loop().create_task(acks())
            sent, pkid = 0, 0
            start = time.monotonic()
            try:
                while time.monotonic() - start < secs:
                    batch = bytearray()
                    for k in range(32):
                        qos = k % 2
                        if qos:
                            pkid = pkid % 65535 + 1
                        batch += publish_packet(topic, payload, qos, pkid if qos else 0, v5)
                    writer.write(bytes(batch))
                    await asyncio.wait_for(writer.drain(), STEP)
                    sent += 32
                writer.write(disconnect_packet(v5))
                await asyncio.wait_for(writer.drain(), STEP)
            except (OSError, ConnectionError, asyncio.TimeoutError):
                pass
            acked, ended = await ack_task
            close(writer)
            return cid, sent, acked, ended, time.monotonic() - start

        res = await asyncio.gather(*(publisher(n) for n in range(pubs)))
        # The reading subscriber goes on for 3 s with the client process no longer busy
        # publishing: its queue (capped at 1000) still holds more than the quota lets through.
        during = got[0]
        await asyncio.sleep(3)
        stop.set()
        slow_secs = await slow_task
        got = got[0]
        close(stalled_w)
        close(slow_w)
        await asyncio.sleep(1)
        lines = self.ep.log_lines_from(log_from)
        inbound, _ = quota_counts(lines)
        over, unended, total_sent, total_dropped, total_acked = [], 0, 0, 0, 0
        for cid, sent, acked, ended, life in res:
            dropped = inbound.get(cid, 0)
            accepted = sent - dropped
            most = quota * (int(life) + 2)
            total_sent += sent
            total_dropped += dropped
            total_acked += acked
            if not ended:
                unended += 1
            if accepted > most or acked > accepted:
                over.append(f"{cid}: {sent} sent, {dropped} discarded, {acked} acked, "
                            f"{life:.1f} s")
        slow_most = quota * (int(slow_secs) + 2)
        capped = any("client 'test-soak-sub-stalled'" in line and "new messages are dropped"
                     in line for line in lines)
        ok = not over and unended == 0 and total_dropped > 0 and got <= slow_most and capped
        text = (f"{pubs} publishers x {secs:.0f} s, QoS 0+1, 1 kB: {total_sent} sent, "
                f"{total_dropped} discarded over the quota (log), {total_sent - total_dropped} "
                f"accepted, {total_acked} PUBACKs; over 100/s: {len(over)} connections"
                + (f" (first: {over[0]})" if over else "")
                + f"; not closed after DISCONNECT: {unended}; reading subscriber got {got} in "
                f"{slow_secs:.0f} s (most {slow_most}; {got - during} in the 3 s after the "
                "flood); stalled subscriber's queue capped: "
                f"{'yes' if capped else 'NO'}")
        return ok, text, []

    # Client ids past the versionNumber cap: 10,100 distinct 128-byte client ids (MQTT 3.1.1,
    # mTLS) connect and disconnect, then two rounds of 4000 more; RSS after each. Only 10,000
    # offline client ids keep their number, so the last two rounds must not grow RSS: uncapped,
    # their 8000 ids (a 144-byte Arc<str>, a hash-map slot and a B-tree entry each, ~300 bytes)
    # would add ~2.4 MB (measured +2.9 MB with the cap lifted, +0.3 with it); the limit is
    # 1 MB. A probe id connected twice before the rounds (versionNumber 0 then 1) must be back
    # at 0 after them: the cap forgot it.
    async def version_cap(self):
        fill, rounds, per_round, concurrency = 10_100, 2, 4000, 16
        probe = "test-soak-vn-probe"
        reader, writer = await self.held("test-soak-vn-watch", v5=True, keep_alive=300)
        codes = await subscribe(reader, writer,
                                [(f"$aws/events/presence/connected/{probe}", 0)], True)
        if codes != [0]:
            raise StormError(f"probe watcher's SUBACK {codes}, want [0]")

        async def probe_version():
            code, _, _ = await mqtt_connect(self.ep.port8883, self.ctx.mtls, probe, v5=False)
            if code != 0:
                return None
            while True:
                p = await read_packet(reader, timeout=5)
                if p is None:
                    return None
                if p[0] >> 4 == 3:
                    _, _, _, body = parse_publish(p[0], p[1], v5=True)
                    return json.loads(body).get("versionNumber")

        before = [await probe_version(), await probe_version()]
        after, failed = [], 0
        sizes = [fill] + [per_round] * rounds
        for r, n in enumerate(sizes):
            res = await gather_bounded(
                [mqtt_connect(self.ep.port8883, self.ctx.mtls,
                              f"test-vc-{r}-{i:05d}-".ljust(128, "x"), v5=False)
                 for i in range(n)],
                concurrency,
            )
            failed += sum(1 for c, _, _ in res if c != 0)
            await asyncio.sleep(2)
            after.append(rss_mb(self.ep.pid))
        last = await probe_version()
        close(writer)
        growth = after[-1] - after[0]
        ok = failed == 0 and growth <= 1.0 and before == [0, 1] and last == 0
        text = (f"{' + '.join(str(n) for n in sizes)} distinct 128-byte ids, {failed} failed; RSS "
                "after each round " + " / ".join(f"{a:.1f}" for a in after)
                + f" MB (last - first: {growth:+.1f} MB, limit 1); probe versionNumber "
                f"{before} before, {last} after (want [0, 1], 0)")
        return ok, text, []

    # Reserved topics and limits: 40 clients per case (MQTT 5 and 3.1.1 alternating) send what
    # the README's table says closes the connection, and must see exactly that: 3.1.1 closed
    # with nothing sent, MQTT 5 DISCONNECT with the table's reason code. Then filters refused
    # one by one (an oversized filter, the 51st subscription) must leave the connection open,
    # and a Basic Ingest flood (10 clients x 5 s, QoS 1) must be acknowledged within the quota,
    # logged once per accepted PUBLISH, and leave the connections open.
    async def reserved_abuse(self):
        per_case, concurrency = 40, 20
        log_from = self.ep.log_size()
        closing = [
            ("topic of 300 bytes", lambda c, v5: publish_packet(
                f"test/{c}/" + "x" * 300, b"x", 0, 0, v5), 0x90),
            ("topic of 9 levels", lambda c, v5: publish_packet(
                f"test/{c}/a/b/c/d/e/f/g", b"x", 1, 1, v5), 0x90),
            ("forged presence event", lambda c, v5: publish_packet(
                "$aws/events/presence/connected/test-victim", b"{}", 1, 1, v5), 0x90),
            ("RETAIN on a shadow topic", lambda c, v5: publish_packet(
                f"$aws/things/{c}/shadow/update", b"{}", 0, 0, v5, retain=True), 0x90),
            ("SUBSCRIBE of 9 filters", lambda c, v5: subscribe_packet(
                1, [(f"test/{c}/{k}", 0) for k in range(9)], v5), 0x97),
            ("SUBSCRIBE $SYS/#", lambda c, v5: subscribe_packet(1, [("$SYS/#", 0)], v5), 0x8F),
            ("SUBSCRIBE $aws/rules/#", lambda c, v5: subscribe_packet(
                1, [("$aws/rules/soak_rule/#", 0)], v5), 0x8F),
        ]

        async def closed_as_told(case, n, make, code):
            v5 = bool(n % 2)
            cid = f"test-abuse-{case}-{n}"
            reader, writer = await self.held(cid, v5)
            try:
                writer.write(make(cid, v5))
                await writer.drain()
                return await ends_as(reader, v5, code)
            finally:
                close(writer)

        results = []
        for case, (name, make, code) in enumerate(closing):
            res = await gather_bounded(
                [closed_as_told(case, n, make, code) for n in range(per_case)], concurrency)
            wrong = [r for r in res if r is not None]
            results.append((name, per_case - len(wrong), wrong[:1]))

        async def refused_but_open(n):
            v5 = bool(n % 2)
            cid = f"test-abuse-open-{n}"
            reader, writer = await self.held(cid, v5)
            bad = 0x8F if v5 else 0x80
            full = 0x97 if v5 else 0x80
            try:
                codes = await subscribe(reader, writer, [(f"test/{cid}/" + "x" * 300, 0),
                                                         (f"test/{cid}/ok", 0)], v5)
                if codes != [bad, 0]:
                    return f"oversized filter: SUBACK {codes}"
                all_codes = []
                for s in range(7):  # 56 more filters: 49 fit beside 'ok', 7 do not
                    all_codes += await subscribe(
                        reader, writer, [(f"test/{cid}/{s}/{k}", 0) for k in range(8)], v5, s + 2)
                if all_codes != [0] * 49 + [full] * 7:
                    return f"51st subscription: SUBACK {codes_summary(all_codes)}"
                writer.write(b"\xc0\x00")  # PINGREQ: still open?
                await writer.drain()
                p = await skip_to(reader, 0xD0)
                return None if p is not None else "closed after refused filters"
            finally:
                close(writer)

        res = await gather_bounded([refused_but_open(n) for n in range(20)], concurrency)
        wrong = [r for r in res if r is not None]
        results.append(("refused filters, connection open", 20 - len(wrong), wrong[:1]))

        async def ingest(n):
            v5 = bool(n % 2)
            cid = f"test-abuse-ingest-{n}"
            reader, writer = await self.held(cid, v5)
            codes, ended = {}, False

            async def acks():
                try:
                    while True:
                        p = await read_packet(reader, timeout=30)
                        if p is None:
                            return True
                        if p[0] >> 4 == 4:
                            c = p[1][2] if len(p[1]) > 2 else 0
                            codes[c] = codes.get(c, 0) + 1
                except asyncio.TimeoutError:
                    return False

            ack_task = asyncio.get_running_loop().create_task(acks())
            start, pkid, sent = time.monotonic(), 0, 0
            try:
                while time.monotonic() - start < 5:
                    batch = bytearray()
                    for _ in range(32):
                        pkid = pkid % 65535 + 1
                        batch += publish_packet(f"$aws/rules/soak_rule/t/{n}", b"{}", 1, pkid, v5)
                    writer.write(bytes(batch))
                    await asyncio.wait_for(writer.drain(), STEP)
                    sent += 32
                writer.write(disconnect_packet(v5))
                await writer.drain()
            except (OSError, ConnectionError, asyncio.TimeoutError):
                pass
            ended = await ack_task
            close(writer)
            return cid, sent, codes, ended, time.monotonic() - start

        res = await asyncio.gather(*(ingest(n) for n in range(10)))
        await asyncio.sleep(1)
        # Each accepted PUBLISH is logged; the PUBACKs of those the server read together with
        # the DISCONNECT are not sent (it stops writing once the client has disconnected).
        ingest_line = re.compile(r"client '([^']*)': PUBLISH on '[^']*': Basic Ingest to rule "
                                 r"soak_rule: acknowledged, not delivered")
        logged = {}
        for line in self.ep.log_lines_from(log_from):
            m = ingest_line.search(line)
            if m:
                logged[m.group(1)] = logged.get(m.group(1), 0) + 1
        acked = sum(sum(c.values()) for _, _, c, _, _ in res)
        not_zero = sum(n for _, _, c, _, _ in res for code, n in c.items() if code != 0)
        # Accepted (logged) within 100 per 1 s window of the connection's life, and acknowledged
        # at most once each.
        over = sum(1 for cid, _, c, _, life in res
                   if not sum(c.values()) <= logged.get(cid, 0) <= 100 * (int(life) + 2))
        unended = sum(1 for _, _, _, e, _ in res if not e)
        sent = sum(s for _, s, _, _, _ in res)
        logged = sum(logged.values())
        ingest_ok = acked > 0 and not_zero == 0 and over == 0 and unended == 0
        ok = all(n == per_case for _, n, _ in results[:-1]) and results[-1][1] == 20 and ingest_ok
        parts = [f"{name}: {n} as told" + (f" (first other: {w[0]})" if w else "")
                 for name, n, w in results]
        parts.append(f"Basic Ingest 10 x 5 s: {sent} sent, {logged} accepted (log lines), "
                     f"{acked} PUBACKs ({not_zero} not 0x00), {over} connections over 100/s or "
                     f"acked more than accepted, {unended} not closed after DISCONNECT")
        return ok, "; ".join(parts), []

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


async def pubsub_round_trip(ep, ctx):
    """Subscribe to the client's own topic, publish QoS 1 to it, receive it: (ok, seconds)."""
    start = time.monotonic()
    cid = "test-health-pubsub"
    code, _, held = await mqtt_connect(ep.port8883, ctx.mtls, cid, hold=True)
    if held is None:
        return False, time.monotonic() - start
    reader, writer = held
    topic, body = f"test/{cid}/round-trip", os.urandom(16).hex().encode()
    try:
        if await subscribe(reader, writer, [(topic, 1)]) != [1]:
            return False, time.monotonic() - start
        writer.write(publish_packet(topic, body, 1, 2))
        await writer.drain()
        while True:
            p = await skip_to(reader, 0x30)
            if p is None:
                return False, time.monotonic() - start
            got_topic, qos, pkid, payload = parse_publish(p[0], p[1])
            if qos:
                writer.write(puback_packet(pkid))
            if got_topic == topic and payload == body:
                break
        took = time.monotonic() - start
        writer.write(disconnect_packet())
        await writer.drain()
        return True, took
    except (OSError, ConnectionError, asyncio.TimeoutError):
        return False, time.monotonic() - start
    finally:
        close(writer)


async def health(ep, acct):
    """A valid mTLS and a valid custom-auth connect, and a publish/subscribe round trip (mTLS,
    MQTT 5: SUBSCRIBE, PUBLISH QoS 1, the delivery), each under 1 s."""
    ctx = Contexts(acct)
    c1, t1, _ = await mqtt_connect(ep.port8883, ctx.mtls, "test-health-mtls")
    c2, t2, _ = await mqtt_connect(ep.port443, ctx.custom, "test-health-custom", True,
                                   acct.username, acct.password)
    rt_ok, t3 = await pubsub_round_trip(ep, ctx)
    ok = c1 == 0 and c2 == 0 and rt_ok and t1 < 1.0 and t2 < 1.0 and t3 < 1.0
    return ok, f"{'ok' if ok else 'FAILED'} ({t1 * 1000:.0f}/{t2 * 1000:.0f}/{t3 * 1000:.0f} ms)"


async def soak(args):
    raise_nofile()
    account = Account(args.account)
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
    # Issue 9's storms run on an endpoint of their own, started fresh: after the burst of 2000
    # the heap keeps ~15 MB it freed, which would hide the growth their RSS bounds look for.
    # The version cap goes first, so that the event flood's churn finds the versionNumber map
    # full and its halves compare queues, not a map filling up.
    dataplane = [
        ("14 ids past the version cap", "version_cap"),
        ("12 event flood, stalled watchers", "event_flood"),
        ("13 publish flood, 50 clients", "publish_flood"),
        ("15 reserved topics, limits", "reserved_abuse"),
    ]
    if args.only:
        plan = [(n, m) for n, m in plan if args.only in n]
        dataplane = [(n, m) for n, m in dataplane if args.only in n]
    rows, failures = [], []
    peak_limits = {"3 ws fragment flood": 200.0, "5 authorizer 200 MiB": 200.0,
                   "12 event flood, stalled watchers": 200.0,
                   "13 publish flood, 50 clients": 200.0, "15 reserved topics, limits": 200.0}
    # Peak RSS above the storm's start, for the data-plane storms with capped queues: with the
    # caps the publish flood measured +4 to +7 MB; with the router's QUEUE_CAP and
    # QUEUE_BYTES_CAP lifted (a local experiment, not committed) its stalled subscriber held the
    # ~50,000 accepted 1 kB messages and it measured +36 MB.
    growth_limits = {"12 event flood, stalled watchers": 20.0,
                     "13 publish flood, 50 clients": 20.0, "15 reserved topics, limits": 20.0}

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
        limit = growth_limits.get(name)
        if limit is not None and peak - before > limit:
            ok = False
            text += f"; peak RSS {peak - before:+.0f} MB above the start, over {limit:.0f} MB"
        p = percentiles(lat)
        rows.append((name, "ok" if ok else "FAILED", text, before, peak, after, fds_before,
                     fds_after, p, htext, time.monotonic() - t0))
        if not ok:
            failures.append(name)
        if not hok:
            failures.append(name + " (health)")
        print(f"  {name}: {'ok' if ok else 'FAILED'}; health {htext}", flush=True)
        return hok

    logs = []

    async def run_plan(storm_plan, log_name):
        if not storm_plan:
            return
        log = os.path.join(args.work, log_name)
        logs.append(log)
        ep = Endpoint(args.bin, args.account, log).start()
        storms = Storms(ep, account)
        print(f"endpoint pid {ep.pid}, ports {ep.port443}/{ep.port8883}, log {log}", flush=True)
        for name, method in storm_plan:
            if not await run(name, getattr(storms, method), ep):
                # A broken endpoint would fail every storm after this one: measure those on a
                # fresh one, and say so.
                ep.stop()
                log = os.path.join(args.work, f"soak-serve-{len(logs)}.log")
                logs.append(log)
                ep = Endpoint(args.bin, args.account, log).start()
                storms = Storms(ep, account)
                print(f"  endpoint restarted after '{name}': pid {ep.pid}, log {log}", flush=True)
                rows[-1] = (rows[-1][:2] + (rows[-1][2] + "; endpoint restarted after it",)
                            + rows[-1][3:])
        ep.stop()

    await run_plan(plan, "soak-serve.log")
    await run_plan(dataplane, "soak-serve-dataplane.log")

    fd_log = os.path.join(args.work, "soak-serve-nofile.log")
    if not args.only or args.only in "7 descriptors, ulimit 1024":
        fd_ep = Endpoint(args.bin, args.account, fd_log, nofile=1024,
                         extra=["--max-pending", "4096"]).start()
        await run("7 descriptors, ulimit 1024", Storms(fd_ep, account).descriptors, fd_ep)
        fd_ep.stop()
        logs.append(fd_log)

    panics = [line for log in logs for line in open(log, errors="replace")
              if "panicked" in line]
    print_table(rows)
    print()
    for r in rows:
        print(f"{r[0]}: {r[1]}: {r[2]}")
    print("\nendpoint logs: " + ", ".join(
        f"{os.path.basename(log)} {os.path.getsize(log) / 1e6:.1f} MB" for log in logs))
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
            "connect ms p50/p95/p99", "health mtls/custom/pubsub", "secs")
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
    s.add_argument("--only", help="run only the storms whose name contains this text")
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
