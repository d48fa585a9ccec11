//! What a client can do before it is authenticated, and what it cannot: WebSocket frame and
//! message limits, the first frame written with the upgrade request, the cap on pending
//! connections, accepts that fail for lack of descriptors, and control characters in what the
//! client sends reaching the log.

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_tungstenite::tokio::TokioAdapter;
use async_tungstenite::WebSocketStream;
use aws_credential_types::Credentials;
use common::*;
use futures_util::StreamExt;
use iot_core_local::init::{files, UNSIGNED_AUTHORIZER, USERNAME};
use iot_core_local::server::ServeOptions;
use iot_core_local::tls::ALPN_MQTT;
use iot_core_local::websocket::MAX_MESSAGE;
use samples_common::custom_auth::{build_username, UsernameParts};
use samples_common::websocket::presign;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tungstenite::protocol::frame::coding::{Data, OpCode};
use tungstenite::protocol::frame::Frame;
use tungstenite::protocol::Role;
use tungstenite::Message;

type Ws = WebSocketStream<TokioAdapter<Tls>>;

fn device_on_8883(ep: &Endpoint) -> TlsClient<'_> {
    TlsClient {
        endpoint: ep,
        port: Port::P8883,
        alpn: None,
        client_cert: Some((files::DEVICE_CERT, files::DEVICE_KEY)),
    }
}

fn unsigned_username(authorizer: &str) -> String {
    build_username(&UsernameParts {
        username: Some(USERNAME),
        authorizer: Some(authorizer),
        ..Default::default()
    })
    .unwrap()
}

fn upgrade_request(host: &str, path_and_query: &str) -> String {
    format!(
        "GET {path_and_query} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\n\
         Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n"
    )
}

/// A binary WebSocket frame as a client sends it (masked), encoded by hand from RFC 6455.
fn client_frame(payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0x82];
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= 0xffff => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    out.extend_from_slice(&mask);
    out.extend(payload.iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
    out
}

/// Read an HTTP response head; returns it and the bytes after it.
async fn read_response_head<S: AsyncRead + Unpin>(s: &mut S) -> (String, Vec<u8>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        let n = tokio::time::timeout(TIMEOUT, s.read(&mut chunk))
            .await
            .expect("a response")
            .expect("reading the response");
        assert!(n > 0, "closed before the response head ended: {buf:?}");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return (String::from_utf8_lossy(&buf).into_owned(), rest);
        }
    }
}

/// TLS to 443 without ALPN and a WebSocket upgrade on `path_and_query`: the WebSocket, or the
/// HTTP status line of the refusal.
async fn websocket(ep: &Endpoint, path_and_query: &str) -> Result<Ws, String> {
    let mut tls = TlsClient {
        endpoint: ep,
        port: Port::P443,
        alpn: None,
        client_cert: None,
    }
    .connect()
    .await
    .unwrap();
    let host = format!("localhost:{}", ep.running.addr_443.port());
    tls.write_all(upgrade_request(&host, path_and_query).as_bytes())
        .await
        .unwrap();
    let (head, rest) = read_response_head(&mut tls).await;
    if !head.starts_with("HTTP/1.1 101 ") {
        return Err(head.lines().next().unwrap_or_default().to_string());
    }
    Ok(
        WebSocketStream::from_partially_read(TokioAdapter::new(tls), rest, Role::Client, None)
            .await,
    )
}

/// The next thing read from the WebSocket is its end (within [`TIMEOUT`]).
async fn assert_ws_closed(ws: &mut Ws) {
    let next = tokio::time::timeout(TIMEOUT, ws.next())
        .await
        .expect("the server closes the WebSocket");
    assert!(
        matches!(next, None | Some(Err(_)) | Some(Ok(Message::Close(_)))),
        "expected the close, got {next:?}"
    );
}

/// The endpoint still serves: an mTLS client gets CONNACK 0.
async fn assert_serving(ep: &mut Endpoint, id: &str) {
    let mut tls = device_on_8883(ep).connect().await.unwrap();
    let seen = send_connect(&mut tls, &connect_packet(V::V5, id, None, None)).await;
    assert_eq!(
        seen,
        Seen::ConnAck {
            code: 0,
            reason: None
        }
    );
    let d = ep.decision().await;
    assert!(d.allowed, "{d}");
}

// ---- WebSocket limits (issue 8, finding 3) ----

#[tokio::test]
async fn an_oversized_websocket_frame_before_connect_closes_the_connection() {
    let dir = rich_account("ws-big-frame");
    let mut ep = Endpoint::start(&dir).await;
    let mut ws = websocket(&ep, "/mqtt").await.expect("upgrade");
    // One non-final 1 MiB fragment: over the frame limit, refused on its header.
    let frame = Frame::message(vec![0u8; 1 << 20], OpCode::Data(Data::Binary), false);
    let _ = ws.send(Message::Frame(frame)).await; // the server may close while we write
    assert_ws_closed(&mut ws).await;
    let d = ep.decision().await;
    assert!(!d.allowed && d.detail.contains("no valid CONNECT"), "{d}");
    assert_serving(&mut ep, "test-after-big-frame").await;
}

#[tokio::test]
async fn fragments_adding_up_past_the_message_limit_close_the_connection() {
    let dir = rich_account("ws-fragments");
    let mut ep = Endpoint::start(&dir).await;
    let mut ws = websocket(&ep, "/mqtt").await.expect("upgrade");
    // 100 KiB non-final fragments, each under the frame limit, never finished.
    let fragment = vec![0u8; 100 * 1024];
    let needed = MAX_MESSAGE / fragment.len() + 1;
    for i in 0..needed + 2 {
        let opcode = if i == 0 {
            OpCode::Data(Data::Binary)
        } else {
            OpCode::Data(Data::Continue)
        };
        let frame = Frame::message(fragment.clone(), opcode, false);
        if ws.send(Message::Frame(frame)).await.is_err() {
            break;
        }
    }
    assert_ws_closed(&mut ws).await;
    let d = ep.decision().await;
    assert!(!d.allowed && d.detail.contains("no valid CONNECT"), "{d}");
    assert_serving(&mut ep, "test-after-fragments").await;
}

#[tokio::test]
async fn a_message_holding_the_largest_publish_passes() {
    let dir = rich_account("ws-largest");
    let mut ep = Endpoint::start(&dir).await;
    let pw = ep.password();
    let mut ws = websocket(&ep, "/mqtt").await.expect("upgrade");
    let user = unsigned_username(UNSIGNED_AUTHORIZER);
    let connect = connect_packet(V::V311, "test-largest", Some(&user), Some(pw.as_bytes()));
    ws.send(Message::binary(connect)).await.unwrap();
    let answer = tokio::time::timeout(TIMEOUT, ws.next())
        .await
        .expect("CONNACK");
    let Some(Ok(Message::Binary(b))) = answer else {
        panic!("expected CONNACK, got {answer:?}");
    };
    assert_eq!(&b[..], &[0x20, 0x02, 0x00, 0x00]);
    assert!(ep.decision().await.allowed);

    // One message, in two fragments: a QoS 0 PUBLISH of 130,000 bytes (near IoT Core's 128 KB
    // payload maximum), then a PINGREQ. The PINGRESP shows the whole message went through (a denied
    // PUBLISH would close this MQTT 3.1.1 connection instead).
    let topic = b"test/test-largest/big"; // allowed by init's policy for this client id
    let payload = vec![b'x'; 130_000];
    let remaining = 2 + topic.len() + payload.len();
    let mut message = vec![0x30];
    let mut len = remaining;
    loop {
        let byte = (len % 128) as u8;
        len /= 128;
        message.push(if len > 0 { byte | 0x80 } else { byte });
        if len == 0 {
            break;
        }
    }
    message.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    message.extend_from_slice(topic);
    message.extend_from_slice(&payload);
    message.extend_from_slice(&[0xC0, 0x00]);
    let (first, second) = message.split_at(70_000);
    let f1 = Frame::message(first.to_vec(), OpCode::Data(Data::Binary), false);
    let f2 = Frame::message(second.to_vec(), OpCode::Data(Data::Continue), true);
    ws.send(Message::Frame(f1)).await.unwrap();
    ws.send(Message::Frame(f2)).await.unwrap();
    let answer = tokio::time::timeout(TIMEOUT, ws.next())
        .await
        .expect("PINGRESP");
    let Some(Ok(Message::Binary(b))) = answer else {
        panic!("expected PINGRESP, got {answer:?}");
    };
    assert_eq!(&b[..], &[0xD0, 0x00]);
}

// ---- The first frame in the same write as the upgrade request (finding 10) ----

#[tokio::test]
async fn a_first_frame_sent_with_the_upgrade_request_is_read() {
    let dir = rich_account("ws-pipelined");
    let mut ep = Endpoint::start(&dir).await;
    let pw = ep.password();
    let mut tls = TlsClient {
        endpoint: &ep,
        port: Port::P443,
        alpn: None,
        client_cert: None,
    }
    .connect()
    .await
    .unwrap();
    let host = format!("localhost:{}", ep.running.addr_443.port());
    let user = unsigned_username(UNSIGNED_AUTHORIZER);
    let connect = connect_packet(V::V5, "test-pipelined", Some(&user), Some(pw.as_bytes()));
    let mut one_write = upgrade_request(&host, "/mqtt").into_bytes();
    one_write.extend_from_slice(&client_frame(&connect));
    tls.write_all(&one_write).await.unwrap();
    tls.flush().await.unwrap();

    let (head, rest) = read_response_head(&mut tls).await;
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    let mut ws =
        WebSocketStream::from_partially_read(TokioAdapter::new(tls), rest, Role::Client, None)
            .await;
    let answer = tokio::time::timeout(TIMEOUT, ws.next())
        .await
        .expect("a CONNACK, not a stall");
    let Some(Ok(Message::Binary(b))) = answer else {
        panic!("expected CONNACK, got {answer:?}");
    };
    assert_eq!(
        parse_connack(&b),
        Some(Seen::ConnAck {
            code: 0,
            reason: None
        })
    );
    let d = ep.decision().await;
    assert!(d.allowed && d.detail.contains("principal demoUser"), "{d}");
}

// ---- The cap on connections not yet authenticated (finding 4) ----

#[tokio::test]
async fn connections_over_the_pending_cap_are_closed_and_admitted_again_later() {
    let dir = rich_account("pending-cap");
    let opts = ServeOptions {
        max_pending: Some(2),
        step_deadline: Some(Duration::from_secs(120)),
        ..Default::default()
    };
    let mut ep = Endpoint::start_with(&dir, opts).await;
    let addr = ep.running.addr_8883;

    // Two clients that stall before TLS take both places (same listener: accepted in order).
    let stalled_1 = tokio::net::TcpStream::connect(addr).await.unwrap();
    let stalled_2 = tokio::net::TcpStream::connect(addr).await.unwrap();
    // A third is closed at once (its deadline, 120 s, is not what closes it).
    let mut third = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(TIMEOUT, third.read(&mut buf))
        .await
        .expect("the third connection is closed, not left waiting");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    // An mTLS client is refused too while the two hold their places.
    assert!(
        device_on_8883(&ep).connect().await.is_err()
            || matches!(
                send_connect(
                    &mut device_on_8883(&ep).connect().await.unwrap(),
                    &connect_packet(V::V5, "test-over-cap", None, None)
                )
                .await,
                Seen::ClosedWithoutConnAck | Seen::TlsError(_)
            )
    );

    // The stalled ones leave: their places come back.
    drop(stalled_1);
    drop(stalled_2);
    for _ in 0..2 {
        let d = ep.decision().await;
        assert!(d.detail.contains("TLS handshake failed"), "{d}");
    }
    let mut admitted = None;
    for _ in 0..50 {
        if let Ok(mut tls) = device_on_8883(&ep).connect().await {
            let packet = connect_packet(V::V5, "test-cap-1", None, None);
            let seen = send_connect(&mut tls, &packet).await;
            if seen
                == (Seen::ConnAck {
                    code: 0,
                    reason: None,
                })
            {
                admitted = Some(tls);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _first = admitted.expect("a valid mTLS connection is admitted once the cap has room");
    assert!(ep.decision().await.allowed);

    // Authenticated connections no longer count: two more, all three open at once.
    let mut open = Vec::new();
    for id in ["test-cap-2", "test-cap-3"] {
        let mut tls = device_on_8883(&ep).connect().await.unwrap();
        let seen = send_connect(&mut tls, &connect_packet(V::V5, id, None, None)).await;
        assert_eq!(
            seen,
            Seen::ConnAck {
                code: 0,
                reason: None
            },
            "{id}"
        );
        assert!(ep.decision().await.allowed);
        open.push(tls);
    }
}

// ---- Control characters from clients in the log (finding 8) ----

/// The decision logs as one line, with the newline written `\n`.
fn assert_one_line(d: &iot_core_local::server::Decision, shown: &str) {
    let line = d.to_string();
    assert!(!line.contains('\n') && !line.contains('\r'), "{line:?}");
    assert!(line.contains(shown), "expected {shown:?} in {line:?}");
}

#[tokio::test]
async fn newlines_from_clients_are_escaped_in_decisions() {
    let dir = rich_account("log-forging");
    let mut ep = Endpoint::start(&dir).await;

    // In the client id.
    let mut tls = device_on_8883(&ep).connect().await.unwrap();
    let id = "test-a\n127.0.0.1:1 [8883 mtls] client 'x': allowed: FORGED";
    let _ = send_connect(&mut tls, &connect_packet(V::V5, id, None, None)).await;
    let d = ep.decision().await;
    assert_eq!(d.client_id.as_deref(), Some(id), "kept as sent");
    assert_one_line(
        &d,
        "'test-a\\n127.0.0.1:1 [8883 mtls] client 'x': allowed: FORGED'",
    );

    // In the authorizer name: %0A in the username.
    let mut tls = TlsClient {
        endpoint: &ep,
        port: Port::P443,
        alpn: Some(ALPN_MQTT),
        client_cert: None,
    }
    .connect()
    .await
    .unwrap();
    let user = "demo-user?x-amz-customauthorizer-name=evil%0Aallowed: FORGED";
    let seen = send_connect(
        &mut tls,
        &connect_packet(V::V5, "test-b", Some(user), Some(b"pw")),
    )
    .await;
    assert!(matches!(seen, Seen::ConnAck { code: 0x87, .. }), "{seen:?}");
    let d = ep.decision().await;
    assert!(!d.allowed);
    assert_one_line(&d, "no authorizer named 'evil\\nallowed: FORGED'");

    // In the SigV4 credential (the access key id).
    let host = format!("localhost:{}", ep.running.addr_443.port());
    let creds = Credentials::new("AKIA\nallowed: FORGED", "secret", None, None, "t");
    let signed = presign(&host, "us-east-1", &creds, SystemTime::now());
    let refused = websocket(&ep, &signed.path_and_query).await;
    assert_eq!(refused.err().as_deref(), Some("HTTP/1.1 403 Forbidden"));
    let d = ep.decision().await;
    assert!(!d.allowed);
    assert_one_line(&d, "AKIA\\nallowed: FORGED");

    // In the WebSocket path.
    let refused = websocket(&ep, "/mqtt%0D%0Aforged").await;
    assert_eq!(refused.err().as_deref(), Some("HTTP/1.1 404 Not Found"));
    let d = ep.decision().await;
    assert!(d.detail.contains("/mqtt%0D%0Aforged"), "{d}");
    assert_one_line(&d, "/mqtt%0D%0Aforged");
}

// ---- Accepts that fail for lack of descriptors (finding 7) ----

/// A TLS client for an endpoint running in another process.
async fn mtls_connect_to(dir: &std::path::Path, port: u16, id: &str) -> Option<Seen> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(dir.join(files::SERVER_CA)).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let certs = CertificateDer::pem_file_iter(dir.join(files::DEVICE_CERT))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(dir.join(files::DEVICE_KEY)).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_client_auth_cert(certs, key)
    .unwrap();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.ok()?;
    tls.flush().await.ok()?;
    Some(send_connect(&mut tls, &connect_packet(V::V5, id, None, None)).await)
}

#[tokio::test]
async fn accepts_failing_for_lack_of_descriptors_back_off_and_log_once_a_second() {
    use std::io::{BufRead, BufReader};
    let dir = rich_account("emfile");
    // The real binary, with few descriptors: the connections below exhaust them.
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg(r#"ulimit -n 64 && exec "$0" "$@""#)
        .arg(env!("CARGO_BIN_EXE_iot-core-local"))
        .args(["serve", "--dir"])
        .arg(&dir)
        .args(["--port-443", "0", "--port-8883", "0"])
        .args(["--step-timeout", "120", "--max-pending", "1000"])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let ready = stdout
        .lines()
        .map_while(Result::ok)
        .find(|l| l.starts_with("ready "))
        .expect("a ready line");
    let port_8883: u16 = ready
        .split_whitespace()
        .find_map(|w| w.strip_prefix("port_8883="))
        .and_then(|p| p.parse().ok())
        .expect("port_8883 in the ready line");
    let (lines_tx, lines_rx) = std::sync::mpsc::channel();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            let _ = lines_tx.send((std::time::Instant::now(), line));
        }
    });

    // More connections than the process has descriptors; they stall, so none is given back.
    let mut held = Vec::new();
    for _ in 0..100 {
        held.push(tokio::net::TcpStream::connect(("127.0.0.1", port_8883)).await);
    }
    let watched_from = std::time::Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let watched_for = watched_from.elapsed();
    let lines: Vec<_> = lines_rx.try_iter().collect();
    let failures: Vec<&String> = lines
        .iter()
        .filter(|(at, l)| *at >= watched_from && l.contains("accept failed"))
        .map(|(_, l)| l)
        .collect();
    assert!(!failures.is_empty(), "no accept failure logged: {lines:?}");
    assert!(
        failures[0].contains("Too many open files") && failures[0].contains("time(s) since"),
        "{}",
        failures[0]
    );
    // One line per second at most (counting the line at the start of the window).
    let most = watched_for.as_secs() as usize + 2;
    assert!(
        failures.len() <= most,
        "{} lines in {watched_for:?}: {failures:#?}",
        failures.len()
    );

    // Descriptors come back: the endpoint serves again.
    drop(held);
    let mut seen = None;
    for _ in 0..50 {
        seen = mtls_connect_to(&dir, port_8883, "test-after-emfile").await;
        if seen.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        seen,
        Some(Seen::ConnAck {
            code: 0,
            reason: None
        })
    );
    let panicked = lines.iter().any(|(_, l)| l.contains("panicked"));
    assert!(!panicked, "{lines:?}");
}
