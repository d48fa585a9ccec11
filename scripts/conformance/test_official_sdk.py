"""Referee tests: the official AWS IoT Device SDK for Python (awsiotsdk, on awscrt) against
iot-core-local.

Every case builds its client with the SDK's own builders (awsiot.mqtt5_client_builder, and
awsiot.mqtt_connection_builder for MQTT 3.1.1), exactly as an application talking to AWS IoT Core
would, except for the host name (localhost), the port (the server's ephemeral ports) and the CA to
trust (the account's server-ca.pem). Two places where the builders cannot express a non-443
"443 port" are worked around, and said so where they are:

* MQTT 5 mTLS on the 443-equivalent listener: the builder offers ALPN x-amzn-mqtt-ca only when
  the port is literally 443 and has no ALPN argument, so that case builds awscrt.mqtt5.Client
  itself with the same TlsContextOptions the builder would make plus alpn_list=["x-amzn-mqtt-ca"].
* MQTT 3.1.1 direct custom auth: mqtt_connection_builder.direct_with_custom_authorizer forces
  port 443 (with ALPN "mqtt"); awscrt.mqtt.Connection reads .port only in connect(), so the test
  sets connection.port to the listener's port after the builder made the connection.

The cases after CONNACK (publish, subscribe, deliver) keep a client connected while they publish
and subscribe. They use init's policies (test/<clientId>/*) and one more policy document the
server fixture attaches to every principal (CONFORMANCE_POLICY_DOCUMENT, below).

Nothing here contacts AWS: the endpoint is localhost and credentials are static.
"""

from __future__ import annotations

import base64
import concurrent.futures
import datetime
import json
import os
import queue
import signal
import subprocess
import threading
import time
import tomllib
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from awscrt import auth, exceptions, io, mqtt, mqtt5
from awsiot import mqtt5_client_builder, mqtt_connection_builder
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.x509.oid import NameOID

REPO = Path(__file__).resolve().parents[2]
BINARY = Path(os.environ.get("IOT_CORE_LOCAL_BIN", REPO / "target" / "debug" / "iot-core-local"))
HOST = "localhost"
REGION = "us-east-1"
# Every wait in this file is bounded by one of these.
CONNECT_TIMEOUT = 10.0
# The SDK's own CONNACK timeout, inside CONNECT_TIMEOUT so that its error is what a test reports.
CONNACK_TIMEOUT_MS = 8_000
STOP_TIMEOUT = 10.0
READY_TIMEOUT = 30.0
LOG_TIMEOUT = 5.0

# CONFORMANCE_CRT_LOG=/path/file: the CRT's own debug log (TLS, WebSocket, MQTT), for digging.
if os.environ.get("CONFORMANCE_CRT_LOG"):
    io.init_logging(io.LogLevel.Debug, os.environ["CONFORMANCE_CRT_LOG"])


# --------------------------------------------------------------------------------------------
# The server


class Server:
    """A running `iot-core-local serve`, with its stderr (the decision log) collected."""

    def __init__(self, proc: subprocess.Popen, account: Path):
        self.proc = proc
        self.account = account
        self.port_443: int | None = None
        self.port_8883: int | None = None
        self.config: dict = tomllib.loads((account / "iot-core-local.toml").read_text())
        self._lines: list[str] = []
        self._stdout: list[str] = []
        self._lock = threading.Lock()
        self._ready: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump_stderr, daemon=True).start()
        threading.Thread(target=self._pump_stdout, daemon=True).start()

    def _pump_stderr(self) -> None:
        for line in self.proc.stderr:
            with self._lock:
                self._lines.append(line.rstrip("\n"))

    def _pump_stdout(self) -> None:
        for line in self.proc.stdout:
            line = line.rstrip("\n")
            with self._lock:
                self._stdout.append(line)
            if line.startswith("ready "):
                self._ready.put(line)
        self._ready.put("")  # EOF: the server exited

    def wait_ready(self) -> None:
        try:
            line = self._ready.get(timeout=READY_TIMEOUT)
        except queue.Empty:
            line = None
        if not line:
            raise RuntimeError(
                f"iot-core-local did not print its ready line within {READY_TIMEOUT}s "
                f"(exit code {self.proc.poll()}).\nstdout:\n{self.stdout()}\nstderr:\n{self.log()}"
            )
        fields = dict(f.split("=", 1) for f in line.split()[1:])
        self.port_443 = int(fields["port_443"])
        self.port_8883 = int(fields["port_8883"])

    def mark(self) -> int:
        with self._lock:
            return len(self._lines)

    def lines_since(self, mark: int) -> list[str]:
        with self._lock:
            return self._lines[mark:]

    def log(self, since: int = 0) -> str:
        return "\n".join(self.lines_since(since))

    def stdout(self) -> str:
        with self._lock:
            return "\n".join(self._stdout)

    def wait_for_line(self, since: int, *needles: str, timeout: float = LOG_TIMEOUT) -> str:
        """The first log line after `since` that contains every needle (case-insensitive)."""
        deadline = time.monotonic() + timeout
        wanted = [n.lower() for n in needles]
        while True:
            for line in self.lines_since(since):
                low = line.lower()
                if all(n in low for n in wanted):
                    return line
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"no server log line with {needles!r} within {timeout}s; the log since the "
                    f"test started:\n{self.log(since) or '(empty)'}"
                )
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=STOP_TIMEOUT)


# The account is init's, plus one policy document attached to every principal (the certificate,
# both access keys, both authorizers' principals) for what init's policies do not cover. Init's
# own policies allow iot:Connect on client/test-* and publish, subscribe and receive on the
# client's own test/<clientId>/*, which is what most pub/sub cases use.
ARN = "arn:aws:iot:us-east-1:123456789012"
CONFORMANCE_POLICY = "conformance-pubsub"
CONFORMANCE_POLICY_DOCUMENT = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {
                # Subscribe and publish are allowed there by init's policy; this cuts receive.
                "Sid": "ReceiveDenied",
                "Effect": "Deny",
                "Action": "iot:Receive",
                "Resource": f"{ARN}:topic/test/${{iot:ClientId}}/receive-denied/*",
            },
            {
                # One topic space every client shares, for round trips between two clients.
                "Sid": "Shared",
                "Effect": "Allow",
                "Action": ["iot:Publish", "iot:Receive"],
                "Resource": f"{ARN}:topic/conformance/shared/*",
            },
            {
                # $SYS/* is allowed here so that the reserved-topic rule, not the policy,
                # decides what a $SYS/# subscription gets.
                "Sid": "Filters",
                "Effect": "Allow",
                "Action": "iot:Subscribe",
                "Resource": [
                    f"{ARN}:topicfilter/conformance/shared/*",
                    f"{ARN}:topicfilter/$aws/things/${{iot:ClientId}}/shadow/*",
                    f"{ARN}:topicfilter/$aws/events/presence/*",
                    f"{ARN}:topicfilter/$SYS/*",
                ],
            },
            {
                "Sid": "ReservedReceive",
                "Effect": "Allow",
                "Action": "iot:Receive",
                "Resource": [
                    f"{ARN}:topic/$aws/things/${{iot:ClientId}}/shadow/*",
                    f"{ARN}:topic/$aws/events/presence/*",
                ],
            },
        ],
    },
    separators=(",", ":"),
)


def attach_conformance_policy(config: Path) -> None:
    """Add CONFORMANCE_POLICY to the account file init wrote and attach it next to each of
    init's policies (one certificate, two access keys, two authorizer rules)."""
    text = config.read_text()
    for policy, count in [("device-connect", 1), ("sigv4-connect", 2), ("custom-auth-connect", 2)]:
        old = f'policies = ["{policy}"]'
        assert text.count(old) == count, f"init's account file changed: {old!r} in\n{text}"
        text = text.replace(old, f'policies = ["{policy}", "{CONFORMANCE_POLICY}"]')
    # [policies] is the file's last table: one more key in it.
    assert text.rstrip().splitlines()[-1].startswith("sigv4-connect = "), text
    assert "'" not in CONFORMANCE_POLICY_DOCUMENT
    text = text.rstrip("\n") + f"\n{CONFORMANCE_POLICY} = '{CONFORMANCE_POLICY_DOCUMENT}'\n"
    config.write_text(text)


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    if not BINARY.is_file():
        pytest.fail(
            f"{BINARY} does not exist: run `cargo build -p iot-core-local` "
            "(scripts/conformance/run.sh does) or set IOT_CORE_LOCAL_BIN"
        )
    account = tmp_path_factory.mktemp("account")
    init = subprocess.run(
        [str(BINARY), "init", str(account), "--force"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert init.returncode == 0, f"init failed ({init.returncode}):\n{init.stdout}\n{init.stderr}"
    attach_conformance_policy(account / "iot-core-local.toml")

    env = dict(os.environ)
    # Decisions are logged at info; make sure an inherited RUST_LOG cannot hide them.
    env["RUST_LOG"] = "info,rumqttd=off,tracing=off"
    env["RUST_LOG_STYLE"] = "never"
    proc = subprocess.Popen(
        [str(BINARY), "serve", "--dir", str(account), "--port-443", "0", "--port-8883", "0"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    srv = Server(proc, account)
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()
        log_file = account / "server-stderr.log"
        log_file.write_text(srv.log() + "\n")
        print(f"\niot-core-local decision log: {log_file}")


@pytest.fixture(autouse=True)
def decision_log(request, server):
    """Prints the server's log lines of this test in its teardown: pytest shows them for a
    failing test only ("Captured stdout teardown")."""
    mark = server.mark()
    yield mark
    # Give the last decision a moment to arrive through the pipe.
    time.sleep(0.05)
    print(f"--- iot-core-local log during {request.node.name} ---")
    print(server.log(mark) or "(nothing)")


# --------------------------------------------------------------------------------------------
# Account material


@dataclass
class Account:
    dir: Path
    server_ca: str
    device_cert: str
    device_key: str
    long_term: dict
    temporary: dict
    password: str
    signing_key: object


@pytest.fixture(scope="session")
def account(server) -> Account:
    creds = server.config["credentials"]
    long_term = next(c for c in creds if not c.get("session_token"))
    temporary = next(c for c in creds if c.get("session_token"))
    d = server.account
    return Account(
        dir=d,
        server_ca=str(d / "server-ca.pem"),
        device_cert=str(d / "device.pem"),
        device_key=str(d / "device.key"),
        long_term=long_term,
        temporary=temporary,
        password=(d / "custom-auth-password").read_text().strip(),
        signing_key=serialization.load_pem_private_key(
            (d / "authorizer-private.pem").read_bytes(), password=None
        ),
    )


def sign_token(account: Account, token: str) -> str:
    """base64(RSA PKCS#1 v1.5 SHA-256 over the token), as `openssl dgst -sha256 -sign` makes it."""
    sig = account.signing_key.sign(token.encode(), padding.PKCS1v15(), hashes.SHA256())
    return base64.b64encode(sig).decode()


@pytest.fixture(scope="session")
def unregistered_device(tmp_path_factory) -> tuple[str, str]:
    """A throwaway self-signed device certificate the account has never seen."""
    d = tmp_path_factory.mktemp("unregistered")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "unregistered-device")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = d / "unregistered.pem", d / "unregistered.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(cert_path), str(key_path)


def client_id(case: str) -> str:
    """Unique per test, and allowed by the account's policies (client/test-*)."""
    return f"test-{case}-{uuid.uuid4().hex[:8]}"


def static_credentials(key: dict, secret: str | None = None) -> auth.AwsCredentialsProvider:
    return auth.AwsCredentialsProvider.new_static(
        key["access_key_id"],
        secret if secret is not None else key["secret_access_key"],
        key.get("session_token"),
    )


# --------------------------------------------------------------------------------------------
# MQTT 5: run a client to its first connection outcome, then stop it


class Lifecycle:
    """The MQTT 5 client's lifecycle callbacks as futures."""

    def __init__(self):
        self.outcome: concurrent.futures.Future = concurrent.futures.Future()
        self.stopped: concurrent.futures.Future = concurrent.futures.Future()
        self.successes = 0
        self.failures: list[mqtt5.LifecycleConnectFailureData] = []

    def _settle(self, value) -> None:
        try:
            self.outcome.set_result(value)
        except concurrent.futures.InvalidStateError:
            pass  # a later attempt; the first outcome counts

    def on_success(self, data: mqtt5.LifecycleConnectSuccessData) -> None:
        self.successes += 1
        self._settle(("success", data))

    def on_failure(self, data: mqtt5.LifecycleConnectFailureData) -> None:
        self.failures.append(data)
        self._settle(("failure", data))

    def on_stopped(self, data: mqtt5.LifecycleStoppedData) -> None:
        try:
            self.stopped.set_result(True)
        except concurrent.futures.InvalidStateError:
            pass

    def kwargs(self) -> dict:
        """The builder keyword arguments that wire the callbacks (and slow the retry loop so a
        refused client does not hammer the server before the test stops it)."""
        return dict(
            on_lifecycle_connection_success=self.on_success,
            on_lifecycle_connection_failure=self.on_failure,
            on_lifecycle_stopped=self.on_stopped,
            min_reconnect_delay_ms=5_000,
            max_reconnect_delay_ms=10_000,
            connack_timeout_ms=CONNACK_TIMEOUT_MS,
        )


def describe_failure(data: mqtt5.LifecycleConnectFailureData) -> str:
    connack = data.connack_packet
    if connack is not None:
        return (
            f"{data.exception!r}; CONNACK {connack.reason_code!r} "
            f"reason string {connack.reason_string!r}"
        )
    return repr(data.exception)


def run_mqtt5(client: mqtt5.Client, life: Lifecycle) -> tuple[str, object]:
    """Start the client, wait for its first connection outcome, stop it. Never hangs."""
    client.start()
    try:
        return life.outcome.result(timeout=CONNECT_TIMEOUT)
    except concurrent.futures.TimeoutError:
        return ("timeout", None)
    finally:
        client.stop(mqtt5.DisconnectPacket())
        try:
            life.stopped.result(timeout=STOP_TIMEOUT)
        except concurrent.futures.TimeoutError:
            pytest.fail(f"the MQTT 5 client did not stop within {STOP_TIMEOUT}s")


def expect_accepted(server: Server, mark: int, client: mqtt5.Client, life: Lifecycle, cid: str):
    kind, data = run_mqtt5(client, life)
    if kind != "success":
        detail = describe_failure(data) if kind == "failure" else f"nothing within {CONNECT_TIMEOUT}s"
        pytest.fail(
            f"client {cid} was not accepted: {kind}: {detail}\n"
            f"server log:\n{server.log(mark) or '(empty)'}"
        )
    assert data.connack_packet.reason_code == mqtt5.ConnectReasonCode.SUCCESS
    return server.wait_for_line(mark, f"client '{cid}'", "allowed")


def expect_refused(
    server: Server, mark: int, client: mqtt5.Client, life: Lifecycle, *reason: str
) -> tuple[mqtt5.LifecycleConnectFailureData, str]:
    kind, data = run_mqtt5(client, life)
    assert kind == "failure", (
        f"expected a connection failure, got {kind}"
        + (f" (CONNACK {data.connack_packet.reason_code!r})" if kind == "success" else "")
        + f"\nserver log:\n{server.log(mark) or '(empty)'}"
    )
    assert life.successes == 0, "the client connected after all"
    line = server.wait_for_line(mark, "denied", *reason)
    # Shown with `pytest -rP` (or -s): what the SDK reported and what the server decided.
    print(f"SDK: {describe_failure(data)}\nserver: {line}")
    return data, line


def refused_with_connack(data: mqtt5.LifecycleConnectFailureData, *codes):
    assert data.connack_packet is not None, f"no CONNACK: {describe_failure(data)}"
    assert data.connack_packet.reason_code in codes, describe_failure(data)
    if data.connack_packet.reason_code == mqtt5.ConnectReasonCode.NOT_AUTHORIZED:
        # What IoT Core says with 0x87 (reference, section 4).
        assert (data.connack_packet.reason_string or "").startswith(
            "Client is not authenticated/authorized to send the message:"
        ), describe_failure(data)


# --------------------------------------------------------------------------------------------
# Accepted: mTLS


def test_mtls_8883_mqtt5(server, account, decision_log):
    life, cid = Lifecycle(), client_id("mtls-8883")
    client = mqtt5_client_builder.mtls_from_path(
        endpoint=HOST,
        port=server.port_8883,
        cert_filepath=account.device_cert,
        pri_key_filepath=account.device_key,
        ca_filepath=account.server_ca,
        client_id=cid,
        **life.kwargs(),
    )
    line = expect_accepted(server, decision_log, client, life, cid)
    assert "[8883 mtls]" in line


def test_mtls_443_alpn_mqtt5(server, account, decision_log):
    """mTLS on the 443 listener needs ALPN x-amzn-mqtt-ca. mqtt5_client_builder offers it only
    when port == 443 and takes no ALPN argument, so this builds awscrt.mqtt5.Client itself: the
    TLS options mtls_from_path makes, plus the ALPN list the builder sets on port 443."""
    life, cid = Lifecycle(), client_id("mtls-443")
    tls = io.TlsContextOptions.create_client_with_mtls_from_path(
        account.device_cert, account.device_key
    )
    tls.override_default_trust_store_from_path(None, account.server_ca)
    tls.alpn_list = ["x-amzn-mqtt-ca"]
    kw = life.kwargs()
    options = mqtt5.ClientOptions(
        host_name=HOST,
        port=server.port_443,
        tls_ctx=io.ClientTlsContext(tls),
        connect_options=mqtt5.ConnectPacket(client_id=cid, keep_alive_interval_sec=1200),
        extended_validation_and_flow_control_options=(
            mqtt5.ExtendedValidationAndFlowControlOptions.AWS_IOT_CORE_DEFAULTS
        ),
        min_reconnect_delay_ms=kw["min_reconnect_delay_ms"],
        max_reconnect_delay_ms=kw["max_reconnect_delay_ms"],
        connack_timeout_ms=kw["connack_timeout_ms"],
        on_lifecycle_event_connection_success_fn=life.on_success,
        on_lifecycle_event_connection_failure_fn=life.on_failure,
        on_lifecycle_event_stopped_fn=life.on_stopped,
    )
    client = mqtt5.Client(options)
    line = expect_accepted(server, decision_log, client, life, cid)
    assert "[443 mtls]" in line


# --------------------------------------------------------------------------------------------
# Accepted: SigV4 WebSockets


@pytest.mark.parametrize("which", ["long-term", "temporary"])
def test_websocket_sigv4_mqtt5(server, account, decision_log, which):
    key = account.long_term if which == "long-term" else account.temporary
    life, cid = Lifecycle(), client_id(f"sigv4-{which}")
    client = mqtt5_client_builder.websockets_with_default_aws_signing(
        region=REGION,
        credentials_provider=static_credentials(key),
        endpoint=HOST,
        port=server.port_443,
        ca_filepath=account.server_ca,
        client_id=cid,
        **life.kwargs(),
    )
    line = expect_accepted(server, decision_log, client, life, cid)
    assert "[443 websocket]" in line and key["access_key_id"] in line


# --------------------------------------------------------------------------------------------
# Accepted: custom authorizers


def test_direct_custom_auth_signed_mqtt5(server, account, decision_log):
    life, cid = Lifecycle(), client_id("direct-signed")
    client = mqtt5_client_builder.direct_with_custom_authorizer(
        auth_authorizer_name="signed-authorizer",
        auth_token_key_name="token",
        auth_token_value="allow",
        auth_authorizer_signature=sign_token(account, "allow"),
        endpoint=HOST,
        port=server.port_443,
        ca_filepath=account.server_ca,
        client_id=cid,
        **life.kwargs(),
    )
    line = expect_accepted(server, decision_log, client, life, cid)
    assert "[443 custom-auth]" in line and "signed-authorizer" in line


@pytest.mark.parametrize("authorizer", ["unsigned-authorizer", None], ids=["named", "default"])
def test_direct_custom_auth_unsigned_mqtt5(server, account, decision_log, authorizer):
    life, cid = Lifecycle(), client_id(f"direct-unsigned-{authorizer or 'default'}")
    client = mqtt5_client_builder.direct_with_custom_authorizer(
        auth_username="demo-user",
        auth_password=account.password,
        auth_authorizer_name=authorizer,
        endpoint=HOST,
        port=server.port_443,
        ca_filepath=account.server_ca,
        client_id=cid,
        **life.kwargs(),
    )
    line = expect_accepted(server, decision_log, client, life, cid)
    assert "[443 custom-auth]" in line and "unsigned-authorizer" in line


def test_websocket_custom_auth_signed_mqtt5(server, account, decision_log):
    life, cid = Lifecycle(), client_id("ws-signed")
    client = mqtt5_client_builder.websockets_with_custom_authorizer(
        auth_authorizer_name="signed-authorizer",
        auth_token_key_name="token",
        auth_token_value="allow",
        auth_authorizer_signature=sign_token(account, "allow"),
        endpoint=HOST,
        port=server.port_443,
        ca_filepath=account.server_ca,
        client_id=cid,
        **life.kwargs(),
    )
    line = expect_accepted(server, decision_log, client, life, cid)
    assert "[443 websocket]" in line and "signed-authorizer" in line


def test_websocket_custom_auth_unsigned_mqtt5(server, account, decision_log):
    life, cid = Lifecycle(), client_id("ws-unsigned")
    client = mqtt5_client_builder.websockets_with_custom_authorizer(
        auth_username="demo-user",
        auth_password=account.password,
        auth_authorizer_name="unsigned-authorizer",
        endpoint=HOST,
        port=server.port_443,
        ca_filepath=account.server_ca,
        client_id=cid,
        **life.kwargs(),
    )
    line = expect_accepted(server, decision_log, client, life, cid)
    assert "[443 websocket]" in line and "unsigned-authorizer" in line


# --------------------------------------------------------------------------------------------
# Refused (MQTT 5)


def test_refused_wrong_signature_mqtt5(server, account, decision_log):
    """The token is "allow" but the signature is of another token."""
    life = Lifecycle()
    client = mqtt5_client_builder.direct_with_custom_authorizer(
        auth_authorizer_name="signed-authorizer",
        auth_token_key_name="token",
        auth_token_value="allow",
        auth_authorizer_signature=sign_token(account, "some-other-token"),
        endpoint=HOST,
        port=server.port_443,
        ca_filepath=account.server_ca,
        client_id=client_id("bad-signature"),
        **life.kwargs(),
    )
    data, _ = expect_refused(server, decision_log, client, life, "signature")
    refused_with_connack(data, mqtt5.ConnectReasonCode.NOT_AUTHORIZED)


def test_refused_wrong_password_mqtt5(server, account, decision_log):
    life = Lifecycle()
    client = mqtt5_client_builder.direct_with_custom_authorizer(
        auth_username="demo-user",
        auth_password=account.password + "-wrong",
        auth_authorizer_name="unsigned-authorizer",
        endpoint=HOST,
        port=server.port_443,
        ca_filepath=account.server_ca,
        client_id=client_id("bad-password"),
        **life.kwargs(),
    )
    data, _ = expect_refused(server, decision_log, client, life, "isAuthenticated: false")
    refused_with_connack(
        data,
        mqtt5.ConnectReasonCode.BAD_USERNAME_OR_PASSWORD,
        mqtt5.ConnectReasonCode.NOT_AUTHORIZED,
    )


def test_refused_wrong_secret_key_mqtt5(server, account, decision_log):
    secret = account.long_term["secret_access_key"]
    wrong = secret[:-4] + ("AAAA" if not secret.endswith("AAAA") else "BBBB")
    life = Lifecycle()
    client = mqtt5_client_builder.websockets_with_default_aws_signing(
        region=REGION,
        credentials_provider=static_credentials(account.long_term, secret=wrong),
        endpoint=HOST,
        port=server.port_443,
        ca_filepath=account.server_ca,
        client_id=client_id("bad-secret"),
        **life.kwargs(),
    )
    data, _ = expect_refused(server, decision_log, client, life, "SigV4", "signature")
    # Refused at the WebSocket upgrade (HTTP 403): no MQTT CONNACK at all.
    assert data.connack_packet is None, describe_failure(data)


def test_refused_unregistered_certificate_mqtt5(server, account, decision_log, unregistered_device):
    cert, key = unregistered_device
    life = Lifecycle()
    client = mqtt5_client_builder.mtls_from_path(
        endpoint=HOST,
        port=server.port_8883,
        cert_filepath=cert,
        pri_key_filepath=key,
        ca_filepath=account.server_ca,
        client_id=client_id("unregistered"),
        **life.kwargs(),
    )
    data, _ = expect_refused(server, decision_log, client, life, "not registered")
    refused_with_connack(data, mqtt5.ConnectReasonCode.NOT_AUTHORIZED)


def test_refused_mtls_443_without_alpn_mqtt5(server, account, decision_log):
    """What the stock builder does on a 443 listener that is not on port 443: it offers no ALPN,
    so the connection is a WebSocket one (as on IoT Core's port 443) and raw MQTT is refused.
    This is why test_mtls_443_alpn_mqtt5 sets the ALPN itself."""
    life = Lifecycle()
    client = mqtt5_client_builder.mtls_from_path(
        endpoint=HOST,
        port=server.port_443,
        cert_filepath=account.device_cert,
        pri_key_filepath=account.device_key,
        ca_filepath=account.server_ca,
        client_id=client_id("mtls-443-no-alpn"),
        **life.kwargs(),
    )
    data, line = expect_refused(server, decision_log, client, life, "not HTTP")
    assert "[443 websocket]" in line
    assert data.connack_packet is None, describe_failure(data)


def test_refused_custom_auth_on_8883_mqtt5(server, account, decision_log):
    """Custom authentication is served on 443 only (reference, section 1): on 8883 the SDK's
    custom-auth client, which has no client certificate, is refused."""
    life = Lifecycle()
    client = mqtt5_client_builder.direct_with_custom_authorizer(
        auth_username="demo-user",
        auth_password=account.password,
        auth_authorizer_name="unsigned-authorizer",
        endpoint=HOST,
        port=server.port_8883,
        ca_filepath=account.server_ca,
        client_id=client_id("custom-auth-8883"),
        **life.kwargs(),
    )
    data, line = expect_refused(server, decision_log, client, life)
    assert "[8883" in line
    assert data.connack_packet is None, describe_failure(data)


# --------------------------------------------------------------------------------------------
# Same client id twice (MQTT 5)


def test_second_connection_takes_over_mqtt5(server, account, decision_log):
    cid = client_id("takeover")
    first_gone: concurrent.futures.Future = concurrent.futures.Future()

    def on_disconnection(data: mqtt5.LifecycleDisconnectData) -> None:
        if not first_gone.done():
            first_gone.set_result(data)

    def build(life: Lifecycle, **extra) -> mqtt5.Client:
        return mqtt5_client_builder.mtls_from_path(
            endpoint=HOST,
            port=server.port_8883,
            cert_filepath=account.device_cert,
            pri_key_filepath=account.device_key,
            ca_filepath=account.server_ca,
            client_id=cid,
            **life.kwargs(),
            **extra,
        )

    first_life, second_life = Lifecycle(), Lifecycle()
    first = build(first_life, on_lifecycle_disconnection=on_disconnection)
    first.start()
    try:
        kind, _ = first_life.outcome.result(timeout=CONNECT_TIMEOUT)
        assert kind == "success", f"the first client was not accepted:\n{server.log(decision_log)}"
        expect_accepted(server, decision_log, build(second_life), second_life, cid)
        data = first_gone.result(timeout=CONNECT_TIMEOUT)
    finally:
        first.stop()
        first_life.stopped.result(timeout=STOP_TIMEOUT)
    packet = data.disconnect_packet
    print(f"first client: {data.exception!r}, DISCONNECT {packet!r}")
    assert packet is not None, f"no DISCONNECT packet, the SDK reported {data.exception!r}"
    assert packet.reason_code == mqtt5.DisconnectReasonCode.SESSION_TAKEN_OVER, repr(packet)


# --------------------------------------------------------------------------------------------
# MQTT 3.1.1 (awsiot.mqtt_connection_builder)


def connect_v311(conn: mqtt.Connection) -> dict:
    """connect() and wait; raises what the SDK raises. Never hangs."""
    return conn.connect().result(timeout=CONNECT_TIMEOUT)


def expect_accepted_v311(server: Server, mark: int, conn: mqtt.Connection) -> None:
    """connect() resolves (CONNACK return code 0, a new clean session), then disconnect()."""
    try:
        result = connect_v311(conn)
    except Exception as e:
        pytest.fail(f"not accepted: {e!r}\nserver log:\n{server.log(mark) or '(empty)'}")
    # The future resolves only for return code 0 (ACCEPTED); anything else raises above.
    assert result == {"session_present": False}
    conn.disconnect().result(timeout=STOP_TIMEOUT)


def direct_custom_auth_v311(server: Server, account: Account, **kwargs) -> mqtt.Connection:
    conn = mqtt_connection_builder.direct_with_custom_authorizer(
        endpoint=HOST, ca_filepath=account.server_ca, **kwargs
    )
    # The MQTT 3.1.1 builder forces port 443 for direct custom auth (and sets ALPN "mqtt");
    # the Connection reads .port only in connect(), so point it at the 443-equivalent listener.
    assert conn.port == 443
    conn.port = server.port_443
    return conn


def test_mtls_8883_mqtt311(server, account, decision_log):
    cid = client_id("v311-mtls")
    conn = mqtt_connection_builder.mtls_from_path(
        endpoint=HOST,
        port=server.port_8883,
        cert_filepath=account.device_cert,
        pri_key_filepath=account.device_key,
        ca_filepath=account.server_ca,
        client_id=cid,
        clean_session=True,
    )
    expect_accepted_v311(server, decision_log, conn)
    assert "[8883 mtls]" in server.wait_for_line(decision_log, f"client '{cid}'", "allowed")


def test_direct_custom_auth_signed_mqtt311(server, account, decision_log):
    cid = client_id("v311-signed")
    conn = direct_custom_auth_v311(
        server,
        account,
        auth_authorizer_name="signed-authorizer",
        auth_token_key_name="token",
        auth_token_value="allow",
        auth_authorizer_signature=sign_token(account, "allow"),
        client_id=cid,
        clean_session=True,
    )
    expect_accepted_v311(server, decision_log, conn)
    line = server.wait_for_line(decision_log, f"client '{cid}'", "allowed")
    assert "[443 custom-auth]" in line and "signed-authorizer" in line


def test_direct_custom_auth_unsigned_mqtt311(server, account, decision_log):
    cid = client_id("v311-unsigned")
    conn = direct_custom_auth_v311(
        server,
        account,
        auth_username="demo-user",
        auth_password=account.password,
        auth_authorizer_name="unsigned-authorizer",
        client_id=cid,
        clean_session=True,
    )
    expect_accepted_v311(server, decision_log, conn)
    line = server.wait_for_line(decision_log, f"client '{cid}'", "allowed")
    assert "[443 custom-auth]" in line and "unsigned-authorizer" in line


def test_websocket_sigv4_temporary_mqtt311(server, account, decision_log):
    cid = client_id("v311-sigv4")
    conn = mqtt_connection_builder.websockets_with_default_aws_signing(
        region=REGION,
        credentials_provider=static_credentials(account.temporary),
        endpoint=HOST,
        port=server.port_443,
        ca_filepath=account.server_ca,
        client_id=cid,
        clean_session=True,
    )
    expect_accepted_v311(server, decision_log, conn)
    line = server.wait_for_line(decision_log, f"client '{cid}'", "allowed")
    assert "[443 websocket]" in line and account.temporary["access_key_id"] in line


def test_refused_wrong_password_mqtt311(server, account, decision_log):
    """IoT Core closes the connection of a refused MQTT 3.1.1 client without a CONNACK; the
    SDK's connect() future raises."""
    conn = direct_custom_auth_v311(
        server,
        account,
        auth_username="demo-user",
        auth_password=account.password + "-wrong",
        auth_authorizer_name="unsigned-authorizer",
        client_id=client_id("v311-bad-password"),
        clean_session=True,
    )
    with pytest.raises(Exception) as raised:
        connect_v311(conn)
    assert not isinstance(raised.value, concurrent.futures.TimeoutError), (
        f"connect() neither succeeded nor failed within {CONNECT_TIMEOUT}s"
    )
    line = server.wait_for_line(decision_log, "denied", "isAuthenticated: false")
    print(f"SDK: {raised.value!r}\nserver: {line}")
    # No CONNACK, the socket closed: the CRT calls that an unexpected hang-up.
    assert isinstance(raised.value, exceptions.AwsCrtError), repr(raised.value)
    assert raised.value.name == "AWS_ERROR_MQTT_UNEXPECTED_HANGUP", repr(raised.value)


# --------------------------------------------------------------------------------------------
# Publish and subscribe: helpers
#
# A session is a client connected with the SDK's builders, held open while a case publishes,
# subscribes and watches what arrives. Every wait is bounded (MESSAGE_TIMEOUT, CONNECT_TIMEOUT).
# Where a case shows that something did not arrive, it does so by ordering, never by a timeout:
# iot-core-local queues each subscriber's messages in the order they were published (IoT Core
# does not promise that; the cases rely on it only here), so once a later message has arrived,
# an earlier one that was going to arrive has arrived too.

MESSAGE_TIMEOUT = 10.0
# IoT Core's payload limit, 128 KiB.
MAX_PAYLOAD = 128 * 1024

# The kinds of authentication and transport the connection cases above use, for MQTT 5 and
# (MODES_311) for the 3.1.1 builders they use.
MODES = [
    "mtls",
    "mtls-443",
    "sigv4",
    "sigv4-temporary",
    "custom-auth-signed",
    "custom-auth-unsigned",
    "ws-custom-auth-signed",
    "ws-custom-auth-unsigned",
]
MODES_311 = ["mtls", "sigv4-temporary", "custom-auth-signed", "custom-auth-unsigned"]

# What the builders call a callback, as awscrt.mqtt5.ClientOptions calls it (for mtls-443).
CLIENT_OPTION_NAMES = {
    "on_publish_received": "on_publish_callback_fn",
    "on_lifecycle_stopped": "on_lifecycle_event_stopped_fn",
    "on_lifecycle_connection_success": "on_lifecycle_event_connection_success_fn",
    "on_lifecycle_connection_failure": "on_lifecycle_event_connection_failure_fn",
    "on_lifecycle_disconnection": "on_lifecycle_event_disconnection_fn",
}


def build_mqtt5(server: Server, account: Account, mode: str, cid: str, **kwargs) -> mqtt5.Client:
    """An MQTT 5 client for `mode`, built with the SDK's builder for it (mtls-443: as
    test_mtls_443_alpn_mqtt5 builds it)."""
    common = dict(endpoint=HOST, ca_filepath=account.server_ca, client_id=cid, **kwargs)
    if mode == "mtls":
        return mqtt5_client_builder.mtls_from_path(
            port=server.port_8883,
            cert_filepath=account.device_cert,
            pri_key_filepath=account.device_key,
            **common,
        )
    if mode == "mtls-443":
        # As test_mtls_443_alpn_mqtt5: the builder's TLS options plus ALPN x-amzn-mqtt-ca.
        tls = io.TlsContextOptions.create_client_with_mtls_from_path(
            account.device_cert, account.device_key
        )
        tls.override_default_trust_store_from_path(None, account.server_ca)
        tls.alpn_list = ["x-amzn-mqtt-ca"]
        options = {CLIENT_OPTION_NAMES.get(k, k): v for k, v in kwargs.items()}
        options.setdefault(
            "extended_validation_and_flow_control_options",
            mqtt5.ExtendedValidationAndFlowControlOptions.AWS_IOT_CORE_DEFAULTS,
        )
        return mqtt5.Client(
            mqtt5.ClientOptions(
                host_name=HOST,
                port=server.port_443,
                tls_ctx=io.ClientTlsContext(tls),
                connect_options=mqtt5.ConnectPacket(client_id=cid, keep_alive_interval_sec=1200),
                **options,
            )
        )
    if mode in ("sigv4", "sigv4-temporary"):
        return mqtt5_client_builder.websockets_with_default_aws_signing(
            region=REGION,
            credentials_provider=static_credentials(
                account.long_term if mode == "sigv4" else account.temporary
            ),
            port=server.port_443,
            **common,
        )
    direct, _, kind = mode.rpartition("custom-auth-")
    build = {
        "": mqtt5_client_builder.direct_with_custom_authorizer,
        "ws-": mqtt5_client_builder.websockets_with_custom_authorizer,
    }.get(direct)
    if build is not None and kind == "signed":
        return build(
            auth_authorizer_name="signed-authorizer",
            auth_token_key_name="token",
            auth_token_value="allow",
            auth_authorizer_signature=sign_token(account, "allow"),
            port=server.port_443,
            **common,
        )
    if build is not None and kind == "unsigned":
        return build(
            auth_username="demo-user",
            auth_password=account.password,
            auth_authorizer_name="unsigned-authorizer",
            port=server.port_443,
            **common,
        )
    raise ValueError(mode)


class Session5:
    """A connected MQTT 5 client: what it receives, and how its connection ended."""

    def __init__(
        self, server: Server, account: Account, mode: str, case: str, cid: str = "", **kwargs
    ):
        self.server = server
        self.cid = cid or client_id(case)
        self.life = Lifecycle()
        self.received: queue.Queue[mqtt5.PublishPacket] = queue.Queue()
        self.disconnected: concurrent.futures.Future = concurrent.futures.Future()
        self.client = build_mqtt5(
            server,
            account,
            mode,
            self.cid,
            on_publish_received=lambda data: self.received.put(data.publish_packet),
            on_lifecycle_disconnection=self._on_disconnection,
            **self.life.kwargs(),
            **kwargs,
        )

    def _on_disconnection(self, data: mqtt5.LifecycleDisconnectData) -> None:
        if not self.disconnected.done():
            self.disconnected.set_result(data)

    def __enter__(self) -> "Session5":
        mark = self.server.mark()
        self.client.start()
        try:
            kind, data = self.life.outcome.result(timeout=CONNECT_TIMEOUT)
        except concurrent.futures.TimeoutError:
            kind, data = "timeout", None
        if kind != "success":
            self.__exit__(None, None, None)
            detail = describe_failure(data) if kind == "failure" else "no outcome"
            pytest.fail(f"{self.cid} did not connect: {detail}\n{self.server.log(mark)}")
        return self

    def __exit__(self, *exc) -> None:
        self.client.stop(mqtt5.DisconnectPacket())
        try:
            self.life.stopped.result(timeout=STOP_TIMEOUT)
        except concurrent.futures.TimeoutError:
            pytest.fail(f"the MQTT 5 client {self.cid} did not stop within {STOP_TIMEOUT}s")

    def subscribe(self, *filters: tuple[str, mqtt5.QoS]) -> mqtt5.SubackPacket:
        packet = mqtt5.SubscribePacket(
            subscriptions=[mqtt5.Subscription(topic_filter=f, qos=q) for f, q in filters]
        )
        return self.client.subscribe(packet).result(timeout=MESSAGE_TIMEOUT)

    def publish_future(
        self, topic: str, payload: bytes, qos: mqtt5.QoS = mqtt5.QoS.AT_LEAST_ONCE
    ) -> concurrent.futures.Future:
        return self.client.publish(mqtt5.PublishPacket(topic=topic, payload=payload, qos=qos))

    def publish(
        self, topic: str, payload: bytes, qos: mqtt5.QoS = mqtt5.QoS.AT_LEAST_ONCE
    ) -> mqtt5.PublishCompletionData:
        return self.publish_future(topic, payload, qos).result(timeout=MESSAGE_TIMEOUT)

    def next_message(self) -> mqtt5.PublishPacket:
        try:
            return self.received.get(timeout=MESSAGE_TIMEOUT)
        except queue.Empty:
            pytest.fail(f"{self.cid} received nothing within {MESSAGE_TIMEOUT}s")

    def nothing_more(self) -> None:
        leftover = []
        while not self.received.empty():
            leftover.append(self.received.get_nowait())
        assert not leftover, [(p.topic, p.payload) for p in leftover]

    def server_disconnect(self) -> mqtt5.DisconnectPacket:
        """The DISCONNECT the server sent (fails if the connection ended without one)."""
        try:
            data = self.disconnected.result(timeout=MESSAGE_TIMEOUT)
        except concurrent.futures.TimeoutError:
            pytest.fail(f"{self.cid} was not disconnected within {MESSAGE_TIMEOUT}s")
        assert data.disconnect_packet is not None, (
            f"the connection ended without a DISCONNECT: {data.exception!r}"
        )
        return data.disconnect_packet


def assert_puback(done: mqtt5.PublishCompletionData, code: mqtt5.PubackReasonCode) -> None:
    assert done.puback is not None and done.puback.reason_code == code, (
        f"PUBACK {done.puback!r}, expected {code!r}"
    )


def topic_of(cid: str, rest: str) -> str:
    """A topic init's policies allow this client: test/<clientId>/<rest>."""
    return f"test/{cid}/{rest}"


# --------------------------------------------------------------------------------------------
# Publish and subscribe, MQTT 5


@pytest.mark.parametrize("mode", MODES)
def test_round_trip_mqtt5(server, account, decision_log, mode):
    """Subscribe to the client's own topics, publish QoS 1 and QoS 0, receive both (init's
    policies: test/<clientId>/*)."""
    with Session5(server, account, mode, f"rt5-{mode}") as s:
        suback = s.subscribe((topic_of(s.cid, "#"), mqtt5.QoS.AT_LEAST_ONCE))
        assert suback.reason_codes == [mqtt5.SubackReasonCode.GRANTED_QOS_1]
        done = s.publish(topic_of(s.cid, "qos1"), b"one")
        assert_puback(done, mqtt5.PubackReasonCode.SUCCESS)
        s.publish(topic_of(s.cid, "qos0"), b"zero", mqtt5.QoS.AT_MOST_ONCE)
        first, second = s.next_message(), s.next_message()
        assert (first.topic, first.payload, first.qos) == (
            topic_of(s.cid, "qos1"),
            b"one",
            mqtt5.QoS.AT_LEAST_ONCE,
        )
        assert (second.topic, second.payload, second.qos) == (
            topic_of(s.cid, "qos0"),
            b"zero",
            mqtt5.QoS.AT_MOST_ONCE,
        )
    assert "denied" not in server.log(decision_log)


@pytest.mark.parametrize(
    "publisher,subscriber", [("mtls", "sigv4"), ("custom-auth-signed", "custom-auth-unsigned")]
)
def test_round_trip_between_clients_mqtt5(server, account, decision_log, publisher, subscriber):
    """Two clients, two kinds of authentication, one topic both may use (conformance/shared/*)."""
    topic = f"conformance/shared/{uuid.uuid4().hex[:8]}"
    with Session5(server, account, subscriber, "sub") as sub:
        assert sub.subscribe((topic, mqtt5.QoS.AT_LEAST_ONCE)).reason_codes == [
            mqtt5.SubackReasonCode.GRANTED_QOS_1
        ]
        with Session5(server, account, publisher, "pub") as pub:
            assert_puback(pub.publish(topic, b"across"), mqtt5.PubackReasonCode.SUCCESS)
            got = sub.next_message()
            assert (got.topic, got.payload) == (topic, b"across")


def test_denied_publish_mqtt5(server, account, decision_log):
    """No iot:Publish on forbidden/topic: QoS 1 gets PUBACK 0x87, QoS 0 is dropped, and the
    connection stays up (an allowed publish afterwards is acknowledged)."""
    with Session5(server, account, "mtls", "deny-pub5") as s:
        done = s.publish("forbidden/topic", b"no")
        print(f"SDK: PUBACK {done.puback!r}")
        assert_puback(done, mqtt5.PubackReasonCode.NOT_AUTHORIZED)
        line = server.wait_for_line(
            decision_log, f"client '{s.cid}'", "iot:Publish on topic/forbidden/topic denied"
        )
        assert "no policy statement allows iot:Publish" in line, line
        mark = server.mark()
        s.publish("forbidden/topic", b"no", mqtt5.QoS.AT_MOST_ONCE)
        server.wait_for_line(
            mark, f"client '{s.cid}'", "iot:Publish on topic/forbidden/topic denied"
        )
        assert_puback(s.publish(topic_of(s.cid, "after"), b"ok"), mqtt5.PubackReasonCode.SUCCESS)
        assert not s.disconnected.done()


def test_denied_subscribe_mqtt5(server, account, decision_log):
    """No iot:Subscribe on topicfilter/forbidden/#: SUBACK 0x87 for that filter, and the other
    filter of the same SUBSCRIBE is granted."""
    with Session5(server, account, "custom-auth-unsigned", "deny-sub5") as s:
        suback = s.subscribe(
            ("forbidden/#", mqtt5.QoS.AT_LEAST_ONCE),
            (topic_of(s.cid, "#"), mqtt5.QoS.AT_LEAST_ONCE),
        )
        print(f"SDK: SUBACK {suback.reason_codes!r}")
        assert suback.reason_codes == [
            mqtt5.SubackReasonCode.NOT_AUTHORIZED,
            mqtt5.SubackReasonCode.GRANTED_QOS_1,
        ]
        line = server.wait_for_line(
            decision_log, f"client '{s.cid}'", "iot:Subscribe on topicfilter/forbidden/# denied"
        )
        assert "no policy statement allows iot:Subscribe" in line, line
        assert not s.disconnected.done()


def test_denied_receive_mqtt5(server, account, decision_log):
    """Subscribed to test/<clientId>/#, which includes receive-denied/ where the policy denies
    iot:Receive: that message is skipped, the next one is delivered, the connection stays."""
    with Session5(server, account, "sigv4", "deny-recv5") as s:
        s.subscribe((topic_of(s.cid, "#"), mqtt5.QoS.AT_LEAST_ONCE))
        hidden = topic_of(s.cid, "receive-denied/x")
        visible = topic_of(s.cid, "visible")
        assert_puback(s.publish(hidden, b"hidden"), mqtt5.PubackReasonCode.SUCCESS)
        assert_puback(s.publish(visible, b"seen"), mqtt5.PubackReasonCode.SUCCESS)
        got = s.next_message()
        assert (got.topic, got.payload) == (topic_of(s.cid, "visible"), b"seen")
        s.nothing_more()
        line = server.wait_for_line(
            decision_log, f"client '{s.cid}'", f"iot:Receive on topic/{hidden} denied"
        )
        assert "delivery skipped" in line and 'Sid "ReceiveDenied"' in line, line
        assert not s.disconnected.done()


def test_qos2_refused_by_the_sdk_mqtt5(server, account, decision_log):
    """The SDK's MQTT 5 client sends no QoS 2 at all (awscrt documents QoS 2 as unsupported):
    it refuses a QoS 2 SUBSCRIBE and a QoS 2 PUBLISH itself, even with its IoT Core checks off,
    and the connection stays up. The server's answer to a QoS 2 SUBSCRIBE is checked in
    test_qos2_mqtt311, whose client does send one."""
    with Session5(
        server,
        account,
        "mtls",
        "qos2-5",
        extended_validation_and_flow_control_options=(
            mqtt5.ExtendedValidationAndFlowControlOptions.NONE
        ),
    ) as s:
        with pytest.raises(RuntimeError) as raised:
            s.subscribe((topic_of(s.cid, "#"), mqtt5.QoS.EXACTLY_ONCE))
        print(f"SDK, SUBSCRIBE QoS 2: {raised.value!r}")
        assert "AWS_ERROR_MQTT5_SUBSCRIBE_OPTIONS_VALIDATION" in str(raised.value)
        with pytest.raises(exceptions.AwsCrtError) as raised:
            s.publish(topic_of(s.cid, "x"), b"q", mqtt5.QoS.EXACTLY_ONCE)
        print(f"SDK, PUBLISH QoS 2: {raised.value!r}")
        assert raised.value.name == "AWS_ERROR_MQTT5_PUBLISH_OPTIONS_VALIDATION", repr(raised.value)
        assert_puback(s.publish(topic_of(s.cid, "after"), b"ok"), mqtt5.PubackReasonCode.SUCCESS)
        assert not s.disconnected.done()
    assert "QoS 2" not in server.log(decision_log)


def test_oversized_payload_mqtt5(server, account, decision_log):
    """128 KiB is accepted and delivered; one byte more gets DISCONNECT 0x97 (quota exceeded)."""
    with Session5(server, account, "mtls", "big5") as s:
        s.subscribe((topic_of(s.cid, "big"), mqtt5.QoS.AT_LEAST_ONCE))
        done = s.publish(topic_of(s.cid, "big"), b"x" * MAX_PAYLOAD)
        assert_puback(done, mqtt5.PubackReasonCode.SUCCESS)
        assert len(s.next_message().payload) == MAX_PAYLOAD
        s.publish_future(topic_of(s.cid, "big"), b"x" * (MAX_PAYLOAD + 1))
        packet = s.server_disconnect()
        print(f"SDK: DISCONNECT {packet!r}")
        assert packet.reason_code == mqtt5.DisconnectReasonCode.QUOTA_EXCEEDED, repr(packet)
        line = server.wait_for_line(decision_log, f"client '{s.cid}'", "disconnected")
        assert f"{MAX_PAYLOAD + 1} bytes" in line, line


def deep(cid: str, slashes: int) -> str:
    """A topic under test/<clientId>/ with this many '/' in all."""
    return topic_of(cid, "/".join("l" * (slashes - 1)))  # test/<cid>/ holds 2


def test_deep_topic_mqtt5(server, account, decision_log):
    """IoT Core allows 7 '/' in a topic name: a PUBLISH with 8 gets DISCONNECT 0x90 (topic name
    invalid). The SDK's own IoT Core checks, on by default in the builders, let it through."""
    with Session5(server, account, "mtls", "deep5") as s:
        assert deep(s.cid, 7).count("/") == 7 and deep(s.cid, 8).count("/") == 8
        assert_puback(s.publish(deep(s.cid, 7), b"ok"), mqtt5.PubackReasonCode.SUCCESS)
        s.publish_future(deep(s.cid, 8), b"deep")
        packet = s.server_disconnect()
        print(f"SDK: DISCONNECT {packet!r}")
        assert packet.reason_code == mqtt5.DisconnectReasonCode.TOPIC_NAME_INVALID, repr(packet)
        server.wait_for_line(decision_log, f"client '{s.cid}'", deep(s.cid, 8))


def test_reserved_shadow_subscription_mqtt5(server, account, decision_log):
    """A documented reserved topic is a topic like any other: the policy allows
    $aws/things/<clientId>/shadow/*, the SUBSCRIBE is granted."""
    with Session5(server, account, "mtls", "shadow5") as s:
        suback = s.subscribe(
            (f"$aws/things/{s.cid}/shadow/update/accepted", mqtt5.QoS.AT_LEAST_ONCE)
        )
        assert suback.reason_codes == [mqtt5.SubackReasonCode.GRANTED_QOS_1]
        assert not s.disconnected.done()
    assert "denied" not in server.log(decision_log)


def test_sys_subscription_disconnects_mqtt5(server, account, decision_log):
    """$SYS/# is not an IoT Core topic: the subscription gets DISCONNECT 0x8F (topic filter
    invalid), although the policy allows it."""
    with Session5(server, account, "mtls", "sys5") as s:
        sys_filter = mqtt5.Subscription(topic_filter="$SYS/#", qos=mqtt5.QoS.AT_LEAST_ONCE)
        future = s.client.subscribe(mqtt5.SubscribePacket(subscriptions=[sys_filter]))
        packet = s.server_disconnect()
        print(f"SDK: DISCONNECT {packet!r}; subscribe future done: {future.done()}")
        assert packet.reason_code == mqtt5.DisconnectReasonCode.TOPIC_FILTER_INVALID, repr(packet)
        server.wait_for_line(decision_log, f"client '{s.cid}'", "$SYS/#")


def certificate_id(path: str) -> str:
    """What IoT Core calls a certificate's id: the SHA-256 of its DER, in hex."""
    cert = x509.load_pem_x509_certificate(Path(path).read_bytes())
    return cert.fingerprint(hashes.SHA256()).hex()


@pytest.mark.parametrize("mode", ["mtls", "sigv4", "custom-auth-signed", "custom-auth-unsigned"])
def test_lifecycle_presence_events_mqtt5(server, account, decision_log, mode):
    """An observer subscribed to $aws/events/presence/+/<clientId> sees that client's
    connected event, then its disconnected event, with the fields IoT Core sends."""
    principal = {
        "mtls": certificate_id(account.device_cert),
        "sigv4": account.long_term["access_key_id"],
        "custom-auth-signed": "signedDevice",
        "custom-auth-unsigned": "demoUser",
    }[mode]
    watched_id = client_id(f"watched-{mode}")
    with Session5(server, account, "mtls", "observer") as observer:
        presence = f"$aws/events/presence/+/{watched_id}"
        suback = observer.subscribe((presence, mqtt5.QoS.AT_LEAST_ONCE))
        assert suback.reason_codes == [mqtt5.SubackReasonCode.GRANTED_QOS_1]
        before = int(time.time() * 1000)
        with Session5(server, account, mode, "watched", cid=watched_id):
            got = observer.next_message()
            assert got.topic == f"$aws/events/presence/connected/{watched_id}"
            connected = json.loads(got.payload)
            print(f"connected event: {connected}")
        got = observer.next_message()
        assert got.topic == f"$aws/events/presence/disconnected/{watched_id}"
        disconnected = json.loads(got.payload)
        print(f"disconnected event: {disconnected}")
        after = int(time.time() * 1000)

    assert set(connected) == {
        "clientId",
        "timestamp",
        "eventType",
        "sessionIdentifier",
        "principalIdentifier",
        "ipAddress",
        "versionNumber",
    }, connected
    assert connected["clientId"] == watched_id
    assert connected["eventType"] == "connected"
    assert connected["principalIdentifier"] == principal
    assert connected["ipAddress"] == "127.0.0.1"
    assert connected["versionNumber"] == 0  # a client id never seen before
    assert str(uuid.UUID(connected["sessionIdentifier"])) == connected["sessionIdentifier"]
    assert before <= connected["timestamp"] <= disconnected["timestamp"] <= after

    assert set(disconnected) == {
        "clientId",
        "timestamp",
        "eventType",
        "sessionIdentifier",
        "principalIdentifier",
        "versionNumber",
        "clientInitiatedDisconnect",
        "disconnectReason",
    }, disconnected
    assert disconnected["eventType"] == "disconnected"
    for same in ["clientId", "sessionIdentifier", "principalIdentifier", "versionNumber"]:
        assert disconnected[same] == connected[same], same
    assert disconnected["clientInitiatedDisconnect"] is True
    assert disconnected["disconnectReason"] == "CLIENT_INITIATED_DISCONNECT"


# --------------------------------------------------------------------------------------------
# Publish and subscribe, MQTT 3.1.1 (awsiot.mqtt_connection_builder)


def build_mqtt311(
    server: Server, account: Account, mode: str, cid: str, **kwargs
) -> mqtt.Connection:
    """An MQTT 3.1.1 connection for `mode`, as the existing 3.1.1 cases build them."""
    common = dict(client_id=cid, clean_session=True, **kwargs)
    if mode == "mtls":
        return mqtt_connection_builder.mtls_from_path(
            endpoint=HOST,
            port=server.port_8883,
            cert_filepath=account.device_cert,
            pri_key_filepath=account.device_key,
            ca_filepath=account.server_ca,
            **common,
        )
    if mode == "sigv4-temporary":
        return mqtt_connection_builder.websockets_with_default_aws_signing(
            region=REGION,
            credentials_provider=static_credentials(account.temporary),
            endpoint=HOST,
            port=server.port_443,
            ca_filepath=account.server_ca,
            **common,
        )
    if mode == "custom-auth-signed":
        return direct_custom_auth_v311(
            server,
            account,
            auth_authorizer_name="signed-authorizer",
            auth_token_key_name="token",
            auth_token_value="allow",
            auth_authorizer_signature=sign_token(account, "allow"),
            **common,
        )
    if mode == "custom-auth-unsigned":
        return direct_custom_auth_v311(
            server,
            account,
            auth_username="demo-user",
            auth_password=account.password,
            auth_authorizer_name="unsigned-authorizer",
            **common,
        )
    raise ValueError(mode)


class Session311:
    """A connected MQTT 3.1.1 connection: what it receives, and whether it was interrupted."""

    def __init__(self, server: Server, account: Account, mode: str, case: str):
        self.server = server
        self.cid = client_id(case)
        self.received: queue.Queue[tuple[str, bytes, mqtt.QoS]] = queue.Queue()
        self.interrupted: concurrent.futures.Future = concurrent.futures.Future()
        self.conn = build_mqtt311(
            server,
            account,
            mode,
            self.cid,
            on_connection_interrupted=self._on_interrupted,
            # A refused client must not loop on reconnects while the case looks at it.
            reconnect_min_timeout_secs=5,
            reconnect_max_timeout_secs=10,
        )

    def _on_interrupted(self, connection, error, **kwargs) -> None:
        if not self.interrupted.done():
            self.interrupted.set_result(error)

    def __enter__(self) -> "Session311":
        mark = self.server.mark()
        try:
            connect_v311(self.conn)
        except Exception as e:
            pytest.fail(f"{self.cid} did not connect: {e!r}\n{self.server.log(mark)}")
        return self

    def __exit__(self, *exc) -> None:
        self.conn.disconnect().result(timeout=STOP_TIMEOUT)

    def wait_interrupted(self) -> Exception:
        """What the SDK reported when the server closed the connection."""
        try:
            return self.interrupted.result(timeout=MESSAGE_TIMEOUT)
        except concurrent.futures.TimeoutError:
            pytest.fail(f"{self.cid}'s connection was not interrupted within {MESSAGE_TIMEOUT}s")

    def on_message(self, topic, payload, qos, **kwargs) -> None:
        self.received.put((topic, payload, qos))

    def subscribe(self, topic_filter: str, qos: mqtt.QoS = mqtt.QoS.AT_LEAST_ONCE) -> dict:
        future, _ = self.conn.subscribe(topic_filter, qos, callback=self.on_message)
        return future.result(timeout=MESSAGE_TIMEOUT)

    def publish_future(
        self, topic: str, payload: bytes, qos: mqtt.QoS = mqtt.QoS.AT_LEAST_ONCE
    ) -> concurrent.futures.Future:
        future, _ = self.conn.publish(topic, payload, qos)
        return future

    def publish(self, topic: str, payload: bytes, qos: mqtt.QoS = mqtt.QoS.AT_LEAST_ONCE) -> dict:
        return self.publish_future(topic, payload, qos).result(timeout=MESSAGE_TIMEOUT)

    def next_message(self) -> tuple[str, bytes, mqtt.QoS]:
        try:
            return self.received.get(timeout=MESSAGE_TIMEOUT)
        except queue.Empty:
            pytest.fail(f"{self.cid} received nothing within {MESSAGE_TIMEOUT}s")


@pytest.mark.parametrize("mode", MODES_311)
def test_round_trip_mqtt311(server, account, decision_log, mode):
    with Session311(server, account, mode, f"rt311-{mode}") as s:
        assert s.subscribe(topic_of(s.cid, "#"))["qos"] == mqtt.QoS.AT_LEAST_ONCE
        s.publish(topic_of(s.cid, "qos1"), b"one")
        s.publish(topic_of(s.cid, "qos0"), b"zero", mqtt.QoS.AT_MOST_ONCE)
        assert s.next_message() == (topic_of(s.cid, "qos1"), b"one", mqtt.QoS.AT_LEAST_ONCE)
        assert s.next_message() == (topic_of(s.cid, "qos0"), b"zero", mqtt.QoS.AT_MOST_ONCE)
        assert not s.interrupted.done()
    assert "denied" not in server.log(decision_log)


def test_denied_publish_mqtt311(server, account, decision_log):
    """MQTT 3.1.1 has no PUBACK code: IoT Core closes the connection, and the SDK reports the
    connection interrupted."""
    with Session311(server, account, "mtls", "deny-pub311") as s:
        s.publish_future("forbidden/topic", b"no")
        error = s.wait_interrupted()
        print(f"SDK: interrupted: {error!r}")
        # Closed with nothing sent: the CRT calls that an unexpected hang-up.
        assert isinstance(error, exceptions.AwsCrtError), repr(error)
        assert error.name == "AWS_ERROR_MQTT_UNEXPECTED_HANGUP", repr(error)
        line = server.wait_for_line(
            decision_log, f"client '{s.cid}'", "iot:Publish on topic/forbidden/topic denied"
        )
        assert "disconnected" in line, line


def test_denied_subscribe_mqtt311(server, account, decision_log):
    """SUBACK 0x80 for a filter the policy does not allow; the connection stays up."""
    with Session311(server, account, "custom-auth-signed", "deny-sub311") as s:
        with pytest.raises(mqtt.SubscribeError) as raised:
            s.subscribe("forbidden/#")
        print(f"SDK: {raised.value!r}")
        server.wait_for_line(
            decision_log, f"client '{s.cid}'", "iot:Subscribe on topicfilter/forbidden/# denied"
        )
        assert s.subscribe(topic_of(s.cid, "#"))["qos"] == mqtt.QoS.AT_LEAST_ONCE
        assert not s.interrupted.done()


def test_denied_receive_mqtt311(server, account, decision_log):
    with Session311(server, account, "custom-auth-unsigned", "deny-recv311") as s:
        s.subscribe(topic_of(s.cid, "#"))
        hidden = topic_of(s.cid, "receive-denied/x")
        s.publish(hidden, b"hidden")
        s.publish(topic_of(s.cid, "visible"), b"seen")
        assert s.next_message() == (topic_of(s.cid, "visible"), b"seen", mqtt.QoS.AT_LEAST_ONCE)
        assert s.received.empty()
        server.wait_for_line(
            decision_log, f"client '{s.cid}'", f"iot:Receive on topic/{hidden} denied", "skipped"
        )
        assert not s.interrupted.done()


def test_qos2_mqtt311(server, account, decision_log):
    """The SDK's 3.1.1 client sends a QoS 2 SUBSCRIBE: it is granted QoS 1, and a QoS 1
    message then arrives at QoS 1. It refuses to send a QoS 2 PUBLISH itself (ValueError from
    the CRT), so the server's handling of one (ignored, logged) is left to the Rust tests."""
    with Session311(server, account, "mtls", "qos2-311") as s:
        granted = s.subscribe(topic_of(s.cid, "#"), mqtt.QoS.EXACTLY_ONCE)["qos"]
        assert granted == mqtt.QoS.AT_LEAST_ONCE
        server.wait_for_line(decision_log, f"client '{s.cid}'", "asked QoS 2; granted QoS 1")
        with pytest.raises(ValueError) as raised:
            s.publish(topic_of(s.cid, "qos2"), b"two", mqtt.QoS.EXACTLY_ONCE)
        print(f"SDK, PUBLISH QoS 2: {raised.value!r}")
        s.publish(topic_of(s.cid, "qos1"), b"one")
        assert s.next_message() == (topic_of(s.cid, "qos1"), b"one", mqtt.QoS.AT_LEAST_ONCE)
        assert s.received.empty()
        assert not s.interrupted.done()
    assert "QoS 2 PUBLISH" not in server.log(decision_log)


def test_reserved_shadow_subscription_mqtt311(server, account, decision_log):
    with Session311(server, account, "custom-auth-signed", "shadow311") as s:
        granted = s.subscribe(f"$aws/things/{s.cid}/shadow/update/accepted")["qos"]
        assert granted == mqtt.QoS.AT_LEAST_ONCE
        assert not s.interrupted.done()
    assert "denied" not in server.log(decision_log)


def test_sys_subscription_closes_mqtt311(server, account, decision_log):
    """$SYS/#: the connection is closed (no SUBACK)."""
    with Session311(server, account, "mtls", "sys311") as s:
        s.conn.subscribe("$SYS/#", mqtt.QoS.AT_LEAST_ONCE)
        error = s.wait_interrupted()
        print(f"SDK: interrupted: {error!r}")
        # Closed with nothing sent: the CRT calls that an unexpected hang-up.
        assert isinstance(error, exceptions.AwsCrtError), repr(error)
        assert error.name == "AWS_ERROR_MQTT_UNEXPECTED_HANGUP", repr(error)
        server.wait_for_line(decision_log, f"client '{s.cid}'", "$SYS/#")
