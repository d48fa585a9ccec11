//! What happens around authentication: the exact event an authorizer function receives and that
//! it is not called when the signature fails, publish/subscribe through the embedded broker and
//! through `--upstream`, and a clean stop on Ctrl-C.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use iot_core_local::init::files;
use iot_core_local::server::ServeOptions;
use iot_core_local::tls::ALPN_MQTT;
use rustls::pki_types::pem::PemObject;
use samples_common::custom_auth::{build_username, TokenSigner, UsernameParts};

#[tokio::test]
async fn the_function_gets_the_lambda_event_and_only_after_the_signature_verifies() {
    let dir = account_with_recording_authorizer("event");
    let mut ep = Endpoint::start(&dir).await;
    let signer = TokenSigner::from_pem_file(&ep.file(files::AUTHORIZER_PRIVATE)).unwrap();
    let username = |signed: &str| {
        build_username(&UsernameParts {
            username: Some("device"),
            authorizer: Some("recording-authorizer"),
            signature: Some(&signer.sign(signed).unwrap()),
            token_key_name: Some("token"),
            token_value: Some("tok-1"),
        })
        .unwrap()
    };
    let event_file = dir.join("event.json");
    fn client(ep: &Endpoint) -> TlsClient<'_> {
        TlsClient {
            endpoint: ep,
            port: Port::P443,
            alpn: Some(ALPN_MQTT),
            client_cert: None,
        }
    }

    // A bad signature: refused, and the function never ran.
    let bad = username("another-token");
    let mut tls = client(&ep).connect().await.unwrap();
    let seen = send_connect(
        &mut tls,
        &connect_packet(V::V5, "test-ev", Some(&bad), Some(b"pw")),
    )
    .await;
    assert!(matches!(seen, Seen::ConnAck { code: 0x87, .. }), "{seen:?}");
    assert!(ep
        .decision()
        .await
        .detail
        .contains("signature did not verify"));
    assert!(
        !event_file.exists(),
        "the function must not run when the signature fails"
    );

    // A good one: the function gets the documented event.
    let good = username("tok-1");
    let mut tls = client(&ep).connect().await.unwrap();
    let seen = send_connect(
        &mut tls,
        &connect_packet(V::V5, "test-ev", Some(&good), Some(b"pw")),
    )
    .await;
    assert_eq!(
        seen,
        Seen::ConnAck {
            code: 0,
            reason: None
        }
    );
    assert!(ep.decision().await.detail.contains("principal recorded"));
    let event: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&event_file).unwrap()).unwrap();
    assert_eq!(event["token"], "tok-1");
    assert_eq!(event["signatureVerified"], true);
    assert_eq!(event["protocols"], serde_json::json!(["tls", "mqtt"]));
    assert_eq!(event["protocolData"]["tls"]["serverName"], "localhost");
    assert_eq!(event["protocolData"]["mqtt"]["username"], good.as_str());
    assert_eq!(event["protocolData"]["mqtt"]["password"], "cHc="); // base64("pw")
    assert_eq!(event["protocolData"]["mqtt"]["clientId"], "test-ev");
    let id = event["connectionMetadata"]["id"].as_str().unwrap();
    assert_eq!(id.len(), 36, "a UUID: {id}");
    assert!(event["protocolData"].get("http").is_none());
}

/// Connect a real MQTT client (rumqttc) with the device certificate to the 8883 listener.
fn device_client(ep: &Endpoint, id: &str) -> (rumqttc::AsyncClient, rumqttc::EventLoop) {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_file_iter(ep.file(files::SERVER_CA)).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let certs = rustls::pki_types::CertificateDer::pem_file_iter(ep.file(files::DEVICE_CERT))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(ep.file(files::DEVICE_KEY)).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_client_auth_cert(certs, key)
    .unwrap();
    let mut opts = rumqttc::MqttOptions::new(id, "localhost", ep.running.addr_8883.port());
    opts.set_transport(rumqttc::Transport::tls_with_config(
        rumqttc::TlsConfiguration::Rustls(Arc::new(config)),
    ));
    opts.set_keep_alive(Duration::from_secs(30));
    rumqttc::AsyncClient::new(opts, 10)
}

/// One client subscribes, another publishes; the message arrives through the broker.
async fn publish_and_receive(ep: &Endpoint) {
    use rumqttc::{Event, Packet, QoS};
    let (sub, mut sub_loop) = device_client(ep, "test-subscriber");
    let (publisher, mut pub_loop) = device_client(ep, "test-publisher");
    let received = async {
        sub.subscribe("test/topic", QoS::AtLeastOnce).await.unwrap();
        let mut published = false;
        loop {
            tokio::select! {
                e = sub_loop.poll() => match e.expect("subscriber connection") {
                    Event::Incoming(Packet::SubAck(_)) if !published => {
                        publisher.publish("test/topic", QoS::AtLeastOnce, false, "hello").await.unwrap();
                        published = true;
                    }
                    Event::Incoming(Packet::Publish(p)) => return p,
                    _ => {}
                },
                e = pub_loop.poll() => { e.expect("publisher connection"); }
            }
        }
    };
    let msg = tokio::time::timeout(TIMEOUT, received)
        .await
        .expect("the message arrives");
    assert_eq!(msg.topic, "test/topic");
    assert_eq!(&msg.payload[..], b"hello");
}

#[tokio::test]
async fn publish_and_subscribe_work_through_the_embedded_broker() {
    let dir = rich_account("pubsub");
    let ep = Endpoint::start(&dir).await;
    publish_and_receive(&ep).await;
}

#[tokio::test]
async fn upstream_bridges_to_an_external_broker() {
    // The external broker: this crate's broker on a plain loopback port, with no TLS and no
    // authentication, as Mosquitto would be.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let external = listener.local_addr().unwrap();
    tokio::spawn(iot_core_local::broker::Broker::start().serve_plain(listener, TIMEOUT));
    let dir = rich_account("upstream");
    let opts = ServeOptions {
        upstream: Some(external.to_string()),
        ..Default::default()
    };
    let ep = Endpoint::start_with(&dir, opts).await;
    publish_and_receive(&ep).await;
}

#[test]
fn serve_stops_cleanly_on_ctrl_c() {
    use std::io::{BufRead, BufReader};
    let dir = rich_account("sigint");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_iot-core-local"))
        .args(["serve", "--dir"])
        .arg(&dir)
        .args(["--port-443", "0", "--port-8883", "0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = lines
        .by_ref()
        .map_while(Result::ok)
        .find(|l| l.starts_with("ready "))
        .expect("a ready line");
    assert!(
        ready.contains("port_443=") && ready.contains("port_8883="),
        "{ready}"
    );
    // SIGINT, as Ctrl-C sends.
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let exit = child.wait().unwrap();
    assert!(exit.success(), "{exit:?}");
    assert_eq!(rest.last().map(String::as_str), Some("stopped"), "{rest:?}");
}

#[test]
fn serve_on_a_port_in_use_says_what_to_do() {
    let dir = rich_account("port-in-use");
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_iot-core-local"))
        .args(["serve", "--dir"])
        .arg(&dir)
        .args(["--port-443", &addr.port().to_string(), "--port-8883", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let error = stderr
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line in {stderr}"));
    assert!(
        error.starts_with(&format!("error: cannot listen on {addr}: ")),
        "{error}"
    );
    assert!(
        error.ends_with(&format!(
            "; another iot-core-local (or other program) is listening on {addr}: stop it, or pass --port-443 0 --port-8883 0 to pick free ports"
        )),
        "{error}"
    );
    drop(busy);
}
