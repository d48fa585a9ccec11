//! The custom-authorizer step, one job per file, in the order a connection meets them:
//!
//! - `credentials`: what the client presented (the MQTT username's query, or the WebSocket
//!   upgrade's headers and query), as a [`Presented`];
//! - [`select_authorizer`] (here): the authorizer the client named, or the default one;
//! - `signing`: the authorizer's token-signing keys and the token signature check;
//! - `event`: the Lambda request event (reference §2.4);
//! - [`invoke`] (here) runs the authorizer function: the built-in `rules` engine, or an external
//!   `command` (a subprocess with bounded output and a timeout);
//! - `response`: the function's answer, validated exactly as AWS IoT Core validates it.
//!
//! What the returned policies allow is not decided here: that is the policy step's job.

mod command;
mod credentials;
mod event;
mod response;
mod rules;
mod signing;
#[cfg(test)]
mod test_support;

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use crate::config::{Authorizer, Function, Status};

pub use command::{CommandError, MAX_STDOUT_BYTES};
pub use credentials::{from_http, from_username, Presented, NAME_PARAM, SIGNATURE_PARAM};
pub use event::{lambda_event, EventInput};
pub use response::{validate_response, Response, ResponseError};
pub use rules::RuleError;
pub use signing::{check_token, load_public_keys, verify_signature, CheckedToken, KeyError};

/// Why a custom-authorizer connection is refused. The Display text is what the server logs.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Denial {
    #[error("custom authentication needs SNI: the client's TLS ClientHello named no server (IoT Core finds the account's authorizers by the endpoint host name; connecting by IP address sends none)")]
    NoServerName,
    #[error("no authorizer named '{0}' in this account (check x-amz-customauthorizer-name)")]
    UnknownAuthorizer(String),
    #[error("the client named no authorizer (x-amz-customauthorizer-name) and the account has no default authorizer")]
    NoAuthorizer,
    #[error("authorizer '{0}' is INACTIVE")]
    Inactive(String),
    #[error("authorizer '{authorizer}' has token signing enabled and the client sent no token parameter '{key}'")]
    MissingToken { authorizer: String, key: String },
    #[error("authorizer '{0}' has token signing enabled and the client sent no x-amz-customauthorizer-signature")]
    MissingSignature(String),
    #[error("signature did not verify against any token-signing key of authorizer '{0}' (it must be base64 of an RSA SHA-256 signature of the token, URL-encoded exactly once)")]
    BadSignature(String),
    #[error("authorizer '{authorizer}' function denied the connection (isAuthenticated: false)")]
    FunctionDenied { authorizer: String },
    #[error("authorizer '{authorizer}' function failed: {reason}")]
    FunctionFailed {
        authorizer: String,
        reason: CommandError,
    },
    #[error("authorizer '{authorizer}' function did not answer within {ms} ms")]
    Timeout { authorizer: String, ms: u64 },
    #[error("authorizer '{authorizer}' function returned an invalid response: {reason}")]
    InvalidResponse {
        authorizer: String,
        reason: ResponseError,
    },
    #[error("authorizer '{authorizer}' built-in rules returned an invalid response: {reason}")]
    RuleFailed {
        authorizer: String,
        reason: RuleError,
    },
}

/// The authorizer the client named, or the account's default one; it must be ACTIVE.
pub fn select_authorizer<'a>(
    authorizers: &'a [Authorizer],
    presented: &Presented,
) -> Result<&'a Authorizer, Denial> {
    let a = match &presented.authorizer {
        Some(name) => authorizers
            .iter()
            .find(|a| &a.name == name)
            .ok_or_else(|| Denial::UnknownAuthorizer(name.clone()))?,
        None => authorizers
            .iter()
            .find(|a| a.default)
            .ok_or(Denial::NoAuthorizer)?,
    };
    if a.status != Status::Active {
        return Err(Denial::Inactive(a.name.clone()));
    }
    Ok(a)
}

/// Run the authorizer's function on `event` (from [`lambda_event`]): the built-in rules (see
/// `rules`) or the external command (see `command`, which must answer within `timeout`).
/// A response with `is_authenticated: false` is `Ok`: the caller turns it into
/// [`Denial::FunctionDenied`].
pub async fn invoke(
    a: &Authorizer,
    policies: &BTreeMap<String, String>,
    event: &Value,
    timeout: Duration,
) -> Result<Response, Denial> {
    match &a.function {
        Function::Rules { rules } => rules::run(a, rules, policies, event),
        Function::Command { argv } => command::run(a, argv, event, timeout).await,
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::authorizer;
    use super::*;

    #[test]
    fn select_authorizer_by_name_default_and_status() {
        let mut named = authorizer(Function::Rules { rules: vec![] });
        named.name = "named".into();
        let mut default = authorizer(Function::Rules { rules: vec![] });
        default.name = "dflt".into();
        default.default = true;
        let mut off = authorizer(Function::Rules { rules: vec![] });
        off.name = "off".into();
        off.status = Status::Inactive;
        let all = vec![named, default, off];
        let pick = |u: &str| select_authorizer(&all, &from_username(u)).map(|a| a.name.clone());
        assert_eq!(
            pick("u?x-amz-customauthorizer-name=named"),
            Ok("named".into())
        );
        assert_eq!(pick("u"), Ok("dflt".into()));
        assert_eq!(
            pick("u?x-amz-customauthorizer-name=nope"),
            Err(Denial::UnknownAuthorizer("nope".into()))
        );
        let err = pick("u?x-amz-customauthorizer-name=off").expect_err("inactive");
        assert_eq!(err, Denial::Inactive("off".into()));
        assert_eq!(err.to_string(), "authorizer 'off' is INACTIVE");
        assert_eq!(
            select_authorizer(&all[..1], &Presented::default()).map(|a| a.name.clone()),
            Err(Denial::NoAuthorizer)
        );
    }
}
