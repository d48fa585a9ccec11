//! The one error type of the samples, and the `hint:` line that tells a person what to check.
//!
//! Every failure a sample can meet is a variant carrying what the user needs to act on it. The
//! cause is printed as `Connection attempt failed: <cause>` and [`Error::hint`] adds one line that
//! depends on the authentication mode, because "the server hung up" means a different thing to
//! check for an mTLS device than for a custom authorizer.

use std::path::PathBuf;
use std::time::Duration;

use crate::mode::AuthMode;
use crate::proxy::ProxyName;
use crate::secrets;

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
    /// `--proxy-ca-file`
    ProxyCaFile,
}

impl PemFile {
    fn describe(self) -> &'static str {
        match self {
            PemFile::Certificate => "certificate file (--cert)",
            PemFile::PrivateKey => "private key file (--key)",
            PemFile::CaFile => "CA file (--ca-file)",
            PemFile::AuthorizerKey => "authorizer private key (--authorizer-private-key)",
            PemFile::ProxyCaFile => "proxy CA file (--proxy-ca-file)",
        }
    }

    fn expected(self) -> &'static str {
        match self {
            PemFile::Certificate | PemFile::CaFile | PemFile::ProxyCaFile => {
                "a PEM 'CERTIFICATE' block"
            }
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
    /// There is no file at that path.
    #[error("does not exist")]
    Missing,
    /// The file exists but reading it failed.
    #[error("cannot be read: {0}")]
    Unreadable(std::io::Error),
    /// The file is not PEM; the parser's reason.
    #[error("is not PEM: {0}")]
    NotPem(String),
    /// The file is PEM but holds no block of the kind named.
    #[error("holds no {0}")]
    NothingUsable(&'static str),
    /// The key parsed but cannot be used; why.
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
    /// The server refused our client certificate (or demanded one we did not have); the alert.
    ClientCertRejected(String),
    /// The server hung up in the middle of the handshake.
    ClosedDuringHandshake,
    /// The server demands a client certificate, and this mode has none (e.g. port 8883).
    ClientCertRequired,
    /// Anything else rustls reported.
    Other(String),
}

/// Where a connection attempt was when its deadline passed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Looking the endpoint's name up.
    DnsLookup,
    /// TCP connect or TLS handshake: the server's certificate never arrived.
    TlsHandshake,
    /// TLS is up (the server sent its certificate), but no CONNACK came.
    Connack,
    /// A timeout reported by the operating system or rumqttc while connecting.
    Connecting,
    /// Sending DISCONNECT.
    Disconnect,
}

/// Why `--authorizer-signature` is not a base64 signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureProblem {
    /// The value is empty.
    #[error("it is empty")]
    Empty,
    /// It contains `%` but does not URL-decode to text.
    #[error("it contains '%' but is not valid URL-encoding")]
    BadPercentEncoding,
    /// A character outside `A-Z a-z 0-9 + / =`; its 1-based position (after URL-decoding).
    #[error("character {0} is not in the base64 alphabet (A-Z a-z 0-9 + / =)")]
    InvalidCharacter(usize),
    /// The length or the padding cannot be base64.
    #[error("its length or padding is not that of base64")]
    InvalidLength,
}

/// Which AWS profile file a credentials problem is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProfileFileKind {
    /// `~/.aws/credentials`, or `AWS_SHARED_CREDENTIALS_FILE`.
    Credentials,
    /// `~/.aws/config`, or `AWS_CONFIG_FILE`.
    Config,
}

impl ProfileFileKind {
    /// The environment variable that overrides this file's path.
    pub fn variable(self) -> &'static str {
        match self {
            ProfileFileKind::Credentials => "AWS_SHARED_CREDENTIALS_FILE",
            ProfileFileKind::Config => "AWS_CONFIG_FILE",
        }
    }

    fn name(self) -> &'static str {
        match self {
            ProfileFileKind::Credentials => "credentials file",
            ProfileFileKind::Config => "config file",
        }
    }
}

/// Why the AWS credential chain found no credentials.
#[derive(Debug, PartialEq, Eq)]
pub enum CredentialsProblem {
    /// Nothing in the chain had credentials; what the chain says, on one line.
    NoneFound(String),
    /// A profile file named by its environment variable does not exist (one or both).
    MissingFiles(Vec<(ProfileFileKind, PathBuf)>),
    /// `AWS_PROFILE` names a profile that no profile file defines.
    ProfileNotFound {
        /// The value of `AWS_PROFILE`.
        profile: String,
        /// The profile files that exist and were read.
        searched: Vec<PathBuf>,
        /// The default profile files that do not exist.
        absent: Vec<PathBuf>,
        /// The profiles those files do define, sorted.
        defined: Vec<String>,
    },
}

/// Every way a sample can fail. `Display` is the one-line cause; secrets are never in it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A command-line value that clap could not check by itself. Exit code 2.
    #[error("{0}")]
    Usage(String),

    /// `--authorizer-signature` is not base64. Exit code 2; the value itself is never shown.
    #[error("--authorizer-signature is not base64: {0}")]
    BadSignature(SignatureProblem),

    /// A PEM file given on the command line cannot be used.
    #[error("the {} {} {problem}", .which.describe(), .path.display())]
    File {
        /// Which file (and so which flag).
        which: PemFile,
        /// The path as given.
        path: PathBuf,
        /// What is wrong with it.
        problem: FileProblem,
    },

    /// `--key` is not the private key of `--cert`.
    #[error("the private key {} does not belong to the certificate {}", .key.display(), .cert.display())]
    KeyMismatch {
        /// `--cert`
        cert: PathBuf,
        /// `--key`
        key: PathBuf,
    },

    /// The endpoint's name does not resolve.
    #[error("could not resolve host name '{host}': {reason}")]
    Dns {
        /// The endpoint host name.
        host: String,
        /// The resolver's reason.
        reason: String,
    },

    /// Nothing listens at the endpoint and port.
    #[error("connection to {host}:{port} was refused")]
    Refused {
        /// The endpoint host name.
        host: String,
        /// The TCP port.
        port: u16,
    },

    /// The deadline (`--timeout`) passed.
    #[error("{}", timeout_cause(*.stage, *.after))]
    Timeout {
        /// The whole attempt's bound.
        after: Duration,
        /// Where the attempt was.
        stage: Stage,
    },

    /// The TLS handshake failed.
    #[error("{}", tls_cause(.0))]
    Tls(TlsFailure),

    /// The TLS client configuration could not be built.
    #[error("TLS setup failed: {0}")]
    TlsSetup(String),

    /// The server hung up after TLS without sending CONNACK.
    #[error("the server closed the connection without answering CONNECT (no CONNACK)")]
    ClosedWithoutConnack,

    /// An MQTT 5 CONNACK with a failure reason code.
    #[error("the server refused the connection: CONNACK {}", connack_cause(*.code, .reason))]
    Refused5 {
        /// The reason code.
        code: u8,
        /// The reason string, if the server sent one.
        reason: String,
    },

    /// An MQTT 3.1.1 CONNACK with a failure return code.
    #[error("the server refused the connection: CONNACK return code {code} ({})", connack311_name(*.code))]
    Refused311 {
        /// The return code.
        code: u8,
    },

    /// The server answered CONNECT with another packet than CONNACK.
    #[error("expected CONNACK, the server sent {0}")]
    UnexpectedPacket(&'static str),

    /// The WebSocket upgrade got an HTTP error.
    #[error("the WebSocket upgrade was refused with HTTP {status}{}", http_detail(.message))]
    WebSocketHttp {
        /// The HTTP status code.
        status: u16,
        /// The server's message, if it sent a short one.
        message: String,
    },

    /// The AWS credential chain found no credentials (SigV4).
    #[error("no AWS credentials found: {}", credentials_cause(.0))]
    NoCredentials(CredentialsProblem),

    /// Signing the authorizer token failed (the random number generator, or an unusable key).
    #[error("signing the token with --authorizer-private-key failed")]
    Signing,

    /// The server sent DISCONNECT; its reason.
    #[error("the server disconnected: {0}")]
    Disconnected(String),

    /// Sending DISCONNECT failed; rumqttc's reason.
    #[error("disconnecting failed: {0}")]
    Disconnecting(String),

    /// The async runtime could not start.
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),

    /// `--proxy-password-file` cannot be used.
    #[error("the proxy password file (--proxy-password-file) {} {problem}", .path.display())]
    ProxyPasswordFile {
        /// The path as given.
        path: PathBuf,
        /// What is wrong with it.
        problem: FileProblem,
    },

    /// The proxy's host name does not resolve.
    #[error("could not resolve the host name of the proxy {proxy}: {reason}")]
    ProxyDns {
        /// The proxy.
        proxy: ProxyName,
        /// The resolver's reason.
        reason: String,
    },

    /// No TCP connection to the proxy (refused, unreachable, timed out).
    #[error("could not connect to the proxy {proxy}: {reason}")]
    ProxyUnreachable {
        /// The proxy.
        proxy: ProxyName,
        /// Why, in the operating system's words.
        reason: String,
    },

    /// The proxy answered CONNECT with another HTTP status than 200.
    #[error("the proxy {proxy} refused to open a tunnel to {target}: HTTP {status}{}", status_phrase(*.status))]
    ProxyStatus {
        /// The proxy.
        proxy: ProxyName,
        /// The endpoint `host:port` asked for.
        target: String,
        /// The HTTP status code.
        status: u16,
    },

    /// The proxy closed the connection before answering CONNECT.
    #[error("the proxy {proxy} closed the connection without answering CONNECT to {target}")]
    ProxyClosed {
        /// The proxy.
        proxy: ProxyName,
        /// The endpoint `host:port` asked for.
        target: String,
    },

    /// The proxy's answer to CONNECT is not an HTTP response we can read.
    #[error(
        "the proxy {proxy} answered CONNECT with something that is not an HTTP response ({detail})"
    )]
    ProxyBadAnswer {
        /// The proxy.
        proxy: ProxyName,
        /// What is wrong with the answer.
        detail: String,
    },

    /// TLS to an `https://` proxy failed.
    #[error("TLS to the proxy {proxy} failed: {detail}")]
    ProxyTls {
        /// The proxy.
        proxy: ProxyName,
        /// rustls' reason.
        detail: String,
    },

    /// The deadline passed before the endpoint's TLS answered through the proxy.
    #[error("no answer within {}s through the proxy {proxy}: neither the tunnel to {target} nor the TLS handshake inside it completed", .after.as_secs())]
    ProxyTimeout {
        /// The proxy.
        proxy: ProxyName,
        /// The endpoint `host:port`.
        target: String,
        /// The whole attempt's bound.
        after: Duration,
    },

    /// The tunnel was opened, then closed during the endpoint's TLS handshake.
    #[error(
        "the connection through the proxy {proxy} closed during the TLS handshake with {target}"
    )]
    ProxyTunnelClosed {
        /// The proxy.
        proxy: ProxyName,
        /// The endpoint `host:port`.
        target: String,
    },

    /// A failure none of the above describes; the library's own message.
    #[error("{0}")]
    Other(String),
}

impl Error {
    /// The process exit code for this failure: 2 for usage errors, 1 for everything else.
    pub fn exit_code(&self) -> u8 {
        if self.is_usage() {
            2
        } else {
            1
        }
    }

    /// Whether this is a mistake on the command line, found before connecting.
    pub(crate) fn is_usage(&self) -> bool {
        matches!(self, Error::Usage(_) | Error::BadSignature(_))
    }

    /// The user-facing cause, with every registered secret masked.
    pub fn cause(&self) -> String {
        secrets::redact(&self.to_string())
    }

    /// One line saying what to check, for this failure in this authentication mode.
    pub fn hint(&self, mode: AuthMode) -> String {
        match self {
            Error::Usage(_) => "run with --help to see the options".into(),
            Error::BadSignature(_) => "pass the signature as `openssl base64 -A` prints it \
                 (standard base64 on one line; URL-encoded is fine too), \
                 or let the sample sign with --authorizer-private-key"
                .into(),
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
            Error::Timeout { stage, .. } => timeout_hint(*stage, mode),
            Error::Tls(failure) => tls_hint(failure, mode),
            Error::TlsSetup(_) => "run again with RUST_LOG=debug for the TLS details".into(),
            Error::ClosedWithoutConnack => closed_hint(mode),
            Error::Refused5 { code, .. } => connack_hint(*code, mode),
            Error::Refused311 { code } => match code {
                4 => credentials_hint(mode),
                2 => "the client id was refused: use at most 128 bytes, not starting with $GEN/"
                    .into(),
                _ => not_authorized_hint(mode),
            },
            Error::UnexpectedPacket(_) => {
                "check --endpoint and --port: this server does not speak MQTT as AWS IoT Core does"
                    .into()
            }
            Error::WebSocketHttp { status, .. } => websocket_hint(*status, mode),
            Error::NoCredentials(problem) => credentials_problem_hint(problem),
            Error::Signing => "check that --authorizer-private-key is an RSA key of 2048 to \
                 8192 bits, or pass a ready-made --authorizer-signature instead"
                .into(),
            Error::Disconnected(_) => {
                "another client with the same --client-id may have taken over the session".into()
            }
            Error::ProxyPasswordFile { problem, .. } => match problem {
                FileProblem::Missing | FileProblem::Unreadable(_) => {
                    "check the path and permissions of --proxy-password-file".into()
                }
                _ => "put the proxy password on the first line of --proxy-password-file".into(),
            },
            Error::ProxyDns { proxy, .. } => format!(
                "check the proxy's host name in {} ({})",
                proxy.settings(),
                proxy.url
            ),
            Error::ProxyUnreachable { proxy, .. } => format!(
                "check that a proxy runs at {} (named by {})",
                proxy.url,
                proxy.settings()
            ),
            Error::ProxyStatus {
                proxy,
                target,
                status,
            } => proxy_status_hint(proxy, target, *status),
            Error::ProxyClosed { proxy, .. } | Error::ProxyBadAnswer { proxy, .. } => format!(
                "check that {} is an HTTP proxy that allows CONNECT ({}); a SOCKS proxy, or an \
                 https:// proxy reached as http://, answers like this",
                proxy.url,
                proxy.settings()
            ),
            Error::ProxyTls { proxy, .. } => format!(
                "if the proxy {} speaks plain HTTP, name it http://; otherwise pass the CA that \
                 signed its certificate with --proxy-ca-file",
                proxy.url
            ),
            Error::ProxyTimeout { proxy, target, .. } => format!(
                "check that the proxy {} is reachable and can reach {target} ({}), or raise \
                 --timeout",
                proxy.url,
                proxy.settings()
            ),
            Error::ProxyTunnelClosed { proxy, .. } => format!(
                "the proxy {} or the endpoint behind it hung up: check --port ({}) and whether \
                 the proxy allows TLS to pass through untouched",
                proxy.url,
                match mode {
                    AuthMode::Mtls => "mTLS uses 8883, or 443 with ALPN x-amzn-mqtt-ca",
                    _ => "this mode uses 443",
                }
            ),
            Error::Disconnecting(_) | Error::Runtime(_) | Error::Other(_) => {
                "run again with RUST_LOG=debug for details".into()
            }
        }
    }
}

/// The reason phrase of the statuses a proxy answers CONNECT with, after a space.
fn status_phrase(status: u16) -> String {
    http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .map(|r| format!(" {r}"))
        .unwrap_or_default()
}

fn proxy_status_hint(proxy: &ProxyName, target: &str, status: u16) -> String {
    match (status, &proxy.user) {
        // tinyproxy answers wrong credentials with 401 rather than 407.
        (401 | 407, Some(user)) => format!(
            "the proxy {} did not accept the user '{user}' and its password: check {}",
            proxy.url,
            proxy.credential_settings()
        ),
        (401 | 407, None) => format!(
            "the proxy {} wants a user name and password: pass {}",
            proxy.url,
            proxy.credential_settings()
        ),
        (403, _) => format!(
            "the proxy {} does not allow tunnels to {target}: many proxies allow CONNECT to \
             port 443 only (try --port 443), or ask its administrator to allow the endpoint",
            proxy.url
        ),
        (500 | 502 | 503 | 504, _) => format!(
            "the proxy {} could not reach {target} for you: check --endpoint and --port, and \
             that the proxy's network reaches AWS IoT Core",
            proxy.url
        ),
        _ => format!(
            "check that {} is an HTTP proxy that allows CONNECT ({})",
            proxy.url,
            proxy.settings()
        ),
    }
}

fn timeout_cause(stage: Stage, after: Duration) -> String {
    let secs = after.as_secs();
    match stage {
        Stage::DnsLookup => format!("the DNS lookup did not finish within {secs}s"),
        Stage::TlsHandshake => format!(
            "the TLS handshake did not complete within {secs}s (the server sent no TLS answer)"
        ),
        Stage::Connack => format!(
            "no CONNACK within {secs}s: the TLS connection is up, but the server did not answer CONNECT"
        ),
        Stage::Connecting => format!("no answer within {secs}s while connecting"),
        Stage::Disconnect => format!("sending DISCONNECT did not finish within {secs}s"),
    }
}

fn timeout_hint(stage: Stage, mode: AuthMode) -> String {
    match (stage, mode) {
        (Stage::DnsLookup, _) => "check this machine's DNS resolver, or raise --timeout".into(),
        (Stage::TlsHandshake, AuthMode::Mtls) => {
            "is this a TLS endpoint, and the right port? AWS IoT Core serves mTLS on 8883 and 443; \
             a firewall that silently drops port 8883 looks the same (try --port 443)"
                .into()
        }
        (Stage::TlsHandshake, _) => "is this a TLS endpoint, and the right port? AWS IoT Core \
             serves this mode on port 443; a firewall that silently drops the port looks the same"
            .into(),
        (Stage::Connack, AuthMode::CustomAuthUnsigned | AuthMode::CustomAuthSigned) => {
            "check that --endpoint and --port name AWS IoT Core, or raise --timeout \
             (a slow authorizer Lambda delays CONNACK)"
                .into()
        }
        (Stage::Connack, _) => {
            "check that --endpoint and --port name AWS IoT Core, or raise --timeout".into()
        }
        (Stage::Connecting | Stage::Disconnect, _) => "check that the endpoint is reachable \
             from here (firewalls often block 8883; port 443 usually passes), or raise --timeout"
            .into(),
    }
}

fn credentials_cause(problem: &CredentialsProblem) -> String {
    match problem {
        CredentialsProblem::NoneFound(detail) => detail.clone(),
        CredentialsProblem::MissingFiles(files) => {
            let named: Vec<String> = files
                .iter()
                .map(|(kind, path)| {
                    format!(
                        "the {} {} ({})",
                        kind.name(),
                        path.display(),
                        kind.variable()
                    )
                })
                .collect();
            let verb = if files.len() == 1 {
                "does not exist"
            } else {
                "do not exist"
            };
            format!("{} {verb}", named.join(" and "))
        }
        CredentialsProblem::ProfileNotFound {
            profile,
            searched,
            absent,
            ..
        } => {
            if searched.is_empty() {
                let absent: Vec<String> = absent.iter().map(|p| p.display().to_string()).collect();
                format!(
                    "profile '{profile}' (AWS_PROFILE) not found: there is no {}",
                    absent.join(" and no ")
                )
            } else {
                let searched: Vec<String> =
                    searched.iter().map(|p| p.display().to_string()).collect();
                format!(
                    "profile '{profile}' (AWS_PROFILE) not found in {}",
                    searched.join(", ")
                )
            }
        }
    }
}

fn credentials_problem_hint(problem: &CredentialsProblem) -> String {
    match problem {
        CredentialsProblem::NoneFound(_) => "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY \
             (and AWS_SESSION_TOKEN for temporary keys), or AWS_PROFILE, or run `aws configure`"
            .into(),
        CredentialsProblem::MissingFiles(files) => {
            let variables: Vec<&str> = files.iter().map(|(kind, _)| kind.variable()).collect();
            let (them, files_word) = if files.len() == 1 {
                ("it", "an existing file")
            } else {
                ("them", "existing files")
            };
            format!(
                "point {} at {files_word} or unset {them}, \
                 or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
                variables.join(" and ")
            )
        }
        CredentialsProblem::ProfileNotFound {
            profile, defined, ..
        } => {
            if defined.is_empty() {
                format!(
                    "no profile is defined: create it with `aws configure --profile {profile}`, \
                     or unset AWS_PROFILE"
                )
            } else {
                let names: Vec<String> = defined.iter().map(|p| format!("'{p}'")).collect();
                format!(
                    "check the spelling of AWS_PROFILE; the profiles defined are {} \
                     (`aws configure list-profiles`)",
                    names.join(", ")
                )
            }
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
fn connack_reason_name(code: u8) -> &'static str {
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
