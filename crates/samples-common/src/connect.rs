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
use tokio::time::{timeout_at, Instant};

use crate::endpoint::host_header;
use crate::error::{Error, Stage, TlsFailure};
use crate::mode::AuthMode;
use crate::proxy::Proxy;
use crate::tls::TlsClient;

/// MQTT protocol version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum MqttVersion {
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
pub(crate) type RequestModifier = Arc<
    dyn Fn(http::Request<()>) -> Pin<Box<dyn Future<Output = http::Request<()>> + Send>>
        + Send
        + Sync,
>;

/// Outgoing QoS 1 publishes that may wait for PUBACK at once: AWS IoT Core's limit.
const OUTGOING_INFLIGHT: u16 = 100;

/// How MQTT travels over TLS.
#[derive(Clone)]
pub(crate) enum Carrier {
    /// MQTT directly over TLS.
    Tls,
    /// MQTT over a WebSocket at `wss://<host>[:port]/mqtt`, optionally signing the upgrade.
    WebSocket { sign: Option<RequestModifier> },
}

/// Everything one connection attempt needs: built by the functions of `spec`, run by `run`.
#[derive(Clone)]
pub struct ConnectionSpec {
    pub(crate) mode: AuthMode,
    /// The HTTP proxy to tunnel through, if any.
    pub(crate) proxy: Option<Proxy>,
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) tls: TlsClient,
    pub(crate) carrier: Carrier,
    pub(crate) client_id: String,
    pub(crate) mqtt_version: MqttVersion,
    pub(crate) username: Option<String>,
    pub(crate) password: Option<String>,
    pub(crate) keep_alive: Duration,
    /// Bound on the whole attempt, connect and disconnect together.
    pub(crate) timeout: Duration,
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
            .config
            .alpn_protocols
            .first()
            .map(|p| format!(", ALPN {}", String::from_utf8_lossy(p)))
            .unwrap_or_default();
        let via = self
            .proxy
            .as_ref()
            .map(|p| format!(" through the proxy {}", p.name()))
            .unwrap_or_default();
        format!(
            "{}:{} ({carrier}{alpn}, MQTT {}) as client id '{}'{via}",
            self.host, self.port, self.mqtt_version, self.client_id
        )
    }

    /// The `host:port` the proxy is asked to CONNECT to: the endpoint's.
    fn target(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// A connected MQTT session; [`Session::disconnect`] ends it cleanly.
pub(crate) struct Session {
    inner: SessionInner,
    deadline: Instant,
    timeout: Duration,
}

enum SessionInner {
    V5(rumqttc::v5::AsyncClient, Box<rumqttc::v5::EventLoop>),
    V311(rumqttc::AsyncClient, Box<rumqttc::EventLoop>),
}

/// Connect and wait for a successful CONNACK.
pub(crate) async fn connect(spec: &ConnectionSpec) -> Result<Session, Error> {
    let deadline = Instant::now() + spec.timeout;
    spec.tls.progress.reset();
    log::info!("connecting to {}", spec.describe());
    if let Some(u) = &spec.username {
        log::debug!("MQTT username: {}", crate::secrets::redact(u));
    }

    let transport = match &spec.carrier {
        Carrier::Tls => {
            Transport::tls_with_config(TlsConfiguration::Rustls(spec.tls.config.clone()))
        }
        Carrier::WebSocket { .. } => {
            Transport::wss_with_config(TlsConfiguration::Rustls(spec.tls.config.clone()))
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
            if let Some(proxy) = &spec.proxy {
                opts.set_proxy(proxy.to_rumqttc());
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
            if let Some(proxy) = &spec.proxy {
                opts.set_proxy(proxy.to_rumqttc());
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
    // rumqttc does TCP, TLS and CONNECT in one step; the certificate verifier tells how far the
    // handshake got.
    let timed_out = || match &spec.proxy {
        Some(proxy) if !spec.tls.progress.server_answered() => Error::ProxyTimeout {
            proxy: proxy.name(),
            target: spec.target(),
            after: spec.timeout,
        },
        _ => Error::Timeout {
            after: spec.timeout,
            stage: if spec.tls.progress.server_answered() {
                Stage::Connack
            } else {
                Stage::TlsHandshake
            },
        },
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
    pub(crate) async fn disconnect(mut self) -> Result<(), Error> {
        let deadline = self.deadline;
        let timed_out = Error::Timeout {
            after: self.timeout,
            stage: Stage::Disconnect,
        };
        match &mut self.inner {
            SessionInner::V5(client, eventloop) => {
                use rumqttc::v5::Event;
                use rumqttc::Outgoing;
                if let Err(e) = client.disconnect().await {
                    return Err(Error::Disconnecting(e.to_string()));
                }
                loop {
                    match timeout_at(deadline, eventloop.poll()).await {
                        Err(_) => return Err(timed_out),
                        Ok(Ok(Event::Outgoing(Outgoing::Disconnect))) => break,
                        Ok(Ok(_)) => continue,
                        Ok(Err(e)) => return Err(Error::Disconnecting(e.to_string())),
                    }
                }
            }
            SessionInner::V311(client, eventloop) => {
                use rumqttc::{Event, Outgoing};
                if let Err(e) = client.disconnect().await {
                    return Err(Error::Disconnecting(e.to_string()));
                }
                loop {
                    match timeout_at(deadline, eventloop.poll()).await {
                        Err(_) => return Err(timed_out),
                        Ok(Ok(Event::Outgoing(Outgoing::Disconnect))) => break,
                        Ok(Ok(_)) => continue,
                        Ok(Err(e)) => return Err(Error::Disconnecting(e.to_string())),
                    }
                }
            }
        }
        log::info!("DISCONNECT sent");
        Ok(())
    }
}

/// A failure we could not name may be a name that does not resolve: rumqttc reports that as a
/// bare I/O error. Look the host up again to tell. Done only after a failure, so that a
/// successful connection costs one lookup (rumqttc's), not two.
async fn unless_dns(e: Error, spec: &ConnectionSpec, deadline: Instant) -> Error {
    if let Some(proxy) = &spec.proxy {
        // The proxy resolves the endpoint; only the proxy's own name is ours to look up.
        return match e {
            Error::ProxyUnreachable {
                proxy: name,
                reason,
            } if reason != REFUSED => {
                match resolve(&proxy.host, proxy.port, deadline, spec.timeout).await {
                    Err(Error::Dns { reason, .. }) => Error::ProxyDns {
                        proxy: name,
                        reason,
                    },
                    _ => Error::ProxyUnreachable {
                        proxy: name,
                        reason,
                    },
                }
            }
            other => other,
        };
    }
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
            stage: Stage::DnsLookup,
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

/// How a refused TCP connection to the proxy is worded.
const REFUSED: &str = "connection refused";

/// A failure on the way through the proxy: reaching it, TLS to it, or its answer to CONNECT.
/// rumqttc does not export its proxy error type, so its source tells which step failed.
fn classify_proxy(e: &(dyn std::error::Error + 'static), spec: &ConnectionSpec) -> Error {
    use async_http_proxy::HttpError as H;
    let Some(proxy) = spec.proxy.as_ref().map(Proxy::name) else {
        return Error::Other(e.to_string());
    };
    let Some(source) = e.source() else {
        return Error::Other(e.to_string());
    };
    let closed = || Error::ProxyClosed {
        proxy: proxy.clone(),
        target: spec.target(),
    };
    if let Some(io) = source.downcast_ref::<std::io::Error>() {
        let reason = match io.kind() {
            std::io::ErrorKind::ConnectionRefused => REFUSED.to_string(),
            std::io::ErrorKind::TimedOut => "timed out".to_string(),
            _ => io.to_string(),
        };
        return Error::ProxyUnreachable { proxy, reason };
    }
    if let Some(tls) = source.downcast_ref::<rumqttc::TlsError>() {
        let detail = match classify(tls, spec) {
            Error::Tls(failure) => tls_cause_detail(&failure),
            Error::ClosedWithoutConnack => "it closed the connection during the handshake".into(),
            other => other.to_string(),
        };
        return Error::ProxyTls { proxy, detail };
    }
    match source.downcast_ref::<H>() {
        Some(http) => match http {
            H::HttpCode200(status) => Error::ProxyStatus {
                proxy,
                target: spec.target(),
                status: *status,
            },
            H::EndOfFile => closed(),
            H::IoError(io)
                if matches!(
                    io.kind(),
                    std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::UnexpectedEof
                        | std::io::ErrorKind::BrokenPipe
                        | std::io::ErrorKind::ConnectionAborted
                ) =>
            {
                closed()
            }
            H::IoError(io) if io.kind() == std::io::ErrorKind::InvalidData => {
                Error::ProxyBadAnswer {
                    proxy,
                    detail: "it is not text".into(),
                }
            }
            H::MaximumResponseHeaderLengthExceeded(_) => Error::ProxyBadAnswer {
                proxy,
                detail: format!(
                    "its header is longer than {} bytes",
                    async_http_proxy::MAXIMUM_RESPONSE_HEADER_LENGTH
                ),
            },
            other => Error::ProxyBadAnswer {
                proxy,
                detail: escape_controls(&other.to_string()),
            },
        },
        None => Error::Other(e.to_string()),
    }
}

/// What a TLS failure with the proxy was, without the endpoint-specific wording.
fn tls_cause_detail(failure: &TlsFailure) -> String {
    match failure {
        TlsFailure::UnknownIssuer => "its certificate is not signed by a trusted CA".into(),
        TlsFailure::NameMismatch => "its certificate is not valid for its host name".into(),
        TlsFailure::ServerCertExpired => "its certificate is expired or not yet valid".into(),
        TlsFailure::ClosedDuringHandshake => "it closed the connection during the handshake".into(),
        TlsFailure::ClientCertRejected(a) => format!("it sent alert {a}"),
        TlsFailure::ClientCertRequired => "it requires a client certificate".into(),
        TlsFailure::Other(detail) => detail.clone(),
    }
}

/// Through a proxy, a hang-up in the endpoint's TLS handshake may be the proxy's doing: say so.
fn through_proxy(e: Error, spec: &ConnectionSpec) -> Error {
    match (&spec.proxy, e) {
        (Some(proxy), Error::Tls(TlsFailure::ClosedDuringHandshake)) => Error::ProxyTunnelClosed {
            proxy: proxy.name(),
            target: spec.target(),
        },
        (_, e) => e,
    }
}

fn classify_v5(e: rumqttc::v5::ConnectionError, spec: &ConnectionSpec) -> Error {
    through_proxy(classify_v5_direct(e, spec), spec)
}

fn classify_v4(e: rumqttc::ConnectionError, spec: &ConnectionSpec) -> Error {
    through_proxy(classify_v4_direct(e, spec), spec)
}

fn classify_v5_direct(e: rumqttc::v5::ConnectionError, spec: &ConnectionSpec) -> Error {
    use rumqttc::v5::mqttbytes::v5::Packet;
    use rumqttc::v5::{ConnectionError as C, StateError as S};
    match e {
        C::ConnectionRefused(code) => Error::Refused5 {
            code: v5_code(code),
            reason: String::new(),
        },
        C::Timeout(_) => Error::Timeout {
            after: spec.timeout,
            stage: Stage::Connecting,
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
            other => Error::UnexpectedPacket(packet_name_v5(&other)),
        },
        C::Websocket(ws) => classify_ws(ws, spec),
        C::Proxy(ref proxy) => classify_proxy(proxy, spec),
        other => classify(&other, spec),
    }
}

fn classify_v4_direct(e: rumqttc::ConnectionError, spec: &ConnectionSpec) -> Error {
    use rumqttc::{ConnectionError as C, StateError as S};
    match e {
        C::ConnectionRefused(code) => Error::Refused311 { code: code as u8 },
        C::NetworkTimeout | C::FlushTimeout => Error::Timeout {
            after: spec.timeout,
            stage: Stage::Connecting,
        },
        C::MqttState(S::ConnectionAborted) => Error::ClosedWithoutConnack,
        C::MqttState(S::Io(io)) => classify_io(&io, spec),
        C::MqttState(S::Deserialization(rumqttc::mqttbytes::Error::Io(io))) => {
            classify_io(&io, spec)
        }
        C::NotConnAck(packet) => Error::UnexpectedPacket(packet_name_v4(&packet)),
        C::Websocket(ws) => classify_ws(ws, spec),
        C::Proxy(ref proxy) => classify_proxy(proxy, spec),
        other => classify(&other, spec),
    }
}

/// The name of an MQTT 5 packet, as the specification writes it.
fn packet_name_v5(p: &rumqttc::v5::mqttbytes::v5::Packet) -> &'static str {
    use rumqttc::v5::mqttbytes::v5::Packet as P;
    match p {
        P::Auth(_) => "AUTH",
        P::Connect(..) => "CONNECT",
        P::ConnAck(_) => "CONNACK",
        P::Publish(_) => "PUBLISH",
        P::PubAck(_) => "PUBACK",
        P::PingReq(_) => "PINGREQ",
        P::PingResp(_) => "PINGRESP",
        P::Subscribe(_) => "SUBSCRIBE",
        P::SubAck(_) => "SUBACK",
        P::PubRec(_) => "PUBREC",
        P::PubRel(_) => "PUBREL",
        P::PubComp(_) => "PUBCOMP",
        P::Unsubscribe(_) => "UNSUBSCRIBE",
        P::UnsubAck(_) => "UNSUBACK",
        P::Disconnect(_) => "DISCONNECT",
    }
}

/// The name of an MQTT 3.1.1 packet, as the specification writes it.
fn packet_name_v4(p: &rumqttc::Packet) -> &'static str {
    use rumqttc::Packet as P;
    match p {
        P::Connect(_) => "CONNECT",
        P::ConnAck(_) => "CONNACK",
        P::Publish(_) => "PUBLISH",
        P::PubAck(_) => "PUBACK",
        P::PubRec(_) => "PUBREC",
        P::PubRel(_) => "PUBREL",
        P::PubComp(_) => "PUBCOMP",
        P::Subscribe(_) => "SUBSCRIBE",
        P::SubAck(_) => "SUBACK",
        P::Unsubscribe(_) => "UNSUBSCRIBE",
        P::UnsubAck(_) => "UNSUBACK",
        P::PingReq => "PINGREQ",
        P::PingResp => "PINGRESP",
        P::Disconnect => "DISCONNECT",
    }
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
/// or the body itself when it is short text on one line. Control characters are escaped: the
/// text comes from the server and goes to a terminal.
fn http_error_message(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    let message = serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .and_then(|json| json.get("message")?.as_str().map(str::to_string));
    match message {
        Some(message) => escape_controls(&message),
        None if text.len() <= 200 && !text.contains('\n') => escape_controls(text),
        None => String::new(),
    }
}

fn escape_controls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
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
            stage: Stage::Connecting,
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
            proxy: None,
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

    #[test]
    fn http_error_body_without_a_json_message_is_shown_only_when_short() {
        assert_eq!(
            http_error_message(br#"{"error":"nope"}"#),
            r#"{"error":"nope"}"#
        );
        assert_eq!(
            http_error_message(br#"{"message": 42}"#),
            r#"{"message": 42}"#
        );
        assert_eq!(http_error_message(b"line one\nline two"), "");
        assert_eq!(http_error_message("x".repeat(201).as_bytes()), "");
        assert_eq!(http_error_message(b"  Forbidden \n"), "Forbidden");
        assert_eq!(
            http_error_message(b"{\"message\":\"bad\\u001b[31m\"}"),
            "bad\\u{1b}[31m"
        );
    }

    #[test]
    fn an_unexpected_packet_is_named_as_the_specification_names_it() {
        let e = classify_v4(
            rumqttc::ConnectionError::NotConnAck(rumqttc::Packet::PingResp),
            &spec(AuthMode::Mtls),
        );
        assert!(matches!(e, Error::UnexpectedPacket("PINGRESP")), "{e:?}");
        assert_eq!(e.cause(), "expected CONNACK, the server sent PINGRESP");
        use rumqttc::v5::mqttbytes::v5::{Packet, PubAck, PubAckReason};
        let puback = Packet::PubAck(PubAck {
            pkid: 1,
            reason: PubAckReason::Success,
            properties: None,
        });
        assert_eq!(packet_name_v5(&puback), "PUBACK");
        let e = classify_v5(
            rumqttc::v5::ConnectionError::NotConnAck(Box::new(puback)),
            &spec(AuthMode::Mtls),
        );
        assert_eq!(e.cause(), "expected CONNACK, the server sent PUBACK");
    }

    /// A CA, and a server certificate for 127.0.0.1 that it signed, with its key.
    struct ServerIdentity {
        ca_file: std::path::PathBuf,
        cert: rustls_pki_types::CertificateDer<'static>,
        key: rustls_pki_types::PrivateKeyDer<'static>,
    }

    fn server_identity(name: &str) -> ServerIdentity {
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca =
            rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap())
                .unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        let dir = std::env::temp_dir().join(format!(
            "samples-common-connect-{}-{name}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let ca_file = dir.join("ca.pem");
        std::fs::write(&ca_file, ca.pem()).unwrap();
        ServerIdentity {
            ca_file,
            cert: cert.der().clone(),
            key: rustls_pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        }
    }

    /// A loopback port whose server accepts one TCP connection and then sends nothing.
    fn silent_server() -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            if let Ok((mut tcp, _)) = listener.accept() {
                // Hold the connection until the client gives up and closes it.
                let _ = std::io::copy(&mut tcp, &mut std::io::sink());
            }
        });
        port
    }

    /// A loopback port whose server completes the TLS handshake and then never answers CONNECT.
    fn tls_server_without_mqtt(identity: &ServerIdentity) -> u16 {
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![identity.cert.clone()], identity.key.clone_key())
        .unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let Ok((mut tcp, _)) = listener.accept() else {
                return;
            };
            let mut tls = rustls::ServerConnection::new(Arc::new(config)).unwrap();
            while tls.is_handshaking() {
                if tls.complete_io(&mut tcp).is_err() {
                    return;
                }
            }
            // Read CONNECT and whatever follows, answer nothing, until the client hangs up.
            let mut stream = rustls::Stream::new(&mut tls, &mut tcp);
            let _ = std::io::copy(&mut stream, &mut std::io::sink());
        });
        port
    }

    fn loopback_spec(
        mode: AuthMode,
        port: u16,
        ca_file: Option<&std::path::Path>,
    ) -> ConnectionSpec {
        let mut s = spec(mode);
        s.host = "127.0.0.1".into();
        s.port = port;
        s.timeout = Duration::from_secs(1);
        s.tls = crate::tls::client_config(&crate::tls::TlsOptions {
            ca_file,
            ..Default::default()
        })
        .unwrap();
        s
    }

    #[tokio::test]
    async fn a_server_that_never_answers_tls_is_a_tls_handshake_timeout() {
        let port = silent_server();
        let e = connect(&loopback_spec(AuthMode::CustomAuthUnsigned, port, None))
            .await
            .err()
            .expect("a silent server cannot connect");
        assert!(
            matches!(
                e,
                Error::Timeout {
                    stage: Stage::TlsHandshake,
                    ..
                }
            ),
            "{e:?}"
        );
        assert_eq!(
            e.cause(),
            "the TLS handshake did not complete within 1s (the server sent no TLS answer)"
        );
        assert_eq!(
            e.hint(AuthMode::CustomAuthUnsigned),
            "is this a TLS endpoint, and the right port? AWS IoT Core serves this mode on port \
             443; a firewall that silently drops the port looks the same"
        );
        assert_eq!(
            e.hint(AuthMode::Mtls),
            "is this a TLS endpoint, and the right port? AWS IoT Core serves mTLS on 8883 and \
             443; a firewall that silently drops port 8883 looks the same (try --port 443)"
        );
    }

    #[tokio::test]
    async fn a_tls_server_that_never_answers_connect_is_a_connack_timeout() {
        let identity = server_identity("no-connack");
        let port = tls_server_without_mqtt(&identity);
        let spec = loopback_spec(AuthMode::Mtls, port, Some(&identity.ca_file));
        let e = connect(&spec).await.err().expect("no CONNACK, no session");
        assert!(
            matches!(
                e,
                Error::Timeout {
                    stage: Stage::Connack,
                    ..
                }
            ),
            "{e:?}"
        );
        assert_eq!(
            e.cause(),
            "no CONNACK within 1s: the TLS connection is up, but the server did not answer CONNECT"
        );
        assert_eq!(
            e.hint(AuthMode::Mtls),
            "check that --endpoint and --port name AWS IoT Core, or raise --timeout"
        );
    }

    #[tokio::test]
    async fn the_progress_verifier_still_refuses_an_untrusted_server() {
        let identity = server_identity("untrusted");
        let port = tls_server_without_mqtt(&identity);
        // The built-in roots do not include the test CA.
        let e = connect(&loopback_spec(AuthMode::Mtls, port, None))
            .await
            .err()
            .expect("an untrusted server is refused");
        assert!(matches!(e, Error::Tls(TlsFailure::UnknownIssuer)), "{e:?}");
    }

    /// A loopback fake proxy that reads one CONNECT request, hands it to `answer`, and writes
    /// what `answer` returns (then closes). Returns its port and the request it read.
    fn fake_proxy(
        answer: fn(&str) -> Option<&'static [u8]>,
    ) -> (u16, std::sync::mpsc::Receiver<String>) {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let Ok((mut tcp, _)) = listener.accept() else {
                return;
            };
            let mut request = Vec::new();
            let mut byte = [0u8; 1];
            while !request.ends_with(b"\r\n\r\n") && request.len() < 8192 {
                match tcp.read(&mut byte) {
                    Ok(1) => request.push(byte[0]),
                    _ => return,
                }
            }
            let request = String::from_utf8_lossy(&request).into_owned();
            let reply = answer(&request);
            let _ = tx.send(request);
            match reply {
                Some(bytes) => {
                    let _ = tcp.write_all(bytes);
                }
                // Hold the connection, answering nothing, until the client hangs up.
                None => {
                    let _ = std::io::copy(&mut tcp, &mut std::io::sink());
                }
            }
        });
        (port, rx)
    }

    fn proxied(port: u16, user: Option<(&str, &str)>) -> ConnectionSpec {
        let mut s = loopback_spec(AuthMode::Mtls, 8883, None);
        s.host = "endpoint.example".into();
        s.proxy = Some(Proxy {
            scheme: crate::proxy::Scheme::Http,
            host: "127.0.0.1".into(),
            port,
            source: crate::proxy::ProxySource::Flags,
            credentials: user.map(|(u, p)| (u.to_string(), p.to_string())),
            tls: None,
        });
        s
    }

    async fn through(
        answer: fn(&str) -> Option<&'static [u8]>,
        user: Option<(&str, &str)>,
    ) -> (Error, String) {
        let (port, request) = fake_proxy(answer);
        let spec = proxied(port, user);
        let e = connect(&spec)
            .await
            .err()
            .expect("the fake proxy opens no tunnel");
        let request = request.recv().unwrap_or_default();
        (e, request)
    }

    #[tokio::test]
    async fn the_proxy_is_asked_for_the_endpoint_with_the_credentials_given() {
        let (e, request) = through(
            |_| Some(b"HTTP/1.1 403 Forbidden\r\n\r\n"),
            Some(("alice", "pw-1234")),
        )
        .await;
        let mut lines = request.lines();
        assert_eq!(lines.next(), Some("CONNECT endpoint.example:8883 HTTP/1.1"));
        assert!(
            request.contains("\r\nHost: endpoint.example:8883\r\n"),
            "{request}"
        );
        // base64("alice:pw-1234")
        assert!(
            request.contains("\r\nProxy-Authorization: Basic YWxpY2U6cHctMTIzNA==\r\n"),
            "{request}"
        );
        assert!(matches!(e, Error::ProxyStatus { status: 403, .. }), "{e:?}");
    }

    #[tokio::test]
    async fn a_403_says_the_proxy_refuses_the_endpoint_or_port() {
        let (e, _) = through(
            |_| Some(b"HTTP/1.1 403 Access violation\r\nServer: x\r\n\r\nbody"),
            None,
        )
        .await;
        let port = match &e {
            Error::ProxyStatus { proxy, .. } => proxy.url.rsplit(':').next().unwrap().to_string(),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            e.cause(),
            format!("the proxy http://127.0.0.1:{port} refused to open a tunnel to endpoint.example:8883: HTTP 403 Forbidden")
        );
        assert_eq!(
            e.hint(AuthMode::Mtls),
            format!("the proxy http://127.0.0.1:{port} does not allow tunnels to endpoint.example:8883: many proxies allow CONNECT to port 443 only (try --port 443), or ask its administrator to allow the endpoint")
        );
    }

    #[tokio::test]
    async fn a_407_asks_for_credentials_or_says_they_were_refused() {
        const ANSWER: fn(&str) -> Option<&'static [u8]> = |_| {
            Some(b"HTTP/1.0 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"p\"\r\n\r\n")
        };
        let (e, _) = through(ANSWER, None).await;
        assert!(matches!(e, Error::ProxyStatus { status: 407, .. }), "{e:?}");
        assert!(
            e.cause()
                .ends_with(": HTTP 407 Proxy Authentication Required"),
            "{}",
            e.cause()
        );
        let hint = e.hint(AuthMode::Mtls);
        assert!(hint.starts_with("the proxy http://127.0.0.1:"), "{hint}");
        assert!(hint.ends_with(" wants a user name and password: pass --proxy-user and PROXY_PASSWORD (or --proxy-password-file)"), "{hint}");

        let (e, _) = through(ANSWER, Some(("alice", "wrong-pw-1"))).await;
        let hint = e.hint(AuthMode::Mtls);
        assert!(hint.ends_with(" did not accept the user 'alice' and its password: check --proxy-user and PROXY_PASSWORD (or --proxy-password-file)"), "{hint}");
        assert!(!e.cause().contains("wrong-pw-1") && !hint.contains("wrong-pw-1"));
    }

    #[tokio::test]
    async fn a_502_says_the_proxy_cannot_reach_the_endpoint() {
        let (e, _) = through(|_| Some(b"HTTP/1.1 502 Bad Gateway\r\n\r\n"), None).await;
        assert!(
            e.cause().ends_with(
                "refused to open a tunnel to endpoint.example:8883: HTTP 502 Bad Gateway"
            ),
            "{}",
            e.cause()
        );
        assert!(e.hint(AuthMode::Mtls).ends_with(" could not reach endpoint.example:8883 for you: check --endpoint and --port, and that the proxy's network reaches AWS IoT Core"));
    }

    #[tokio::test]
    async fn a_proxy_that_hangs_up_or_answers_garbage_is_named() {
        let (e, _) = through(|_| Some(b""), None).await;
        assert!(matches!(e, Error::ProxyClosed { .. }), "{e:?}");
        assert!(
            e.cause().ends_with(
                " closed the connection without answering CONNECT to endpoint.example:8883"
            ),
            "{}",
            e.cause()
        );
        assert!(e
            .hint(AuthMode::Mtls)
            .contains("is an HTTP proxy that allows CONNECT (--proxy-host and --proxy-port)"));

        let (e, _) = through(|_| Some(b"\x05\x00garbage\r\n\r\n"), None).await;
        assert!(matches!(e, Error::ProxyBadAnswer { .. }), "{e:?}");
        assert!(
            e.cause()
                .contains(" answered CONNECT with something that is not an HTTP response ("),
            "{}",
            e.cause()
        );
    }

    #[tokio::test]
    async fn a_tunnel_closed_during_the_endpoint_handshake_names_the_proxy() {
        let (e, _) = through(
            |_| Some(b"HTTP/1.1 200 Connection established\r\n\r\n"),
            None,
        )
        .await;
        assert!(matches!(e, Error::ProxyTunnelClosed { .. }), "{e:?}");
        assert!(
            e.cause()
                .ends_with(" closed during the TLS handshake with endpoint.example:8883"),
            "{}",
            e.cause()
        );
        assert!(e
            .hint(AuthMode::Mtls)
            .contains("mTLS uses 8883, or 443 with ALPN x-amzn-mqtt-ca"));
    }

    #[tokio::test]
    async fn a_silent_proxy_is_a_timeout_through_the_proxy() {
        let (e, _) = through(|_| None, None).await;
        assert!(matches!(e, Error::ProxyTimeout { .. }), "{e:?}");
        assert!(
            e.cause()
                .starts_with("no answer within 1s through the proxy http://127.0.0.1:"),
            "{}",
            e.cause()
        );
        assert!(e.hint(AuthMode::Mtls).ends_with(
            "can reach endpoint.example:8883 (--proxy-host and --proxy-port), or raise --timeout"
        ));
    }

    #[tokio::test]
    async fn a_proxy_port_nothing_listens_on_is_refused() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let e = connect(&proxied(port, None)).await.err().unwrap();
        assert_eq!(
            e.cause(),
            format!("could not connect to the proxy http://127.0.0.1:{port}: connection refused")
        );
        assert_eq!(
            e.hint(AuthMode::Mtls),
            format!("check that a proxy runs at http://127.0.0.1:{port} (named by --proxy-host and --proxy-port)")
        );
    }

    #[tokio::test]
    async fn a_proxy_name_that_does_not_resolve_is_reported_as_dns() {
        let mut spec = proxied(3128, None);
        if let Some(p) = spec.proxy.as_mut() {
            p.host = format!("{}.invalid", "a".repeat(64));
        }
        let e = connect(&spec).await.err().unwrap();
        assert!(matches!(e, Error::ProxyDns { .. }), "{e:?}");
        assert!(
            e.cause()
                .starts_with("could not resolve the host name of the proxy http://aaaa"),
            "{}",
            e.cause()
        );
        assert!(e
            .hint(AuthMode::Mtls)
            .starts_with("check the proxy's host name in --proxy-host and --proxy-port"));
    }

    /// A loopback `https://` proxy: TLS with `identity`, then one CONNECT; answers 200 and
    /// relays to the target it was asked for. Returns its port and the CONNECT line it read.
    fn tls_relay_proxy(identity: &ServerIdentity) -> (u16, tokio::sync::oneshot::Receiver<String>) {
        use rumqttc::tokio_rustls::TlsAcceptor;
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![identity.cert.clone()], identity.key.clone_key())
        .unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let (tcp, _) = listener.accept().await.unwrap();
            let Ok(tls) = TlsAcceptor::from(Arc::new(config)).accept(tcp).await else {
                return;
            };
            let mut tls = BufReader::new(tls);
            let mut first = String::new();
            tls.read_line(&mut first).await.unwrap();
            let mut line = String::new();
            while line != "\r\n" {
                line.clear();
                if tls.read_line(&mut line).await.unwrap() == 0 {
                    return;
                }
            }
            let target = first.split(' ').nth(1).unwrap_or_default().to_string();
            let _ = tx.send(first.trim_end().to_string());
            let target = target.replace("endpoint.example", "127.0.0.1");
            let mut upstream = tokio::net::TcpStream::connect(target).await.unwrap();
            let mut tls = tls.into_inner();
            tls.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                .await
                .unwrap();
            let _ = tokio::io::copy_bidirectional(&mut tls, &mut upstream).await;
        });
        (port, rx)
    }

    #[tokio::test]
    async fn an_https_proxy_carries_the_endpoints_own_tls_inside_its_tls() {
        let proxy_identity = server_identity("https-proxy");
        let endpoint_identity = server_identity("https-proxy-endpoint");
        let endpoint_port = tls_server_without_mqtt(&endpoint_identity);
        let (proxy_port, connect_line) = tls_relay_proxy(&proxy_identity);
        let mut spec = loopback_spec(
            AuthMode::Mtls,
            endpoint_port,
            Some(&endpoint_identity.ca_file),
        );
        spec.proxy = Some(Proxy {
            scheme: crate::proxy::Scheme::Https,
            host: "127.0.0.1".into(),
            port: proxy_port,
            source: crate::proxy::ProxySource::Environment("HTTPS_PROXY"),
            credentials: None,
            tls: Some(crate::tls::proxy_config(Some(&proxy_identity.ca_file)).unwrap()),
        });
        // The endpoint's certificate was checked through the tunnel (it answered TLS); it then
        // never answers CONNECT, as this test server does.
        let e = connect(&spec).await.err().unwrap();
        assert!(
            matches!(
                e,
                Error::Timeout {
                    stage: Stage::Connack,
                    ..
                }
            ),
            "{e:?}"
        );
        assert_eq!(
            connect_line.await.unwrap(),
            format!("CONNECT 127.0.0.1:{endpoint_port} HTTP/1.1")
        );
    }

    #[tokio::test]
    async fn an_https_proxy_with_an_untrusted_certificate_is_named() {
        let proxy_identity = server_identity("https-proxy-untrusted");
        let (proxy_port, _) = tls_relay_proxy(&proxy_identity);
        let mut spec = proxied(proxy_port, None);
        if let Some(p) = spec.proxy.as_mut() {
            p.scheme = crate::proxy::Scheme::Https;
            p.tls = Some(crate::tls::proxy_config(None).unwrap());
        }
        let e = connect(&spec).await.err().unwrap();
        assert_eq!(
            e.cause(),
            format!(
                "TLS to the proxy https://127.0.0.1:{proxy_port} failed: its certificate is not \
                 signed by a trusted CA"
            )
        );
        assert!(e
            .hint(AuthMode::Mtls)
            .ends_with("pass the CA that signed its certificate with --proxy-ca-file"));
    }
}
