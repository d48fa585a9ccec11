//! The local "account": one human-readable TOML file, `iot-core-local.toml`, describing the
//! region, the server certificate, registered CAs and device certificates (with the things they
//! are attached to), things, SigV4 access keys, custom authorizers and IoT policies. Paths in it
//! are relative to the file's folder.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The file name `init` writes and `serve` reads.
pub const FILE_NAME: &str = "iot-core-local.toml";

/// Why the account file cannot be used. Each variant names what to fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {source}", .path.display())]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    /// `owner` says who names it, e.g. "certificate 'test-device'".
    #[error("{owner} names policy '{policy}', which is not under [policies]")]
    UnknownPolicy { owner: String, policy: String },
    #[error("authorizers {} all have default = true: at most one authorizer may be the default", quoted(.names))]
    SeveralDefaultAuthorizers { names: Vec<String> },
    #[error("authorizer '{authorizer}' has signing enabled: it needs token_key_name and token_signing_public_keys (or signing_disabled = true)")]
    SigningWithoutKeys { authorizer: String },
    #[error("policy '{policy}' cannot be used: {problem}")]
    InvalidPolicy {
        policy: String,
        problem: crate::policy::DocumentError,
    },
    #[error(
        "certificate '{certificate}' is attached to thing '{thing}', which is not a [[thing]]"
    )]
    UnknownThing { certificate: String, thing: String },
    #[error("thing '{0}' is declared twice")]
    DuplicateThing(String),
    #[error("thing name '{0}' is not valid: 1 to 128 characters from a-z A-Z 0-9 : _ - (as AWS IoT requires)")]
    InvalidThingName(String),
    #[error("cannot write the account as TOML: {0}")]
    Serialize(#[from] toml::ser::Error),
}

fn quoted(names: &[String]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("'{n}'")).collect();
    quoted.join(", ")
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
    /// The thing registry; a certificate's `things` attaches it to some of them.
    #[serde(default, rename = "thing")]
    pub things: Vec<Thing>,
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

/// A registered device certificate with its attached policies and things.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Certificate {
    pub id: String,
    pub certificate: PathBuf,
    pub status: Status,
    #[serde(default)]
    pub policies: Vec<String>,
    /// Names of the `[[thing]]`s this certificate is attached to (`attach-thing-principal`,
    /// non-exclusive): a connection whose client id is one of them has that thing's
    /// `iot:Connection.Thing.*` policy variables.
    #[serde(default)]
    pub things: Vec<String>,
}

/// A thing of the registry: its name, thing type and attributes, as `create-thing` sets them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Thing {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thing_type: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
}

/// AWS IoT's thing name rule: `[a-zA-Z0-9:_-]+`, at most 128 characters.
fn is_thing_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'_' | b'-'))
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
/// would return: this principal, these policies. `Debug` leaves out the password and the token.
#[derive(Clone, Serialize, Deserialize)]
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

impl std::fmt::Debug for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redacted = |secret: &Option<String>| secret.as_ref().map(|_| "<redacted>");
        f.debug_struct("Rule")
            .field("username", &self.username)
            .field("password", &redacted(&self.password))
            .field("token", &redacted(&self.token))
            .field("principal_id", &self.principal_id)
            .field("policies", &self.policies)
            .field("disconnect_after_seconds", &self.disconnect_after_seconds)
            .field("refresh_after_seconds", &self.refresh_after_seconds)
            .finish()
    }
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
        let config: Config =
            toml::from_str(&text).map_err(|source| ConfigError::Parse { path, source })?;
        config.check()?;
        Ok(config)
    }

    /// Cross-references: every policy named exists, at most one default authorizer, signing
    /// authorizers have a token key name and keys, every policy is a document the
    /// policy engine evaluates as AWS does (nothing unsupported in it).
    pub fn check(&self) -> Result<(), ConfigError> {
        let mut named: Vec<(String, &String)> = Vec::new();
        for c in &self.certificates {
            let owner = format!("certificate '{}'", c.id);
            named.extend(c.policies.iter().map(|p| (owner.clone(), p)));
        }
        for c in &self.ca_certificates {
            let owner = format!("CA certificate '{}' (auto_register_policies)", c.id);
            named.extend(c.auto_register_policies.iter().map(|p| (owner.clone(), p)));
        }
        for k in &self.credentials {
            let owner = format!("access key {}", k.access_key_id);
            named.extend(k.policies.iter().map(|p| (owner.clone(), p)));
        }
        for a in &self.authorizers {
            if let Function::Rules { rules } = &a.function {
                let owner = format!("a rule of authorizer '{}'", a.name);
                for r in rules {
                    named.extend(r.policies.iter().map(|p| (owner.clone(), p)));
                }
            }
        }
        if let Some((owner, policy)) = named
            .into_iter()
            .find(|(_, p)| !self.policies.contains_key(*p))
        {
            return Err(ConfigError::UnknownPolicy {
                owner,
                policy: policy.clone(),
            });
        }
        self.check_things()?;
        let defaults: Vec<String> = self
            .authorizers
            .iter()
            .filter(|a| a.default)
            .map(|a| a.name.clone())
            .collect();
        if defaults.len() > 1 {
            return Err(ConfigError::SeveralDefaultAuthorizers { names: defaults });
        }
        for a in &self.authorizers {
            if !a.signing_disabled
                && (a.token_key_name.is_none() || a.token_signing_public_keys.is_empty())
            {
                return Err(ConfigError::SigningWithoutKeys {
                    authorizer: a.name.clone(),
                });
            }
        }
        for (name, doc) in &self.policies {
            crate::policy::PolicySet::parse(&[doc]).map_err(|e| ConfigError::InvalidPolicy {
                policy: name.clone(),
                problem: e.problem,
            })?;
        }
        Ok(())
    }

    /// Thing names are valid and unique, and every certificate's things exist.
    fn check_things(&self) -> Result<(), ConfigError> {
        let mut seen = std::collections::BTreeSet::new();
        for t in &self.things {
            if !is_thing_name(&t.name) {
                return Err(ConfigError::InvalidThingName(t.name.clone()));
            }
            if !seen.insert(t.name.as_str()) {
                return Err(ConfigError::DuplicateThing(t.name.clone()));
            }
        }
        for c in &self.certificates {
            if let Some(thing) = c.things.iter().find(|t| !seen.contains(t.as_str())) {
                return Err(ConfigError::UnknownThing {
                    certificate: c.id.clone(),
                    thing: thing.clone(),
                });
            }
        }
        Ok(())
    }

    /// The thing named `name`, if the registry has it.
    pub fn thing(&self, name: &str) -> Option<&Thing> {
        self.things.iter().find(|t| t.name == name)
    }

    /// Serialize to TOML (used by `init`).
    pub fn to_toml(&self) -> Result<String, ConfigError> {
        Ok(toml::to_string_pretty(self)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{DocumentError, StatementError, Unsupported};

    const POLICY: &str = r#"{"Version":"2012-10-17","Statement":[]}"#;

    fn rule(policies: &[&str]) -> Rule {
        Rule {
            username: Some("demo-user".into()),
            password: Some("PASSWORD-SECRET".into()),
            token: Some("TOKEN-SECRET".into()),
            principal_id: "demoUser".into(),
            policies: policies.iter().map(|p| p.to_string()).collect(),
            disconnect_after_seconds: 86400,
            refresh_after_seconds: 300,
        }
    }

    fn authorizer(name: &str, default: bool) -> Authorizer {
        Authorizer {
            name: name.into(),
            status: Status::Active,
            default,
            signing_disabled: true,
            token_key_name: None,
            token_signing_public_keys: BTreeMap::new(),
            function: Function::Rules {
                rules: vec![rule(&["p"])],
            },
        }
    }

    /// A small account that passes `check`: one of everything that names a policy.
    fn valid() -> Config {
        Config {
            region: "us-east-1".into(),
            account_id: "123456789012".into(),
            endpoint: "localhost".into(),
            server: ServerConfig {
                bind: "127.0.0.1".into(),
                port_443: 0,
                port_8883: 0,
                certificate: "server.pem".into(),
                private_key: "server.key".into(),
                ca_certificate: "server-ca.pem".into(),
                clock_skew_seconds: 300,
                authorizer_timeout_ms: 5000,
                connack_on_v311_reject: false,
                max_pending_connections: DEFAULT_MAX_PENDING,
            },
            ca_certificates: vec![CaCertificate {
                id: "device-ca".into(),
                certificate: "device-ca.pem".into(),
                status: Status::Active,
                auto_register_policies: vec!["p".into()],
            }],
            certificates: vec![Certificate {
                id: "test-device".into(),
                certificate: "device.pem".into(),
                status: Status::Active,
                policies: vec!["p".into()],
                things: vec!["lamp".into()],
            }],
            things: vec![Thing {
                name: "lamp".into(),
                thing_type: Some("light".into()),
                attributes: BTreeMap::from([("room".to_string(), "kitchen".to_string())]),
            }],
            credentials: vec![AccessKey {
                access_key_id: "AKIAEXAMPLE".into(),
                secret_access_key: "SECRET-ACCESS-KEY".into(),
                session_token: Some("SESSION-TOKEN-SECRET".into()),
                policies: vec!["p".into()],
            }],
            authorizers: vec![authorizer("a1", true), authorizer("a2", false)],
            policies: BTreeMap::from([("p".to_string(), POLICY.to_string())]),
        }
    }

    #[test]
    fn a_valid_account_passes_and_round_trips_through_toml() {
        let config = valid();
        config.check().expect("valid");
        let text = config.to_toml().expect("serializes");
        let back: Config = toml::from_str(&text).expect("parses back");
        back.check().expect("still valid");
        assert_eq!(back.authorizers.len(), 2);
        assert_eq!(back.credentials[0].secret_access_key, "SECRET-ACCESS-KEY");
    }

    #[test]
    fn check_names_each_owner_of_an_unknown_policy() {
        type BreakIt = fn(&mut Config);
        let cases: [(&str, BreakIt); 4] = [
            ("certificate 'test-device'", |c| {
                c.certificates[0].policies = vec!["missing".into()]
            }),
            ("CA certificate 'device-ca' (auto_register_policies)", |c| {
                c.ca_certificates[0].auto_register_policies = vec!["missing".into()]
            }),
            ("access key AKIAEXAMPLE", |c| {
                c.credentials[0].policies = vec!["missing".into()]
            }),
            ("a rule of authorizer 'a2'", |c| {
                c.authorizers[1].function = Function::Rules {
                    rules: vec![rule(&["p", "missing"])],
                }
            }),
        ];
        for (owner, break_it) in cases {
            let mut config = valid();
            break_it(&mut config);
            let err = config.check().expect_err(owner);
            assert!(
                matches!(&err, ConfigError::UnknownPolicy { owner: o, policy } if o == owner && policy == "missing"),
                "{err:?}"
            );
            assert_eq!(
                err.to_string(),
                format!("{owner} names policy 'missing', which is not under [policies]")
            );
        }
    }

    #[test]
    fn things_round_trip_and_check_refuses_unknown_duplicate_and_invalid_ones() {
        let config = valid();
        let text = config.to_toml().expect("serializes");
        assert!(
            text.contains("[[thing]]\nname = \"lamp\"\nthing_type = \"light\"\n"),
            "{text}"
        );
        let back: Config = toml::from_str(&text).expect("parses back");
        assert_eq!(back.things, config.things);
        assert_eq!(back.certificates[0].things, ["lamp"]);
        assert_eq!(
            back.thing("lamp").map(|t| &t.attributes["room"]),
            Some(&"kitchen".to_string())
        );
        assert_eq!(back.thing("Lamp"), None, "names are case-sensitive");

        let mut unknown = valid();
        unknown.certificates[0].things.push("fan".into());
        let err = unknown.check().expect_err("unknown thing");
        assert!(
            matches!(&err, ConfigError::UnknownThing { certificate, thing } if certificate == "test-device" && thing == "fan"),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "certificate 'test-device' is attached to thing 'fan', which is not a [[thing]]"
        );

        let mut twice = valid();
        twice.things.push(twice.things[0].clone());
        let err = twice.check().expect_err("duplicate");
        assert_eq!(err.to_string(), "thing 'lamp' is declared twice");

        for bad in ["", "has space", "a/b", "$GEN", &"x".repeat(129)] {
            let mut invalid = valid();
            invalid.things[0].name = bad.to_string();
            invalid.certificates[0].things.clear();
            let err = invalid.check().expect_err(bad);
            assert!(
                matches!(&err, ConfigError::InvalidThingName(n) if n == bad),
                "{bad}: {err:?}"
            );
        }
        let mut fine = valid();
        fine.things[0].name = "Lamp_1:kitchen-2".into();
        fine.certificates[0].things = vec!["Lamp_1:kitchen-2".into()];
        fine.check().expect("a valid thing name");
    }

    #[test]
    fn check_refuses_two_default_authorizers() {
        let mut config = valid();
        config.authorizers[1].default = true;
        let err = config.check().expect_err("two defaults");
        assert!(
            matches!(&err, ConfigError::SeveralDefaultAuthorizers { names } if names == &["a1", "a2"]),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "authorizers 'a1', 'a2' all have default = true: at most one authorizer may be the default"
        );
    }

    #[test]
    fn check_refuses_signing_without_a_token_key_name_or_keys() {
        let mut no_name = valid();
        no_name.authorizers[1].signing_disabled = false;
        no_name.authorizers[1].token_signing_public_keys =
            BTreeMap::from([("k".to_string(), PathBuf::from("k.pem"))]);
        let mut no_keys = valid();
        no_keys.authorizers[1].signing_disabled = false;
        no_keys.authorizers[1].token_key_name = Some("token".into());
        for config in [no_name, no_keys] {
            let err = config.check().expect_err("signing without keys");
            assert!(
                matches!(&err, ConfigError::SigningWithoutKeys { authorizer } if authorizer == "a2"),
                "{err:?}"
            );
            assert_eq!(
                err.to_string(),
                "authorizer 'a2' has signing enabled: it needs token_key_name and token_signing_public_keys (or signing_disabled = true)"
            );
        }
    }

    #[test]
    fn check_refuses_a_policy_that_is_not_json() {
        let mut config = valid();
        config
            .policies
            .insert("broken".into(), "{\"Version\": ".into());
        let err = config.check().expect_err("not JSON");
        assert!(
            matches!(&err, ConfigError::InvalidPolicy { policy, problem: DocumentError::NotJson { .. } } if policy == "broken"),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .starts_with("policy 'broken' cannot be used: not valid JSON: EOF while parsing"),
            "{err}"
        );
    }

    #[test]
    fn check_refuses_a_policy_with_what_the_engine_does_not_support() {
        let mut config = valid();
        config.policies.insert(
            "conditional".into(),
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:Connect","Resource":"*","Condition":{"DateGreaterThan":{"aws:CurrentTime":"2020-01-01T00:00:00Z"}}}]}"#.into(),
        );
        let err = config.check().expect_err("unsupported operator");
        assert_eq!(
            err.to_string(),
            "policy 'conditional' cannot be used: statement 1: the condition operator \
             \"DateGreaterThan\" is not supported by iot-core-local, so the document is refused \
             rather than evaluated differently from AWS"
        );

        let mut config = valid();
        config.policies.insert(
            "variable".into(),
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:Publish","Resource":"arn:aws:iot:us-east-1:123456789012:topic/${iot:Connection.Thing.IsAttached}"}]}"#.into(),
        );
        let err = config.check().expect_err("unsupported variable");
        assert!(
            matches!(
                &err,
                ConfigError::InvalidPolicy {
                    policy,
                    problem: DocumentError::Statement {
                        statement: 1,
                        problem: StatementError::Unsupported(Unsupported::Variable(v)),
                    },
                } if policy == "variable" && v == "iot:Connection.Thing.IsAttached"
            ),
            "{err:?}"
        );
    }

    #[test]
    fn load_reports_a_missing_file_and_bad_toml_with_the_path() {
        let dir = std::env::temp_dir().join(format!("config-load-{}", uuid::Uuid::new_v4()));
        let err = Config::load(&dir).expect_err("no file");
        assert!(matches!(&err, ConfigError::Read { path, .. } if path == &dir.join(FILE_NAME)));
        assert!(
            err.to_string()
                .starts_with(&format!("cannot read {}: ", dir.join(FILE_NAME).display())),
            "{err}"
        );
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::write(
            dir.join(FILE_NAME),
            "region = \"us-east-1\"\nnot toml at all\n",
        )
        .expect("write");
        let err = Config::load(&dir).expect_err("bad TOML");
        assert!(matches!(&err, ConfigError::Parse { .. }), "{err:?}");
        assert!(
            err.to_string()
                .starts_with(&format!("{}: ", dir.join(FILE_NAME).display())),
            "{err}"
        );
        // A parsed file is checked too.
        let mut config = valid();
        config.authorizers[1].default = true;
        let text = config.to_toml().expect("serializes");
        std::fs::write(dir.join(FILE_NAME), text).expect("write");
        assert!(matches!(
            Config::load(&dir),
            Err(ConfigError::SeveralDefaultAuthorizers { .. })
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn debug_shows_no_secret() {
        let config = valid();
        let shown = format!("{config:?}");
        for secret in [
            "PASSWORD-SECRET",
            "TOKEN-SECRET",
            "SECRET-ACCESS-KEY",
            "SESSION-TOKEN-SECRET",
        ] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        let rule = format!("{:?}", rule(&["p"]));
        assert!(
            rule.contains("username: Some(\"demo-user\")")
                && rule.contains("password: Some(\"<redacted>\")")
                && rule.contains("token: Some(\"<redacted>\")"),
            "{rule}"
        );
        let no_password = Rule {
            password: None,
            ..super::tests::rule(&[])
        };
        assert!(format!("{no_password:?}").contains("password: None"));
    }
}
