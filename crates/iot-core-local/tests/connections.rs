//! Every accept path and every rejection reason of iot-core-local, in process on ephemeral
//! loopback ports, asserting exactly what the client sees (a CONNACK code, no CONNACK, a TLS
//! failure, an HTTP status) and what the endpoint logged.
//!
//! The clients here are written from the MQTT and WebSocket specifications; SigV4 presigning
//! and the custom-auth username come from samples-common, whose output is checked against the
//! official AWS signer's vectors.

mod common;

use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use common::*;
use iot_core_local::init::{files, SIGNED_AUTHORIZER, UNSIGNED_AUTHORIZER, USERNAME};
use iot_core_local::server::ServeOptions;
use iot_core_local::tls::{ALPN_MQTT, ALPN_MQTT_CA};
use samples_common::custom_auth::{build_username, TokenSigner, UsernameParts};
use samples_common::websocket::presign;
use tokio::io::AsyncWriteExt;

const CLIENT: &str = "test-client-1";

fn mtls<'a>(ep: &'a Endpoint, port: Port, cert: (&'a str, &'a str)) -> TlsClient<'a> {
    let alpn = match port {
        Port::P443 => Some(ALPN_MQTT_CA),
        Port::P8883 => None,
    };
    TlsClient {
        endpoint: ep,
        port,
        alpn,
        client_cert: Some(cert),
    }
}

fn device() -> (&'static str, &'static str) {
    (files::DEVICE_CERT, files::DEVICE_KEY)
}

async fn mqtt_over(
    client: TlsClient<'_>,
    v: V,
    id: &str,
    user: Option<&str>,
    pw: Option<&[u8]>,
) -> Seen {
    match client.connect().await {
        Ok(mut tls) => send_connect(&mut tls, &connect_packet(v, id, user, pw)).await,
        Err(e) => Seen::TlsError(e.to_string()),
    }
}

fn signed_username(ep: &Endpoint, token: &str, sign_this: &str) -> String {
    let signer = TokenSigner::from_pem_file(&ep.file(files::AUTHORIZER_PRIVATE)).unwrap();
    build_username(&UsernameParts {
        username: Some("device"),
        authorizer: Some(SIGNED_AUTHORIZER),
        signature: Some(&signer.sign(sign_this).unwrap()),
        token_key_name: Some("token"),
        token_value: Some(token),
    })
    .unwrap()
}

fn unsigned_username(authorizer: Option<&str>) -> String {
    build_username(&UsernameParts {
        username: Some(USERNAME),
        authorizer,
        ..Default::default()
    })
    .unwrap()
}

fn custom(ep: &Endpoint) -> TlsClient<'_> {
    TlsClient {
        endpoint: ep,
        port: Port::P443,
        alpn: Some(ALPN_MQTT),
        client_cert: None,
    }
}

/// Assert the connection was accepted: CONNACK 0, and an "allowed" decision naming `who`.
async fn assert_accepted(ep: &mut Endpoint, seen: Seen, who: &str) {
    assert_eq!(
        seen,
        Seen::ConnAck {
            code: 0,
            reason: None
        },
        "the broker's CONNACK"
    );
    let d = ep.decision().await;
    assert!(d.allowed, "{d}");
    assert!(d.detail.contains(who), "{d}");
}

/// Assert refusal as IoT Core does it: MQTT 5 CONNACK `code` with its reason string, MQTT 3.1.1
/// no CONNACK; and a "denied" decision whose reason contains `why`.
async fn assert_refused(ep: &mut Endpoint, v: V, seen: Seen, code: u8, why: &str) {
    match v {
        V::V5 => match &seen {
            Seen::ConnAck {
                code: c,
                reason: Some(r),
            } => {
                assert_eq!(*c, code, "{seen:?}");
                if code == 0x87 {
                    assert!(
                        r.starts_with(
                            "Client is not authenticated/authorized to send the message:"
                        ),
                        "{r}"
                    );
                }
            }
            other => panic!("expected CONNACK 0x{code:02X}, saw {other:?}"),
        },
        V::V311 => assert_eq!(seen, Seen::ClosedWithoutConnAck),
    }
    let d = ep.decision().await;
    assert!(!d.allowed, "{d}");
    assert!(d.detail.contains(why), "expected '{why}' in: {d}");
}

#[tokio::test]
async fn every_accept_path_with_both_mqtt_versions() {
    let dir = rich_account("accept");
    let mut ep = Endpoint::start(&dir).await;
    let pw = ep.password();
    for v in [V::V5, V::V311] {
        let seen = mqtt_over(mtls(&ep, Port::P8883, device()), v, CLIENT, None, None).await;
        assert_accepted(&mut ep, seen, "certificate test-device").await;
        let seen = mqtt_over(mtls(&ep, Port::P443, device()), v, CLIENT, None, None).await;
        assert_accepted(&mut ep, seen, "certificate test-device").await;

        let user = signed_username(&ep, "allow", "allow");
        let seen = mqtt_over(custom(&ep), v, CLIENT, Some(&user), None).await;
        assert_accepted(
            &mut ep,
            seen,
            "principal signedDevice of authorizer signed-authorizer",
        )
        .await;

        for authorizer in [Some(UNSIGNED_AUTHORIZER), None] {
            let user = unsigned_username(authorizer);
            let seen = mqtt_over(custom(&ep), v, CLIENT, Some(&user), Some(pw.as_bytes())).await;
            assert_accepted(
                &mut ep,
                seen,
                "principal demoUser of authorizer unsigned-authorizer",
            )
            .await;
        }
    }
}

#[tokio::test]
async fn certificate_rejections() {
    let dir = rich_account("certs");
    let mut ep = Endpoint::start(&dir).await;
    for v in [V::V5, V::V311] {
        let seen = mqtt_over(
            mtls(&ep, Port::P8883, ("rogue.pem", "rogue.key")),
            v,
            CLIENT,
            None,
            None,
        )
        .await;
        assert_refused(
            &mut ep,
            v,
            seen,
            0x87,
            "not registered and not signed by a registered CA",
        )
        .await;

        let seen = mqtt_over(
            mtls(
                &ep,
                Port::P443,
                ("inactive-device.pem", "inactive-device.key"),
            ),
            v,
            CLIENT,
            None,
            None,
        )
        .await;
        assert_refused(
            &mut ep,
            v,
            seen,
            0x87,
            "certificate inactive-device is INACTIVE",
        )
        .await;

        // The policy allows client/test-*: another client id is refused.
        let seen = mqtt_over(mtls(&ep, Port::P8883, device()), v, "prod-1", None, None).await;
        assert_refused(&mut ep, v, seen, 0x87, "no policy statement allows iot:Connect on arn:aws:iot:us-east-1:123456789012:client/prod-1").await;
    }
}

#[tokio::test]
async fn mtls_without_a_certificate_on_443_is_refused_and_8883_demands_one() {
    let dir = rich_account("nocert");
    let mut ep = Endpoint::start(&dir).await;
    let client = TlsClient {
        endpoint: &ep,
        port: Port::P443,
        alpn: Some(ALPN_MQTT_CA),
        client_cert: None,
    };
    let seen = mqtt_over(client, V::V5, CLIENT, None, None).await;
    assert_refused(
        &mut ep,
        V::V5,
        seen,
        0x87,
        "no client certificate was presented",
    )
    .await;

    // Custom auth on the 8883 listener: no certificate, so the TLS handshake itself fails.
    let user = unsigned_username(None);
    let client = TlsClient {
        endpoint: &ep,
        port: Port::P8883,
        alpn: Some(ALPN_MQTT),
        client_cert: None,
    };
    let seen = mqtt_over(client, V::V5, CLIENT, Some(&user), Some(b"x")).await;
    match seen {
        Seen::TlsError(e) => assert!(e.to_lowercase().contains("certificate"), "{e}"),
        other => panic!("custom auth on 8883 must fail in TLS, saw {other:?}"),
    }
    let d = ep.decision().await;
    assert!(
        !d.allowed && d.detail.contains("TLS handshake failed"),
        "{d}"
    );
}

#[tokio::test]
async fn custom_authorizer_rejections() {
    let dir = rich_account("custom");
    let mut ep = Endpoint::start(&dir).await;
    let pw = ep.password();
    for v in [V::V5, V::V311] {
        let named = |name: &str| {
            build_username(&UsernameParts {
                username: Some(USERNAME),
                authorizer: Some(name),
                ..Default::default()
            })
            .unwrap()
        };
        let cases: Vec<(String, Option<&[u8]>, u8, &str)> = vec![
            (named("no-such-authorizer"), Some(pw.as_bytes()), 0x87, "no authorizer named 'no-such-authorizer'"),
            (named("inactive-authorizer"), Some(pw.as_bytes()), 0x87, "authorizer 'inactive-authorizer' is INACTIVE"),
            (signed_username(&ep, "allow", "something-else"), None, 0x87, "signature did not verify against any token-signing key of authorizer 'signed-authorizer'"),
            (
                build_username(&UsernameParts { authorizer: Some(SIGNED_AUTHORIZER), ..Default::default() }).unwrap(),
                None,
                0x87,
                "sent no token parameter 'token'",
            ),
            (unsigned_username(Some(UNSIGNED_AUTHORIZER)), Some(b"wrong-password"), 0x86, "function denied the connection"),
            (named("denying-authorizer"), None, 0x86, "'denying-authorizer' function denied the connection"),
            (named("slow-authorizer"), None, 0x87, "'slow-authorizer' function did not answer within 1000 ms"),
            (named("bad-principal-authorizer"), None, 0x87, "principalId"),
            (
                named("unsupported-policy-authorizer"),
                None,
                0x87,
                "principal cond of authorizer unsupported-policy-authorizer: policy document 1: statement 1: the condition operator \"DateLessThan\" is not supported by iot-core-local",
            ),
        ];
        for (user, password, code, why) in cases {
            let seen = mqtt_over(custom(&ep), v, CLIENT, Some(&user), password).await;
            assert_refused(&mut ep, v, seen, code, why).await;
        }
        // Allowed credentials, but the policy does not cover this client id.
        let user = unsigned_username(None);
        let seen = mqtt_over(custom(&ep), v, "prod-7", Some(&user), Some(pw.as_bytes())).await;
        assert_refused(&mut ep, v, seen, 0x87, "client/prod-7").await;
    }
}

#[tokio::test]
async fn client_id_rules() {
    let dir = rich_account("clientid");
    let mut ep = Endpoint::start(&dir).await;
    let long = format!("test-{}", "x".repeat(124));
    for (id, why) in [(long.as_str(), "129 bytes"), ("$GEN/test-1", "$GEN/")] {
        for v in [V::V5, V::V311] {
            let seen = mqtt_over(mtls(&ep, Port::P8883, device()), v, id, None, None).await;
            assert_refused(&mut ep, v, seen, 0x85, why).await;
        }
    }
}

#[tokio::test]
async fn v311_rejection_can_answer_with_connack_for_debugging() {
    let dir = rich_account("connack");
    let opts = ServeOptions {
        connack_on_v311_reject: Some(true),
        ..Default::default()
    };
    let mut ep = Endpoint::start_with(&dir, opts).await;
    let seen = mqtt_over(
        mtls(&ep, Port::P8883, device()),
        V::V311,
        "prod-1",
        None,
        None,
    )
    .await;
    assert_eq!(
        seen,
        Seen::ConnAck {
            code: 5,
            reason: None
        }
    );
    assert!(!ep.decision().await.allowed);
}

// ---- WebSocket ----

/// Open TLS to the 443 listener without ALPN and send a WebSocket upgrade for `path_and_query`
/// with these extra headers. Returns the HTTP status, or the WebSocket to speak MQTT over.
async fn upgrade(
    ep: &Endpoint,
    path_and_query: &str,
    host: &str,
    headers: &[(&str, &str)],
) -> Result<
    async_tungstenite::WebSocketStream<async_tungstenite::tokio::TokioAdapter<Tls>>,
    (u16, String, String),
> {
    let tls = TlsClient {
        endpoint: ep,
        port: Port::P443,
        alpn: None,
        client_cert: None,
    }
    .connect()
    .await
    .unwrap();
    let mut req = http::Request::builder()
        .uri(format!("wss://{host}{path_and_query}"))
        .header("Host", host)
        .header("Connection", "Upgrade")
        .header("Upgrade", "websocket")
        .header("Sec-WebSocket-Version", "13")
        .header(
            "Sec-WebSocket-Key",
            tungstenite::handshake::client::generate_key(),
        )
        .header("Sec-WebSocket-Protocol", "mqtt");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    match async_tungstenite::tokio::client_async(req.body(()).unwrap(), tls).await {
        Ok((ws, response)) => {
            assert_eq!(
                response.headers().get("sec-websocket-protocol").unwrap(),
                "mqtt"
            );
            Ok(ws)
        }
        Err(tungstenite::Error::Http(resp)) => {
            let error_type = resp
                .headers()
                .get("x-amzn-ErrorType")
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default();
            let body = resp
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            Err((resp.status().as_u16(), error_type, body))
        }
        Err(e) => panic!("upgrade failed oddly: {e}"),
    }
}

async fn mqtt_over_ws(
    mut ws: async_tungstenite::WebSocketStream<async_tungstenite::tokio::TokioAdapter<Tls>>,
    packet: Vec<u8>,
) -> Seen {
    use futures_util::StreamExt;
    ws.send(tungstenite::Message::binary(packet)).await.unwrap();
    let mut buf = Vec::new();
    loop {
        match tokio::time::timeout(TIMEOUT, ws.next())
            .await
            .expect("an answer")
        {
            Some(Ok(tungstenite::Message::Binary(b))) => {
                buf.extend_from_slice(&b);
                if let Some(seen) = parse_connack(&buf) {
                    return seen;
                }
            }
            Some(Ok(tungstenite::Message::Close(_))) | None | Some(Err(_)) => {
                return Seen::ClosedWithoutConnAck
            }
            Some(Ok(_)) => {}
        }
    }
}

fn key(ep: &Endpoint, temporary: bool) -> Credentials {
    let k = ep
        .config
        .credentials
        .iter()
        .find(|k| k.session_token.is_some() == temporary)
        .unwrap();
    Credentials::new(
        &k.access_key_id,
        &k.secret_access_key,
        k.session_token.clone(),
        None,
        "test",
    )
}

fn host(ep: &Endpoint) -> String {
    format!("localhost:{}", ep.running.addr_443.port())
}

#[tokio::test]
async fn sigv4_websocket_accepts_long_term_and_temporary_keys() {
    let dir = rich_account("sigv4-ok");
    let mut ep = Endpoint::start(&dir).await;
    for v in [V::V5, V::V311] {
        for temporary in [false, true] {
            let creds = key(&ep, temporary);
            let signed = presign(&host(&ep), "us-east-1", &creds, SystemTime::now());
            let ws = upgrade(&ep, &signed.path_and_query, &host(&ep), &[])
                .await
                .expect("upgrade");
            let seen = mqtt_over_ws(ws, connect_packet(v, CLIENT, None, None)).await;
            assert_accepted(
                &mut ep,
                seen,
                &format!("access key {}", creds.access_key_id()),
            )
            .await;
        }
    }
}

/// A refused upgrade: HTTP 403 with IoT Core's error type header and a JSON message, and the
/// reason in the log.
async fn assert_403(
    ep: &mut Endpoint,
    result: Result<impl Sized, (u16, String, String)>,
    message: &str,
    why: &str,
) {
    match result {
        Ok(_) => panic!("the upgrade must be refused"),
        Err((status, error_type, body)) => {
            assert_eq!(status, 403);
            assert_eq!(error_type, "ForbiddenException:");
            let json: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert!(
                json["message"].as_str().unwrap().contains(message),
                "{body}"
            );
        }
    }
    let d = ep.decision().await;
    assert!(
        !d.allowed && d.detail.contains(why),
        "expected '{why}' in: {d}"
    );
}

#[tokio::test]
async fn sigv4_websocket_rejections() {
    let dir = rich_account("sigv4-bad");
    let mut ep = Endpoint::start(&dir).await;
    let h = host(&ep);
    let now = SystemTime::now();
    let long = key(&ep, false);
    let temp = key(&ep, true);

    let wrong_secret = Credentials::new(long.access_key_id(), "not-the-secret", None, None, "t");
    let r = upgrade(
        &ep,
        &presign(&h, "us-east-1", &wrong_secret, now).path_and_query,
        &h,
        &[],
    )
    .await;
    assert_403(
        &mut ep,
        r,
        "signature we calculated does not match",
        "signature does not match",
    )
    .await;

    let r = upgrade(
        &ep,
        &presign(&h, "eu-west-1", &long, now).path_and_query,
        &h,
        &[],
    )
    .await;
    assert_403(&mut ep, r, "region", "signed for region eu-west-1").await;

    let skewed = now - Duration::from_secs(6 * 60);
    let r = upgrade(
        &ep,
        &presign(&h, "us-east-1", &long, skewed).path_and_query,
        &h,
        &[],
    )
    .await;
    assert_403(&mut ep, r, "Signature expired", "behind").await;

    let tampered = presign(&h, "us-east-1", &long, now).path_and_query + "&extra=1";
    let r = upgrade(&ep, &tampered, &h, &[]).await;
    assert_403(&mut ep, r, "does not match", "signature does not match").await;

    let no_token = Credentials::new(
        temp.access_key_id(),
        temp.secret_access_key(),
        None,
        None,
        "t",
    );
    let r = upgrade(
        &ep,
        &presign(&h, "us-east-1", &no_token, now).path_and_query,
        &h,
        &[],
    )
    .await;
    assert_403(&mut ep, r, "security token", "session token").await;

    let altered = Credentials::new(
        temp.access_key_id(),
        temp.secret_access_key(),
        Some("altered-token".into()),
        None,
        "t",
    );
    let r = upgrade(
        &ep,
        &presign(&h, "us-east-1", &altered, now).path_and_query,
        &h,
        &[],
    )
    .await;
    assert_403(&mut ep, r, "security token", "session token").await;

    let unknown = Credentials::new("AKIAUNKNOWN000000000", "secret", None, None, "t");
    let r = upgrade(
        &ep,
        &presign(&h, "us-east-1", &unknown, now).path_and_query,
        &h,
        &[],
    )
    .await;
    assert_403(&mut ep, r, "security token", "AKIAUNKNOWN000000000").await;

    // Signed for one host, sent with another Host header.
    let r = upgrade(
        &ep,
        &presign("localhost", "us-east-1", &long, now).path_and_query,
        &h,
        &[],
    )
    .await;
    assert_403(&mut ep, r, "does not match", "signature does not match").await;

    // Valid signature, but the key's policy does not cover this client id: refused at CONNECT.
    let ws = upgrade(
        &ep,
        &presign(&h, "us-east-1", &long, now).path_and_query,
        &h,
        &[],
    )
    .await
    .expect("upgrade");
    let seen = mqtt_over_ws(ws, connect_packet(V::V5, "prod-2", None, None)).await;
    assert_refused(&mut ep, V::V5, seen, 0x87, "client/prod-2").await;
}

#[tokio::test]
async fn websocket_wrong_path_is_404() {
    let dir = rich_account("ws-path");
    let mut ep = Endpoint::start(&dir).await;
    let h = host(&ep);
    match upgrade(&ep, "/not-mqtt", &h, &[]).await {
        Err((status, _, body)) => {
            assert_eq!(status, 404);
            assert!(body.contains("Not Found"), "{body}");
        }
        Ok(_) => panic!("wrong path must not upgrade"),
    }
    let d = ep.decision().await;
    assert!(
        !d.allowed && d.detail.contains("'/not-mqtt' is not /mqtt"),
        "{d}"
    );
}

#[tokio::test]
async fn custom_auth_over_websocket_from_username_headers_and_query() {
    let dir = rich_account("ws-custom");
    let mut ep = Endpoint::start(&dir).await;
    let h = host(&ep);
    let pw = ep.password();
    for v in [V::V5, V::V311] {
        // Parameters in the MQTT username, as the official SDKs send them.
        let ws = upgrade(&ep, "/mqtt", &h, &[]).await.expect("upgrade");
        let user = signed_username(&ep, "allow", "allow");
        let seen = mqtt_over_ws(ws, connect_packet(v, CLIENT, Some(&user), None)).await;
        assert_accepted(&mut ep, seen, "principal signedDevice").await;

        // Parameters in the upgrade headers (older SDKs): name, token, signature.
        let signer = TokenSigner::from_pem_file(&ep.file(files::AUTHORIZER_PRIVATE)).unwrap();
        let sig = signer.sign("allow").unwrap();
        let headers = [
            ("X-Amz-CustomAuthorizer-Name", SIGNED_AUTHORIZER),
            ("X-Amz-CustomAuthorizer-Signature", sig.as_str()),
            ("token", "allow"),
        ];
        let ws = upgrade(&ep, "/mqtt", &h, &headers).await.expect("upgrade");
        let seen = mqtt_over_ws(ws, connect_packet(v, CLIENT, None, None)).await;
        assert_accepted(&mut ep, seen, "principal signedDevice").await;

        // Parameters in the upgrade query.
        let query = format!("/mqtt?x-amz-customauthorizer-name={UNSIGNED_AUTHORIZER}");
        let ws = upgrade(&ep, &query, &h, &[]).await.expect("upgrade");
        let seen = mqtt_over_ws(
            ws,
            connect_packet(v, CLIENT, Some(USERNAME), Some(pw.as_bytes())),
        )
        .await;
        assert_accepted(&mut ep, seen, "principal demoUser").await;

        // A bad signature in the headers is refused at CONNECT.
        let bad = signer.sign("other").unwrap();
        let headers = [
            ("X-Amz-CustomAuthorizer-Name", SIGNED_AUTHORIZER),
            ("X-Amz-CustomAuthorizer-Signature", bad.as_str()),
            ("token", "allow"),
        ];
        let ws = upgrade(&ep, "/mqtt", &h, &headers).await.expect("upgrade");
        let seen = mqtt_over_ws(ws, connect_packet(v, CLIENT, None, None)).await;
        assert_refused(&mut ep, v, seen, 0x87, "signature did not verify").await;
    }
}

#[tokio::test]
async fn mqtt_without_alpn_on_443_and_garbage_are_refused_without_disturbing_others() {
    let dir = rich_account("robust");
    let mut ep = Endpoint::start(&dir).await;
    // An mTLS client that forgot ALPN lands on the HTTP route: refused quickly, reason logged.
    let client = TlsClient {
        endpoint: &ep,
        port: Port::P443,
        alpn: None,
        client_cert: Some(device()),
    };
    let seen = mqtt_over(client, V::V5, CLIENT, None, None).await;
    assert_eq!(seen, Seen::ClosedWithoutConnAck);
    let d = ep.decision().await;
    assert!(d.detail.contains("ALPN x-amzn-mqtt-ca"), "{d}");

    // A malformed CONNECT (reserved flag set) is refused and logged; nothing panics.
    let mut tls = mtls(&ep, Port::P8883, device()).connect().await.unwrap();
    let mut packet = connect_packet(V::V5, CLIENT, None, None);
    packet[9] |= 0x01;
    assert_eq!(
        send_connect(&mut tls, &packet).await,
        Seen::ClosedWithoutConnAck
    );
    let d = ep.decision().await;
    assert!(d.detail.contains("no valid CONNECT"), "{d}");

    // A CONNECT claiming to be huge is refused before it is read.
    let mut tls = mtls(&ep, Port::P8883, device()).connect().await.unwrap();
    assert_eq!(
        send_connect(&mut tls, &[0x10, 0xff, 0xff, 0xff, 0x7f]).await,
        Seen::ClosedWithoutConnAck
    );
    let d = ep.decision().await;
    assert!(d.detail.contains("no valid CONNECT"), "{d}");

    // A client that sends nothing does not block the others.
    let _idle = mtls(&ep, Port::P8883, device()).connect().await.unwrap();
    let seen = mqtt_over(mtls(&ep, Port::P8883, device()), V::V5, CLIENT, None, None).await;
    assert_accepted(&mut ep, seen, "certificate test-device").await;
}

#[tokio::test]
async fn a_second_connection_with_the_same_client_id_takes_the_session_over() {
    use tokio::io::AsyncReadExt;
    let dir = rich_account("takeover");
    let mut ep = Endpoint::start(&dir).await;
    for v in [V::V5, V::V311] {
        let mut first = mtls(&ep, Port::P8883, device()).connect().await.unwrap();
        let seen = send_connect(&mut first, &connect_packet(v, "test-takeover", None, None)).await;
        assert_accepted(&mut ep, seen, "certificate test-device").await;

        let seen = mqtt_over(
            mtls(&ep, Port::P443, device()),
            v,
            "test-takeover",
            None,
            None,
        )
        .await;
        assert_accepted(&mut ep, seen, "certificate test-device").await;

        // The first connection is ended: MQTT 5 with DISCONNECT 0x8E, MQTT 3.1.1 by closing.
        let mut rest = Vec::new();
        let read = tokio::time::timeout(TIMEOUT, first.read_to_end(&mut rest))
            .await
            .expect("the first connection ends");
        assert!(read.is_ok() || !rest.is_empty(), "{read:?}");
        if v == V::V5 {
            let (code, why) = disconnect_with_reason(&rest);
            assert_eq!(code, 0x8E, "DISCONNECT 0x8E Session taken over");
            assert!(why.contains("took over"), "reason string: {why}");
        } else {
            assert_eq!(rest, Vec::<u8>::new(), "3.1.1: closed without a packet");
        }
    }
}

#[tokio::test]
async fn mqtt5_connack_says_maximum_qos_1_and_clamps_keep_alive() {
    use tokio::io::AsyncReadExt;
    let dir = rich_account("connack-props");
    let mut ep = Endpoint::start(&dir).await;
    for (keep_alive, server_keep_alive) in [(5u16, Some(30u16)), (3000, Some(1200)), (60, None)] {
        let mut tls = mtls(&ep, Port::P8883, device()).connect().await.unwrap();
        let mut packet = connect_packet(V::V5, CLIENT, None, None);
        packet[10..12].copy_from_slice(&keep_alive.to_be_bytes()); // keep-alive field
        tls.write_all(&packet).await.unwrap();
        let mut buf = vec![0u8; 2];
        tls.read_exact(&mut buf).await.unwrap();
        let mut body = vec![0u8; usize::from(buf[1])];
        tls.read_exact(&mut body).await.unwrap();
        assert_eq!(&body[..2], &[0x00, 0x00], "accepted");
        let props = &body[3..];
        assert!(
            props.windows(2).any(|w| w == [0x24, 0x01]),
            "Maximum QoS 1 in {props:02X?}"
        );
        let ska = props
            .windows(3)
            .find(|w| w[0] == 0x13)
            .map(|w| u16::from_be_bytes([w[1], w[2]]));
        assert_eq!(
            ska, server_keep_alive,
            "keep-alive {keep_alive}: {props:02X?}"
        );
        assert!(ep.decision().await.allowed);
    }
}

#[tokio::test]
async fn clients_that_stall_are_cut_off_at_each_step() {
    use tokio::io::AsyncReadExt;
    let dir = rich_account("deadlines");
    let opts = ServeOptions {
        step_deadline: Some(Duration::from_millis(300)),
        ..Default::default()
    };
    let mut ep = Endpoint::start_with(&dir, opts).await;

    // TCP only, no TLS ClientHello: closed, and the reason logged.
    let mut tcp = tokio::net::TcpStream::connect(ep.running.addr_8883)
        .await
        .unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(TIMEOUT, tcp.read(&mut buf))
        .await
        .expect("closed in time");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    assert!(ep
        .decision()
        .await
        .detail
        .contains("no TLS handshake within 300ms"));

    // TLS done, no CONNECT.
    let mut tls = mtls(&ep, Port::P8883, device()).connect().await.unwrap();
    let n = tokio::time::timeout(TIMEOUT, tls.read(&mut buf))
        .await
        .expect("closed in time");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    assert!(ep
        .decision()
        .await
        .detail
        .contains("no CONNECT within 300ms"));

    // TLS for a WebSocket, no upgrade request.
    let mut tls = TlsClient {
        endpoint: &ep,
        port: Port::P443,
        alpn: None,
        client_cert: None,
    }
    .connect()
    .await
    .unwrap();
    let n = tokio::time::timeout(TIMEOUT, tls.read(&mut buf))
        .await
        .expect("closed in time");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    assert!(ep
        .decision()
        .await
        .detail
        .contains("no WebSocket upgrade request within 300ms"));
}
