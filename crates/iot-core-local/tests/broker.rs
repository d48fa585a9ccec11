//! The embedded broker end to end, with AWS IoT Core's semantics: regressions for what rumqttd
//! broke (shared client id across versions, keep-alive 0, a second CONNECT), sessions, retained
//! messages, wildcards, wills, memory after clients leave, and the data-plane policy hook.

mod common;

use std::time::Duration;

use common::rumqttc_clients::*;
use common::*;
use iot_core_local::broker::{Action, Broker, DataPlane, Denied};
use iot_core_local::init::files;
use iot_core_local::mqtt::packet::{Packet, Publish, SubOptions, Subscribe};
use iot_core_local::mqtt::{frame, parse_connect, Frame, Version};
use rumqttc::{Packet as P, QoS};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Publish with QoS 1 and wait for the PUBACK.
async fn publish(ep: &Endpoint, id: &str, topic: &str, payload: &str, retain: bool) {
    let (c, mut ev) = client(options(ep, id));
    connected(&mut ev).await;
    c.publish(topic, QoS::AtLeastOnce, retain, payload)
        .await
        .unwrap();
    until(&mut ev, |p| matches!(p, P::PubAck(_)).then_some(())).await;
}

/// One MQTT 5 subscriber (rumqttc v5) and one 3.1.1 publisher: the message arrives.
async fn v5_subscriber_gets_a_v311_publish(ep: &Endpoint, topic: &str) {
    use rumqttc::v5::mqttbytes::v5::Packet as P5;
    use rumqttc::v5::mqttbytes::QoS as Q5;
    let mut opts =
        rumqttc::v5::MqttOptions::new("test-v5-sub", "localhost", ep.running.addr_8883.port());
    opts.set_transport(rumqttc::Transport::tls_with_config(
        rumqttc::TlsConfiguration::Rustls(tls_config(ep)),
    ));
    let (sub, mut ev) = rumqttc::v5::AsyncClient::new(opts, 10);
    sub.subscribe(topic, Q5::AtLeastOnce).await.unwrap();
    let wait = async {
        let mut published = false;
        loop {
            match ev.poll().await.expect("v5 connection") {
                rumqttc::v5::Event::Incoming(P5::SubAck(_)) if !published => {
                    publish(ep, "test-v311-pub", topic, "hello v5", false).await;
                    published = true;
                }
                rumqttc::v5::Event::Incoming(P5::Publish(p)) => return p,
                _ => {}
            }
        }
    };
    let p = tokio::time::timeout(TIMEOUT, wait)
        .await
        .expect("the message arrives");
    assert_eq!(&p.topic[..], topic.as_bytes());
    assert_eq!(&p.payload[..], b"hello v5");
    assert!(!p.retain);
}

fn device(ep: &Endpoint) -> TlsClient<'_> {
    TlsClient {
        endpoint: ep,
        port: Port::P8883,
        alpn: None,
        client_cert: Some((files::DEVICE_CERT, files::DEVICE_KEY)),
    }
}

/// Read one whole packet the server sends; `None` when the connection closes first.
async fn read_packet<S: AsyncRead + Unpin>(s: &mut S, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    loop {
        if let Ok(Frame::Complete { len }) = frame(buf, usize::MAX) {
            return Some(buf.drain(..len).collect());
        }
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout(TIMEOUT, s.read(&mut chunk))
            .await
            .expect("an answer or a close within the timeout")
        {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// The MQTT 5 CONNACK properties as (id, bytes after the id), for the fixed-size ones.
fn connack_properties(packet: &[u8]) -> Packet {
    Packet::decode(Version::V5, packet).expect("a CONNACK")
}

#[tokio::test]
async fn shared_client_id_alternating_versions_then_fresh_clients_work() {
    let dir = rich_account("alternate");
    let ep = Endpoint::start(&dir).await;
    let mut open = Vec::new();
    for round in 0..100 {
        let v = if round % 2 == 0 { V::V5 } else { V::V311 };
        let mut tls = device(&ep).connect().await.unwrap();
        let seen = send_connect(&mut tls, &connect_packet(v, "test-shared", None, None)).await;
        assert_eq!(
            seen,
            Seen::ConnAck {
                code: 0,
                reason: None
            },
            "round {round} ({v:?})"
        );
        open.push(tls);
        if open.len() > 2 {
            open.remove(0);
        }
    }
    drop(open);
    v5_subscriber_gets_a_v311_publish(&ep, "test/after-alternation").await;
}

#[tokio::test]
async fn keep_alive_0_is_accepted_as_1200() {
    let dir = rich_account("keepalive0");
    let ep = Endpoint::start(&dir).await;
    for v in [V::V5, V::V311] {
        let mut tls = device(&ep).connect().await.unwrap();
        let mut packet = connect_packet(v, "test-ka0", None, None);
        packet[10..12].copy_from_slice(&0u16.to_be_bytes());
        tls.write_all(&packet).await.unwrap();
        let mut buf = Vec::new();
        let connack = read_packet(&mut tls, &mut buf).await.expect("a CONNACK");
        let version = if v == V::V5 {
            Version::V5
        } else {
            Version::V311
        };
        let Ok(Packet::ConnAck {
            code, properties, ..
        }) = Packet::decode(version, &connack)
        else {
            panic!("{connack:02X?}")
        };
        assert_eq!(code, 0, "{v:?}");
        if v == V::V5 {
            let ska = iot_core_local::mqtt::Properties::new(&properties)
                .flatten()
                .find(|p| p.id == 0x13)
                .map(|p| p.value);
            assert_eq!(
                ska,
                Some(iot_core_local::mqtt::PropValue::U16(1200)),
                "Server Keep Alive"
            );
        }
        // The connection is usable: PINGREQ gets PINGRESP.
        tls.write_all(&[0xC0, 0x00]).await.unwrap();
        assert_eq!(
            read_packet(&mut tls, &mut buf).await.as_deref(),
            Some(&[0xD0, 0x00][..])
        );
    }
}

#[tokio::test]
async fn mqtt5_connack_carries_iot_core_properties() {
    use iot_core_local::mqtt::{PropValue as Pv, Properties};
    let dir = rich_account("connack5");
    let ep = Endpoint::start(&dir).await;
    let mut tls = device(&ep).connect().await.unwrap();
    tls.write_all(&connect_packet(V::V5, "test-props", None, None))
        .await
        .unwrap();
    let mut buf = Vec::new();
    let connack = read_packet(&mut tls, &mut buf).await.expect("CONNACK");
    let Packet::ConnAck { properties, .. } = connack_properties(&connack) else {
        panic!()
    };
    let props: Vec<(u8, Pv)> = Properties::new(&properties)
        .map(|p| p.map(|p| (p.id, p.value)))
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        props,
        vec![
            (0x11, Pv::U32(0)),
            (0x21, Pv::U16(100)),
            (0x24, Pv::Byte(1)),
            (0x25, Pv::Byte(1)),
            (0x27, Pv::U32(149_504)),
            (0x22, Pv::U16(8)),
            (0x28, Pv::Byte(1)),
            (0x29, Pv::Byte(0)),
            (0x2A, Pv::Byte(1)),
        ]
    );
}

#[tokio::test]
async fn a_second_connect_closes_the_connection() {
    let dir = rich_account("second-connect");
    let ep = Endpoint::start(&dir).await;
    for v in [V::V5, V::V311] {
        let mut tls = device(&ep).connect().await.unwrap();
        let packet = connect_packet(v, "test-twice", None, None);
        let seen = send_connect(&mut tls, &packet).await;
        assert!(matches!(seen, Seen::ConnAck { code: 0, .. }), "{seen:?}");
        tls.write_all(&packet).await.unwrap();
        let mut buf = Vec::new();
        let got = read_packet(&mut tls, &mut buf).await;
        if v == V::V5 {
            let (code, why) = disconnect_with_reason(&got.unwrap());
            assert_eq!(code, 0x82, "DISCONNECT 0x82 Protocol error");
            assert!(why.contains("second CONNECT"), "reason string: {why}");
        } else {
            assert_eq!(got, None, "3.1.1: closed without a packet");
        }
        assert_eq!(read_packet(&mut tls, &mut buf).await, None, "then closed");
    }
}

#[tokio::test]
async fn a_persistent_session_gets_what_was_published_while_it_was_away() {
    let dir = rich_account("persistent");
    let ep = Endpoint::start(&dir).await;
    let mut opts = options(&ep, "test-persistent");
    opts.set_clean_session(false);
    let (c, mut ev) = client(opts.clone());
    assert!(!connected(&mut ev).await.session_present);
    c.subscribe("test/offline", QoS::AtLeastOnce).await.unwrap();
    suback(&mut ev).await;
    c.disconnect().await.unwrap();
    let _ = tokio::time::timeout(TIMEOUT, async { while ev.poll().await.is_ok() {} }).await;
    drop(ev);

    publish(&ep, "test-publisher", "test/offline", "while away", false).await;

    let (_c, mut ev) = client(opts);
    assert!(connected(&mut ev).await.session_present);
    let msg = next_publish(&mut ev).await;
    assert_eq!(msg.topic, "test/offline");
    assert_eq!(&msg.payload[..], b"while away");
    assert_eq!(msg.qos, QoS::AtLeastOnce);
}

#[tokio::test]
async fn retained_messages_only_on_the_exact_filter() {
    let dir = rich_account("retained");
    let ep = Endpoint::start(&dir).await;
    publish(&ep, "test-retainer", "test/r/1", "kept", true).await;
    let (c, mut ev) = client(options(&ep, "test-reader"));
    connected(&mut ev).await;
    c.subscribe("test/r/+", QoS::AtLeastOnce).await.unwrap();
    c.subscribe("test/r/1", QoS::AtLeastOnce).await.unwrap();
    // Everything the client sees, in order, until the first PUBLISH.
    let mut seen = Vec::new();
    let msg = until(&mut ev, |p| {
        seen.push(format!("{p:?}").chars().take(6).collect::<String>());
        match p {
            P::Publish(m) => Some(m.clone()),
            _ => None,
        }
    })
    .await;
    let subacks = seen.iter().filter(|s| s.starts_with("SubAck")).count();
    assert_eq!(
        subacks, 2,
        "the wildcard filter got no retained message: {seen:?}"
    );
    assert_eq!(msg.topic, "test/r/1");
    assert!(msg.retain, "RETAIN=1 on the delivery at SUBSCRIBE");
    assert_eq!(&msg.payload[..], b"kept");

    // A live message: RETAIN=0, and the two filters deliver it once.
    publish(&ep, "test-retainer", "test/r/1", "live", true).await;
    let live = next_publish(&mut ev).await;
    assert_eq!(&live.payload[..], b"live");
    assert!(!live.retain);
    publish(&ep, "test-retainer", "test/r/2", "next", false).await;
    assert_eq!(
        &next_publish(&mut ev).await.payload[..],
        b"next",
        "no duplicate of 'live'"
    );
}

#[tokio::test]
async fn multi_level_wildcard_does_not_match_the_parent() {
    let dir = rich_account("wildcard");
    let ep = Endpoint::start(&dir).await;
    let (c, mut ev) = client(options(&ep, "test-wild"));
    connected(&mut ev).await;
    c.subscribe("test/sensor/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    suback(&mut ev).await;
    publish(&ep, "test-p", "test/sensor", "parent", false).await;
    publish(&ep, "test-p", "test/sensor/t", "child", false).await;
    let msg = next_publish(&mut ev).await;
    assert_eq!(msg.topic, "test/sensor/t", "test/sensor is not matched");
}

#[tokio::test]
async fn the_will_is_published_when_a_client_vanishes() {
    let dir = rich_account("will");
    let ep = Endpoint::start(&dir).await;
    let (c, mut watcher) = client(options(&ep, "test-watcher"));
    connected(&mut watcher).await;
    c.subscribe("test/will", QoS::AtLeastOnce).await.unwrap();
    suback(&mut watcher).await;

    let mut opts = options(&ep, "test-mortal");
    opts.set_last_will(rumqttc::LastWill::new(
        "test/will",
        "gone",
        QoS::AtLeastOnce,
        false,
    ));
    let (_m, mut mortal) = client(opts);
    connected(&mut mortal).await;
    drop(mortal); // the socket closes with no DISCONNECT

    let msg = next_publish(&mut watcher).await;
    assert_eq!(msg.topic, "test/will");
    assert_eq!(&msg.payload[..], b"gone");
}

#[tokio::test]
async fn the_router_forgets_clean_clients_that_left() {
    let dir = rich_account("forget");
    let ep = Endpoint::start(&dir).await;
    let broker = ep.running.broker().expect("the embedded broker");
    for i in 0..40 {
        let v = if i % 2 == 0 { V::V5 } else { V::V311 };
        let mut tls = device(&ep).connect().await.unwrap();
        let id = format!("test-gone-{i}");
        let seen = send_connect(&mut tls, &connect_packet(v, &id, None, None)).await;
        assert!(matches!(seen, Seen::ConnAck { code: 0, .. }), "{seen:?}");
        let version = if v == V::V5 {
            Version::V5
        } else {
            Version::V311
        };
        let sub = Packet::Subscribe(Subscribe {
            pkid: 1,
            properties: Vec::new(),
            filters: vec![(
                format!("test/{id}/#"),
                SubOptions {
                    qos: 1,
                    no_local: false,
                    retain_as_published: false,
                    retain_handling: 0,
                },
            )],
        });
        tls.write_all(&sub.to_bytes(version)).await.unwrap();
        let mut buf = Vec::new();
        let ack = read_packet(&mut tls, &mut buf).await.expect("SUBACK");
        assert_eq!(ack[0], 0x90);
        if i % 4 < 2 {
            tls.write_all(&[0xE0, 0x00]).await.unwrap(); // DISCONNECT
        } // else: just drop the connection
        drop(tls);
    }
    // The connections end asynchronously: wait until the last one is gone.
    let stats = tokio::time::timeout(TIMEOUT, async {
        loop {
            let s = broker.stats();
            if s.sessions == 0 {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("sessions left: {:?}", broker.stats()));
    assert_eq!(stats, iot_core_local::broker::Stats::default());
}

/// Denies publishing and subscribing to `test/denied...`, and receiving `test/secret`.
struct Deny;

impl DataPlane for Deny {
    fn check(&self, action: Action, resource: &str) -> Result<(), Denied> {
        let denied = match action {
            Action::Publish | Action::RetainPublish | Action::Subscribe => {
                resource.starts_with("test/denied")
            }
            Action::Receive => resource == "test/secret",
            Action::Connect => unreachable!("the broker never checks iot:Connect"),
        };
        if denied {
            Err(Denied(format!("test policy denies {action} on {resource}")))
        } else {
            Ok(())
        }
    }
}

/// A connection to `broker` through an in-memory pipe, after its CONNACK.
async fn pipe_client(broker: &Broker, id: &str) -> tokio::io::DuplexStream {
    let (mut client, server) = tokio::io::duplex(64 * 1024);
    let raw = connect_packet(V::V5, id, None, None);
    let connect = parse_connect(&raw).unwrap();
    let broker = broker.clone();
    let id = id.to_string();
    tokio::spawn(async move { broker.serve(server, connect, id.as_str(), &Deny).await });
    let mut buf = Vec::new();
    let connack = read_packet(&mut client, &mut buf).await.expect("CONNACK");
    assert_eq!(&connack[..4], &[0x20, connack[1], 0x00, 0x00]);
    client
}

async fn send<S: AsyncWrite + Unpin>(s: &mut S, p: Packet) {
    s.write_all(&p.to_bytes(Version::V5)).await.unwrap();
}

fn subscribe(filter: &str) -> Packet {
    Packet::Subscribe(Subscribe {
        pkid: 1,
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
    })
}

fn publish_packet(topic: &str, qos: u8) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain: false,
        topic: topic.into(),
        pkid: if qos > 0 { 9 } else { 0 },
        properties: Vec::new(),
        payload: b"x".to_vec(),
    })
}

#[tokio::test]
async fn the_policy_hook_is_called_at_publish_subscribe_and_delivery() {
    let broker = Broker::default();
    let mut sub = pipe_client(&broker, "sub").await;
    let mut buf = Vec::new();

    send(&mut sub, subscribe("test/denied/#")).await;
    let ack = read_packet(&mut sub, &mut buf).await.unwrap();
    let Ok(Packet::SubAck(ack)) = Packet::decode(Version::V5, &ack) else {
        panic!("{ack:02X?}")
    };
    assert_eq!(ack.codes, vec![0x87], "SUBACK 0x87 Not authorized");

    send(&mut sub, subscribe("test/#")).await;
    let ack = read_packet(&mut sub, &mut buf).await.unwrap();
    assert_eq!(ack, [0x90, 4, 0, 1, 0, 1], "granted QoS 1");

    let mut publisher = pipe_client(&broker, "pub").await;
    let mut pbuf = Vec::new();
    send(&mut publisher, publish_packet("test/denied", 1)).await;
    let puback = read_packet(&mut publisher, &mut pbuf).await.unwrap();
    let Ok(Packet::PubAck(a)) = Packet::decode(Version::V5, &puback) else {
        panic!("{puback:02X?}")
    };
    assert_eq!((a.pkid, a.reason), (9, 0x87), "PUBACK 0x87 Not authorized");

    // test/secret is published but not received; test/ok is both.
    send(&mut publisher, publish_packet("test/secret", 1)).await;
    assert_eq!(
        read_packet(&mut publisher, &mut pbuf).await.unwrap(),
        [0x40, 2, 0, 9]
    );
    send(&mut publisher, publish_packet("test/ok", 1)).await;
    assert_eq!(
        read_packet(&mut publisher, &mut pbuf).await.unwrap(),
        [0x40, 2, 0, 9]
    );
    let delivered = read_packet(&mut sub, &mut buf).await.unwrap();
    let Ok(Packet::Publish(p)) = Packet::decode(Version::V5, &delivered) else {
        panic!("{delivered:02X?}")
    };
    assert_eq!(
        p.topic, "test/ok",
        "the denied delivery was skipped silently"
    );
    assert_eq!(broker.stats().connected, 2, "nobody was disconnected");
}

#[tokio::test]
async fn qos2_and_oversized_publishes_end_an_mqtt5_connection() {
    let broker = Broker::default();
    let mut buf = Vec::new();
    let mut c = pipe_client(&broker, "q2").await;
    send(&mut c, publish_packet("test/q2", 2)).await;
    let (code, why) = disconnect_with_reason(&read_packet(&mut c, &mut buf).await.unwrap());
    assert_eq!(code, 0x9B, "DISCONNECT 0x9B QoS not supported");
    assert!(why.contains("QoS 2"), "reason string: {why}");
    assert_eq!(read_packet(&mut c, &mut buf).await, None);

    let mut c = pipe_client(&broker, "big").await;
    let Packet::Publish(mut p) = publish_packet("test/big", 0) else {
        unreachable!()
    };
    p.payload = vec![0; 128 * 1024 + 1];
    send(&mut c, Packet::Publish(p)).await;
    let (code, why) = disconnect_with_reason(&read_packet(&mut c, &mut buf).await.unwrap());
    assert_eq!(code, 0x97, "DISCONNECT 0x97 Quota exceeded");
    assert!(why.contains("131073"), "reason string: {why}");
    let mut c = pipe_client(&broker, "huge").await;
    // 1 MiB announced: refused from the header, before the body is sent.
    c.write_all(&[0x30, 0x80, 0x80, 0x40]).await.unwrap();
    let (code, why) = disconnect_with_reason(&read_packet(&mut c, &mut buf).await.unwrap());
    assert_eq!(code, 0x95, "DISCONNECT 0x95 Packet too large");
    assert!(!why.is_empty());

    // QoS 2 SUBSCRIBE is granted QoS 1.
    let mut c = pipe_client(&broker, "sub2").await;
    let Packet::Subscribe(mut s) = subscribe("test/x") else {
        unreachable!()
    };
    s.filters[0].1.qos = 2;
    send(&mut c, Packet::Subscribe(s)).await;
    assert_eq!(
        read_packet(&mut c, &mut buf).await.unwrap(),
        [0x90, 4, 0, 1, 0, 1]
    );
}

#[tokio::test]
async fn an_empty_mqtt5_client_id_is_assigned_a_gen_id() {
    use iot_core_local::mqtt::{PropValue, Properties};
    let broker = Broker::default();
    let (mut client, server) = tokio::io::duplex(4096);
    let connect = parse_connect(&connect_packet(V::V5, "", None, None)).unwrap();
    let b = broker.clone();
    tokio::spawn(async move { b.serve(server, connect, "pipe", &Deny).await });
    let mut buf = Vec::new();
    let connack = read_packet(&mut client, &mut buf).await.expect("CONNACK");
    let Ok(Packet::ConnAck {
        code, properties, ..
    }) = Packet::decode(Version::V5, &connack)
    else {
        panic!("{connack:02X?}")
    };
    assert_eq!(code, 0);
    let assigned = Properties::new(&properties)
        .flatten()
        .find_map(|p| match p.value {
            PropValue::Str(s) if p.id == 0x12 => Some(s.to_string()),
            _ => None,
        })
        .expect("Assigned Client Identifier");
    let uuid = assigned.strip_prefix("$GEN/").expect("a $GEN/ id");
    assert_eq!(uuid.len(), 36, "{assigned}");
    assert_eq!(broker.stats().connected, 1);
}

/// init's account as it is: each client may use only `test/<its client id>/...`.
fn init_account(name: &str) -> std::path::PathBuf {
    let dir = account_dir(name);
    iot_core_local::init::init(&iot_core_local::init::InitOptions {
        dir: dir.clone(),
        force: true,
        port_443: 0,
        port_8883: 0,
    })
    .expect("init");
    dir
}

/// Replace the device certificate's policies with `policy` alone.
fn with_device_policy(dir: &std::path::Path, policy: &str) {
    use iot_core_local::config::Config;
    let mut config = Config::load(dir).unwrap();
    config.policies.insert("under-test".into(), policy.into());
    for cert in config.certificates.iter_mut() {
        cert.policies = vec!["under-test".into()];
    }
    std::fs::write(
        dir.join(iot_core_local::config::FILE_NAME),
        config.to_toml().unwrap(),
    )
    .unwrap();
}

#[tokio::test]
async fn init_policies_allow_a_client_its_own_topics_over_mqtt5_and_311() {
    use rumqttc::v5::mqttbytes::v5::Packet as P5;
    use rumqttc::v5::mqttbytes::QoS as Q5;
    let dir = init_account("own-topics");
    let ep = Endpoint::start(&dir).await;

    let (c, mut ev) = rumqttc::v5::AsyncClient::new(v5_options(&ep, "test-own5"), 10);
    c.subscribe("test/test-own5/x", Q5::AtLeastOnce)
        .await
        .unwrap();
    let codes = until5(&mut ev, |p| match p {
        P5::SubAck(s) => Some(s.return_codes.clone()),
        _ => None,
    })
    .await;
    assert_eq!(
        codes,
        vec![rumqttc::v5::mqttbytes::v5::SubscribeReasonCode::Success(
            Q5::AtLeastOnce
        )]
    );
    c.publish("test/test-own5/x", Q5::AtLeastOnce, true, "mine")
        .await
        .unwrap();
    let p = until5(&mut ev, |p| match p {
        P5::Publish(m) => Some(m.clone()),
        _ => None,
    })
    .await;
    assert_eq!(
        (&p.topic[..], &p.payload[..]),
        (&b"test/test-own5/x"[..], &b"mine"[..])
    );

    let (c, mut ev) = client(options(&ep, "test-own3"));
    c.subscribe("test/test-own3/x", QoS::AtLeastOnce)
        .await
        .unwrap();
    assert_eq!(
        suback(&mut ev).await,
        vec![rumqttc::SubscribeReasonCode::Success(QoS::AtLeastOnce)]
    );
    c.publish("test/test-own3/x", QoS::AtLeastOnce, false, "mine too")
        .await
        .unwrap();
    let p = next_publish(&mut ev).await;
    assert_eq!(
        (p.topic.as_str(), &p.payload[..]),
        ("test/test-own3/x", &b"mine too"[..])
    );
}

#[tokio::test]
async fn init_policies_deny_other_topics_as_aws_does_over_mqtt5() {
    use rumqttc::v5::mqttbytes::v5::{Packet as P5, PubAckReason, SubscribeReasonCode as R5};
    use rumqttc::v5::mqttbytes::QoS as Q5;
    let dir = init_account("deny5");
    let ep = Endpoint::start(&dir).await;
    let (c, mut ev) = rumqttc::v5::AsyncClient::new(v5_options(&ep, "test-deny5"), 10);

    c.subscribe("#", Q5::AtLeastOnce).await.unwrap();
    let codes = until5(&mut ev, |p| match p {
        P5::SubAck(s) => Some(s.return_codes.clone()),
        _ => None,
    })
    .await;
    assert_eq!(codes, vec![R5::NotAuthorized], "SUBACK 0x87 for #");

    c.publish("forbidden/topic", Q5::AtLeastOnce, false, "no")
        .await
        .unwrap();
    let reason = until5(&mut ev, |p| match p {
        P5::PubAck(a) => Some(a.reason),
        _ => None,
    })
    .await;
    assert_eq!(reason, PubAckReason::NotAuthorized, "PUBACK 0x87");

    // Another client's own topics are not this client's either, and the connection stays.
    c.subscribe("test/test-other/x", Q5::AtLeastOnce)
        .await
        .unwrap();
    let codes = until5(&mut ev, |p| match p {
        P5::SubAck(s) => Some(s.return_codes.clone()),
        _ => None,
    })
    .await;
    assert_eq!(codes, vec![R5::NotAuthorized]);
}

#[tokio::test]
async fn init_policies_deny_other_topics_as_aws_does_over_mqtt311() {
    let dir = init_account("deny311");
    let ep = Endpoint::start(&dir).await;
    let (c, mut ev) = client(options(&ep, "test-deny3"));
    c.subscribe("#", QoS::AtLeastOnce).await.unwrap();
    assert_eq!(
        suback(&mut ev).await,
        vec![rumqttc::SubscribeReasonCode::Failure],
        "SUBACK 0x80 for #"
    );
    c.publish("forbidden/topic", QoS::AtLeastOnce, false, "no")
        .await
        .unwrap();
    let e = closed(&mut ev).await;
    assert!(
        matches!(
            e,
            rumqttc::ConnectionError::MqttState(rumqttc::StateError::ConnectionAborted)
        ),
        "the server closed the connection, sending nothing: {e:?}"
    );
}

#[tokio::test]
async fn a_denied_receive_skips_the_delivery_and_keeps_the_subscription() {
    let dir = init_account("receive-deny");
    with_device_policy(
        &dir,
        r#"{"Version":"2012-10-17","Statement":[
            {"Effect":"Allow","Action":"iot:Connect","Resource":"arn:aws:iot:us-east-1:123456789012:client/test-*"},
            {"Effect":"Allow","Action":["iot:Publish","iot:Receive","iot:Subscribe"],"Resource":["arn:aws:iot:us-east-1:123456789012:topic/test/*","arn:aws:iot:us-east-1:123456789012:topicfilter/test/*"]},
            {"Sid":"NoSecrets","Effect":"Deny","Action":"iot:Receive","Resource":"arn:aws:iot:us-east-1:123456789012:topic/test/secret"}]}"#,
    );
    let ep = Endpoint::start(&dir).await;
    let (c, mut ev) = client(options(&ep, "test-receiver"));
    c.subscribe("test/#", QoS::AtLeastOnce).await.unwrap();
    assert_eq!(
        suback(&mut ev).await,
        vec![rumqttc::SubscribeReasonCode::Success(QoS::AtLeastOnce)]
    );
    publish(&ep, "test-sender", "test/secret", "hidden", false).await;
    publish(&ep, "test-sender", "test/open", "seen", false).await;
    let p = next_publish(&mut ev).await;
    assert_eq!(
        (p.topic.as_str(), &p.payload[..]),
        ("test/open", &b"seen"[..]),
        "test/secret was not delivered, test/open was"
    );
}

#[tokio::test]
async fn a_certificate_common_name_variable_works_over_mtls() {
    use rumqttc::v5::mqttbytes::v5::{ConnectReturnCode, Packet as P5, PubAckReason};
    use rumqttc::v5::mqttbytes::QoS as Q5;
    let dir = init_account("common-name");
    with_device_policy(
        &dir,
        r#"{"Version":"2012-10-17","Statement":[
            {"Effect":"Allow","Action":"iot:Connect","Resource":"arn:aws:iot:us-east-1:123456789012:client/${iot:Certificate.Subject.CommonName}"},
            {"Effect":"Allow","Action":"iot:Publish","Resource":"arn:aws:iot:us-east-1:123456789012:topic/cn/${iot:Certificate.Subject.CommonName}"}]}"#,
    );
    let mut ep = Endpoint::start(&dir).await;

    // The device certificate's CommonName is test-device.
    let (c, mut ev) = rumqttc::v5::AsyncClient::new(v5_options(&ep, "test-device"), 10);
    c.publish("cn/test-device", Q5::AtLeastOnce, false, "ok")
        .await
        .unwrap();
    let reason = until5(&mut ev, |p| match p {
        P5::PubAck(a) => Some(a.reason),
        _ => None,
    })
    .await;
    assert_eq!(reason, PubAckReason::Success);
    c.publish("cn/someone-else", Q5::AtLeastOnce, false, "no")
        .await
        .unwrap();
    let reason = until5(&mut ev, |p| match p {
        P5::PubAck(a) => Some(a.reason),
        _ => None,
    })
    .await;
    assert_eq!(reason, PubAckReason::NotAuthorized);
    let allowed = ep.decision().await;
    assert!(allowed.allowed, "{}", allowed.detail);

    let (_c, mut ev) = rumqttc::v5::AsyncClient::new(v5_options(&ep, "test-other"), 10);
    let e = tokio::time::timeout(TIMEOUT, ev.poll())
        .await
        .expect("an answer")
        .expect_err("refused");
    assert!(
        matches!(
            e,
            rumqttc::v5::ConnectionError::ConnectionRefused(ConnectReturnCode::NotAuthorized)
        ),
        "{e:?}"
    );
    let denied = ep.decision().await;
    assert!(!denied.allowed);
    assert!(
        denied.detail.ends_with(
            "no policy statement allows iot:Connect on \
             arn:aws:iot:us-east-1:123456789012:client/test-other"
        ),
        "{}",
        denied.detail
    );
}
