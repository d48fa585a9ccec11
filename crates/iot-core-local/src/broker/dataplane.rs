//! The policy hook of the data plane: the broker asks it before each inbound PUBLISH
//! (`iot:Publish`, and `iot:RetainPublish` when RETAIN is set), each SUBSCRIBE filter
//! (`iot:Subscribe`) and each delivery (`iot:Receive`). Each connection holds its own, built for
//! its principal: [`Policies`], the principal's parsed policy documents and the connection's
//! facts; [`AllowAll`] only for the plain broker of tests and benchmarks.
//!
//! A custom authorizer's answer can change while the connection is up (data-plane reference
//! §1.4): [`Policies::replace`] swaps the documents for every later check, and
//! [`Policies::revoke`] tells the connection to close (see [`DataPlane::revoked`]).

use std::sync::{Arc, RwLock};

use tokio::sync::watch;

use crate::logsafe::escaped;
use crate::policy::{Facts, PolicySet};

/// The action checked: `Publish` and `RetainPublish` (on `topic/<name>`), `Subscribe` (on
/// `topicfilter/<filter as sent>`) and `Receive` (on `topic/<name>`, at each delivery). The
/// policy engine's own type: the broker never asks about `Connect`, decided before it.
pub use crate::policy::Action;

/// Why an action was denied, for the log line (e.g. the statement that decided).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denied(pub String);

/// Why a connection's authorization ended while it was up: the connection closes with MQTT 5
/// DISCONNECT 0x87 (3.1.1: closed), and `why` is logged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revoked {
    pub cause: RevokeCause,
    pub why: String,
}

/// What ended a connection's authorization (issue 9 choices, "Custom authorizer on live
/// connections"); the connection maps it to the lifecycle event's `disconnectReason`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RevokeCause {
    /// The custom authorizer, asked again after refreshAfterInSeconds, denied, failed, or no
    /// longer allows `iot:Connect`.
    RefreshFailed,
    /// The custom authorizer's disconnectAfterInSeconds elapsed since CONNACK.
    Expired,
}

impl RevokeCause {
    /// The MQTT 5 DISCONNECT's reason string.
    pub fn reason_string(self) -> &'static str {
        match self {
            RevokeCause::RefreshFailed => {
                "Not authorized: the custom authorizer's refresh did not authorize the connection"
            }
            RevokeCause::Expired => "disconnectAfterInSeconds elapsed",
        }
    }
}

/// Decides the data-plane actions of one connection.
pub trait DataPlane: Send + Sync {
    /// `resource` is the topic name, or for [`Action::Subscribe`] the filter as sent.
    fn check(&self, action: Action, resource: &str) -> Result<(), Denied>;

    /// Where the connection learns that its authorization ended: the value becomes `Some` once.
    /// `None` for a plane whose authorization never ends.
    fn revoked(&self) -> Option<watch::Receiver<Option<Revoked>>> {
        None
    }
}

/// Allows every action.
#[derive(Clone, Copy, Debug, Default)]
pub struct AllowAll;

impl DataPlane for AllowAll {
    fn check(&self, _: Action, _: &str) -> Result<(), Denied> {
        Ok(())
    }
}

/// The policies of one connection's principal, evaluated with the facts of that connection.
#[derive(Debug)]
pub struct Policies {
    /// Read at every check, replaced by an authorizer's refresh.
    policies: RwLock<Arc<PolicySet>>,
    facts: Facts,
    revoked: watch::Sender<Option<Revoked>>,
}

impl Policies {
    pub fn new(policies: PolicySet, facts: Facts) -> Policies {
        Policies {
            policies: RwLock::new(Arc::new(policies)),
            facts,
            revoked: watch::Sender::new(None),
        }
    }

    /// The connection's facts (client id, certificate, thing, ...).
    pub fn facts(&self) -> &Facts {
        &self.facts
    }

    /// The documents every later check uses.
    pub fn current(&self) -> Arc<PolicySet> {
        self.policies
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Use `policies` for every later check.
    pub fn replace(&self, policies: PolicySet) {
        *self.policies.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(policies);
    }

    /// Close the connection: its authorization ended. The first revocation wins.
    pub fn revoke(&self, revoked: Revoked) {
        self.revoked.send_if_modified(|current| {
            let first = current.is_none();
            if first {
                *current = Some(revoked);
            }
            first
        });
    }
}

impl DataPlane for Policies {
    /// A denial's reason is the verdict (the deciding statement, or that none allowed), with the
    /// client's topic escaped for the log.
    fn check(&self, action: Action, resource: &str) -> Result<(), Denied> {
        let verdict = self.current().evaluate(action, resource, &self.facts);
        if verdict.is_allowed() {
            Ok(())
        } else {
            Err(Denied(escaped(&verdict.to_string()).to_string()))
        }
    }

    fn revoked(&self) -> Option<watch::Receiver<Option<Revoked>>> {
        Some(self.revoked.subscribe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plane() -> Policies {
        let policy = r#"{"Version":"2012-10-17","Statement":[
            {"Effect":"Allow","Action":["iot:Publish","iot:Receive","iot:Subscribe"],"Resource":["arn:aws:iot:us-east-1:123456789012:topic/test/${iot:ClientId}/*","arn:aws:iot:us-east-1:123456789012:topicfilter/test/${iot:ClientId}/*"]},
            {"Sid":"quiet","Effect":"Deny","Action":"iot:Receive","Resource":"arn:aws:iot:us-east-1:123456789012:topic/test/c1/quiet"}]}"#;
        Policies::new(
            PolicySet::parse(&[policy]).expect("valid"),
            Facts {
                region: "us-east-1".into(),
                account_id: "123456789012".into(),
                client_id: "c1".into(),
                ..Facts::default()
            },
        )
    }

    #[test]
    fn replaced_policies_decide_every_later_check() {
        let p = plane();
        assert_eq!(p.check(Action::Publish, "test/c1/a"), Ok(()));
        let narrower = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:Publish","Resource":"arn:aws:iot:us-east-1:123456789012:topic/test/c1/b"}]}"#;
        p.replace(PolicySet::parse(&[narrower]).expect("valid"));
        assert_eq!(
            p.check(Action::Publish, "test/c1/a"),
            Err(Denied(
                "no policy statement allows iot:Publish on \
                 arn:aws:iot:us-east-1:123456789012:topic/test/c1/a"
                    .into()
            ))
        );
        assert_eq!(p.check(Action::Publish, "test/c1/b"), Ok(()));
    }

    #[test]
    fn a_revocation_reaches_the_connection_once_and_the_first_one_wins() {
        let p = plane();
        let rx = p.revoked().expect("a policy plane can be revoked");
        assert_eq!(*rx.borrow(), None);
        let expired = Revoked {
            cause: RevokeCause::Expired,
            why: "ttl".into(),
        };
        p.revoke(expired.clone());
        p.revoke(Revoked {
            cause: RevokeCause::RefreshFailed,
            why: "later".into(),
        });
        assert_eq!(*rx.borrow(), Some(expired));
        assert!(AllowAll.revoked().is_none());
        assert_eq!(
            RevokeCause::Expired.reason_string(),
            "disconnectAfterInSeconds elapsed"
        );
    }

    #[test]
    fn each_broker_action_is_its_policy_action_on_its_resource() {
        let p = plane();
        assert_eq!(p.check(Action::Publish, "test/c1/a"), Ok(()));
        assert_eq!(p.check(Action::Subscribe, "test/c1/a"), Ok(()));
        assert_eq!(p.check(Action::Receive, "test/c1/a"), Ok(()));
        assert_eq!(
            p.check(Action::RetainPublish, "test/c1/a"),
            Err(Denied(
                "no policy statement allows iot:RetainPublish on \
                 arn:aws:iot:us-east-1:123456789012:topic/test/c1/a"
                    .into()
            ))
        );
        assert_eq!(
            p.check(Action::Receive, "test/c1/quiet"),
            Err(Denied(
                "policy document 1, statement 2 (Sid \"quiet\") explicitly denies iot:Receive on \
                 arn:aws:iot:us-east-1:123456789012:topic/test/c1/quiet"
                    .into()
            ))
        );
    }

    #[test]
    fn the_reason_escapes_the_clients_topic() {
        let Err(Denied(why)) = plane().check(Action::Subscribe, "x\n#") else {
            panic!("denied")
        };
        assert_eq!(
            why,
            "no policy statement allows iot:Subscribe on \
             arn:aws:iot:us-east-1:123456789012:topicfilter/x\\n#"
        );
    }
}
