//! The connect-then-disconnect routine every sample runs, on rumqttc (MQTT 5 and 3.1.1).
//!
//! [`connect`] opens TLS or a WebSocket over TLS, sends CONNECT and waits for CONNACK, all within
//! one deadline (a host name that does not resolve is reported as one).
//! [`Session::disconnect`] sends DISCONNECT and waits until it has been written out.
//! Whatever goes wrong is turned into an [`Error`] a person can act on.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{TlsConfiguration, Transport};
use rustls::ClientConfig;
use tokio::time::{timeout_at, Instant};

use crate::endpoint::host_header;
use crate::error::{AuthMode, Error, TlsFailure};

/// MQTT protocol version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum MqttVersion {
    /// MQTT 5
    #[value(name = "5")]
    V5,
    /// MQTT 3.1.1
    #[value(name = "3.1.1", alias = "311")]
    V311,
}

impl std::fmt::Display for MqttVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MqttVersion::V5 => "5",
            MqttVersion::V311 => "3.1.1",
        })
    }
}

/// Rewrites the WebSocket upgrade request just before it is sent (SigV4 presigning).
pub type RequestModifier = Arc<
    dyn Fn(http::Request<()>) -> Pin<Box<dyn Future<Output = http::Request<()>> + Send>>
        + Send
        + Sync,
>;

/// Outgoing QoS 1 publishes that may wait for PUBACK at once: AWS IoT Core's limit.
const OUTGOING_INFLIGHT: u16 = 100;

/// How MQTT travels over TLS.
#[derive(Clone)]
pub enum Carrier {
    /// MQTT directly over TLS.
    Tls,
    /// MQTT over a WebSocket at `wss://<host>[:port]/mqtt`, optionally signing the upgrade.
    WebSocket { sign: Option<RequestModifier> },
}

/// Everything one connection attempt needs.
#[derive(Clone)]
pub struct ConnectionSpec {
    pub mode: AuthMode,
    pub host: String,
    pub port: u16,
    pub tls: Arc<ClientConfig>,
    pub carrier: Carrier,
    pub client_id: String,
    pub mqtt_version: MqttVersion,
    pub username: Option<String>,
    pub password: Option<String>,
    pub keep_alive: Duration,
    /// Bound on the whole attempt, connect and disconnect together.
    pub timeout: Duration,
}

impl ConnectionSpec {
    fn url(&self) -> String {
        format!("wss://{}/mqtt", host_header(&self.host, self.port))
    }

    fn describe(&self) -> String {
        let carrier = match &self.carrier {
            Carrier::Tls => "MQTT over TLS",
            Carrier::WebSocket { .. } => "MQTT over WebSocket",
        };
        let alpn = self
            .tls
            .alpn_protocols
            .first()
            .map(|p| format!(", ALPN {}", String::from_utf8_lossy(p)))
            .unwrap_or_default();
        format!(
            "{}:{} ({carrier}{alpn}, MQTT {}) as client id '{}'",
            self.host, self.port, self.mqtt_version, self.client_id
        )
    }
}

/// A connected MQTT session; [`Session::disconnect`] ends it cleanly.
pub struct Session {
    inner: SessionInner,
    deadline: Instant,
    timeout: Duration,
}

enum SessionInner {
    V5(rumqttc::v5::AsyncClient, Box<rumqttc::v5::EventLoop>),
    V311(rumqttc::AsyncClient, Box<rumqttc::EventLoop>),
}

/// Connect and wait for a successful CONNACK.
pub async fn connect(spec: &ConnectionSpec) -> Result<Session, Error> {
    let deadline = Instant::now() + spec.timeout;
    log::info!("connecting to {}", spec.describe());
    if let Some(u) = &spec.username {
        log::debug!("MQTT username: {}", crate::secrets::redact(u));
    }

    let transport = match &spec.carrier {
        Carrier::Tls => Transport::tls_with_config(TlsConfiguration::Rustls(spec.tls.clone())),
        Carrier::WebSocket { .. } => {
            Transport::wss_with_config(TlsConfiguration::Rustls(spec.tls.clone()))
        }
    };
    let broker = match &spec.carrier {
        Carrier::Tls => spec.host.clone(),
        Carrier::WebSocket { .. } => spec.url(),
    };
    // rumqttc has its own connection timeout; ours is the bound, so give it at least as much.
    let secs = spec.timeout.as_secs() + 1;

    let inner = match spec.mqtt_version {
        MqttVersion::V5 => {
            let mut opts = rumqttc::v5::MqttOptions::new(&spec.client_id, broker, spec.port);
            opts.set_transport(transport)
                .set_keep_alive(spec.keep_alive)
                .set_clean_start(true)
                .set_connection_timeout(secs)
                // rumqttc sizes its outgoing in-flight table for this many QoS 1 publishes, by
                // default 65535 (14 MiB, most of the process). AWS IoT Core allows 100 unacked
                // per direction, and a connect sample sends none.
                .set_outgoing_inflight_upper_limit(OUTGOING_INFLIGHT);
            let mut net = opts.network_options();
            // CONNECT and DISCONNECT are tiny writes: without TCP_NODELAY, Nagle's algorithm and
            // the server's delayed ACK add ~40 ms to every run.
            net.set_tcp_nodelay(true);
            opts.set_network_options(net);
            if spec.username.is_some() || spec.password.is_some() {
                opts.set_credentials(
                    spec.username.clone().unwrap_or_default(),
                    spec.password.clone().unwrap_or_default(),
                );
            }
            if let Carrier::WebSocket { sign: Some(sign) } = &spec.carrier {
                let sign = sign.clone();
                opts.set_request_modifier(move |req| sign(req));
            }
            let (client, eventloop) = rumqttc::v5::AsyncClient::new(opts, 4);
            SessionInner::V5(client, Box::new(eventloop))
        }
        MqttVersion::V311 => {
            let mut opts = rumqttc::MqttOptions::new(&spec.client_id, broker, spec.port);
            opts.set_transport(transport)
                .set_keep_alive(spec.keep_alive)
                .set_clean_session(true);
            if spec.username.is_some() || spec.password.is_some() {
                opts.set_credentials(
                    spec.username.clone().unwrap_or_default(),
                    spec.password.clone().unwrap_or_default(),
                );
            }
            if let Carrier::WebSocket { sign: Some(sign) } = &spec.carrier {
                let sign = sign.clone();
                opts.set_request_modifier(move |req| sign(req));
            }
            opts.set_inflight(OUTGOING_INFLIGHT);
            let (client, mut eventloop) = rumqttc::AsyncClient::new(opts, 4);
            let mut net = eventloop.network_options();
            net.set_connection_timeout(secs);
            net.set_tcp_nodelay(true);
            eventloop.set_network_options(net);
            SessionInner::V311(client, Box::new(eventloop))
        }
    };

    let mut session = Session {
        inner,
        deadline,
        timeout: spec.timeout,
    };
    let timed_out = || Error::Timeout {
        after: spec.timeout,
        stage: "waiting for CONNACK",
    };
    match &mut session.inner {
        SessionInner::V5(_, eventloop) => loop {
            use rumqttc::v5::{mqttbytes::v5::Packet, Event};
            match timeout_at(deadline, eventloop.poll()).await {
                Err(_) => return Err(timed_out()),
                Ok(Err(e)) => return Err(unless_dns(classify_v5(e, spec), spec, deadline).await),
                Ok(Ok(Event::Incoming(Packet::ConnAck(ack)))) => {
                    log::debug!("CONNACK: {:?}", ack.code);
                    break;
                }
                Ok(Ok(other)) => log::trace!("event before CONNACK: {other:?}"),
            }
        },
        SessionInner::V311(_, eventloop) => loop {
            use rumqttc::{Event, Packet};
            match timeout_at(deadline, eventloop.poll()).await {
                Err(_) => return Err(timed_out()),
                Ok(Err(e)) => return Err(unless_dns(classify_v4(e, spec), spec, deadline).await),
                Ok(Ok(Event::Incoming(Packet::ConnAck(ack)))) => {
                    log::debug!("CONNACK: {:?}", ack.code);
                    break;
                }
                Ok(Ok(other)) => log::trace!("event before CONNACK: {other:?}"),
            }
        },
    }
    Ok(session)
}

impl Session {
    /// Send DISCONNECT and wait until it has gone out, within what is left of the deadline.
    pub async fn disconnect(mut self) -> Result<(), Error> {
        let deadline = self.deadline;
        let timed_out = Error::Timeout {
            after: self.timeout,
            stage: "sending DISCONNECT",
        };
        let result: Result<(), String> = match &mut self.inner {
            SessionInner::V5(client, eventloop) => {
                use rumqttc::v5::Event;
                use rumqttc::Outgoing;
                if let Err(e) = client.disconnect().await {
                    return Err(Error::Other(format!("disconnecting failed: {e}")));
                }
                loop {
                    match timeout_at(deadline, eventloop.poll()).await {
                        Err(_) => return Err(timed_out),
                        Ok(Ok(Event::Outgoing(Outgoing::Disconnect))) => break Ok(()),
                        Ok(Ok(_)) => continue,
                        Ok(Err(e)) => break Err(e.to_string()),
                    }
                }
            }
            SessionInner::V311(client, eventloop) => {
                use rumqttc::{Event, Outgoing};
                if let Err(e) = client.disconnect().await {
                    return Err(Error::Other(format!("disconnecting failed: {e}")));
                }
                loop {
                    match timeout_at(deadline, eventloop.poll()).await {
                        Err(_) => return Err(timed_out),
                        Ok(Ok(Event::Outgoing(Outgoing::Disconnect))) => break Ok(()),
                        Ok(Ok(_)) => continue,
                        Ok(Err(e)) => break Err(e.to_string()),
                    }
                }
            }
        };
        result.map_err(|e| Error::Other(format!("disconnecting failed: {e}")))?;
        log::info!("DISCONNECT sent");
        Ok(())
    }
}

/// A failure we could not name may be a name that does not resolve: rumqttc reports that as a
/// bare I/O error. Look the host up again to tell. Done only after a failure, so that a
/// successful connection costs one lookup (rumqttc's), not two.
async fn unless_dns(e: Error, spec: &ConnectionSpec, deadline: Instant) -> Error {
    if !matches!(e, Error::Other(_)) {
        return e;
    }
    match resolve(&spec.host, spec.port, deadline, spec.timeout).await {
        Err(dns @ Error::Dns { .. }) => dns,
        _ => e,
    }
}

/// Look the host up, so that a name that does not resolve is reported as exactly that.
async fn resolve(host: &str, port: u16, deadline: Instant, timeout: Duration) -> Result<(), Error> {
    match timeout_at(deadline, tokio::net::lookup_host((host, port))).await {
        Err(_) => Err(Error::Timeout {
            after: timeout,
            stage: "DNS lookup",
        }),
        Ok(Err(e)) => Err(Error::Dns {
            host: host.to_string(),
            reason: dns_reason(&e),
        }),
        Ok(Ok(mut addrs)) => match addrs.next() {
            Some(addr) => {
                log::debug!("{host} resolves to {}", addr.ip());
                Ok(())
            }
            None => Err(Error::Dns {
                host: host.to_string(),
                reason: "no addresses".into(),
            }),
        },
    }
}

fn dns_reason(e: &std::io::Error) -> String {
    let text = e.to_string();
    // "failed to lookup address information: Name or service not known" -> the part after ':'
    text.rsplit_once(": ")
        .map(|(_, r)| r.to_string())
        .unwrap_or(text)
}

fn classify_v5(e: rumqttc::v5::ConnectionError, spec: &ConnectionSpec) -> Error {
    use rumqttc::v5::mqttbytes::v5::Packet;
    use rumqttc::v5::{ConnectionError as C, StateError as S};
    match e {
        C::ConnectionRefused(code) => Error::Refused5 {
            code: v5_code(code),
            reason: String::new(),
        },
        C::Timeout(_) => Error::Timeout {
            after: spec.timeout,
            stage: "connecting",
        },
        C::MqttState(S::ConnectionAborted) => Error::ClosedWithoutConnack,
        C::MqttState(S::Io(io)) => classify_io(&io, spec),
        C::MqttState(S::Deserialization(rumqttc::v5::mqttbytes::Error::Io(io))) => {
            classify_io(&io, spec)
        }
        C::MqttState(S::ServerDisconnect {
            reason_code,
            reason_string,
        }) => Error::Disconnected(format!(
            "{reason_code:?}{}",
            reason_string.map(|r| format!(": {r}")).unwrap_or_default()
        )),
        C::NotConnAck(packet) => match *packet {
            Packet::Disconnect(d) => Error::Disconnected(format!(
                "{:?}{}",
                d.reason_code,
                d.properties
                    .and_then(|p| p.reason_string)
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            )),
            other => Error::Other(format!(
                "expected CONNACK, the server sent {:?}",
                packet_name_v5(&other)
            )),
        },
        C::Websocket(ws) => classify_ws(ws, spec),
        other => classify(&other, spec),
    }
}

fn classify_v4(e: rumqttc::ConnectionError, spec: &ConnectionSpec) -> Error {
    use rumqttc::{ConnectionError as C, StateError as S};
    match e {
        C::ConnectionRefused(code) => Error::Refused311 { code: code as u8 },
        C::NetworkTimeout | C::FlushTimeout => Error::Timeout {
            after: spec.timeout,
            stage: "connecting",
        },
        C::MqttState(S::ConnectionAborted) => Error::ClosedWithoutConnack,
        C::MqttState(S::Io(io)) => classify_io(&io, spec),
        C::MqttState(S::Deserialization(rumqttc::mqttbytes::Error::Io(io))) => {
            classify_io(&io, spec)
        }
        C::NotConnAck(packet) => {
            Error::Other(format!("expected CONNACK, the server sent {packet:?}"))
        }
        C::Websocket(ws) => classify_ws(ws, spec),
        other => classify(&other, spec),
    }
}

fn packet_name_v5(p: &rumqttc::v5::mqttbytes::v5::Packet) -> String {
    let debug = format!("{p:?}");
    debug
        .split(['(', ' ', '{'])
        .next()
        .unwrap_or("a packet")
        .to_string()
}

fn v5_code(code: rumqttc::v5::mqttbytes::v5::ConnectReturnCode) -> u8 {
    use rumqttc::v5::mqttbytes::v5::ConnectReturnCode as R;
    match code {
        R::Success => 0x00,
        R::UnspecifiedError => 0x80,
        R::MalformedPacket => 0x81,
        R::ProtocolError => 0x82,
        R::ImplementationSpecificError => 0x83,
        R::UnsupportedProtocolVersion => 0x84,
        R::ClientIdentifierNotValid => 0x85,
        R::BadUserNamePassword => 0x86,
        R::NotAuthorized => 0x87,
        R::ServerUnavailable => 0x88,
        R::ServerBusy => 0x89,
        R::Banned => 0x8A,
        R::BadAuthenticationMethod => 0x8C,
        R::TopicNameInvalid => 0x90,
        R::PacketTooLarge => 0x95,
        R::QuotaExceeded => 0x97,
        R::PayloadFormatInvalid => 0x99,
        R::RetainNotSupported => 0x9A,
        R::QoSNotSupported => 0x9B,
        R::UseAnotherServer => 0x9C,
        R::ServerMoved => 0x9D,
        R::ConnectionRateExceeded => 0x9F,
        // The protocol-version and client-id codes of the 3.1.1 numbering, should rumqttc map to them.
        R::RefusedProtocolVersion => 0x84,
        R::BadClientId => 0x85,
        R::ServiceUnavailable => 0x88,
    }
}

fn classify_ws(e: tungstenite::Error, spec: &ConnectionSpec) -> Error {
    match e {
        tungstenite::Error::Http(response) => {
            let status = response.status().as_u16();
            let message = response
                .body()
                .as_deref()
                .map(http_error_message)
                .unwrap_or_default();
            Error::WebSocketHttp { status, message }
        }
        tungstenite::Error::Io(io) => classify_io(&io, spec),
        tungstenite::Error::Tls(tls) => match std::error::Error::source(&tls) {
            Some(inner) => classify(inner, spec),
            None => Error::Tls(TlsFailure::Other(tls.to_string())),
        },
        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => {
            Error::ClosedWithoutConnack
        }
        other => classify(&other, spec),
    }
}

/// IoT Core answers a refused upgrade with a JSON body `{"message": ...}`; show its message,
/// or the body itself when it is short text.
fn http_error_message(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if let Some(start) = text.find("\"message\"") {
        let rest = &text[start + 9..];
        if let Some(open) = rest.find('"') {
            let rest = &rest[open + 1..];
            if let Some(close) = rest.find('"') {
                return rest[..close].to_string();
            }
        }
    }
    if text.len() <= 200 && !text.contains('\n') {
        text.to_string()
    } else {
        String::new()
    }
}

/// Walk an error and its causes for something we recognise: a rustls error, or an I/O error.
fn classify(e: &(dyn std::error::Error + 'static), spec: &ConnectionSpec) -> Error {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = current {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return classify_rustls(tls, spec);
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return classify_io(io, spec);
        }
        current = err.source();
    }
    Error::Other(e.to_string())
}

fn classify_io(io: &std::io::Error, spec: &ConnectionSpec) -> Error {
    use std::io::ErrorKind as K;
    if let Some(inner) = io.get_ref() {
        if let Some(tls) = inner.downcast_ref::<rustls::Error>() {
            return classify_rustls(tls, spec);
        }
    }
    match io.kind() {
        K::ConnectionRefused => Error::Refused {
            host: spec.host.clone(),
            port: spec.port,
        },
        K::TimedOut => Error::Timeout {
            after: spec.timeout,
            stage: "connecting",
        },
        K::UnexpectedEof if io.to_string().contains("handshake") => {
            Error::Tls(TlsFailure::ClosedDuringHandshake)
        }
        K::UnexpectedEof | K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe => {
            Error::ClosedWithoutConnack
        }
        _ => Error::Other(io.to_string()),
    }
}

fn classify_rustls(e: &rustls::Error, spec: &ConnectionSpec) -> Error {
    use rustls::{AlertDescription as A, CertificateError as CE};
    let failure = match e {
        rustls::Error::InvalidCertificate(ce) => match ce {
            CE::UnknownIssuer => TlsFailure::UnknownIssuer,
            CE::NotValidForName | CE::NotValidForNameContext { .. } => TlsFailure::NameMismatch,
            CE::Expired
            | CE::ExpiredContext { .. }
            | CE::NotValidYet
            | CE::NotValidYetContext { .. } => TlsFailure::ServerCertExpired,
            other => TlsFailure::Other(format!("the server certificate is invalid: {other:?}")),
        },
        rustls::Error::AlertReceived(alert) => match alert {
            A::BadCertificate
            | A::UnsupportedCertificate
            | A::CertificateRevoked
            | A::CertificateExpired
            | A::CertificateUnknown
            | A::UnknownCA
            | A::AccessDenied
            | A::CertificateRequired
                if spec.mode == AuthMode::Mtls =>
            {
                TlsFailure::ClientCertRejected(format!("{alert:?}"))
            }
            A::CertificateRequired => TlsFailure::ClientCertRequired,
            A::NoApplicationProtocol => TlsFailure::Other(
                "the server does not accept the ALPN protocol offered (check --port)".into(),
            ),
            other => TlsFailure::Other(format!("the server sent alert {other:?}")),
        },
        other => TlsFailure::Other(other.to_string()),
    };
    Error::Tls(failure)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iot_core_403_body_message_is_extracted() {
        let body = br#"{"message":"Signature expired: 20261122T112850Z is now earlier than 20261122T113850Z","traceId":"x"}"#;
        assert_eq!(
            http_error_message(body),
            "Signature expired: 20261122T112850Z is now earlier than 20261122T113850Z"
        );
        assert_eq!(http_error_message(b"Forbidden"), "Forbidden");
    }

    fn spec(mode: AuthMode) -> ConnectionSpec {
        ConnectionSpec {
            mode,
            host: "localhost".into(),
            port: 1,
            tls: crate::tls::client_config(&Default::default()).unwrap(),
            carrier: Carrier::Tls,
            client_id: "test-1".into(),
            mqtt_version: MqttVersion::V5,
            username: None,
            password: None,
            keep_alive: Duration::from_secs(30),
            timeout: Duration::from_secs(5),
        }
    }

    #[test]
    fn rustls_errors_inside_io_errors_are_recognised() {
        let io = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        let e = classify_io(&io, &spec(AuthMode::Mtls));
        assert!(matches!(e, Error::Tls(TlsFailure::UnknownIssuer)), "{e:?}");

        let io = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(rustls::AlertDescription::CertificateUnknown),
        );
        let e = classify_io(&io, &spec(AuthMode::Mtls));
        assert!(
            matches!(e, Error::Tls(TlsFailure::ClientCertRejected(_))),
            "{e:?}"
        );
    }

    #[test]
    fn eof_is_a_hangup_without_connack_but_handshake_eof_is_tls() {
        let io = std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "eof");
        assert!(matches!(
            classify_io(&io, &spec(AuthMode::Mtls)),
            Error::ClosedWithoutConnack
        ));
        let io = std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "tls handshake eof");
        assert!(matches!(
            classify_io(&io, &spec(AuthMode::Mtls)),
            Error::Tls(TlsFailure::ClosedDuringHandshake)
        ));
    }

    #[test]
    fn refused_io_names_host_and_port() {
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(
            classify_io(&io, &spec(AuthMode::Mtls)).cause(),
            "connection to localhost:1 was refused"
        );
    }

    #[tokio::test]
    async fn an_unnamed_failure_on_a_name_that_does_not_resolve_is_reported_as_dns() {
        // A first label of 64 bytes, one more than DNS allows: the resolver refuses it without
        // sending a query.
        let mut s = spec(AuthMode::Mtls);
        s.host = format!("{}.invalid", "a".repeat(64));
        let deadline = Instant::now() + s.timeout;
        let e = unless_dns(Error::Other("os error".into()), &s, deadline).await;
        assert!(
            e.cause()
                .starts_with(&format!("could not resolve host name '{}'", s.host)),
            "{e:?}"
        );
        // Failures that already have a name keep it, and a resolvable name keeps the original.
        let e = unless_dns(Error::ClosedWithoutConnack, &s, deadline).await;
        assert!(matches!(e, Error::ClosedWithoutConnack), "{e:?}");
        let e = unless_dns(
            Error::Other("os error".into()),
            &spec(AuthMode::Mtls),
            deadline,
        )
        .await;
        assert_eq!(e.cause(), "os error");
    }

    #[test]
    fn websocket_url_omits_port_443_and_keeps_others() {
        let mut s = spec(AuthMode::SigV4WebSocket);
        s.port = 443;
        assert_eq!(s.url(), "wss://localhost/mqtt");
        s.port = 8443;
        assert_eq!(s.url(), "wss://localhost:8443/mqtt");
    }
}
