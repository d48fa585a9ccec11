//! Custom-authorizer credentials: the MQTT username that carries them, and token signing.
//!
//! AWS IoT Core reads custom-auth parameters from the query string after the **last** `?` of
//! the MQTT username (reference §2.1):
//!
//! ```text
//! <username>?x-amz-customauthorizer-name=<name>&x-amz-customauthorizer-signature=<sig>&<key>=<token>
//! ```
//!
//! The signature is `base64(RSA PKCS#1 v1.5 SHA-256 over the token's UTF-8 bytes)` (§2.3).

use std::path::Path;

use base64::Engine as _;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use ring::signature::{RsaKeyPair, RSA_PKCS1_SHA256};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivateKeyDer;

use crate::error::{Error, FileProblem, PemFile};
use crate::tls::read_file;

/// Parameter name of the authorizer in the username query.
pub const AUTHORIZER_NAME_KEY: &str = "x-amz-customauthorizer-name";
/// Parameter name of the token signature in the username query.
pub const SIGNATURE_KEY: &str = "x-amz-customauthorizer-signature";

/// RFC 3986 unreserved characters stay; everything else is percent-encoded.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Percent-encode every byte outside `A-Z a-z 0-9 - _ . ~`.
pub fn url_encode(value: &str) -> String {
    utf8_percent_encode(value, UNRESERVED).to_string()
}

/// The custom-auth values that go into the MQTT username. All are optional: an unsigned
/// authorizer needs only a name (or nothing, with a default authorizer).
#[derive(Clone, Default)]
pub struct UsernameParts<'a> {
    /// What the user typed as `--username`; may already hold a `?query`.
    pub username: Option<&'a str>,
    pub authorizer: Option<&'a str>,
    /// base64 signature, raw or already URL-encoded.
    pub signature: Option<&'a str>,
    pub token_key_name: Option<&'a str>,
    pub token_value: Option<&'a str>,
}

/// Build the MQTT username for a custom authorizer, following the rule every official SDK uses:
/// each parameter is appended after `?` if the string has no `?` yet, else after `&`; a value that
/// already starts with its `key=` prefix is appended verbatim; the signature is URL-encoded unless
/// it already contains `%`. No SDK metrics are added. Returns `None` when there is nothing to send.
pub fn build_username(parts: &UsernameParts<'_>) -> Option<String> {
    let mut out = parts.username.unwrap_or("").to_string();
    let mut any = parts.username.is_some();

    if let Some(name) = parts.authorizer {
        append(&mut out, AUTHORIZER_NAME_KEY, name);
        any = true;
    }
    if let Some(sig) = parts.signature {
        let encoded = if sig.contains('%') {
            sig.to_string()
        } else {
            url_encode(sig)
        };
        append(&mut out, SIGNATURE_KEY, &encoded);
        any = true;
    }
    if let (Some(key), Some(token)) = (parts.token_key_name, parts.token_value) {
        append(&mut out, key, token);
        any = true;
    }
    any.then_some(out)
}

fn append(out: &mut String, key: &str, value: &str) {
    out.push(if out.contains('?') { '&' } else { '?' });
    let prefix_len = key.len() + 1;
    let has_prefix =
        value.len() >= prefix_len && value.starts_with(key) && value.as_bytes()[key.len()] == b'=';
    if !has_prefix {
        out.push_str(key);
        out.push('=');
    }
    out.push_str(value);
}

/// An RSA private key that signs authorizer tokens. Its `Debug` shows nothing of the key.
pub struct TokenSigner {
    key: RsaKeyPair,
}

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSigner").finish_non_exhaustive()
    }
}

impl TokenSigner {
    /// Load a PEM RSA private key (PKCS#8 `PRIVATE KEY` or PKCS#1 `RSA PRIVATE KEY`),
    /// 2048 to 8192 bits.
    pub fn from_pem_file(path: &Path) -> Result<Self, Error> {
        let bytes = read_file(PemFile::AuthorizerKey, path)?;
        Self::from_pem(&bytes).map_err(|problem| Error::File {
            which: PemFile::AuthorizerKey,
            path: path.to_path_buf(),
            problem,
        })
    }

    /// Parse a PEM RSA private key from memory.
    pub fn from_pem(pem: &[u8]) -> Result<Self, FileProblem> {
        let der = PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
            rustls_pki_types::pem::Error::NoItemsFound => {
                FileProblem::NothingUsable("PEM RSA private key")
            }
            other => FileProblem::NotPem(other.to_string()),
        })?;
        let key = match &der {
            PrivateKeyDer::Pkcs8(k) => RsaKeyPair::from_pkcs8(k.secret_pkcs8_der()),
            PrivateKeyDer::Pkcs1(k) => RsaKeyPair::from_der(k.secret_pkcs1_der()),
            _ => {
                return Err(FileProblem::UnusableKey(
                    "authorizer tokens are signed with RSA, this is an EC key".into(),
                ))
            }
        }
        .map_err(|_| {
            FileProblem::UnusableKey("it is not an RSA key of 2048 to 8192 bits".into())
        })?;
        Ok(TokenSigner { key })
    }

    /// `base64(RSA PKCS#1 v1.5 SHA-256 signature of the token's UTF-8 bytes)`, the value IoT Core
    /// checks against the authorizer's token-signing public keys.
    pub fn sign(&self, token: &str) -> String {
        let rng = ring::rand::SystemRandom::new();
        let mut sig = vec![0u8; self.key.public().modulus_len()];
        // PKCS#1 v1.5 signing cannot fail once the key parsed and the buffer has the modulus
        // length; a failure here would be a ring bug, reported rather than hidden.
        if let Err(e) = self
            .key
            .sign(&RSA_PKCS1_SHA256, &rng, token.as_bytes(), &mut sig)
        {
            log::error!("token signing failed: {e}");
        }
        base64::engine::general_purpose::STANDARD.encode(sig)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts<'a>() -> UsernameParts<'a> {
        UsernameParts::default()
    }

    #[test]
    fn no_username_and_no_parameters_sends_no_username() {
        assert_eq!(build_username(&parts()), None);
    }

    #[test]
    fn authorizer_name_only() {
        let p = UsernameParts {
            authorizer: Some("my-authorizer"),
            ..parts()
        };
        assert_eq!(
            build_username(&p).as_deref(),
            Some("?x-amz-customauthorizer-name=my-authorizer")
        );
    }

    #[test]
    fn username_and_authorizer() {
        let p = UsernameParts {
            username: Some("alice"),
            authorizer: Some("auth"),
            ..parts()
        };
        assert_eq!(
            build_username(&p).as_deref(),
            Some("alice?x-amz-customauthorizer-name=auth")
        );
    }

    #[test]
    fn username_that_already_has_a_query_gets_no_second_question_mark() {
        let p = UsernameParts {
            username: Some("alice?tenant=blue"),
            authorizer: Some("auth"),
            token_key_name: Some("tokenKey"),
            token_value: Some("tok"),
            ..parts()
        };
        let u = build_username(&p).unwrap();
        assert_eq!(
            u,
            "alice?tenant=blue&x-amz-customauthorizer-name=auth&tokenKey=tok"
        );
        assert_eq!(u.matches('?').count(), 1);
    }

    #[test]
    fn signature_with_plus_slash_equals_is_url_encoded() {
        let p = UsernameParts {
            username: Some("u"),
            authorizer: Some("a"),
            signature: Some("ab+c/d=="),
            token_key_name: Some("k"),
            token_value: Some("v"),
        };
        assert_eq!(
            build_username(&p).as_deref(),
            Some("u?x-amz-customauthorizer-name=a&x-amz-customauthorizer-signature=ab%2Bc%2Fd%3D%3D&k=v")
        );
    }

    #[test]
    fn pre_encoded_signature_is_not_encoded_twice() {
        let p = UsernameParts {
            signature: Some("ab%2Bc%2Fd%3D%3D"),
            ..parts()
        };
        assert_eq!(
            build_username(&p).as_deref(),
            Some("?x-amz-customauthorizer-signature=ab%2Bc%2Fd%3D%3D")
        );
    }

    #[test]
    fn values_already_carrying_their_key_prefix_are_appended_verbatim() {
        let p = UsernameParts {
            username: Some("u"),
            authorizer: Some("x-amz-customauthorizer-name=auth"),
            signature: Some("x-amz-customauthorizer-signature=abc%3D"),
            token_key_name: Some("tokenKey"),
            token_value: Some("tokenKey=tok"),
        };
        assert_eq!(
            build_username(&p).as_deref(),
            Some("u?x-amz-customauthorizer-name=auth&x-amz-customauthorizer-signature=abc%3D&tokenKey=tok")
        );
    }

    #[test]
    fn a_value_that_merely_starts_like_the_key_still_gets_the_prefix() {
        let p = UsernameParts {
            token_key_name: Some("tok"),
            token_value: Some("token-value"),
            ..parts()
        };
        assert_eq!(build_username(&p).as_deref(), Some("?tok=token-value"));
    }

    #[test]
    fn url_encode_keeps_only_unreserved() {
        assert_eq!(
            url_encode("aZ09-_.~ +/=%?&"),
            "aZ09-_.~%20%2B%2F%3D%25%3F%26"
        );
    }

    #[test]
    fn ec_key_is_refused_with_a_clear_problem() {
        let pem = b"-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIE6j\n-----END EC PRIVATE KEY-----\n";
        match TokenSigner::from_pem(pem) {
            Err(FileProblem::UnusableKey(msg)) => assert!(msg.contains("RSA"), "{msg}"),
            other => panic!("expected UnusableKey, got {other:?}"),
        }
    }

    #[test]
    fn text_without_pem_is_refused() {
        assert!(matches!(
            TokenSigner::from_pem(b"just some text\n"),
            Err(FileProblem::NothingUsable(_))
        ));
    }
}
