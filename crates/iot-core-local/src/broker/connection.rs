//! One accepted connection, from its CONNACK to its end: the task that owns the socket, reads
//! and answers the client's packets, delivers what the router queued for it, and applies IoT
//! Core's rules on the way (QoS at most 1, 128 KiB payloads, keep-alive, takeover, the policy
//! hooks of [`DataPlane`], topic limits, reserved topics, the publish quota), announcing it
//! in its [`super::lifecycle`] events.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{timeout, Instant};

use super::dataplane::{Action, DataPlane, Denied, RevokeCause, Revoked};
use super::lifecycle::{DisconnectReason, Event, Events};
use super::quota::PublishQuota;
use super::reserved;
use super::router::{
    Link, Message, NotSubscribed, Queued, Registered, Router, SubscriptionOptions,
    SUBSCRIPTIONS_CAP,
};
use super::{topic, Origin, Settings};
use crate::logsafe::escaped;
use crate::mqtt::packet::{
    encode_publish, publish_size, reason_string, Ack, Delivery, Disconnect, Packet, SubAck,
    SubOptions,
};
use crate::mqtt::{
    connect::connack, frame, property, Connect, Frame, PacketError, PropValue, Properties, Version,
};

/// The Maximum Packet Size this server announces and enforces on what it receives: IoT Core's
/// 128 KiB payload plus room for a topic and properties (146 KiB; AWS's value is undocumented, a
/// third-party emulator cites 149,504).
pub const MAX_PACKET_SIZE: u32 = 149_504;
/// IoT Core's payload limit (128 KiB).
pub const MAX_PAYLOAD: usize = 128 * 1024;
/// Receive Maximum announced: IoT Core's 100 unacknowledged inbound QoS 1 messages.
pub const RECEIVE_MAXIMUM: u16 = 100;
/// Topic Alias Maximum announced (IoT Core's default quota).
pub const TOPIC_ALIAS_MAXIMUM: u16 = 8;
/// At most this many unacknowledged QoS 1 messages out to one client (IoT Core's quota).
pub const MAX_INFLIGHT: usize = 100;
/// The longest session expiry, in seconds (IoT Core's default account maximum).
pub const SESSION_EXPIRY_MAX: u32 = 3600;
/// The expiry of a 3.1.1 persistent session (cleanSession=0).
pub const SESSION_EXPIRY_V311: u32 = 3600;
/// IoT Core's keep-alive range, in seconds.
pub const KEEP_ALIVE_RANGE: std::ops::RangeInclusive<u16> = 30..=1200;
/// At most this many filters in one SUBSCRIBE (IoT Core's quota); more close the connection.
pub const MAX_FILTERS_PER_SUBSCRIBE: usize = 8;
/// The longest reason string a server DISCONNECT carries (MQTT 5, when the client asked for
/// problem information), in bytes.
pub const DISCONNECT_REASON_MAX: usize = 512;
/// How long the last packets (acknowledgements, the DISCONNECT) may take to go out when a
/// connection ends.
pub const FINISH_WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// A write to the client that takes longer ends the connection.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// MQTT 5 reason codes this module sends.
pub mod reason {
    pub const NORMAL: u8 = 0x00;
    pub const DISCONNECT_WITH_WILL: u8 = 0x04;
    pub const NO_SUBSCRIPTION_EXISTED: u8 = 0x11;
    pub const UNSPECIFIED: u8 = 0x80;
    pub const MALFORMED: u8 = 0x81;
    pub const PROTOCOL_ERROR: u8 = 0x82;
    pub const NOT_AUTHORIZED: u8 = 0x87;
    pub const BAD_AUTH_METHOD: u8 = 0x8C;
    pub const KEEP_ALIVE_TIMEOUT: u8 = 0x8D;
    pub const TAKEN_OVER: u8 = 0x8E;
    pub const TOPIC_FILTER_INVALID: u8 = 0x8F;
    pub const TOPIC_NAME_INVALID: u8 = 0x90;
    pub const TOPIC_ALIAS_INVALID: u8 = 0x94;
    pub const PACKET_TOO_LARGE: u8 = 0x95;
    pub const QUOTA_EXCEEDED: u8 = 0x97;
    pub const QOS_NOT_SUPPORTED: u8 = 0x9B;
    pub const SUB_IDS_NOT_SUPPORTED: u8 = 0xA1;
}

/// The keep-alive IoT Core applies: 0 or above 1200 -> 1200, 1..29 -> 30.
pub fn effective_keep_alive(requested: u16) -> u16 {
    if requested == 0 {
        *KEEP_ALIVE_RANGE.end()
    } else {
        requested.clamp(*KEEP_ALIVE_RANGE.start(), *KEEP_ALIVE_RANGE.end())
    }
}

/// Why a connection ends.
#[derive(Debug)]
enum End {
    /// The client sent DISCONNECT; `will` if it asked for its will (MQTT 5 reason 0x04).
    Client {
        will: bool,
    },
    /// The socket closed or failed.
    Lost(String),
    TakenOver,
    KeepAlive,
    /// The server closes: MQTT 5 DISCONNECT with `reason` first; `why` is logged; `cause` is
    /// the `disconnectReason` of the lifecycle event.
    Close {
        reason: u8,
        why: String,
        cause: DisconnectReason,
    },
    /// The connection's authorization ended (a custom authorizer's refresh or
    /// disconnectAfterInSeconds): MQTT 5 DISCONNECT 0x87 with the cause's reason string.
    Revoked(Revoked),
}

impl End {
    /// The `disconnectReason` of the connection's disconnected event. A new way to end gets its
    /// reason here; a new server close passes it to [`close_for`].
    fn disconnect_reason(&self) -> DisconnectReason {
        match self {
            End::Client { .. } => DisconnectReason::ClientInitiatedDisconnect,
            End::Lost(_) => DisconnectReason::ConnectionLost,
            End::TakenOver => DisconnectReason::DuplicateClientid,
            End::KeepAlive => DisconnectReason::MqttKeepAliveTimeout,
            End::Close { cause, .. } => *cause,
            End::Revoked(r) => match r.cause {
                RevokeCause::RefreshFailed => DisconnectReason::AuthError,
                RevokeCause::Expired => DisconnectReason::CustomauthTtlExpiration,
            },
        }
    }
}

/// The server closes because of what the client sent (`disconnectReason` CLIENT_ERROR).
fn close(reason: u8, why: impl Into<String>) -> End {
    close_for(DisconnectReason::ClientError, reason, why)
}

/// The server closes, for `cause` (e.g. THROTTLED, AUTH_ERROR).
fn close_for(cause: DisconnectReason, reason: u8, why: impl Into<String>) -> End {
    End::Close {
        reason,
        why: why.into(),
        cause,
    }
}

/// Run one connection whose CONNECT was authenticated and authorized, until it ends.
pub(super) async fn run<S>(
    router: &Router,
    settings: Settings,
    mut stream: S,
    mut connect: Connect,
    origin: &Origin,
    policy: &dyn DataPlane,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let peer = &origin.peer;
    let version = connect.version;
    let v5 = version == Version::V5;
    let who_id = |id: &str| format!("{peer} client '{}'", escaped(id));

    // What CONNACK refuses (after authentication, as IoT Core does).
    let refusal = if connect.properties.auth_method.is_some() {
        Some((
            reason::BAD_AUTH_METHOD,
            "enhanced authentication (AUTH) is not supported".to_string(),
        ))
    } else if let Some(w) = &connect.will {
        if w.qos == 2 {
            Some((
                reason::QOS_NOT_SUPPORTED,
                "will QoS 2 is not supported (QoS 0 and 1 only)".into(),
            ))
        } else if let Err(e) = topic::check_name(&w.topic) {
            Some((
                reason::TOPIC_NAME_INVALID,
                format!("will topic '{}': {e}", escaped(&w.topic)),
            ))
        } else if let Err(why) = topic_rules(&w.topic, w.retain) {
            Some((
                reason::TOPIC_NAME_INVALID,
                format!("will topic '{}': {why}", escaped(&w.topic)),
            ))
        } else {
            None
        }
    } else {
        None
    };
    if let Some((code, why)) = refusal {
        log::info!("{}: CONNECT refused: {why}", who_id(&connect.client_id));
        if v5 {
            let _ = timeout(
                WRITE_TIMEOUT,
                stream.write_all(&connack(version, false, code, &[])),
            )
            .await;
        }
        let _ = timeout(WRITE_TIMEOUT, stream.shutdown()).await;
        return;
    }

    // The server normally assigns it before `iot:Connect`; done here for the plain broker.
    connect.assign_client_id();
    let assigned = connect
        .assigned_client_id
        .then(|| connect.client_id.clone());
    let client_id: Arc<str> = connect.client_id.as_str().into();
    let who = who_id(&client_id);
    let keep_alive = effective_keep_alive(connect.keep_alive);
    let expiry = match version {
        Version::V311 if !connect.clean_start => SESSION_EXPIRY_V311,
        Version::V311 => 0,
        Version::V5 => connect.properties.session_expiry.min(SESSION_EXPIRY_MAX),
    };
    let link = Arc::new(Link::default());
    let reg = router.connect(
        &client_id,
        version,
        connect.clean_start,
        expiry,
        link.clone(),
    );

    let mut props = Vec::new();
    if v5 {
        props.push(property::SESSION_EXPIRY);
        props.extend_from_slice(&expiry.to_be_bytes());
        props.push(property::RECEIVE_MAXIMUM);
        props.extend_from_slice(&RECEIVE_MAXIMUM.to_be_bytes());
        props.extend_from_slice(&[property::MAXIMUM_QOS, 1, property::RETAIN_AVAILABLE, 1]);
        props.push(property::MAXIMUM_PACKET_SIZE);
        props.extend_from_slice(&MAX_PACKET_SIZE.to_be_bytes());
        props.push(property::TOPIC_ALIAS_MAXIMUM);
        props.extend_from_slice(&TOPIC_ALIAS_MAXIMUM.to_be_bytes());
        props.extend_from_slice(&[
            property::WILDCARD_SUB_AVAILABLE,
            1,
            property::SUB_ID_AVAILABLE,
            0,
            property::SHARED_SUB_AVAILABLE,
            1,
        ]);
        if keep_alive != connect.keep_alive {
            props.push(property::SERVER_KEEP_ALIVE);
            props.extend_from_slice(&keep_alive.to_be_bytes());
        }
        if let Some(id) = &assigned {
            props.push(property::ASSIGNED_CLIENT_ID);
            crate::mqtt::put_str(&mut props, id);
        }
    }
    let mut conn = Conn {
        stream,
        router,
        policy,
        version,
        client_id,
        who,
        reg,
        link,
        expiry,
        buf: Vec::new(),
        out: connack(version, reg.session_present, 0, &props),
        inflight: BTreeMap::new(),
        max_inflight: MAX_INFLIGHT.min(usize::from(connect.properties.receive_maximum)),
        next_pkid: 0,
        aliases: Vec::new(),
        client_max_packet: connect
            .properties
            .maximum_packet_size
            .map_or(usize::MAX, |m| m as usize),
        problem_info: connect.properties.request_problem_info,
        keep_alive: Duration::from_millis(u64::from(keep_alive) * 1500),
        events: None,
        quota: PublishQuota::new(settings.publish_quota),
        holding: false,
    };
    log::debug!(
        "{}: connected (MQTT {version:?}, keep-alive {keep_alive} s, session expiry {expiry} s, session present {})",
        conn.who,
        reg.session_present
    );
    let end = match conn.flush().await {
        Ok(()) => {
            conn.events = origin
                .principal
                .as_deref()
                .and_then(|p| Events::start(&router.versions, &conn.client_id, p));
            conn.announce(Event::Connected { ip: origin.ip });
            conn.serve().await
        }
        Err(end) => end,
    };
    conn.report_quota_drops(true);
    // Boxed: the ending's state is the largest of the connection's, and held only at its end.
    Box::pin(conn.finish(end, connect.will)).await;
}

struct Conn<'a, S> {
    stream: S,
    router: &'a Router,
    policy: &'a dyn DataPlane,
    version: Version,
    client_id: Arc<str>,
    /// `<peer> client '<id>'`, escaped, for log lines.
    who: String,
    reg: Registered,
    link: Arc<Link>,
    expiry: u32,
    /// Bytes received and not yet a whole packet; grows with what arrives, bounded by
    /// [`MAX_PACKET_SIZE`] through framing.
    buf: Vec<u8>,
    /// Bytes to send.
    out: Vec<u8>,
    /// QoS 1 messages sent and not yet acknowledged, by packet id.
    inflight: BTreeMap<u16, Queued>,
    max_inflight: usize,
    next_pkid: u16,
    /// Inbound topic aliases (index = alias - 1).
    aliases: Vec<Option<String>>,
    client_max_packet: usize,
    problem_info: bool,
    /// 1.5 x the keep-alive.
    keep_alive: Duration,
    /// Its lifecycle events, from the CONNACK on (none for a client id with `+` or `#`, nor on
    /// the plain broker, which authenticates nobody).
    events: Option<Events>,
    quota: PublishQuota,
    /// QoS 1 deliveries wait for the next window of the publish quota.
    holding: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<'_, S> {
    async fn serve(&mut self) -> End {
        let link = self.link.clone();
        let mut deadline = Instant::now() + self.keep_alive;
        let mut revoked = self.policy.revoked();
        loop {
            if let Err(end) = self.deliver().await {
                return end;
            }
            let wake = self.quota.wake_at(self.holding);
            tokio::select! {
                biased;
                _ = link.notify.notified() => {
                    if link.taken_over() {
                        return End::TakenOver;
                    }
                }
                read = self.stream.read_buf(&mut self.buf) => match read {
                    Ok(0) => return End::Lost("closed by the client".into()),
                    Err(e) => return End::Lost(e.to_string()),
                    Ok(_) => match self.process().await {
                        Ok(0) => {}
                        Ok(_) => deadline = Instant::now() + self.keep_alive,
                        Err(end) => return end,
                    },
                },
                _ = tokio::time::sleep_until(deadline) => return End::KeepAlive,
                // The publish quota's next window, for held deliveries and the drops' log line.
                _ = tokio::time::sleep_until(wake.unwrap_or(deadline)), if wake.is_some() => {}
                r = until_revoked(&mut revoked) => return End::Revoked(r),
            }
        }
    }

    /// Handle every whole packet in the buffer; how many there were.
    async fn process(&mut self) -> Result<usize, End> {
        let mut count = 0;
        loop {
            let len = match frame(&self.buf, MAX_PACKET_SIZE as usize) {
                Ok(Frame::Complete { len }) => len,
                Ok(Frame::Incomplete) => break,
                Err(PacketError::TooLarge { size, max }) => {
                    return Err(close(
                        reason::PACKET_TOO_LARGE,
                        format!("a packet of {size} bytes, above the Maximum Packet Size {max}"),
                    ))
                }
                Err(e) => return Err(close(reason::MALFORMED, e.to_string())),
            };
            let packet = Packet::decode(self.version, &self.buf[..len]);
            self.buf.drain(..len);
            count += 1;
            match packet {
                Ok(p) => self.handle(p)?,
                Err(e @ PacketError::Protocol(_)) => {
                    return Err(close(reason::PROTOCOL_ERROR, e.to_string()))
                }
                Err(e) => return Err(close(reason::MALFORMED, e.to_string())),
            }
        }
        if self.buf.is_empty() && self.buf.capacity() > 4096 {
            self.buf = Vec::new();
        }
        self.flush().await?;
        Ok(count)
    }

    fn handle(&mut self, packet: Packet) -> Result<(), End> {
        let v5 = self.version == Version::V5;
        match packet {
            Packet::Publish(p) => self.publish(p),
            Packet::PubAck(a) => {
                self.inflight.remove(&a.pkid);
                Ok(())
            }
            Packet::Subscribe(s) => {
                if Properties::new(&s.properties)
                    .flatten()
                    .any(|p| p.id == property::SUBSCRIPTION_ID)
                {
                    return Err(close(
                        reason::SUB_IDS_NOT_SUPPORTED,
                        "SUBSCRIBE with a subscription identifier, which IoT Core does not support",
                    ));
                }
                self.check_subscribe_packet(&s.filters)?;
                let mut codes = Vec::with_capacity(s.filters.len());
                for (filter, o) in &s.filters {
                    codes.push(self.subscribe(filter, o.qos, o.no_local, o.retain_handling));
                }
                // Granted: QoS 0 or 1; the failure codes are 0x80 and above.
                let granted: Vec<&str> = s
                    .filters
                    .iter()
                    .zip(&codes)
                    .filter(|(_, &code)| code <= 1)
                    .map(|((filter, _), _)| filter.as_str())
                    .collect();
                Packet::SubAck(SubAck {
                    pkid: s.pkid,
                    properties: Vec::new(),
                    codes,
                })
                .encode(self.version, &mut self.out);
                if !granted.is_empty() {
                    self.announce(Event::Subscribed(&granted));
                }
                Ok(())
            }
            Packet::Unsubscribe(u) => {
                let codes = u
                    .filters
                    .iter()
                    .map(|f| {
                        if self.router.unsubscribe(&self.client_id, self.reg, f) {
                            reason::NORMAL
                        } else {
                            reason::NO_SUBSCRIPTION_EXISTED
                        }
                    })
                    .collect();
                Packet::UnsubAck(SubAck {
                    pkid: u.pkid,
                    properties: Vec::new(),
                    codes,
                })
                .encode(self.version, &mut self.out);
                let sent: Vec<&str> = u.filters.iter().map(String::as_str).collect();
                self.announce(Event::Unsubscribed(&sent));
                Ok(())
            }
            Packet::PingReq => {
                Packet::PingResp.encode(self.version, &mut self.out);
                Ok(())
            }
            Packet::Disconnect(d) => {
                for p in Properties::new(&d.properties).flatten() {
                    if let (property::SESSION_EXPIRY, PropValue::U32(e)) = (p.id, p.value) {
                        if self.expiry == 0 && e > 0 {
                            return Err(close(
                                reason::PROTOCOL_ERROR,
                                "DISCONNECT sets a session expiry on a session that had none",
                            ));
                        }
                        self.expiry = e.min(SESSION_EXPIRY_MAX);
                        self.router
                            .set_expiry(&self.client_id, self.reg, self.expiry);
                    }
                }
                Err(End::Client {
                    will: v5 && d.reason == reason::DISCONNECT_WITH_WILL,
                })
            }
            Packet::Connect(_) => Err(close(
                reason::PROTOCOL_ERROR,
                "a second CONNECT on the connection (protocol error)",
            )),
            Packet::QoS2 { .. } => Err(close(
                reason::PROTOCOL_ERROR,
                "a QoS 2 acknowledgement (PUBREC/PUBREL/PUBCOMP); QoS 2 is not supported",
            )),
            Packet::Auth => Err(close(
                reason::PROTOCOL_ERROR,
                "AUTH: enhanced authentication is not supported",
            )),
            Packet::ConnAck { .. } | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp => {
                Err(close(
                    reason::PROTOCOL_ERROR,
                    "a packet only a server may send",
                ))
            }
        }
    }

    fn publish(&mut self, p: crate::mqtt::packet::Publish) -> Result<(), End> {
        let v5 = self.version == Version::V5;
        if p.qos == 2 {
            if !v5 {
                log::info!(
                    "{}: QoS 2 PUBLISH on '{}' ignored, no acknowledgement: IoT Core supports QoS 0 and 1",
                    self.who,
                    escaped(&p.topic)
                );
                return Ok(());
            }
            return Err(close(
                reason::QOS_NOT_SUPPORTED,
                format!(
                    "QoS 2 PUBLISH on '{}': IoT Core supports QoS 0 and 1",
                    escaped(&p.topic)
                ),
            ));
        }
        if p.payload.len() > MAX_PAYLOAD {
            return Err(close(
                reason::QUOTA_EXCEEDED,
                format!(
                    "PUBLISH on '{}' with a payload of {} bytes, above IoT Core's {MAX_PAYLOAD}",
                    escaped(&p.topic),
                    p.payload.len()
                ),
            ));
        }
        let mut topic_name = p.topic;
        let mut forwarded = Vec::with_capacity(p.properties.len());
        for prop in Properties::new(&p.properties).flatten() {
            match (prop.id, prop.value) {
                (property::TOPIC_ALIAS, PropValue::U16(alias)) => {
                    topic_name = self.resolve_alias(alias, topic_name)?;
                }
                (property::SUBSCRIPTION_ID, _) => {}
                _ => forwarded.extend_from_slice(prop.raw),
            }
        }
        if let Err(e) = topic::check_name(&topic_name) {
            return Err(close(
                reason::TOPIC_NAME_INVALID,
                format!("PUBLISH on '{}': {e}", escaped(&topic_name)),
            ));
        }
        let kind = match topic_rules(&topic_name, p.retain) {
            Ok(kind) => kind,
            Err(why) => {
                return Err(close(
                    reason::TOPIC_NAME_INVALID,
                    format!("PUBLISH on '{}' refused: {why}", escaped(&topic_name)),
                ))
            }
        };
        let now = Instant::now();
        if !self.quota.take(now) {
            // Discarded; logged with the others of this second when it ends.
            self.quota.dropped(now, true);
            return Ok(());
        }
        let mut verdict = self.check(Action::Publish, &topic_name);
        if verdict.is_ok() && p.retain {
            verdict = self.check(Action::RetainPublish, &topic_name);
        }
        if let Err((action, Denied(why))) = verdict {
            let line = format!("{action} on topic/{} denied: {why}", escaped(&topic_name));
            if !v5 {
                return Err(close_for(
                    DisconnectReason::ForbiddenAccess,
                    reason::NOT_AUTHORIZED,
                    line,
                ));
            }
            log::info!("{}: {line}", self.who);
            if p.qos == 1 {
                let properties = if self.problem_info {
                    reason_string(&format!("{action} is not authorized"))
                } else {
                    Vec::new()
                };
                Packet::PubAck(Ack {
                    pkid: p.pkid,
                    reason: reason::NOT_AUTHORIZED,
                    properties,
                })
                .encode(self.version, &mut self.out);
            }
            return Ok(());
        }
        if let reserved::Publish::BasicIngest { rule } = kind {
            log::info!(
                "{}: PUBLISH on '{}': Basic Ingest to rule {}: acknowledged, not delivered (no rules engine here)",
                self.who,
                escaped(&topic_name),
                escaped(rule)
            );
        } else {
            let message = Message {
                topic: topic_name.into(),
                payload: p.payload.into(),
                properties: forwarded.into(),
                qos: p.qos,
                from: self.client_id.clone(),
            };
            self.router.publish(Arc::new(message), p.retain);
        }
        if p.qos == 1 {
            Packet::PubAck(Ack {
                pkid: p.pkid,
                reason: reason::NORMAL,
                properties: Vec::new(),
            })
            .encode(self.version, &mut self.out);
        }
        Ok(())
    }

    /// The topic a PUBLISH with this alias stands for (and record the alias when it has one).
    fn resolve_alias(&mut self, alias: u16, topic_name: String) -> Result<String, End> {
        if alias == 0 || alias > TOPIC_ALIAS_MAXIMUM {
            return Err(close(
                reason::TOPIC_ALIAS_INVALID,
                format!("topic alias {alias}, outside 1..={TOPIC_ALIAS_MAXIMUM}"),
            ));
        }
        let i = usize::from(alias - 1);
        if topic_name.is_empty() {
            return self.aliases.get(i).cloned().flatten().ok_or_else(|| {
                close(
                    reason::TOPIC_ALIAS_INVALID,
                    format!("topic alias {alias} was never set"),
                )
            });
        }
        if self.aliases.len() <= i {
            self.aliases.resize(i + 1, None);
        }
        self.aliases[i] = Some(topic_name.clone());
        Ok(topic_name)
    }

    /// One SUBSCRIBE filter: its SUBACK code.
    fn subscribe(&mut self, filter: &str, qos: u8, no_local: bool, retain_handling: u8) -> u8 {
        let v5 = self.version == Version::V5;
        let valid = topic::parse_filter(filter)
            .map_err(|e| e.to_string())
            .and_then(|f| topic::check_filter_limits(&f).map_err(|e| e.to_string()));
        if let Err(why) = valid {
            log::info!(
                "{}: SUBSCRIBE to '{}' refused: {why}",
                self.who,
                escaped(filter)
            );
            return if v5 {
                reason::TOPIC_FILTER_INVALID
            } else {
                reason::UNSPECIFIED
            };
        }
        if let Err((action, Denied(why))) = self.check(Action::Subscribe, filter) {
            log::info!(
                "{}: {action} on topicfilter/{} denied: {why}",
                self.who,
                escaped(filter)
            );
            return if v5 {
                reason::NOT_AUTHORIZED
            } else {
                reason::UNSPECIFIED
            };
        }
        let granted = qos.min(1);
        if qos == 2 {
            log::info!(
                "{}: SUBSCRIBE to '{}' asked QoS 2; granted QoS 1 (IoT Core's maximum)",
                self.who,
                escaped(filter)
            );
        }
        let options = SubscriptionOptions {
            qos: granted,
            no_local,
        };
        match self
            .router
            .subscribe(&self.client_id, self.reg, filter, options, retain_handling)
        {
            Ok(()) => granted,
            Err(NotSubscribed::TooMany) => {
                log::info!(
                    "{}: SUBSCRIBE to '{}' refused: the connection already has {SUBSCRIPTIONS_CAP} subscriptions",
                    self.who,
                    escaped(filter)
                );
                if v5 {
                    reason::QUOTA_EXCEEDED
                } else {
                    reason::UNSPECIFIED
                }
            }
            Err(NotSubscribed::NotHolder) => reason::UNSPECIFIED,
        }
    }

    /// IoT Core's rules on a SUBSCRIBE as a whole, before any of its filters is subscribed: at
    /// most [`MAX_FILTERS_PER_SUBSCRIBE`] filters, and no reserved topic clients may not
    /// subscribe to. Either ends the connection.
    fn check_subscribe_packet(&self, filters: &[(String, SubOptions)]) -> Result<(), End> {
        if filters.len() > MAX_FILTERS_PER_SUBSCRIBE {
            let first = filters.first().map(|(f, _)| f.as_str()).unwrap_or_default();
            return Err(close_for(
                DisconnectReason::Throttled,
                reason::QUOTA_EXCEEDED,
                format!(
                    "SUBSCRIBE with {} filters (the first '{}') refused: above IoT Core's limit of {MAX_FILTERS_PER_SUBSCRIBE} per SUBSCRIBE",
                    filters.len(),
                    escaped(first)
                ),
            ));
        }
        for (filter, _) in filters {
            // An invalid filter gets its SUBACK code; a valid one is classified without $share/.
            let Ok(parsed) = topic::parse_filter(filter) else {
                continue;
            };
            if let Err(e) = reserved::check_subscribe(parsed.filter) {
                return Err(close(
                    reason::TOPIC_FILTER_INVALID,
                    format!("SUBSCRIBE to '{}' refused: {e}", escaped(filter)),
                ));
            }
        }
        Ok(())
    }

    /// Log the PUBLISH the quota made this connection drop, once their second has ended, or
    /// when the connection is `ending`.
    fn report_quota_drops(&mut self, ending: bool) {
        let Some(d) = self.quota.report(Instant::now(), ending) else {
            return;
        };
        let mut what = Vec::new();
        if d.inbound > 0 {
            what.push(format!(
                "{} inbound PUBLISH discarded (QoS 1 ones not acknowledged)",
                d.inbound
            ));
        }
        if d.outbound > 0 {
            what.push(format!("{} QoS 0 deliveries dropped", d.outbound));
        }
        log::info!(
            "{}: {}: over the publish quota of {} PUBLISH per second, inbound and outbound together",
            self.who,
            what.join(", "),
            self.quota.limit()
        );
    }

    fn check(&self, action: Action, resource: &str) -> Result<(), (Action, Denied)> {
        self.policy.check(action, resource).map_err(|d| (action, d))
    }

    /// Send what the router queued, as far as the in-flight window and the publish quota allow:
    /// over the quota, QoS 0 messages are dropped and QoS 1 ones wait in the queue.
    async fn deliver(&mut self) -> Result<(), End> {
        self.report_quota_drops(false);
        self.holding = false;
        loop {
            let left = self.quota.left(Instant::now());
            let room = self
                .max_inflight
                .saturating_sub(self.inflight.len())
                .min(left);
            // With no quota left, only the QoS 0 messages at the front are taken, to be dropped.
            let max = if left == 0 { 64 } else { left.min(64) };
            let batch = self.router.take(&self.client_id, self.reg, room, max);
            if batch.is_empty() {
                self.holding = left == 0 && self.router.has_queued(&self.client_id, self.reg);
                return Ok(());
            }
            for q in batch {
                if let Err(Denied(why)) = self.policy.check(Action::Receive, &q.message.topic) {
                    log::info!(
                        "{}: iot:Receive on topic/{} denied, delivery skipped: {why}",
                        self.who,
                        escaped(&q.message.topic)
                    );
                    continue;
                }
                let pkid = if q.qos > 0 { self.next_pkid() } else { 0 };
                let d = Delivery {
                    dup: q.dup,
                    qos: q.qos,
                    retain: q.retain,
                    topic: &q.message.topic,
                    pkid,
                    properties: &q.message.properties,
                    payload: &q.message.payload,
                };
                if publish_size(self.version, &d) > self.client_max_packet {
                    log::info!(
                        "{}: a message on '{}' is larger than the client's Maximum Packet Size; not delivered",
                        self.who,
                        escaped(&q.message.topic)
                    );
                    continue;
                }
                let now = Instant::now();
                if !self.quota.take(now) {
                    // QoS 0 only: a batch holds QoS 1 messages only while the quota has room.
                    self.quota.dropped(now, false);
                    continue;
                }
                encode_publish(&mut self.out, self.version, &d);
                if q.qos > 0 {
                    self.inflight.insert(pkid, q);
                }
            }
            self.flush().await?;
        }
    }

    fn next_pkid(&mut self) -> u16 {
        loop {
            self.next_pkid = self.next_pkid.checked_add(1).unwrap_or(1);
            if !self.inflight.contains_key(&self.next_pkid) {
                return self.next_pkid;
            }
        }
    }

    async fn flush(&mut self) -> Result<(), End> {
        if self.out.is_empty() {
            return Ok(());
        }
        let written = timeout(WRITE_TIMEOUT, async {
            self.stream.write_all(&self.out).await?;
            self.stream.flush().await
        })
        .await;
        self.out.clear();
        if self.out.capacity() > 4096 {
            self.out = Vec::new();
        }
        match written {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(End::Lost(e.to_string())),
            Err(_) => Err(End::Lost(format!(
                "the client did not read what it was sent within {WRITE_TIMEOUT:?}"
            ))),
        }
    }

    /// Tell the client why (MQTT 5), close, publish the will unless the client disconnected
    /// normally, and hand the session back to the router.
    async fn finish(mut self, end: End, will: Option<crate::mqtt::Will>) {
        let v5 = self.version == Version::V5;
        let (code, publish_will) = match &end {
            End::Client { will } => {
                log::debug!("{}: disconnected", self.who);
                (None, *will)
            }
            End::Lost(why) => {
                log::debug!("{}: connection lost: {why}", self.who);
                (None, true)
            }
            End::TakenOver => (
                Some((
                    reason::TAKEN_OVER,
                    "another connection took over the client id",
                )),
                true,
            ),
            End::KeepAlive => {
                log::info!(
                    "{}: no packet within 1.5 x the keep-alive ({:?}): disconnected",
                    self.who,
                    self.keep_alive
                );
                (
                    Some((
                        reason::KEEP_ALIVE_TIMEOUT,
                        "no packet within 1.5 x the keep-alive",
                    )),
                    true,
                )
            }
            End::Close { reason, why, .. } => {
                log::info!("{}: disconnected: {why}", self.who);
                (Some((*reason, why.as_str())), true)
            }
            End::Revoked(r) => {
                log::info!("{}: disconnected: {}", self.who, r.why);
                (
                    Some((reason::NOT_AUTHORIZED, r.cause.reason_string())),
                    true,
                )
            }
        };
        // What was answered before the end (PUBACKs, SUBACKs of the last batch read) still goes
        // out, then the DISCONNECT; not to a client that is gone.
        if matches!(end, End::Lost(_)) {
            self.out.clear();
        }
        if let (true, Some((code, why))) = (v5, code) {
            let mut disconnect = Disconnect {
                reason: code,
                properties: if self.problem_info {
                    reason_string(crate::mqtt::clip(why, DISCONNECT_REASON_MAX))
                } else {
                    Vec::new()
                },
            };
            let mut packet = Vec::new();
            Packet::Disconnect(disconnect.clone()).encode(self.version, &mut packet);
            if packet.len() > self.client_max_packet {
                // The client's Maximum Packet Size forbids the reason string: the code alone.
                packet.clear();
                disconnect.properties.clear();
                Packet::Disconnect(disconnect).encode(self.version, &mut packet);
            }
            self.out.extend_from_slice(&packet);
        }
        let _ = timeout(FINISH_WRITE_TIMEOUT, self.flush()).await;
        let _ = timeout(Duration::from_secs(1), self.stream.shutdown()).await;
        if let (true, Some(w)) = (publish_will, will) {
            self.publish_will(w);
        }
        // Published before the session is released, so that whoever sees it released (e.g. a
        // test waiting on the router's stats) can count on the event being routed.
        if let Some(events) = self.events.take() {
            events.publish(self.router, Event::Disconnected(end.disconnect_reason()));
            events.release(&self.router.versions);
        }
        let unacked = std::mem::take(&mut self.inflight).into_values().collect();
        self.router.disconnect(&self.client_id, self.reg, unacked);
    }

    /// Publish one of this connection's lifecycle events (if its client id has them).
    fn announce(&self, event: Event<'_>) {
        if let Some(events) = &self.events {
            events.publish(self.router, event);
        }
    }

    fn publish_will(&self, w: crate::mqtt::Will) {
        let mut verdict = self.check(Action::Publish, &w.topic);
        if verdict.is_ok() && w.retain {
            verdict = self.check(Action::RetainPublish, &w.topic);
        }
        if let Err((action, Denied(why))) = verdict {
            log::info!(
                "{}: will not published: {action} on topic/{} denied: {why}",
                self.who,
                escaped(&w.topic)
            );
            return;
        }
        if let Ok(reserved::Publish::BasicIngest { rule }) =
            reserved::check_publish(&w.topic, w.retain)
        {
            log::info!(
                "{}: will on '{}': Basic Ingest to rule {}: not delivered (no rules engine here)",
                self.who,
                escaped(&w.topic),
                escaped(rule)
            );
            return;
        }
        log::debug!(
            "{}: publishing its will on '{}'",
            self.who,
            escaped(&w.topic)
        );
        let properties: Vec<u8> = Properties::new(&w.properties)
            .flatten()
            .filter(|p| p.id != property::WILL_DELAY)
            .flat_map(|p| p.raw.iter().copied())
            .collect();
        let message = Message {
            topic: w.topic.into(),
            payload: w.payload.into(),
            properties: properties.into(),
            qos: w.qos,
            from: self.client_id.clone(),
        };
        self.router.publish(Arc::new(message), w.retain);
    }
}

/// IoT Core's rules on a topic name a client publishes to (PUBLISH or will), once its syntax is
/// valid: the size and depth limits, then the reserved topics. A refusal says why, for the log.
fn topic_rules(topic_name: &str, retain: bool) -> Result<reserved::Publish<'_>, String> {
    topic::check_name_limits(topic_name).map_err(|e| e.to_string())?;
    reserved::check_publish(topic_name, retain).map_err(|e| e.to_string())
}

/// The revocation, once the data plane sends one; pending forever for a plane that has none.
async fn until_revoked(
    revoked: &mut Option<tokio::sync::watch::Receiver<Option<Revoked>>>,
) -> Revoked {
    if let Some(rx) = revoked {
        if let Ok(r) = rx.wait_for(Option::is_some).await {
            if let Some(r) = r.clone() {
                return r;
            }
        }
    }
    std::future::pending().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_alive_follows_iot_core() {
        assert_eq!(effective_keep_alive(0), 1200);
        assert_eq!(effective_keep_alive(1), 30);
        assert_eq!(effective_keep_alive(29), 30);
        assert_eq!(effective_keep_alive(30), 30);
        assert_eq!(effective_keep_alive(60), 60);
        assert_eq!(effective_keep_alive(1200), 1200);
        assert_eq!(effective_keep_alive(1201), 1200);
        assert_eq!(effective_keep_alive(u16::MAX), 1200);
    }

    #[test]
    fn each_end_has_its_disconnect_reason() {
        use DisconnectReason as R;
        let ends = [
            (End::Client { will: false }, R::ClientInitiatedDisconnect),
            (End::Client { will: true }, R::ClientInitiatedDisconnect),
            (End::Lost("reset".into()), R::ConnectionLost),
            (End::TakenOver, R::DuplicateClientid),
            (End::KeepAlive, R::MqttKeepAliveTimeout),
            (
                close(reason::PROTOCOL_ERROR, "second CONNECT"),
                R::ClientError,
            ),
            (close(reason::QUOTA_EXCEEDED, "payload"), R::ClientError),
            (
                close_for(R::ForbiddenAccess, reason::NOT_AUTHORIZED, "denied"),
                R::ForbiddenAccess,
            ),
            (
                close_for(R::Throttled, reason::QUOTA_EXCEEDED, "quota"),
                R::Throttled,
            ),
            (
                End::Revoked(Revoked {
                    cause: RevokeCause::RefreshFailed,
                    why: "refresh denied".into(),
                }),
                R::AuthError,
            ),
            (
                End::Revoked(Revoked {
                    cause: RevokeCause::Expired,
                    why: "ttl".into(),
                }),
                R::CustomauthTtlExpiration,
            ),
        ];
        for (end, expected) in ends {
            assert_eq!(end.disconnect_reason(), expected, "{end:?}");
        }
    }
}
