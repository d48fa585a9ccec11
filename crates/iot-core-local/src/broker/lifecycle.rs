//! The lifecycle events IoT Core publishes about each client (data-plane note §5, and the choices
//! of issue 9): `$aws/events/presence/connected|disconnected/<clientId>` and
//! `$aws/events/subscriptions/subscribed|unsubscribed/<clientId>`, as JSON, QoS 1, not retained,
//! from no client. They go through the router like any publish, so a watcher needs
//! `iot:Subscribe` on its filter and `iot:Receive` on `topic/$aws/events/...`.
//!
//! Also here: the `versionNumber` of each client id ([`Versions`]), kept in bounded memory.
//!
//! Events are published for the connections IoT Core's path authenticated (they have a
//! principal); the plain broker of tests and benchmarks (`Broker::serve_plain`) authenticates
//! nobody and publishes none, and `--upstream` bypasses the broker, so it publishes none either.
//!
//! Not here: when a connection announces what (the connection's task decides).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::router::{Message, Router};

/// A client id that has had no connection for this long starts again at `versionNumber` 0
/// (IoT Core: "resets after about an hour offline").
pub const VERSION_RESET: Duration = Duration::from_secs(3600);
/// At most this many client ids without a connection keep their `versionNumber`; past it, the one
/// offline longest is forgotten (it starts again at 0). Client ids with a connection are counted
/// by the connections themselves.
pub const OFFLINE_VERSIONS_CAP: usize = 10_000;

/// Why a connection ended, as `disconnectReason` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DisconnectReason {
    /// An authorizer refresh denied the connection or failed.
    AuthError,
    /// The client sent DISCONNECT.
    ClientInitiatedDisconnect,
    /// A protocol error, an oversized payload, a second CONNECT, a bad or unsupported topic.
    ClientError,
    /// The connection closed or failed under us, or the client did not read in time.
    ConnectionLost,
    /// Another connection took the client id over.
    DuplicateClientid,
    /// A policy denial that closes the connection (an MQTT 3.1.1 PUBLISH).
    ForbiddenAccess,
    /// No packet within 1.5 x the keep-alive.
    MqttKeepAliveTimeout,
    /// This server failed.
    ServerError,
    /// This server shut down.
    ServerInitiatedDisconnect,
    /// A quota was exceeded (publish rate, filters per SUBSCRIBE).
    Throttled,
    /// The authorizer's `disconnectAfterInSeconds` elapsed.
    CustomauthTtlExpiration,
}

impl DisconnectReason {
    /// The name in the event's JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            DisconnectReason::AuthError => "AUTH_ERROR",
            DisconnectReason::ClientInitiatedDisconnect => "CLIENT_INITIATED_DISCONNECT",
            DisconnectReason::ClientError => "CLIENT_ERROR",
            DisconnectReason::ConnectionLost => "CONNECTION_LOST",
            DisconnectReason::DuplicateClientid => "DUPLICATE_CLIENTID",
            DisconnectReason::ForbiddenAccess => "FORBIDDEN_ACCESS",
            DisconnectReason::MqttKeepAliveTimeout => "MQTT_KEEP_ALIVE_TIMEOUT",
            DisconnectReason::ServerError => "SERVER_ERROR",
            DisconnectReason::ServerInitiatedDisconnect => "SERVER_INITIATED_DISCONNECT",
            DisconnectReason::Throttled => "THROTTLED",
            DisconnectReason::CustomauthTtlExpiration => "CUSTOMAUTH_TTL_EXPIRATION",
        }
    }
}

impl std::fmt::Display for DisconnectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for DisconnectReason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// One lifecycle event of a connection.
#[derive(Clone, Copy, Debug)]
pub enum Event<'a> {
    /// After CONNACK 0x00; `ip` is the client's address (unknown only for in-memory
    /// connections).
    Connected { ip: Option<IpAddr> },
    /// When the connection ends, for whatever reason.
    Disconnected(DisconnectReason),
    /// After a SUBACK: the filters it granted.
    Subscribed(&'a [&'a str]),
    /// After an UNSUBACK: the filters the client sent.
    Unsubscribed(&'a [&'a str]),
}

impl Event<'_> {
    fn kind(&self) -> (&'static str, &'static str) {
        match self {
            Event::Connected { .. } => ("presence", "connected"),
            Event::Disconnected(_) => ("presence", "disconnected"),
            Event::Subscribed(_) => ("subscriptions", "subscribed"),
            Event::Unsubscribed(_) => ("subscriptions", "unsubscribed"),
        }
    }
}

/// The JSON of an event; absent fields are not written.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Payload<'a> {
    client_id: &'a str,
    timestamp: u64,
    event_type: &'static str,
    session_identifier: String,
    principal_identifier: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    ip_address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    version_number: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_initiated_disconnect: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    disconnect_reason: Option<DisconnectReason>,
    #[serde(skip_serializing_if = "Option::is_none")]
    topics: Option<&'a [&'a str]>,
}

/// Whether IoT Core publishes lifecycle events for this client id: not when it holds `#` or `+`.
pub fn announced(client_id: &str) -> bool {
    !client_id.contains(['#', '+'])
}

/// One connection's lifecycle events: who it is, and the numbers every event of it carries.
#[derive(Debug)]
pub struct Events {
    client_id: Arc<str>,
    /// `sessionIdentifier`: new for each connection.
    session: uuid::Uuid,
    /// `principalIdentifier`.
    principal: String,
    /// `versionNumber`, taken from [`Versions`] for this connection.
    version: u64,
}

impl Events {
    /// The events of a connection of `client_id`, authenticated as `principal`, that just got
    /// its CONNACK; `None` when the client id gets none. Takes the connection's
    /// `versionNumber`: give it back with [`Events::release`] when the connection ends.
    pub fn start(versions: &Versions, client_id: &Arc<str>, principal: &str) -> Option<Events> {
        if !announced(client_id) {
            return None;
        }
        Some(Events {
            client_id: client_id.clone(),
            session: uuid::Uuid::new_v4(),
            principal: principal.to_string(),
            version: versions.acquire(client_id, Instant::now()),
        })
    }

    /// The connection ended: its client id is offline unless another connection holds it.
    pub fn release(self, versions: &Versions) {
        versions.release(&self.client_id, Instant::now());
    }

    /// Publish `event` through `router`, stamped now.
    pub fn publish(&self, router: &Router, event: Event<'_>) {
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        router.publish(Arc::new(self.message(event, timestamp)), false);
    }

    /// The message of `event` at `timestamp` (ms since the epoch): QoS 1, from no client.
    pub fn message(&self, event: Event<'_>, timestamp: u64) -> Message {
        Message {
            topic: self.topic(event).into(),
            payload: self.payload(event, timestamp).into(),
            properties: Arc::new([]),
            qos: 1,
            from: "".into(),
        }
    }

    /// E.g. `$aws/events/presence/connected/<clientId>`.
    fn topic(&self, event: Event<'_>) -> String {
        let (family, kind) = event.kind();
        format!("$aws/events/{family}/{kind}/{}", self.client_id)
    }

    fn payload(&self, event: Event<'_>, timestamp: u64) -> Vec<u8> {
        let (_, event_type) = event.kind();
        let mut p = Payload {
            client_id: &self.client_id,
            timestamp,
            event_type,
            session_identifier: self.session.hyphenated().to_string(),
            principal_identifier: &self.principal,
            ip_address: None,
            version_number: None,
            client_initiated_disconnect: None,
            disconnect_reason: None,
            topics: None,
        };
        match event {
            Event::Connected { ip } => {
                p.ip_address = ip.map(|ip| ip.to_canonical().to_string());
                p.version_number = Some(self.version);
            }
            Event::Disconnected(reason) => {
                p.version_number = Some(self.version);
                p.client_initiated_disconnect =
                    Some(reason == DisconnectReason::ClientInitiatedDisconnect);
                p.disconnect_reason = Some(reason);
            }
            Event::Subscribed(topics) | Event::Unsubscribed(topics) => p.topics = Some(topics),
        }
        // Serializing strings, numbers and booleans into a Vec cannot fail.
        serde_json::to_vec(&p).unwrap_or_default()
    }
}

/// The `versionNumber` of each client id: 0 for its first connection, one more for each new
/// connection, until it has been offline for [`VERSION_RESET`]. Held while the client id has a
/// connection, and then for at most [`OFFLINE_VERSIONS_CAP`] client ids.
#[derive(Default)]
pub struct Versions {
    inner: Mutex<VersionsInner>,
}

#[derive(Default)]
struct VersionsInner {
    by_id: HashMap<Arc<str>, Numbered>,
    /// The client ids without a connection, by when they went offline: release order -> id.
    offline: BTreeMap<u64, Arc<str>>,
    next_release: u64,
}

struct Numbered {
    /// The number of the latest connection.
    last: u64,
    /// Connections holding the client id (two for a moment during a takeover).
    live: usize,
    /// With no connection: its key in `offline`, and since when.
    offline: Option<(u64, Instant)>,
}

impl Versions {
    fn lock(&self) -> MutexGuard<'_, VersionsInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The number of a new connection of `client_id`.
    pub fn acquire(&self, client_id: &Arc<str>, now: Instant) -> u64 {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let Some(n) = inner.by_id.get_mut(&**client_id) else {
            inner.by_id.insert(
                client_id.clone(),
                Numbered {
                    last: 0,
                    live: 1,
                    offline: None,
                },
            );
            return 0;
        };
        let reset = match n.offline.take() {
            Some((key, since)) => {
                inner.offline.remove(&key);
                now.saturating_duration_since(since) >= VERSION_RESET
            }
            None => false,
        };
        n.last = if reset { 0 } else { n.last.saturating_add(1) };
        n.live += 1;
        n.last
    }

    /// A connection of `client_id` ended.
    pub fn release(&self, client_id: &str, now: Instant) {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let Some((id, _)) = inner.by_id.get_key_value(client_id) else {
            return;
        };
        let id = id.clone();
        let Some(n) = inner.by_id.get_mut(client_id) else {
            return;
        };
        n.live = n.live.saturating_sub(1);
        if n.live > 0 {
            return;
        }
        let key = inner.next_release;
        inner.next_release += 1;
        n.offline = Some((key, now));
        inner.offline.insert(key, id);
        while inner.offline.len() > OFFLINE_VERSIONS_CAP {
            if let Some((_, oldest)) = inner.offline.pop_first() {
                inner.by_id.remove(&oldest);
            }
        }
    }

    /// Forget the client ids offline for [`VERSION_RESET`] or more; returns how many.
    pub fn sweep(&self, now: Instant) -> usize {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let mut freed = 0;
        while let Some((&key, id)) = inner.offline.first_key_value() {
            let expired = inner
                .by_id
                .get(id)
                .and_then(|n| n.offline)
                .is_none_or(|(_, since)| now.saturating_duration_since(since) >= VERSION_RESET);
            if !expired {
                break;
            }
            if let Some(id) = inner.offline.remove(&key) {
                inner.by_id.remove(&id);
            }
            freed += 1;
        }
        freed
    }

    /// How many client ids hold a number (with a connection or not).
    pub fn len(&self) -> usize {
        self.lock().by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn events(principal: &str, version: u64) -> Events {
        Events {
            client_id: "dev-1".into(),
            session: uuid::Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef),
            principal: principal.to_string(),
            version,
        }
    }

    fn json_of(e: &Events, event: Event<'_>) -> (String, Value) {
        let m = e.message(event, 1_573_002_230_757);
        assert_eq!(m.qos, 1, "lifecycle events are QoS 1");
        assert!(m.from.is_empty(), "from no client");
        assert!(m.properties.is_empty());
        let v = serde_json::from_slice(&m.payload).expect("JSON");
        (m.topic.to_string(), v)
    }

    const SESSION: &str = "01234567-89ab-cdef-0123-456789abcdef";

    #[test]
    fn connected_carries_the_address_and_the_version() {
        let e = events("ab12", 3);
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let (topic, v) = json_of(&e, Event::Connected { ip: Some(ip) });
        assert_eq!(topic, "$aws/events/presence/connected/dev-1");
        assert_eq!(
            v,
            json!({
                "clientId": "dev-1",
                "timestamp": 1_573_002_230_757u64,
                "eventType": "connected",
                "sessionIdentifier": SESSION,
                "principalIdentifier": "ab12",
                "ipAddress": "192.0.2.7",
                "versionNumber": 3
            })
        );
    }

    #[test]
    fn an_ipv4_mapped_address_is_written_as_ipv4() {
        let e = events("p", 0);
        let ip: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        let (_, v) = json_of(&e, Event::Connected { ip: Some(ip) });
        assert_eq!(v["ipAddress"], "127.0.0.1");
    }

    #[test]
    fn disconnected_carries_who_ended_it_and_why_and_no_address() {
        let e = events("ab12", 3);
        let (topic, v) = json_of(
            &e,
            Event::Disconnected(DisconnectReason::ClientInitiatedDisconnect),
        );
        assert_eq!(topic, "$aws/events/presence/disconnected/dev-1");
        assert_eq!(
            v,
            json!({
                "clientId": "dev-1",
                "timestamp": 1_573_002_230_757u64,
                "eventType": "disconnected",
                "sessionIdentifier": SESSION,
                "principalIdentifier": "ab12",
                "versionNumber": 3,
                "clientInitiatedDisconnect": true,
                "disconnectReason": "CLIENT_INITIATED_DISCONNECT"
            })
        );
        let (_, v) = json_of(&e, Event::Disconnected(DisconnectReason::DuplicateClientid));
        assert_eq!(v["clientInitiatedDisconnect"], false);
        assert_eq!(v["disconnectReason"], "DUPLICATE_CLIENTID");
    }

    #[test]
    fn subscription_events_carry_topics_and_no_presence_fields() {
        let e = events("ab12", 3);
        let (topic, v) = json_of(&e, Event::Subscribed(&["a/b", "$aws/events/#"]));
        assert_eq!(topic, "$aws/events/subscriptions/subscribed/dev-1");
        assert_eq!(
            v,
            json!({
                "clientId": "dev-1",
                "timestamp": 1_573_002_230_757u64,
                "eventType": "subscribed",
                "sessionIdentifier": SESSION,
                "principalIdentifier": "ab12",
                "topics": ["a/b", "$aws/events/#"]
            })
        );
        let (topic, v) = json_of(&e, Event::Unsubscribed(&["x"]));
        assert_eq!(topic, "$aws/events/subscriptions/unsubscribed/dev-1");
        assert_eq!(v["eventType"], "unsubscribed");
        assert_eq!(v["topics"], json!(["x"]));
        assert!(v.get("versionNumber").is_none());
    }

    #[test]
    fn without_an_address_there_is_no_ip_address() {
        let e = events("AKIAEXAMPLE", 0);
        let (_, v) = json_of(&e, Event::Connected { ip: None });
        let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "clientId",
                "eventType",
                "principalIdentifier",
                "sessionIdentifier",
                "timestamp",
                "versionNumber"
            ]
        );
    }

    #[test]
    fn client_ids_with_wildcards_get_no_events() {
        let versions = Versions::default();
        for id in ["a+b", "#", "x/#", "+"] {
            let id: Arc<str> = id.into();
            assert!(Events::start(&versions, &id, "p").is_none(), "{id}");
        }
        assert!(versions.is_empty(), "and take no version number");
        let id: Arc<str> = "a/b$c".into();
        assert!(Events::start(&versions, &id, "p").is_some());
    }

    #[test]
    fn each_connection_has_its_own_session_identifier() {
        let versions = Versions::default();
        let id: Arc<str> = "c".into();
        let a = Events::start(&versions, &id, "p").unwrap();
        let b = Events::start(&versions, &id, "p").unwrap();
        assert_ne!(a.session, b.session);
        assert_eq!((a.version, b.version), (0, 1));
    }

    #[test]
    fn reason_names_are_iot_cores() {
        use DisconnectReason as R;
        let all = [
            (R::AuthError, "AUTH_ERROR"),
            (R::ClientInitiatedDisconnect, "CLIENT_INITIATED_DISCONNECT"),
            (R::ClientError, "CLIENT_ERROR"),
            (R::ConnectionLost, "CONNECTION_LOST"),
            (R::DuplicateClientid, "DUPLICATE_CLIENTID"),
            (R::ForbiddenAccess, "FORBIDDEN_ACCESS"),
            (R::MqttKeepAliveTimeout, "MQTT_KEEP_ALIVE_TIMEOUT"),
            (R::ServerError, "SERVER_ERROR"),
            (R::ServerInitiatedDisconnect, "SERVER_INITIATED_DISCONNECT"),
            (R::Throttled, "THROTTLED"),
            (R::CustomauthTtlExpiration, "CUSTOMAUTH_TTL_EXPIRATION"),
        ];
        for (r, name) in all {
            assert_eq!(r.to_string(), name);
            assert_eq!(serde_json::to_value(r).unwrap(), json!(name));
        }
    }

    #[test]
    fn versions_count_connections_and_reset_after_an_hour_offline() {
        let v = Versions::default();
        let t0 = Instant::now();
        let id: Arc<str> = "c".into();
        assert_eq!(v.acquire(&id, t0), 0);
        v.release(&id, t0);
        assert_eq!(v.acquire(&id, t0), 1, "the next connection");
        // A takeover: a second connection while the first still holds the id.
        assert_eq!(v.acquire(&id, t0), 2);
        v.release(&id, t0);
        assert_eq!(v.sweep(t0 + VERSION_RESET), 0, "still connected");
        v.release(&id, t0);
        let later = t0 + Duration::from_secs(59 * 60);
        assert_eq!(v.acquire(&id, later), 3, "59 minutes offline: kept");
        v.release(&id, later);
        assert_eq!(v.acquire(&id, later + VERSION_RESET), 0, "an hour: reset");
        v.release(&id, later + VERSION_RESET);
        assert_eq!(v.len(), 1);
        assert_eq!(
            v.sweep(later + VERSION_RESET * 2 - Duration::from_secs(1)),
            0
        );
        assert_eq!(v.sweep(later + VERSION_RESET * 2), 1);
        assert!(v.is_empty());
        v.release(&id, t0);
        assert!(v.is_empty(), "a release without an acquire holds nothing");
    }

    #[test]
    fn offline_versions_are_capped_oldest_first() {
        let v = Versions::default();
        let t = Instant::now();
        let ids: Vec<Arc<str>> = (0..OFFLINE_VERSIONS_CAP + 5)
            .map(|i| format!("c{i}").into())
            .collect();
        let live: Arc<str> = "connected".into();
        v.acquire(&live, t);
        for id in &ids {
            v.acquire(id, t);
            v.acquire(id, t);
            v.release(id, t);
            v.release(id, t);
        }
        assert_eq!(
            v.len(),
            OFFLINE_VERSIONS_CAP + 1,
            "the cap, plus the live one"
        );
        assert_eq!(v.acquire(&ids[0], t), 0, "the oldest was forgotten");
        assert_eq!(v.acquire(&ids[OFFLINE_VERSIONS_CAP + 4], t), 2, "kept");
        assert_eq!(v.acquire(&live, t), 1, "a live id is never evicted");
    }
}
