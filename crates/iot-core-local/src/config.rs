//! The local "account": one human-readable TOML file, `iot-core-local.toml`, describing the
//! region, the server certificate, registered CAs and device certificates, SigV4 access keys,
//! custom authorizers and IoT policies. Paths in it are relative to the file's folder.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The file name `init` writes and `serve` reads.
pub const FILE_NAME: &str = "iot-core-local.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {message}", .path.display())]
    Parse { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// AWS region this endpoint pretends to be in (SigV4 scope, policy ARNs).
    pub region: String,
    /// 12-digit account id used in policy ARNs.
    pub account_id: String,
    /// Host name clients connect to (SNI); the server certificate covers it.
    pub endpoint: String,
    pub server: ServerConfig,
    #[serde(default, rename = "ca_certificate")]
    pub ca_certificates: Vec<CaCertificate>,
    #[serde(default, rename = "certificate")]
    pub certificates: Vec<Certificate>,
    #[serde(default, rename = "credentials")]
    pub credentials: Vec<AccessKey>,
    #[serde(default, rename = "authorizer")]
    pub authorizers: Vec<Authorizer>,
    /// Policy name -> IoT policy document (JSON).
    #[serde(default)]
    pub policies: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on. Loopback unless you mean to expose it.
    pub bind: String,
    /// The listener that plays port 443: ALPN routes to mTLS, custom auth or WebSocket.
    pub port_443: u16,
    /// The listener that plays port 8883: mTLS only.
    pub port_8883: u16,
    /// Server certificate chain and key (PEM) and the CA clients must trust (`--ca-file`).
    pub certificate: PathBuf,
    pub private_key: PathBuf,
    pub ca_certificate: PathBuf,
    /// How far X-Amz-Date may be from this machine's clock.
    #[serde(default = "default_skew")]
    pub clock_skew_seconds: u64,
    /// How long an authorizer function may take.
    #[serde(default = "default_authorizer_timeout")]
    pub authorizer_timeout_ms: u64,
    /// Answer a refused MQTT 3.1.1 client with CONNACK 0x05 instead of closing, for debugging.
    /// AWS IoT Core closes.
    #[serde(default)]
    pub connack_on_v311_reject: bool,
    /// Most connections accepted but not yet authenticated (TLS, upgrade, CONNECT, authorizer);
    /// more are closed as soon as they are accepted.
    #[serde(default = "default_max_pending")]
    pub max_pending_connections: usize,
}

/// Default of `max_pending_connections`.
pub const DEFAULT_MAX_PENDING: usize = 512;

fn default_skew() -> u64 {
    300
}
fn default_authorizer_timeout() -> u64 {
    5000
}
fn default_max_pending() -> usize {
    DEFAULT_MAX_PENDING
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    Active,
    Inactive,
}

/// A registered CA: device certificates it signed may connect if they are registered too, or,
/// with `auto_register_policies` (like just-in-time provisioning), with those policies.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaCertificate {
    pub id: String,
    pub certificate: PathBuf,
    pub status: Status,
    #[serde(default)]
    pub auto_register_policies: Vec<String>,
}

/// A registered device certificate with its attached policies.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Certificate {
    pub id: String,
    pub certificate: PathBuf,
    pub status: Status,
    #[serde(default)]
    pub policies: Vec<String>,
}

/// SigV4 credentials; a temporary key has a session token.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessKey {
    pub access_key_id: String,
    pub secret_access_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_token: Option<String>,
    #[serde(default)]
    pub policies: Vec<String>,
}

impl std::fmt::Debug for AccessKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessKey")
            .field("access_key_id", &self.access_key_id)
            .field("temporary", &self.session_token.is_some())
            .field("policies", &self.policies)
            .finish_non_exhaustive()
    }
}

/// A custom authorizer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Authorizer {
    pub name: String,
    pub status: Status,
    /// The account's default authorizer, used when the client names none.
    #[serde(default)]
    pub default: bool,
    /// false: the token must carry a signature that verifies against a token-signing key.
    pub signing_disabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_key_name: Option<String>,
    /// Key name -> PEM public key file (RSA, 2048 bits or more).
    #[serde(default)]
    pub token_signing_public_keys: BTreeMap<String, PathBuf>,
    /// The authorizer function: built-in rules or an external command.
    pub function: Function,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum Function {
    /// Runs `argv` with the Lambda request event as JSON on stdin; it prints the response JSON.
    Command { argv: Vec<String> },
    /// Allows what one of these rules matches; denies everything else.
    Rules { rules: Vec<Rule> },
}

/// A built-in authorizer rule: every field given must match. The response is what a Lambda
/// would return: this principal, these policies.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    pub principal_id: String,
    pub policies: Vec<String>,
    #[serde(default = "default_disconnect")]
    pub disconnect_after_seconds: u64,
    #[serde(default = "default_refresh")]
    pub refresh_after_seconds: u64,
}

fn default_disconnect() -> u64 {
    86400
}
fn default_refresh() -> u64 {
    300
}

impl Config {
    /// Read and check `<dir>/iot-core-local.toml`.
    pub fn load(dir: &Path) -> Result<Config, ConfigError> {
        let path = dir.join(FILE_NAME);
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        let config: Config = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.clone(),
            message: e.to_string(),
        })?;
        config.check()?;
        Ok(config)
    }

    /// Cross-references: every policy named exists, at most one default authorizer, signing
    /// authorizers have a token key name and keys.
    pub fn check(&self) -> Result<(), ConfigError> {
        let known = |p: &String| self.policies.contains_key(p);
        let mut named: Vec<(&str, &String)> = Vec::new();
        for c in &self.certificates {
            named.extend(c.policies.iter().map(|p| (c.id.as_str(), p)));
        }
        for c in &self.ca_certificates {
            named.extend(c.auto_register_policies.iter().map(|p| (c.id.as_str(), p)));
        }
        for k in &self.credentials {
            named.extend(k.policies.iter().map(|p| (k.access_key_id.as_str(), p)));
        }
        for a in &self.authorizers {
            if let Function::Rules { rules } = &a.function {
                for r in rules {
                    named.extend(r.policies.iter().map(|p| (a.name.as_str(), p)));
                }
            }
        }
        if let Some((owner, p)) = named.iter().find(|(_, p)| !known(p)) {
            return Err(ConfigError::Invalid(format!(
                "{owner} names policy '{p}', which is not under [policies]"
            )));
        }
        if self.authorizers.iter().filter(|a| a.default).count() > 1 {
            return Err(ConfigError::Invalid(
                "more than one authorizer has default = true".into(),
            ));
        }
        for a in &self.authorizers {
            if !a.signing_disabled
                && (a.token_key_name.is_none() || a.token_signing_public_keys.is_empty())
            {
                return Err(ConfigError::Invalid(format!(
                    "authorizer '{}' has signing enabled: it needs token_key_name and token_signing_public_keys",
                    a.name
                )));
            }
        }
        for (name, doc) in &self.policies {
            serde_json::from_str::<serde_json::Value>(doc).map_err(|e| {
                ConfigError::Invalid(format!("policy '{name}' is not valid JSON: {e}"))
            })?;
        }
        Ok(())
    }

    /// Serialize to TOML (used by `init`).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }
}
