//! What the custom-authorizer tests share: a test authorizer, the signature vectors and their
//! key, a Lambda event input and a response builder.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rsa::RsaPublicKey;
use serde_json::{json, Value};

use super::{load_public_keys, EventInput};
use crate::config::{Authorizer, Function, Status};

/// The signature vectors and the authorizer test key.
pub const VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/vectors");

/// A signing-enabled ACTIVE authorizer named `test-authorizer`, token parameter `token`.
pub fn authorizer(function: Function) -> Authorizer {
    Authorizer {
        name: "test-authorizer".into(),
        status: Status::Active,
        default: false,
        signing_disabled: false,
        token_key_name: Some("token".into()),
        token_signing_public_keys: BTreeMap::from([("key1".into(), PathBuf::from("public.pem"))]),
        function,
    }
}

/// The vectors' public key, named `key1`.
pub fn test_keys() -> Vec<(String, RsaPublicKey)> {
    let a = authorizer(Function::Rules { rules: vec![] });
    load_public_keys(&a, &Path::new(VECTORS).join("authorizer-test-key")).expect("test key loads")
}

/// One signature vector.
pub struct Case {
    pub token: String,
    pub base64: String,
    pub url_encoded: String,
}

pub fn vector_cases() -> Vec<Case> {
    let text = std::fs::read_to_string(Path::new(VECTORS).join("custom-auth-signatures.json"))
        .expect("read custom-auth-signatures.json");
    let v: Value = serde_json::from_str(&text).expect("vectors are JSON");
    let cases = v["cases"].as_array().expect("cases");
    assert!(cases.len() >= 4, "expected the 4 vector cases");
    cases
        .iter()
        .map(|c| Case {
            token: c["token_value"].as_str().expect("token_value").into(),
            base64: c["signature_base64"]
                .as_str()
                .expect("signature_base64")
                .into(),
            url_encoded: c["signature_url_encoded"]
                .as_str()
                .expect("signature_url_encoded")
                .into(),
        })
        .collect()
}

/// A direct-MQTT event input for client `client-1`; the token counts as verified when given.
pub fn input_for<'a>(
    username: &'a str,
    password: Option<&'a [u8]>,
    token: Option<&'a str>,
) -> EventInput<'a> {
    EventInput {
        token,
        signature_verified: token.is_some(),
        server_name: Some("localhost"),
        http: None,
        username: Some(username),
        password,
        client_id: "client-1",
    }
}

/// A compact iot:Connect policy.
pub const POLICY: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:Connect","Resource":"*"}]}"#;

/// A valid response (principal `device42`), with `overrides` applied (null removes a field).
pub fn response_json(overrides: Value) -> Vec<u8> {
    let mut base = json!({
        "isAuthenticated": true,
        "principalId": "device42",
        "policyDocuments": [POLICY],
        "disconnectAfterInSeconds": 3600,
        "refreshAfterInSeconds": 300,
        "context": { "ignored": true }
    });
    if let (Some(b), Some(o)) = (base.as_object_mut(), overrides.as_object()) {
        for (k, v) in o {
            if v.is_null() {
                b.remove(k);
            } else {
                b.insert(k.clone(), v.clone());
            }
        }
    }
    base.to_string().into_bytes()
}
