//! Who may connect and with which client id, end to end: custom auth without SNI, the empty
//! client id of each MQTT version, things attached to certificates and their policy variables,
//! and a custom authorizer's refreshAfterInSeconds and disconnectAfterInSeconds on live
//! connections.

mod common;

use common::*;
use iot_core_local::config::{Config, FILE_NAME};
use iot_core_local::init::{files, USERNAME};
use iot_core_local::mqtt::packet::{Packet, Publish, SubOptions, Subscribe};
use iot_core_local::mqtt::{frame, Frame, PropValue, Properties, Version};
use iot_core_local::tls::ALPN_MQTT;
use samples_common::custom_auth::{build_username, UsernameParts};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ARN: &str = "arn:aws:iot:us-east-1:123456789012";

/// A client that speaks MQTT packet by packet over its TLS connection and reports exactly what
/// the server sent, or that it closed.
struct Raw {
    tls: Tls,
    version: Version,
    buf: Vec<u8>,
}

impl Raw {
    async fn open(client: TlsClient<'_>, v: V) -> Raw {
        Raw {
            tls: client.connect().await.expect("TLS"),
            version: match v {
                V::V5 => Version::V5,
                V::V311 => Version::V311,
            },
            buf: Vec::new(),
        }
    }

    async fn send(&mut self, p: Packet) {
        self.send_bytes(&p.to_bytes(self.version)).await;
    }

    async fn send_bytes(&mut self, bytes: &[u8]) {
        self.tls.write_all(bytes).await.expect("send");
        self.tls.flush().await.expect("flush");
    }

    /// The next packet the server sends; `None` when it closes the connection first.
    async fn next(&mut self) -> Option<Packet> {
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

    /// Send CONNECT; the CONNACK's code and raw properties.
    async fn connect(&mut self, id: &str, user: Option<&str>, pw: Option<&[u8]>) -> (u8, Vec<u8>) {
        let v = match self.version {
            Version::V5 => V::V5,
            Version::V311 => V::V311,
        };
        self.send_bytes(&connect_packet(v, id, user, pw)).await;
        match self.next().await {
            Some(Packet::ConnAck {
                code, properties, ..
            }) => (code, properties),
            other => panic!("expected a CONNACK, saw {other:?}"),
        }
    }

    /// PUBLISH QoS 1 (packet id 7); the PUBACK's reason code, or `None` if the server closed.
    async fn publish(&mut self, topic: &str) -> Option<u8> {
        self.send(Packet::Publish(Publish {
            dup: false,
            qos: 1,
            retain: false,
            topic: topic.into(),
            pkid: 7,
            properties: Vec::new(),
            payload: b"x".to_vec(),
        }))
        .await;
        match self.next().await? {
            Packet::PubAck(a) => Some(a.reason),
            other => panic!("expected a PUBACK, saw {other:?}"),
        }
    }

    /// SUBSCRIBE QoS 1 to one filter; the SUBACK's code.
    async fn subscribe(&mut self, filter: &str) -> u8 {
        self.send(Packet::Subscribe(Subscribe {
            pkid: 3,
            properties: Vec::new(),
            filters: vec![(
                filter.into(),
                SubOptions {
                    qos: 1,
                    no_local: false,
                    retain_as_published: false,
                    retain_handling: 0,
                },
            )],
        }))
        .await;
        match self.next().await {
            Some(Packet::SubAck(s)) => s.codes[0],
            other => panic!("expected a SUBACK, saw {other:?}"),
        }
    }
}

/// The string property `id` of raw MQTT 5 properties.
fn string_property(properties: &[u8], id: u8) -> Option<String> {
    Properties::new(properties)
        .flatten()
        .find_map(|p| match p.value {
            PropValue::Str(s) if p.id == id => Some(s.to_string()),
            _ => None,
        })
}

fn custom(ep: &Endpoint) -> TlsClient<'_> {
    TlsClient {
        endpoint: ep,
        port: Port::P443,
        alpn: Some(ALPN_MQTT),
        client_cert: None,
    }
}

fn device(ep: &Endpoint) -> TlsClient<'_> {
    TlsClient {
        endpoint: ep,
        port: Port::P8883,
        alpn: None,
        client_cert: Some((files::DEVICE_CERT, files::DEVICE_KEY)),
    }
}

fn unsigned_username() -> String {
    build_username(&UsernameParts {
        username: Some(USERNAME),
        ..Default::default()
    })
    .unwrap()
}

/// Rewrite the account file after `change`.
fn edit_account(dir: &std::path::Path, change: impl FnOnce(&mut Config)) {
    let mut config = Config::load(dir).unwrap();
    change(&mut config);
    std::fs::write(dir.join(FILE_NAME), config.to_toml().unwrap()).unwrap();
    Config::load(dir).expect("the edited account loads");
}

/// Replace the device certificate's policies with `policy` alone.
fn with_device_policy(dir: &std::path::Path, policy: &str) {
    edit_account(dir, |config| {
        config.policies.insert("under-test".into(), policy.into());
        for cert in config.certificates.iter_mut() {
            cert.policies = vec!["under-test".into()];
        }
    });
}

// ---- SNI ----

#[tokio::test]
async fn custom_auth_without_sni_is_refused_as_a_failed_authorization() {
    let dir = rich_account("no-sni");
    let mut ep = Endpoint::start(&dir).await;
    let user = unsigned_username();
    let pw = ep.password();
    for v in [V::V5, V::V311] {
        let mut tls = custom(&ep).connect_without_sni().await.expect("TLS");
        let seen = send_connect(
            &mut tls,
            &connect_packet(v, "test-nosni", Some(&user), Some(pw.as_bytes())),
        )
        .await;
        match v {
            V::V5 => {
                let Seen::ConnAck {
                    code: 0x87,
                    reason: Some(r),
                } = &seen
                else {
                    panic!("expected CONNACK 0x87, saw {seen:?}")
                };
                assert!(
                    r.starts_with("Client is not authenticated/authorized to send the message:"),
                    "{r}"
                );
            }
            V::V311 => assert_eq!(seen, Seen::ClosedWithoutConnAck),
        }
        let d = ep.decision().await;
        assert!(!d.allowed, "{d}");
        assert!(
            d.detail.starts_with(
                "custom authentication needs SNI: the client's TLS ClientHello named no server"
            ),
            "{d}"
        );
    }

    // The same client with SNI is accepted, and mTLS without SNI is unchanged.
    let mut tls = custom(&ep).connect().await.expect("TLS");
    let seen = send_connect(
        &mut tls,
        &connect_packet(V::V5, "test-sni", Some(&user), Some(pw.as_bytes())),
    )
    .await;
    assert_eq!(
        seen,
        Seen::ConnAck {
            code: 0,
            reason: None
        }
    );
    assert!(ep.decision().await.allowed);
    let mut tls = device(&ep).connect_without_sni().await.expect("TLS");
    let seen = send_connect(&mut tls, &connect_packet(V::V5, "test-mtls", None, None)).await;
    assert_eq!(
        seen,
        Seen::ConnAck {
            code: 0,
            reason: None
        }
    );
    assert!(ep.decision().await.allowed);
}

// ---- The empty client id ----

#[tokio::test]
async fn an_empty_mqtt311_client_id_gets_connack_2() {
    let dir = rich_account("empty-311");
    let mut ep = Endpoint::start(&dir).await;
    let mut tls = device(&ep).connect().await.expect("TLS");
    let seen = send_connect(&mut tls, &connect_packet(V::V311, "", None, None)).await;
    assert_eq!(
        seen,
        Seen::ConnAck {
            code: 2,
            reason: None
        },
        "identifier rejected"
    );
    let d = ep.decision().await;
    assert!(!d.allowed, "{d}");
    assert_eq!(d.client_id.as_deref(), Some(""));
    assert!(
        d.detail.starts_with("the client id is empty (MQTT 3.1.1"),
        "{d}"
    );
}

#[tokio::test]
async fn an_empty_mqtt5_client_id_is_assigned_and_authorized_as_gen_uuid() {
    // init's policy allows client ids test-* only: the assigned id is refused.
    let dir = rich_account("empty-5-denied");
    let mut ep = Endpoint::start(&dir).await;
    let mut raw = Raw::open(device(&ep), V::V5).await;
    let (code, _) = raw.connect("", None, None).await;
    assert_eq!(code, 0x87);
    let d = ep.decision().await;
    assert!(!d.allowed, "{d}");
    let id = d.client_id.clone().expect("the id");
    assert!(id.starts_with("$GEN/"), "{d}");
    assert!(
        d.detail.ends_with(&format!(
            "no policy statement allows iot:Connect on {ARN}:client/{id}"
        )),
        "{d}"
    );

    // A policy that allows $GEN/ ids, and each client its own topics.
    let dir = rich_account("empty-5-allowed");
    with_device_policy(
        &dir,
        &format!(
            r#"{{"Version":"2012-10-17","Statement":[
            {{"Effect":"Allow","Action":"iot:Connect","Resource":"{ARN}:client/$GEN/*"}},
            {{"Effect":"Allow","Action":["iot:Publish","iot:Receive"],"Resource":"{ARN}:topic/own/${{iot:ClientId}}"}},
            {{"Effect":"Allow","Action":"iot:Subscribe","Resource":"{ARN}:topicfilter/own/${{iot:ClientId}}"}}]}}"#
        ),
    );
    let mut ep = Endpoint::start(&dir).await;
    let mut raw = Raw::open(device(&ep), V::V5).await;
    let (code, properties) = raw.connect("", None, None).await;
    assert_eq!(code, 0);
    let assigned = string_property(&properties, 0x12).expect("Assigned Client Identifier");
    let uuid = assigned.strip_prefix("$GEN/").expect("a $GEN/ id");
    assert_eq!(
        uuid::Uuid::parse_str(uuid)
            .expect("a UUID")
            .get_version_num(),
        4
    );
    let d = ep.decision().await;
    assert!(d.allowed, "{d}");
    assert_eq!(
        d.client_id.as_deref(),
        Some(assigned.as_str()),
        "authorized as the assigned id"
    );
    // ${iot:ClientId} is the assigned id, and the session delivers under it.
    let own = format!("own/{assigned}");
    assert_eq!(raw.subscribe(&own).await, 1);
    assert_eq!(raw.subscribe("own/$GEN/another").await, 0x87);
    assert_eq!(raw.publish(&own).await, Some(0));
    match raw.next().await {
        Some(Packet::Publish(p)) => assert_eq!(p.topic, own),
        other => panic!("expected its own message, saw {other:?}"),
    }
    let stats = ep.running.broker().expect("embedded").stats();
    assert_eq!(stats.connected, 1);
}

// ---- Things attached to certificates ----

#[tokio::test]
async fn thing_variables_come_from_the_thing_attached_to_the_certificate() {
    let dir = rich_account("things");
    edit_account(&dir, |config| {
        // init attached the device certificate to the thing test-device; give it a type and
        // an attribute.
        let thing = config
            .things
            .iter_mut()
            .find(|t| t.name == "test-device")
            .expect("init's thing");
        thing.thing_type = Some("sensor".into());
        thing.attributes.insert("room".into(), "lab".into());
    });
    with_device_policy(
        &dir,
        &format!(
            r#"{{"Version":"2012-10-17","Statement":[
            {{"Effect":"Allow","Action":"iot:Connect","Resource":["{ARN}:client/${{iot:Connection.Thing.ThingName}}","{ARN}:client/free-*"]}},
            {{"Effect":"Allow","Action":"iot:Publish","Resource":["{ARN}:topic/things/${{iot:Connection.Thing.ThingName}}/${{iot:Connection.Thing.Attributes[room]}}","{ARN}:topic/types/${{iot:Connection.Thing.ThingTypeName}}"]}},
            {{"Effect":"Allow","Action":"iot:Publish","Resource":"{ARN}:topic/attached","Condition":{{"Bool":{{"iot:Connection.Thing.IsAttached":"true"}}}}}}]}}"#
        ),
    );
    let mut ep = Endpoint::start(&dir).await;

    // The client id names the attached thing: its variables resolve.
    let mut raw = Raw::open(device(&ep), V::V5).await;
    assert_eq!(raw.connect("test-device", None, None).await.0, 0);
    assert!(ep.decision().await.allowed);
    assert_eq!(raw.publish("things/test-device/lab").await, Some(0));
    assert_eq!(raw.publish("types/sensor").await, Some(0));
    assert_eq!(raw.publish("attached").await, Some(0));
    assert_eq!(raw.publish("things/test-device/office").await, Some(0x87));

    // Another client id on the same certificate has no thing: ThingName matches nothing.
    let mut raw = Raw::open(device(&ep), V::V5).await;
    assert_eq!(raw.connect("test-other", None, None).await.0, 0x87);
    let d = ep.decision().await;
    assert!(!d.allowed, "{d}");
    assert!(
        d.detail.ends_with(&format!(
            "no policy statement allows iot:Connect on {ARN}:client/test-other"
        )),
        "{d}"
    );
    let mut raw = Raw::open(device(&ep), V::V5).await;
    assert_eq!(raw.connect("free-1", None, None).await.0, 0);
    assert!(ep.decision().await.allowed);
    assert_eq!(
        raw.publish("attached").await,
        Some(0x87),
        "IsAttached is false"
    );
    assert_eq!(raw.publish("types/sensor").await, Some(0x87));

    // MQTT 3.1.1 gets the same facts.
    let mut raw = Raw::open(device(&ep), V::V311).await;
    assert_eq!(raw.connect("test-device", None, None).await.0, 0);
    assert_eq!(raw.publish("things/test-device/lab").await, Some(0));
}

// ---- A custom authorizer on live connections ----

/// Publish on `test/*` (broad) or on `test/a` only (narrow); connect as `test-*`.
fn live_policy(topic: &str) -> String {
    format!(
        r#"{{\"Version\":\"2012-10-17\",\"Statement\":[{{\"Effect\":\"Allow\",\"Action\":\"iot:Connect\",\"Resource\":\"{ARN}:client/test-*\"}},{{\"Effect\":\"Allow\",\"Action\":\"iot:Publish\",\"Resource\":\"{ARN}:topic/{topic}\"}}]}}"#
    )
}

fn answer(allowed: bool, topic: &str, refresh: u64, disconnect: u64) -> String {
    let docs = if allowed {
        format!("\"{}\"", live_policy(topic))
    } else {
        String::new()
    };
    format!(
        r#"{{"isAuthenticated":{allowed},"principalId":"live","policyDocuments":[{docs}],"disconnectAfterInSeconds":{disconnect},"refreshAfterInSeconds":{refresh}}}"#
    )
}

/// The rich account plus two unsigned command authorizers: `live-authorizer` answers a broad
/// policy, a narrow one once `<dir>/narrow` exists, and denies once `<dir>/deny` exists
/// (refresh after 300 s); `ttl-authorizer` closes after 300 s.
fn live_account(name: &str) -> std::path::PathBuf {
    let dir = rich_account(name);
    let (narrow, deny) = (dir.join("narrow"), dir.join("deny"));
    let script = format!(
        "cat >/dev/null; if [ -e '{}' ]; then echo '{}'; elif [ -e '{}' ]; then echo '{}'; else echo '{}'; fi",
        deny.display(),
        answer(false, "", 300, 86400),
        narrow.display(),
        answer(true, "test/a", 300, 86400),
        answer(true, "test/*", 300, 86400),
    );
    let ttl = format!(
        "cat >/dev/null; echo '{}'",
        answer(true, "test/*", 86400, 300)
    );
    edit_account(&dir, |config| {
        let template = config
            .authorizers
            .iter()
            .find(|a| a.name == "denying-authorizer")
            .expect("the rich account's")
            .clone();
        for (name, script) in [("live-authorizer", script), ("ttl-authorizer", ttl)] {
            let mut a = template.clone();
            a.name = name.into();
            a.function = iot_core_local::config::Function::Command {
                argv: vec!["sh".into(), "-c".into(), script],
            };
            config.authorizers.push(a);
        }
    });
    // The device certificate watches the presence events.
    with_device_policy(
        &dir,
        &format!(
            r#"{{"Version":"2012-10-17","Statement":[
            {{"Effect":"Allow","Action":"iot:Connect","Resource":"{ARN}:client/test-watcher"}},
            {{"Effect":"Allow","Action":"iot:Subscribe","Resource":"{ARN}:topicfilter/$aws/events/presence/disconnected/+"}},
            {{"Effect":"Allow","Action":"iot:Receive","Resource":"{ARN}:topic/$aws/events/presence/disconnected/*"}}]}}"#
        ),
    );
    dir
}

/// An mTLS client subscribed to every presence disconnected event.
async fn disconnect_watcher(ep: &mut Endpoint) -> Raw {
    let mut raw = Raw::open(device(ep), V::V5).await;
    assert_eq!(raw.connect("test-watcher", None, None).await.0, 0);
    assert!(ep.decision().await.allowed);
    assert_eq!(
        raw.subscribe("$aws/events/presence/disconnected/+").await,
        1
    );
    raw
}

/// The next disconnected events: client id -> (disconnectReason, clientInitiatedDisconnect).
async fn disconnect_reasons(
    watcher: &mut Raw,
    n: usize,
) -> std::collections::BTreeMap<String, (String, bool)> {
    let mut seen = std::collections::BTreeMap::new();
    while seen.len() < n {
        let Some(Packet::Publish(p)) = watcher.next().await else {
            panic!("expected a disconnected event")
        };
        let event: serde_json::Value = serde_json::from_slice(&p.payload).expect("JSON");
        seen.insert(
            event["clientId"].as_str().expect("clientId").to_string(),
            (
                event["disconnectReason"]
                    .as_str()
                    .expect("disconnectReason")
                    .to_string(),
                event["clientInitiatedDisconnect"]
                    .as_bool()
                    .expect("clientInitiatedDisconnect"),
            ),
        );
    }
    seen
}

/// One authorizer second lasts 2 ms: refreshAfterInSeconds 300 elapses after 0.6 s.
async fn live_endpoint(dir: &std::path::Path) -> Endpoint {
    Endpoint::start_with(
        dir,
        iot_core_local::server::ServeOptions {
            authorizer_second: Some(std::time::Duration::from_millis(2)),
            ..Default::default()
        },
    )
    .await
}

fn username(authorizer: &str) -> String {
    build_username(&UsernameParts {
        username: Some("device"),
        authorizer: Some(authorizer),
        ..Default::default()
    })
    .unwrap()
}

/// The reason code and reason string of the DISCONNECT the server sends next, then the close.
async fn disconnected(raw: &mut Raw) -> (u8, Option<String>) {
    let seen = match raw.next().await {
        Some(Packet::Disconnect(d)) => (d.reason, string_property(&d.properties, 0x1F)),
        other => panic!("expected a DISCONNECT, saw {other:?}"),
    };
    assert!(raw.next().await.is_none(), "closed after the DISCONNECT");
    seen
}

#[tokio::test]
async fn a_refresh_replaces_the_policies_and_a_denying_refresh_closes_the_connection() {
    let dir = live_account("refresh");
    let mut ep = live_endpoint(&dir).await;
    let mut watcher = disconnect_watcher(&mut ep).await;
    let user = username("live-authorizer");
    let mut v5 = Raw::open(custom(&ep), V::V5).await;
    assert_eq!(v5.connect("test-live5", Some(&user), None).await.0, 0);
    assert!(ep.decision().await.allowed);
    let mut v311 = Raw::open(custom(&ep), V::V311).await;
    assert_eq!(v311.connect("test-live3", Some(&user), None).await.0, 0);
    assert!(ep.decision().await.allowed);
    assert_eq!(v5.publish("test/b").await, Some(0), "the CONNECT's policy");

    // From the next refresh on, only test/a.
    std::fs::write(dir.join("narrow"), "").unwrap();
    let mut denied = false;
    for _ in 0..100 {
        if v5.publish("test/b").await == Some(0x87) {
            denied = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(denied, "a refresh replaced the policy within 10 s");
    assert_eq!(v5.publish("test/a").await, Some(0));
    assert_eq!(v311.publish("test/a").await, Some(0));

    // A refresh that denies: DISCONNECT 0x87 (5), closed (3.1.1).
    std::fs::write(dir.join("deny"), "").unwrap();
    assert_eq!(
        disconnected(&mut v5).await,
        (
            0x87,
            Some(
                "Not authorized: the custom authorizer's refresh did not authorize the connection"
                    .into()
            )
        )
    );
    assert!(v311.next().await.is_none(), "3.1.1: closed, nothing sent");
    let auth_error = ("AUTH_ERROR".to_string(), false);
    assert_eq!(
        disconnect_reasons(&mut watcher, 2).await,
        [
            ("test-live3".to_string(), auth_error.clone()),
            ("test-live5".to_string(), auth_error)
        ]
        .into()
    );
}

#[tokio::test]
async fn disconnect_after_in_seconds_closes_the_connection() {
    let dir = live_account("ttl");
    let mut ep = live_endpoint(&dir).await;
    let mut watcher = disconnect_watcher(&mut ep).await;
    let user = username("ttl-authorizer");
    let mut v5 = Raw::open(custom(&ep), V::V5).await;
    assert_eq!(v5.connect("test-ttl5", Some(&user), None).await.0, 0);
    assert!(ep.decision().await.allowed);
    let mut v311 = Raw::open(custom(&ep), V::V311).await;
    assert_eq!(v311.connect("test-ttl3", Some(&user), None).await.0, 0);
    assert!(ep.decision().await.allowed);
    assert_eq!(
        disconnected(&mut v5).await,
        (0x87, Some("disconnectAfterInSeconds elapsed".into()))
    );
    assert!(v311.next().await.is_none(), "3.1.1: closed, nothing sent");
    let expired = ("CUSTOMAUTH_TTL_EXPIRATION".to_string(), false);
    assert_eq!(
        disconnect_reasons(&mut watcher, 2).await,
        [
            ("test-ttl3".to_string(), expired.clone()),
            ("test-ttl5".to_string(), expired)
        ]
        .into()
    );
}
