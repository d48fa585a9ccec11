//! Step 1 of a connection: TLS. The server configurations of both listeners, and the ALPN
//! route that decides what the connection is.
//!
//! Client certificates are requested on both listeners (mandatory on the 8883 one) and only their
//! possession is proven during the handshake; whether the certificate is registered, ACTIVE and
//! allowed is decided later, per connection, by [`crate::mtls`], so that the decision can be
//! logged with its reason like every other one.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme};
use rustls_pki_types::pem::PemObject;

/// ALPN that selects MQTT with an X.509 client certificate on the 443 listener.
pub const ALPN_MQTT_CA: &[u8] = b"x-amzn-mqtt-ca";
/// ALPN that selects MQTT with a custom authorizer on the 443 listener.
pub const ALPN_MQTT: &[u8] = b"mqtt";
/// ALPN some WebSocket clients offer.
pub const ALPN_HTTP11: &[u8] = b"http/1.1";

/// Which listener accepted the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listener {
    /// Plays port 443: ALPN decides.
    Port443,
    /// Plays port 8883: mTLS only.
    Port8883,
}

/// What a connection is, decided by the listener and ALPN (reference §1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// MQTT over TLS authenticated by the client certificate.
    Mtls,
    /// MQTT over TLS authenticated by a custom authorizer (443 with ALPN `mqtt` only).
    CustomAuth,
    /// HTTP: only a WebSocket upgrade on `/mqtt`, authenticated by SigV4 or a custom authorizer.
    WebSocket,
}

impl std::fmt::Display for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Route::Mtls => "mtls",
            Route::CustomAuth => "custom-auth",
            Route::WebSocket => "websocket",
        })
    }
}

/// The route for a listener and negotiated ALPN protocol; `None` for a combination IoT Core does
/// not serve.
pub fn route(listener: Listener, alpn: Option<&[u8]>) -> Option<Route> {
    match (listener, alpn) {
        (Listener::Port8883, None) => Some(Route::Mtls),
        (Listener::Port8883, Some(_)) => None,
        (Listener::Port443, Some(p)) if p == ALPN_MQTT_CA => Some(Route::Mtls),
        (Listener::Port443, Some(p)) if p == ALPN_MQTT => Some(Route::CustomAuth),
        (Listener::Port443, None) => Some(Route::WebSocket),
        (Listener::Port443, Some(p)) if p == ALPN_HTTP11 => Some(Route::WebSocket),
        (Listener::Port443, Some(_)) => None,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("cannot read {path}: {reason}")]
    Pem { path: String, reason: String },
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The server configurations for the 443 and the 8883 listener.
pub fn server_configs(
    cert: &Path,
    key: &Path,
) -> Result<(Arc<ServerConfig>, Arc<ServerConfig>), TlsSetupError> {
    let chain = read_certs(cert)?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsSetupError::Pem {
        path: key.display().to_string(),
        reason: e.to_string(),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let algorithms = provider.signature_verification_algorithms;

    let build = |mandatory: bool, alpn: Vec<Vec<u8>>| -> Result<Arc<ServerConfig>, TlsSetupError> {
        let verifier = Arc::new(ProofOfPossession {
            mandatory,
            algorithms,
        });
        let mut config = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())?;
        config.alpn_protocols = alpn;
        Ok(Arc::new(config))
    };
    let port443 = build(
        false,
        vec![
            ALPN_MQTT_CA.to_vec(),
            ALPN_MQTT.to_vec(),
            ALPN_HTTP11.to_vec(),
        ],
    )?;
    let port8883 = build(true, Vec::new())?;
    Ok((port443, port8883))
}

/// All certificates of a PEM file.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let err = |reason: String| TlsSetupError::Pem {
        path: path.display().to_string(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no CERTIFICATE block".into()));
    }
    Ok(certs)
}

/// Requests a client certificate and checks the handshake signature made with its key; the
/// registry decides the rest after the handshake.
#[derive(Debug)]
struct ProofOfPossession {
    mandatory: bool,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for ProofOfPossession {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alpn_routes_as_iot_core_does() {
        use Listener::*;
        assert_eq!(route(Port443, Some(ALPN_MQTT_CA)), Some(Route::Mtls));
        assert_eq!(route(Port443, Some(ALPN_MQTT)), Some(Route::CustomAuth));
        assert_eq!(route(Port443, None), Some(Route::WebSocket));
        assert_eq!(route(Port443, Some(ALPN_HTTP11)), Some(Route::WebSocket));
        assert_eq!(route(Port8883, None), Some(Route::Mtls));
        // Custom auth is not served on 8883.
        assert_eq!(route(Port8883, Some(ALPN_MQTT)), None);
    }
}
