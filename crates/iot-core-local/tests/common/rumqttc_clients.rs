//! rumqttc clients for the end-to-end tests: options for the device certificate on the 8883
//! listener (MQTT 3.1.1 and MQTT 5), and event-loop waits that fail after [`TIMEOUT`].

use std::sync::Arc;
use std::time::Duration;

use iot_core_local::init::files;
use rumqttc::v5::mqttbytes::v5::Packet as P5;
use rumqttc::{Event, Packet as P};
use rustls::pki_types::pem::PemObject;

use super::{Endpoint, TIMEOUT};

/// TLS with the account's server CA and the device certificate as client certificate.
pub fn tls_config(ep: &Endpoint) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_file_iter(ep.file(files::SERVER_CA)).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let certs = rustls::pki_types::CertificateDer::pem_file_iter(ep.file(files::DEVICE_CERT))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(ep.file(files::DEVICE_KEY)).unwrap();
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)
        .unwrap(),
    )
}

/// MQTT 3.1.1 options for the device certificate on the 8883 listener.
pub fn options(ep: &Endpoint, id: &str) -> rumqttc::MqttOptions {
    let mut opts = rumqttc::MqttOptions::new(id, "localhost", ep.running.addr_8883.port());
    opts.set_transport(rumqttc::Transport::tls_with_config(
        rumqttc::TlsConfiguration::Rustls(tls_config(ep)),
    ));
    opts.set_keep_alive(Duration::from_secs(30));
    opts
}

/// An MQTT 3.1.1 client with a request queue of 10.
pub fn client(opts: rumqttc::MqttOptions) -> (rumqttc::AsyncClient, rumqttc::EventLoop) {
    rumqttc::AsyncClient::new(opts, 10)
}

/// MQTT 5 options for the device certificate on the 8883 listener.
pub fn v5_options(ep: &Endpoint, id: &str) -> rumqttc::v5::MqttOptions {
    let mut opts = rumqttc::v5::MqttOptions::new(id, "localhost", ep.running.addr_8883.port());
    opts.set_transport(rumqttc::Transport::tls_with_config(
        rumqttc::TlsConfiguration::Rustls(tls_config(ep)),
    ));
    opts.set_keep_alive(Duration::from_secs(30));
    opts
}

/// Poll a 3.1.1 event loop until `pick` returns something, failing on a connection error or
/// after [`TIMEOUT`].
pub async fn until<T>(ev: &mut rumqttc::EventLoop, mut pick: impl FnMut(&P) -> Option<T>) -> T {
    let wait = async {
        loop {
            match ev.poll().await.expect("connection") {
                Event::Incoming(p) => {
                    if let Some(t) = pick(&p) {
                        return t;
                    }
                }
                Event::Outgoing(_) => {}
            }
        }
    };
    tokio::time::timeout(TIMEOUT, wait)
        .await
        .expect("within the timeout")
}

pub async fn connected(ev: &mut rumqttc::EventLoop) -> rumqttc::ConnAck {
    until(ev, |p| match p {
        P::ConnAck(c) => Some(c.clone()),
        _ => None,
    })
    .await
}

pub async fn suback(ev: &mut rumqttc::EventLoop) -> Vec<rumqttc::SubscribeReasonCode> {
    until(ev, |p| match p {
        P::SubAck(s) => Some(s.return_codes.clone()),
        _ => None,
    })
    .await
}

pub async fn next_publish(ev: &mut rumqttc::EventLoop) -> rumqttc::Publish {
    until(ev, |p| match p {
        P::Publish(m) => Some(m.clone()),
        _ => None,
    })
    .await
}

/// Poll an MQTT 5 event loop until `pick` returns something, failing on a connection error or
/// after [`TIMEOUT`].
pub async fn until5<T>(
    ev: &mut rumqttc::v5::EventLoop,
    mut pick: impl FnMut(&P5) -> Option<T>,
) -> T {
    let wait = async {
        loop {
            if let rumqttc::v5::Event::Incoming(p) = ev.poll().await.expect("v5 connection") {
                if let Some(t) = pick(&p) {
                    return t;
                }
            }
        }
    };
    tokio::time::timeout(TIMEOUT, wait)
        .await
        .expect("within the timeout")
}

/// Poll a 3.1.1 event loop until the server closes the connection.
pub async fn closed(ev: &mut rumqttc::EventLoop) -> rumqttc::ConnectionError {
    let wait = async {
        loop {
            if let Err(e) = ev.poll().await {
                return e;
            }
        }
    };
    tokio::time::timeout(TIMEOUT, wait)
        .await
        .expect("closed within the timeout")
}

/// Poll an MQTT 5 event loop until it fails: what rumqttc returns when the server ends the
/// connection.
pub async fn closed5(ev: &mut rumqttc::v5::EventLoop) -> rumqttc::v5::ConnectionError {
    let wait = async {
        loop {
            if let Err(e) = ev.poll().await {
                return e;
            }
        }
    };
    tokio::time::timeout(TIMEOUT, wait)
        .await
        .expect("closed within the timeout")
}
