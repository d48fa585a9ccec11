//! The custom-authorizer step: find the credentials a client presented (MQTT username query or
//! WebSocket upgrade headers/query), pick the authorizer, verify the token signature against the
//! authorizer's token-signing keys, build the Lambda request event, run the authorizer function
//! (built-in rules or an external command) and validate its response exactly as AWS IoT Core
//! does (reference §2).
//!
//! What the returned policies allow is not decided here: that is the policy step's job.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use percent_encoding::percent_decode_str;
use rsa::pkcs1::DecodeRsaPublicKey;
use rsa::pkcs8::DecodePublicKey;
use rsa::traits::PublicKeyParts;
use rsa::{Pkcs1v15Sign, RsaPublicKey};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::config::{Authorizer, Function, Rule, Status};

/// Parameter (and WebSocket header) naming the authorizer.
pub const NAME_PARAM: &str = "x-amz-customauthorizer-name";
/// Parameter (and WebSocket header) carrying the base64 token signature.
pub const SIGNATURE_PARAM: &str = "x-amz-customauthorizer-signature";
/// Usage metrics the official SDKs append to the username; never credentials.
const SDK_METRICS: [&str; 3] = ["SDK", "Platform", "Metadata"];

/// Smallest accepted token-signing key.
const MIN_KEY_BITS: usize = 2048;
/// Response limits (reference §2.4).
const MAX_POLICY_DOCUMENTS: usize = 10;
const MAX_POLICY_CHARS: usize = 2048;
const MIN_PERIOD_SECONDS: u64 = 300;
const MAX_PERIOD_SECONDS: u64 = 86_400;
/// How much of a failing command's stderr line goes into the error.
const MAX_STDERR_CHARS: usize = 300;

/// Where credentials came from; all optional. Percent-decoded values.
#[derive(Clone, Default)]
pub struct Presented {
    /// `x-amz-customauthorizer-name`, if given and non-empty.
    pub authorizer: Option<String>,
    /// `x-amz-customauthorizer-signature`, percent-decoded (so plain base64), if given.
    pub signature: Option<String>,
    /// Every other parameter (or header, name lower-cased), in the order seen.
    pub params: Vec<(String, String)>,
}

impl fmt::Debug for Presented {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Parameter values include the token: show the names only.
        let names: Vec<&str> = self.params.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("Presented")
            .field("authorizer", &self.authorizer)
            .field("signature", &self.signature.as_ref().map(|_| "<redacted>"))
            .field("param_names", &names)
            .finish()
    }
}

/// Parameters after the LAST '?' of an MQTT username, in any order; `SDK`, `Platform`,
/// `Metadata` (the SDK usage metrics) ignored. A username without '?' presents nothing.
pub fn from_username(username: &str) -> Presented {
    let mut p = Presented::default();
    if let Some(i) = username.rfind('?') {
        p.add_query(&username[i + 1..]);
    }
    p
}

/// From WebSocket upgrade headers (names case-insensitive) and the upgrade query string
/// (with or without its leading '?'). Headers win over query parameters of the same name.
pub fn from_http(headers: &[(String, String)], raw_query: &str) -> Presented {
    let mut p = Presented::default();
    for (name, value) in headers {
        let name = name.to_ascii_lowercase();
        if name == NAME_PARAM {
            set_once(&mut p.authorizer, value.trim().to_string());
        } else if name == SIGNATURE_PARAM {
            // Base64 has no '%': decoding is a no-op on a raw signature and undoes an encoded one.
            set_once(&mut p.signature, decode(value.trim()));
        } else {
            p.params.push((name, value.clone()));
        }
    }
    let mut q = Presented::default();
    q.add_query(raw_query.strip_prefix('?').unwrap_or(raw_query));
    p.merge(q)
}

fn decode(s: &str) -> String {
    percent_decode_str(s).decode_utf8_lossy().into_owned()
}

/// The first non-empty value wins.
fn set_once(slot: &mut Option<String>, value: String) {
    if slot.is_none() && !value.is_empty() {
        *slot = Some(value);
    }
}

impl Presented {
    fn add_query(&mut self, query: &str) {
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let (k, v) = (decode(k), decode(v));
            if k.eq_ignore_ascii_case(NAME_PARAM) {
                set_once(&mut self.authorizer, v);
            } else if k.eq_ignore_ascii_case(SIGNATURE_PARAM) {
                set_once(&mut self.signature, v);
            } else if !k.is_empty() && !SDK_METRICS.contains(&k.as_str()) {
                self.params.push((k, v));
            }
        }
    }

    /// `self` wins; `other` fills what `self` lacks, and its params come after `self`'s.
    pub fn merge(mut self, other: Presented) -> Presented {
        self.authorizer = self.authorizer.or(other.authorizer);
        self.signature = self.signature.or(other.signature);
        self.params.extend(other.params);
        self
    }

    /// The value of the token parameter `key_name`: an exact name match first, then a
    /// case-insensitive one (HTTP header names are case-insensitive).
    pub fn token(&self, key_name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == key_name)
            .or_else(|| {
                self.params
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(key_name))
            })
            .map(|(_, v)| v.as_str())
    }
}

/// Why a custom-authorizer connection is refused. The Display text is what the server logs.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Denial {
    #[error("no authorizer named '{0}' in this account (check x-amz-customauthorizer-name)")]
    UnknownAuthorizer(String),
    #[error("the client named no authorizer (x-amz-customauthorizer-name) and the account has no default authorizer")]
    NoAuthorizer,
    #[error("authorizer '{0}' is INACTIVE")]
    Inactive(String),
    #[error("authorizer '{authorizer}' has token signing enabled and the client sent no token parameter '{key}'")]
    MissingToken { authorizer: String, key: String },
    #[error("authorizer '{0}' has token signing enabled and the client sent no x-amz-customauthorizer-signature")]
    MissingSignature(String),
    #[error("signature did not verify against any token-signing key of authorizer '{0}' (it must be base64 of an RSA SHA-256 signature of the token, URL-encoded exactly once)")]
    BadSignature(String),
    #[error("authorizer '{authorizer}' function denied the connection (isAuthenticated: false)")]
    FunctionDenied { authorizer: String },
    #[error("authorizer '{authorizer}' function failed: {reason}")]
    FunctionFailed { authorizer: String, reason: String },
    #[error("authorizer '{authorizer}' function did not answer within {ms} ms")]
    Timeout { authorizer: String, ms: u64 },
    #[error("authorizer '{authorizer}' function returned an invalid response: {reason}")]
    InvalidResponse { authorizer: String, reason: String },
}

/// The authorizer the client named, or the account's default one; it must be ACTIVE.
pub fn select_authorizer<'a>(
    authorizers: &'a [Authorizer],
    presented: &Presented,
) -> Result<&'a Authorizer, Denial> {
    let a = match &presented.authorizer {
        Some(name) => authorizers
            .iter()
            .find(|a| &a.name == name)
            .ok_or_else(|| Denial::UnknownAuthorizer(name.clone()))?,
        None => authorizers
            .iter()
            .find(|a| a.default)
            .ok_or(Denial::NoAuthorizer)?,
    };
    if a.status != Status::Active {
        return Err(Denial::Inactive(a.name.clone()));
    }
    Ok(a)
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
/// PKCS#1 "RSA PUBLIC KEY"), >= 2048 bits. Relative paths are relative to `dir`. The error
/// names the key and file, not the authorizer (the caller adds it).
pub fn load_public_keys(a: &Authorizer, dir: &Path) -> Result<Vec<(String, RsaPublicKey)>, String> {
    let mut keys = Vec::with_capacity(a.token_signing_public_keys.len());
    for (name, file) in &a.token_signing_public_keys {
        let path = dir.join(file);
        let what = || format!("key '{name}' ({})", path.display());
        let pem =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: cannot read: {e}", what()))?;
        let key = RsaPublicKey::from_public_key_pem(pem.trim())
            .or_else(|_| RsaPublicKey::from_pkcs1_pem(pem.trim()))
            .map_err(|_| {
                format!(
                    "{}: not a PEM RSA public key (expected \"BEGIN PUBLIC KEY\" or \"BEGIN RSA PUBLIC KEY\")",
                    what()
                )
            })?;
        let bits = key.n().bits();
        if bits < MIN_KEY_BITS {
            return Err(format!(
                "{}: RSA key of {bits} bits, at least {MIN_KEY_BITS} required",
                what()
            ));
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

/// What the Lambda request event is built from.
pub struct EventInput<'a> {
    pub token: Option<&'a str>,
    pub signature_verified: bool,
    /// SNI host name.
    pub server_name: Option<&'a str>,
    /// WebSocket upgrade headers and raw query string; `None` for MQTT directly over TLS.
    pub http: Option<(&'a [(String, String)], &'a str)>,
    /// Raw username, query included.
    pub username: Option<&'a str>,
    pub password: Option<&'a [u8]>,
    /// Empty when the client sent none.
    pub client_id: &'a str,
}

/// The exact Lambda request event (reference §2.4). Fields that do not apply are omitted.
/// The event carries the token and password: never log it.
pub fn lambda_event(e: &EventInput) -> Value {
    let mut event = Map::new();
    if let Some(token) = e.token {
        event.insert("token".into(), token.into());
    }
    event.insert("signatureVerified".into(), e.signature_verified.into());
    let protocols: &[&str] = if e.http.is_some() {
        &["tls", "http", "mqtt"]
    } else {
        &["tls", "mqtt"]
    };
    event.insert("protocols".into(), json!(protocols));

    let mut data = Map::new();
    if let Some(sni) = e.server_name {
        data.insert("tls".into(), json!({ "serverName": sni }));
    }
    if let Some((headers, query)) = e.http {
        let mut h = Map::new();
        for (name, value) in headers {
            match h.get_mut(name) {
                // A repeated header: comma-joined, as HTTP allows.
                Some(Value::String(v)) => {
                    v.push(',');
                    v.push_str(value);
                }
                _ => {
                    h.insert(name.clone(), value.as_str().into());
                }
            }
        }
        let mut http = Map::new();
        http.insert("headers".into(), Value::Object(h));
        let query = query.strip_prefix('?').unwrap_or(query);
        if !query.is_empty() {
            http.insert("queryString".into(), format!("?{query}").into());
        }
        data.insert("http".into(), Value::Object(http));
    }
    let mut mqtt = Map::new();
    if let Some(username) = e.username {
        mqtt.insert("username".into(), username.into());
    }
    if let Some(password) = e.password {
        mqtt.insert("password".into(), BASE64.encode(password).into());
    }
    if !e.client_id.is_empty() {
        mqtt.insert("clientId".into(), e.client_id.into());
    }
    if !mqtt.is_empty() {
        data.insert("mqtt".into(), Value::Object(mqtt));
    }
    event.insert("protocolData".into(), Value::Object(data));
    event.insert("connectionMetadata".into(), json!({ "id": uuid_v4() }));
    Value::Object(event)
}

/// A random (not cryptographic) UUID version 4, lower-case hex: connection ids, reason strings.
pub fn uuid_v4() -> String {
    let mut b = [0u8; 16];
    b.iter_mut().for_each(|x| *x = fastrand::u8(..));
    b[6] = (b[6] & 0x0F) | 0x40;
    b[8] = (b[8] & 0x3F) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// A validated authorizer response.
#[derive(Clone, Debug, PartialEq)]
pub struct Response {
    pub is_authenticated: bool,
    pub principal_id: String,
    /// Each a JSON policy document (text).
    pub policy_documents: Vec<String>,
    pub disconnect_after_seconds: u64,
    pub refresh_after_seconds: u64,
}

/// Validate a function's JSON response: `isAuthenticated` bool required; `principalId`
/// `^[a-zA-Z0-9]{1,128}$`; `policyDocuments` an array of at most 10 entries, each a JSON string
/// or an object (serialized), each at most 2048 characters and valid JSON;
/// `disconnectAfterInSeconds` and `refreshAfterInSeconds` required, 300..=86400; unknown fields
/// ignored. The error says which rule failed. The same rules apply to a deny.
pub fn validate_response(bytes: &[u8]) -> Result<Response, String> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
    validate_value(&value)
}

fn validate_value(value: &Value) -> Result<Response, String> {
    let obj = value
        .as_object()
        .ok_or("the response is not a JSON object")?;
    let is_authenticated = match obj.get("isAuthenticated") {
        None => return Err("isAuthenticated is missing".into()),
        Some(v) => v.as_bool().ok_or("isAuthenticated must be a boolean")?,
    };
    let principal_id = match obj.get("principalId") {
        None => return Err("principalId is missing".into()),
        Some(v) => v.as_str().ok_or("principalId must be a string")?,
    };
    if principal_id.is_empty()
        || principal_id.len() > 128
        || !principal_id.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        let shown = if principal_id.chars().count() <= 128 {
            format!("'{principal_id}'")
        } else {
            format!("of {} characters", principal_id.chars().count())
        };
        return Err(format!(
            "principalId {shown} does not match ^[a-zA-Z0-9]{{1,128}}$"
        ));
    }
    let docs = match obj.get("policyDocuments") {
        None => return Err("policyDocuments is missing".into()),
        Some(v) => v.as_array().ok_or("policyDocuments must be an array")?,
    };
    if docs.len() > MAX_POLICY_DOCUMENTS {
        return Err(format!(
            "policyDocuments has {} entries, at most {MAX_POLICY_DOCUMENTS} allowed",
            docs.len()
        ));
    }
    let mut policy_documents = Vec::with_capacity(docs.len());
    for (i, doc) in docs.iter().enumerate() {
        let text = match doc {
            Value::String(s) => {
                serde_json::from_str::<Value>(s)
                    .map_err(|e| format!("policyDocuments[{i}] is not valid JSON: {e}"))?;
                s.clone()
            }
            Value::Object(_) => doc.to_string(),
            _ => {
                return Err(format!(
                    "policyDocuments[{i}] must be a JSON string or object"
                ))
            }
        };
        let chars = text.chars().count();
        if chars > MAX_POLICY_CHARS {
            return Err(format!(
                "policyDocuments[{i}] is {chars} characters, at most {MAX_POLICY_CHARS} allowed"
            ));
        }
        policy_documents.push(text);
    }
    let period = |field: &str| -> Result<u64, String> {
        let v = obj
            .get(field)
            .ok_or_else(|| format!("{field} is missing"))?;
        let n = v
            .as_u64()
            .ok_or_else(|| format!("{field} must be a whole number of seconds"))?;
        if !(MIN_PERIOD_SECONDS..=MAX_PERIOD_SECONDS).contains(&n) {
            return Err(format!(
                "{field} is {n}, it must be between {MIN_PERIOD_SECONDS} and {MAX_PERIOD_SECONDS}"
            ));
        }
        Ok(n)
    };
    let disconnect_after_seconds = period("disconnectAfterInSeconds")?;
    let refresh_after_seconds = period("refreshAfterInSeconds")?;
    Ok(Response {
        is_authenticated,
        principal_id: principal_id.to_string(),
        policy_documents,
        disconnect_after_seconds,
        refresh_after_seconds,
    })
}

/// Run the authorizer's function on `event` (from [`lambda_event`]).
///
/// Rules: the first rule whose every given field equals the event's (username = the part
/// before the last '?', password compared as UTF-8 bytes, token) answers like a Lambda would,
/// with the named `policies`; no match answers `is_authenticated: false`.
/// Command: `argv` runs with the event JSON on stdin (then closed) and must print the response
/// JSON on stdout and exit 0 within `timeout`, else it is killed.
/// A response with `is_authenticated: false` is `Ok`: the caller turns it into
/// [`Denial::FunctionDenied`].
pub async fn invoke(
    a: &Authorizer,
    policies: &BTreeMap<String, String>,
    event: &Value,
    timeout: Duration,
) -> Result<Response, Denial> {
    match &a.function {
        Function::Rules { rules } => run_rules(a, rules, policies, event),
        Function::Command { argv } => run_command(a, argv, event, timeout).await,
    }
}

fn run_rules(
    a: &Authorizer,
    rules: &[Rule],
    policies: &BTreeMap<String, String>,
    event: &Value,
) -> Result<Response, Denial> {
    let username = event
        .pointer("/protocolData/mqtt/username")
        .and_then(Value::as_str)
        .map(|u| u.rfind('?').map_or(u, |i| &u[..i]));
    let password = event
        .pointer("/protocolData/mqtt/password")
        .and_then(Value::as_str)
        .and_then(|p| BASE64.decode(p).ok());
    let token = event.get("token").and_then(Value::as_str);
    let matches = |rule: &Rule| {
        rule.username.as_deref().is_none_or(|u| username == Some(u))
            && rule
                .password
                .as_deref()
                .is_none_or(|p| password.as_deref() == Some(p.as_bytes()))
            && rule.token.as_deref().is_none_or(|t| token == Some(t))
    };
    let Some(rule) = rules.iter().find(|r| matches(r)) else {
        return Ok(Response {
            is_authenticated: false,
            principal_id: String::new(),
            policy_documents: Vec::new(),
            disconnect_after_seconds: rule_default_disconnect(),
            refresh_after_seconds: rule_default_refresh(),
        });
    };
    let invalid = |reason: String| Denial::InvalidResponse {
        authorizer: a.name.clone(),
        reason,
    };
    let mut docs = Vec::with_capacity(rule.policies.len());
    for name in &rule.policies {
        let text = policies.get(name).ok_or_else(|| {
            invalid(format!(
                "the rule names policy '{name}', which is not under [policies]"
            ))
        })?;
        serde_json::from_str::<Value>(text)
            .map_err(|e| invalid(format!("policy '{name}' is not valid JSON: {e}")))?;
        // Sent compact, as a Lambda would: the 2048-character limit then counts no indentation.
        docs.push(Value::String(compact_json(text)));
    }
    let response = json!({
        "isAuthenticated": true,
        "principalId": rule.principal_id,
        "policyDocuments": docs,
        "disconnectAfterInSeconds": rule.disconnect_after_seconds,
        "refreshAfterInSeconds": rule.refresh_after_seconds,
    });
    validate_value(&response).map_err(|reason| invalid(format!("from the matching rule: {reason}")))
}

/// Valid JSON text without the whitespace between tokens; key order and strings untouched.
fn compact_json(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in text.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if !matches!(c, ' ' | '\t' | '\n' | '\r') {
            in_string = c == '"';
            out.push(c);
        }
    }
    out
}

fn rule_default_disconnect() -> u64 {
    MAX_PERIOD_SECONDS
}
fn rule_default_refresh() -> u64 {
    MIN_PERIOD_SECONDS
}

async fn run_command(
    a: &Authorizer,
    argv: &[String],
    event: &Value,
    timeout: Duration,
) -> Result<Response, Denial> {
    let failed = |reason: String| Denial::FunctionFailed {
        authorizer: a.name.clone(),
        reason,
    };
    let Some((program, args)) = argv.split_first() else {
        return Err(failed("function.command argv is empty".into()));
    };
    let input = serde_json::to_vec(event)
        .map_err(|e| failed(format!("cannot serialize the event: {e}")))?;
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| failed(format!("cannot start '{program}': {e}")))?;
    let stdin = child.stdin.take();
    let run = async move {
        let write = async move {
            if let Some(mut stdin) = stdin {
                // A command that ignores its input may close stdin early: not an error.
                let _ = stdin.write_all(&input).await;
                let _ = stdin.shutdown().await;
            } // dropped here: the command sees end of input
        };
        let ((), output) = tokio::join!(write, child.wait_with_output());
        output
    };
    // On timeout `run` is dropped, and with it the child: kill_on_drop kills it.
    let output = match tokio::time::timeout(timeout, run).await {
        Err(_) => {
            return Err(Denial::Timeout {
                authorizer: a.name.clone(),
                ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            })
        }
        Ok(Err(e)) => return Err(failed(format!("waiting for '{program}' failed: {e}"))),
        Ok(Ok(output)) => output,
    };
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let line = stderr.lines().map(str::trim).find(|l| !l.is_empty());
        let reason = match line {
            Some(l) if l.chars().count() > MAX_STDERR_CHARS => {
                let cut: String = l.chars().take(MAX_STDERR_CHARS).collect();
                format!("'{program}' {}: {cut}...", output.status)
            }
            Some(l) => format!("'{program}' {}: {l}", output.status),
            None => format!("'{program}' {} (nothing on stderr)", output.status),
        };
        return Err(failed(reason));
    }
    validate_response(&output.stdout).map_err(|reason| Denial::InvalidResponse {
        authorizer: a.name.clone(),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    const VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/vectors");
    const EXAMPLE_AUTHORIZER: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../scripts/example_authorizer.py"
    );

    fn authorizer(function: Function) -> Authorizer {
        Authorizer {
            name: "test-authorizer".into(),
            status: Status::Active,
            default: false,
            signing_disabled: false,
            token_key_name: Some("token".into()),
            token_signing_public_keys: BTreeMap::from([(
                "key1".into(),
                PathBuf::from("public.pem"),
            )]),
            function,
        }
    }

    fn test_keys() -> Vec<(String, RsaPublicKey)> {
        let a = authorizer(Function::Rules { rules: vec![] });
        load_public_keys(&a, &Path::new(VECTORS).join("authorizer-test-key"))
            .expect("test key loads")
    }

    struct Case {
        token: String,
        base64: String,
        url_encoded: String,
    }

    fn vector_cases() -> Vec<Case> {
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

    // ---- credentials ----

    #[test]
    fn username_params_after_the_last_question_mark_in_any_order() {
        let python = from_username(
            "dev?x-amz-customauthorizer-name=auth1&x-amz-customauthorizer-signature=c2ln&token=t1",
        );
        let node = from_username(
            "dev?x-amz-customauthorizer-name=auth1&token=t1&x-amz-customauthorizer-signature=c2ln",
        );
        for p in [&python, &node] {
            assert_eq!(p.authorizer.as_deref(), Some("auth1"));
            assert_eq!(p.signature.as_deref(), Some("c2ln"));
            assert_eq!(p.params, vec![("token".to_string(), "t1".to_string())]);
            assert_eq!(p.token("token"), Some("t1"));
        }
        // Only the part after the last '?' counts.
        let p = from_username(
            "a?x-amz-customauthorizer-name=first?x-amz-customauthorizer-name=second&k=v",
        );
        assert_eq!(p.authorizer.as_deref(), Some("second"));
        assert_eq!(p.token("k"), Some("v"));
    }

    #[test]
    fn username_sdk_metrics_are_ignored() {
        let p = from_username(
            "u?SDK=PythonV2&Version=1.31&Platform=Linux&Metadata=(x)&x-amz-customauthorizer-name=a",
        );
        assert_eq!(p.authorizer.as_deref(), Some("a"));
        assert_eq!(p.params, vec![("Version".to_string(), "1.31".to_string())]);
        assert_eq!(p.token("SDK"), None);
    }

    #[test]
    fn username_signature_is_percent_decoded() {
        for c in vector_cases() {
            let username = format!(
                "dev?x-amz-customauthorizer-name=auth&x-amz-customauthorizer-signature={}&token={}",
                c.url_encoded,
                percent_encoding::utf8_percent_encode(&c.token, percent_encoding::NON_ALPHANUMERIC)
            );
            let p = from_username(&username);
            assert_eq!(p.signature.as_deref(), Some(c.base64.as_str()));
            assert_eq!(p.token("token"), Some(c.token.as_str()));
        }
    }

    #[test]
    fn username_without_question_mark_presents_nothing() {
        let p = from_username("demo-user");
        assert_eq!(p.authorizer, None);
        assert_eq!(p.signature, None);
        assert!(p.params.is_empty());
        let p = from_username("x-amz-customauthorizer-name=a");
        assert_eq!(
            p.authorizer, None,
            "no '?': the whole string is the user name"
        );
    }

    #[test]
    fn from_http_header_names_are_case_insensitive_and_the_query_counts() {
        let headers = vec![
            (
                "Host".to_string(),
                "example-ats.iot.us-east-1.amazonaws.com".to_string(),
            ),
            (
                "X-Amz-CustomAuthorizer-Name".to_string(),
                "auth1".to_string(),
            ),
            (
                "X-AMZ-CUSTOMAUTHORIZER-SIGNATURE".to_string(),
                "c2ln%2B".to_string(),
            ),
            ("MyToken".to_string(), "tok".to_string()),
        ];
        let p = from_http(&headers, "");
        assert_eq!(p.authorizer.as_deref(), Some("auth1"));
        assert_eq!(p.signature.as_deref(), Some("c2ln+"));
        assert_eq!(p.token("mytoken"), Some("tok"));
        assert_eq!(p.token("MyToken"), Some("tok"));

        let p = from_http(&[], "?x-amz-customauthorizer-name=q%2Dauth&x-amz-customauthorizer-signature=YQ%3D%3D&tk=a%20b");
        assert_eq!(p.authorizer.as_deref(), Some("q-auth"));
        assert_eq!(p.signature.as_deref(), Some("YQ=="));
        assert_eq!(p.token("tk"), Some("a b"));

        // Headers win over the query.
        let p = from_http(&headers, "x-amz-customauthorizer-name=other&tk=q");
        assert_eq!(p.authorizer.as_deref(), Some("auth1"));
        assert_eq!(p.token("tk"), Some("q"));
    }

    #[test]
    fn merge_keeps_self_first() {
        let a = from_username("u?x-amz-customauthorizer-name=from-user&token=1");
        let b = from_http(
            &[],
            "x-amz-customauthorizer-name=from-http&x-amz-customauthorizer-signature=s&token=2",
        );
        let m = a.merge(b);
        assert_eq!(m.authorizer.as_deref(), Some("from-user"));
        assert_eq!(m.signature.as_deref(), Some("s"));
        assert_eq!(m.token("token"), Some("1"));
    }

    #[test]
    fn presented_debug_redacts_signature_and_token() {
        let p = from_username("u?x-amz-customauthorizer-name=a&x-amz-customauthorizer-signature=SIGSECRET&token=TOKSECRET");
        let d = format!("{p:?}");
        assert!(!d.contains("SIGSECRET") && !d.contains("TOKSECRET"), "{d}");
        assert!(d.contains("<redacted>") && d.contains("\"token\""), "{d}");
    }

    // ---- keys and signatures ----

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
        let dir = std::env::temp_dir().join(format!("custom-auth-keys-{}", uuid_v4()));
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
            err.ends_with("RSA key of 1024 bits, at least 2048 required"),
            "{err}"
        );

        a.token_signing_public_keys = BTreeMap::from([("k".into(), private)]);
        let err = load_public_keys(&a, &dir).expect_err("private key");
        assert!(err.contains("not a PEM RSA public key"), "{err}");
        assert!(
            !err.contains("PRIVATE KEY-----") && !err.contains("MII"),
            "{err}"
        );

        a.token_signing_public_keys = BTreeMap::from([("k".into(), PathBuf::from("missing.pem"))]);
        let err = load_public_keys(&a, &dir).expect_err("missing");
        assert!(
            err.starts_with("key 'k' (") && err.contains("missing.pem): cannot read"),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn select_authorizer_by_name_default_and_status() {
        let mut named = authorizer(Function::Rules { rules: vec![] });
        named.name = "named".into();
        let mut default = authorizer(Function::Rules { rules: vec![] });
        default.name = "dflt".into();
        default.default = true;
        let mut off = authorizer(Function::Rules { rules: vec![] });
        off.name = "off".into();
        off.status = Status::Inactive;
        let all = vec![named, default, off];
        let pick = |u: &str| select_authorizer(&all, &from_username(u)).map(|a| a.name.clone());
        assert_eq!(
            pick("u?x-amz-customauthorizer-name=named"),
            Ok("named".into())
        );
        assert_eq!(pick("u"), Ok("dflt".into()));
        assert_eq!(
            pick("u?x-amz-customauthorizer-name=nope"),
            Err(Denial::UnknownAuthorizer("nope".into()))
        );
        let err = pick("u?x-amz-customauthorizer-name=off").expect_err("inactive");
        assert_eq!(err, Denial::Inactive("off".into()));
        assert_eq!(err.to_string(), "authorizer 'off' is INACTIVE");
        assert_eq!(
            select_authorizer(&all[..1], &Presented::default()).map(|a| a.name.clone()),
            Err(Denial::NoAuthorizer)
        );
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

    // ---- the Lambda event ----

    fn assert_uuid_v4(s: &str) {
        assert_eq!(s.len(), 36, "{s}");
        let parts: Vec<&str> = s.split('-').collect();
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12],
            "{s}"
        );
        assert!(
            s.chars()
                .all(|c| c == '-' || c.is_ascii_hexdigit() && !c.is_ascii_uppercase()),
            "{s}"
        );
        assert!(parts[2].starts_with('4'), "{s}");
        assert!(matches!(&parts[3][..1], "8" | "9" | "a" | "b"), "{s}");
    }

    fn keys_of(v: &Value) -> Vec<&str> {
        v.as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect()
    }

    #[test]
    fn lambda_event_direct_mqtt() {
        let username =
            "dev?x-amz-customauthorizer-name=a&x-amz-customauthorizer-signature=c2ln&token=t";
        let e = lambda_event(&EventInput {
            token: Some("t"),
            signature_verified: true,
            server_name: Some("abc-ats.iot.eu-west-1.amazonaws.com"),
            http: None,
            username: Some(username),
            password: Some(&[0xDE, 0xAD, b'p', b'w']),
            client_id: "sensor-1",
        });
        let mut top = keys_of(&e);
        top.sort_unstable();
        assert_eq!(
            top,
            [
                "connectionMetadata",
                "protocolData",
                "protocols",
                "signatureVerified",
                "token"
            ]
        );
        assert_eq!(e["token"], "t");
        assert_eq!(e["signatureVerified"], true);
        assert_eq!(e["protocols"], json!(["tls", "mqtt"]));
        let mut data = keys_of(&e["protocolData"]);
        data.sort_unstable();
        assert_eq!(data, ["mqtt", "tls"]);
        assert_eq!(
            e["protocolData"]["tls"],
            json!({ "serverName": "abc-ats.iot.eu-west-1.amazonaws.com" })
        );
        assert_eq!(
            e["protocolData"]["mqtt"],
            json!({ "username": username, "password": "3q1wdw==", "clientId": "sensor-1" })
        );
        assert_eq!(keys_of(&e["connectionMetadata"]), ["id"]);
        assert_uuid_v4(e["connectionMetadata"]["id"].as_str().expect("id"));
    }

    #[test]
    fn lambda_event_websocket() {
        let headers = vec![
            (
                "host".to_string(),
                "abc-ats.iot.us-east-1.amazonaws.com".to_string(),
            ),
            ("x-amz-customauthorizer-name".to_string(), "a".to_string()),
            ("mytoken".to_string(), "t".to_string()),
        ];
        let e = lambda_event(&EventInput {
            token: None,
            signature_verified: false,
            server_name: Some("abc-ats.iot.us-east-1.amazonaws.com"),
            http: Some((&headers, "x-amz-customauthorizer-name=a")),
            username: None,
            password: Some(b"demo-password"),
            client_id: "ws-1",
        });
        let mut top = keys_of(&e);
        top.sort_unstable();
        assert_eq!(
            top,
            [
                "connectionMetadata",
                "protocolData",
                "protocols",
                "signatureVerified"
            ]
        );
        assert_eq!(e["protocols"], json!(["tls", "http", "mqtt"]));
        assert_eq!(
            e["protocolData"]["http"],
            json!({
                "headers": {
                    "host": "abc-ats.iot.us-east-1.amazonaws.com",
                    "x-amz-customauthorizer-name": "a",
                    "mytoken": "t"
                },
                "queryString": "?x-amz-customauthorizer-name=a"
            })
        );
        assert_eq!(
            e["protocolData"]["mqtt"],
            json!({ "password": "ZGVtby1wYXNzd29yZA==", "clientId": "ws-1" })
        );
    }

    #[test]
    fn lambda_event_omits_what_does_not_apply() {
        let e = lambda_event(&EventInput {
            token: None,
            signature_verified: false,
            server_name: None,
            http: Some((&[], "")),
            username: None,
            password: None,
            client_id: "",
        });
        assert_eq!(e["protocolData"], json!({ "http": { "headers": {} } }));
        assert!(e.get("token").is_none());
        let a = lambda_event(&EventInput {
            http: None,
            ..input_for("u", None, None)
        });
        let b = lambda_event(&EventInput {
            http: None,
            ..input_for("u", None, None)
        });
        assert_ne!(a["connectionMetadata"]["id"], b["connectionMetadata"]["id"]);
    }

    // ---- responses ----

    const POLICY: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:Connect","Resource":"*"}]}"#;

    fn response_json(overrides: Value) -> Vec<u8> {
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

    #[test]
    fn validate_response_valid() {
        let r = validate_response(&response_json(json!({}))).expect("valid");
        assert_eq!(
            r,
            Response {
                is_authenticated: true,
                principal_id: "device42".into(),
                policy_documents: vec![POLICY.into()],
                disconnect_after_seconds: 3600,
                refresh_after_seconds: 300,
            }
        );
        let policy: Value = serde_json::from_str(POLICY).expect("json");
        let r = validate_response(&response_json(
            json!({ "policyDocuments": [policy.clone()], "refreshAfterInSeconds": 86400 }),
        ))
        .expect("object document");
        assert_eq!(
            serde_json::from_str::<Value>(&r.policy_documents[0]).expect("json"),
            policy
        );
        assert_eq!(r.refresh_after_seconds, 86400);
        let deny = validate_response(&response_json(
            json!({ "isAuthenticated": false, "policyDocuments": [] }),
        ))
        .expect("valid deny");
        assert!(!deny.is_authenticated);
    }

    #[test]
    fn validate_response_rules() {
        let err = |o: Value| validate_response(&response_json(o)).expect_err("invalid");
        assert_eq!(
            err(json!({ "principalId": "device-42" })),
            "principalId 'device-42' does not match ^[a-zA-Z0-9]{1,128}$"
        );
        assert_eq!(
            err(json!({ "principalId": "" })),
            "principalId '' does not match ^[a-zA-Z0-9]{1,128}$"
        );
        assert_eq!(
            err(json!({ "principalId": "a".repeat(129) })),
            "principalId of 129 characters does not match ^[a-zA-Z0-9]{1,128}$"
        );
        assert!(
            validate_response(&response_json(json!({ "principalId": "a".repeat(128) }))).is_ok()
        );
        assert_eq!(
            err(json!({ "policyDocuments": vec![POLICY; 11] })),
            "policyDocuments has 11 entries, at most 10 allowed"
        );
        assert!(validate_response(&response_json(
            json!({ "policyDocuments": vec![POLICY; 10] })
        ))
        .is_ok());
        // A valid JSON document of exactly 2049 characters.
        let long = format!(
            "{{\"Version\":\"2012-10-17\",\"Comment\":\"{}\"}}",
            "x".repeat(2049 - 37)
        );
        assert_eq!(long.len(), 2049);
        assert_eq!(
            err(json!({ "policyDocuments": [POLICY, long] })),
            "policyDocuments[1] is 2049 characters, at most 2048 allowed"
        );
        assert!(err(json!({ "policyDocuments": ["{not json"] }))
            .starts_with("policyDocuments[0] is not valid JSON: "));
        assert_eq!(
            err(json!({ "policyDocuments": [42] })),
            "policyDocuments[0] must be a JSON string or object"
        );
        assert_eq!(
            err(json!({ "refreshAfterInSeconds": 299 })),
            "refreshAfterInSeconds is 299, it must be between 300 and 86400"
        );
        assert_eq!(
            err(json!({ "disconnectAfterInSeconds": 86401 })),
            "disconnectAfterInSeconds is 86401, it must be between 300 and 86400"
        );
        assert_eq!(
            err(json!({ "disconnectAfterInSeconds": null })),
            "disconnectAfterInSeconds is missing"
        );
        assert_eq!(
            err(json!({ "refreshAfterInSeconds": "300" })),
            "refreshAfterInSeconds must be a whole number of seconds"
        );
        assert_eq!(
            err(json!({ "isAuthenticated": null })),
            "isAuthenticated is missing"
        );
        assert_eq!(
            err(json!({ "isAuthenticated": "true" })),
            "isAuthenticated must be a boolean"
        );
        assert_eq!(
            err(json!({ "policyDocuments": null })),
            "policyDocuments is missing"
        );
        assert_eq!(
            validate_response(b"[]"),
            Err("the response is not a JSON object".into())
        );
        assert!(validate_response(b"hello")
            .expect_err("garbage")
            .starts_with("not JSON: "));
    }

    // ---- invocation ----

    fn input_for<'a>(
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

    fn rule(
        username: Option<&str>,
        password: Option<&str>,
        token: Option<&str>,
        principal: &str,
    ) -> Rule {
        Rule {
            username: username.map(Into::into),
            password: password.map(Into::into),
            token: token.map(Into::into),
            principal_id: principal.into(),
            policies: vec!["connect".into()],
            disconnect_after_seconds: 86400,
            refresh_after_seconds: 300,
        }
    }

    fn policies() -> BTreeMap<String, String> {
        // Indented, as someone would write it in the TOML file.
        let text = "{\n  \"Version\": \"2012-10-17\",\n  \"Statement\": [\n    {\"Effect\": \"Allow\", \"Action\": \"iot:Connect\", \"Resource\": \"*\"}\n  ]\n}\n";
        BTreeMap::from([("connect".to_string(), text.to_string())])
    }

    const T: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn invoke_rules_match_and_mismatch() {
        let mut a = authorizer(Function::Rules {
            rules: vec![
                rule(Some("demo-user"), Some("demo-password"), None, "demouser"),
                rule(None, None, Some("device-42"), "tokenuser"),
            ],
        });
        a.signing_disabled = true;
        let pol = policies();
        let username = "demo-user?x-amz-customauthorizer-name=test-authorizer";

        let ev = lambda_event(&input_for(username, Some(b"demo-password"), None));
        let r = invoke(&a, &pol, &ev, T).await.expect("rules run");
        assert!(r.is_authenticated);
        assert_eq!(r.principal_id, "demouser");
        assert_eq!(
            r.policy_documents,
            vec![POLICY.to_string()],
            "compact, as a Lambda sends it"
        );
        assert_eq!(
            (r.disconnect_after_seconds, r.refresh_after_seconds),
            (86400, 300)
        );

        let ev = lambda_event(&input_for(username, Some(b"wrong"), None));
        let r = invoke(&a, &pol, &ev, T).await.expect("rules run");
        assert!(!r.is_authenticated);
        assert!(r.policy_documents.is_empty());

        let ev = lambda_event(&input_for(username, None, None));
        assert!(
            !invoke(&a, &pol, &ev, T)
                .await
                .expect("rules run")
                .is_authenticated
        );

        let ev = lambda_event(&input_for("anyone", None, Some("device-42")));
        let r = invoke(&a, &pol, &ev, T).await.expect("rules run");
        assert_eq!(
            (r.is_authenticated, r.principal_id.as_str()),
            (true, "tokenuser")
        );

        // A rule whose principal id a Lambda could not return is refused the same way.
        let bad = authorizer(Function::Rules {
            rules: vec![rule(None, None, None, "bad-principal")],
        });
        let err = invoke(&bad, &pol, &ev, T)
            .await
            .expect_err("invalid principal");
        assert_eq!(
            err,
            Denial::InvalidResponse {
                authorizer: "test-authorizer".into(),
                reason: "from the matching rule: principalId 'bad-principal' does not match ^[a-zA-Z0-9]{1,128}$".into()
            }
        );
    }

    #[test]
    fn compact_json_keeps_strings_and_order() {
        let text = "{\n  \"b\": [1, 2],\n  \"a\": \"x y \\\" z\"\n}\n";
        assert_eq!(compact_json(text), r#"{"b":[1,2],"a":"x y \" z"}"#);
    }

    fn command(script: &str) -> Authorizer {
        authorizer(Function::Command {
            argv: vec!["sh".into(), "-c".into(), script.into()],
        })
    }

    fn valid_response_text() -> String {
        String::from_utf8(response_json(json!({}))).expect("utf8")
    }

    #[tokio::test]
    async fn invoke_command_valid_response() {
        let a = command(&format!("cat >/dev/null; echo '{}'", valid_response_text()));
        let ev = lambda_event(&input_for("u", Some(b"p"), None));
        let r = invoke(&a, &BTreeMap::new(), &ev, T)
            .await
            .expect("command answers");
        assert!(r.is_authenticated);
        assert_eq!(r.principal_id, "device42");
    }

    #[tokio::test]
    async fn invoke_command_receives_the_event_on_stdin() {
        // Echo the event's client id back as the principal id.
        let a = command(
            "read -r line; id=$(printf '%s' \"$line\" | sed 's/.*\"clientId\":\"\\([a-z0-9-]*\\)\".*/\\1/' | tr -d -); \
             printf '{\"isAuthenticated\":true,\"principalId\":\"%s\",\"policyDocuments\":[],\"disconnectAfterInSeconds\":300,\"refreshAfterInSeconds\":300}' \"$id\"",
        );
        let ev = lambda_event(&input_for("u", None, None));
        let r = invoke(&a, &BTreeMap::new(), &ev, T)
            .await
            .expect("command answers");
        assert_eq!(r.principal_id, "client1");
    }

    #[tokio::test]
    async fn invoke_command_timeout_kills_it() {
        let pid_file = std::env::temp_dir().join(format!("custom-auth-timeout-{}", uuid_v4()));
        let a = command(&format!(
            "echo $$ > '{}'; exec sleep 60",
            pid_file.display()
        ));
        let ev = lambda_event(&input_for("u", None, None));
        let started = std::time::Instant::now();
        let err = invoke(&a, &BTreeMap::new(), &ev, Duration::from_millis(300))
            .await
            .expect_err("timeout");
        assert_eq!(
            err,
            Denial::Timeout {
                authorizer: "test-authorizer".into(),
                ms: 300
            }
        );
        assert_eq!(
            err.to_string(),
            "authorizer 'test-authorizer' function did not answer within 300 ms"
        );
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "did not wait for the 60 s sleep"
        );
        // The command was killed: gone, or a zombie waiting to be reaped.
        let pid = std::fs::read_to_string(&pid_file)
            .expect("pid file")
            .trim()
            .to_string();
        let _ = std::fs::remove_file(&pid_file);
        let mut dead = false;
        for _ in 0..50 {
            match std::fs::read_to_string(format!("/proc/{pid}/status")) {
                Err(_) => dead = true,
                Ok(s) => {
                    dead = s
                        .lines()
                        .any(|l| l.starts_with("State:") && l.contains('Z'))
                }
            }
            if dead {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(dead, "process {pid} still running after the timeout");
    }

    #[tokio::test]
    async fn invoke_command_failure_and_garbage() {
        let ev = lambda_event(&input_for("u", None, None));
        let failing = command("echo 'starting' >&2; echo 'boom: no config' >&2; exit 1");
        // Only the first line of stderr is kept.
        assert_eq!(
            invoke(&failing, &BTreeMap::new(), &ev, T).await,
            Err(Denial::FunctionFailed {
                authorizer: "test-authorizer".into(),
                reason: "'sh' exit status: 1: starting".into()
            })
        );
        let silent = command("exit 3");
        assert_eq!(
            invoke(&silent, &BTreeMap::new(), &ev, T).await,
            Err(Denial::FunctionFailed {
                authorizer: "test-authorizer".into(),
                reason: "'sh' exit status: 3 (nothing on stderr)".into()
            })
        );
        let garbage = command("echo 'Traceback? no, just garbage'");
        let err = invoke(&garbage, &BTreeMap::new(), &ev, T)
            .await
            .expect_err("garbage");
        assert!(
            matches!(&err, Denial::InvalidResponse { reason, .. } if reason.starts_with("not JSON: ")),
            "{err:?}"
        );
        assert!(err.to_string().starts_with(
            "authorizer 'test-authorizer' function returned an invalid response: not JSON"
        ));
        let partial = command("echo '{\"isAuthenticated\":true}'");
        assert_eq!(
            invoke(&partial, &BTreeMap::new(), &ev, T).await,
            Err(Denial::InvalidResponse {
                authorizer: "test-authorizer".into(),
                reason: "principalId is missing".into()
            })
        );
    }

    #[tokio::test]
    async fn invoke_command_that_cannot_start() {
        let ev = lambda_event(&input_for("u", None, None));
        let empty = authorizer(Function::Command { argv: vec![] });
        assert_eq!(
            invoke(&empty, &BTreeMap::new(), &ev, T).await,
            Err(Denial::FunctionFailed {
                authorizer: "test-authorizer".into(),
                reason: "function.command argv is empty".into()
            })
        );
        let missing = authorizer(Function::Command {
            argv: vec!["/nonexistent/authorizer".into()],
        });
        let err = invoke(&missing, &BTreeMap::new(), &ev, T)
            .await
            .expect_err("missing");
        assert!(
            matches!(&err, Denial::FunctionFailed { reason, .. } if reason.starts_with("cannot start '/nonexistent/authorizer': ")),
            "{err:?}"
        );
    }

    // ---- scripts/example_authorizer.py ----

    fn python3_available() -> bool {
        std::process::Command::new("python3")
            .arg("--version")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    }

    fn example_authorizer() -> Authorizer {
        let argv = [
            "env",
            "-u",
            "EXAMPLE_AUTH_USERNAME",
            "-u",
            "EXAMPLE_AUTH_PASSWORD",
            "AWS_REGION=eu-west-1",
            "EXAMPLE_AUTH_ACCOUNT_ID=111122223333",
            "python3",
            EXAMPLE_AUTHORIZER,
        ];
        authorizer(Function::Command {
            argv: argv.iter().map(|s| s.to_string()).collect(),
        })
    }

    #[tokio::test]
    async fn example_authorizer_allows_password_and_signed_token() {
        if !python3_available() {
            println!("NOTE: python3 not found, example_authorizer test skipped");
            return;
        }
        let a = example_authorizer();
        let username = "demo-user?x-amz-customauthorizer-name=test-authorizer";
        let ev = lambda_event(&input_for(username, Some(b"demo-password"), None));
        let r = invoke(&a, &BTreeMap::new(), &ev, T)
            .await
            .expect("script answers");
        assert!(r.is_authenticated);
        assert!(r.principal_id.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert!(!r.policy_documents.is_empty());
        let policy: Value = serde_json::from_str(&r.policy_documents[0]).expect("policy JSON");
        let statements = policy["Statement"].as_array().expect("statements");
        assert!(statements.iter().any(|s| s["Action"] == "iot:Connect"
            && s["Resource"] == "arn:aws:iot:eu-west-1:111122223333:client/${iot:ClientId}"
            && s["Effect"] == "Allow"));
        assert!(
            r.policy_documents[0].contains("iot:Publish")
                && r.policy_documents[0].contains("iot:Subscribe")
        );

        let ev = lambda_event(&input_for("anyone", None, Some("allow")));
        let r = invoke(&a, &BTreeMap::new(), &ev, T)
            .await
            .expect("script answers");
        assert!(r.is_authenticated, "verified token 'allow'");
    }

    #[tokio::test]
    async fn example_authorizer_denies() {
        if !python3_available() {
            println!("NOTE: python3 not found, example_authorizer test skipped");
            return;
        }
        let a = example_authorizer();
        for (username, password, token, verified) in [
            ("demo-user", Some(&b"wrong"[..]), None, false),
            ("other-user", Some(&b"demo-password"[..]), None, false),
            ("anyone", None, Some("allow"), false), // token not verified
            ("anyone", None, Some("deny"), true),
        ] {
            let ev = lambda_event(&EventInput {
                signature_verified: verified,
                ..input_for(username, password, token)
            });
            let r = invoke(&a, &BTreeMap::new(), &ev, T)
                .await
                .expect("a deny is a valid response");
            assert!(!r.is_authenticated, "{username} {token:?}");
        }
    }
}
