//! Token signing and SigV4 presigning checked against vectors made by independent
//! implementations (openssl, the AWS CRT signer), kept in the repository's `testdata/vectors/`.

use std::path::PathBuf;

use samples_common::custom_auth::{build_username, url_encode, TokenSigner, UsernameParts};
use serde_json::Value;

fn vectors_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/vectors")
}

fn load(name: &str) -> Value {
    let path = vectors_dir().join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

#[test]
fn token_signatures_equal_openssl_for_every_vector() {
    let v = load("custom-auth-signatures.json");
    let key = vectors_dir().join(v["private_key"].as_str().unwrap());
    let signer = TokenSigner::from_pem_file(&key).unwrap();
    let pkcs1 = TokenSigner::from_pem_file(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/authorizer-pkcs1.key"),
    )
    .unwrap();
    let cases = v["cases"].as_array().unwrap();
    assert!(cases.len() >= 4);
    for case in cases {
        let token = case["token_value"].as_str().unwrap();
        let expected = case["signature_base64"].as_str().unwrap();
        assert_eq!(
            signer.sign(token).unwrap(),
            expected,
            "token {token:?} (PKCS#8 key)"
        );
        assert_eq!(
            pkcs1.sign(token).unwrap(),
            expected,
            "token {token:?} (PKCS#1 key)"
        );
        assert_eq!(
            url_encode(expected),
            case["signature_url_encoded"].as_str().unwrap()
        );
    }
}

#[test]
fn username_carries_the_vector_signature_url_encoded_once() {
    let v = load("custom-auth-signatures.json");
    for case in v["cases"].as_array().unwrap() {
        let raw = case["signature_base64"].as_str().unwrap();
        let encoded = case["signature_url_encoded"].as_str().unwrap();
        let token = case["token_value"].as_str().unwrap();
        for given in [raw, encoded] {
            let username = build_username(&UsernameParts {
                username: Some("device"),
                authorizer: Some("signed-authorizer"),
                signature: Some(given),
                token_key_name: Some("token"),
                token_value: Some(token),
            })
            .unwrap();
            assert_eq!(
                username,
                format!(
                    "device?x-amz-customauthorizer-name=signed-authorizer\
                     &x-amz-customauthorizer-signature={encoded}&token={token}"
                )
            );
        }
    }
}

#[cfg(feature = "sigv4")]
mod sigv4 {
    use super::*;
    use aws_credential_types::Credentials;
    use samples_common::websocket::presign;
    use std::collections::BTreeMap;
    use std::time::{Duration, SystemTime};

    fn parse_time(s: &str) -> SystemTime {
        // "2026-11-22T11:28:50Z"
        let (date, time) = s.trim_end_matches('Z').split_once('T').unwrap();
        let d: Vec<i64> = date.split('-').map(|x| x.parse().unwrap()).collect();
        let t: Vec<u64> = time.split(':').map(|x| x.parse().unwrap()).collect();
        // days from civil (Howard Hinnant's algorithm)
        let (y, m, day) = (d[0] - i64::from(d[1] <= 2), d[1], d[2]);
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let mp = (m + 9) % 12;
        let doy = (153 * mp + 2) / 5 + day - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = (era * 146097 + doe - 719468) as u64;
        SystemTime::UNIX_EPOCH + Duration::from_secs(days * 86400 + t[0] * 3600 + t[1] * 60 + t[2])
    }

    fn query_map(path_and_query: &str) -> (String, BTreeMap<String, Vec<String>>) {
        let (path, query) = path_and_query.split_once('?').unwrap();
        let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for pair in query.split('&') {
            let (k, v) = pair.split_once('=').unwrap();
            map.entry(k.to_string()).or_default().push(v.to_string());
        }
        (path.to_string(), map)
    }

    #[test]
    fn presigned_url_matches_the_official_signer_for_every_case() {
        let v = load("sigv4-websocket.json");
        let cases = v["cases"].as_array().unwrap();
        assert_eq!(cases.len(), 3);
        for case in cases {
            let name = case["name"].as_str().unwrap();
            let token = case["session_token"].as_str().map(str::to_string);
            let creds = Credentials::new(
                case["access_key_id"].as_str().unwrap(),
                case["secret_access_key"].as_str().unwrap(),
                token.clone(),
                None,
                "vectors",
            );
            let presigned = presign(
                case["host_header"].as_str().unwrap(),
                case["region"].as_str().unwrap(),
                &creds,
                parse_time(case["time"].as_str().unwrap()),
            );
            assert_eq!(
                presigned.canonical_request,
                case["canonical_request"].as_str().unwrap(),
                "{name}"
            );
            assert_eq!(
                presigned.string_to_sign,
                case["string_to_sign"].as_str().unwrap(),
                "{name}"
            );
            assert_eq!(
                presigned.signature,
                case["signature"].as_str().unwrap(),
                "{name}"
            );
            let (path, ours) = query_map(&presigned.path_and_query);
            let (official_path, official) =
                query_map(case["official_signer_path_and_query"].as_str().unwrap());
            assert_eq!(path, "/mqtt", "{name}");
            assert_eq!(path, official_path, "{name}");
            assert_eq!(
                ours["X-Amz-Signature"],
                vec![case["signature"].as_str().unwrap().to_string()],
                "{name}: signature"
            );
            assert_eq!(
                ours, official,
                "{name}: every query parameter, encoded as the CRT does"
            );
            let tokens = ours.get("X-Amz-Security-Token").map(Vec::len).unwrap_or(0);
            assert_eq!(
                tokens,
                usize::from(token.is_some()),
                "{name}: session token count"
            );
            assert!(
                !ours.contains_key("X-Amz-Expires"),
                "{name}: no X-Amz-Expires"
            );
        }
    }

    #[test]
    fn session_token_is_not_signed() {
        // The same request with and without a session token carries the same signature: the token
        // is outside the canonical request.
        let t = parse_time("2026-11-22T11:28:50Z");
        let with = Credentials::new("AKID", "secret", Some("tok/en+=".into()), None, "t");
        let without = Credentials::new("AKID", "secret", None, None, "t");
        let (_, a) = query_map(&presign("h.example", "us-east-1", &with, t).path_and_query);
        let (_, b) = query_map(&presign("h.example", "us-east-1", &without, t).path_and_query);
        assert_eq!(a["X-Amz-Signature"], b["X-Amz-Signature"]);
        assert_eq!(
            a["X-Amz-Security-Token"],
            vec!["tok%2Fen%2B%3D".to_string()]
        );
    }

    #[test]
    fn signature_depends_on_host_region_secret_and_time() {
        let t = parse_time("2026-11-22T11:28:50Z");
        let creds = Credentials::new("AKID", "secret", None, None, "t");
        let sig = |host: &str, region: &str, c: &Credentials, t: SystemTime| {
            presign(host, region, c, t).signature
        };
        let base = sig("localhost:8443", "us-east-1", &creds, t);
        assert_ne!(
            base,
            sig("localhost", "us-east-1", &creds, t),
            "port is part of the signed host"
        );
        assert_ne!(base, sig("localhost:8443", "eu-west-1", &creds, t));
        assert_ne!(
            base,
            sig(
                "localhost:8443",
                "us-east-1",
                &Credentials::new("AKID", "other", None, None, "t"),
                t
            )
        );
        assert_ne!(
            base,
            sig(
                "localhost:8443",
                "us-east-1",
                &creds,
                t + Duration::from_secs(1)
            )
        );
    }
}
