//! IoT Core's limits, reserved topics and lifecycle events as a rumqttc user sees them, for
//! MQTT 5 (`rumqttc::v5`) and MQTT 3.1.1 (`rumqttc`), over mTLS to an in-process endpoint. The
//! byte-level tests (`broker_limits.rs`, `lifecycle.rs`) assert the packets on the wire; these
//! assert what the client library hands its user: the incoming packet with its reason code, or
//! the error the event loop returns when the server ends the connection.
//!
//! What rumqttc 0.25 shows of a server's close:
//! - MQTT 5: the event loop returns `MqttState(ServerDisconnect { reason_code, reason_string })`
//!   as soon as it reads the DISCONNECT. The `Event::Incoming(Disconnect)` it queues at the same
//!   time would only be handed out by a later `poll`, which first reconnects: the error is what
//!   a user sees. These tests assert the error, and read the queued packet from
//!   `EventLoop::state.events` without polling again.
//! - MQTT 3.1.1: the server closes without a packet; the event loop returns
//!   `MqttState(ConnectionAborted)` (the stream ended).

mod common;

use common::rumqttc_clients::*;
use common::*;
use iot_core_local::config::{Config, FILE_NAME};
use iot_core_local::init::{files, init, InitOptions};
use rumqttc::v5::mqttbytes::v5::{
    DisconnectReasonCode as D5, Filter, Packet as P5, PubAckReason, SubscribeReasonCode as R5,
};
use rumqttc::v5::mqttbytes::QoS as Q5;
use rumqttc::{Outgoing, Packet as P, QoS, SubscribeFilter, SubscribeReasonCode as R3};

const ARN: &str = "arn:aws:iot:us-east-1:123456789012";

/// Added to init's policy (client ids `test-*`, each client its own `test/<clientId>/...`):
/// every client on all of `test/...` and on the `$aws/...` topics and filters, and the client
/// ids IoT Core assigns to an empty MQTT 5 one. What decides in these tests is IoT Core's limits
/// and reserved-topic rules, not the policy.
fn extra_policy() -> String {
    format!(
        r#"{{"Version":"2012-10-17","Statement":[
        {{"Effect":"Allow","Action":"iot:Connect","Resource":"{ARN}:client/$GEN/*"}},
        {{"Effect":"Allow","Action":["iot:Publish","iot:RetainPublish","iot:Receive"],"Resource":["{ARN}:topic/test/*","{ARN}:topic/$aws/*"]}},
        {{"Effect":"Allow","Action":"iot:Subscribe","Resource":["{ARN}:topicfilter/test/*","{ARN}:topicfilter/$aws/*"]}}]}}"#
    )
}

/// init's account with [`extra_policy`] added to the device certificate, served.
async fn endpoint(name: &str) -> Endpoint {
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
        .insert("rumqttc-extra".into(), extra_policy());
    for cert in config.certificates.iter_mut() {
        cert.policies.push("rumqttc-extra".into());
    }
    std::fs::write(dir.join(FILE_NAME), config.to_toml().unwrap()).unwrap();
    Endpoint::start(&dir).await
}

fn v5(ep: &Endpoint, id: &str) -> (rumqttc::v5::AsyncClient, rumqttc::v5::EventLoop) {
    rumqttc::v5::AsyncClient::new(v5_options(ep, id), 10)
}

fn v311(ep: &Endpoint, id: &str) -> (rumqttc::AsyncClient, rumqttc::EventLoop) {
    client(options(ep, id))
}

/// `test/a/a/...` with `levels` levels, the last padded with `x` to `bytes` bytes.
fn topic_of(levels: usize, bytes: usize) -> String {
    let mut t = std::iter::once("test")
        .chain(std::iter::repeat_n("a", levels - 1))
        .collect::<Vec<_>>()
        .join("/");
    t.push_str(&"x".repeat(bytes - t.len()));
    t
}

async fn puback5(ev: &mut rumqttc::v5::EventLoop) -> PubAckReason {
    until5(ev, |p| match p {
        P5::PubAck(a) => Some(a.reason),
        _ => None,
    })
    .await
}

async fn suback5(ev: &mut rumqttc::v5::EventLoop) -> Vec<R5> {
    until5(ev, |p| match p {
        P5::SubAck(s) => Some(s.return_codes.clone()),
        _ => None,
    })
    .await
}

async fn publish5(ev: &mut rumqttc::v5::EventLoop) -> rumqttc::v5::mqttbytes::v5::Publish {
    until5(ev, |p| match p {
        P5::Publish(m) => Some(m.clone()),
        _ => None,
    })
    .await
}

/// The packet id of the next PUBACK (3.1.1 has no reason code: a PUBACK is a success).
async fn puback(ev: &mut rumqttc::EventLoop) -> u16 {
    until(ev, |p| match p {
        P::PubAck(a) => Some(a.pkid),
        _ => None,
    })
    .await
}

/// The server's MQTT 5 DISCONNECT as rumqttc reports it: its reason code and reason string
/// (the client asked for problem information, rumqttc's default), from the error `poll`
/// returns; the incoming DISCONNECT queued behind that error says the same.
async fn server_disconnect(ev: &mut rumqttc::v5::EventLoop) -> (D5, String) {
    let (code, why) = match closed5(ev).await {
        rumqttc::v5::ConnectionError::MqttState(rumqttc::v5::StateError::ServerDisconnect {
            reason_code,
            reason_string,
        }) => (reason_code, reason_string.expect("a reason string")),
        other => panic!("expected the server's DISCONNECT, got {other:?}"),
    };
    match ev.state.events.back() {
        Some(rumqttc::v5::Event::Incoming(P5::Disconnect(d))) => {
            assert_eq!(d.reason_code, code, "the queued DISCONNECT");
        }
        other => panic!("expected the server's DISCONNECT queued, got {other:?}"),
    }
    (code, why)
}

/// The server closed a 3.1.1 connection without sending anything: rumqttc's stream ended.
async fn assert_closed(ev: &mut rumqttc::EventLoop, what: &str) {
    let e = closed(ev).await;
    assert!(
        matches!(
            e,
            rumqttc::ConnectionError::MqttState(rumqttc::StateError::ConnectionAborted)
        ),
        "{what}: expected the connection closed by the server, got {e:?}"
    );
}

#[tokio::test]
async fn mqtt5_topic_names_over_256_bytes_or_7_slashes_get_disconnect_0x90() {
    let ep = endpoint("rumqttc-names5").await;
    let longest = topic_of(8, 256);
    assert_eq!((longest.len(), longest.matches('/').count()), (256, 7));
    let ingest = format!("$aws/rules/my_rule/{}", topic_of(8, 40));

    let (c, mut ev) = v5(&ep, "test-names5");
    c.publish(&longest, Q5::AtLeastOnce, false, "fits")
        .await
        .unwrap();
    assert_eq!(puback5(&mut ev).await, PubAckReason::Success, "256 bytes");
    c.publish(&ingest, Q5::AtLeastOnce, false, "ingested")
        .await
        .unwrap();
    assert_eq!(
        puback5(&mut ev).await,
        PubAckReason::Success,
        "the Basic Ingest prefix is not counted: {ingest}"
    );
    c.publish(topic_of(8, 257), Q5::AtLeastOnce, false, "long")
        .await
        .unwrap();
    let (code, why) = server_disconnect(&mut ev).await;
    assert_eq!(code, D5::TopicNameInvalid);
    assert!(why.contains("257 bytes"), "reason string: {why}");

    let (c, mut ev) = v5(&ep, "test-names5");
    c.publish(topic_of(9, 30), Q5::AtLeastOnce, false, "deep")
        .await
        .unwrap();
    let (code, why) = server_disconnect(&mut ev).await;
    assert_eq!(code, D5::TopicNameInvalid);
    assert!(why.contains("it has 8 '/'"), "reason string: {why}");
}

#[tokio::test]
async fn mqtt311_topic_names_over_256_bytes_or_7_slashes_close_the_connection() {
    let ep = endpoint("rumqttc-names3").await;
    let ingest = format!("$aws/rules/my_rule/{}", topic_of(8, 40));

    let (c, mut ev) = v311(&ep, "test-names3");
    c.publish(topic_of(8, 256), QoS::AtLeastOnce, false, "fits")
        .await
        .unwrap();
    assert_eq!(puback(&mut ev).await, 1, "256 bytes and 7 slashes");
    c.publish(&ingest, QoS::AtLeastOnce, false, "ingested")
        .await
        .unwrap();
    assert_eq!(
        puback(&mut ev).await,
        2,
        "the Basic Ingest prefix is not counted"
    );
    c.publish(topic_of(8, 257), QoS::AtLeastOnce, false, "long")
        .await
        .unwrap();
    assert_closed(&mut ev, "257 bytes").await;

    let (c, mut ev) = v311(&ep, "test-names3");
    c.publish(topic_of(9, 30), QoS::AtLeastOnce, false, "deep")
        .await
        .unwrap();
    assert_closed(&mut ev, "8 slashes").await;
}

#[tokio::test]
async fn mqtt5_filters_over_the_limits_get_suback_0x8f_and_nine_filters_disconnect_0x97() {
    let ep = endpoint("rumqttc-filters5").await;
    let (c, mut ev) = v5(&ep, "test-filters5");
    c.subscribe_many([
        Filter::new(topic_of(8, 257), Q5::AtLeastOnce),
        Filter::new(topic_of(9, 30), Q5::AtLeastOnce),
        Filter::new(topic_of(8, 256), Q5::AtLeastOnce),
    ])
    .await
    .unwrap();
    assert_eq!(
        suback5(&mut ev).await,
        vec![
            R5::TopicFilterInvalid,
            R5::TopicFilterInvalid,
            R5::Success(Q5::AtLeastOnce)
        ]
    );
    let eight = (0..8).map(|i| Filter::new(format!("test/f/{i}"), Q5::AtLeastOnce));
    c.subscribe_many(eight).await.unwrap();
    assert_eq!(
        suback5(&mut ev).await,
        vec![R5::Success(Q5::AtLeastOnce); 8]
    );
    let nine = (0..9).map(|i| Filter::new(format!("test/g/{i}"), Q5::AtLeastOnce));
    c.subscribe_many(nine).await.unwrap();
    let (code, why) = server_disconnect(&mut ev).await;
    assert_eq!(code, D5::QuotaExceeded);
    assert!(why.contains("9 filters"), "reason string: {why}");
}

#[tokio::test]
async fn mqtt311_filters_over_the_limits_get_suback_failure_and_nine_filters_close() {
    let ep = endpoint("rumqttc-filters3").await;
    let (c, mut ev) = v311(&ep, "test-filters3");
    c.subscribe_many([
        SubscribeFilter::new(topic_of(8, 257), QoS::AtLeastOnce),
        SubscribeFilter::new(topic_of(9, 30), QoS::AtLeastOnce),
        SubscribeFilter::new(topic_of(8, 256), QoS::AtLeastOnce),
    ])
    .await
    .unwrap();
    assert_eq!(
        suback(&mut ev).await,
        vec![R3::Failure, R3::Failure, R3::Success(QoS::AtLeastOnce)]
    );
    let eight = (0..8).map(|i| SubscribeFilter::new(format!("test/f/{i}"), QoS::AtLeastOnce));
    c.subscribe_many(eight).await.unwrap();
    assert_eq!(
        suback(&mut ev).await,
        vec![R3::Success(QoS::AtLeastOnce); 8]
    );
    let nine = (0..9).map(|i| SubscribeFilter::new(format!("test/g/{i}"), QoS::AtLeastOnce));
    c.subscribe_many(nine).await.unwrap();
    assert_closed(&mut ev, "9 filters").await;
}

#[tokio::test]
async fn mqtt5_unsupported_reserved_topics_get_disconnect_0x8f_or_0x90() {
    let ep = endpoint("rumqttc-reserved5").await;
    let (c, mut ev) = v5(&ep, "test-reserved5");
    c.subscribe("$SYS/#", Q5::AtLeastOnce).await.unwrap();
    let (code, why) = server_disconnect(&mut ev).await;
    assert_eq!(code, D5::TopicFilterInvalid, "{why}");
    assert!(why.contains("$SYS/#"), "reason string: {why}");

    for (topic, retain) in [
        ("$aws/events/presence/connected/test-x", false),
        ("$aws/things/t/shadow/update", true),
    ] {
        let (c, mut ev) = v5(&ep, "test-reserved5");
        c.publish(topic, Q5::AtLeastOnce, retain, "x")
            .await
            .unwrap();
        let (code, why) = server_disconnect(&mut ev).await;
        assert_eq!(code, D5::TopicNameInvalid, "{topic} retain={retain}: {why}");
        assert!(why.contains(topic), "reason string: {why}");
    }
}

#[tokio::test]
async fn mqtt311_unsupported_reserved_topics_close_the_connection() {
    let ep = endpoint("rumqttc-reserved3").await;
    let (c, mut ev) = v311(&ep, "test-reserved3");
    c.subscribe("$SYS/#", QoS::AtLeastOnce).await.unwrap();
    assert_closed(&mut ev, "$SYS/#").await;

    for (topic, retain) in [
        ("$aws/events/presence/connected/test-x", false),
        ("$aws/things/t/shadow/update", true),
    ] {
        let (c, mut ev) = v311(&ep, "test-reserved3");
        c.publish(topic, QoS::AtLeastOnce, retain, "x")
            .await
            .unwrap();
        assert_closed(&mut ev, &format!("{topic} retain={retain}")).await;
    }
}

/// A Basic Ingest publish is acknowledged and never delivered: the watcher, subscribed to all of
/// `test/#`, first receives the marker published after the ingested messages (one of which has
/// `test/marker` after the rule's prefix).
#[tokio::test]
async fn basic_ingest_is_acknowledged_and_never_delivered() {
    let ep = endpoint("rumqttc-ingest").await;

    let (w, mut wev) = v5(&ep, "test-watcher5");
    w.subscribe("test/#", Q5::AtLeastOnce).await.unwrap();
    assert_eq!(suback5(&mut wev).await, vec![R5::Success(Q5::AtLeastOnce)]);
    let (c, mut ev) = v5(&ep, "test-ingest5");
    for topic in ["$aws/rules/r/a", "$aws/rules/r/test/marker", "test/marker"] {
        c.publish(topic, Q5::AtLeastOnce, false, topic)
            .await
            .unwrap();
        assert_eq!(puback5(&mut ev).await, PubAckReason::Success, "{topic}");
    }
    let first = publish5(&mut wev).await;
    assert_eq!(
        (&first.topic[..], &first.payload[..]),
        (&b"test/marker"[..], &b"test/marker"[..]),
        "MQTT 5: the Basic Ingest messages were not delivered"
    );

    let (w, mut wev) = v311(&ep, "test-watcher3");
    w.subscribe("test/#", QoS::AtLeastOnce).await.unwrap();
    assert_eq!(suback(&mut wev).await, vec![R3::Success(QoS::AtLeastOnce)]);
    let (c, mut ev) = v311(&ep, "test-ingest3");
    for (pkid, topic) in [
        (1, "$aws/rules/r/a"),
        (2, "$aws/rules/r/test/marker"),
        (3, "test/marker"),
    ] {
        c.publish(topic, QoS::AtLeastOnce, false, topic)
            .await
            .unwrap();
        assert_eq!(puback(&mut ev).await, pkid, "{topic}");
    }
    let first = next_publish(&mut wev).await;
    assert_eq!(
        (first.topic.as_str(), &first.payload[..]),
        ("test/marker", &b"test/marker"[..]),
        "MQTT 3.1.1: the Basic Ingest messages were not delivered"
    );
}

#[tokio::test]
async fn shadow_topics_are_subscribed_and_delivered_like_any_other() {
    let ep = endpoint("rumqttc-shadow").await;
    let update = "$aws/things/t1/shadow/update";
    let accepted = "$aws/things/t1/shadow/update/accepted";

    let (s, mut sev) = v5(&ep, "test-shadow-sub5");
    s.subscribe_many([
        Filter::new(accepted, Q5::AtLeastOnce),
        Filter::new(update, Q5::AtLeastOnce),
    ])
    .await
    .unwrap();
    assert_eq!(
        suback5(&mut sev).await,
        vec![R5::Success(Q5::AtLeastOnce); 2]
    );
    let (s3, mut sev3) = v311(&ep, "test-shadow-sub3");
    s3.subscribe_many([
        SubscribeFilter::new(accepted.into(), QoS::AtLeastOnce),
        SubscribeFilter::new(update.into(), QoS::AtLeastOnce),
    ])
    .await
    .unwrap();
    assert_eq!(
        suback(&mut sev3).await,
        vec![R3::Success(QoS::AtLeastOnce); 2]
    );

    let (c, mut ev) = v5(&ep, "test-shadow-pub5");
    c.publish(update, Q5::AtLeastOnce, false, r#"{"state":{}}"#)
        .await
        .unwrap();
    assert_eq!(puback5(&mut ev).await, PubAckReason::Success);
    let got = publish5(&mut sev).await;
    assert_eq!(
        (&got.topic[..], &got.payload[..]),
        (update.as_bytes(), &br#"{"state":{}}"#[..])
    );
    let got = next_publish(&mut sev3).await;
    assert_eq!(
        (got.topic.as_str(), &got.payload[..]),
        (update, &br#"{"state":{}}"#[..])
    );
}

/// rumqttc checks an MQTT 5 PUBLISH against the Maximum Packet Size in the server's CONNACK
/// (149,504 bytes here), so 128 KiB + 1 of payload leaves the client and the server decides.
/// (`set_max_packet_size` in rumqttc's v5 options is the limit on what the client receives.)
#[tokio::test]
async fn mqtt5_a_payload_over_128_kib_gets_disconnect_0x97() {
    let ep = endpoint("rumqttc-payload5").await;
    let (c, mut ev) = v5(&ep, "test-payload5");
    c.publish("test/big", Q5::AtLeastOnce, false, vec![0u8; 128 * 1024])
        .await
        .unwrap();
    assert_eq!(puback5(&mut ev).await, PubAckReason::Success, "128 KiB");
    c.publish(
        "test/big",
        Q5::AtLeastOnce,
        false,
        vec![0u8; 128 * 1024 + 1],
    )
    .await
    .unwrap();
    let (code, why) = server_disconnect(&mut ev).await;
    assert_eq!(code, D5::QuotaExceeded);
    assert!(why.contains("131073"), "reason string: {why}");
}

/// rumqttc's 3.1.1 client refuses to send a packet over 10 KiB by default: the limit is raised
/// so that the server decides.
#[tokio::test]
async fn mqtt311_a_payload_over_128_kib_closes_the_connection() {
    let ep = endpoint("rumqttc-payload3").await;
    let mut opts = options(&ep, "test-payload3");
    opts.set_max_packet_size(10 * 1024, 256 * 1024);
    let (c, mut ev) = client(opts);
    c.publish("test/big", QoS::AtLeastOnce, false, vec![0u8; 128 * 1024])
        .await
        .unwrap();
    assert_eq!(puback(&mut ev).await, 1, "128 KiB");
    c.publish(
        "test/big",
        QoS::AtLeastOnce,
        false,
        vec![0u8; 128 * 1024 + 1],
    )
    .await
    .unwrap();
    assert_closed(&mut ev, "128 KiB + 1").await;
}

#[tokio::test]
async fn a_qos_2_subscribe_is_granted_qos_1() {
    let ep = endpoint("rumqttc-qos2").await;
    let (c, mut ev) = v5(&ep, "test-qos2-5");
    c.subscribe("test/q2", Q5::ExactlyOnce).await.unwrap();
    assert_eq!(suback5(&mut ev).await, vec![R5::Success(Q5::AtLeastOnce)]);
    let (c, mut ev) = v311(&ep, "test-qos2-3");
    c.subscribe("test/q2", QoS::ExactlyOnce).await.unwrap();
    assert_eq!(suback(&mut ev).await, vec![R3::Success(QoS::AtLeastOnce)]);
}

/// 150 QoS 1 publishes queued at once. rumqttc keeps at most 100 unacknowledged (MQTT 5: the
/// server's Receive Maximum of 100; 3.1.1: rumqttc's default inflight of 100), so it sends 100,
/// then one more for each PUBACK: all 150 leave within the quota's second, the first 100 are
/// acknowledged, the other 50 discarded. A SUBSCRIBE queued after them is answered after the
/// server has handled all 150, so the PUBACKs seen before its SUBACK are all there are.
#[tokio::test]
async fn mqtt5_the_publish_quota_acknowledges_100_of_a_burst_of_150() {
    let ep = endpoint("rumqttc-quota5").await;
    let (c, mut ev) = rumqttc::v5::AsyncClient::new(v5_options(&ep, "test-quota5"), 200);
    for i in 0..150 {
        c.publish("test/quota", Q5::AtLeastOnce, false, i.to_string())
            .await
            .unwrap();
    }
    c.subscribe("test/quota-marker", Q5::AtLeastOnce)
        .await
        .unwrap();
    let (mut sent, mut acked) = (0, Vec::new());
    let wait = async {
        loop {
            match ev.poll().await.expect("v5 connection") {
                rumqttc::v5::Event::Outgoing(Outgoing::Publish(_)) => sent += 1,
                rumqttc::v5::Event::Incoming(P5::PubAck(a)) => acked.push(a.reason),
                rumqttc::v5::Event::Incoming(P5::SubAck(_)) => break,
                _ => {}
            }
        }
    };
    tokio::time::timeout(TIMEOUT, wait)
        .await
        .expect("the SUBACK within the timeout");
    assert_eq!(sent, 150, "every publish was sent");
    assert_eq!(acked.len(), 100, "PUBACKs before the SUBACK");
    assert!(
        acked.iter().all(|r| *r == PubAckReason::Success),
        "{acked:?}"
    );
}

#[tokio::test]
async fn mqtt311_the_publish_quota_acknowledges_100_of_a_burst_of_150() {
    let ep = endpoint("rumqttc-quota3").await;
    let (c, mut ev) = rumqttc::AsyncClient::new(options(&ep, "test-quota3"), 200);
    for i in 0..150 {
        c.publish("test/quota", QoS::AtLeastOnce, false, i.to_string())
            .await
            .unwrap();
    }
    c.subscribe("test/quota-marker", QoS::AtLeastOnce)
        .await
        .unwrap();
    let (mut sent, mut acked) = (0, 0);
    let wait = async {
        loop {
            match ev.poll().await.expect("connection") {
                rumqttc::Event::Outgoing(Outgoing::Publish(_)) => sent += 1,
                rumqttc::Event::Incoming(P::PubAck(_)) => acked += 1,
                rumqttc::Event::Incoming(P::SubAck(_)) => break,
                _ => {}
            }
        }
    };
    tokio::time::timeout(TIMEOUT, wait)
        .await
        .expect("the SUBACK within the timeout");
    assert_eq!(sent, 150, "every publish was sent");
    assert_eq!(acked, 100, "PUBACKs before the SUBACK");
}

/// The topic and JSON payload of the next message a watcher receives.
async fn presence_event(ev: &mut rumqttc::v5::EventLoop) -> (String, serde_json::Value) {
    let p = publish5(ev).await;
    (
        String::from_utf8(p.topic.to_vec()).unwrap(),
        serde_json::from_slice(&p.payload).expect("a JSON lifecycle event"),
    )
}

/// A connected event, then the disconnected event after a client's DISCONNECT.
fn assert_presence_pair(
    id: &str,
    principal: &str,
    connected: &(String, serde_json::Value),
    disconnected: &(String, serde_json::Value),
) {
    let (topic, c) = connected;
    assert_eq!(topic, &format!("$aws/events/presence/connected/{id}"));
    assert_eq!(c["eventType"], "connected", "{c}");
    assert_eq!(c["clientId"], id, "{c}");
    assert_eq!(c["principalIdentifier"], principal, "{c}");
    let (topic, d) = disconnected;
    assert_eq!(topic, &format!("$aws/events/presence/disconnected/{id}"));
    assert_eq!(d["eventType"], "disconnected", "{d}");
    assert_eq!(d["clientId"], id, "{d}");
    assert_eq!(d["clientInitiatedDisconnect"], true, "{d}");
    assert_eq!(d["disconnectReason"], "CLIENT_INITIATED_DISCONNECT", "{d}");
    assert_eq!(
        d["sessionIdentifier"], c["sessionIdentifier"],
        "one connection"
    );
    assert_eq!(d["versionNumber"], c["versionNumber"], "one connection");
}

#[tokio::test]
async fn a_watcher_sees_the_presence_events_of_mqtt5_and_311_clients() {
    let ep = endpoint("rumqttc-presence").await;
    let principal = {
        use rustls::pki_types::pem::PemObject;
        let der = rustls::pki_types::CertificateDer::pem_file_iter(ep.file(files::DEVICE_CERT))
            .unwrap()
            .next()
            .unwrap()
            .unwrap();
        iot_core_local::mtls::fingerprint(&der)
    };
    let (w, mut wev) = v5(&ep, "test-presence-watcher");
    w.subscribe_many([
        Filter::new("$aws/events/presence/+/test-presence5", Q5::AtLeastOnce),
        Filter::new("$aws/events/presence/+/test-presence3", Q5::AtLeastOnce),
    ])
    .await
    .unwrap();
    assert_eq!(
        suback5(&mut wev).await,
        vec![R5::Success(Q5::AtLeastOnce); 2]
    );

    let (c, mut ev) = v5(&ep, "test-presence5");
    until5(&mut ev, |p| matches!(p, P5::ConnAck(_)).then_some(())).await;
    let online = presence_event(&mut wev).await;
    c.disconnect().await.unwrap();
    // The event loop sends the DISCONNECT, then ends when the server closes.
    let end = closed5(&mut ev).await;
    assert!(
        matches!(
            end,
            rumqttc::v5::ConnectionError::MqttState(rumqttc::v5::StateError::ConnectionAborted)
        ),
        "{end:?}"
    );
    let disconnected = presence_event(&mut wev).await;
    assert_presence_pair("test-presence5", &principal, &online, &disconnected);

    let (c, mut ev) = v311(&ep, "test-presence3");
    connected(&mut ev).await;
    let online = presence_event(&mut wev).await;
    c.disconnect().await.unwrap();
    let end = closed(&mut ev).await;
    assert!(
        matches!(
            end,
            rumqttc::ConnectionError::MqttState(rumqttc::StateError::ConnectionAborted)
        ),
        "{end:?}"
    );
    let disconnected = presence_event(&mut wev).await;
    assert_presence_pair("test-presence3", &principal, &online, &disconnected);
}

/// rumqttc's v5 options take an empty client id and send it.
#[tokio::test]
async fn mqtt5_an_empty_client_id_is_assigned_a_gen_id_and_311_is_refused() {
    let ep = endpoint("rumqttc-empty-id").await;
    let (_c, mut ev) = v5(&ep, "");
    let connack = until5(&mut ev, |p| match p {
        P5::ConnAck(c) => Some(c.clone()),
        _ => None,
    })
    .await;
    assert_eq!(
        connack.code,
        rumqttc::v5::mqttbytes::v5::ConnectReturnCode::Success
    );
    let assigned = connack
        .properties
        .and_then(|p| p.assigned_client_identifier)
        .expect("an Assigned Client Identifier");
    let uuid = assigned.strip_prefix("$GEN/").expect("a $GEN/ id");
    assert_eq!(
        uuid::Uuid::parse_str(uuid)
            .expect("a UUID")
            .get_version_num(),
        4,
        "{assigned}"
    );

    // MQTT 3.1.1: CONNACK 0x02, identifier rejected (rumqttc sends an empty id with a clean
    // session).
    let (_c, mut ev) = v311(&ep, "");
    let e = closed(&mut ev).await;
    assert!(
        matches!(
            e,
            rumqttc::ConnectionError::ConnectionRefused(rumqttc::ConnectReturnCode::BadClientId)
        ),
        "{e:?}"
    );
}
