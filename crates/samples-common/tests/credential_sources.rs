//! websocket-connect's credentials, from every source of the standard chain: environment
//! variables, a profile's static keys, `credential_process`, SSO and IMDS. SSO and IMDS are asked
//! over HTTP on loopback, through the chain's own HTTPS client (rustls with ring), from a stand-in
//! server started by the test; nothing else is contacted (IMDS is switched off where it is not
//! the source under test). Each test gets its own `HOME` and profile files in a temporary folder.
#![cfg(feature = "sigv4")]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Mutex, MutexGuard};

use samples_common::websocket::CredentialSource;
use samples_common::{CredentialsProblem, Error};

/// The chain reads the process environment, so the tests that change it take turns.
static ENV: Mutex<()> = Mutex::new(());

/// An environment with no AWS settings, a fresh `HOME` and no IMDS; restored when dropped.
struct Scenario {
    home: PathBuf,
    saved: Vec<(String, String)>,
    _turn: MutexGuard<'static, ()>,
}

impl Scenario {
    fn new(name: &str) -> Scenario {
        let turn = ENV.lock().unwrap_or_else(|e| e.into_inner());
        let saved: Vec<(String, String)> = std::env::vars()
            .filter(|(k, _)| k.starts_with("AWS_") || k == "HOME")
            .collect();
        for (k, _) in &saved {
            std::env::remove_var(k);
        }
        let home = std::env::temp_dir().join(format!(
            "samples-common-credentials-{}-{name}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&home);
        std::fs::create_dir_all(home.join(".aws/sso/cache")).unwrap();
        std::env::set_var("HOME", &home);
        std::env::set_var("AWS_CONFIG_FILE", home.join(".aws/config"));
        std::env::set_var("AWS_SHARED_CREDENTIALS_FILE", home.join(".aws/credentials"));
        std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
        Scenario {
            home,
            saved,
            _turn: turn,
        }
    }

    fn write(&self, relative: &str, contents: &str) {
        std::fs::write(self.home.join(relative), contents).unwrap();
    }

    fn load(&self) -> Result<CredentialSource, Error> {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(CredentialSource::load_default_chain("eu-west-1"))
    }
}

impl Drop for Scenario {
    fn drop(&mut self) {
        let now: Vec<String> = std::env::vars()
            .map(|(k, _)| k)
            .filter(|k| k.starts_with("AWS_") || k == "HOME")
            .collect();
        for k in now {
            std::env::remove_var(k);
        }
        for (k, v) in &self.saved {
            std::env::set_var(k, v);
        }
        let _ = std::fs::remove_dir_all(&self.home);
    }
}

/// The credentials a source resolved to, taken out of the runtime that resolved them.
fn keys(source: &CredentialSource) -> (String, String, Option<String>) {
    let c = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(source.current());
    (
        c.access_key_id().to_string(),
        c.secret_access_key().to_string(),
        c.session_token().map(str::to_string),
    )
}

/// One request as the stand-in saw it.
#[derive(Debug)]
struct Seen {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What a stand-in answers: status, extra headers, body.
type Answer = (u16, Vec<(&'static str, String)>, String);

/// A tiny HTTP/1.1 server on loopback: answers each request with `route(method, target)`
/// (status, extra headers, body), one request per connection, and reports what it saw.
fn stand_in(route: fn(&str, &str) -> Answer) -> (String, Receiver<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                continue;
            }
            let mut parts = line.split_whitespace();
            let method = parts.next().unwrap_or_default().to_string();
            let target = parts.next().unwrap_or_default().to_string();
            let mut headers = Vec::new();
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                    break;
                }
                if let Some((k, v)) = h.split_once(':') {
                    headers.push((k.trim().to_string(), v.trim().to_string()));
                }
            }
            let length: usize = headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or(0);
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let (status, extra, body) = route(&method, &target);
            let mut response = format!(
                "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n",
                body.len()
            );
            for (k, v) in extra {
                response.push_str(&format!("{k}: {v}\r\n"));
            }
            response.push_str("\r\n");
            response.push_str(&body);
            let _ = stream.write_all(response.as_bytes());
            let _ = tx.send(Seen {
                method,
                target,
                headers,
            });
        }
    });
    (url, rx)
}

fn sha1_hex(text: &str) -> String {
    ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, text.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn environment_variables_are_used_as_they_are() {
    let s = Scenario::new("env");
    std::env::set_var("AWS_ACCESS_KEY_ID", "AKIDENVIRONMENT");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "secret-from-env");
    std::env::set_var("AWS_SESSION_TOKEN", "token-from-env");
    let source = s.load().unwrap();
    assert_eq!(
        keys(&source),
        (
            "AKIDENVIRONMENT".into(),
            "secret-from-env".into(),
            Some("token-from-env".into())
        )
    );
}

#[test]
fn a_profile_with_static_keys_is_used() {
    let s = Scenario::new("static");
    s.write(
        ".aws/credentials",
        "[default]\naws_access_key_id = AKIDDEFAULT\naws_secret_access_key = default-secret\n\n\
         [device]\naws_access_key_id = AKIDDEVICE\naws_secret_access_key = device-secret\n",
    );
    std::env::set_var("AWS_PROFILE", "device");
    let source = s.load().unwrap();
    assert_eq!(
        keys(&source),
        ("AKIDDEVICE".into(), "device-secret".into(), None)
    );
}

#[test]
fn a_half_set_environment_falls_back_to_the_profile() {
    let s = Scenario::new("half-env");
    s.write(
        ".aws/credentials",
        "[default]\naws_access_key_id = AKIDDEFAULT\naws_secret_access_key = default-secret\n",
    );
    std::env::set_var("AWS_ACCESS_KEY_ID", "AKIDWITHOUTSECRET");
    let source = s.load().unwrap();
    assert_eq!(keys(&source).0, "AKIDDEFAULT");
}

#[test]
fn credential_process_output_is_used() {
    let s = Scenario::new("process");
    s.write(
        ".aws/config",
        "[default]\ncredential_process = echo '{\"Version\": 1, \"AccessKeyId\": \"AKIDPROCESS\", \
         \"SecretAccessKey\": \"process-secret\", \"SessionToken\": \"process-token\"}'\n",
    );
    let source = s.load().unwrap();
    assert_eq!(
        keys(&source),
        (
            "AKIDPROCESS".into(),
            "process-secret".into(),
            Some("process-token".into())
        )
    );
}

#[test]
fn a_failing_credential_process_is_reported() {
    let s = Scenario::new("process-fails");
    s.write(".aws/config", "[default]\ncredential_process = false\n");
    let err = s.load().err().unwrap();
    let Error::NoCredentials(CredentialsProblem::NoneFound(message)) = &err else {
        panic!("expected NoCredentials, got {err:?}");
    };
    assert_eq!(
        message,
        "Error retrieving credentials: external process exited with code exit status: 1. Stderr:"
    );
}

fn sso_route(method: &str, target: &str) -> Answer {
    if method == "GET" && target.starts_with("/federation/credentials?") {
        let body = r#"{"roleCredentials":{"accessKeyId":"AKIDSSO","secretAccessKey":"sso-secret","sessionToken":"sso-token","expiration":4102444800000}}"#;
        (
            200,
            vec![("content-type", "application/json".into())],
            body.into(),
        )
    } else {
        (404, vec![], String::new())
    }
}

const START_URL: &str = "https://d-0000000000.awsapps.com/start";

fn sso_profile(s: &Scenario, sso_url: &str, expires_at: &str) {
    s.write(
        ".aws/config",
        &format!(
            "[default]\nsso_start_url = {START_URL}\nsso_region = eu-west-1\n\
             sso_account_id = 123456789012\nsso_role_name = IotDevice\n"
        ),
    );
    s.write(
        &format!(".aws/sso/cache/{}.json", sha1_hex(START_URL)),
        &format!(
            r#"{{"accessToken": "sso-bearer", "expiresAt": "{expires_at}", "region": "eu-west-1", "startUrl": "{START_URL}"}}"#
        ),
    );
    std::env::set_var("AWS_ENDPOINT_URL_SSO", sso_url);
}

#[test]
fn sso_credentials_come_from_the_portal_with_the_cached_token() {
    let s = Scenario::new("sso");
    let (url, seen) = stand_in(sso_route);
    sso_profile(&s, &url, "2099-01-01T00:00:00Z");
    let source = s.load().unwrap();
    assert_eq!(
        keys(&source),
        (
            "AKIDSSO".into(),
            "sso-secret".into(),
            Some("sso-token".into())
        )
    );
    let request = seen.try_recv().unwrap();
    assert_eq!(request.method, "GET");
    assert!(
        request.target.contains("role_name=IotDevice")
            && request.target.contains("account_id=123456789012"),
        "{}",
        request.target
    );
    assert_eq!(request.header("x-amz-sso_bearer_token"), Some("sso-bearer"));
    assert!(
        seen.try_recv().is_err(),
        "asked the portal again: the credentials were resolved once"
    );
}

fn sso_refusing_route(_: &str, _: &str) -> Answer {
    (
        401,
        vec![
            ("content-type", "application/json".into()),
            ("x-amzn-errortype", "UnauthorizedException".into()),
        ],
        r#"{"message":"Session token not found or invalid"}"#.into(),
    )
}

#[test]
fn a_token_the_portal_refuses_is_reported() {
    let s = Scenario::new("sso-refused");
    let (url, seen) = stand_in(sso_refusing_route);
    sso_profile(&s, &url, "2099-01-01T00:00:00Z");
    let err = s.load().err().unwrap();
    let Error::NoCredentials(CredentialsProblem::NoneFound(message)) = &err else {
        panic!("expected NoCredentials, got {err:?}");
    };
    assert_eq!(
        message,
        "UnauthorizedException: Session token not found or invalid"
    );
    assert_eq!(
        seen.try_recv().unwrap().header("x-amz-sso_bearer_token"),
        Some("sso-bearer")
    );
}

fn imds_route(method: &str, target: &str) -> Answer {
    match (method, target) {
        ("PUT", "/latest/api/token") => (
            200,
            vec![("x-aws-ec2-metadata-token-ttl-seconds", "21600".into())],
            "imds-session".into(),
        ),
        ("GET", "/latest/meta-data/iam/security-credentials/") => {
            (200, vec![], "iot-device-role".into())
        }
        ("GET", "/latest/meta-data/iam/security-credentials/iot-device-role") => (
            200,
            vec![],
            r#"{"Code": "Success", "Type": "AWS-HMAC", "AccessKeyId": "AKIDIMDS", "SecretAccessKey": "imds-secret", "Token": "imds-token", "Expiration": "2099-01-01T00:00:00Z"}"#.into(),
        ),
        _ => (404, vec![], String::new()),
    }
}

#[test]
fn imds_credentials_come_from_the_instance_role() {
    let s = Scenario::new("imds");
    let (url, seen) = stand_in(imds_route);
    std::env::remove_var("AWS_EC2_METADATA_DISABLED");
    std::env::set_var("AWS_EC2_METADATA_SERVICE_ENDPOINT", &url);
    let source = s.load().unwrap();
    assert_eq!(
        keys(&source),
        (
            "AKIDIMDS".into(),
            "imds-secret".into(),
            Some("imds-token".into())
        )
    );
    let requests: Vec<Seen> = seen.try_iter().collect();
    let lines: Vec<String> = requests
        .iter()
        .map(|r| format!("{} {}", r.method, r.target))
        .collect();
    assert_eq!(
        lines,
        [
            "PUT /latest/api/token",
            "GET /latest/meta-data/iam/security-credentials/",
            "GET /latest/meta-data/iam/security-credentials/iot-device-role",
        ]
    );
    for r in &requests[1..] {
        assert_eq!(r.header("x-aws-ec2-metadata-token"), Some("imds-session"));
    }
}

#[test]
fn no_source_at_all_names_the_providers_tried() {
    let s = Scenario::new("none");
    // The default profile files (absent here), not files named by a variable: a named file
    // that is missing is reported as such instead (tests/credentials.rs).
    std::env::remove_var("AWS_CONFIG_FILE");
    std::env::remove_var("AWS_SHARED_CREDENTIALS_FILE");
    let err = s.load().err().unwrap();
    let Error::NoCredentials(CredentialsProblem::NoneFound(message)) = &err else {
        panic!("expected NoCredentials, got {err:?}");
    };
    assert_eq!(
        message,
        "none of the providers had any (tried Environment, Profile, WebIdentityToken, \
         EcsContainer, Ec2InstanceMetadata)"
    );
}
