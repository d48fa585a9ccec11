//! Validating an authorizer function's response exactly as AWS IoT Core does (reference §2.4):
//! the same rules apply to an allow and to a deny.

use serde_json::Value;

/// Response limits (reference §2.4).
const MAX_POLICY_DOCUMENTS: usize = 10;
const MAX_POLICY_CHARS: usize = 2048;
pub(super) const MIN_PERIOD_SECONDS: u64 = 300;
pub(super) const MAX_PERIOD_SECONDS: u64 = 86_400;
const MAX_PRINCIPAL_ID_CHARS: usize = 128;

/// A validated authorizer response.
#[derive(Clone, Debug, PartialEq)]
pub struct Response {
    pub is_authenticated: bool,
    pub principal_id: String,
    /// Each a JSON policy document (text).
    pub policy_documents: Vec<String>,
    pub disconnect_after_seconds: u64,
    pub refresh_after_seconds: u64,
}

/// Which rule of the response format the function's answer breaks.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ResponseError {
    #[error("not JSON: {detail}")]
    NotJson { detail: String },
    #[error("the response is not a JSON object")]
    NotAnObject,
    #[error("{field} is missing")]
    Missing { field: &'static str },
    #[error("{field} must be {expected}")]
    WrongType {
        field: &'static str,
        expected: &'static str,
    },
    #[error("principalId {} does not match ^[a-zA-Z0-9]{{1,128}}$", shown_principal(.principal_id))]
    BadPrincipalId { principal_id: String },
    #[error("policyDocuments has {count} entries, at most {MAX_POLICY_DOCUMENTS} allowed")]
    TooManyDocuments { count: usize },
    #[error("policyDocuments[{index}] must be a JSON string or object")]
    DocumentNotStringOrObject { index: usize },
    #[error("policyDocuments[{index}] is not valid JSON: {detail}")]
    DocumentNotJson { index: usize, detail: String },
    #[error("policyDocuments[{index}] is {chars} characters, at most {MAX_POLICY_CHARS} allowed")]
    DocumentTooLong { index: usize, chars: usize },
    #[error(
        "{field} is {seconds}, it must be between {MIN_PERIOD_SECONDS} and {MAX_PERIOD_SECONDS}"
    )]
    PeriodOutOfRange { field: &'static str, seconds: u64 },
}

/// A principal id as the error shows it: quoted when short, its length when too long to show.
fn shown_principal(principal_id: &str) -> String {
    let chars = principal_id.chars().count();
    if chars <= MAX_PRINCIPAL_ID_CHARS {
        format!("'{principal_id}'")
    } else {
        format!("of {chars} characters")
    }
}

/// Validate a function's JSON response: `isAuthenticated` bool required; `principalId`
/// `^[a-zA-Z0-9]{1,128}$`; `policyDocuments` an array of at most 10 entries, each a JSON string
/// or an object (serialized), each at most 2048 characters and valid JSON;
/// `disconnectAfterInSeconds` and `refreshAfterInSeconds` required, 300..=86400; unknown fields
/// ignored. The error says which rule failed. The same rules apply to a deny.
pub fn validate_response(bytes: &[u8]) -> Result<Response, ResponseError> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| ResponseError::NotJson {
        detail: e.to_string(),
    })?;
    validate_value(&value)
}

/// [`validate_response`] on a parsed value.
pub(super) fn validate_value(value: &Value) -> Result<Response, ResponseError> {
    let obj = value.as_object().ok_or(ResponseError::NotAnObject)?;
    let field = |field: &'static str| obj.get(field).ok_or(ResponseError::Missing { field });
    let wrong =
        |field: &'static str, expected: &'static str| ResponseError::WrongType { field, expected };
    let is_authenticated = field("isAuthenticated")?
        .as_bool()
        .ok_or(wrong("isAuthenticated", "a boolean"))?;
    let principal_id = field("principalId")?
        .as_str()
        .ok_or(wrong("principalId", "a string"))?;
    if principal_id.is_empty()
        || principal_id.len() > MAX_PRINCIPAL_ID_CHARS
        || !principal_id.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        return Err(ResponseError::BadPrincipalId {
            principal_id: principal_id.to_string(),
        });
    }
    let docs = field("policyDocuments")?
        .as_array()
        .ok_or(wrong("policyDocuments", "an array"))?;
    if docs.len() > MAX_POLICY_DOCUMENTS {
        return Err(ResponseError::TooManyDocuments { count: docs.len() });
    }
    let mut policy_documents = Vec::with_capacity(docs.len());
    for (index, doc) in docs.iter().enumerate() {
        let text = match doc {
            Value::String(s) => {
                serde_json::from_str::<Value>(s).map_err(|e| ResponseError::DocumentNotJson {
                    index,
                    detail: e.to_string(),
                })?;
                s.clone()
            }
            Value::Object(_) => doc.to_string(),
            _ => return Err(ResponseError::DocumentNotStringOrObject { index }),
        };
        let chars = text.chars().count();
        if chars > MAX_POLICY_CHARS {
            return Err(ResponseError::DocumentTooLong { index, chars });
        }
        policy_documents.push(text);
    }
    let period = |name: &'static str| -> Result<u64, ResponseError> {
        let seconds = field(name)?
            .as_u64()
            .ok_or(wrong(name, "a whole number of seconds"))?;
        if !(MIN_PERIOD_SECONDS..=MAX_PERIOD_SECONDS).contains(&seconds) {
            return Err(ResponseError::PeriodOutOfRange {
                field: name,
                seconds,
            });
        }
        Ok(seconds)
    };
    let disconnect_after_seconds = period("disconnectAfterInSeconds")?;
    let refresh_after_seconds = period("refreshAfterInSeconds")?;
    Ok(Response {
        is_authenticated,
        principal_id: principal_id.to_string(),
        policy_documents,
        disconnect_after_seconds,
        refresh_after_seconds,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::custom_auth::test_support::{response_json, POLICY};

    #[test]
    fn validate_response_valid() {
        let r = validate_response(&response_json(json!({}))).expect("valid");
        assert_eq!(
            r,
            Response {
                is_authenticated: true,
                principal_id: "device42".into(),
                policy_documents: vec![POLICY.into()],
                disconnect_after_seconds: 3600,
                refresh_after_seconds: 300,
            }
        );
        let policy: Value = serde_json::from_str(POLICY).expect("json");
        let r = validate_response(&response_json(
            json!({ "policyDocuments": [policy.clone()], "refreshAfterInSeconds": 86400 }),
        ))
        .expect("object document");
        assert_eq!(
            serde_json::from_str::<Value>(&r.policy_documents[0]).expect("json"),
            policy
        );
        assert_eq!(r.refresh_after_seconds, 86400);
        let deny = validate_response(&response_json(
            json!({ "isAuthenticated": false, "policyDocuments": [] }),
        ))
        .expect("valid deny");
        assert!(!deny.is_authenticated);
    }

    #[test]
    fn validate_response_rules() {
        let kind = |o: Value| validate_response(&response_json(o)).expect_err("invalid");
        let err = |o: Value| kind(o).to_string();
        // The kinds carry what the message names.
        assert_eq!(
            kind(json!({ "principalId": "device-42" })),
            ResponseError::BadPrincipalId {
                principal_id: "device-42".into()
            }
        );
        assert_eq!(
            kind(json!({ "refreshAfterInSeconds": 299 })),
            ResponseError::PeriodOutOfRange {
                field: "refreshAfterInSeconds",
                seconds: 299
            }
        );
        assert_eq!(
            kind(json!({ "policyDocuments": [POLICY, 1] })),
            ResponseError::DocumentNotStringOrObject { index: 1 }
        );
        assert_eq!(
            kind(json!({ "isAuthenticated": null })),
            ResponseError::Missing {
                field: "isAuthenticated"
            }
        );
        assert_eq!(
            err(json!({ "principalId": "device-42" })),
            "principalId 'device-42' does not match ^[a-zA-Z0-9]{1,128}$"
        );
        assert_eq!(
            err(json!({ "principalId": "" })),
            "principalId '' does not match ^[a-zA-Z0-9]{1,128}$"
        );
        assert_eq!(
            err(json!({ "principalId": "a".repeat(129) })),
            "principalId of 129 characters does not match ^[a-zA-Z0-9]{1,128}$"
        );
        assert!(
            validate_response(&response_json(json!({ "principalId": "a".repeat(128) }))).is_ok()
        );
        assert_eq!(
            err(json!({ "policyDocuments": vec![POLICY; 11] })),
            "policyDocuments has 11 entries, at most 10 allowed"
        );
        assert!(validate_response(&response_json(
            json!({ "policyDocuments": vec![POLICY; 10] })
        ))
        .is_ok());
        // A valid JSON document of exactly 2049 characters.
        let long = format!(
            "{{\"Version\":\"2012-10-17\",\"Comment\":\"{}\"}}",
            "x".repeat(2049 - 37)
        );
        assert_eq!(long.len(), 2049);
        assert_eq!(
            err(json!({ "policyDocuments": [POLICY, long] })),
            "policyDocuments[1] is 2049 characters, at most 2048 allowed"
        );
        assert!(err(json!({ "policyDocuments": ["{not json"] }))
            .starts_with("policyDocuments[0] is not valid JSON: "));
        assert_eq!(
            err(json!({ "policyDocuments": [42] })),
            "policyDocuments[0] must be a JSON string or object"
        );
        assert_eq!(
            err(json!({ "refreshAfterInSeconds": 299 })),
            "refreshAfterInSeconds is 299, it must be between 300 and 86400"
        );
        assert_eq!(
            err(json!({ "disconnectAfterInSeconds": 86401 })),
            "disconnectAfterInSeconds is 86401, it must be between 300 and 86400"
        );
        assert_eq!(
            err(json!({ "disconnectAfterInSeconds": null })),
            "disconnectAfterInSeconds is missing"
        );
        assert_eq!(
            err(json!({ "refreshAfterInSeconds": "300" })),
            "refreshAfterInSeconds must be a whole number of seconds"
        );
        assert_eq!(
            err(json!({ "isAuthenticated": null })),
            "isAuthenticated is missing"
        );
        assert_eq!(
            err(json!({ "isAuthenticated": "true" })),
            "isAuthenticated must be a boolean"
        );
        assert_eq!(
            err(json!({ "policyDocuments": null })),
            "policyDocuments is missing"
        );
        assert_eq!(validate_response(b"[]"), Err(ResponseError::NotAnObject));
        assert_eq!(
            ResponseError::NotAnObject.to_string(),
            "the response is not a JSON object"
        );
        let garbage = validate_response(b"hello").expect_err("garbage");
        assert!(
            matches!(garbage, ResponseError::NotJson { .. }),
            "{garbage:?}"
        );
        assert!(garbage.to_string().starts_with("not JSON: "), "{garbage}");
    }
}
