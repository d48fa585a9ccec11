//! Verifying a SigV4-presigned WebSocket upgrade (`GET /mqtt?X-Amz-...`), the server side of
//! AWS IoT Core's "MQTT over WebSocket with SigV4".
//!
//! This module owns the checks and the signature recomputation; it does no I/O. The caller hands
//! it the upgrade request as received, the rules of this endpoint (region, clock, allowed skew)
//! and the configured access keys, and gets back either the access key that signed the request
//! or a [`Denial`] whose `Display` is the reason to log.
//!
//! What IoT Core does, and this module with it:
//! - service `iotdevicegateway`, payload hash = SHA-256 of the empty string;
//! - the canonical query leaves out `X-Amz-Signature` **and** `X-Amz-Security-Token` (the session
//!   token is appended after signing and is not signed);
//! - the canonical headers are exactly those listed in `X-Amz-SignedHeaders` (older clients sign
//!   `host`, the official CRT signs `connection;host`); `host` must be among them and its value
//!   is the `Host` header as received, `:port` included;
//! - no `X-Amz-Expires`: `X-Amz-Date` must be within the configured skew of this clock.
//!
//! Query values are percent-decoded without turning `+` into a space (SigV4 signers encode `+`
//! as `%2B`; a raw `+` stays a `+`), then re-encoded the RFC 3986 way for the canonical query.
//!
//! This verifier shares no canonicalisation code with the client's presigner in `samples-common`,
//! on purpose: the tests check each against the other (and both against the vectors), which
//! only means something while they are written independently. Keep it that way.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use ring::{digest, hmac};

use crate::config::AccessKey;

/// The only algorithm IoT Core accepts.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// The SigV4 service name of the IoT data endpoint's WebSocket gateway.
pub const SERVICE: &str = "iotdevicegateway";
/// The last element of a credential scope.
const TERMINATOR: &str = "aws4_request";
/// Hex SHA-256 of the empty payload.
pub const EMPTY_PAYLOAD_SHA256: &str =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

const P_ALGORITHM: &str = "X-Amz-Algorithm";
const P_CREDENTIAL: &str = "X-Amz-Credential";
const P_DATE: &str = "X-Amz-Date";
const P_SIGNED_HEADERS: &str = "X-Amz-SignedHeaders";
const P_SIGNATURE: &str = "X-Amz-Signature";
const P_SECURITY_TOKEN: &str = "X-Amz-Security-Token";

/// RFC 3986: everything but the unreserved characters `A-Z a-z 0-9 - _ . ~` is `%XX`-encoded.
const RFC3986: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// The WebSocket upgrade request, as received.
#[derive(Debug, Clone, Copy)]
pub struct UpgradeRequest<'a> {
    /// The HTTP method; only `GET` is a WebSocket upgrade.
    pub method: &'a str,
    /// The path only, without the query (`/mqtt`).
    pub path: &'a str,
    /// The query string as received, without the leading `?`.
    pub raw_query: &'a str,
    /// The headers as received; names in any case.
    pub headers: &'a [(String, String)],
}

/// What this endpoint requires of a presigned request.
#[derive(Debug, Clone, Copy)]
pub struct Rules<'a> {
    /// The region this endpoint is in; the credential scope must name it.
    pub region: &'a str,
    /// This server's clock.
    pub now: SystemTime,
    /// How far `X-Amz-Date` may be from `now`, either way.
    pub max_skew: Duration,
}

/// A request whose signature verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub access_key_id: String,
}

/// Why a presigned upgrade request is refused. `Display` is the reason the server logs; no
/// variant carries a secret key, a session token or a signature.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Denial {
    #[error("method {method} is not GET: a WebSocket upgrade is a GET request")]
    MethodNotGet { method: String },
    #[error("query parameter {0} is missing from the presigned URL")]
    MissingParameter(&'static str),
    #[error("query parameter {0} appears more than once (was it appended after signing?)")]
    DuplicateParameter(&'static str),
    #[error("query parameter {0} is not valid UTF-8 once percent-decoded")]
    ParameterNotUtf8(&'static str),
    #[error("X-Amz-Algorithm is '{algorithm}', expected AWS4-HMAC-SHA256")]
    UnsupportedAlgorithm { algorithm: String },
    #[error(
        "X-Amz-Credential '{credential}' is malformed ({reason}); expected \
         <access key id>/<yyyymmdd>/<region>/iotdevicegateway/aws4_request"
    )]
    MalformedCredential {
        credential: String,
        reason: &'static str,
    },
    #[error("signed for service '{service}', AWS IoT Core WebSockets use iotdevicegateway")]
    WrongService { service: String },
    #[error("signed for region {signed}, this endpoint is in {endpoint}")]
    WrongRegion { signed: String, endpoint: String },
    #[error("X-Amz-Date '{value}' is not a date of the form yyyymmddTHHMMSSZ")]
    MalformedDate { value: String },
    #[error(
        "the credential scope date {scope_date} is not the date of X-Amz-Date {amz_date} \
         (sign with one timestamp)"
    )]
    ScopeDateMismatch {
        scope_date: String,
        amz_date: String,
    },
    #[error(
        "X-Amz-Date {amz_date} is {} s {} this server's clock, more than the {max_skew_seconds} s \
         allowed (check the client's clock)",
        .seconds_off.unsigned_abs(),
        ahead_or_behind(*.seconds_off)
    )]
    ClockSkew {
        amz_date: String,
        seconds_off: i64,
        max_skew_seconds: u64,
    },
    #[error("unknown access key id {access_key_id}")]
    UnknownAccessKey { access_key_id: String },
    #[error(
        "access key {access_key_id} is temporary but X-Amz-Security-Token is missing \
         (append the session token to the presigned URL)"
    )]
    SessionTokenMissing { access_key_id: String },
    #[error("X-Amz-Security-Token does not match the session token of access key {access_key_id}")]
    SessionTokenMismatch { access_key_id: String },
    #[error(
        "X-Amz-Security-Token was sent, but access key {access_key_id} is a long-term key \
         without a session token"
    )]
    UnexpectedSessionToken { access_key_id: String },
    #[error("X-Amz-SignedHeaders '{signed_headers}' is malformed ({reason})")]
    MalformedSignedHeaders {
        signed_headers: String,
        reason: &'static str,
    },
    #[error("X-Amz-SignedHeaders '{signed_headers}' does not include host")]
    HostNotSigned { signed_headers: String },
    #[error("signed header '{header}' is not in the request")]
    SignedHeaderMissing { header: String },
    #[error("X-Amz-Signature is not 64 hex digits")]
    MalformedSignature,
    #[error(
        "signature does not match (check the secret access key and the signed host; \
         the Host header received was '{host}')"
    )]
    SignatureMismatch { host: String },
}

fn ahead_or_behind(seconds_off: i64) -> &'static str {
    if seconds_off >= 0 {
        "ahead of"
    } else {
        "behind"
    }
}

/// True when the query carries SigV4 parameters (`X-Amz-Algorithm` or `X-Amz-Signature`).
pub fn is_presigned(raw_query: &str) -> bool {
    parse_query(raw_query)
        .iter()
        .any(|(name, _)| name == P_ALGORITHM.as_bytes() || name == P_SIGNATURE.as_bytes())
}

/// Check a presigned upgrade request; on success, returns who signed it and their key.
pub fn verify<'k>(
    req: &UpgradeRequest,
    rules: &Rules,
    keys: &'k [AccessKey],
) -> Result<(Verified, &'k AccessKey), Denial> {
    if req.method != "GET" {
        return Err(Denial::MethodNotGet {
            method: req.method.to_owned(),
        });
    }
    let params = parse_query(req.raw_query);

    let algorithm = required(&params, P_ALGORITHM)?;
    let credential = required(&params, P_CREDENTIAL)?;
    let amz_date = required(&params, P_DATE)?;
    let signed_headers = required(&params, P_SIGNED_HEADERS)?;
    let signature = required(&params, P_SIGNATURE)?;
    let token = optional(&params, P_SECURITY_TOKEN)?;

    if algorithm != ALGORITHM {
        return Err(Denial::UnsupportedAlgorithm { algorithm });
    }
    let scope = Scope::parse(&credential)?;
    if scope.service != SERVICE {
        return Err(Denial::WrongService {
            service: scope.service.to_owned(),
        });
    }
    if scope.region != rules.region {
        return Err(Denial::WrongRegion {
            signed: scope.region.to_owned(),
            endpoint: rules.region.to_owned(),
        });
    }
    let signed_at = parse_amz_date(&amz_date)?;
    if !amz_date.starts_with(scope.date) {
        return Err(Denial::ScopeDateMismatch {
            scope_date: scope.date.to_owned(),
            amz_date,
        });
    }
    let seconds_off = signed_at - unix_seconds(rules.now);
    let max_skew_seconds = rules.max_skew.as_secs();
    if seconds_off.unsigned_abs() > max_skew_seconds {
        return Err(Denial::ClockSkew {
            amz_date,
            seconds_off,
            max_skew_seconds,
        });
    }

    let key = keys
        .iter()
        .find(|k| k.access_key_id == scope.access_key_id)
        .ok_or_else(|| Denial::UnknownAccessKey {
            access_key_id: scope.access_key_id.to_owned(),
        })?;
    match (&key.session_token, &token) {
        (Some(_), None) => {
            return Err(Denial::SessionTokenMissing {
                access_key_id: key.access_key_id.clone(),
            })
        }
        (Some(expected), Some(sent)) if !constant_time_eq(expected.as_bytes(), sent.as_bytes()) => {
            return Err(Denial::SessionTokenMismatch {
                access_key_id: key.access_key_id.clone(),
            })
        }
        (None, Some(_)) => {
            return Err(Denial::UnexpectedSessionToken {
                access_key_id: key.access_key_id.clone(),
            })
        }
        _ => {}
    }

    let header_names = parse_signed_headers(&signed_headers)?;
    let canonical = build_canonical_request(req, &params, &header_names)?;
    let sent_signature = decode_hex_32(&signature).ok_or(Denial::MalformedSignature)?;
    let to_sign = string_to_sign(&amz_date, &scope.to_string(), &canonical);
    let signing_key = signing_key(
        &key.secret_access_key,
        scope.date,
        scope.region,
        scope.service,
    );
    // hmac::verify compares in constant time.
    hmac::verify(&signing_key, to_sign.as_bytes(), &sent_signature).map_err(|_| {
        Denial::SignatureMismatch {
            host: header_value(req.headers, "host").unwrap_or_default(),
        }
    })?;

    Ok((
        Verified {
            access_key_id: key.access_key_id.clone(),
        },
        key,
    ))
}

/// The canonical request IoT Core signs, computed from the request as received (its
/// `X-Amz-SignedHeaders` says which headers go in).
pub fn canonical_request(req: &UpgradeRequest) -> Result<String, Denial> {
    let params = parse_query(req.raw_query);
    let signed_headers = required(&params, P_SIGNED_HEADERS)?;
    let header_names = parse_signed_headers(&signed_headers)?;
    build_canonical_request(req, &params, &header_names)
}

/// `AWS4-HMAC-SHA256\n<amz_date>\n<credential scope>\n<hex sha256(canonical request)>`, where the
/// credential scope is `<yyyymmdd>/<region>/iotdevicegateway/aws4_request`.
pub fn string_to_sign(amz_date: &str, credential_scope: &str, canonical_request: &str) -> String {
    format!(
        "{ALGORITHM}\n{amz_date}\n{credential_scope}\n{}",
        hex::encode(digest::digest(
            &digest::SHA256,
            canonical_request.as_bytes()
        ))
    )
}

/// The SigV4 signing key: HMAC-SHA256 chain ("AWS4"+secret, date) -> region -> service ->
/// "aws4_request".
pub(crate) fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> hmac::Key {
    let mut k = format!("AWS4{secret}").into_bytes();
    for part in [date, region, service, TERMINATOR] {
        let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &k), part.as_bytes());
        k = tag.as_ref().to_vec();
    }
    hmac::Key::new(hmac::HMAC_SHA256, &k)
}

/// The parts of `X-Amz-Credential`: `<AKID>/<yyyymmdd>/<region>/<service>/aws4_request`.
struct Scope<'a> {
    access_key_id: &'a str,
    date: &'a str,
    region: &'a str,
    service: &'a str,
}

impl<'a> Scope<'a> {
    fn parse(credential: &'a str) -> Result<Self, Denial> {
        let bad = |reason| Denial::MalformedCredential {
            credential: credential.to_owned(),
            reason,
        };
        let parts: Vec<&str> = credential.split('/').collect();
        let [access_key_id, date, region, service, terminator] = parts[..] else {
            return Err(bad("it needs exactly five parts separated by '/'"));
        };
        if access_key_id.is_empty() {
            return Err(bad("the access key id is empty"));
        }
        if date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("the date is not yyyymmdd"));
        }
        if region.is_empty() {
            return Err(bad("the region is empty"));
        }
        if service.is_empty() {
            return Err(bad("the service is empty"));
        }
        if terminator != TERMINATOR {
            return Err(bad("it does not end with aws4_request"));
        }
        Ok(Scope {
            access_key_id,
            date,
            region,
            service,
        })
    }
}

impl std::fmt::Display for Scope<'_> {
    /// The credential scope, without the access key id.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{}/{}/{TERMINATOR}",
            self.date, self.region, self.service
        )
    }
}

/// Query parameters, percent-decoded (a `+` stays a `+`), in wire order.
type Params = Vec<(Vec<u8>, Vec<u8>)>;

fn parse_query(raw_query: &str) -> Params {
    raw_query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (
                percent_decode_str(name).collect::<Vec<u8>>(),
                percent_decode_str(value).collect::<Vec<u8>>(),
            )
        })
        .collect()
}

/// The decoded value of a parameter that may appear at most once.
fn optional(params: &Params, name: &'static str) -> Result<Option<String>, Denial> {
    let mut found = params.iter().filter(|(n, _)| n == name.as_bytes());
    let Some((_, value)) = found.next() else {
        return Ok(None);
    };
    if found.next().is_some() {
        return Err(Denial::DuplicateParameter(name));
    }
    String::from_utf8(value.clone())
        .map(Some)
        .map_err(|_| Denial::ParameterNotUtf8(name))
}

/// The decoded value of a parameter that must appear exactly once.
fn required(params: &Params, name: &'static str) -> Result<String, Denial> {
    optional(params, name)?.ok_or(Denial::MissingParameter(name))
}

/// `X-Amz-SignedHeaders`: lowercase names separated by `;`, used in the order listed.
fn parse_signed_headers(signed_headers: &str) -> Result<Vec<&str>, Denial> {
    let bad = |reason| Denial::MalformedSignedHeaders {
        signed_headers: signed_headers.to_owned(),
        reason,
    };
    let names: Vec<&str> = signed_headers.split(';').collect();
    for (i, name) in names.iter().enumerate() {
        if name.is_empty() {
            return Err(bad("an empty header name"));
        }
        if name.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(bad("header names must be lowercase"));
        }
        if names[..i].contains(name) {
            return Err(bad("a header is listed twice"));
        }
    }
    if !names.contains(&"host") {
        return Err(Denial::HostNotSigned {
            signed_headers: signed_headers.to_owned(),
        });
    }
    Ok(names)
}

fn build_canonical_request(
    req: &UpgradeRequest,
    params: &Params,
    header_names: &[&str],
) -> Result<String, Denial> {
    let mut query: Vec<(String, String)> = params
        .iter()
        .filter(|(n, _)| n != P_SIGNATURE.as_bytes() && n != P_SECURITY_TOKEN.as_bytes())
        .map(|(n, v)| (uri_encode(n), uri_encode(v)))
        .collect();
    query.sort();
    let query: Vec<String> = query.into_iter().map(|(n, v)| format!("{n}={v}")).collect();

    let mut headers = String::new();
    for name in header_names {
        let value = header_value(req.headers, name).ok_or_else(|| Denial::SignedHeaderMissing {
            header: (*name).to_owned(),
        })?;
        headers.push_str(name);
        headers.push(':');
        headers.push_str(&value);
        headers.push('\n');
    }

    let path = if req.path.is_empty() { "/" } else { req.path };
    Ok(format!(
        "{method}\n{path}\n{query}\n{headers}\n{signed}\n{EMPTY_PAYLOAD_SHA256}",
        method = req.method,
        query = query.join("&"),
        signed = header_names.join(";"),
    ))
}

/// The canonical value of a header: every occurrence (name matched case-insensitively), each
/// trimmed with inner runs of spaces collapsed, joined with `,`. `None` if the header is absent.
fn header_value(headers: &[(String, String)], name: &str) -> Option<String> {
    let values: Vec<String> = headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| {
            v.split([' ', '\t'])
                .filter(|w| !w.is_empty())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    (!values.is_empty()).then(|| values.join(","))
}

fn uri_encode(bytes: &[u8]) -> String {
    // The encoder works on &str; bytes that are not UTF-8 are encoded one by one.
    match std::str::from_utf8(bytes) {
        Ok(s) => utf8_percent_encode(s, RFC3986).to_string(),
        Err(_) => percent_encoding::percent_encode(bytes, RFC3986).to_string(),
    }
}

/// Seconds since the Unix epoch of a `yyyymmddTHHMMSSZ` timestamp (UTC). The shape is checked
/// here; the calendar (days in the month, leap years) by `time`.
fn parse_amz_date(value: &str) -> Result<i64, Denial> {
    let bad = || Denial::MalformedDate {
        value: value.to_owned(),
    };
    let b = value.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return Err(bad());
    }
    let num = |range: std::ops::Range<usize>| -> Result<u16, Denial> {
        let digits = &b[range];
        if !digits.iter().all(u8::is_ascii_digit) {
            return Err(bad());
        }
        Ok(digits.iter().fold(0, |n, d| n * 10 + u16::from(d - b'0')))
    };
    let small = |range| num(range).and_then(|n| u8::try_from(n).map_err(|_| bad()));
    let month = time::Month::try_from(small(4..6)?).map_err(|_| bad())?;
    let date = time::Date::from_calendar_date(i32::from(num(0..4)?), month, small(6..8)?)
        .map_err(|_| bad())?;
    let clock =
        time::Time::from_hms(small(9..11)?, small(11..13)?, small(13..15)?).map_err(|_| bad())?;
    Ok(time::PrimitiveDateTime::new(date, clock)
        .assume_utc()
        .unix_timestamp())
}

fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_secs()).map_or(i64::MIN, |s| -s),
    }
}

fn decode_hex_32(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

/// Equality whose time does not depend on where the inputs differ (only on their lengths).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    subtle::ConstantTimeEq::ct_eq(a, b).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    const VECTORS: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../testdata/vectors/sigv4-websocket.json"
    ));

    #[derive(serde::Deserialize)]
    struct Vectors {
        cases: Vec<Case>,
    }

    #[derive(serde::Deserialize)]
    struct Case {
        name: String,
        host_header: String,
        region: String,
        service: String,
        access_key_id: String,
        secret_access_key: String,
        session_token: Option<String>,
        time: String,
        canonical_request: String,
        string_to_sign: String,
        signature: String,
        official_signer_path_and_query: String,
    }

    impl Case {
        fn now(&self) -> SystemTime {
            // "2026-11-22T11:28:50Z" -> "20261122T112850Z"
            let compact: String = self
                .time
                .chars()
                .filter(|c| *c != '-' && *c != ':')
                .collect();
            let secs = parse_amz_date(&compact).expect("vector time parses");
            UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).expect("after 1970"))
        }
        fn key(&self) -> AccessKey {
            AccessKey {
                access_key_id: self.access_key_id.clone(),
                secret_access_key: self.secret_access_key.clone(),
                session_token: self.session_token.clone(),
                policies: vec![],
            }
        }
        fn path_and_query(&self) -> (&str, &str) {
            self.official_signer_path_and_query
                .split_once('?')
                .expect("vector has a query")
        }
        fn headers(&self) -> Vec<(String, String)> {
            vec![
                ("Host".into(), self.host_header.clone()),
                ("Sec-WebSocket-Protocol".into(), "mqtt".into()),
                ("Upgrade".into(), "websocket".into()),
            ]
        }
    }

    fn cases() -> Vec<Case> {
        let v: Vectors = serde_json::from_str(VECTORS).expect("vectors parse");
        assert_eq!(v.cases.len(), 3, "the vector file has three cases");
        v.cases
    }

    fn case(name: &str) -> Case {
        cases()
            .into_iter()
            .find(|c| c.name == name)
            .expect("case exists")
    }

    fn rules(c: &Case) -> Rules<'_> {
        Rules {
            region: &c.region,
            now: c.now(),
            max_skew: Duration::from_secs(300),
        }
    }

    /// Verify `query` (instead of the vector's own) against case `c` with `headers`.
    fn check(
        c: &Case,
        query: &str,
        headers: &[(String, String)],
        rules: &Rules,
        keys: &[AccessKey],
    ) -> Result<String, Denial> {
        let (path, _) = c.path_and_query();
        let req = UpgradeRequest {
            method: "GET",
            path,
            raw_query: query,
            headers,
        };
        verify(&req, rules, keys).map(|(v, k)| {
            assert_eq!(v.access_key_id, k.access_key_id);
            v.access_key_id
        })
    }

    /// The vector's query, and the default rules and key: the baseline every failing test varies.
    fn deny_with(
        name: &str,
        change: impl FnOnce(&mut String, &mut Vec<(String, String)>, &mut AccessKey),
    ) -> Denial {
        let c = case(name);
        let mut query = c.path_and_query().1.to_owned();
        let mut headers = c.headers();
        let mut key = c.key();
        change(&mut query, &mut headers, &mut key);
        check(&c, &query, &headers, &rules(&c), &[key]).expect_err("must be denied")
    }

    /// A presigning helper for tests: the same algorithm a client uses, token appended unsigned.
    fn presign(
        host: &str,
        signed_headers: &str,
        headers: &[(String, String)],
        key: &AccessKey,
        region: &str,
        amz_date: &str,
    ) -> String {
        let date = &amz_date[..8];
        let mut query = format!(
            "X-Amz-Algorithm={ALGORITHM}&X-Amz-Credential={}%2F{date}%2F{region}%2F{SERVICE}%2F{TERMINATOR}\
             &X-Amz-Date={amz_date}&X-Amz-SignedHeaders={}",
            key.access_key_id,
            uri_encode(signed_headers.as_bytes())
        );
        let req = UpgradeRequest {
            method: "GET",
            path: "/mqtt",
            raw_query: &query,
            headers,
        };
        let canonical = canonical_request(&req).expect("canonical request");
        assert!(canonical.contains(&format!("host:{host}\n")));
        let scope = format!("{date}/{region}/{SERVICE}/{TERMINATOR}");
        let sts = string_to_sign(amz_date, &scope, &canonical);
        let k = signing_key(&key.secret_access_key, date, region, SERVICE);
        let sig = hex::encode(hmac::sign(&k, sts.as_bytes()));
        query.push_str(&format!("&X-Amz-Signature={sig}"));
        if let Some(token) = &key.session_token {
            query.push_str(&format!(
                "&X-Amz-Security-Token={}",
                uri_encode(token.as_bytes())
            ));
        }
        query
    }

    #[test]
    fn official_vectors_verify() {
        for c in cases() {
            assert_eq!(c.service, SERVICE, "{}", c.name);
            let (_, query) = c.path_and_query();
            let keys = [c.key()];
            let got = check(&c, query, &c.headers(), &rules(&c), &keys);
            assert_eq!(got, Ok("AKIDEXAMPLE".to_owned()), "{}", c.name);
        }
    }

    #[test]
    fn canonical_request_and_string_to_sign_match_vectors() {
        for c in cases() {
            let (path, query) = c.path_and_query();
            let headers = c.headers();
            let req = UpgradeRequest {
                method: "GET",
                path,
                raw_query: query,
                headers: &headers,
            };
            let canonical = canonical_request(&req).expect("canonical request");
            assert_eq!(canonical, c.canonical_request, "{}", c.name);
            let amz_date: String = c
                .time
                .chars()
                .filter(|ch| *ch != '-' && *ch != ':')
                .collect();
            let scope = format!("{}/{}/{SERVICE}/{TERMINATOR}", &amz_date[..8], c.region);
            let sts = string_to_sign(&amz_date, &scope, &canonical);
            assert_eq!(sts, c.string_to_sign, "{}", c.name);
            let key = signing_key(&c.secret_access_key, &amz_date[..8], &c.region, SERVICE);
            assert_eq!(
                hex::encode(hmac::sign(&key, sts.as_bytes())),
                c.signature,
                "{}",
                c.name
            );
        }
    }

    #[test]
    fn parameter_order_does_not_matter() {
        for c in cases() {
            let (_, query) = c.path_and_query();
            let mut pairs: Vec<&str> = query.split('&').collect();
            pairs.reverse();
            pairs.rotate_left(2);
            let shuffled = pairs.join("&");
            assert_ne!(shuffled, query);
            let keys = [c.key()];
            let got = check(&c, &shuffled, &c.headers(), &rules(&c), &keys);
            assert_eq!(got, Ok("AKIDEXAMPLE".to_owned()), "{}", c.name);
        }
    }

    #[test]
    fn header_names_match_in_any_case() {
        let c = case("with-session-token");
        let headers = vec![("hOST".to_owned(), c.host_header.clone())];
        let keys = [c.key()];
        let got = check(&c, c.path_and_query().1, &headers, &rules(&c), &keys);
        assert_eq!(got, Ok("AKIDEXAMPLE".to_owned()));
    }

    #[test]
    fn crt_style_connection_and_host_verifies() {
        let c = case("with-session-token");
        let headers = vec![
            ("Host".to_owned(), c.host_header.clone()),
            ("Connection".to_owned(), "  Upgrade ".to_owned()),
            ("Upgrade".to_owned(), "websocket".to_owned()),
        ];
        let key = c.key();
        let query = presign(
            &c.host_header,
            "connection;host",
            &headers,
            &key,
            &c.region,
            "20261122T112850Z",
        );
        assert!(query.contains("X-Amz-SignedHeaders=connection%3Bhost"));
        let keys = [key];
        let got = check(&c, &query, &headers, &rules(&c), &keys);
        assert_eq!(got, Ok("AKIDEXAMPLE".to_owned()));

        // The same request without its Connection header cannot be checked.
        let host_only = vec![("Host".to_owned(), c.host_header.clone())];
        let got = check(&c, &query, &host_only, &rules(&c), &keys);
        assert_eq!(
            got,
            Err(Denial::SignedHeaderMissing {
                header: "connection".into()
            })
        );

        // And a different Connection value is a different signature.
        let mut other = headers.clone();
        other[1].1 = "keep-alive, Upgrade".into();
        let got = check(&c, &query, &other, &rules(&c), &keys);
        assert!(
            matches!(got, Err(Denial::SignatureMismatch { .. })),
            "{got:?}"
        );
    }

    #[test]
    fn is_presigned_detects_sigv4_queries() {
        for c in cases() {
            assert!(is_presigned(c.path_and_query().1), "{}", c.name);
        }
        assert!(is_presigned("X-Amz-Signature=00"));
        assert!(is_presigned("a=b&X%2DAmz%2DAlgorithm=AWS4-HMAC-SHA256"));
        assert!(!is_presigned("x-amz-customauthorizer-name=auth&token=abc"));
        assert!(!is_presigned(""));
    }

    #[test]
    fn wrong_secret_is_signature_mismatch() {
        let d = deny_with("no-session-token", |_, _, k| k.secret_access_key.push('x'));
        assert_eq!(
            d,
            Denial::SignatureMismatch {
                host: "a1b2c3d4e5f6g7-ats.iot.us-east-1.amazonaws.com".into()
            }
        );
        let shown = d.to_string();
        assert!(
            shown.starts_with("signature does not match (check the secret access key"),
            "{shown}"
        );
        assert!(!shown.contains("wJalrXUtnFEMI"), "{shown}");
        assert!(!shown.contains("24d862252ad19c28"), "{shown}");
    }

    #[test]
    fn wrong_region_is_denied() {
        let c = case("no-session-token");
        let keys = [c.key()];
        let rules = Rules {
            region: "eu-central-1",
            ..rules(&c)
        };
        let got = check(&c, c.path_and_query().1, &c.headers(), &rules, &keys);
        let d = got.expect_err("denied");
        assert_eq!(
            d,
            Denial::WrongRegion {
                signed: "us-east-1".into(),
                endpoint: "eu-central-1".into()
            }
        );
        assert_eq!(
            d.to_string(),
            "signed for region us-east-1, this endpoint is in eu-central-1"
        );
    }

    #[test]
    fn clock_six_minutes_off_is_denied() {
        let c = case("no-session-token");
        let keys = [c.key()];
        let later = Rules {
            now: c.now() + Duration::from_secs(360),
            ..rules(&c)
        };
        let d = check(&c, c.path_and_query().1, &c.headers(), &later, &keys).expect_err("denied");
        assert_eq!(
            d,
            Denial::ClockSkew {
                amz_date: "20261122T112850Z".into(),
                seconds_off: -360,
                max_skew_seconds: 300
            }
        );
        assert!(
            d.to_string()
                .contains("is 360 s behind this server's clock"),
            "{d}"
        );

        let earlier = Rules {
            now: c.now() - Duration::from_secs(360),
            ..rules(&c)
        };
        let d = check(&c, c.path_and_query().1, &c.headers(), &earlier, &keys).expect_err("denied");
        assert!(
            matches!(
                d,
                Denial::ClockSkew {
                    seconds_off: 360,
                    ..
                }
            ),
            "{d:?}"
        );
        assert!(
            d.to_string()
                .contains("is 360 s ahead of this server's clock"),
            "{d}"
        );

        // Exactly at the limit still verifies.
        let edge = Rules {
            now: c.now() + Duration::from_secs(300),
            ..rules(&c)
        };
        assert!(check(&c, c.path_and_query().1, &c.headers(), &edge, &keys).is_ok());
    }

    #[test]
    fn extra_query_parameter_breaks_the_signature() {
        let d = deny_with("no-session-token", |q, _, _| q.push_str("&foo=bar"));
        assert!(matches!(d, Denial::SignatureMismatch { .. }), "{d:?}");
    }

    #[test]
    fn changed_date_breaks_the_signature() {
        let d = deny_with("no-session-token", |q, _, _| {
            *q = q.replace("X-Amz-Date=20261122T112850Z", "X-Amz-Date=20261122T112851Z");
        });
        assert!(matches!(d, Denial::SignatureMismatch { .. }), "{d:?}");
    }

    #[test]
    fn missing_session_token_is_denied() {
        let d = deny_with("with-session-token", |q, _, _| {
            *q = q.replace(
                "&X-Amz-Security-Token=FwoGZXIvYXdzEBYaDH%2Fsession%2Btoken%3D%3D",
                "",
            );
        });
        assert_eq!(
            d,
            Denial::SessionTokenMissing {
                access_key_id: "AKIDEXAMPLE".into()
            }
        );
    }

    #[test]
    fn altered_session_token_is_denied_without_revealing_it() {
        let d = deny_with("with-session-token", |q, _, _| {
            *q = q.replace("session%2Btoken", "session%2Btoken2");
        });
        assert_eq!(
            d,
            Denial::SessionTokenMismatch {
                access_key_id: "AKIDEXAMPLE".into()
            }
        );
        assert!(!d.to_string().contains("session+token"), "{d}");
        assert!(!d.to_string().contains("FwoGZX"), "{d}");
    }

    #[test]
    fn duplicated_session_token_is_denied() {
        let d = deny_with("with-session-token", |q, _, _| {
            q.push_str("&X-Amz-Security-Token=FwoGZXIvYXdzEBYaDH%2Fsession%2Btoken%3D%3D");
        });
        assert_eq!(d, Denial::DuplicateParameter("X-Amz-Security-Token"));
    }

    #[test]
    fn unknown_access_key_is_denied() {
        let d = deny_with("no-session-token", |_, _, k| {
            k.access_key_id = "AKIDOTHER".into()
        });
        assert_eq!(
            d,
            Denial::UnknownAccessKey {
                access_key_id: "AKIDEXAMPLE".into()
            }
        );
        assert_eq!(d.to_string(), "unknown access key id AKIDEXAMPLE");
    }

    #[test]
    fn token_sent_for_long_term_key_is_denied() {
        let d = deny_with("with-session-token", |_, _, k| k.session_token = None);
        assert_eq!(
            d,
            Denial::UnexpectedSessionToken {
                access_key_id: "AKIDEXAMPLE".into()
            }
        );
    }

    #[test]
    fn host_other_than_signed_is_denied() {
        let d = deny_with("local-endpoint-with-port", |_, h, _| {
            h[0].1 = "localhost".into()
        });
        assert_eq!(
            d,
            Denial::SignatureMismatch {
                host: "localhost".into()
            }
        );
    }

    #[test]
    fn missing_host_header_is_denied() {
        let d = deny_with("local-endpoint-with-port", |_, h, _| {
            h.retain(|(n, _)| n != "Host")
        });
        assert_eq!(
            d,
            Denial::SignedHeaderMissing {
                header: "host".into()
            }
        );
    }

    #[test]
    fn signed_headers_without_host_is_denied() {
        let d = deny_with("no-session-token", |q, _, _| {
            *q = q.replace("X-Amz-SignedHeaders=host", "X-Amz-SignedHeaders=upgrade");
        });
        assert_eq!(
            d,
            Denial::HostNotSigned {
                signed_headers: "upgrade".into()
            }
        );
    }

    #[test]
    fn malformed_credential_is_denied() {
        let d = deny_with("no-session-token", |q, _, _| {
            *q = q.replace("%2Faws4_request", "");
        });
        assert_eq!(
            d,
            Denial::MalformedCredential {
                credential: "AKIDEXAMPLE/20261122/us-east-1/iotdevicegateway".into(),
                reason: "it needs exactly five parts separated by '/'"
            }
        );
        let d = deny_with("no-session-token", |q, _, _| {
            *q = q.replace("%2F20261122%2F", "%2F2026-11-22%2F");
        });
        assert!(
            matches!(
                d,
                Denial::MalformedCredential {
                    reason: "the date is not yyyymmdd",
                    ..
                }
            ),
            "{d:?}"
        );
    }

    #[test]
    fn wrong_service_is_denied() {
        let d = deny_with("no-session-token", |q, _, _| {
            *q = q.replace("%2Fiotdevicegateway%2F", "%2Fiot%2F");
        });
        assert_eq!(
            d,
            Denial::WrongService {
                service: "iot".into()
            }
        );
    }

    #[test]
    fn wrong_algorithm_is_denied() {
        let d = deny_with("no-session-token", |q, _, _| {
            *q = q.replace("AWS4-HMAC-SHA256", "AWS4-HMAC-SHA1");
        });
        assert_eq!(
            d,
            Denial::UnsupportedAlgorithm {
                algorithm: "AWS4-HMAC-SHA1".into()
            }
        );
    }

    #[test]
    fn missing_and_duplicated_parameters_are_denied() {
        for name in [
            P_ALGORITHM,
            P_CREDENTIAL,
            P_DATE,
            P_SIGNED_HEADERS,
            P_SIGNATURE,
        ] {
            let d = deny_with("no-session-token", |q, _, _| {
                let kept: Vec<&str> = q
                    .split('&')
                    .filter(|p| !p.starts_with(&format!("{name}=")))
                    .collect();
                *q = kept.join("&");
            });
            assert_eq!(d, Denial::MissingParameter(name));

            let d = deny_with("no-session-token", |q, _, _| {
                let dup = q
                    .split('&')
                    .find(|p| p.starts_with(&format!("{name}=")))
                    .map(str::to_owned);
                q.push('&');
                q.push_str(&dup.unwrap_or_default());
            });
            assert_eq!(d, Denial::DuplicateParameter(name));
        }
    }

    #[test]
    fn scope_date_must_match_amz_date() {
        // Both dates are within the skew (just before and after midnight) but disagree.
        let c = case("no-session-token");
        let key = c.key();
        let headers = c.headers();
        let query = presign(
            &c.host_header,
            "host",
            &headers,
            &key,
            &c.region,
            "20261122T235959Z",
        )
        .replace("%2F20261122%2F", "%2F20261123%2F");
        let midnight = parse_amz_date("20261123T000000Z").expect("valid date");
        let now = UNIX_EPOCH + Duration::from_secs(u64::try_from(midnight).expect("after 1970"));
        let rules = Rules { now, ..rules(&c) };
        let d = check(&c, &query, &headers, &rules, &[key]).expect_err("denied");
        assert_eq!(
            d,
            Denial::ScopeDateMismatch {
                scope_date: "20261123".into(),
                amz_date: "20261122T235959Z".into()
            }
        );
    }

    #[test]
    fn malformed_date_and_signature_are_denied() {
        let d = deny_with("no-session-token", |q, _, _| {
            *q = q.replace("20261122T112850Z", "20261322T112850Z");
        });
        assert_eq!(
            d,
            Denial::MalformedDate {
                value: "20261322T112850Z".into()
            }
        );
        let d = deny_with("no-session-token", |q, _, _| {
            *q = q.replace("X-Amz-Signature=24d8", "X-Amz-Signature=zz");
        });
        assert_eq!(d, Denial::MalformedSignature);
    }

    #[test]
    fn method_must_be_get() {
        let c = case("no-session-token");
        let headers = c.headers();
        let req = UpgradeRequest {
            method: "POST",
            path: "/mqtt",
            raw_query: c.path_and_query().1,
            headers: &headers,
        };
        let got = verify(&req, &rules(&c), &[c.key()]).map(|(v, _)| v);
        assert_eq!(
            got,
            Err(Denial::MethodNotGet {
                method: "POST".into()
            })
        );
    }

    #[test]
    fn garbage_queries_are_denied_without_panicking() {
        let c = case("no-session-token");
        let keys = [c.key()];
        for q in [
            "",
            "&&&",
            "=",
            "X-Amz-Algorithm",
            "%",
            "%zz=%ff&X-Amz-Signature=%c3%28",
            "a=b=c",
        ] {
            let got = check(&c, q, &c.headers(), &rules(&c), &keys);
            assert!(
                matches!(got, Err(Denial::MissingParameter(_))),
                "{q}: {got:?}"
            );
        }
        let d = deny_with("no-session-token", |q, _, _| {
            *q = q.replace("X-Amz-Algorithm=AWS4-HMAC-SHA256", "X-Amz-Algorithm=%ff");
        });
        assert_eq!(d, Denial::ParameterNotUtf8("X-Amz-Algorithm"));
    }

    #[test]
    fn amz_date_parses_to_unix_time() {
        assert_eq!(parse_amz_date("19700101T000000Z"), Ok(0));
        assert_eq!(parse_amz_date("20261122T112850Z"), Ok(1_795_346_930));
        assert_eq!(parse_amz_date("20240229T000000Z"), Ok(1_709_164_800));
        assert!(parse_amz_date("20230229T000000Z").is_err());
        assert!(parse_amz_date("20261122T112850").is_err());
        assert!(parse_amz_date("2026112TT112850Z").is_err());
        assert!(parse_amz_date("２0261122T11285Z").is_err());
        for out_of_range in [
            "20261322T112850Z",
            "20261100T112850Z",
            "20260431T112850Z",
            "20261122T242850Z",
            "20261122T116050Z",
            "20261122T112860Z",
        ] {
            assert_eq!(
                parse_amz_date(out_of_range),
                Err(Denial::MalformedDate {
                    value: out_of_range.into()
                }),
                "{out_of_range}"
            );
        }
        assert_eq!(parse_amz_date("20261231T235959Z"), Ok(1_798_761_599));
    }

    #[test]
    fn hex_signature_and_constant_time_compare() {
        let sig = "00ff".repeat(16);
        let mut expected = [0u8; 32];
        expected
            .iter_mut()
            .skip(1)
            .step_by(2)
            .for_each(|b| *b = 0xff);
        assert_eq!(decode_hex_32(&sig), Some(expected));
        assert_eq!(decode_hex_32(&sig.to_uppercase()), Some(expected));
        assert_eq!(decode_hex_32(&sig[..62]), None);
        assert_eq!(decode_hex_32(&format!("{sig}00")), None);
        assert_eq!(decode_hex_32(&sig.replace("ff", "fg")), None);
        assert!(constant_time_eq(b"token", b"token"));
        assert!(!constant_time_eq(b"token", b"tokem"));
        assert!(!constant_time_eq(b"token", b"token2"));
    }
}
