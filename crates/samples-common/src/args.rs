//! Command-line option groups the samples flatten into their own `Args`, and [`parse`], which
//! parses a sample's `Args` with the `--port` help of its authentication mode.
//!
//! The official AWS sample flag names (`--ca_file`, `--client_id`, `--custom_auth_*`, ...) are
//! accepted as aliases, so that commands copied from AWS material work unchanged. The groups'
//! fields are private to this crate: `spec` reads them and checks them against AWS IoT Core's rules.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, CommandFactory, Parser};

use crate::connect::MqttVersion;
use crate::endpoint::parse_host;
use crate::error::Error;
use crate::mode::AuthMode;
use crate::secrets::MASK;

pub use crate::proxy::ProxyArgs;

/// The clap command of a sample's `Args`, its `--port` help naming `mode`'s default port
/// (8883 for mTLS, 443 otherwise). `Args` must flatten [`ConnectionArgs`].
pub fn command<A: CommandFactory>(mode: AuthMode) -> clap::Command {
    let help = match mode {
        AuthMode::Mtls => format!(
            "TCP port: 8883, or 443 (which offers ALPN x-amzn-mqtt-ca) [default: {}]",
            mode.default_port()
        ),
        _ => format!("TCP port [default: {}]", mode.default_port()),
    };
    A::command().mut_arg("port", |arg| arg.help(help))
}

/// Parse the command line into a sample's `Args`, as `Args::parse()` does (exit 2 with clap's
/// message on a usage error, exit 0 after `--help`), with the `--port` help of [`command`].
pub fn parse<A: Parser>(mode: AuthMode) -> A {
    let mut cmd = command::<A>(mode);
    let mut matches = cmd.get_matches_mut();
    A::from_arg_matches_mut(&mut matches).unwrap_or_else(|e| e.format(&mut cmd).exit())
}

/// Where to connect and how long to try. Every sample has these.
#[derive(Args, Debug, Clone)]
pub struct ConnectionArgs {
    /// AWS IoT Core data endpoint, e.g. abc123-ats.iot.eu-west-1.amazonaws.com
    /// (`aws iot describe-endpoint --endpoint-type iot:Data-ATS`).
    /// May also be given as the last argument, or in AWS_IOT_ENDPOINT.
    #[arg(long, value_name = "HOST")]
    pub(crate) endpoint: Option<String>,

    /// The endpoint, as the last argument (same as --endpoint).
    #[arg(value_name = "ENDPOINT")]
    pub(crate) endpoint_positional: Option<String>,

    /// TCP port (the help line is set per sample by `command`).
    #[arg(long, value_name = "PORT")]
    pub(crate) port: Option<u16>,

    /// Trust the CA certificates in this PEM file instead of the built-in roots
    /// (which include Amazon Root CA 1 and 3).
    #[arg(long, visible_alias = "ca_file", value_name = "PEM")]
    pub(crate) ca_file: Option<PathBuf>,

    /// MQTT client id; your IoT policy must allow iot:Connect on client/<id>
    /// [default: test-<random>, matching the sample policies' client/test-*].
    #[arg(long, visible_alias = "client_id", value_name = "ID")]
    pub(crate) client_id: Option<String>,

    /// MQTT protocol version.
    #[arg(long, value_enum, default_value_t = MqttVersion::V5, value_name = "VERSION")]
    pub(crate) mqtt_version: MqttVersion,

    /// Give up after this many seconds (DNS, TCP, TLS, CONNECT and DISCONNECT together).
    #[arg(long, value_name = "SECONDS", default_value_t = 20,
          value_parser = clap::value_parser!(u64).range(1..=600))]
    pub(crate) timeout: u64,

    /// MQTT keep-alive in seconds (AWS IoT Core accepts 30 to 1200).
    #[arg(long, value_name = "SECONDS", default_value_t = 60,
          value_parser = clap::value_parser!(u16).range(30..=1200))]
    pub(crate) keep_alive: u16,

    /// The HTTP proxy, if any (flags, or HTTPS_PROXY and NO_PROXY).
    #[command(flatten, next_help_heading = "Proxy")]
    pub(crate) proxy: ProxyArgs,
}

impl ConnectionArgs {
    /// The endpoint host from the positional argument, `--endpoint`, or `AWS_IOT_ENDPOINT`.
    pub(crate) fn host(&self) -> Result<String, Error> {
        let from_env = std::env::var("AWS_IOT_ENDPOINT")
            .ok()
            .filter(|v| !v.trim().is_empty());
        match (&self.endpoint, &self.endpoint_positional) {
            (Some(flag), Some(pos)) if flag.trim() != pos.trim() => Err(Error::Usage(format!(
                "two different endpoints given: --endpoint {flag} and {pos}; give one"
            ))),
            (Some(e), _) | (None, Some(e)) => parse_host(e),
            (None, None) => match from_env {
                Some(e) => parse_host(&e),
                None => Err(Error::Usage(
                    "no endpoint given: pass --endpoint <HOST> (or the host as the last argument); \
                     `aws iot describe-endpoint --endpoint-type iot:Data-ATS` prints yours"
                        .into(),
                )),
            },
        }
    }

    /// The port given, or the mode's default.
    pub(crate) fn port_or(&self, default: u16) -> u16 {
        self.port.unwrap_or(default)
    }

    /// The client id given (checked against AWS IoT Core's rules), or `test-<random>`.
    pub(crate) fn client_id(&self) -> Result<String, Error> {
        match &self.client_id {
            None => Ok(format!("test-{:08x}", fastrand::u32(..))),
            Some(id) if id.is_empty() => Err(Error::Usage("--client-id is empty".into())),
            Some(id) if id.len() > 128 => Err(Error::Usage(format!(
                "--client-id is {} bytes; AWS IoT Core allows at most 128",
                id.len()
            ))),
            Some(id) if id.starts_with("$GEN/") => Err(Error::Usage(
                "--client-id may not start with $GEN/ (reserved by AWS IoT Core)".into(),
            )),
            Some(id) if id.starts_with(' ') => Err(Error::Usage(
                "--client-id may not start with a space".into(),
            )),
            Some(id) => Ok(id.clone()),
        }
    }

    /// The proxy to reach `endpoint` through: the flags, or the environment's unless NO_PROXY
    /// names the endpoint.
    pub(crate) fn proxy(&self, endpoint: &str) -> Result<Option<crate::proxy::Proxy>, Error> {
        crate::proxy::choose(&self.proxy, endpoint, &process_env)
    }

    /// The bound on the whole attempt.
    pub(crate) fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout)
    }

    /// The MQTT keep-alive.
    pub(crate) fn keep_alive(&self) -> Duration {
        Duration::from_secs(self.keep_alive.into())
    }
}

/// Username, password and authorizer name for a custom authorizer.
#[derive(Args, Clone, Default)]
pub struct CustomAuthArgs {
    /// Name of the custom authorizer; leave it out to use the account's default authorizer.
    #[arg(
        long,
        visible_alias = "custom_auth_authorizer_name",
        value_name = "NAME"
    )]
    pub(crate) authorizer: Option<String>,

    /// Username handed to the authorizer.
    #[arg(long, visible_alias = "custom_auth_username", value_name = "USERNAME")]
    pub(crate) username: Option<String>,

    /// Password handed to the authorizer.
    #[arg(long, visible_alias = "custom_auth_password", value_name = "PASSWORD")]
    pub(crate) password: Option<String>,
}

impl std::fmt::Debug for CustomAuthArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CustomAuthArgs")
            .field("authorizer", &self.authorizer)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| MASK))
            .finish()
    }
}

impl CustomAuthArgs {
    /// No custom-auth option given.
    pub(crate) fn is_empty(&self) -> bool {
        self.authorizer.is_none() && self.username.is_none() && self.password.is_none()
    }
}

/// The signed-token part of a custom authorizer with signing enabled.
#[derive(Args, Clone, Default)]
pub struct TokenArgs {
    /// The authorizer's token key name (its `tokenKeyName`).
    #[arg(long, visible_aliases = ["custom_auth_token_key_name", "custom_auth_token_name"],
          value_name = "NAME")]
    pub(crate) authorizer_token_key_name: Option<String>,

    /// The token value the signature is made over.
    #[arg(long, visible_alias = "custom_auth_token_value", value_name = "TOKEN")]
    pub(crate) authorizer_token_key_value: Option<String>,

    /// base64 signature of the token value, raw or URL-encoded
    /// (`echo -n TOKEN | openssl dgst -sha256 -sign key.pem | openssl base64 -A`).
    #[arg(
        long,
        visible_alias = "custom_auth_authorizer_signature",
        value_name = "SIGNATURE",
        conflicts_with = "authorizer_private_key"
    )]
    pub(crate) authorizer_signature: Option<String>,

    /// Sign the token value here with this PEM RSA private key, instead of --authorizer-signature.
    #[arg(long, value_name = "PEM")]
    pub(crate) authorizer_private_key: Option<PathBuf>,
}

impl std::fmt::Debug for TokenArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenArgs")
            .field("authorizer_token_key_name", &self.authorizer_token_key_name)
            .field(
                "authorizer_token_key_value",
                &self.authorizer_token_key_value,
            )
            .field(
                "authorizer_signature",
                &self.authorizer_signature.as_ref().map(|_| MASK),
            )
            .field("authorizer_private_key", &self.authorizer_private_key)
            .finish()
    }
}

impl TokenArgs {
    /// No signed-token option given.
    pub(crate) fn is_empty(&self) -> bool {
        self.authorizer_token_key_name.is_none()
            && self.authorizer_token_key_value.is_none()
            && self.authorizer_signature.is_none()
            && self.authorizer_private_key.is_none()
    }

    /// Check that a token, its key name and a signature (or a key to make one) come together.
    pub(crate) fn require_complete(&self) -> Result<(), Error> {
        let mut missing = Vec::new();
        if self.authorizer_token_key_name.is_none() {
            missing.push("--authorizer-token-key-name");
        }
        if self.authorizer_token_key_value.is_none() {
            missing.push("--authorizer-token-key-value");
        }
        if self.authorizer_signature.is_none() && self.authorizer_private_key.is_none() {
            missing.push("--authorizer-signature (or --authorizer-private-key)");
        }
        if missing.is_empty() {
            Ok(())
        } else {
            Err(Error::Usage(format!(
                "a signed token needs {}",
                missing.join(", ")
            )))
        }
    }
}

/// A variable of the process environment, for the proxy settings.
#[cfg(not(test))]
fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// In this crate's unit tests the machine's proxy variables are not read: a value set on the
/// machine running them must not change what they assert (the proxy tests pass their own).
#[cfg(test)]
fn process_env(_: &str) -> Option<String> {
    None
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use clap::Parser;

    /// Every option group a sample can have, for this crate's tests (`spec.rs`'s too).
    #[derive(Parser, Debug)]
    pub(crate) struct TestArgs {
        #[command(flatten)]
        pub(crate) conn: ConnectionArgs,
        #[command(flatten)]
        pub(crate) auth: CustomAuthArgs,
        #[command(flatten)]
        pub(crate) token: TokenArgs,
    }

    pub(crate) fn parse(args: &[&str]) -> Result<TestArgs, clap::Error> {
        TestArgs::try_parse_from(std::iter::once("test").chain(args.iter().copied()))
    }

    #[test]
    fn positional_endpoint_is_the_endpoint() {
        let a = parse(&["--authorizer", "a", "abc-ats.iot.us-east-1.amazonaws.com"]).unwrap();
        assert_eq!(
            a.conn.host().unwrap(),
            "abc-ats.iot.us-east-1.amazonaws.com"
        );
        assert_eq!(a.auth.authorizer.as_deref(), Some("a"));
    }

    #[test]
    fn same_endpoint_twice_is_fine_different_ones_conflict() {
        let a = parse(&["--endpoint", "h.example", "h.example"]).unwrap();
        assert_eq!(a.conn.host().unwrap(), "h.example");
        let a = parse(&["--endpoint", "h.example", "other.example"]).unwrap();
        let e = a.conn.host().unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.cause().contains("two different endpoints"));
    }

    #[test]
    fn official_sample_flag_names_are_aliases() {
        let a = parse(&[
            "--ca_file",
            "ca.pem",
            "--client_id",
            "test-7",
            "--custom_auth_username",
            "user",
            "--custom_auth_authorizer_name",
            "auth",
            "--custom_auth_password",
            "pw",
            "--custom_auth_authorizer_signature",
            "sig",
            "--custom_auth_token_key_name",
            "key",
            "--custom_auth_token_value",
            "tok",
            "--endpoint",
            "h.example",
        ])
        .unwrap();
        assert_eq!(
            a.conn.ca_file.as_deref(),
            Some(std::path::Path::new("ca.pem"))
        );
        assert_eq!(a.conn.client_id().unwrap(), "test-7");
        assert_eq!(a.auth.username.as_deref(), Some("user"));
        assert_eq!(a.auth.authorizer.as_deref(), Some("auth"));
        assert_eq!(a.auth.password.as_deref(), Some("pw"));
        assert_eq!(a.token.authorizer_signature.as_deref(), Some("sig"));
        assert_eq!(a.token.authorizer_token_key_name.as_deref(), Some("key"));
        assert_eq!(a.token.authorizer_token_key_value.as_deref(), Some("tok"));
        let a = parse(&["--custom_auth_token_name", "key2", "h"]).unwrap();
        assert_eq!(a.token.authorizer_token_key_name.as_deref(), Some("key2"));
    }

    #[test]
    fn signature_and_private_key_conflict() {
        let e = parse(&[
            "--authorizer-signature",
            "s",
            "--authorizer-private-key",
            "k.pem",
            "h",
        ])
        .unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::ArgumentConflict);
    }

    #[test]
    fn incomplete_token_names_what_is_missing() {
        let a = parse(&["--authorizer-token-key-name", "k", "h"]).unwrap();
        let e = a.token.require_complete().unwrap_err();
        assert_eq!(
            e.cause(),
            "a signed token needs --authorizer-token-key-value, \
             --authorizer-signature (or --authorizer-private-key)"
        );
    }

    #[test]
    fn default_client_id_matches_sample_policies() {
        let a = parse(&["h"]).unwrap();
        let id = a.conn.client_id().unwrap();
        assert!(id.starts_with("test-") && id.len() == 13, "{id}");
    }

    #[test]
    fn client_ids_iot_core_would_refuse_are_usage_errors() {
        let long = "x".repeat(129);
        for bad in [long.as_str(), "$GEN/abc", ""] {
            let a = parse(&["--client-id", bad, "h"]).unwrap();
            assert_eq!(a.conn.client_id().unwrap_err().exit_code(), 2, "{bad}");
        }
        let ok = "x".repeat(128);
        let a = parse(&["--client-id", &ok, "h"]).unwrap();
        assert_eq!(a.conn.client_id().unwrap(), ok);
    }

    #[test]
    fn mqtt_version_and_limits() {
        let a = parse(&["--mqtt-version", "3.1.1", "h"]).unwrap();
        assert_eq!(a.conn.mqtt_version, MqttVersion::V311);
        assert_eq!(parse(&["h"]).unwrap().conn.mqtt_version, MqttVersion::V5);
        assert!(parse(&["--mqtt-version", "4", "h"]).is_err());
        assert!(parse(&["--keep-alive", "10", "h"]).is_err());
        assert!(parse(&["--timeout", "0", "h"]).is_err());
    }

    #[test]
    fn custom_auth_args_debug_masks_the_password() {
        let a = parse(&["--username", "alice", "--password", "hunter2-secret", "h"]).unwrap();
        let debug = format!("{:?}", a.auth);
        assert!(!debug.contains("hunter2-secret"), "{debug}");
        assert!(debug.contains(r#"password: Some("****")"#), "{debug}");
        assert!(debug.contains(r#"username: Some("alice")"#), "{debug}");
        assert!(format!("{a:?}").contains(r#"password: Some("****")"#));
    }

    #[test]
    fn token_args_debug_masks_the_signature() {
        let a = parse(&["--authorizer-signature", "c2VjcmV0LXNpZw==", "h"]).unwrap();
        let debug = format!("{:?}", a.token);
        assert!(!debug.contains("c2VjcmV0LXNpZw"), "{debug}");
        assert!(
            debug.contains(r#"authorizer_signature: Some("****")"#),
            "{debug}"
        );
    }

    fn port_help(mode: AuthMode) -> String {
        let help = command::<TestArgs>(mode)
            .term_width(200)
            .render_help()
            .to_string();
        let line = help
            .lines()
            .find(|l| l.trim_start().starts_with("--port <PORT>"))
            .unwrap_or_else(|| panic!("no --port line in {help}"));
        line.trim_start()
            .trim_start_matches("--port <PORT>")
            .trim()
            .to_string()
    }

    #[test]
    fn port_help_names_the_default_of_the_mode() {
        assert_eq!(
            port_help(AuthMode::Mtls),
            "TCP port: 8883, or 443 (which offers ALPN x-amzn-mqtt-ca) [default: 8883]"
        );
        for mode in [
            AuthMode::SigV4WebSocket,
            AuthMode::CustomAuthUnsigned,
            AuthMode::CustomAuthSigned,
        ] {
            assert_eq!(port_help(mode), "TCP port [default: 443]", "{mode:?}");
        }
    }
}
