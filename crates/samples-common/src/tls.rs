//! TLS client configuration: trust roots, the client certificate, ALPN.
//!
//! The crypto provider is rustls' `ring` provider, chosen explicitly (see the workspace README for
//! the start-up measurement behind that choice; the `aws-lc-rs` feature swaps it for that
//! benchmark). Server certificates are always verified: against
//! the built-in Mozilla roots (which include Amazon Root CA 1 to 4) or against `--ca-file`, by
//! rustls' own WebPKI verifier; the wrapper around it only notes that the server's certificate
//! arrived, so that a server that never answers TLS is reported as exactly that.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{Resumption, WebPkiServerVerifier};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

use crate::error::{Error, FileProblem, PemFile};

/// ALPN protocol for mTLS MQTT on port 443.
pub(crate) const ALPN_MQTT_CA: &[u8] = b"x-amzn-mqtt-ca";
/// ALPN protocol for custom-authorizer MQTT on port 443.
pub(crate) const ALPN_MQTT: &[u8] = b"mqtt";

/// What the TLS client presents and expects.
#[derive(Debug, Default)]
pub(crate) struct TlsOptions<'a> {
    /// Trust only the certificates in this PEM file instead of the built-in roots.
    pub(crate) ca_file: Option<&'a Path>,
    /// Client certificate chain and private key for mTLS.
    pub(crate) client_cert: Option<(&'a Path, &'a Path)>,
    /// The single ALPN protocol to offer, if any.
    pub(crate) alpn: Option<&'a [u8]>,
}

/// A rustls client configuration, and what it has seen of the handshake so far.
#[derive(Clone)]
pub(crate) struct TlsClient {
    pub(crate) config: Arc<ClientConfig>,
    pub(crate) progress: Arc<HandshakeProgress>,
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The configuration holds the client's private key: show only what is harmless.
        let alpn: Vec<String> = self
            .config
            .alpn_protocols
            .iter()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect();
        f.debug_struct("TlsClient")
            .field("alpn", &alpn)
            .field("progress", &self.progress)
            .finish_non_exhaustive()
    }
}

/// Whether the server has answered the TLS handshake: its certificate arrived. rumqttc runs
/// TCP, TLS and CONNECT as one step, so this is how a stall in TLS is told from a stall in MQTT.
#[derive(Debug, Default)]
pub(crate) struct HandshakeProgress {
    server_answered: AtomicBool,
}

impl HandshakeProgress {
    /// Forget what an earlier attempt saw.
    pub(crate) fn reset(&self) {
        self.server_answered.store(false, Ordering::SeqCst);
    }

    /// The server's certificate has arrived during this attempt.
    pub(crate) fn server_answered(&self) -> bool {
        self.server_answered.load(Ordering::SeqCst)
    }
}

/// rustls' standard WebPKI verifier, unchanged, that also notes when it is first asked: that is
/// when the server's certificate arrives. Every decision is the inner verifier's.
#[derive(Debug)]
struct ProgressVerifier {
    inner: Arc<WebPkiServerVerifier>,
    progress: Arc<HandshakeProgress>,
}

impl ServerCertVerifier for ProgressVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.progress.server_answered.store(true, Ordering::SeqCst);
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }

    fn requires_raw_public_keys(&self) -> bool {
        self.inner.requires_raw_public_keys()
    }

    fn root_hint_subjects(&self) -> Option<&[rustls::DistinguishedName]> {
        self.inner.root_hint_subjects()
    }
}

/// Build a rustls client configuration, with errors that name the file and flag at fault.
pub(crate) fn client_config(opts: &TlsOptions<'_>) -> Result<TlsClient, Error> {
    let roots = roots(PemFile::CaFile, opts.ca_file)?;

    let provider = Arc::new(crypto_provider());
    let progress = Arc::new(HandshakeProgress::default());
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| Error::TlsSetup(e.to_string()))?;
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::TlsSetup(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(ProgressVerifier {
            inner: verifier,
            progress: progress.clone(),
        }));

    let mut config = match opts.client_cert {
        Some((cert_path, key_path)) => {
            let certs = read_certs(PemFile::Certificate, cert_path)?;
            let key = read_key(key_path)?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| match e {
                    rustls::Error::InconsistentKeys(_) => Error::KeyMismatch {
                        cert: cert_path.to_path_buf(),
                        key: key_path.to_path_buf(),
                    },
                    other => Error::File {
                        which: PemFile::PrivateKey,
                        path: key_path.to_path_buf(),
                        problem: FileProblem::UnusableKey(other.to_string()),
                    },
                })?
        }
        None => builder.with_no_client_auth(),
    };
    if let Some(alpn) = opts.alpn {
        config.alpn_protocols = vec![alpn.to_vec()];
    }
    // A sample makes one connection, so there is nothing to resume; and a resumed handshake
    // would skip the certificate that `HandshakeProgress` watches for.
    config.resumption = Resumption::disabled();
    Ok(TlsClient {
        config: Arc::new(config),
        progress,
    })
}

/// The TLS configuration for an `https://` proxy: the built-in roots or `--proxy-ca-file`, no
/// client certificate, no ALPN (the proxy speaks HTTP/1.1 CONNECT; the endpoint's own TLS, with
/// its ALPN, runs inside the tunnel).
pub(crate) fn proxy_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, Error> {
    let roots = roots(PemFile::ProxyCaFile, ca_file)?;
    let config = ClientConfig::builder_with_provider(Arc::new(crypto_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::TlsSetup(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The certificates of a CA file, or the built-in roots without one.
fn roots(which: PemFile, ca_file: Option<&Path>) -> Result<RootCertStore, Error> {
    let Some(path) = ca_file else {
        return Ok(builtin_roots());
    };
    let mut roots = RootCertStore::empty();
    for cert in read_certs(which, path)? {
        roots.add(cert).map_err(|e| Error::File {
            which,
            path: path.to_path_buf(),
            problem: FileProblem::NotPem(format!("a certificate does not parse: {e}")),
        })?;
    }
    Ok(roots)
}

/// The rustls crypto provider: ring, the only crypto library in the workspace (the AWS credential
/// chain's HTTPS client uses it too).
fn crypto_provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// The built-in trust roots: Mozilla's root program, the same on every machine.
pub(crate) fn builtin_roots() -> RootCertStore {
    RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    }
}

/// Read a whole file, turning a missing or unreadable file into a precise error.
pub(crate) fn read_file(which: PemFile, path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|e| Error::File {
        which,
        path: path.to_path_buf(),
        problem: if e.kind() == std::io::ErrorKind::NotFound {
            FileProblem::Missing
        } else {
            FileProblem::Unreadable(e)
        },
    })
}

/// All `CERTIFICATE` blocks of a PEM file, at least one.
pub(crate) fn read_certs(
    which: PemFile,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, Error> {
    let bytes = read_file(which, path)?;
    let file_error = |problem| Error::File {
        which,
        path: path.to_path_buf(),
        problem,
    };
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(pem_problem(e, "PEM certificate")))?;
    if certs.is_empty() {
        return Err(file_error(FileProblem::NothingUsable("PEM certificate")));
    }
    Ok(certs)
}

/// The first private key of a PEM file: PKCS#1, PKCS#8 or SEC1.
pub(crate) fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, Error> {
    let bytes = read_file(PemFile::PrivateKey, path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| Error::File {
        which: PemFile::PrivateKey,
        path: path.to_path_buf(),
        problem: pem_problem(e, "PEM private key"),
    })
}

fn pem_problem(e: pem::Error, what: &'static str) -> FileProblem {
    match e {
        pem::Error::NoItemsFound => FileProblem::NothingUsable(what),
        pem::Error::Io(io) => FileProblem::Unreadable(io),
        other => FileProblem::NotPem(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_roots_include_amazon_root_ca_1_and_3() {
        let roots = builtin_roots();
        let has = |cn: &str| {
            roots.roots.iter().any(|ta| {
                let subject: &[u8] = ta.subject.as_ref();
                subject.windows(cn.len()).any(|w| w == cn.as_bytes())
            })
        };
        assert!(has("Amazon Root CA 1"));
        assert!(has("Amazon Root CA 3"));
    }

    fn temp_file(name: &str, contents: &[u8]) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("samples-common-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    #[test]
    fn missing_ca_file_names_the_file_and_flag() {
        let err = client_config(&TlsOptions {
            ca_file: Some(Path::new("/nonexistent/ca.pem")),
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(
            err.cause(),
            "the CA file (--ca-file) /nonexistent/ca.pem does not exist"
        );
        assert!(matches!(
            err,
            Error::File {
                problem: FileProblem::Missing,
                ..
            }
        ));
    }

    #[test]
    fn ca_file_that_is_not_pem_is_refused() {
        let path = temp_file("not-pem.pem", b"hello, I am not a certificate\n");
        let err = client_config(&TlsOptions {
            ca_file: Some(&path),
            ..Default::default()
        })
        .unwrap_err();
        assert!(
            matches!(
                err,
                Error::File {
                    which: PemFile::CaFile,
                    problem: FileProblem::NothingUsable(_),
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.hint(crate::AuthMode::Mtls).contains("CERTIFICATE"));
    }

    #[test]
    fn key_file_without_a_key_is_refused() {
        let path = temp_file(
            "no-key.pem",
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        );
        let err = read_key(&path).unwrap_err();
        assert!(matches!(
            err,
            Error::File {
                which: PemFile::PrivateKey,
                problem: FileProblem::NothingUsable(_),
                ..
            }
        ));
    }

    #[test]
    fn alpn_is_offered_exactly_once() {
        let config = client_config(&TlsOptions {
            alpn: Some(ALPN_MQTT),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(config.config.alpn_protocols, vec![b"mqtt".to_vec()]);
    }
}
