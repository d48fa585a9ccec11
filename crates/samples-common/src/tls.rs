//! TLS client configuration: trust roots, the client certificate, ALPN.
//!
//! The crypto provider is rustls' `ring` provider, chosen explicitly (see the workspace README for
//! the start-up measurement behind that choice). Server certificates are always verified: against
//! the built-in Mozilla roots (which include Amazon Root CA 1 to 4) or against `--ca-file`.

use std::path::Path;
use std::sync::Arc;

use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::{Error, FileProblem, PemFile};

/// ALPN protocol for mTLS MQTT on port 443.
pub const ALPN_MQTT_CA: &[u8] = b"x-amzn-mqtt-ca";
/// ALPN protocol for custom-authorizer MQTT on port 443.
pub const ALPN_MQTT: &[u8] = b"mqtt";

/// What the TLS client presents and expects.
#[derive(Debug, Default)]
pub struct TlsOptions<'a> {
    /// Trust only the certificates in this PEM file instead of the built-in roots.
    pub ca_file: Option<&'a Path>,
    /// Client certificate chain and private key for mTLS.
    pub client_cert: Option<(&'a Path, &'a Path)>,
    /// The single ALPN protocol to offer, if any.
    pub alpn: Option<&'a [u8]>,
}

/// Build a rustls client configuration, with errors that name the file and flag at fault.
pub fn client_config(opts: &TlsOptions<'_>) -> Result<Arc<ClientConfig>, Error> {
    let roots = match opts.ca_file {
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for cert in read_certs(PemFile::CaFile, path)? {
                roots.add(cert).map_err(|e| Error::File {
                    which: PemFile::CaFile,
                    path: path.to_path_buf(),
                    problem: FileProblem::NotPem(format!("a certificate does not parse: {e}")),
                })?;
            }
            roots
        }
        None => builtin_roots(),
    };

    let builder = ClientConfig::builder_with_provider(Arc::new(crypto_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Other(format!("TLS setup failed: {e}")))?
        .with_root_certificates(roots);

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
    Ok(Arc::new(config))
}

/// The rustls crypto provider: ring, the only crypto library in the workspace (the AWS credential
/// chain's HTTPS client uses it too).
pub fn crypto_provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// The built-in trust roots: Mozilla's root program, the same on every machine.
pub fn builtin_roots() -> RootCertStore {
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
pub fn read_certs(which: PemFile, path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
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
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, Error> {
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
        assert_eq!(config.alpn_protocols, vec![b"mqtt".to_vec()]);
    }
}
