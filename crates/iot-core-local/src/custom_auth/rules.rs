//! The built-in authorizer function: rules from the account file, answering as a Lambda would.
//!
//! The first rule whose every given field equals the event's (username = the part before the
//! last '?', password compared as UTF-8 bytes, token) answers `isAuthenticated: true` with its
//! principal and the named `[policies]`, sent compact; no match answers `isAuthenticated: false`.
//! The answer goes through the same validation as a Lambda's.

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde_json::{json, Value};

use super::response::{validate_value, MAX_PERIOD_SECONDS, MIN_PERIOD_SECONDS};
use super::{Denial, Response, ResponseError};
use crate::config::{Authorizer, Rule};

/// Why the matching rule cannot give a valid answer.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum RuleError {
    #[error("the matching rule names policy '{policy}', which is not under [policies]")]
    UnknownPolicy { policy: String },
    #[error("the matching rule's policy '{policy}' is not valid JSON: {detail}")]
    PolicyNotJson { policy: String, detail: String },
    #[error("{0}")]
    Response(ResponseError),
}

/// Answer the `event` with the first matching rule (see the module doc).
pub(super) fn run(
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
            disconnect_after_seconds: MAX_PERIOD_SECONDS,
            refresh_after_seconds: MIN_PERIOD_SECONDS,
        });
    };
    let failed = |reason: RuleError| Denial::RuleFailed {
        authorizer: a.name.clone(),
        reason,
    };
    let mut docs = Vec::with_capacity(rule.policies.len());
    for name in &rule.policies {
        let text = policies.get(name).ok_or_else(|| {
            failed(RuleError::UnknownPolicy {
                policy: name.clone(),
            })
        })?;
        serde_json::from_str::<Value>(text).map_err(|e| {
            failed(RuleError::PolicyNotJson {
                policy: name.clone(),
                detail: e.to_string(),
            })
        })?;
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
    validate_value(&response).map_err(|e| failed(RuleError::Response(e)))
}

/// Valid JSON text without the whitespace between tokens; key order and strings untouched.
/// (Re-serialising a `serde_json::Value` would sort the keys and rewrite escapes, changing what
/// the 2048-character limit counts.)
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::Function;
    use crate::custom_auth::test_support::{authorizer, input_for, POLICY};
    use crate::custom_auth::{invoke, lambda_event};

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
            Denial::RuleFailed {
                authorizer: "test-authorizer".into(),
                reason: RuleError::Response(ResponseError::BadPrincipalId {
                    principal_id: "bad-principal".into()
                })
            }
        );
        assert_eq!(
            err.to_string(),
            "authorizer 'test-authorizer' built-in rules returned an invalid response: principalId 'bad-principal' does not match ^[a-zA-Z0-9]{1,128}$"
        );
    }

    #[tokio::test]
    async fn invoke_rules_with_a_missing_or_broken_policy() {
        let a = authorizer(Function::Rules {
            rules: vec![rule(None, None, None, "anyone")],
        });
        let ev = lambda_event(&input_for("u", None, None));
        let err = invoke(&a, &BTreeMap::new(), &ev, T)
            .await
            .expect_err("no such policy");
        assert_eq!(
            err,
            Denial::RuleFailed {
                authorizer: "test-authorizer".into(),
                reason: RuleError::UnknownPolicy {
                    policy: "connect".into()
                }
            }
        );
        assert_eq!(
            err.to_string(),
            "authorizer 'test-authorizer' built-in rules returned an invalid response: the matching rule names policy 'connect', which is not under [policies]"
        );
        let broken = BTreeMap::from([("connect".to_string(), "{not json".to_string())]);
        let err = invoke(&a, &broken, &ev, T)
            .await
            .expect_err("broken policy");
        assert!(
            matches!(&err, Denial::RuleFailed { reason: RuleError::PolicyNotJson { policy, .. }, .. } if policy == "connect"),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .contains("the matching rule's policy 'connect' is not valid JSON: "),
            "{err}"
        );
    }

    #[test]
    fn compact_json_keeps_strings_and_order() {
        let text = "{\n  \"b\": [1, 2],\n  \"a\": \"x y \\\" z\"\n}\n";
        assert_eq!(compact_json(text), r#"{"b":[1,2],"a":"x y \" z"}"#);
    }
}
