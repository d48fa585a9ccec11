//! The one error type of the samples, and the `hint:` line that tells a person what to check.
//!
//! Every failure a sample can meet is a variant carrying what the user needs to act on it. The
//! cause is printed as `Connection attempt failed: <cause>` and [`Error::hint`] adds one line that
//! depends on the authentication mode, because "the server hung up" means a different thing to
//! check for an mTLS device than for a custom authorizer.

use std::path::PathBuf;
use std::time::Duration;

use crate::secrets;

/// How the sample authenticates. It decides the default port and which hints apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthMode {
    /// X.509 client certificate (mutual TLS).
    Mtls,
    /// MQTT over WebSocket, the upgrade request presigned with SigV4.
    SigV4WebSocket,
    /// Custom authorizer without token signing (username and password only).
    CustomAuthUnsigned,
    /// Custom authorizer with a signed token.
    CustomAuthSigned,
}

/// Which kind of PEM file a problem is about; it names the flag to fix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PemFile {
    /// `--cert`
    Certificate,
    /// `--key`
    PrivateKey,
    /// `--ca-file`
    CaFile,
    /// `--authorizer-private-key`
    AuthorizerKey,
}

impl PemFile {
    fn describe(self) -> &'static str {
        match self {
            PemFile::Certificate => "certificate file (--cert)",
            PemFile::PrivateKey => "private key file (--key)",
            PemFile::CaFile => "CA file (--ca-file)",
            PemFile::AuthorizerKey => "authorizer private key (--authorizer-private-key)",
        }
    }

    fn expected(self) -> &'static str {
        match self {
            PemFile::Certificate | PemFile::CaFile => "a PEM 'CERTIFICATE' block",
            PemFile::PrivateKey => {
                "a PEM private key ('PRIVATE KEY', 'RSA PRIVATE KEY' or 'EC PRIVATE KEY')"
            }
            PemFile::AuthorizerKey => "a PEM RSA private key ('PRIVATE KEY' or 'RSA PRIVATE KEY')",
        }
    }
}

/// What went wrong reading a PEM file.
#[derive(Debug, thiserror::Error)]
pub enum FileProblem {
    #[error("does not exist")]
    Missing,
    #[error("cannot be read: {0}")]
    Unreadable(std::io::Error),
    #[error("is not PEM: {0}")]
    NotPem(String),
    #[error("holds no {0}")]
    NothingUsable(&'static str),
    #[error("holds a key that cannot be used: {0}")]
    UnusableKey(String),
}

/// How the TLS handshake failed, as far as a person needs to know.
#[derive(Debug, PartialEq, Eq)]
pub enum TlsFailure {
    /// The server's chain does not end in a trusted root.
    UnknownIssuer,
    /// The server's certificate is not for the host name we connected to.
    NameMismatch,
    /// The server's certificate is expired or not yet valid.
    ServerCertExpired,
    /// The server refused our client certificate (or demanded one we did not have).
    ClientCertRejected(String),
    /// The server hung up in the middle of the handshake.
    ClosedDuringHandshake,
    /// The server demands a client certificate, and this mode has none (e.g. port 8883).
    ClientCertRequired,
    /// Anything else rustls reported.
    Other(String),
}

/// Every way a sample can fail. `Display` is the one-line cause; secrets are never in it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A command-line value that clap could not check by itself. Exit code 2.
    #[error("{0}")]
    Usage(String),

    #[error("the {} {} {problem}", .which.describe(), .path.display())]
    File {
        which: PemFile,
        path: PathBuf,
        problem: FileProblem,
    },

    #[error("the private key {} does not belong to the certificate {}", .key.display(), .cert.display())]
    KeyMismatch { cert: PathBuf, key: PathBuf },

    #[error("could not resolve host name '{host}': {reason}")]
    Dns { host: String, reason: String },

    #[error("connection to {host}:{port} was refused")]
    Refused { host: String, port: u16 },

    #[error("no answer within {}s ({stage})", .after.as_secs())]
    Timeout {
        after: Duration,
        stage: &'static str,
    },

    #[error("{}", tls_cause(.0))]
    Tls(TlsFailure),

    #[error("the server closed the connection without answering CONNECT (no CONNACK)")]
    ClosedWithoutConnack,

    #[error("the server refused the connection: CONNACK {}", connack_cause(*.code, .reason))]
    Refused5 { code: u8, reason: String },

    #[error("the server refused the connection: CONNACK return code {code} ({})", connack311_name(*.code))]
    Refused311 { code: u8 },

    #[error("the WebSocket upgrade was refused with HTTP {status}{}", http_detail(.message))]
    WebSocketHttp { status: u16, message: String },

    #[error("no AWS credentials found: {0}")]
    NoCredentials(String),

    #[error("the server disconnected: {0}")]
    Disconnected(String),

    #[error("{0}")]
    Other(String),
}

impl Error {
    /// The process exit code for this failure: 2 for usage errors, 1 for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) => 2,
            _ => 1,
        }
    }

    /// The user-facing cause, with every registered secret masked.
    pub fn cause(&self) -> String {
        secrets::redact(&self.to_string())
    }

    /// One line saying what to check, for this failure in this authentication mode.
    pub fn hint(&self, mode: AuthMode) -> String {
        match self {
            Error::Usage(_) => "run with --help to see the options".into(),
            Error::File { which, problem, .. } => match problem {
                FileProblem::Missing | FileProblem::Unreadable(_) => {
                    format!("check the path and permissions of the {}", which.describe())
                }
                _ => format!("the {} must contain {}", which.describe(), which.expected()),
            },
            Error::KeyMismatch { .. } => {
                "pass the private key that was created with this certificate \
                 (aws iot create-keys-and-certificate writes both at once)"
                    .into()
            }
            Error::Dns { .. } => "check the endpoint name: `aws iot describe-endpoint \
                 --endpoint-type iot:Data-ATS` prints yours"
                .into(),
            Error::Refused { port, .. } => format!(
                "nothing listens on port {port}: check --endpoint and --port \
                 (AWS IoT Core listens on 8883 and 443)"
            ),
            Error::Timeout { .. } => "check that the endpoint is reachable from here \
                 (firewalls often block 8883; port 443 usually passes), or raise --timeout"
                .into(),
            Error::Tls(failure) => tls_hint(failure, mode),
            Error::ClosedWithoutConnack => closed_hint(mode),
            Error::Refused5 { code, .. } => connack_hint(*code, mode),
            Error::Refused311 { code } => match code {
                4 => credentials_hint(mode),
                2 => "the client id was refused: use at most 128 bytes, not starting with $GEN/"
                    .into(),
                _ => not_authorized_hint(mode),
            },
            Error::WebSocketHttp { status, .. } => websocket_hint(*status, mode),
            Error::NoCredentials(_) => {
                "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY \
                 (and AWS_SESSION_TOKEN for temporary keys), or AWS_PROFILE, or run `aws configure`"
                    .into()
            }
            Error::Disconnected(_) => {
                "another client with the same --client-id may have taken over the session".into()
            }
            Error::Other(_) => "run again with RUST_LOG=debug for details".into(),
        }
    }
}

fn tls_cause(f: &TlsFailure) -> String {
    match f {
        TlsFailure::UnknownIssuer => {
            "TLS handshake failed: the server certificate is not signed by a trusted CA".into()
        }
        TlsFailure::NameMismatch => {
            "TLS handshake failed: the server certificate is not valid for this host name".into()
        }
        TlsFailure::ServerCertExpired => {
            "TLS handshake failed: the server certificate is expired or not yet valid".into()
        }
        TlsFailure::ClientCertRejected(alert) => {
            format!("TLS handshake failed: the server rejected the client certificate ({alert})")
        }
        TlsFailure::ClosedDuringHandshake => {
            "the server closed the connection during the TLS handshake".into()
        }
        TlsFailure::ClientCertRequired => {
            "TLS handshake failed: the server requires a client certificate".into()
        }
        TlsFailure::Other(detail) => format!("TLS handshake failed: {detail}"),
    }
}

fn tls_hint(f: &TlsFailure, mode: AuthMode) -> String {
    match f {
        TlsFailure::UnknownIssuer => "pass the CA that signed the server certificate with \
             --ca-file (AWS IoT Core: Amazon Root CA 1, built in; iot-core-local: its server-ca.pem)"
            .into(),
        TlsFailure::NameMismatch => "connect with the host name the certificate was issued for \
             (the ATS endpoint from `aws iot describe-endpoint --endpoint-type iot:Data-ATS`)"
            .into(),
        TlsFailure::ServerCertExpired => "check this machine's clock".into(),
        TlsFailure::ClientCertRejected(_) => "the certificate must be registered with AWS IoT, \
             ACTIVE, and signed by a registered CA: `aws iot describe-certificate --certificate-id <id>`"
            .into(),
        TlsFailure::ClosedDuringHandshake => match mode {
            AuthMode::Mtls => "check --port: mTLS uses 8883, or 443 with ALPN x-amzn-mqtt-ca".into(),
            _ => "check --port: this mode uses 443 (custom auth is not served on 8883)".into(),
        },
        TlsFailure::ClientCertRequired => "this port serves only mTLS, as 8883 does: custom \
             authentication and WebSockets are served on port 443"
            .into(),
        TlsFailure::Other(_) => "run again with RUST_LOG=debug for the TLS details".into(),
    }
}

/// The likely reasons AWS IoT Core refuses this kind of client after TLS succeeded.
fn refusal_causes(mode: AuthMode) -> &'static str {
    match mode {
        AuthMode::Mtls => {
            "the certificate's policy does not allow iot:Connect on \
             client/<your client id> (sample policies allow client/test-*), no policy is attached, \
             or the certificate is not registered or not ACTIVE"
        }
        AuthMode::SigV4WebSocket => {
            "the IAM policy of these credentials does not allow \
             iot:Connect on client/<your client id> (sample policies allow client/test-*)"
        }
        AuthMode::CustomAuthUnsigned => {
            "the authorizer name is wrong or the authorizer is \
             INACTIVE, the Lambda denies these credentials or fails, or its policy does not allow \
             iot:Connect on client/<your client id>"
        }
        AuthMode::CustomAuthSigned => {
            "the token signature does not verify against the \
             authorizer's public key, the token key name is wrong, the authorizer name is wrong or \
             INACTIVE, the Lambda denies or fails, or its policy does not allow iot:Connect on \
             client/<your client id>"
        }
    }
}

fn closed_hint(mode: AuthMode) -> String {
    format!(
        "AWS IoT Core hangs up like this when {}",
        refusal_causes(mode)
    )
}

fn not_authorized_hint(mode: AuthMode) -> String {
    format!(
        "AWS IoT Core answers Not authorized when {}",
        refusal_causes(mode)
    )
}

fn credentials_hint(mode: AuthMode) -> String {
    match mode {
        AuthMode::Mtls | AuthMode::SigV4WebSocket => "this mode sends no username or password: \
             check that --endpoint and --port point at AWS IoT Core"
            .into(),
        AuthMode::CustomAuthSigned => "check the token, its signature, and the username and \
             password your authorizer expects"
            .into(),
        _ => "check the username and password your authorizer expects".into(),
    }
}

fn websocket_hint(status: u16, mode: AuthMode) -> String {
    match (status, mode) {
        (403, AuthMode::SigV4WebSocket) => {
            "check --signing-region (it must be the endpoint's region), \
             this machine's clock (at most 5 minutes off), and that the credentials are valid"
                .into()
        }
        (403, _) | (401, _) => format!(
            "AWS IoT Core refuses the upgrade when {}",
            refusal_causes(mode)
        ),
        (404, _) => "the WebSocket path must be /mqtt on the data endpoint".into(),
        _ => "check --endpoint and --port".into(),
    }
}

/// The MQTT 5 CONNACK reason codes a server may answer with (MQTT 5.0, 3.2.2.2).
pub fn connack_reason_name(code: u8) -> &'static str {
    match code {
        0x80 => "Unspecified error",
        0x81 => "Malformed Packet",
        0x82 => "Protocol Error",
        0x83 => "Implementation specific error",
        0x84 => "Unsupported Protocol Version",
        0x85 => "Client Identifier not valid",
        0x86 => "Bad User Name or Password",
        0x87 => "Not authorized",
        0x88 => "Server unavailable",
        0x89 => "Server busy",
        0x8A => "Banned",
        0x8C => "Bad authentication method",
        0x90 => "Topic Name invalid",
        0x95 => "Packet too large",
        0x97 => "Quota exceeded",
        0x99 => "Payload format invalid",
        0x9A => "Retain not supported",
        0x9B => "QoS not supported",
        0x9C => "Use another server",
        0x9D => "Server moved",
        0x9F => "Connection rate exceeded",
        _ => "unknown reason code",
    }
}

fn connack_cause(code: u8, reason: &str) -> String {
    let mut s = format!("0x{code:02X} {}", connack_reason_name(code));
    if !reason.is_empty() {
        s.push_str(": ");
        s.push_str(reason);
    }
    s
}

fn connack311_name(code: u8) -> &'static str {
    match code {
        1 => "unacceptable protocol version",
        2 => "identifier rejected",
        3 => "server unavailable",
        4 => "bad user name or password",
        5 => "not authorized",
        _ => "unknown",
    }
}

fn connack_hint(code: u8, mode: AuthMode) -> String {
    match code {
        0x85 => "the client id was refused: use at most 128 bytes, not starting with $GEN/".into(),
        0x86 => credentials_hint(mode),
        0x87 => not_authorized_hint(mode),
        0x84 => "try --mqtt-version 3.1.1".into(),
        0x88 | 0x89 | 0x9F | 0x97 => "the service is busy or throttling: wait and try again".into(),
        0x8A => "this client has been banned by the server".into(),
        0x9C | 0x9D => "connect to the endpoint the server names".into(),
        _ => "run again with RUST_LOG=debug for details".into(),
    }
}

fn http_detail(message: &str) -> String {
    if message.is_empty() {
        String::new()
    } else {
        format!(": {message}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_iot_core_connack_code_has_a_name_and_hint() {
        for (code, name, hint_word) in [
            (0x85, "Client Identifier not valid", "128 bytes"),
            (0x86, "Bad User Name or Password", "password"),
            (0x87, "Not authorized", "iot:Connect"),
        ] {
            let e = Error::Refused5 {
                code,
                reason: String::new(),
            };
            assert!(e.cause().contains(name), "{}", e.cause());
            assert!(e.hint(AuthMode::CustomAuthUnsigned).contains(hint_word));
        }
    }

    #[test]
    fn connack_cause_carries_the_reason_string() {
        let e = Error::Refused5 {
            code: 0x87,
            reason: "Client is not authenticated/authorized".into(),
        };
        assert_eq!(
            e.cause(),
            "the server refused the connection: CONNACK 0x87 Not authorized: \
             Client is not authenticated/authorized"
        );
    }

    #[test]
    fn hangup_hint_depends_on_the_mode() {
        let e = Error::ClosedWithoutConnack;
        assert!(e.hint(AuthMode::Mtls).contains("certificate"));
        assert!(e.hint(AuthMode::SigV4WebSocket).contains("IAM policy"));
        assert!(e
            .hint(AuthMode::CustomAuthUnsigned)
            .contains("authorizer name"));
        assert!(e.hint(AuthMode::CustomAuthSigned).contains("signature"));
    }

    #[test]
    fn websocket_403_points_at_region_clock_and_credentials() {
        let e = Error::WebSocketHttp {
            status: 403,
            message: "Forbidden".into(),
        };
        let hint = e.hint(AuthMode::SigV4WebSocket);
        assert!(
            hint.contains("--signing-region")
                && hint.contains("clock")
                && hint.contains("credentials")
        );
        assert_eq!(
            e.cause(),
            "the WebSocket upgrade was refused with HTTP 403: Forbidden"
        );
    }

    #[test]
    fn unknown_issuer_points_at_ca_file_and_rejected_cert_at_registration() {
        let e = Error::Tls(TlsFailure::UnknownIssuer);
        assert!(e.hint(AuthMode::Mtls).contains("--ca-file"));
        let e = Error::Tls(TlsFailure::ClientCertRejected("BadCertificate".into()));
        assert!(e.hint(AuthMode::Mtls).contains("ACTIVE"));
    }

    #[test]
    fn usage_errors_exit_2_and_others_exit_1() {
        assert_eq!(Error::Usage("x".into()).exit_code(), 2);
        assert_eq!(Error::ClosedWithoutConnack.exit_code(), 1);
    }
}
