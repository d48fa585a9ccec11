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
