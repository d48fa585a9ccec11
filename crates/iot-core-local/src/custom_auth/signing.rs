//! Token signing: an authorizer's token-signing public keys (loaded from PEM files at start) and
//! the check that the token's signature verifies against one of them before the function runs.

use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use rsa::pkcs1::DecodeRsaPublicKey;
use rsa::pkcs8::DecodePublicKey;
use rsa::traits::PublicKeyParts;
use rsa::{Pkcs1v15Sign, RsaPublicKey};
use sha2::{Digest, Sha256};

use super::{Denial, Presented};
use crate::config::Authorizer;

/// Smallest accepted token-signing key.
pub const MIN_KEY_BITS: usize = 2048;

/// Why a token-signing public key cannot be used. It names the key and its file, not the
/// authorizer (the caller adds it).
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key '{name}' ({}): cannot read: {source}", .path.display())]
    Read {
        name: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("key '{name}' ({}): not a PEM RSA public key (expected \"BEGIN PUBLIC KEY\" or \"BEGIN RSA PUBLIC KEY\")", .path.display())]
    NotRsaPublicKey { name: String, path: PathBuf },
    #[error("key '{name}' ({}): RSA key of {bits} bits, at least {MIN_KEY_BITS} required", .path.display())]
    TooSmall {
        name: String,
        path: PathBuf,
        bits: usize,
    },
}

/// The token as the Lambda event carries it, after the signature check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckedToken<'p> {
    /// The value of the authorizer's token parameter, if the client sent one.
    pub token: Option<&'p str>,
    /// True when the token's signature verified (signing-enabled authorizers only).
    pub signature_verified: bool,
}

/// For a signing-enabled authorizer: the token and its signature must be present and verify
/// against one of `keys` (from [`load_public_keys`]) before the function may run. For an
/// unsigned authorizer: pass the token through, unverified.
pub fn check_token<'p>(
    a: &Authorizer,
    keys: &[(String, RsaPublicKey)],
    presented: &'p Presented,
) -> Result<CheckedToken<'p>, Denial> {
    let token = a
        .token_key_name
        .as_deref()
        .and_then(|k| presented.token(k))
        .filter(|t| !t.is_empty());
    if a.signing_disabled {
        return Ok(CheckedToken {
            token,
            signature_verified: false,
        });
    }
    let Some(token) = token else {
        return Err(Denial::MissingToken {
            authorizer: a.name.clone(),
            key: a
                .token_key_name
                .clone()
                .unwrap_or_else(|| "<token_key_name not configured>".into()),
        });
    };
    let Some(signature) = presented.signature.as_deref() else {
        return Err(Denial::MissingSignature(a.name.clone()));
    };
    match verify_signature(token, signature, keys) {
        Some(key) => {
            log::debug!(
                "authorizer '{}': token signature verified with key '{key}'",
                a.name
            );
            Ok(CheckedToken {
                token: Some(token),
                signature_verified: true,
            })
        }
        None => Err(Denial::BadSignature(a.name.clone())),
    }
}
/// The RSA public keys of an authorizer, loaded from its PEM files (SPKI "PUBLIC KEY" or
/// PKCS#1 "RSA PUBLIC KEY"), >= 2048 bits. Relative paths are relative to `dir`.
pub fn load_public_keys(
    a: &Authorizer,
    dir: &Path,
) -> Result<Vec<(String, RsaPublicKey)>, KeyError> {
    let mut keys = Vec::with_capacity(a.token_signing_public_keys.len());
    for (name, file) in &a.token_signing_public_keys {
        let path = dir.join(file);
        let pem = match std::fs::read_to_string(&path) {
            Ok(pem) => pem,
            Err(source) => {
                return Err(KeyError::Read {
                    name: name.clone(),
                    path,
                    source,
                })
            }
        };
        let Ok(key) = RsaPublicKey::from_public_key_pem(pem.trim())
            .or_else(|_| RsaPublicKey::from_pkcs1_pem(pem.trim()))
        else {
            return Err(KeyError::NotRsaPublicKey {
                name: name.clone(),
                path,
            });
        };
        let bits = key.n().bits();
        if bits < MIN_KEY_BITS {
            return Err(KeyError::TooSmall {
                name: name.clone(),
                path,
                bits,
            });
        }
        keys.push((name.clone(), key));
    }
    Ok(keys)
}

/// base64(RSA PKCS#1 v1.5 SHA-256) over the token's UTF-8 bytes, checked against each key;
/// returns the matching key name. The signature must already be percent-decoded.
pub fn verify_signature(
    token: &str,
    signature_b64: &str,
    keys: &[(String, RsaPublicKey)],
) -> Option<String> {
    let signature = BASE64.decode(signature_b64.trim()).ok()?;
    let digest = Sha256::digest(token.as_bytes());
    keys.iter()
        .find(|(_, key)| {
            key.verify(Pkcs1v15Sign::new::<Sha256>(), &digest, &signature)
                .is_ok()
        })
        .map(|(name, _)| name.clone())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use super::*;
    use crate::config::Function;
    use crate::custom_auth::from_username;
    use crate::custom_auth::test_support::{authorizer, test_keys, vector_cases, VECTORS};

    #[test]
    fn verify_signature_accepts_every_vector() {
        let keys = test_keys();
        for c in vector_cases() {
            assert_eq!(
                verify_signature(&c.token, &c.base64, &keys).as_deref(),
                Some("key1"),
                "{}",
                c.token
            );
        }
    }

    #[test]
    fn verify_signature_rejects_wrong_token_and_undecoded_signature() {
        let keys = test_keys();
        let cases = vector_cases();
        for c in &cases {
            assert_eq!(
                verify_signature(&format!("{}x", c.token), &c.base64, &keys),
                None
            );
            assert_eq!(
                verify_signature(&c.token, &c.url_encoded, &keys),
                None,
                "{}",
                c.token
            );
        }
        // A signature of another token.
        assert_eq!(
            verify_signature(&cases[0].token, &cases[1].base64, &keys),
            None
        );
        assert_eq!(
            verify_signature(&cases[0].token, "not base64!", &keys),
            None
        );
        assert_eq!(
            verify_signature(&cases[0].token, &cases[0].base64, &[]),
            None
        );
    }

    #[test]
    fn load_public_keys_reads_pkcs1_and_refuses_bad_files() {
        let spki = test_keys();
        let dir = std::env::temp_dir().join(format!("custom-auth-keys-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        use rsa::pkcs1::EncodeRsaPublicKey;
        use rsa::pkcs8::EncodePublicKey;
        let pkcs1 = spki[0]
            .1
            .to_pkcs1_pem(rsa::pkcs8::LineEnding::LF)
            .expect("pkcs1 pem");
        assert!(pkcs1.starts_with("-----BEGIN RSA PUBLIC KEY-----"));
        std::fs::write(dir.join("pkcs1.pem"), pkcs1).expect("write");
        let small = RsaPublicKey::new(
            rsa::BigUint::from(1u8) << 1023usize | rsa::BigUint::from(1u8),
            rsa::BigUint::from(65_537u32),
        )
        .expect("1024-bit key");
        let small_pem = small
            .to_public_key_pem(rsa::pkcs8::LineEnding::LF)
            .expect("pem");
        std::fs::write(dir.join("small.pem"), small_pem).expect("write");
        let private = Path::new(VECTORS).join("authorizer-test-key/private.pem");

        let mut a = authorizer(Function::Rules { rules: vec![] });
        a.token_signing_public_keys = BTreeMap::from([("k".into(), PathBuf::from("pkcs1.pem"))]);
        let keys = load_public_keys(&a, &dir).expect("pkcs1 loads");
        assert_eq!(keys[0].1, spki[0].1);
        assert_eq!(
            verify_signature(&vector_cases()[0].token, &vector_cases()[0].base64, &keys).as_deref(),
            Some("k")
        );

        a.token_signing_public_keys = BTreeMap::from([("k".into(), PathBuf::from("small.pem"))]);
        let err = load_public_keys(&a, &dir).expect_err("small key");
        assert!(
            matches!(&err, KeyError::TooSmall { name, bits: 1024, .. } if name == "k"),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            format!(
                "key 'k' ({}): RSA key of 1024 bits, at least 2048 required",
                dir.join("small.pem").display()
            )
        );

        a.token_signing_public_keys = BTreeMap::from([("k".into(), private)]);
        let err = load_public_keys(&a, &dir).expect_err("private key");
        assert!(matches!(err, KeyError::NotRsaPublicKey { .. }), "{err:?}");
        let err = err.to_string();
        assert!(err.contains("not a PEM RSA public key"), "{err}");
        assert!(
            !err.contains("PRIVATE KEY-----") && !err.contains("MII"),
            "{err}"
        );

        a.token_signing_public_keys = BTreeMap::from([("k".into(), PathBuf::from("missing.pem"))]);
        let err = load_public_keys(&a, &dir).expect_err("missing");
        assert!(
            matches!(&err, KeyError::Read { source, .. } if source.kind() == std::io::ErrorKind::NotFound),
            "{err:?}"
        );
        let err = err.to_string();
        assert!(
            err.starts_with("key 'k' (") && err.contains("missing.pem): cannot read"),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn check_token_outcomes() {
        let keys = test_keys();
        let c = &vector_cases()[1];
        let a = authorizer(Function::Rules { rules: vec![] });
        let ok = from_username(&format!("u?x-amz-customauthorizer-name=test-authorizer&x-amz-customauthorizer-signature={}&token={}", c.url_encoded, c.token));
        assert_eq!(
            check_token(&a, &keys, &ok),
            Ok(CheckedToken {
                token: Some(c.token.as_str()),
                signature_verified: true
            })
        );
        let no_token = from_username(&format!(
            "u?x-amz-customauthorizer-signature={}",
            c.url_encoded
        ));
        assert_eq!(
            check_token(&a, &keys, &no_token),
            Err(Denial::MissingToken {
                authorizer: "test-authorizer".into(),
                key: "token".into()
            })
        );
        let no_sig = from_username("u?token=device-42");
        assert_eq!(
            check_token(&a, &keys, &no_sig),
            Err(Denial::MissingSignature("test-authorizer".into()))
        );
        let bad = from_username(&format!(
            "u?x-amz-customauthorizer-signature={}&token=device-43",
            c.url_encoded
        ));
        let err = check_token(&a, &keys, &bad).expect_err("bad signature");
        assert_eq!(err, Denial::BadSignature("test-authorizer".into()));
        assert!(err.to_string().starts_with(
            "signature did not verify against any token-signing key of authorizer 'test-authorizer'"
        ));
        assert!(!err.to_string().contains(&c.base64[..20]));
        // Twice-encoded signature: decoded once it still has '%'.
        let twice = c.url_encoded.replace('%', "%25");
        let p = from_username(&format!(
            "u?x-amz-customauthorizer-signature={twice}&token={}",
            c.token
        ));
        assert_eq!(
            check_token(&a, &keys, &p),
            Err(Denial::BadSignature("test-authorizer".into()))
        );

        let mut unsigned = a.clone();
        unsigned.signing_disabled = true;
        assert_eq!(
            check_token(&unsigned, &[], &no_sig),
            Ok(CheckedToken {
                token: Some("device-42"),
                signature_verified: false
            })
        );
        assert_eq!(
            check_token(&unsigned, &[], &Presented::default()),
            Ok(CheckedToken {
                token: None,
                signature_verified: false
            })
        );
    }
}
