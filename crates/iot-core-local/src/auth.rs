//! Steps 4 and 5: authenticate the CONNECT (certificate, SigV4 key, or custom authorizer) and
//! authorize it (`iot:Connect` on `client/<clientId>` in the principal's policies). An allowed
//! connection keeps its parsed policies and facts, which the broker's data plane evaluates.
//!
//! Every decision carries its reason, which the server logs at info level, e.g.
//! `denied: signature did not verify against any token-signing key of authorizer X`.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use rustls::pki_types::CertificateDer;

use crate::config::{AccessKey, Config};
use crate::custom_auth::{self, Denial as AuthorizerDenial, EventInput};
use crate::mqtt::connect::ASSIGNED_ID_PREFIX;
use crate::mqtt::Connect;
use crate::mtls::Registry;
use crate::policy::{Action, ConnectAttributes, Facts, PolicySet, Thing};
use crate::renewal::Renewal;
use crate::tls::Route;
use crate::websocket::Upgrade;
use crate::x509::certificate_names;

/// MQTT 5 CONNACK reason codes IoT Core uses to refuse (reference §4).
pub mod reason {
    pub const CLIENT_ID_NOT_VALID: u8 = 0x85;
    pub const BAD_USERNAME_OR_PASSWORD: u8 = 0x86;
    pub const NOT_AUTHORIZED: u8 = 0x87;
    pub const SERVER_UNAVAILABLE: u8 = 0x88;
}

/// What the connection presented before CONNECT.
pub struct Context<'a> {
    pub route: Route,
    /// The client's address, `aws:SourceIp` in policy conditions.
    pub peer_ip: IpAddr,
    pub server_name: Option<&'a str>,
    pub peer_certs: Option<&'a [CertificateDer<'static>]>,
    /// The WebSocket upgrade request, for WebSocket connections.
    pub http: Option<&'a Upgrade>,
    /// The access key whose SigV4 signature verified at the upgrade.
    pub sigv4_key: Option<&'a AccessKey>,
}

/// Who authenticated, and what decides their actions.
struct Authenticated {
    /// As logged.
    principal: String,
    /// See [`Outcome::Allowed`].
    principal_id: String,
    documents: Vec<String>,
    /// The things the certificate is attached to (mTLS only).
    things: Vec<String>,
    renewal: Option<Renewal>,
}

/// The outcome of one CONNECT.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// `policies` and `facts` decide the connection's data-plane actions.
    Allowed {
        principal: String,
        /// `principalIdentifier` in lifecycle events: the certificate id (64 hex digits), the
        /// access key id, or the authorizer's principalId.
        principal_id: String,
        policies: PolicySet,
        facts: Box<Facts>,
        /// A custom authorizer's connection: how to ask it again while the connection is up.
        renewal: Option<Box<Renewal>>,
    },
    Denied {
        code: u8,
        reason: String,
    },
}

/// What authentication needs from the account, loaded once at start.
pub struct Authenticator {
    pub config: Config,
    pub registry: Registry,
    /// Authorizer name -> its token-signing public keys.
    pub keys: BTreeMap<String, Vec<(String, rsa::RsaPublicKey)>>,
}

impl Authenticator {
    pub async fn decide(&self, ctx: &Context<'_>, connect: &Connect) -> Outcome {
        let id = &connect.client_id;
        if id.is_empty() {
            // MQTT 5 ids are assigned before this step (`Connect::assign_client_id`).
            return denied(
                reason::CLIENT_ID_NOT_VALID,
                "the client id is empty (MQTT 3.1.1: identifier rejected; only MQTT 5 gets an \
                 assigned $GEN/ id)"
                    .into(),
            );
        }
        if id.len() > 128 {
            return denied(
                reason::CLIENT_ID_NOT_VALID,
                format!("the client id is {} bytes, more than 128", id.len()),
            );
        }
        if id.starts_with(ASSIGNED_ID_PREFIX) && !connect.assigned_client_id {
            return denied(
                reason::CLIENT_ID_NOT_VALID,
                "the client id starts with $GEN/".into(),
            );
        }

        let Authenticated {
            principal,
            principal_id,
            documents,
            things,
            renewal,
        } = match self.authenticate(ctx, connect).await {
            Ok(found) => found,
            Err((code, reason)) => return denied(code, reason),
        };
        let policies = match PolicySet::parse(&documents) {
            Ok(policies) => policies,
            Err(e) => return denied(reason::NOT_AUTHORIZED, format!("{principal}: {e}")),
        };
        let facts = Facts {
            region: self.config.region.clone(),
            account_id: self.config.account_id.clone(),
            client_id: id.clone(),
            source_ip: Some(ctx.peer_ip),
            certificate: match ctx.route {
                Route::Mtls => ctx
                    .peer_certs
                    .and_then(<[_]>::first)
                    .and_then(|leaf| certificate_names(leaf)),
                _ => None,
            },
            thing: attached_thing(&self.config, &things, id),
            connect: ConnectAttributes {
                persistent: persistent_session(connect),
                last_will_topic: connect.will.as_ref().map(|w| w.topic.clone()),
            },
        };
        let verdict = policies.evaluate(Action::Connect, id, &facts);
        if verdict.is_allowed() {
            Outcome::Allowed {
                principal,
                principal_id,
                policies,
                facts: Box::new(facts),
                renewal: renewal.map(Box::new),
            }
        } else {
            denied(reason::NOT_AUTHORIZED, format!("{principal}: {verdict}"))
        }
    }

    /// Who is connecting, and what applies to them.
    async fn authenticate(
        &self,
        ctx: &Context<'_>,
        connect: &Connect,
    ) -> Result<Authenticated, (u8, String)> {
        match ctx.route {
            Route::Mtls => {
                let identity = self
                    .registry
                    .authenticate(ctx.peer_certs)
                    .map_err(|e| (reason::NOT_AUTHORIZED, e.to_string()))?;
                Ok(Authenticated {
                    principal: identity.principal,
                    principal_id: identity.certificate_id,
                    documents: self.documents(&identity.policies),
                    things: identity.things,
                    renewal: None,
                })
            }
            Route::WebSocket if ctx.sigv4_key.is_some() => {
                let key = ctx.sigv4_key.expect("checked above");
                Ok(Authenticated {
                    principal: format!("access key {}", key.access_key_id),
                    principal_id: key.access_key_id.clone(),
                    documents: self.documents(&key.policies),
                    things: Vec::new(),
                    renewal: None,
                })
            }
            Route::CustomAuth | Route::WebSocket => self.custom_auth(ctx, connect).await,
        }
    }

    async fn custom_auth(
        &self,
        ctx: &Context<'_>,
        connect: &Connect,
    ) -> Result<Authenticated, (u8, String)> {
        let not_authorized = |d: AuthorizerDenial| (reason::NOT_AUTHORIZED, d.to_string());
        // IoT Core finds the account, so its authorizers, by the endpoint name in SNI (connection
        // reference §1): without it, no authorizer runs.
        let Some(server_name) = ctx.server_name else {
            return Err(not_authorized(AuthorizerDenial::NoServerName));
        };
        let mut presented = connect
            .username
            .as_deref()
            .map(custom_auth::from_username)
            .unwrap_or_default();
        if let Some(http) = ctx.http {
            presented = custom_auth::from_http(&http.headers, &http.raw_query).merge(presented);
        }
        let authorizer = custom_auth::select_authorizer(&self.config.authorizers, &presented)
            .map_err(not_authorized)?;
        let keys = self
            .keys
            .get(&authorizer.name)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let checked =
            custom_auth::check_token(authorizer, keys, &presented).map_err(not_authorized)?;

        let http = ctx
            .http
            .map(|h| (h.headers.as_slice(), h.raw_query.as_str()));
        let event = custom_auth::lambda_event(&EventInput {
            token: checked.token,
            signature_verified: checked.signature_verified,
            server_name: Some(server_name),
            http,
            username: connect.username.as_deref(),
            password: connect.password.as_deref(),
            // The event carries the id only when the client sent one.
            client_id: if connect.assigned_client_id {
                ""
            } else {
                &connect.client_id
            },
        });
        let timeout = Duration::from_millis(self.config.server.authorizer_timeout_ms);
        let response = custom_auth::invoke(authorizer, &self.config.policies, &event, timeout)
            .await
            .map_err(not_authorized)?;
        if !response.is_authenticated {
            return Err((
                reason::BAD_USERNAME_OR_PASSWORD,
                AuthorizerDenial::FunctionDenied {
                    authorizer: authorizer.name.clone(),
                }
                .to_string(),
            ));
        }
        Ok(Authenticated {
            principal: format!(
                "principal {} of authorizer {}",
                response.principal_id, authorizer.name
            ),
            principal_id: response.principal_id,
            documents: response.policy_documents,
            things: Vec::new(),
            renewal: Some(Renewal {
                authorizer: authorizer.name.clone(),
                event,
                refresh_after_seconds: response.refresh_after_seconds,
                disconnect_after_seconds: response.disconnect_after_seconds,
            }),
        })
    }

    fn documents(&self, names: &[String]) -> Vec<String> {
        names
            .iter()
            .filter_map(|n| self.config.policies.get(n).cloned())
            .collect()
    }
}

/// The thing variables of a connection (data-plane reference §1.3): the thing attached to the
/// certificate whose name is the client id (attachments are non-exclusive), if any.
fn attached_thing(config: &Config, attached: &[String], client_id: &str) -> Option<Thing> {
    if !attached.iter().any(|t| t == client_id) {
        return None;
    }
    let thing = config.thing(client_id)?;
    Some(Thing {
        name: thing.name.clone(),
        type_name: thing.thing_type.clone(),
        attributes: thing.attributes.clone(),
    })
}

/// `iot:ConnectAttributes` `PersistentConnect`: 3.1.1 without clean session, or MQTT 5 without
/// clean start and with a session expiry.
fn persistent_session(connect: &Connect) -> bool {
    match connect.version {
        crate::mqtt::Version::V311 => !connect.clean_start,
        crate::mqtt::Version::V5 => !connect.clean_start && connect.properties.session_expiry > 0,
    }
}

fn denied(code: u8, reason: String) -> Outcome {
    Outcome::Denied { code, reason }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mqtt::connect::ConnectProperties;
    use crate::mqtt::Version;

    fn connect(version: Version, clean_start: bool, session_expiry: u32) -> Connect {
        Connect {
            version,
            client_id: "c".into(),
            assigned_client_id: false,
            username: None,
            password: None,
            keep_alive: 30,
            clean_start,
            will: None,
            properties: ConnectProperties {
                session_expiry,
                ..ConnectProperties::default()
            },
        }
    }

    #[test]
    fn a_thing_is_the_connections_only_when_attached_and_named_by_the_client_id() {
        let mut config: Config = toml::from_str(
            r#"
            region = "us-east-1"
            account_id = "123456789012"
            endpoint = "localhost"
            [server]
            bind = "127.0.0.1"
            port_443 = 0
            port_8883 = 0
            certificate = "server.pem"
            private_key = "server.key"
            ca_certificate = "server-ca.pem"
            [[thing]]
            name = "lamp"
            thing_type = "light"
            attributes = { room = "kitchen" }
            [[thing]]
            name = "fan"
            "#,
        )
        .expect("account");
        let attached = ["lamp".to_string(), "fan".to_string()];
        assert_eq!(
            attached_thing(&config, &attached, "lamp"),
            Some(Thing {
                name: "lamp".into(),
                type_name: Some("light".into()),
                attributes: [("room".to_string(), "kitchen".to_string())].into(),
            })
        );
        assert_eq!(
            attached_thing(&config, &attached, "fan"),
            Some(Thing {
                name: "fan".into(),
                ..Thing::default()
            })
        );
        assert_eq!(
            attached_thing(&config, &attached, "test-1"),
            None,
            "another client id"
        );
        assert_eq!(attached_thing(&config, &attached, "Lamp"), None, "case");
        assert_eq!(
            attached_thing(&config, &attached[1..], "lamp"),
            None,
            "a thing not attached to this certificate"
        );
        config.things.clear();
        assert_eq!(attached_thing(&config, &attached, "lamp"), None);
    }

    #[test]
    fn a_persistent_session_is_asked_for_as_each_version_says() {
        assert!(persistent_session(&connect(Version::V311, false, 0)));
        assert!(!persistent_session(&connect(Version::V311, true, 0)));
        assert!(persistent_session(&connect(Version::V5, false, 60)));
        assert!(!persistent_session(&connect(Version::V5, false, 0)));
        assert!(!persistent_session(&connect(Version::V5, true, 60)));
    }
}
