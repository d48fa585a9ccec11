//! End to end: the four sample binaries, run as a user runs them (a process, its arguments,
//! stdout, stderr and exit code), against iot-core-local in process on ephemeral ports.
//!
//! The sample binaries are built once by `cargo build --workspace --all-targets` from this test
//! (same profile). That is the feature set `cargo test --workspace` itself builds with, so inside
//! `cargo test --workspace` it compiles nothing, and `scripts/demo.sh` builds the same set: no
//! switch between the demo, the tests and `cargo run` recompiles anything.

mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::OnceLock;

use common::*;
use iot_core_local::init::{files, SIGNED_AUTHORIZER, UNSIGNED_AUTHORIZER, USERNAME};
use samples_common::custom_auth::TokenSigner;

/// Build the sample binaries once and return the folder they are in.
fn bin_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        // target/<profile>/deps/<this test> -> target/<profile>
        let exe = std::env::current_exe().unwrap();
        let profile_dir = exe.parent().and_then(|d| d.parent()).unwrap().to_path_buf();
        let release = profile_dir.file_name().is_some_and(|n| n == "release");
        let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.toml");
        let mut cmd = std::process::Command::new(env!("CARGO"));
        cmd.arg("build")
            .arg("--manifest-path")
            .arg(&manifest)
            .args(["--workspace", "--all-targets"]);
        if release {
            cmd.arg("--release");
        }
        // Cargo gives this test process the variables of its own package (CARGO_MANIFEST_DIR,
        // CARGO_PKG_*, ...). Passed on, they change what some build scripts see (ring's reruns
        // when CARGO_MANIFEST_DIR changes), so the build below would recompile ring and all that
        // depends on it, and the next `cargo build` from a shell would recompile them back.
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy();
            let from_cargo_test = ["CARGO", "CARGO_MANIFEST_DIR", "CARGO_MANIFEST_PATH"]
                .contains(&key.as_ref())
                || [
                    "CARGO_PKG_",
                    "CARGO_BIN_",
                    "CARGO_CRATE_",
                    "CARGO_PRIMARY_PACKAGE",
                ]
                .iter()
                .any(|prefix| key.starts_with(prefix))
                || key == "CARGO_TARGET_TMPDIR"
                || key == "OUT_DIR";
            if from_cargo_test {
                cmd.env_remove(key.as_ref());
            }
        }
        let status = cmd.status().expect("run cargo build for the samples");
        assert!(status.success(), "building the samples failed");
        profile_dir
    })
}

/// What one sample run printed and returned.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    fn assert_success(&self, banner: &str) {
        assert_eq!(self.code, 0, "{self:#?}");
        assert_eq!(
            self.stdout,
            format!("{banner}\n\nAttempting to connect!\nConnection attempt successful!\n"),
            "{self:#?}"
        );
    }

    /// Exit 1 with exactly one cause line and one hint line, containing these words.
    fn assert_failure(&self, cause: &str, hint: &str) {
        assert_eq!(self.code, 1, "{self:#?}");
        let lines: Vec<&str> = self
            .stderr
            .lines()
            .filter(|l| !l.starts_with('['))
            .collect();
        assert_eq!(lines.len(), 2, "one cause and one hint line: {self:#?}");
        assert!(
            lines[0].starts_with("Connection attempt failed: "),
            "{self:#?}"
        );
        assert!(
            lines[0].contains(cause),
            "cause should mention '{cause}': {}",
            lines[0]
        );
        assert!(lines[1].starts_with("hint: "), "{self:#?}");
        assert!(
            lines[1].contains(hint),
            "hint should mention '{hint}': {}",
            lines[1]
        );
        assert!(
            !self.stdout.contains("Connection attempt successful!"),
            "{self:#?}"
        );
    }
}

/// A sample invocation: a clean environment (no AWS variables of the machine, no IMDS), plus
/// whatever the case sets.
struct Sample {
    cmd: tokio::process::Command,
}

impl Sample {
    fn new(name: &str) -> Sample {
        let mut cmd = tokio::process::Command::new(bin_dir().join(name));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", env!("CARGO_TARGET_TMPDIR"))
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_CONFIG_FILE", "/nonexistent/aws-config")
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                "/nonexistent/aws-credentials",
            )
            .stdin(Stdio::null())
            .kill_on_drop(true);
        Sample { cmd }
    }

    fn args<I: IntoIterator<Item = S>, S: AsRef<std::ffi::OsStr>>(mut self, args: I) -> Self {
        self.cmd.args(args);
        self
    }

    fn env(mut self, k: &str, v: impl AsRef<std::ffi::OsStr>) -> Self {
        self.cmd.env(k, v);
        self
    }

    async fn run(mut self) -> Run {
        let out = tokio::time::timeout(std::time::Duration::from_secs(60), self.cmd.output())
            .await
            .expect("the sample finishes")
            .expect("the sample starts");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

const MTLS: &str = "mtls-connect - MQTT over TLS with an X.509 client certificate";
const WS: &str = "websocket-connect - MQTT over WebSocket with SigV4 or a custom authorizer";
const UNSIGNED: &str = "custom-auth-unsigned - Custom authorizer without token signing";
const SIGNED: &str = "custom-auth-signed - Custom authorizer with a signed token";

struct Env {
    ep: Endpoint,
}

impl Env {
    async fn new(name: &str) -> Env {
        let dir = rich_account(name);
        Env {
            ep: Endpoint::start(&dir).await,
        }
    }

    fn path(&self, f: &str) -> String {
        self.ep.file(f).display().to_string()
    }

    fn p443(&self) -> String {
        self.ep.running.addr_443.port().to_string()
    }

    fn p8883(&self) -> String {
        self.ep.running.addr_8883.port().to_string()
    }

    /// `--ca-file`, `--port`, `--mqtt-version` and the endpoint.
    fn common(&self, port: &str, v: &str) -> Vec<String> {
        vec![
            "--ca-file".into(),
            self.path(files::SERVER_CA),
            "--port".into(),
            port.into(),
            "--mqtt-version".into(),
            v.into(),
            "--timeout".into(),
            "10".into(),
            "localhost".into(),
        ]
    }

    fn mtls(&self, port: &str, v: &str) -> Sample {
        Sample::new("mtls-connect")
            .args([
                "--cert",
                &self.path(files::DEVICE_CERT),
                "--key",
                &self.path(files::DEVICE_KEY),
            ])
            .args(self.common(port, v))
    }

    fn sigv4(&self, profile: &str, v: &str) -> Sample {
        Sample::new("websocket-connect")
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                self.path(files::AWS_CREDENTIALS),
            )
            .env("AWS_PROFILE", profile)
            .args(["--signing-region", "us-east-1"])
            .args(self.common(&self.p443(), v))
    }

    fn unsigned(&self, password: &str, v: &str) -> Sample {
        Sample::new("custom-auth-unsigned")
            .args([
                "--authorizer",
                UNSIGNED_AUTHORIZER,
                "--username",
                USERNAME,
                "--password",
                password,
            ])
            .args(self.common(&self.p443(), v))
    }

    fn signed(&self, v: &str) -> Sample {
        Sample::new("custom-auth-signed")
            .args([
                "--authorizer",
                SIGNED_AUTHORIZER,
                "--authorizer-token-key-name",
                "token",
            ])
            .args(["--authorizer-token-key-value", "allow"])
            .args([
                "--authorizer-private-key",
                &self.path(files::AUTHORIZER_PRIVATE),
            ])
            .args(self.common(&self.p443(), v))
    }

    async fn expect_allowed(&mut self) {
        let d = self.ep.decision().await;
        assert!(d.allowed, "{d}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sample_every_transport_both_mqtt_versions() {
    let mut env = Env::new("e2e-success").await;
    let pw = env.ep.password();
    let signature = TokenSigner::from_pem_file(&env.ep.file(files::AUTHORIZER_PRIVATE))
        .unwrap()
        .sign("allow")
        .unwrap();
    for v in ["5", "3.1.1"] {
        env.mtls(&env.p8883(), v).run().await.assert_success(MTLS);
        env.expect_allowed().await;
        env.mtls(&env.p443(), v).run().await.assert_success(MTLS);
        env.expect_allowed().await;

        env.sigv4("iot-core-local", v)
            .run()
            .await
            .assert_success(WS);
        env.expect_allowed().await;
        env.sigv4("iot-core-local-temporary", v)
            .run()
            .await
            .assert_success(WS);
        env.expect_allowed().await;

        env.unsigned(&pw, v).run().await.assert_success(UNSIGNED);
        env.expect_allowed().await;
        env.unsigned(&pw, v)
            .args(["--websockets"])
            .run()
            .await
            .assert_success(UNSIGNED);
        env.expect_allowed().await;

        env.signed(v).run().await.assert_success(SIGNED);
        env.expect_allowed().await;
        env.signed(v)
            .args(["--websockets"])
            .run()
            .await
            .assert_success(SIGNED);
        env.expect_allowed().await;
        // The seed's form: a signature given on the command line, positional endpoint.
        Sample::new("custom-auth-signed")
            .args([
                "--authorizer",
                SIGNED_AUTHORIZER,
                "--authorizer-token-key-name",
                "token",
            ])
            .args([
                "--authorizer-token-key-value",
                "allow",
                "--authorizer-signature",
                &signature,
            ])
            .args(env.common(&env.p443(), v))
            .run()
            .await
            .assert_success(SIGNED);
        env.expect_allowed().await;

        // websocket-connect with custom-auth flags: the seed's "Websocket Connect with Custom
        // Authentication", credentials in the MQTT username over the WebSocket.
        Sample::new("websocket-connect")
            .args([
                "--custom_auth_username",
                USERNAME,
                "--custom_auth_password",
                &pw,
            ])
            .args(["--custom_auth_authorizer_name", UNSIGNED_AUTHORIZER])
            .args(env.common(&env.p443(), v))
            .run()
            .await
            .assert_success(WS);
        env.expect_allowed().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_say_what_failed_and_what_to_check() {
    let mut env = Env::new("e2e-failures").await;
    let pw = env.ep.password();

    // A wrong CA: the server certificate does not chain to it.
    Sample::new("mtls-connect")
        .args([
            "--cert",
            &env.path(files::DEVICE_CERT),
            "--key",
            &env.path(files::DEVICE_KEY),
        ])
        .args([
            "--ca-file",
            &env.path(files::DEVICE_CA),
            "--port",
            &env.p8883(),
            "localhost",
        ])
        .run()
        .await
        .assert_failure("not signed by a trusted CA", "--ca-file");
    let _ = env.ep.decision().await;

    for v in ["5", "3.1.1"] {
        let refused = |v: &str, code: &str| {
            if v == "5" {
                format!("CONNACK {code}")
            } else {
                "without answering CONNECT (no CONNACK)".to_string()
            }
        };
        // An unknown authorizer.
        let r = Sample::new("custom-auth-unsigned")
            .args([
                "--authorizer",
                "no-such-authorizer",
                "--username",
                USERNAME,
                "--password",
                &pw,
            ])
            .args(env.common(&env.p443(), v))
            .run()
            .await;
        r.assert_failure(
            &refused(v, "0x87 Not authorized"),
            "authorizer name is wrong",
        );
        assert!(!env.ep.decision().await.allowed);

        // A bad signature.
        let other = TokenSigner::from_pem_file(&env.ep.file(files::AUTHORIZER_PRIVATE))
            .unwrap()
            .sign("not-the-token")
            .unwrap();
        let r = Sample::new("custom-auth-signed")
            .args([
                "--authorizer",
                SIGNED_AUTHORIZER,
                "--authorizer-token-key-name",
                "token",
            ])
            .args([
                "--authorizer-token-key-value",
                "allow",
                "--authorizer-signature",
                &other,
            ])
            .args(env.common(&env.p443(), v))
            .run()
            .await;
        r.assert_failure(&refused(v, "0x87"), "signature does not verify");
        assert!(env
            .ep
            .decision()
            .await
            .detail
            .contains("signature did not verify"));

        // A wrong password.
        let r = env.unsigned("wrong-password", v).run().await;
        if v == "5" {
            r.assert_failure(
                "CONNACK 0x86 Bad User Name or Password",
                "username and password",
            );
        } else {
            r.assert_failure("no CONNACK", "Lambda denies");
        }
        assert!(env.ep.decision().await.detail.contains("function denied"));

        // A client id the policy does not allow.
        let r = env
            .mtls(&env.p8883(), v)
            .args(["--client-id", "prod-1"])
            .run()
            .await;
        r.assert_failure(
            &refused(v, "0x87"),
            "iot:Connect on client/<your client id>",
        );
        assert!(env.ep.decision().await.detail.contains("client/prod-1"));
    }

    // A wrong region: HTTP 403 at the WebSocket upgrade.
    let r = Sample::new("websocket-connect")
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            env.path(files::AWS_CREDENTIALS),
        )
        .env("AWS_PROFILE", "iot-core-local")
        .args(["--signing-region", "eu-west-1"])
        .args(env.common(&env.p443(), "5"))
        .run()
        .await;
    r.assert_failure("HTTP 403", "--signing-region");
    assert!(env
        .ep
        .decision()
        .await
        .detail
        .contains("signed for region eu-west-1"));

    // A bad secret access key.
    let creds = env.ep.file("bad-credentials");
    let key = &env.ep.config.credentials[0];
    std::fs::write(
        &creds,
        format!(
            "[bad]\naws_access_key_id = {}\naws_secret_access_key = not-the-secret\n",
            key.access_key_id
        ),
    )
    .unwrap();
    let r = Sample::new("websocket-connect")
        .env("AWS_SHARED_CREDENTIALS_FILE", &creds)
        .env("AWS_PROFILE", "bad")
        .args(["--signing-region", "us-east-1"])
        .args(env.common(&env.p443(), "5"))
        .run()
        .await;
    r.assert_failure(
        "HTTP 403: The request signature we calculated does not match",
        "clock",
    );
    assert!(env
        .ep
        .decision()
        .await
        .detail
        .contains("signature does not match"));

    // No credentials at all: nothing is sent.
    let r = Sample::new("websocket-connect")
        .args(["--signing-region", "us-east-1"])
        .args(env.common(&env.p443(), "5"))
        .run()
        .await;
    r.assert_failure("no AWS credentials found", "AWS_ACCESS_KEY_ID");

    // A closed port.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let r = env.mtls(&closed.to_string(), "5").run().await;
    r.assert_failure(
        &format!("connection to localhost:{closed} was refused"),
        "--port",
    );

    // An unresolvable host. Its first label is 64 bytes long, one more than DNS allows, so the
    // system resolver gives up before it sends a query: nothing leaves the machine (checked with
    // `strace -e trace=connect,sendto`: only netlink and the nscd socket are touched).
    let unresolvable = format!("{}.invalid", "a".repeat(64));
    let r = Sample::new("mtls-connect")
        .args([
            "--cert",
            &env.path(files::DEVICE_CERT),
            "--key",
            &env.path(files::DEVICE_KEY),
        ])
        .args(["--timeout", "5", &unresolvable])
        .run()
        .await;
    r.assert_failure(
        &format!("could not resolve host name '{unresolvable}'"),
        "describe-endpoint",
    );

    // Local files: missing, and a key that does not match the certificate.
    let r = Sample::new("mtls-connect")
        .args([
            "--cert",
            "/nonexistent/device.pem",
            "--key",
            &env.path(files::DEVICE_KEY),
            "localhost",
        ])
        .run()
        .await;
    r.assert_failure(
        "the certificate file (--cert) /nonexistent/device.pem does not exist",
        "check the path",
    );
    let r = Sample::new("mtls-connect")
        .args([
            "--cert",
            &env.path(files::DEVICE_CERT),
            "--key",
            &env.path("rogue.key"),
            "localhost",
        ])
        .run()
        .await;
    r.assert_failure(
        "does not belong to the certificate",
        "create-keys-and-certificate",
    );

    // Usage errors exit 2.
    let r = Sample::new("mtls-connect").args(["localhost"]).run().await;
    assert_eq!(r.code, 2, "{r:#?}");
    assert!(r.stderr.contains("--cert"), "{r:#?}");
    let r = Sample::new("custom-auth-signed")
        .args(["--authorizer", "a", "localhost"])
        .run()
        .await;
    assert_eq!(r.code, 2, "{r:#?}");
    assert!(
        r.stderr
            .contains("a signed token needs --authorizer-token-key-name"),
        "{r:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_in_any_output_at_trace_level() {
    let mut env = Env::new("e2e-secrets").await;
    let pw = env.ep.password();
    let temp = env
        .ep
        .config
        .credentials
        .iter()
        .find(|k| k.session_token.is_some())
        .unwrap()
        .clone();
    let signer = TokenSigner::from_pem_file(&env.ep.file(files::AUTHORIZER_PRIVATE)).unwrap();
    let signature = signer.sign("allow").unwrap();
    let private_key = std::fs::read_to_string(env.ep.file(files::AUTHORIZER_PRIVATE)).unwrap();
    let device_key = std::fs::read_to_string(env.ep.file(files::DEVICE_KEY)).unwrap();
    let key_lines: Vec<&str> = private_key
        .lines()
        .chain(device_key.lines())
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let encoded = |s: &str| samples_common::custom_auth::url_encode(s);
    let token = temp.session_token.clone().unwrap();
    let secrets = [
        pw.clone(),
        temp.secret_access_key.clone(),
        token.clone(),
        encoded(&token),
        signature.clone(),
        encoded(&signature),
    ];

    let runs = [
        env.sigv4("iot-core-local-temporary", "5")
            .env("RUST_LOG", "trace")
            .run()
            .await,
        env.unsigned(&pw, "5").env("RUST_LOG", "trace").run().await,
        env.unsigned(&pw, "3.1.1")
            .args(["--websockets"])
            .env("RUST_LOG", "trace")
            .run()
            .await,
        env.signed("5").env("RUST_LOG", "trace").run().await,
        env.signed("5")
            .args(["--websockets"])
            .env("RUST_LOG", "trace")
            .run()
            .await,
        env.mtls(&env.p8883(), "5")
            .env("RUST_LOG", "trace")
            .run()
            .await,
        // Failing runs print causes: they must not leak either.
        env.unsigned(&format!("{pw}-wrong"), "5")
            .env("RUST_LOG", "trace")
            .run()
            .await,
    ];
    for (i, r) in runs.iter().enumerate() {
        let out = r.all();
        assert!(
            out.contains("TRACE") || out.contains("DEBUG"),
            "run {i} logged at trace: {out}"
        );
        for s in &secrets {
            assert!(!out.contains(s.as_str()), "run {i} printed a secret: {out}");
        }
        for l in &key_lines {
            assert!(!out.contains(l), "run {i} printed key material");
        }
        let _ = env.ep.decision().await;
    }
}

/// What the samples put on the wire, as the authorizer function receives it: SNI, the MQTT
/// username (one `?`, the user's query kept, the signature URL-encoded once, no SDK metrics),
/// the password, the client id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_samples_send_what_the_reference_says() {
    let dir = account_with_recording_authorizer("e2e-wire");
    let mut env = Env {
        ep: Endpoint::start(&dir).await,
    };
    let event_file = dir.join("event.json");
    let signature = TokenSigner::from_pem_file(&env.ep.file(files::AUTHORIZER_PRIVATE))
        .unwrap()
        .sign("allow")
        .unwrap();
    let read_event = || -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(&event_file).unwrap()).unwrap()
    };

    // Direct, MQTT 5, a username that already carries a query.
    Sample::new("custom-auth-signed")
        .args([
            "--authorizer",
            "recording-authorizer",
            "--username",
            "alice?tenant=blue",
        ])
        .args(["--password", "pw-123", "--client-id", "test-wire-1"])
        .args([
            "--authorizer-token-key-name",
            "token",
            "--authorizer-token-key-value",
            "allow",
        ])
        .args([
            "--authorizer-private-key",
            &env.path(files::AUTHORIZER_PRIVATE),
        ])
        .args(env.common(&env.p443(), "5"))
        .run()
        .await
        .assert_success(SIGNED);
    env.expect_allowed().await;
    let e = read_event();
    let encoded = samples_common::custom_auth::url_encode(&signature);
    assert_eq!(
        e["protocolData"]["mqtt"]["username"],
        format!(
            "alice?tenant=blue&x-amz-customauthorizer-name=recording-authorizer\
             &x-amz-customauthorizer-signature={encoded}&token=allow"
        )
    );
    assert_eq!(
        e["protocolData"]["tls"]["serverName"], "localhost",
        "SNI is the endpoint"
    );
    assert_eq!(e["protocolData"]["mqtt"]["password"], "cHctMTIz"); // base64("pw-123")
    assert_eq!(e["protocolData"]["mqtt"]["clientId"], "test-wire-1");
    assert_eq!(e["protocols"], serde_json::json!(["tls", "mqtt"]));
    assert_eq!(e["signatureVerified"], true);

    // Over WebSocket, MQTT 3.1.1, the signature given pre-encoded: not encoded twice.
    std::fs::remove_file(&event_file).unwrap();
    Sample::new("custom-auth-signed")
        .args([
            "--authorizer",
            "recording-authorizer",
            "--client-id",
            "test-wire-2",
            "--websockets",
        ])
        .args([
            "--authorizer-token-key-name",
            "token",
            "--authorizer-token-key-value",
            "allow",
        ])
        .args(["--authorizer-signature", &encoded])
        .args(env.common(&env.p443(), "3.1.1"))
        .run()
        .await
        .assert_success(SIGNED);
    env.expect_allowed().await;
    let e = read_event();
    assert_eq!(
        e["protocolData"]["mqtt"]["username"],
        format!("?x-amz-customauthorizer-name=recording-authorizer&x-amz-customauthorizer-signature={encoded}&token=allow")
    );
    assert_eq!(e["protocols"], serde_json::json!(["tls", "http", "mqtt"]));
    let headers = e["protocolData"]["http"]["headers"]
        .as_object()
        .expect("the upgrade's headers");
    let host = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("host"))
        .map(|(_, v)| v.clone());
    let host = host
        .and_then(|v| v.as_str().map(str::to_string))
        .expect("a Host header");
    assert_eq!(
        host,
        format!("localhost:{}", env.p443()),
        "the Host header the sample sent"
    );
    assert!(
        e["protocolData"]["mqtt"].get("password").is_none(),
        "no password was given"
    );
}

// ---------------------------------------------------------------------------------------------
// Behind a proxy: every sample and mode through a real tinyproxy (common::tinyproxy), its log
// read back to prove that the tunnel went through it. These tests need the tinyproxy binary,
// which a machine with only a Rust toolchain lacks, so `cargo test --workspace` lists them as
// ignored; `.ci/run` installs tinyproxy and runs them with `--ignored`, and without tinyproxy
// they fail, saying how to install it.

use common::tinyproxy::{Tinyproxy, TinyproxyOptions};

const PROXY_USER: &str = "alice";
const PROXY_PASSWORD: &str = "proxy-s3cret-pw";

/// A tinyproxy that wants `alice`'s basic auth, its files beside the account's.
fn proxy_with_auth(name: &str) -> Tinyproxy {
    Tinyproxy::start(
        &account_dir(&format!("{name}-proxy")),
        &TinyproxyOptions {
            basic_auth: Some((PROXY_USER, PROXY_PASSWORD)),
            ..Default::default()
        },
    )
}

impl Sample {
    /// Through `proxy` by the flags, as `alice`, the password in PROXY_PASSWORD.
    fn via(self, proxy: &Tinyproxy) -> Self {
        self.args([
            "--proxy-host",
            "127.0.0.1",
            "--proxy_port",
            &proxy.port.to_string(),
            "--proxy-user",
            PROXY_USER,
        ])
        .env("PROXY_PASSWORD", PROXY_PASSWORD)
    }
}

/// Run `sample`, expect success, and check that exactly one tunnel to `localhost:<port>` went
/// through `proxy` for it, and that the proxy password is nowhere in its output (RUST_LOG=trace).
async fn through_proxy(sample: Sample, banner: &str, proxy: &Tinyproxy, port: &str) {
    let target = format!("localhost:{port}");
    let (before, tunnels) = (proxy.connects_to(&target), proxy.tunnels());
    let run = sample.env("RUST_LOG", "trace").run().await;
    run.assert_success(banner);
    let out = run.all();
    assert!(out.contains("TRACE"), "logged at trace: {out}");
    // The password, and the Proxy-Authorization value (base64 of alice:proxy-s3cret-pw).
    for secret in [PROXY_PASSWORD, "YWxpY2U6cHJveHktczNjcmV0LXB3"] {
        assert!(
            !out.contains(secret),
            "the proxy password was printed: {out}"
        );
    }
    assert_eq!(proxy.connects_to(&target), before + 1, "{}", proxy.log());
    assert_eq!(proxy.tunnels(), tunnels + 1, "{}", proxy.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs tinyproxy; .ci/run runs it (see the README's Behind a proxy)"]
async fn every_sample_every_mode_through_a_proxy_both_mqtt_versions() {
    let mut env = Env::new("e2e-proxy").await;
    let proxy = proxy_with_auth("e2e-proxy");
    let pw = env.ep.password();
    let (p443, p8883) = (env.p443(), env.p8883());
    for v in ["5", "3.1.1"] {
        through_proxy(env.mtls(&p8883, v).via(&proxy), MTLS, &proxy, &p8883).await;
        env.expect_allowed().await;
        through_proxy(env.mtls(&p443, v).via(&proxy), MTLS, &proxy, &p443).await;
        env.expect_allowed().await;
        through_proxy(
            env.sigv4("iot-core-local", v).via(&proxy),
            WS,
            &proxy,
            &p443,
        )
        .await;
        env.expect_allowed().await;
        through_proxy(env.unsigned(&pw, v).via(&proxy), UNSIGNED, &proxy, &p443).await;
        env.expect_allowed().await;
        let ws = env.unsigned(&pw, v).args(["--websockets"]).via(&proxy);
        through_proxy(ws, UNSIGNED, &proxy, &p443).await;
        env.expect_allowed().await;
        through_proxy(env.signed(v).via(&proxy), SIGNED, &proxy, &p443).await;
        env.expect_allowed().await;
        let ws = env.signed(v).args(["--websockets"]).via(&proxy);
        through_proxy(ws, SIGNED, &proxy, &p443).await;
        env.expect_allowed().await;
        let custom = Sample::new("websocket-connect")
            .args(["--username", USERNAME, "--password", &pw])
            .args(["--authorizer", UNSIGNED_AUTHORIZER])
            .args(env.common(&p443, v))
            .via(&proxy);
        through_proxy(custom, WS, &proxy, &p443).await;
        env.expect_allowed().await;
    }
}

/// Through the proxy, the endpoint still sees its own SNI and, on a WebSocket, its own Host
/// header: the authorizer function receives them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs tinyproxy; .ci/run runs it (see the README's Behind a proxy)"]
async fn through_a_proxy_sni_and_host_stay_the_endpoints() {
    let dir = account_with_recording_authorizer("e2e-proxy-wire");
    let mut env = Env {
        ep: Endpoint::start(&dir).await,
    };
    let proxy = proxy_with_auth("e2e-proxy-wire");
    let event_file = dir.join("event.json");
    let p443 = env.p443();
    for websockets in [false, true] {
        let _ = std::fs::remove_file(&event_file);
        let mut sample = Sample::new("custom-auth-signed")
            .args(["--authorizer", "recording-authorizer"])
            .args(["--authorizer-token-key-name", "token"])
            .args(["--authorizer-token-key-value", "allow"])
            .args([
                "--authorizer-private-key",
                &env.path(files::AUTHORIZER_PRIVATE),
            ])
            .args(env.common(&p443, "5"))
            .via(&proxy);
        if websockets {
            sample = sample.args(["--websockets"]);
        }
        through_proxy(sample, SIGNED, &proxy, &p443).await;
        env.expect_allowed().await;
        let e: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&event_file).unwrap()).unwrap();
        assert_eq!(e["protocolData"]["tls"]["serverName"], "localhost", "{e}");
        if websockets {
            let headers = e["protocolData"]["http"]["headers"].as_object().unwrap();
            let host = headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("host"))
                .and_then(|(_, v)| v.as_str());
            assert_eq!(host, Some(format!("localhost:{p443}").as_str()), "{e}");
        } else {
            assert_eq!(e["protocols"], serde_json::json!(["tls", "mqtt"]), "{e}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs tinyproxy; .ci/run runs it (see the README's Behind a proxy)"]
async fn proxy_credentials_right_wrong_and_missing() {
    let mut env = Env::new("e2e-proxy-auth").await;
    let proxy = proxy_with_auth("e2e-proxy-auth");
    let (p8883, port) = (env.p8883(), proxy.port.to_string());
    let target = format!("localhost:{p8883}");

    // The password from a file.
    let file = account_dir("e2e-proxy-auth-pw").with_extension("txt");
    std::fs::write(&file, format!("{PROXY_PASSWORD}\n")).unwrap();
    let sample = env.mtls(&p8883, "5").args(["--proxy-host", "127.0.0.1"]);
    let sample = sample.args(["--proxy-port", &port, "--proxy-user", PROXY_USER]);
    let sample = sample.args(["--proxy-password-file", &file.display().to_string()]);
    through_proxy(sample, MTLS, &proxy, &p8883).await;
    env.expect_allowed().await;

    // A wrong password: tinyproxy answers 401.
    let before = proxy.connects_to(&target);
    let r = env
        .mtls(&p8883, "3.1.1")
        .via(&proxy)
        .env("PROXY_PASSWORD", "not-the-password")
        .env("RUST_LOG", "trace")
        .run()
        .await;
    r.assert_failure(
        &format!("the proxy http://127.0.0.1:{port} refused to open a tunnel to {target}: HTTP 401"),
        &format!("the proxy http://127.0.0.1:{port} did not accept the user 'alice' and its password: check --proxy-user and PROXY_PASSWORD"),
    );
    assert!(!r.all().contains("not-the-password"), "{r:#?}");
    assert_eq!(proxy.connects_to(&target), before + 1, "{}", proxy.log());

    // No credentials at all.
    let r = env
        .mtls(&p8883, "5")
        .args(["--proxy-host", "127.0.0.1", "--proxy-port", &port])
        .run()
        .await;
    r.assert_failure(
        "HTTP 407 Proxy Authentication Required",
        &format!("the proxy http://127.0.0.1:{port} wants a user name and password: pass --proxy-user and PROXY_PASSWORD"),
    );
    assert_eq!(proxy.connects_to(&target), before + 2, "{}", proxy.log());

    // --proxy-user without a password is refused before connecting.
    let r = env
        .mtls(&p8883, "5")
        .args(["--proxy-host", "127.0.0.1", "--proxy-port", &port])
        .args(["--proxy-user", PROXY_USER])
        .run()
        .await;
    assert_eq!(r.code, 2, "{r:#?}");
    assert!(
        r.stderr
            .starts_with("error: --proxy-user needs a password: set PROXY_PASSWORD"),
        "{r:#?}"
    );
    assert_eq!(proxy.tunnels(), 1, "{}", proxy.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs tinyproxy; .ci/run runs it (see the README's Behind a proxy)"]
async fn a_proxy_that_refuses_the_port() {
    let env = Env::new("e2e-proxy-port").await;
    let proxy = Tinyproxy::start(
        &account_dir("e2e-proxy-port-proxy"),
        &TinyproxyOptions {
            connect_ports: vec![443],
            ..Default::default()
        },
    );
    let (p8883, port) = (env.p8883(), proxy.port.to_string());
    let r = env
        .mtls(&p8883, "5")
        .args(["--proxy-host", "127.0.0.1", "--proxy-port", &port])
        .run()
        .await;
    r.assert_failure(
        &format!("the proxy http://127.0.0.1:{port} refused to open a tunnel to localhost:{p8883}: HTTP 403 Forbidden"),
        "many proxies allow CONNECT to port 443 only (try --port 443)",
    );
    assert_eq!(proxy.connects_to(&format!("localhost:{p8883}")), 1);
    assert_eq!(proxy.tunnels(), 0, "{}", proxy.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs tinyproxy; .ci/run runs it (see the README's Behind a proxy)"]
async fn https_proxy_from_the_environment_and_no_proxy() {
    let mut env = Env::new("e2e-proxy-env").await;
    let proxy = proxy_with_auth("e2e-proxy-env");
    let pw = env.ep.password();
    let p443 = env.p443();
    let url = format!(
        "http://{PROXY_USER}:{PROXY_PASSWORD}@127.0.0.1:{}",
        proxy.port
    );

    // HTTPS_PROXY, credentials in the URL.
    let sample = env.unsigned(&pw, "5").env("HTTPS_PROXY", &url);
    through_proxy(sample, UNSIGNED, &proxy, &p443).await;
    env.expect_allowed().await;
    // https_proxy, the lower-case spelling.
    let sample = env
        .sigv4("iot-core-local", "3.1.1")
        .env("https_proxy", &url);
    through_proxy(sample, WS, &proxy, &p443).await;
    env.expect_allowed().await;

    // NO_PROXY names the endpoint: direct, the proxy sees nothing.
    let seen = proxy.connects();
    for no_proxy in ["localhost", "example.com, .localhost", "*"] {
        env.unsigned(&pw, "5")
            .env("HTTPS_PROXY", &url)
            .env("NO_PROXY", no_proxy)
            .run()
            .await
            .assert_success(UNSIGNED);
        env.expect_allowed().await;
    }
    assert_eq!(
        proxy.connects(),
        seen,
        "NO_PROXY went through the proxy: {}",
        proxy.log()
    );

    // NO_PROXY naming another host: through the proxy.
    let sample = env
        .unsigned(&pw, "5")
        .env("HTTPS_PROXY", &url)
        .env("NO_PROXY", "example.com,127.0.0.1");
    through_proxy(sample, UNSIGNED, &proxy, &p443).await;
    env.expect_allowed().await;

    // The flags win over the environment (which names a port nothing listens on).
    let sample = env
        .unsigned(&pw, "5")
        .env("HTTPS_PROXY", "http://127.0.0.1:1")
        .via(&proxy);
    through_proxy(sample, UNSIGNED, &proxy, &p443).await;
    env.expect_allowed().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_proxy_is_named_in_the_failure() {
    let env = Env::new("e2e-proxy-down").await;
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let r = env
        .mtls(&env.p8883(), "5")
        .env("HTTPS_PROXY", format!("127.0.0.1:{port}"))
        .run()
        .await;
    r.assert_failure(
        &format!("could not connect to the proxy http://127.0.0.1:{port} (from HTTPS_PROXY): connection refused"),
        &format!("check that a proxy runs at http://127.0.0.1:{port} (named by HTTPS_PROXY)"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs tinyproxy; .ci/run runs it (see the README's Behind a proxy)"]
async fn a_proxy_that_cannot_reach_the_endpoint() {
    let env = Env::new("e2e-proxy-unreachable").await;
    let proxy = Tinyproxy::start(
        &account_dir("e2e-proxy-unreachable-proxy"),
        &TinyproxyOptions::default(),
    );
    // A port nothing listens on behind the proxy: tinyproxy answers 500.
    let closed = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port().to_string()
    };
    let port = proxy.port.to_string();
    let r = env
        .mtls(&closed, "3.1.1")
        .args(["--proxy-host", "127.0.0.1", "--proxy-port", &port])
        .run()
        .await;
    r.assert_failure(
        &format!("the proxy http://127.0.0.1:{port} refused to open a tunnel to localhost:{closed}: HTTP 500 Internal Server Error"),
        &format!("the proxy http://127.0.0.1:{port} could not reach localhost:{closed} for you: check --endpoint and --port"),
    );
    assert_eq!(proxy.connects_to(&format!("localhost:{closed}")), 1);
}
