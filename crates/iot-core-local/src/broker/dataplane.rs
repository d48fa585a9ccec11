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
