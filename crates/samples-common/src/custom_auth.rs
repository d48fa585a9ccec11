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

use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;
use ring::signature::{RsaKeyPair, RSA_PKCS1_SHA256};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivateKeyDer;

pub use crate::encoding::url_encode;
use crate::error::{Error, FileProblem, PemFile, SignatureProblem};
use crate::tls::read_file;

/// Parameter name of the authorizer in the username query.
const AUTHORIZER_NAME_KEY: &str = "x-amz-customauthorizer-name";
/// Parameter name of the token signature in the username query.
const SIGNATURE_KEY: &str = "x-amz-customauthorizer-signature";

/// The custom-auth values that go into the MQTT username. All are optional: an unsigned
/// authorizer needs only a name (or nothing, with a default authorizer).
#[derive(Clone, Default)]
pub struct UsernameParts<'a> {
    /// What the user typed as `--username`; may already hold a `?query`.
    pub username: Option<&'a str>,
    /// The authorizer's name (`x-amz-customauthorizer-name`).
    pub authorizer: Option<&'a str>,
    /// base64 signature, raw or already URL-encoded.
    pub signature: Option<&'a str>,
    /// The authorizer's token key name (`tokenKeyName`).
    pub token_key_name: Option<&'a str>,
    /// The token value the signature is made over.
    pub token_value: Option<&'a str>,
}

impl std::fmt::Debug for UsernameParts<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UsernameParts")
            .field("username", &self.username)
            .field("authorizer", &self.authorizer)
            .field("signature", &self.signature.map(|_| crate::secrets::MASK))
            .field("token_key_name", &self.token_key_name)
            .field("token_value", &self.token_value)
            .finish()
    }
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
    pub(crate) fn from_pem(pem: &[u8]) -> Result<Self, FileProblem> {
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
    ///
    /// Fails with [`Error::Signing`] only if ring cannot sign (its random number generator, used
    /// for blinding, failed); a zero or partial signature is never returned.
    pub fn sign(&self, token: &str) -> Result<String, Error> {
        let rng = ring::rand::SystemRandom::new();
        let mut sig = vec![0u8; self.key.public().modulus_len()];
        self.key
            .sign(&RSA_PKCS1_SHA256, &rng, token.as_bytes(), &mut sig)
            .map_err(signing_failed)?;
        Ok(base64::engine::general_purpose::STANDARD.encode(sig))
    }
}

fn signing_failed(e: ring::error::Unspecified) -> Error {
    log::debug!("ring could not sign the token: {e}");
    Error::Signing
}

/// base64 as `--authorizer-signature` may hold it: the standard alphabet, padding optional.
const LENIENT_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// Check that a given signature is base64, raw (`ab+c/d==`) or URL-encoded (`ab%2Bc%2Fd%3D%3D`),
/// before anything is sent: IoT Core would only hang up on a signature it cannot decode.
pub(crate) fn check_signature(signature: &str) -> Result<(), SignatureProblem> {
    if signature.is_empty() {
        return Err(SignatureProblem::Empty);
    }
    let text = if signature.contains('%') {
        let well_formed = signature
            .split('%')
            .skip(1)
            .all(|rest| rest.len() >= 2 && rest.as_bytes()[..2].iter().all(u8::is_ascii_hexdigit));
        if !well_formed {
            return Err(SignatureProblem::BadPercentEncoding);
        }
        percent_encoding::percent_decode_str(signature)
            .decode_utf8()
            .map_err(|_| SignatureProblem::BadPercentEncoding)?
    } else {
        std::borrow::Cow::Borrowed(signature)
    };
    match LENIENT_BASE64.decode(text.as_bytes()) {
        Ok(bytes) if !bytes.is_empty() => Ok(()),
        Ok(_) => Err(SignatureProblem::Empty),
        Err(base64::DecodeError::InvalidByte(offset, _))
        | Err(base64::DecodeError::InvalidLastSymbol(offset, _)) => {
            Err(SignatureProblem::InvalidCharacter(offset + 1))
        }
        Err(base64::DecodeError::InvalidLength(_)) | Err(base64::DecodeError::InvalidPadding) => {
            Err(SignatureProblem::InvalidLength)
        }
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

    const AUTHORIZER_KEY: &[u8] = include_bytes!("../tests/fixtures/authorizer-pkcs1.key");

    #[test]
    fn token_signer_debug_shows_nothing_of_the_key() {
        let signer = TokenSigner::from_pem(AUTHORIZER_KEY).unwrap();
        assert_eq!(format!("{signer:?}"), "TokenSigner { .. }");
    }

    #[test]
    fn username_parts_debug_masks_the_signature() {
        let p = UsernameParts {
            authorizer: Some("auth"),
            signature: Some("c2lnbmF0dXJlLXNlY3JldA=="),
            ..parts()
        };
        let debug = format!("{p:?}");
        assert!(!debug.contains("c2lnbmF0dXJlLXNlY3JldA"), "{debug}");
        assert!(debug.contains(r#"signature: Some("****")"#), "{debug}");
        assert!(debug.contains(r#"authorizer: Some("auth")"#), "{debug}");
    }

    #[test]
    fn signing_gives_a_full_length_base64_signature() {
        let signer = TokenSigner::from_pem(AUTHORIZER_KEY).unwrap();
        let sig = signer.sign("allow").unwrap();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&sig)
            .unwrap();
        assert_eq!(bytes.len(), signer.key.public().modulus_len());
        assert!(bytes.iter().any(|b| *b != 0));
        assert_eq!(check_signature(&sig), Ok(()));
    }

    #[test]
    fn a_failed_signing_is_an_error_with_a_cause_and_a_hint() {
        let e = signing_failed(ring::error::Unspecified);
        assert!(matches!(e, Error::Signing));
        assert_eq!(
            e.cause(),
            "signing the token with --authorizer-private-key failed"
        );
        assert_eq!(
            e.hint(crate::AuthMode::CustomAuthSigned),
            "check that --authorizer-private-key is an RSA key of 2048 to 8192 bits, \
             or pass a ready-made --authorizer-signature instead"
        );
        assert_eq!(e.exit_code(), 1);
    }

    #[test]
    fn base64_signatures_raw_or_url_encoded_are_accepted() {
        for ok in [
            "ab+c/d==",
            "ab+c/d",
            "ab%2Bc%2Fd%3D%3D",
            "ab%2bc%2fd%3d%3d",
            "QUJD",
        ] {
            assert_eq!(check_signature(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn signatures_that_are_not_base64_are_refused_with_the_reason() {
        for (bad, problem) in [
            ("", SignatureProblem::Empty),
            ("not base64!", SignatureProblem::InvalidCharacter(4)),
            ("ab-c_d==", SignatureProblem::InvalidCharacter(3)),
            ("abc\ndef=", SignatureProblem::InvalidCharacter(4)),
            ("abcde", SignatureProblem::InvalidLength),
            ("ab%2", SignatureProblem::BadPercentEncoding),
            ("ab%zz", SignatureProblem::BadPercentEncoding),
            ("ab%FF%FE", SignatureProblem::BadPercentEncoding),
        ] {
            assert_eq!(check_signature(bad), Err(problem), "{bad:?}");
        }
    }
}
