//! The policy hook of the data plane: the broker asks it before each inbound PUBLISH
//! (`iot:Publish`, and `iot:RetainPublish` when RETAIN is set), each SUBSCRIBE filter
//! (`iot:Subscribe`) and each delivery (`iot:Receive`). Each connection holds its own, built for
//! its principal. [`AllowAll`] is today's: policies beyond `iot:Connect` are not yet evaluated.

use std::fmt;

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
