//! Authenticating an X.509 client certificate against the account's registry.
//!
//! A certificate may connect when it is registered and ACTIVE (its attached policies apply), or,
//! unregistered, when it chains to an ACTIVE registered CA that has `auto_register_policies`
//! (like just-in-time provisioning). A certificate signed by an INACTIVE CA never connects.

use std::path::Path;

use rustls::pki_types::{CertificateDer, TrustAnchor, UnixTime};
use webpki::{EndEntityCert, KeyUsage};

use crate::config::{Config, Status};
use crate::tls::{read_certs, TlsSetupError};

/// One registered CA, ready to verify chains.
struct RegisteredCa {
    id: String,
    status: Status,
    anchor: TrustAnchor<'static>,
    auto_register_policies: Vec<String>,
}

/// One registered device certificate.
struct RegisteredCert {
    id: String,
    der: CertificateDer<'static>,
    status: Status,
    policies: Vec<String>,
    things: Vec<String>,
}

/// The certificates and CAs of the account.
pub struct Registry {
    cas: Vec<RegisteredCa>,
    certs: Vec<RegisteredCert>,
}

/// Who the certificate is, which policies apply, and which things it is attached to.
#[derive(Debug, PartialEq, Eq)]
pub struct CertIdentity {
    pub principal: String,
    /// The certificate id IoT Core would give it: the SHA-256 of its DER, 64 hex digits.
    pub certificate_id: String,
    pub policies: Vec<String>,
    pub things: Vec<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CertDenial {
    #[error("no client certificate was presented")]
    NoCertificate,
    #[error("certificate {0} is INACTIVE")]
    Inactive(String),
    #[error("certificate {fingerprint} is signed by CA {ca}, which is INACTIVE")]
    CaInactive { fingerprint: String, ca: String },
    #[error("certificate {fingerprint} is signed by registered CA {ca} but is not registered itself (register it, or give the CA auto_register_policies)")]
    NotRegistered { fingerprint: String, ca: String },
    #[error("certificate {0} is not registered and not signed by a registered CA")]
    UnknownCa(String),
}

impl Registry {
    /// Load every certificate and CA the configuration names, relative to `dir`.
    pub fn load(config: &Config, dir: &Path) -> Result<Registry, TlsSetupError> {
        let mut cas = Vec::new();
        for ca in &config.ca_certificates {
            let der = first_cert(&dir.join(&ca.certificate))?;
            let anchor = webpki::anchor_from_trusted_cert(&der)
                .map_err(|e| TlsSetupError::Pem {
                    path: ca.certificate.display().to_string(),
                    reason: format!("not a usable CA certificate: {e}"),
                })?
                .to_owned();
            cas.push(RegisteredCa {
                id: ca.id.clone(),
                status: ca.status,
                anchor,
                auto_register_policies: ca.auto_register_policies.clone(),
            });
        }
        let mut certs = Vec::new();
        for c in &config.certificates {
            certs.push(RegisteredCert {
                id: c.id.clone(),
                der: first_cert(&dir.join(&c.certificate))?,
                status: c.status,
                policies: c.policies.clone(),
                things: c.things.clone(),
            });
        }
        Ok(Registry { cas, certs })
    }

    /// Decide whether this presented chain may connect.
    pub fn authenticate(
        &self,
        chain: Option<&[CertificateDer<'static>]>,
    ) -> Result<CertIdentity, CertDenial> {
        let chain = chain
            .filter(|c| !c.is_empty())
            .ok_or(CertDenial::NoCertificate)?;
        let (end_entity, intermediates) = (&chain[0], &chain[1..]);
        let fingerprint = fingerprint(end_entity);

        let issuing_ca = self
            .cas
            .iter()
            .find(|ca| chains_to(end_entity, intermediates, ca));
        if let Some(ca) = issuing_ca {
            if ca.status != Status::Active {
                return Err(CertDenial::CaInactive {
                    fingerprint,
                    ca: ca.id.clone(),
                });
            }
        }
        if let Some(reg) = self.certs.iter().find(|c| c.der == *end_entity) {
            return match reg.status {
                Status::Active => Ok(CertIdentity {
                    principal: format!("certificate {} ({})", reg.id, short(&fingerprint)),
                    certificate_id: fingerprint.clone(),
                    policies: reg.policies.clone(),
                    things: reg.things.clone(),
                }),
                Status::Inactive => Err(CertDenial::Inactive(reg.id.clone())),
            };
        }
        match issuing_ca {
            Some(ca) if !ca.auto_register_policies.is_empty() => Ok(CertIdentity {
                principal: format!(
                    "certificate {} auto-registered by CA {}",
                    short(&fingerprint),
                    ca.id
                ),
                certificate_id: fingerprint.clone(),
                policies: ca.auto_register_policies.clone(),
                things: Vec::new(),
            }),
            Some(ca) => Err(CertDenial::NotRegistered {
                fingerprint,
                ca: ca.id.clone(),
            }),
            None => Err(CertDenial::UnknownCa(fingerprint)),
        }
    }
}

fn first_cert(path: &Path) -> Result<CertificateDer<'static>, TlsSetupError> {
    read_certs(path).map(|mut v| v.swap_remove(0))
}

fn chains_to(
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'static>],
    ca: &RegisteredCa,
) -> bool {
    let Ok(cert) = EndEntityCert::try_from(end_entity) else {
        return false;
    };
    cert.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        std::slice::from_ref(&ca.anchor),
        intermediates,
        UnixTime::now(),
        KeyUsage::client_auth(),
        None,
        None,
    )
    .is_ok()
}

/// SHA-256 of the certificate DER, as hex: what `aws iot describe-certificate` calls the id.
pub fn fingerprint(cert: &CertificateDer<'_>) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, cert.as_ref()))
}

fn short(fingerprint: &str) -> &str {
    &fingerprint[..fingerprint.len().min(12)]
}

#[cfg(test)]
mod tests {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };

    use super::*;

    struct TestCa {
        params: CertificateParams,
        key: KeyPair,
        der: CertificateDer<'static>,
    }

    fn test_ca(cn: &str) -> TestCa {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let der = params.self_signed(&key).expect("CA").der().clone();
        TestCa { params, key, der }
    }

    fn device_params(cn: &str) -> CertificateParams {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params
    }

    /// A client certificate signed by `ca`.
    fn device(cn: &str, ca: &TestCa) -> CertificateDer<'static> {
        let key = KeyPair::generate().expect("key");
        device_params(cn)
            .signed_by(&key, &Issuer::new(ca.params.clone(), &ca.key))
            .expect("signed")
            .der()
            .clone()
    }

    fn registered_ca(id: &str, ca: &TestCa, status: Status, auto: &[&str]) -> RegisteredCa {
        RegisteredCa {
            id: id.into(),
            status,
            anchor: webpki::anchor_from_trusted_cert(&ca.der)
                .expect("anchor")
                .to_owned(),
            auto_register_policies: auto.iter().map(|p| p.to_string()).collect(),
        }
    }

    fn registered(id: &str, der: &CertificateDer<'static>, status: Status) -> RegisteredCert {
        RegisteredCert {
            id: id.into(),
            der: der.clone(),
            status,
            policies: vec!["device-connect".into()],
            things: vec!["lamp".into()],
        }
    }

    fn chain(der: &CertificateDer<'static>) -> Vec<CertificateDer<'static>> {
        vec![der.clone()]
    }

    #[test]
    fn a_registered_active_certificate_connects_with_its_policies() {
        let ca = test_ca("ca");
        let cert = device("dev", &ca);
        let registry = Registry {
            cas: vec![registered_ca("ca", &ca, Status::Active, &[])],
            certs: vec![registered("dev", &cert, Status::Active)],
        };
        let fp = fingerprint(&cert);
        assert_eq!(
            registry.authenticate(Some(&chain(&cert))),
            Ok(CertIdentity {
                principal: format!("certificate dev ({})", &fp[..12]),
                certificate_id: fp.clone(),
                policies: vec!["device-connect".into()],
                things: vec!["lamp".into()],
            })
        );
    }

    #[test]
    fn an_inactive_certificate_is_refused() {
        let ca = test_ca("ca");
        let cert = device("dev", &ca);
        let registry = Registry {
            cas: vec![registered_ca("ca", &ca, Status::Active, &[])],
            certs: vec![registered("dev", &cert, Status::Inactive)],
        };
        let err = registry
            .authenticate(Some(&chain(&cert)))
            .expect_err("inactive");
        assert_eq!(err, CertDenial::Inactive("dev".into()));
        assert_eq!(err.to_string(), "certificate dev is INACTIVE");
    }

    #[test]
    fn a_certificate_of_an_inactive_ca_is_refused_even_when_registered() {
        let ca = test_ca("ca");
        let cert = device("dev", &ca);
        let registry = Registry {
            cas: vec![registered_ca("old-ca", &ca, Status::Inactive, &["p"])],
            certs: vec![registered("dev", &cert, Status::Active)],
        };
        let fp = fingerprint(&cert);
        let err = registry
            .authenticate(Some(&chain(&cert)))
            .expect_err("CA inactive");
        assert_eq!(
            err,
            CertDenial::CaInactive {
                fingerprint: fp.clone(),
                ca: "old-ca".into()
            }
        );
        assert_eq!(
            err.to_string(),
            format!("certificate {fp} is signed by CA old-ca, which is INACTIVE")
        );
    }

    #[test]
    fn an_unregistered_certificate_of_a_registered_ca_needs_auto_registration() {
        let ca = test_ca("ca");
        let cert = device("new-device", &ca);
        let fp = fingerprint(&cert);
        let plain = Registry {
            cas: vec![registered_ca("ca", &ca, Status::Active, &[])],
            certs: vec![],
        };
        let err = plain
            .authenticate(Some(&chain(&cert)))
            .expect_err("not registered");
        assert_eq!(
            err,
            CertDenial::NotRegistered {
                fingerprint: fp.clone(),
                ca: "ca".into()
            }
        );
        assert_eq!(
            err.to_string(),
            format!("certificate {fp} is signed by registered CA ca but is not registered itself (register it, or give the CA auto_register_policies)")
        );

        let auto = Registry {
            cas: vec![registered_ca("ca", &ca, Status::Active, &["jitp-connect"])],
            certs: vec![],
        };
        assert_eq!(
            auto.authenticate(Some(&chain(&cert))),
            Ok(CertIdentity {
                principal: format!("certificate {} auto-registered by CA ca", &fp[..12]),
                certificate_id: fp.clone(),
                policies: vec!["jitp-connect".into()],
                things: Vec::new(),
            })
        );
    }

    #[test]
    fn a_certificate_of_an_unknown_ca_or_none_at_all_is_refused() {
        let ca = test_ca("ca");
        let other = test_ca("someone else's CA");
        let stranger = device("stranger", &other);
        let registry = Registry {
            cas: vec![registered_ca("ca", &ca, Status::Active, &["p"])],
            certs: vec![],
        };
        let fp = fingerprint(&stranger);
        let err = registry
            .authenticate(Some(&chain(&stranger)))
            .expect_err("unknown CA");
        assert_eq!(err, CertDenial::UnknownCa(fp.clone()));
        assert_eq!(
            err.to_string(),
            format!("certificate {fp} is not registered and not signed by a registered CA")
        );
        assert_eq!(registry.authenticate(None), Err(CertDenial::NoCertificate));
        assert_eq!(
            registry.authenticate(Some(&[])),
            Err(CertDenial::NoCertificate)
        );
        assert_eq!(
            CertDenial::NoCertificate.to_string(),
            "no client certificate was presented"
        );
    }

    #[test]
    fn fingerprint_is_the_lowercase_hex_sha256_of_the_der() {
        use sha2::{Digest, Sha256};
        let ca = test_ca("ca");
        let fp = fingerprint(&ca.der);
        assert_eq!(fp.len(), 64);
        assert!(fp
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        let expected: String = Sha256::digest(ca.der.as_ref())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(fp, expected);
    }
}
