//! IoT Core's limits and reserved topics after CONNACK, end to end with a raw MQTT client over
//! mTLS, for MQTT 5 and 3.1.1: topic size and depth with their exemptions, filters per
//! SUBSCRIBE, reserved topics, Basic Ingest, RETAIN on `$` topics and the publish quota. Each
//! test asserts the packet the client gets, or the close (MQTT 5: DISCONNECT with its reason
//! code first; MQTT 3.1.1: nothing).

mod common;

use common::*;
use iot_core_local::broker::{AllowAll, Broker, Settings};
use iot_core_local::config::{Config, FILE_NAME};
use iot_core_local::init::{files, init, InitOptions};
use iot_core_local::mqtt::packet::{Ack, Packet, Publish, SubOptions, Subscribe};
use iot_core_local::mqtt::{frame, parse_connect, Frame, Version};
use iot_core_local::server::ServeOptions;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Every data-plane action on every topic and filter, for client ids `test-*`: what decides in
/// these tests is IoT Core's limits and reserved-topic rules, not the policy.
const OPEN_POLICY: &str = r#"{"Version":"2012-10-17","Statement":[
    {"Effect":"Allow","Action":"iot:Connect","Resource":"arn:aws:iot:us-east-1:123456789012:client/test-*"},
    {"Effect":"Allow","Action":["iot:Publish","iot:RetainPublish","iot:Receive"],"Resource":"arn:aws:iot:us-east-1:123456789012:topic/*"},
    {"Effect":"Allow","Action":"iot:Subscribe","Resource":"arn:aws:iot:us-east-1:123456789012:topicfilter/*"}]}"#;

/// A fresh account whose certificates have only [`OPEN_POLICY`], served with `opts`.
async fn endpoint(name: &str, opts: ServeOptions) -> Endpoint {
    let dir = account_dir(name);
    init(&InitOptions {
        dir: dir.clone(),
        force: true,
        port_443: 0,
        port_8883: 0,
    })
    .expect("init");
    let mut config = Config::load(&dir).unwrap();
    config.policies.insert("open".into(), OPEN_POLICY.into());
    for cert in config.certificates.iter_mut() {
        cert.policies = vec!["open".into()];
    }
    std::fs::write(dir.join(FILE_NAME), config.to_toml().unwrap()).unwrap();
    Endpoint::start_with(&dir, opts).await
}

/// A raw MQTT client after its CONNACK.
struct Client<S> {
    stream: S,
    version: Version,
    buf: Vec<u8>,
}

impl Client<Tls> {
    /// The device certificate on 8883, CONNECT with `id`, CONNACK 0.
    async fn connect(ep: &Endpoint, v: V, id: &str) -> Client<Tls> {
        let mut tls = TlsClient {
            endpoint: ep,
            port: Port::P8883,
            alpn: None,
            client_cert: Some((files::DEVICE_CERT, files::DEVICE_KEY)),
        }
        .connect()
        .await
        .unwrap();
        let seen = send_connect(&mut tls, &connect_packet(v, id, None, None)).await;
        assert!(matches!(seen, Seen::ConnAck { code: 0, .. }), "{seen:?}");
        Client {
            stream: tls,
            version: version(v),
            buf: Vec::new(),
        }
    }
}

fn version(v: V) -> Version {
    match v {
        V::V5 => Version::V5,
        V::V311 => Version::V311,
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    async fn send(&mut self, packets: &[Packet]) {
        let bytes: Vec<u8> = packets
            .iter()
            .flat_map(|p| p.to_bytes(self.version))
            .collect();
        self.stream.write_all(&bytes).await.unwrap();
        self.stream.flush().await.unwrap();
    }

    /// The next packet from the server; `None` when it closes the connection first.
    async fn next(&mut self) -> Option<Packet> {
        loop {
            if let Ok(Frame::Complete { len }) = frame(&self.buf, usize::MAX) {
                let bytes: Vec<u8> = self.buf.drain(..len).collect();
                let packet = Packet::decode(self.version, &bytes);
                return Some(packet.unwrap_or_else(|e| panic!("{e}: {bytes:02X?}")));
            }
            let mut chunk = [0u8; 4096];
            match tokio::time::timeout(TIMEOUT, self.stream.read(&mut chunk))
                .await
                .expect("a packet or a close within the timeout")
            {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// The server closes the connection: MQTT 5 after a DISCONNECT with `reason` and a reason
    /// string (returned; the client asked for problem information, the default), MQTT 3.1.1
    /// without sending anything.
    async fn assert_closed(&mut self, reason: u8) -> Option<String> {
        let mut text = None;
        if self.version == Version::V5 {
            match self.next().await {
                Some(Packet::Disconnect(d)) => {
                    assert_eq!(d.reason, reason, "DISCONNECT reason code");
                    text = Some(reason_string_of(&d.properties));
                }
                other => panic!("expected DISCONNECT 0x{reason:02X}, got {other:?}"),
            }
        }
        assert_eq!(self.next().await, None, "then the connection is closed");
        text
    }

    /// The SUBACK codes of a SUBSCRIBE with `filters` (QoS 1 each).
    async fn subscribe(&mut self, filters: &[&str]) -> Vec<u8> {
        self.send(&[subscribe(filters)]).await;
        match self.next().await {
            Some(Packet::SubAck(a)) => a.codes,
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }

    /// Send `packets` and a PINGREQ; everything the server sent until the PINGRESP.
    async fn exchange(&mut self, packets: &[Packet]) -> Vec<Packet> {
        let mut all = packets.to_vec();
        all.push(Packet::PingReq);
        self.send(&all).await;
        let mut seen = Vec::new();
        loop {
            match self.next().await {
                Some(Packet::PingResp) => return seen,
                Some(p) => seen.push(p),
                None => panic!("closed after {seen:?}"),
            }
        }
    }

    /// The next delivery, acknowledged if QoS 1.
    async fn delivery(&mut self) -> Publish {
        match self.next().await {
            Some(Packet::Publish(p)) => {
                if p.qos == 1 {
                    self.send(&[puback(p.pkid)]).await;
                }
                p
            }
            other => panic!("expected a PUBLISH, got {other:?}"),
        }
    }
}

fn publish(topic: &str, qos: u8, retain: bool, pkid: u16, payload: &str) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain,
        topic: topic.into(),
        pkid,
        properties: Vec::new(),
        payload: payload.as_bytes().to_vec(),
    })
}

fn puback(pkid: u16) -> Packet {
    Packet::PubAck(Ack {
        pkid,
        reason: 0,
        properties: Vec::new(),
    })
}

fn subscribe(filters: &[&str]) -> Packet {
    let options = SubOptions {
        qos: 1,
        no_local: false,
        retain_as_published: false,
        retain_handling: 0,
    };
    Packet::Subscribe(Subscribe {
        pkid: 7,
        properties: Vec::new(),
        filters: filters.iter().map(|f| (f.to_string(), options)).collect(),
    })
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

/// The SUBACK code of a filter refused as invalid.
fn invalid_filter(v: V) -> u8 {
    match v {
        V::V5 => 0x8F,
        V::V311 => 0x80,
    }
}

#[tokio::test]
async fn topic_names_of_257_bytes_or_8_slashes_close_the_connection() {
    let ep = endpoint("topic-name-limits", ServeOptions::default()).await;
    for v in [V::V5, V::V311] {
        let longest = topic_of(8, 256);
        assert_eq!((longest.len(), longest.matches('/').count()), (256, 7));
        let mut c = Client::connect(&ep, v, "test-names").await;
        assert_eq!(
            c.exchange(&[publish(&longest, 1, false, 1, "fits")]).await,
            vec![puback(1)],
            "{v:?}: 256 bytes and 7 slashes"
        );
        c.send(&[publish(&topic_of(8, 257), 1, false, 2, "long")])
            .await;
        let why = c.assert_closed(0x90).await;
        if v == V::V5 {
            let why = why.unwrap();
            assert!(why.contains("257 bytes"), "reason string: {why}");
        }

        let mut c = Client::connect(&ep, v, "test-names").await;
        c.send(&[publish(&topic_of(9, 30), 1, false, 1, "deep")])
            .await;
        c.assert_closed(0x90).await;
    }
}

#[tokio::test]
async fn the_basic_ingest_and_share_prefixes_are_not_counted() {
    let ep = endpoint("exemptions", ServeOptions::default()).await;
    for v in [V::V5, V::V311] {
        let mut c = Client::connect(&ep, v, "test-exempt").await;
        let ingest = format!("$aws/rules/my_rule/{}", topic_of(8, 256));
        assert_eq!(
            c.exchange(&[publish(&ingest, 1, false, 1, "fits")]).await,
            vec![puback(1)],
            "{v:?}: the prefix is not counted"
        );
        let share_name = "n".repeat(129);
        let filters = [
            format!("$share/g/{}", topic_of(8, 256)),
            format!("$share/g/{}", topic_of(8, 257)),
            format!("$share/g/{}", topic_of(9, 30)),
            topic_of(8, 257),
            format!("{}/#", topic_of(8, 30)),
            format!("$share/{share_name}/test/t"),
        ];
        let filters: Vec<&str> = filters.iter().map(String::as_str).collect();
        let bad = invalid_filter(v);
        assert_eq!(
            c.subscribe(&filters).await,
            vec![1, bad, bad, bad, bad, bad],
            "{v:?}"
        );
        let mut c = Client::connect(&ep, v, "test-exempt").await;
        c.send(&[publish(
            &format!("$aws/rules/my_rule/{}", topic_of(8, 257)),
            1,
            false,
            1,
            "long",
        )])
        .await;
        c.assert_closed(0x90).await;
    }
}

#[tokio::test]
async fn eight_filters_per_subscribe_are_granted_nine_close_the_connection() {
    let ep = endpoint("filters-per-subscribe", ServeOptions::default()).await;
    for v in [V::V5, V::V311] {
        let filters: Vec<String> = (0..9).map(|i| format!("test/f/{i}")).collect();
        let filters: Vec<&str> = filters.iter().map(String::as_str).collect();
        let mut c = Client::connect(&ep, v, "test-filters").await;
        assert_eq!(c.subscribe(&filters[..8]).await, vec![1; 8], "{v:?}");
        c.send(&[subscribe(&filters)]).await;
        c.assert_closed(0x97).await;
    }
}

#[tokio::test]
async fn the_51st_subscription_is_refused_and_the_connection_stays() {
    let ep = endpoint("subscriptions-per-connection", ServeOptions::default()).await;
    for (v, refused) in [(V::V5, 0x97), (V::V311, 0x80)] {
        let mut c = Client::connect(&ep, v, "test-fifty").await;
        let filters: Vec<String> = (0..50).map(|i| format!("test/s/{i}")).collect();
        for chunk in filters.chunks(8) {
            let chunk: Vec<&str> = chunk.iter().map(String::as_str).collect();
            assert_eq!(c.subscribe(&chunk).await, vec![1; chunk.len()], "{v:?}");
        }
        assert_eq!(
            c.subscribe(&["test/s/50", "test/s/0"]).await,
            vec![refused, 1],
            "{v:?}: the 51st is refused, a replacement is not"
        );
        assert_eq!(c.exchange(&[]).await, vec![], "{v:?}: still connected");
    }
}

#[tokio::test]
async fn basic_ingest_is_acknowledged_and_never_delivered() {
    let ep = endpoint("basic-ingest", ServeOptions::default()).await;
    for v in [V::V5, V::V311] {
        let mut watcher = Client::connect(&ep, v, "test-watcher").await;
        assert_eq!(
            watcher
                .subscribe(&["#", "$aws/things/+/shadow/#", "test/marker"])
                .await,
            vec![1, 1, 1]
        );
        let mut c = Client::connect(&ep, v, "test-ingest").await;
        assert_eq!(
            c.exchange(&[
                publish("$aws/rules/my_rule/test/marker", 1, false, 1, "ingested"),
                publish(
                    "$aws/rules/my_rule/$aws/things/t1/shadow/update",
                    0,
                    false,
                    0,
                    "ingested"
                ),
                publish("test/marker", 1, false, 2, "marker"),
            ])
            .await,
            vec![puback(1), puback(2)],
            "{v:?}: PUBACK 0 for Basic Ingest"
        );
        let first = watcher.delivery().await;
        assert_eq!(
            (first.topic.as_str(), &first.payload[..]),
            ("test/marker", &b"marker"[..]),
            "{v:?}: the Basic Ingest messages were not delivered"
        );
        // Nobody can subscribe to Basic Ingest topics, not even exactly.
        let mut c = Client::connect(&ep, v, "test-ingest-sub").await;
        c.send(&[subscribe(&["$aws/rules/my_rule/test/marker"])])
            .await;
        c.assert_closed(0x8F).await;
    }
}

#[tokio::test]
async fn shadow_topics_are_topics_like_any_other() {
    let ep = endpoint("shadow", ServeOptions::default()).await;
    for v in [V::V5, V::V311] {
        let mut sub = Client::connect(&ep, v, "test-shadow-sub").await;
        assert_eq!(
            sub.subscribe(&[
                "$aws/things/t1/shadow/update",
                "$aws/things/+/shadow/name/#",
                "$aws/events/presence/+/test-nobody",
            ])
            .await,
            vec![1, 1, 1],
            "{v:?}"
        );
        let mut c = Client::connect(&ep, v, "test-shadow-pub").await;
        assert_eq!(
            c.exchange(&[
                publish("$aws/things/t1/shadow/update", 1, false, 1, "classic"),
                publish("$aws/things/t1/shadow/name/n1/update", 1, false, 2, "named"),
            ])
            .await,
            vec![puback(1), puback(2)]
        );
        let classic = sub.delivery().await;
        assert_eq!(
            (classic.topic.as_str(), &classic.payload[..]),
            ("$aws/things/t1/shadow/update", &b"classic"[..])
        );
        let named = sub.delivery().await;
        assert_eq!(
            (named.topic.as_str(), &named.payload[..]),
            ("$aws/things/t1/shadow/name/n1/update", &b"named"[..])
        );
    }
}

#[tokio::test]
async fn unsupported_reserved_topics_close_the_connection() {
    let ep = endpoint("reserved", ServeOptions::default()).await;
    for v in [V::V5, V::V311] {
        for filters in [
            &["$SYS/#"][..],
            &["test/ok", "$aws/things/#"],
            &["$share/g/$SYS/#"],
            &["$aws/foo"],
        ] {
            let mut c = Client::connect(&ep, v, "test-reserved").await;
            c.send(&[subscribe(filters)]).await;
            c.assert_closed(0x8F).await;
        }
        for (topic, retain) in [
            ("$aws/events/presence/connected/test-x", false),
            ("$aws/things/t1/shadow/update/accepted", false),
            ("$SYS/x", false),
            ("$aws/rules/my_rule", false),
            ("$aws/things/t1/shadow/update", true),
            ("$aws/rules/my_rule/t", true),
        ] {
            let mut c = Client::connect(&ep, v, "test-reserved").await;
            c.send(&[publish(topic, 1, retain, 1, "x")]).await;
            c.assert_closed(0x90).await;
        }
    }
}

#[tokio::test]
async fn the_publish_quota_discards_what_is_over_100_in_a_second() {
    let ep = endpoint("quota", ServeOptions::default()).await;
    for v in [V::V5, V::V311] {
        let topic = format!("test/quota/{v:?}");
        let mut sub = Client::connect(&ep, v, "test-quota-sub").await;
        assert_eq!(sub.subscribe(&[&topic]).await, vec![1]);

        let mut c = Client::connect(&ep, v, "test-quota-pub").await;
        // 100, then 50 more in the same second (two bursts, as an MQTT 5 client may not have
        // more than the server's Receive Maximum of 100 unacknowledged).
        let burst = |range: std::ops::Range<u16>| {
            range
                .map(|i| publish(&topic, 1, false, i + 1, &i.to_string()))
                .collect::<Vec<_>>()
        };
        let acked = c.exchange(&burst(0..100)).await;
        assert_eq!(acked, (1..=100).map(puback).collect::<Vec<_>>(), "{v:?}");
        let acked = c.exchange(&burst(100..150)).await;
        assert_eq!(acked, vec![], "{v:?}: no PUBACK over the quota");

        // A later publish, once a new second has begun, is acknowledged (retried until then:
        // the ones that come too early are discarded too).
        let later = tokio::time::timeout(TIMEOUT, async {
            loop {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                let acked = c.exchange(&[publish(&topic, 1, false, 500, "later")]).await;
                if acked == vec![puback(500)] {
                    break;
                }
                assert_eq!(acked, vec![], "{v:?}");
            }
        });
        later.await.expect("acknowledged in a later second");

        let mut payloads = Vec::new();
        loop {
            let p = sub.delivery().await;
            let text = String::from_utf8(p.payload).unwrap();
            payloads.push(text.clone());
            if text == "later" {
                break;
            }
        }
        let expected: Vec<String> = (0..100)
            .map(|i: u16| i.to_string())
            .chain(["later".to_string()])
            .collect();
        assert_eq!(
            payloads, expected,
            "{v:?}: the discarded ones were not delivered"
        );
    }
}

#[tokio::test]
async fn a_publish_quota_of_0_is_no_quota() {
    let opts = ServeOptions {
        publish_quota: Some(0),
        ..Default::default()
    };
    let ep = endpoint("no-quota", opts).await;
    let mut c = Client::connect(&ep, V::V311, "test-no-quota").await;
    let burst: Vec<Packet> = (1..=150)
        .map(|i| publish("test/no-quota", 1, false, i, "x"))
        .collect();
    assert_eq!(
        c.exchange(&burst).await,
        (1..=150).map(puback).collect::<Vec<_>>()
    );
}

/// A connection to `broker` through an in-memory pipe, every action allowed, after its CONNACK.
async fn pipe_client(broker: &Broker, id: &str) -> Client<tokio::io::DuplexStream> {
    let (client, server) = tokio::io::duplex(64 * 1024);
    let connect = parse_connect(&connect_packet(V::V5, id, None, None)).unwrap();
    let broker = broker.clone();
    let peer = id.to_string();
    tokio::spawn(async move {
        broker
            .serve(server, connect, peer.as_str(), &AllowAll)
            .await
    });
    let mut c = Client {
        stream: client,
        version: Version::V5,
        buf: Vec::new(),
    };
    assert!(matches!(
        c.next().await,
        Some(Packet::ConnAck { code: 0, .. })
    ));
    c
}

/// Outbound, with the clock paused (it moves only when every task waits, straight to the next
/// timer): over the quota, QoS 0 deliveries are dropped and QoS 1 ones held to the next second.
#[tokio::test(start_paused = true)]
async fn over_the_quota_qos0_deliveries_are_dropped_and_qos1_ones_wait_a_second() {
    let broker = Broker::with_settings(Settings { publish_quota: 10 });
    let mut sub = pipe_client(&broker, "sub").await;
    let mut filters = subscribe(&["t/1", "t/0"]);
    if let Packet::Subscribe(s) = &mut filters {
        s.filters[1].1.qos = 0;
    }
    sub.send(&[filters]).await;
    assert!(matches!(sub.next().await, Some(Packet::SubAck(a)) if a.codes == [1, 0]));

    let start = tokio::time::Instant::now();
    let mut first = pipe_client(&broker, "first").await;
    let ten: Vec<Packet> = (0..10)
        .map(|i| publish("t/1", 1, false, i + 1, &format!("first-{i}")))
        .collect();
    assert_eq!(first.exchange(&ten).await.len(), 10, "ten PUBACKs");
    let mut second = pipe_client(&broker, "second").await;
    let mut more: Vec<Packet> = (0..5)
        .map(|i| publish("t/0", 0, false, 0, &format!("dropped-{i}")))
        .collect();
    more.extend((0..5).map(|i| publish("t/1", 1, false, i + 1, &format!("held-{i}"))));
    assert_eq!(second.exchange(&more).await.len(), 5, "five PUBACKs");

    let mut got = Vec::new();
    for _ in 0..15 {
        let p = sub.delivery().await;
        got.push(String::from_utf8(p.payload).unwrap());
    }
    let expected: Vec<String> = (0..10)
        .map(|i| format!("first-{i}"))
        .chain((0..5).map(|i| format!("held-{i}")))
        .collect();
    assert_eq!(got, expected, "no QoS 0 message, the QoS 1 ones in order");
    assert!(
        tokio::time::Instant::now() >= start + std::time::Duration::from_secs(1),
        "the held ones came in the next second (paused clock)"
    );
    // Within quota again, QoS 0 is delivered.
    second
        .exchange(&[publish("t/0", 0, false, 0, "marker")])
        .await;
    assert_eq!(sub.delivery().await.payload, b"marker");
}

#[tokio::test]
async fn what_was_answered_before_the_end_still_reaches_the_client() {
    use iot_core_local::mqtt::packet::Disconnect;
    let ep = endpoint("answers-before-end", ServeOptions::default()).await;
    for v in [V::V5, V::V311] {
        // PUBLISH and DISCONNECT in one write: the PUBACK still goes out before the close.
        let mut c = Client::connect(&ep, v, "test-last").await;
        let bye = Packet::Disconnect(Disconnect {
            reason: 0,
            properties: Vec::new(),
        });
        c.send(&[publish("test/test-last/a", 1, false, 7, "x"), bye])
            .await;
        assert_eq!(c.next().await, Some(puback(7)), "{v:?}");
        assert_eq!(c.next().await, None, "{v:?}: then closed");
    }
    // MQTT 5: a publish answered, then a refused topic in the same write: PUBACK, then the
    // DISCONNECT that says why.
    let mut c = Client::connect(&ep, V::V5, "test-last").await;
    c.send(&[
        publish("test/test-last/a", 1, false, 8, "x"),
        publish(&topic_of(9, 30), 1, false, 9, "deep"),
    ])
    .await;
    assert_eq!(c.next().await, Some(puback(8)));
    c.assert_closed(0x90).await;
}
