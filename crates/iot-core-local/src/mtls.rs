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
}

/// The certificates and CAs of the account.
pub struct Registry {
    cas: Vec<RegisteredCa>,
    certs: Vec<RegisteredCert>,
}

/// Who the certificate is and which policies apply.
#[derive(Debug, PartialEq, Eq)]
pub struct CertIdentity {
    pub principal: String,
    pub policies: Vec<String>,
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
                    policies: reg.policies.clone(),
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
                policies: ca.auto_register_policies.clone(),
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
