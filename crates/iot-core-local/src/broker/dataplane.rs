//! The policy hook of the data plane: the broker asks it before each inbound PUBLISH
//! (`iot:Publish`, and `iot:RetainPublish` when RETAIN is set), each SUBSCRIBE filter
//! (`iot:Subscribe`) and each delivery (`iot:Receive`). Each connection holds its own, built for
//! its principal: [`Policies`], the principal's parsed policy documents and the connection's
//! facts; [`AllowAll`] only for the plain broker of tests and benchmarks.

use std::fmt;

use crate::logsafe::escaped;
use crate::policy::{self, Facts, PolicySet};

/// A data-plane action, named as in IoT policies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Inbound PUBLISH, on `topic/<name>`.
    Publish,
    /// Inbound PUBLISH with RETAIN=1, on `topic/<name>` (checked in addition to Publish).
    RetainPublish,
    /// One SUBSCRIBE filter, on `topicfilter/<filter as sent>`.
    Subscribe,
    /// One delivery to this client, on `topic/<name>`.
    Receive,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Publish => "iot:Publish",
            Action::RetainPublish => "iot:RetainPublish",
            Action::Subscribe => "iot:Subscribe",
            Action::Receive => "iot:Receive",
        }
    }

    /// The resource kind in the ARN: `topic` or `topicfilter`.
    pub fn resource_kind(self) -> &'static str {
        match self {
            Action::Subscribe => "topicfilter",
            _ => "topic",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl From<Action> for policy::Action {
    fn from(action: Action) -> policy::Action {
        match action {
            Action::Publish => policy::Action::Publish,
            Action::RetainPublish => policy::Action::RetainPublish,
            Action::Subscribe => policy::Action::Subscribe,
            Action::Receive => policy::Action::Receive,
        }
    }
}

/// Why an action was denied, for the log line (e.g. the statement that decided).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denied(pub String);

/// Decides the data-plane actions of one connection.
pub trait DataPlane: Send + Sync {
    /// `resource` is the topic name, or for [`Action::Subscribe`] the filter as sent.
    fn check(&self, action: Action, resource: &str) -> Result<(), Denied>;
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
#[derive(Clone, Debug)]
pub struct Policies {
    pub policies: PolicySet,
    pub facts: Facts,
}

impl DataPlane for Policies {
    /// A denial's reason is the verdict (the deciding statement, or that none allowed), with the
    /// client's topic escaped for the log.
    fn check(&self, action: Action, resource: &str) -> Result<(), Denied> {
        let verdict = self.policies.evaluate(action.into(), resource, &self.facts);
        if verdict.is_allowed() {
            Ok(())
        } else {
            Err(Denied(escaped(&verdict.to_string()).to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plane() -> Policies {
        let policy = r#"{"Version":"2012-10-17","Statement":[
            {"Effect":"Allow","Action":["iot:Publish","iot:Receive","iot:Subscribe"],"Resource":["arn:aws:iot:us-east-1:123456789012:topic/test/${iot:ClientId}/*","arn:aws:iot:us-east-1:123456789012:topicfilter/test/${iot:ClientId}/*"]},
            {"Sid":"quiet","Effect":"Deny","Action":"iot:Receive","Resource":"arn:aws:iot:us-east-1:123456789012:topic/test/c1/quiet"}]}"#;
        Policies {
            policies: PolicySet::parse(&[policy]).expect("valid"),
            facts: Facts {
                region: "us-east-1".into(),
                account_id: "123456789012".into(),
                client_id: "c1".into(),
                ..Facts::default()
            },
        }
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
