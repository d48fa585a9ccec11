//! Test harness: a local account with every entity the rejection tests need, an in-process
//! endpoint on ephemeral loopback ports, and a raw client that reports exactly what it saw.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use iot_core_local::config::{Authorizer, Certificate, Config, Function, Rule, Status, FILE_NAME};
use iot_core_local::init::{files, init, InitOptions};
use iot_core_local::server::{start, Decision, Running, ServeOptions};
use rcgen::{CertificateParams, DnType, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::broadcast;

pub mod rumqttc_clients;
pub mod tinyproxy;

pub const TIMEOUT: Duration = Duration::from_secs(10);

/// A fresh account folder under the target directory.
pub fn account_dir(name: &str) -> PathBuf {
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("iot-core-local-tests");
    let dir = base.join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Publish, subscribe and receive on every topic under `test/`, for any client.
pub const TEST_PUBSUB_POLICY: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["iot:Publish","iot:RetainPublish","iot:Receive"],"Resource":"arn:aws:iot:us-east-1:123456789012:topic/test/*"},{"Effect":"Allow","Action":"iot:Subscribe","Resource":"arn:aws:iot:us-east-1:123456789012:topicfilter/test/*"}]}"#;

/// Create the standard account plus what the rejection tests need:
/// an INACTIVE device certificate, an INACTIVE authorizer, and command authorizers that deny,
/// hang, return an invalid principalId, and return a policy with an unsupported condition;
/// authorizer timeout 1 s.
pub fn rich_account(name: &str) -> PathBuf {
    let dir = account_dir(name);
    init(&InitOptions {
        dir: dir.clone(),
        force: true,
        port_443: 0,
        port_8883: 0,
    })
    .expect("init");
    let mut config = Config::load(&dir).expect("load");
    config.server.authorizer_timeout_ms = 1000;

    // The broker tests exchange messages between clients on `test/...`, which init's policy
    // (each client on its own `test/<clientId>/...`) does not allow: grant that to the device.
    config
        .policies
        .insert("test-pubsub".into(), TEST_PUBSUB_POLICY.into());
    for cert in config
        .certificates
        .iter_mut()
        .filter(|c| c.id == "test-device")
    {
        cert.policies.push("test-pubsub".into());
    }

    // A second device certificate, signed by the registered CA but INACTIVE.
    issue_device_cert(&dir, "inactive-device");
    config.certificates.push(Certificate {
        id: "inactive-device".into(),
        certificate: "inactive-device.pem".into(),
        status: Status::Inactive,
        policies: vec!["device-connect".into()],
        things: Vec::new(),
    });
    // A self-signed certificate nobody registered.
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, "rogue");
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(dir.join("rogue.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("rogue.key"), key.serialize_pem()).unwrap();

    let unsigned = |name: &str, status: Status, function: Function| Authorizer {
        name: name.into(),
        status,
        default: false,
        signing_disabled: true,
        token_key_name: None,
        token_signing_public_keys: Default::default(),
        function,
    };
    let rules = Function::Rules {
        rules: vec![Rule {
            username: Some("demo-user".into()),
            password: None,
            token: None,
            principal_id: "anyone".into(),
            policies: vec!["custom-auth-connect".into()],
            disconnect_after_seconds: 86400,
            refresh_after_seconds: 300,
        }],
    };
    let command = |script: &str| Function::Command {
        argv: vec!["sh".into(), "-c".into(), script.into()],
    };
    let policy = config.policies["custom-auth-connect"].replace('"', "\\\"");
    config.authorizers.extend([
        unsigned("inactive-authorizer", Status::Inactive, rules),
        unsigned(
            "denying-authorizer",
            Status::Active,
            command(r#"cat >/dev/null; echo '{"isAuthenticated":false,"principalId":"nobody","policyDocuments":[],"disconnectAfterInSeconds":3600,"refreshAfterInSeconds":600}'"#),
        ),
        unsigned("slow-authorizer", Status::Active, command("cat >/dev/null; sleep 5")),
        unsigned(
            "bad-principal-authorizer",
            Status::Active,
            command(&format!(
                r#"cat >/dev/null; echo '{{"isAuthenticated":true,"principalId":"not-alphanumeric!","policyDocuments":["{policy}"],"disconnectAfterInSeconds":3600,"refreshAfterInSeconds":600}}'"#
            )),
        ),
        // Returns a policy with a condition operator iot-core-local does not evaluate.
        unsigned(
            "unsupported-policy-authorizer",
            Status::Active,
            command(r#"cat >/dev/null; echo '{"isAuthenticated":true,"principalId":"cond","policyDocuments":["{\"Version\":\"2012-10-17\",\"Statement\":[{\"Effect\":\"Allow\",\"Action\":\"iot:Connect\",\"Resource\":\"*\",\"Condition\":{\"DateLessThan\":{\"aws:CurrentTime\":\"2100-01-01T00:00:00Z\"}}}]}"],"disconnectAfterInSeconds":3600,"refreshAfterInSeconds":600}'"#),
        ),
    ]);
    std::fs::write(
        dir.join(FILE_NAME),
        config.to_toml().expect("serialize the account"),
    )
    .unwrap();
    Config::load(&dir).expect("the extended account loads");
    dir
}

fn issue_device_cert(dir: &Path, name: &str) {
    iot_core_local::init::issue_device_certificate(dir, name).expect("issue a device certificate");
}

/// An endpoint running in this process on ephemeral ports.
pub struct Endpoint {
    pub running: Running,
    pub dir: PathBuf,
    pub config: Config,
    decisions: broadcast::Receiver<Decision>,
}

impl Endpoint {
    pub async fn start(dir: &Path) -> Endpoint {
        Self::start_with(dir, ServeOptions::default()).await
    }

    pub async fn start_with(dir: &Path, mut opts: ServeOptions) -> Endpoint {
        opts.port_443 = Some(0);
        opts.port_8883 = Some(0);
        let running = start(dir, &opts).await.expect("serve");
        let decisions = running.decisions();
        Endpoint {
            running,
            dir: dir.to_path_buf(),
            config: Config::load(dir).unwrap(),
            decisions,
        }
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The next decision logged.
    pub async fn decision(&mut self) -> Decision {
        tokio::time::timeout(TIMEOUT, self.decisions.recv())
            .await
            .expect("a decision within the timeout")
            .expect("decision channel open")
    }

    pub fn password(&self) -> String {
        std::fs::read_to_string(self.file(files::PASSWORD)).unwrap()
    }
}

/// Which listener to dial.
#[derive(Clone, Copy)]
pub enum Port {
    P443,
    P8883,
}

/// The TLS side of a test client.
pub struct TlsClient<'a> {
    pub endpoint: &'a Endpoint,
    pub port: Port,
    pub alpn: Option<&'static [u8]>,
    /// (certificate file, key file) in the account folder.
    pub client_cert: Option<(&'a str, &'a str)>,
}

pub type Tls = tokio_rustls::client::TlsStream<TcpStream>;

impl TlsClient<'_> {
    pub async fn connect(&self) -> std::io::Result<Tls> {
        self.connect_with_sni(true).await
    }

    /// Connect as a client that sends no server name in its ClientHello (like one that dials an
    /// IP address); the server certificate is still verified for `localhost`.
    pub async fn connect_without_sni(&self) -> std::io::Result<Tls> {
        self.connect_with_sni(false).await
    }

    async fn connect_with_sni(&self, sni: bool) -> std::io::Result<Tls> {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(self.endpoint.file(files::SERVER_CA)).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
        let mut config = match self.client_cert {
            Some((cert, key)) => {
                let certs = CertificateDer::pem_file_iter(self.endpoint.file(cert))
                    .unwrap()
                    .collect::<Result<Vec<_>, _>>()
                    .unwrap();
                let key = PrivateKeyDer::from_pem_file(self.endpoint.file(key)).unwrap();
                builder.with_client_auth_cert(certs, key).unwrap()
            }
            None => builder.with_no_client_auth(),
        };
        if let Some(alpn) = self.alpn {
            config.alpn_protocols = vec![alpn.to_vec()];
        }
        config.enable_sni = sni;
        let addr = match self.port {
            Port::P443 => self.endpoint.running.addr_443,
            Port::P8883 => self.endpoint.running.addr_8883,
        };
        let tcp = TcpStream::connect(addr).await?;
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let mut tls = connector
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await?;
        // With TLS 1.3 a refused client certificate shows up on the first read; make the
        // handshake's outcome visible here by flushing.
        tls.flush().await?;
        Ok(tls)
    }
}

/// MQTT protocol version of a test CONNECT.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum V {
    V311,
    V5,
}

/// A CONNECT packet, encoded by hand from the MQTT specifications.
pub fn connect_packet(
    v: V,
    client_id: &str,
    username: Option<&str>,
    password: Option<&[u8]>,
) -> Vec<u8> {
    let mut body = Vec::new();
    let string = |b: &mut Vec<u8>, s: &[u8]| {
        b.extend_from_slice(&(s.len() as u16).to_be_bytes());
        b.extend_from_slice(s);
    };
    string(&mut body, b"MQTT");
    body.push(if v == V::V5 { 5 } else { 4 });
    let mut flags = 0x02; // clean session / clean start
    if username.is_some() {
        flags |= 0x80;
    }
    if password.is_some() {
        flags |= 0x40;
    }
    body.push(flags);
    body.extend_from_slice(&60u16.to_be_bytes());
    if v == V::V5 {
        body.push(0); // no properties
    }
    string(&mut body, client_id.as_bytes());
    if let Some(u) = username {
        string(&mut body, u.as_bytes());
    }
    if let Some(p) = password {
        string(&mut body, p);
    }
    let mut packet = vec![0x10];
    let mut len = body.len();
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        packet.push(byte);
        if len == 0 {
            break;
        }
    }
    packet.extend_from_slice(&body);
    packet
}

/// What the client saw after sending CONNECT.
#[derive(Debug, PartialEq)]
pub enum Seen {
    /// A CONNACK: its return/reason code, and the MQTT 5 reason string if any.
    ConnAck { code: u8, reason: Option<String> },
    /// The server closed the connection without any CONNACK.
    ClosedWithoutConnAck,
    /// The TLS layer failed (e.g. the server refused our certificate).
    TlsError(String),
}

/// Send CONNECT over `stream` and read what comes back.
pub async fn send_connect<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    packet: &[u8],
) -> Seen {
    if let Err(e) = stream.write_all(packet).await {
        return Seen::TlsError(e.to_string());
    }
    let _ = stream.flush().await;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 512];
    loop {
        let n = match tokio::time::timeout(TIMEOUT, stream.read(&mut chunk)).await {
            Err(_) => panic!("no answer and no close within {TIMEOUT:?}"),
            Ok(Ok(0)) => break,
            Ok(Ok(n)) => n,
            Ok(Err(e))
                if e.kind() == std::io::ErrorKind::UnexpectedEof
                    || e.kind() == std::io::ErrorKind::ConnectionReset =>
            {
                break
            }
            Ok(Err(e)) => return Seen::TlsError(e.to_string()),
        };
        buf.extend_from_slice(&chunk[..n]);
        if let Some(seen) = parse_connack(&buf) {
            return seen;
        }
    }
    parse_connack(&buf).unwrap_or(Seen::ClosedWithoutConnAck)
}

/// Parse a CONNACK (3.1.1 or 5) from the start of `buf`, if complete.
pub fn parse_connack(buf: &[u8]) -> Option<Seen> {
    if buf.len() < 4 || buf[0] != 0x20 {
        return None;
    }
    let len = buf[1] as usize; // our CONNACKs are short
    if buf.len() < 2 + len {
        return None;
    }
    let code = buf[3];
    let mut reason = None;
    if len > 2 {
        // MQTT 5 properties: length, then (id, value)*; look for 0x1F reason string.
        let props = &buf[5..2 + len];
        let mut i = 0;
        while i < props.len() {
            if props[i] == 0x1F && i + 3 <= props.len() {
                let l = u16::from_be_bytes([props[i + 1], props[i + 2]]) as usize;
                reason = props
                    .get(i + 3..i + 3 + l)
                    .map(|b| String::from_utf8_lossy(b).into_owned());
                break;
            }
            i += 1;
        }
    }
    Some(Seen::ConnAck { code, reason })
}

/// The rich account plus `recording-authorizer`: signing enabled like `signed-authorizer`, its
/// function a command that saves the event it gets to `<dir>/event.json` and allows.
pub fn account_with_recording_authorizer(name: &str) -> std::path::PathBuf {
    let dir = rich_account(name);
    let mut config = Config::load(&dir).unwrap();
    let signed = config
        .authorizers
        .iter()
        .find(|a| a.name == "signed-authorizer")
        .unwrap()
        .clone();
    let policy = config.policies["custom-auth-connect"].replace('"', "\\\"");
    let event = dir.join("event.json");
    config.authorizers.push(Authorizer {
        name: "recording-authorizer".into(),
        status: Status::Active,
        default: false,
        function: Function::Command {
            argv: vec![
                "sh".into(),
                "-c".into(),
                format!(
                    r#"cat > '{}'; echo '{{"isAuthenticated":true,"principalId":"recorded","policyDocuments":["{policy}"],"disconnectAfterInSeconds":3600,"refreshAfterInSeconds":600}}'"#,
                    event.display()
                ),
            ],
        },
        ..signed
    });
    std::fs::write(
        dir.join(FILE_NAME),
        config.to_toml().expect("serialize the account"),
    )
    .unwrap();
    dir
}

/// The reason code and reason string of a whole MQTT 5 server DISCONNECT, as read off the wire
/// (the client asked for problem information, the default, so the string must be there).
#[allow(dead_code)]
pub fn disconnect_with_reason(bytes: &[u8]) -> (u8, String) {
    use iot_core_local::mqtt::packet::Packet;
    match Packet::decode(iot_core_local::mqtt::Version::V5, bytes) {
        Ok(Packet::Disconnect(d)) => (d.reason, reason_string_of(&d.properties)),
        other => panic!("expected a DISCONNECT, got {other:?} from {bytes:02X?}"),
    }
}

/// The text of a property list that must hold exactly one reason string (0x1F).
#[allow(dead_code)]
pub fn reason_string_of(properties: &[u8]) -> String {
    match properties {
        [0x1F, hi, lo, text @ ..] if text.len() == usize::from(u16::from_be_bytes([*hi, *lo])) => {
            String::from_utf8(text.to_vec()).expect("a UTF-8 reason string")
        }
        other => panic!("expected a reason string property alone, got {other:02X?}"),
    }
}
