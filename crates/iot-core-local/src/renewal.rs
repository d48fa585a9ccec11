//! Step 5 again, on a live custom-auth connection (data-plane reference §1.4; issue 9 choices,
//! "Custom authorizer on live connections"):
//!
//! - after `refreshAfterInSeconds` the authorizer is asked again with the same event; its new
//!   `policyDocuments` replace the old ones for every later check, and `iot:Connect` is evaluated
//!   again. A denial, a failure, or `iot:Connect` no longer allowed closes the connection
//!   (`AUTH_ERROR`);
//! - `disconnectAfterInSeconds` after CONNACK the connection is closed
//!   (`CUSTOMAUTH_TTL_EXPIRATION`); a refresh does not extend it.
//!
//! [`keep_authorized`] is a future that runs beside the connection and is dropped with it, so
//! nothing outlives the connection; every authorizer call keeps its own limits (the command's
//! timeout and bounded output).

use std::fmt;
use std::time::Duration;

use serde_json::Value;
use tokio::time::{sleep_until, Instant};

use crate::broker::{Policies, RevokeCause, Revoked};
use crate::config::Config;
use crate::custom_auth::{self, Denial};
use crate::policy::{Action, PolicySet};

/// What the authorizer answered at CONNECT, and what it takes to ask it again.
#[derive(Clone)]
pub struct Renewal {
    /// The authorizer's name in the account.
    pub authorizer: String,
    /// The Lambda request event of the CONNECT. It carries the token and password: never log it.
    pub event: Value,
    pub refresh_after_seconds: u64,
    pub disconnect_after_seconds: u64,
}

impl fmt::Debug for Renewal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Renewal")
            .field("authorizer", &self.authorizer)
            .field("event", &"<redacted>")
            .field("refresh_after_seconds", &self.refresh_after_seconds)
            .field("disconnect_after_seconds", &self.disconnect_after_seconds)
            .finish()
    }
}

/// Why a refresh did not keep the connection authorized.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RefreshError {
    #[error("authorizer '{0}' is no longer in the account")]
    AuthorizerGone(String),
    #[error(transparent)]
    Authorizer(#[from] Denial),
    #[error("authorizer '{authorizer}' returned policies that cannot be used: {reason}")]
    InvalidPolicies {
        authorizer: String,
        reason: crate::policy::PolicyError,
    },
    #[error("authorizer '{authorizer}': {verdict}")]
    ConnectDenied { authorizer: String, verdict: String },
}

/// Keep `plane` authorized as the authorizer says until it is revoked (then this returns), for
/// a connection whose CONNACK is being sent now. `second` is how long one of the authorizer's
/// seconds lasts: 1 s, shorter only in tests. `who` names the connection in log lines.
pub async fn keep_authorized(
    config: &Config,
    renewal: &Renewal,
    plane: &Policies,
    who: &str,
    second: Duration,
) {
    let start = Instant::now();
    let after = |seconds: u64| second.saturating_mul(u32::try_from(seconds).unwrap_or(u32::MAX));
    let expiry = start + after(renewal.disconnect_after_seconds);
    let mut refresh_at = start + after(renewal.refresh_after_seconds);
    let expired = || Revoked {
        cause: RevokeCause::Expired,
        why: format!(
            "disconnectAfterInSeconds ({} s) of authorizer '{}' elapsed",
            renewal.disconnect_after_seconds, renewal.authorizer
        ),
    };
    let timeout = Duration::from_millis(config.server.authorizer_timeout_ms);
    loop {
        tokio::select! {
            biased;
            _ = sleep_until(expiry) => return plane.revoke(expired()),
            _ = sleep_until(refresh_at) => {}
        }
        let refreshed = tokio::select! {
            biased;
            _ = sleep_until(expiry) => return plane.revoke(expired()),
            r = refresh(config, renewal, plane, timeout) => r,
        };
        match refreshed {
            Ok(next) => {
                log::info!(
                    "{who}: authorizer '{}' refreshed the connection's policies; next refresh in {next} s",
                    renewal.authorizer
                );
                refresh_at = Instant::now() + after(next);
            }
            Err(e) => {
                return plane.revoke(Revoked {
                    cause: RevokeCause::RefreshFailed,
                    why: format!("refreshAfterInSeconds elapsed, and the refresh failed: {e}"),
                })
            }
        }
    }
}

/// Ask the authorizer again; on success its policies replace the connection's, and the answer
/// is its next `refreshAfterInSeconds`.
async fn refresh(
    config: &Config,
    renewal: &Renewal,
    plane: &Policies,
    timeout: Duration,
) -> Result<u64, RefreshError> {
    let name = &renewal.authorizer;
    let authorizer = config
        .authorizers
        .iter()
        .find(|a| &a.name == name)
        .ok_or_else(|| RefreshError::AuthorizerGone(name.clone()))?;
    let response =
        custom_auth::invoke(authorizer, &config.policies, &renewal.event, timeout).await?;
    if !response.is_authenticated {
        return Err(Denial::FunctionDenied {
            authorizer: name.clone(),
        }
        .into());
    }
    let policies = PolicySet::parse(&response.policy_documents).map_err(|reason| {
        RefreshError::InvalidPolicies {
            authorizer: name.clone(),
            reason,
        }
    })?;
    let facts = plane.facts();
    let verdict = policies.evaluate(Action::Connect, &facts.client_id, facts);
    if !verdict.is_allowed() {
        return Err(RefreshError::ConnectDenied {
            authorizer: name.clone(),
            verdict: verdict.to_string(),
        });
    }
    plane.replace(policies);
    Ok(response.refresh_after_seconds)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::{Action as BrokerAction, DataPlane};
    use crate::config::{Authorizer, Function, Rule, Status};
    use crate::policy::Facts;

    const ARN: &str = "arn:aws:iot:us-east-1:123456789012";

    fn policy(connect: &str, publish: &str) -> String {
        format!(
            r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Action":"iot:Connect","Resource":"{ARN}:client/{connect}"}},{{"Effect":"Allow","Action":"iot:Publish","Resource":"{ARN}:topic/{publish}"}}]}}"#
        )
    }

    /// An account whose authorizer `a` answers user `u` with policy `p`, refreshing after
    /// `refresh` seconds and closing after `disconnect`.
    fn account(p: &str, refresh: u64, disconnect: u64) -> Config {
        let text = r#"
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
        "#;
        let mut config: Config = toml::from_str(text).expect("minimal account");
        config.policies.insert("p".into(), p.into());
        config.authorizers = vec![Authorizer {
            name: "a".into(),
            status: Status::Active,
            default: true,
            signing_disabled: true,
            token_key_name: None,
            token_signing_public_keys: Default::default(),
            function: Function::Rules {
                rules: vec![Rule {
                    username: Some("u".into()),
                    password: None,
                    token: None,
                    principal_id: "p1".into(),
                    policies: vec!["p".into()],
                    disconnect_after_seconds: disconnect,
                    refresh_after_seconds: refresh,
                }],
            },
        }];
        config
    }

    fn plane(p: &str) -> Policies {
        Policies::new(
            PolicySet::parse(&[p]).expect("valid"),
            Facts {
                region: "us-east-1".into(),
                account_id: "123456789012".into(),
                client_id: "dev".into(),
                ..Facts::default()
            },
        )
    }

    fn renewal(user: &str, refresh: u64, disconnect: u64) -> Renewal {
        Renewal {
            authorizer: "a".into(),
            event: serde_json::json!({"protocolData": {"mqtt": {"username": user}}}),
            refresh_after_seconds: refresh,
            disconnect_after_seconds: disconnect,
        }
    }

    #[test]
    fn debug_shows_no_event() {
        let mut r = renewal("u", 300, 3600);
        r.event = serde_json::json!({"token": "TOKEN-SECRET"});
        let shown = format!("{r:?}");
        assert!(!shown.contains("TOKEN-SECRET"), "{shown}");
        assert!(shown.contains("event: \"<redacted>\""), "{shown}");
    }

    /// One authorizer second lasts a millisecond here: 300 s pass in 0.3 s.
    const SECOND: Duration = Duration::from_millis(1);

    #[tokio::test]
    async fn refreshes_replace_the_policies_until_disconnect_after_elapses() {
        let config = account(&policy("dev", "narrow"), 300, 2000);
        let p = plane(&policy("dev", "*"));
        let started = Instant::now();
        let r = renewal("u", 300, 2000);
        let keep = keep_authorized(&config, &r, &p, "t", SECOND);
        // Until the first refresh, the CONNECT's policies apply.
        assert_eq!(p.check(BrokerAction::Publish, "wide"), Ok(()));
        keep.await;
        assert!(started.elapsed() >= SECOND * 2000);
        assert!(p.check(BrokerAction::Publish, "wide").is_err(), "refreshed");
        assert_eq!(p.check(BrokerAction::Publish, "narrow"), Ok(()));
        let revoked = p.revoked().expect("revocable").borrow().clone();
        assert_eq!(
            revoked,
            Some(Revoked {
                cause: RevokeCause::Expired,
                why: "disconnectAfterInSeconds (2000 s) of authorizer 'a' elapsed".into()
            })
        );
    }

    #[tokio::test]
    async fn a_refresh_that_denies_fails_or_drops_connect_revokes() {
        let cases: [(Config, &str, &str); 3] = [
            (
                account(&policy("dev", "*"), 300, 3600),
                "nobody",
                "refreshAfterInSeconds elapsed, and the refresh failed: authorizer 'a' function \
                 denied the connection (isAuthenticated: false)",
            ),
            (
                account(&policy("someone-else", "*"), 300, 3600),
                "u",
                "refreshAfterInSeconds elapsed, and the refresh failed: authorizer 'a': no \
                 policy statement allows iot:Connect on \
                 arn:aws:iot:us-east-1:123456789012:client/dev",
            ),
            (
                {
                    let mut c = account(&policy("dev", "*"), 300, 3600);
                    c.authorizers[0].name = "renamed".into();
                    c
                },
                "u",
                "refreshAfterInSeconds elapsed, and the refresh failed: authorizer 'a' is no \
                 longer in the account",
            ),
        ];
        for (config, user, why) in cases {
            let p = plane(&policy("dev", "*"));
            let started = Instant::now();
            keep_authorized(&config, &renewal(user, 300, 3600), &p, "t", SECOND).await;
            assert!(started.elapsed() >= SECOND * 300);
            assert_eq!(p.check(BrokerAction::Publish, "x"), Ok(()), "policies kept");
            let revoked = p.revoked().expect("revocable").borrow().clone();
            assert_eq!(
                revoked,
                Some(Revoked {
                    cause: RevokeCause::RefreshFailed,
                    why: why.into()
                })
            );
        }
    }
}
