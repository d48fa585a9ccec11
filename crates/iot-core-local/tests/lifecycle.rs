//! Lifecycle events end to end (`$aws/events/presence/...` and `$aws/events/subscriptions/...`):
//! what a watcher allowed to subscribe and receive them sees about other clients, over MQTT 5 and
//! 3.1.1, for each way a connection ends; and that a watcher without `iot:Receive` and a client
//! id with `+` see or cause nothing. The clients are written from the MQTT specifications.

mod common;

use std::collections::VecDeque;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use iot_core_local::config::{Config, FILE_NAME};
use iot_core_local::init::{files, init, InitOptions, USERNAME};
use iot_core_local::mqtt::packet::{Ack, Packet, Publish, SubOptions, Subscribe, Unsubscribe};
use iot_core_local::mqtt::{frame, Frame, Version};
use iot_core_local::tls::ALPN_MQTT;
use rustls::pki_types::pem::PemObject;
use samples_common::custom_auth::{build_username, UsernameParts};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Connect as `test-*`; publish, receive and subscribe on `test/...`; subscribe to
/// `$aws/events/...` filters; receive `$aws/events/...` only as a `test-watcher*` client.
const WATCHER_POLICY: &str = r#"{"Version":"2012-10-17","Statement":[
    {"Effect":"Allow","Action":"iot:Connect","Resource":"arn:aws:iot:us-east-1:123456789012:client/test-*"},
    {"Effect":"Allow","Action":["iot:Publish","iot:Receive"],"Resource":"arn:aws:iot:us-east-1:123456789012:topic/test/*"},
    {"Effect":"Allow","Action":"iot:Subscribe","Resource":["arn:aws:iot:us-east-1:123456789012:topicfilter/test/*","arn:aws:iot:us-east-1:123456789012:topicfilter/$aws/events/*"]},
    {"Effect":"Allow","Action":"iot:Receive","Resource":"arn:aws:iot:us-east-1:123456789012:topic/$aws/events/*","Condition":{"StringLike":{"iot:ClientId":"test-watcher*"}}}]}"#;

/// init's account, with [`WATCHER_POLICY`] as the device certificate's only policy.
fn account(name: &str) -> std::path::PathBuf {
    let dir = account_dir(name);
    init(&InitOptions {
        dir: dir.clone(),
        force: true,
        port_443: 0,
        port_8883: 0,
    })
    .expect("init");
    let mut config = Config::load(&dir).unwrap();
    config
        .policies
        .insert("watcher".into(), WATCHER_POLICY.into());
    for cert in config.certificates.iter_mut() {
        cert.policies = vec!["watcher".into()];
    }
    std::fs::write(dir.join(FILE_NAME), config.to_toml().unwrap()).unwrap();
    dir
}

/// The device certificate's id as IoT Core would give it: the hex SHA-256 of its DER.
fn device_certificate_id(ep: &Endpoint) -> String {
    let der = rustls::pki_types::CertificateDer::pem_file_iter(ep.file(files::DEVICE_CERT))
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    iot_core_local::mtls::fingerprint(&der)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn presence(kind: &str, id: &str) -> String {
    format!("$aws/events/presence/{kind}/{id}")
}

fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    k.sort_unstable();
    k
}

/// Wait until the broker has `n` connected clients: a connection that ended has published its
/// disconnected event by then.
async fn connected_clients(ep: &Endpoint, n: usize) {
    let broker = ep.running.broker().expect("the embedded broker");
    tokio::time::timeout(TIMEOUT, async {
        while broker.stats().connected != n {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{:?}, expected {n} connected", broker.stats()));
}

/// A raw MQTT client after its CONNACK 0.
struct Client {
    tls: Tls,
    version: Version,
    buf: Vec<u8>,
    /// Messages read while waiting for an acknowledgement.
    held: VecDeque<Publish>,
}

impl Client {
    /// Over mTLS with the device certificate, on 8883.
    async fn device(ep: &Endpoint, v: V, id: &str) -> Client {
        let client = TlsClient {
            endpoint: ep,
            port: Port::P8883,
            alpn: None,
            client_cert: Some((files::DEVICE_CERT, files::DEVICE_KEY)),
        };
        Client::connect(client, v, id, None, None).await
    }

    /// With init's unsigned authorizer (principalId `demoUser`), on 443.
    async fn custom_auth(ep: &Endpoint, v: V, id: &str) -> Client {
        let client = TlsClient {
            endpoint: ep,
            port: Port::P443,
            alpn: Some(ALPN_MQTT),
            client_cert: None,
        };
        let password = ep.password();
        let username = build_username(&UsernameParts {
            username: Some(USERNAME),
            ..Default::default()
        })
        .unwrap();
        Client::connect(client, v, id, Some(&username), Some(password.as_bytes())).await
    }

    async fn connect(
        client: TlsClient<'_>,
        v: V,
        id: &str,
        user: Option<&str>,
        password: Option<&[u8]>,
    ) -> Client {
        let mut tls = client.connect().await.expect("TLS");
        let seen = send_connect(&mut tls, &connect_packet(v, id, user, password)).await;
        assert_eq!(
            seen,
            Seen::ConnAck {
                code: 0,
                reason: None
            },
            "{id} connects"
        );
        Client {
            tls,
            version: if v == V::V5 {
                Version::V5
            } else {
                Version::V311
            },
            buf: Vec::new(),
            held: VecDeque::new(),
        }
    }

    async fn send(&mut self, p: Packet) {
        self.tls.write_all(&p.to_bytes(self.version)).await.unwrap();
        self.tls.flush().await.unwrap();
    }

    /// The next packet from the server; `None` when it closes the connection.
    async fn packet(&mut self) -> Option<Packet> {
        loop {
            if let Ok(Frame::Complete { len }) = frame(&self.buf, usize::MAX) {
                let bytes: Vec<u8> = self.buf.drain(..len).collect();
                return Some(Packet::decode(self.version, &bytes).expect("a valid packet"));
            }
            let mut chunk = [0u8; 4096];
            match tokio::time::timeout(TIMEOUT, self.tls.read(&mut chunk))
                .await
                .expect("a packet or a close within the timeout")
            {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    async fn ack(&mut self, p: &Publish) {
        if p.qos == 1 {
            let ack = Packet::PubAck(Ack {
                pkid: p.pkid,
                reason: 0,
                properties: Vec::new(),
            });
            self.send(ack).await;
        }
    }

    /// The next packet that is not a PUBLISH (those are acknowledged and held).
    async fn reply(&mut self) -> Packet {
        loop {
            match self.packet().await.expect("a reply, not a close") {
                Packet::Publish(p) => {
                    self.ack(&p).await;
                    self.held.push_back(p);
                }
                other => return other,
            }
        }
    }

    /// The next message delivered (acknowledged).
    async fn message(&mut self) -> Publish {
        if let Some(p) = self.held.pop_front() {
            return p;
        }
        match self.packet().await.expect("a message, not a close") {
            Packet::Publish(p) => {
                self.ack(&p).await;
                p
            }
            other => panic!("expected a PUBLISH, got {other:?}"),
        }
    }

    /// The payload of the next message on `topic`, skipping messages on other topics.
    async fn event(&mut self, topic: &str) -> Value {
        loop {
            let m = self.message().await;
            if m.topic == topic {
                assert_eq!(m.qos, 1, "lifecycle events are QoS 1");
                assert!(!m.retain, "and not retained");
                return serde_json::from_slice(&m.payload).expect("a JSON event");
            }
        }
    }

    /// Publish on `topic` (QoS 1) and wait for the PUBACK; its reason code.
    async fn publish(&mut self, topic: &str) -> u8 {
        self.send(Packet::Publish(Publish {
            dup: false,
            qos: 1,
            retain: false,
            topic: topic.into(),
            pkid: 7,
            properties: Vec::new(),
            payload: b"sync".to_vec(),
        }))
        .await;
        match self.reply().await {
            Packet::PubAck(a) => a.reason,
            other => panic!("expected a PUBACK, got {other:?}"),
        }
    }

    /// The topics of the messages before our own message on `topic`, which this client
    /// subscribed to: everything that was routed to it before it published.
    async fn until_own_message(&mut self, topic: &str) -> Vec<String> {
        assert_eq!(self.publish(topic).await, 0);
        let mut before = Vec::new();
        loop {
            let m = self.message().await;
            if m.topic == topic {
                return before;
            }
            before.push(m.topic);
        }
    }

    async fn subscribe(&mut self, filters: &[&str]) -> Vec<u8> {
        let options = SubOptions {
            qos: 1,
            no_local: false,
            retain_as_published: false,
            retain_handling: 0,
        };
        self.send(Packet::Subscribe(Subscribe {
            pkid: 1,
            properties: Vec::new(),
            filters: filters.iter().map(|f| (f.to_string(), options)).collect(),
        }))
        .await;
        match self.reply().await {
            Packet::SubAck(a) => a.codes,
            other => panic!("expected a SUBACK, got {other:?}"),
        }
    }

    async fn unsubscribe(&mut self, filters: &[&str]) {
        self.send(Packet::Unsubscribe(Unsubscribe {
            pkid: 2,
            properties: Vec::new(),
            filters: filters.iter().map(|f| f.to_string()).collect(),
        }))
        .await;
        match self.reply().await {
            Packet::UnsubAck(_) => {}
            other => panic!("expected an UNSUBACK, got {other:?}"),
        }
    }

    /// Send DISCONNECT and wait for the server to close.
    async fn disconnect(mut self) {
        self.tls.write_all(&[0xE0, 0x00]).await.unwrap();
        self.tls.flush().await.unwrap();
        self.closed().await;
    }

    /// Read until the server closes; the packets it sent first.
    async fn closed(&mut self) -> Vec<Packet> {
        let mut seen = Vec::new();
        while let Some(p) = self.packet().await {
            seen.push(p);
        }
        seen
    }
}

/// A watcher subscribed to `$aws/events/#` and to its own `test/sync/<id>`.
async fn watcher(ep: &Endpoint, v: V, id: &str) -> Client {
    let mut w = Client::device(ep, v, id).await;
    let sync = format!("test/sync/{id}");
    assert_eq!(w.subscribe(&["$aws/events/#", &sync]).await, [1, 1]);
    w
}

#[tokio::test]
async fn a_watcher_sees_connected_and_disconnected_over_both_versions() {
    let dir = account("lifecycle-presence");
    let ep = Endpoint::start(&dir).await;
    let certificate_id = device_certificate_id(&ep);
    for (wv, ov, other) in [
        (V::V5, V::V311, "test-other-311"),
        (V::V311, V::V5, "test-other-5"),
    ] {
        let mut w = watcher(&ep, wv, &format!("test-watcher-{other}")).await;
        let mut sessions = Vec::new();
        for version in 0..2u64 {
            let before = now_ms();
            let o = Client::device(&ep, ov, other).await;
            let c = w.event(&presence("connected", other)).await;
            assert_eq!(
                keys(&c),
                [
                    "clientId",
                    "eventType",
                    "ipAddress",
                    "principalIdentifier",
                    "sessionIdentifier",
                    "timestamp",
                    "versionNumber"
                ],
                "{c}"
            );
            assert_eq!(c["clientId"], other);
            assert_eq!(c["eventType"], "connected");
            assert_eq!(c["ipAddress"], "127.0.0.1");
            assert_eq!(c["principalIdentifier"], certificate_id.as_str());
            assert_eq!(c["versionNumber"], version, "+1 per connection: {c}");
            let stamp = c["timestamp"].as_u64().expect("ms since the epoch");
            assert!(before <= stamp && stamp <= now_ms(), "{c}");
            let session = c["sessionIdentifier"].as_str().unwrap().to_string();
            assert_eq!(
                uuid::Uuid::parse_str(&session).unwrap().to_string(),
                session
            );

            o.disconnect().await;
            let d = w.event(&presence("disconnected", other)).await;
            assert_eq!(
                keys(&d),
                [
                    "clientId",
                    "clientInitiatedDisconnect",
                    "disconnectReason",
                    "eventType",
                    "principalIdentifier",
                    "sessionIdentifier",
                    "timestamp",
                    "versionNumber"
                ],
                "{d}"
            );
            assert_eq!(d["eventType"], "disconnected");
            assert_eq!(d["clientInitiatedDisconnect"], true);
            assert_eq!(d["disconnectReason"], "CLIENT_INITIATED_DISCONNECT");
            assert_eq!(d["versionNumber"], version, "the pair has one number");
            assert_eq!(d["sessionIdentifier"], session.as_str());
            assert_eq!(d["principalIdentifier"], certificate_id.as_str());
            sessions.push(session);
        }
        assert_ne!(sessions[0], sessions[1], "a new session per connection");
        w.disconnect().await;
    }

    // Custom auth: the principal is the authorizer's principalId.
    let mut w = watcher(&ep, V::V5, "test-watcher-custom").await;
    let c = Client::custom_auth(&ep, V::V5, "test-custom").await;
    let e = w.event(&presence("connected", "test-custom")).await;
    assert_eq!(e["principalIdentifier"], "demoUser");
    c.disconnect().await;
    let e = w.event(&presence("disconnected", "test-custom")).await;
    assert_eq!(e["principalIdentifier"], "demoUser");
}

#[tokio::test]
async fn each_way_a_connection_ends_has_its_disconnect_reason() {
    let dir = account("lifecycle-reasons");
    let ep = Endpoint::start(&dir).await;
    let mut w = watcher(&ep, V::V5, "test-watcher").await;

    // Takeover: the old connection gets DISCONNECT 0x8E (MQTT 5) and DUPLICATE_CLIENTID.
    let mut old = Client::device(&ep, V::V5, "test-dup").await;
    let first = w.event(&presence("connected", "test-dup")).await;
    let new = Client::device(&ep, V::V5, "test-dup").await;
    let seen = old.closed().await;
    assert!(
        matches!(&seen[..], [Packet::Disconnect(d)] if d.reason == 0x8E),
        "{seen:?}"
    );
    let d = w.event(&presence("disconnected", "test-dup")).await;
    assert_eq!(d["disconnectReason"], "DUPLICATE_CLIENTID");
    assert_eq!(d["clientInitiatedDisconnect"], false);
    assert_eq!(d["versionNumber"], 0);
    assert_eq!(d["sessionIdentifier"], first["sessionIdentifier"]);
    // The new connection's event may come before or after the old one's disconnected.
    let mut w2 = watcher(&ep, V::V311, "test-watcher-2").await;
    drop(new); // and now the TCP connection is dropped without DISCONNECT
    let lost = w2.event(&presence("disconnected", "test-dup")).await;
    assert_eq!(lost["disconnectReason"], "CONNECTION_LOST");
    assert_eq!(lost["clientInitiatedDisconnect"], false);
    assert_eq!(lost["versionNumber"], 1, "the connection that took over");
    w2.disconnect().await;

    // MQTT 3.1.1: a denied PUBLISH closes the connection: FORBIDDEN_ACCESS.
    let mut c = Client::device(&ep, V::V311, "test-forbidden").await;
    c.send(Packet::Publish(Publish {
        dup: false,
        qos: 1,
        retain: false,
        topic: "forbidden/topic".into(),
        pkid: 1,
        properties: Vec::new(),
        payload: b"no".to_vec(),
    }))
    .await;
    assert_eq!(c.closed().await, [], "closed without a PUBACK");
    let d = w.event(&presence("disconnected", "test-forbidden")).await;
    assert_eq!(d["disconnectReason"], "FORBIDDEN_ACCESS");
    assert_eq!(d["clientInitiatedDisconnect"], false);

    // A second CONNECT: CLIENT_ERROR, after DISCONNECT 0x82 over MQTT 5.
    let mut c = Client::device(&ep, V::V5, "test-twice").await;
    c.tls
        .write_all(&connect_packet(V::V5, "test-twice", None, None))
        .await
        .unwrap();
    let seen = c.closed().await;
    assert!(
        matches!(&seen[..], [Packet::Disconnect(d)] if d.reason == 0x82),
        "{seen:?}"
    );
    let d = w.event(&presence("disconnected", "test-twice")).await;
    assert_eq!(d["disconnectReason"], "CLIENT_ERROR");
}

#[tokio::test]
async fn subscription_events_carry_the_topics() {
    let dir = account("lifecycle-subscriptions");
    let ep = Endpoint::start(&dir).await;
    for (v, id, denied) in [(V::V5, "test-sub-5", 0x87), (V::V311, "test-sub-311", 0x80)] {
        let mut w = watcher(&ep, V::V5, &format!("test-watcher-{id}")).await;
        let mut c = Client::device(&ep, v, id).await;
        let codes = c.subscribe(&["test/a", "forbidden/x", "test/b/#"]).await;
        assert_eq!(codes, [1, denied, 1]);
        let e = w
            .event(&format!("$aws/events/subscriptions/subscribed/{id}"))
            .await;
        assert_eq!(
            keys(&e),
            [
                "clientId",
                "eventType",
                "principalIdentifier",
                "sessionIdentifier",
                "timestamp",
                "topics"
            ],
            "{e}"
        );
        assert_eq!(e["eventType"], "subscribed");
        assert_eq!(e["clientId"], id);
        assert_eq!(
            e["topics"],
            serde_json::json!(["test/a", "test/b/#"]),
            "the granted filters"
        );

        // Nothing granted: no event.
        assert_eq!(c.subscribe(&["forbidden/y"]).await, [denied]);
        c.unsubscribe(&["test/a", "never/subscribed"]).await;
        let e = w
            .event(&format!("$aws/events/subscriptions/unsubscribed/{id}"))
            .await;
        assert_eq!(e["eventType"], "unsubscribed");
        assert_eq!(
            e["topics"],
            serde_json::json!(["test/a", "never/subscribed"]),
            "the filters sent"
        );
        c.disconnect().await;
        w.disconnect().await;
    }
}

#[tokio::test]
async fn a_watcher_without_receive_and_a_wildcard_client_id_see_and_cause_nothing() {
    let dir = account("lifecycle-silent");
    let ep = Endpoint::start(&dir).await;
    let mut w = watcher(&ep, V::V5, "test-watcher").await;
    // Allowed to subscribe, not to receive.
    let mut blind = watcher(&ep, V::V311, "test-blind").await;

    let mut plus = Client::device(&ep, V::V5, "test-a+b").await;
    assert_eq!(plus.subscribe(&["test/plus"]).await, [1]);
    plus.unsubscribe(&["test/plus"]).await;
    plus.disconnect().await;
    connected_clients(&ep, 2).await;
    let seen = Client::device(&ep, V::V311, "test-seen").await;
    seen.disconnect().await;
    connected_clients(&ep, 2).await;

    let before = w.until_own_message("test/sync/test-watcher").await;
    assert!(
        before.iter().all(|t| !t.contains("test-a+b")),
        "no event for a client id with '+': {before:?}"
    );
    assert!(
        before.contains(&presence("connected", "test-seen"))
            && before.contains(&presence("disconnected", "test-seen")),
        "but for the others: {before:?}"
    );
    assert_eq!(
        blind.until_own_message("test/sync/test-blind").await,
        Vec::<String>::new(),
        "iot:Receive denied: no event delivered, not even its own subscribed"
    );
}

#[tokio::test]
async fn over_sigv4_the_principal_is_the_access_key_id() {
    use futures_util::StreamExt;
    let dir = account("lifecycle-sigv4");
    let ep = Endpoint::start(&dir).await;
    let mut w = watcher(&ep, V::V5, "test-watcher").await;

    let key = ep
        .config
        .credentials
        .iter()
        .find(|k| k.session_token.is_none())
        .unwrap();
    let creds = aws_credential_types::Credentials::new(
        &key.access_key_id,
        &key.secret_access_key,
        None,
        None,
        "test",
    );
    let host = format!("localhost:{}", ep.running.addr_443.port());
    let signed = samples_common::websocket::presign(&host, "us-east-1", &creds, SystemTime::now());
    let tls = TlsClient {
        endpoint: &ep,
        port: Port::P443,
        alpn: None,
        client_cert: None,
    }
    .connect()
    .await
    .unwrap();
    let request = http::Request::builder()
        .uri(format!("wss://{host}{}", signed.path_and_query))
        .header("Host", &host)
        .header("Connection", "Upgrade")
        .header("Upgrade", "websocket")
        .header("Sec-WebSocket-Version", "13")
        .header(
            "Sec-WebSocket-Key",
            tungstenite::handshake::client::generate_key(),
        )
        .header("Sec-WebSocket-Protocol", "mqtt")
        .body(())
        .unwrap();
    let (mut ws, _) = async_tungstenite::tokio::client_async(request, tls)
        .await
        .expect("upgrade");
    ws.send(tungstenite::Message::binary(connect_packet(
        V::V311,
        "test-sigv4",
        None,
        None,
    )))
    .await
    .unwrap();
    let connack = tokio::time::timeout(TIMEOUT, ws.next())
        .await
        .expect("an answer");
    assert!(
        matches!(&connack, Some(Ok(tungstenite::Message::Binary(b))) if b[..] == [0x20, 2, 0, 0]),
        "CONNACK 0: {connack:?}"
    );

    let c = w.event(&presence("connected", "test-sigv4")).await;
    assert_eq!(c["principalIdentifier"], key.access_key_id.as_str());
    assert_eq!(c["ipAddress"], "127.0.0.1");
    drop(ws);
    let d = w.event(&presence("disconnected", "test-sigv4")).await;
    assert_eq!(d["principalIdentifier"], key.access_key_id.as_str());
    assert_eq!(d["disconnectReason"], "CONNECTION_LOST");
}
