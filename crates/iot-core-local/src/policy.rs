//! Authorization of a connection: do the principal's IoT policies allow `iot:Connect` on
//! `arn:aws:iot:<region>:<account>:client/<clientId>`?
//!
//! This module evaluates policy documents (JSON strings, as stored under `[policies]` or returned
//! by an authorizer) for that one action. It is not a general IAM engine:
//! - `Action` matches case-insensitively, `Resource` case-sensitively, both with the `*` (any run
//!   of characters) and `?` (one character) wildcards;
//! - in `Resource`, `${iot:ClientId}` is replaced by the client id (as literal text: wildcard
//!   characters in a client id do not act as wildcards), and the IAM escapes `${*}`, `${?}` and
//!   `${$}` stand for a literal `*`, `?` and `$`. Other policy variables are left as they are, so
//!   a resource that uses them does not match;
//! - statements that use `NotAction`, `NotResource` or `Condition` are not supported and are
//!   skipped, whether they allow or deny. A skipped Deny therefore denies nothing here, where
//!   AWS IoT Core might deny: keep such statements out of local policies;
//! - an explicit Deny wins over any Allow, across all documents.

use serde_json::{Map, Value};

/// The action a connection needs.
pub const CONNECT_ACTION: &str = "iot:Connect";

/// Who wants to connect, and where.
#[derive(Debug, Clone, Copy)]
pub struct ConnectRequest<'a> {
    pub region: &'a str,
    pub account_id: &'a str,
    pub client_id: &'a str,
}

impl ConnectRequest<'_> {
    /// `arn:aws:iot:<region>:<account>:client/<clientId>`, the resource `iot:Connect` is checked on.
    pub fn resource(&self) -> String {
        format!(
            "arn:aws:iot:{}:{}:client/{}",
            self.region, self.account_id, self.client_id
        )
    }
}

/// Why the policies do not let this client connect. `Display` is the reason the server logs.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum PolicyDenial {
    #[error("no policy statement allows iot:Connect on {resource}")]
    NoAllow { resource: String },
    #[error("a policy statement explicitly denies iot:Connect on {resource}")]
    ExplicitDeny { resource: String },
    #[error("invalid policy: policy document {document}: {reason}")]
    Invalid {
        /// 1-based position among the documents evaluated.
        document: usize,
        reason: PolicyError,
    },
}

/// What is wrong with a policy document.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    #[error("not valid JSON: {detail}")]
    NotJson { detail: String },
    #[error("not a JSON object")]
    NotAnObject,
    #[error("has no Statement")]
    NoStatement,
    #[error("Statement is neither an object nor an array")]
    BadStatementList,
    #[error("statement {statement} is not an object")]
    StatementNotAnObject { statement: usize },
    #[error("statement {statement}: {problem}")]
    Statement {
        /// 1-based position in the document.
        statement: usize,
        problem: StatementError,
    },
}

/// What is wrong with one statement of a policy document.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum StatementError {
    #[error("has no Effect")]
    NoEffect,
    #[error("Effect must be \"Allow\" or \"Deny\", not {found}")]
    BadEffect { found: String },
    #[error("has no {element}")]
    Missing { element: &'static str },
    #[error("{element} holds {found}, which is not a string")]
    NotAString {
        element: &'static str,
        found: String,
    },
    #[error("{element} must be a string or an array of strings, not {found}")]
    WrongType {
        element: &'static str,
        found: String,
    },
}

/// `documents` are IoT policy JSON documents, as strings. `Ok(())` when some statement allows
/// `iot:Connect` on the client's resource and none denies it. Every document is parsed before any
/// is evaluated, so an invalid document is reported even if another one would decide.
pub fn allows_connect(documents: &[&str], req: &ConnectRequest) -> Result<(), PolicyDenial> {
    let mut statements = Vec::new();
    for (i, document) in documents.iter().enumerate() {
        let parsed = parse_document(document).map_err(|reason| PolicyDenial::Invalid {
            document: i + 1,
            reason,
        })?;
        statements.extend(parsed);
    }

    let resource = req.resource();
    let applies = |s: &Statement| {
        s.actions.iter().any(|a| matches_action(a, CONNECT_ACTION))
            && s.resources
                .iter()
                .any(|r| matches_resource(r, &resource, req.client_id))
    };
    if statements
        .iter()
        .any(|s| s.effect == Effect::Deny && applies(s))
    {
        return Err(PolicyDenial::ExplicitDeny { resource });
    }
    if statements
        .iter()
        .any(|s| s.effect == Effect::Allow && applies(s))
    {
        return Ok(());
    }
    Err(PolicyDenial::NoAllow { resource })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Effect {
    Allow,
    Deny,
}

/// A supported statement: `Effect`, `Action`, `Resource` and nothing this module cannot evaluate.
#[derive(Debug)]
struct Statement {
    effect: Effect,
    actions: Vec<String>,
    resources: Vec<String>,
}

/// The supported statements of one document; unsupported ones are left out (see the module doc).
fn parse_document(document: &str) -> Result<Vec<Statement>, PolicyError> {
    let value: Value = serde_json::from_str(document).map_err(|e| PolicyError::NotJson {
        detail: e.to_string(),
    })?;
    let Value::Object(doc) = value else {
        return Err(PolicyError::NotAnObject);
    };
    let items: Vec<&Value> = match doc.get("Statement") {
        None => return Err(PolicyError::NoStatement),
        Some(Value::Array(items)) => items.iter().collect(),
        Some(item @ Value::Object(_)) => vec![item],
        Some(_) => return Err(PolicyError::BadStatementList),
    };
    let mut statements = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        let statement = i + 1;
        let Value::Object(s) = item else {
            return Err(PolicyError::StatementNotAnObject { statement });
        };
        let parsed =
            parse_statement(s).map_err(|problem| PolicyError::Statement { statement, problem })?;
        statements.extend(parsed);
    }
    Ok(statements)
}

/// `None` for a well-formed statement this module does not evaluate.
fn parse_statement(s: &Map<String, Value>) -> Result<Option<Statement>, StatementError> {
    let effect = match s.get("Effect") {
        Some(Value::String(e)) if e == "Allow" => Effect::Allow,
        Some(Value::String(e)) if e == "Deny" => Effect::Deny,
        Some(other) => {
            return Err(StatementError::BadEffect {
                found: other.to_string(),
            })
        }
        None => return Err(StatementError::NoEffect),
    };
    if ["NotAction", "NotResource", "Condition"]
        .iter()
        .any(|k| s.contains_key(*k))
    {
        return Ok(None);
    }
    Ok(Some(Statement {
        effect,
        actions: strings(s, "Action")?,
        resources: strings(s, "Resource")?,
    }))
}

/// A string-or-array-of-strings element.
fn strings(s: &Map<String, Value>, element: &'static str) -> Result<Vec<String>, StatementError> {
    match s.get(element) {
        None => Err(StatementError::Missing { element }),
        Some(Value::String(one)) => Ok(vec![one.clone()]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| match v {
                Value::String(one) => Ok(one.clone()),
                other => Err(StatementError::NotAString {
                    element,
                    found: other.to_string(),
                }),
            })
            .collect(),
        Some(other) => Err(StatementError::WrongType {
            element,
            found: other.to_string(),
        }),
    }
}

/// One element of a wildcard pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    Lit(char),
    /// `*`: any run of characters, possibly empty.
    Any,
    /// `?`: exactly one character.
    One,
}

fn wildcard(c: char) -> Tok {
    match c {
        '*' => Tok::Any,
        '?' => Tok::One,
        c => Tok::Lit(c),
    }
}

fn matches_action(pattern: &str, action: &str) -> bool {
    let pattern: Vec<Tok> = pattern.chars().map(wildcard).collect();
    let action: Vec<char> = action.chars().collect();
    glob(&pattern, &action, |p, t| p.eq_ignore_ascii_case(&t))
}

fn matches_resource(pattern: &str, resource: &str, client_id: &str) -> bool {
    let pattern = resource_pattern(pattern, client_id);
    let resource: Vec<char> = resource.chars().collect();
    glob(&pattern, &resource, |p, t| p == t)
}

/// Tokenise a `Resource`, substituting `${iot:ClientId}` and the escapes `${*}`, `${?}`, `${$}`
/// with literal text. Any other `${...}` stays as literal text.
fn resource_pattern(pattern: &str, client_id: &str) -> Vec<Tok> {
    let mut toks = Vec::with_capacity(pattern.len());
    let mut rest = pattern;
    while let Some(start) = rest.find("${") {
        toks.extend(rest[..start].chars().map(wildcard));
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            // An unclosed "${": the remainder is ordinary pattern text.
            rest = &rest[start..];
            break;
        };
        let substitute = match &after[..end] {
            "iot:ClientId" => Some(client_id),
            "*" => Some("*"),
            "?" => Some("?"),
            "$" => Some("$"),
            _ => None,
        };
        match substitute {
            Some(text) => toks.extend(text.chars().map(Tok::Lit)),
            None => toks.extend(rest[start..start + 2 + end + 1].chars().map(Tok::Lit)),
        }
        rest = &after[end + 1..];
    }
    toks.extend(rest.chars().map(wildcard));
    toks
}

/// Wildcard match of the whole `text`, backtracking to the last `*` only (O(pattern × text)).
fn glob(pattern: &[Tok], text: &[char], eq: impl Fn(char, char) -> bool) -> bool {
    let (mut p, mut t) = (0, 0);
    // Where the last `*` was, and how much of the text it has swallowed so far.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(Tok::Any) => {
                star = Some((p, t));
                p += 1;
                continue;
            }
            Some(Tok::One) => {
                p += 1;
                t += 1;
                continue;
            }
            Some(Tok::Lit(c)) if eq(*c, text[t]) => {
                p += 1;
                t += 1;
                continue;
            }
            _ => {}
        }
        let Some((sp, st)) = star else {
            return false;
        };
        p = sp + 1;
        t = st + 1;
        star = Some((sp, st + 1));
    }
    pattern[p..].iter().all(|tok| *tok == Tok::Any)
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQ: ConnectRequest<'static> = ConnectRequest {
        region: "us-east-1",
        account_id: "123456789012",
        client_id: "test-1",
    };

    fn with_client(client_id: &str) -> ConnectRequest<'_> {
        ConnectRequest { client_id, ..REQ }
    }

    /// A one-statement document.
    fn doc(effect: &str, action: &str, resource: &str) -> String {
        format!(
            r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"{effect}","Action":{action},"Resource":{resource}}}]}}"#
        )
    }

    fn no_allow(client_id: &str) -> Result<(), PolicyDenial> {
        Err(PolicyDenial::NoAllow {
            resource: format!("arn:aws:iot:us-east-1:123456789012:client/{client_id}"),
        })
    }

    #[test]
    fn exact_resource_allows_only_that_client() {
        let d = doc(
            "Allow",
            r#""iot:Connect""#,
            r#""arn:aws:iot:us-east-1:123456789012:client/test-1""#,
        );
        assert_eq!(allows_connect(&[&d], &REQ), Ok(()));
        assert_eq!(
            allows_connect(&[&d], &with_client("test-12")),
            no_allow("test-12")
        );
        assert_eq!(
            allows_connect(&[&d], &with_client("test-")),
            no_allow("test-")
        );
    }

    #[test]
    fn star_in_client_id_matches_prefix() {
        let d = doc(
            "Allow",
            r#""iot:Connect""#,
            r#""arn:aws:iot:us-east-1:123456789012:client/test-*""#,
        );
        assert_eq!(allows_connect(&[&d], &with_client("test-1")), Ok(()));
        assert_eq!(allows_connect(&[&d], &with_client("test-")), Ok(()));
        assert_eq!(
            allows_connect(&[&d], &with_client("prod-1")),
            no_allow("prod-1")
        );
    }

    #[test]
    fn client_id_variable_is_substituted() {
        let d = doc(
            "Allow",
            r#""iot:Connect""#,
            r#""arn:aws:iot:us-east-1:123456789012:client/${iot:ClientId}""#,
        );
        assert_eq!(allows_connect(&[&d], &with_client("anything-42")), Ok(()));
        // A client id with wildcard characters is matched literally (it is its own resource).
        assert_eq!(allows_connect(&[&d], &with_client("a*b?")), Ok(()));

        let thing = doc(
            "Allow",
            r#""iot:Connect""#,
            r#""arn:aws:iot:us-east-1:123456789012:client/${iot:Connection.Thing.ThingName}""#,
        );
        assert_eq!(allows_connect(&[&thing], &REQ), no_allow("test-1"));
    }

    #[test]
    fn substituted_text_is_not_a_wildcard() {
        // "x-${iot:ClientId}" for client "*" is the literal "x-*", which matches only "x-*".
        let d = doc(
            "Allow",
            r#""iot:Connect""#,
            r#""arn:aws:iot:us-east-1:123456789012:client/${iot:ClientId}-suffix""#,
        );
        assert_eq!(allows_connect(&[&d], &with_client("*")), no_allow("*"));
        let escaped = doc(
            "Allow",
            r#""iot:Connect""#,
            r#""arn:aws:iot:us-east-1:123456789012:client/a${*}""#,
        );
        assert_eq!(allows_connect(&[&escaped], &with_client("a*")), Ok(()));
        assert_eq!(
            allows_connect(&[&escaped], &with_client("ab")),
            no_allow("ab")
        );
    }

    #[test]
    fn question_mark_matches_one_character() {
        let d = doc(
            "Allow",
            r#""iot:Connect""#,
            r#""arn:aws:iot:us-east-1:123456789012:client/test-?""#,
        );
        assert_eq!(allows_connect(&[&d], &with_client("test-7")), Ok(()));
        assert_eq!(
            allows_connect(&[&d], &with_client("test-")),
            no_allow("test-")
        );
        assert_eq!(
            allows_connect(&[&d], &with_client("test-77")),
            no_allow("test-77")
        );
    }

    #[test]
    fn iot_star_and_star_actions_allow_connect() {
        let any = r#""*""#;
        for action in [
            r#""iot:*""#,
            r#""*""#,
            r#""IOT:connect""#,
            r#""iot:Conn?ct""#,
        ] {
            let d = doc("Allow", action, any);
            assert_eq!(allows_connect(&[&d], &REQ), Ok(()), "{action}");
        }
        for action in [r#""iot:Connect*x""#, r#""iotdata:*""#, r#""iot:Connec""#] {
            let d = doc("Allow", action, any);
            assert_eq!(allows_connect(&[&d], &REQ), no_allow("test-1"), "{action}");
        }
    }

    #[test]
    fn action_in_an_array() {
        let d = doc("Allow", r#"["iot:Publish","iot:Connect"]"#, r#""*""#);
        assert_eq!(allows_connect(&[&d], &REQ), Ok(()));
    }

    #[test]
    fn resource_in_an_array() {
        let d = doc(
            "Allow",
            r#""iot:Connect""#,
            r#"["arn:aws:iot:us-east-1:123456789012:topic/t","arn:aws:iot:us-east-1:123456789012:client/test-1"]"#,
        );
        assert_eq!(allows_connect(&[&d], &REQ), Ok(()));
        assert_eq!(
            allows_connect(&[&d], &with_client("test-2")),
            no_allow("test-2")
        );
    }

    #[test]
    fn single_statement_object_form() {
        let d = r#"{"Statement":{"Effect":"Allow","Action":"iot:Connect","Resource":"arn:aws:iot:us-east-1:123456789012:client/*"}}"#;
        assert_eq!(allows_connect(&[d], &REQ), Ok(()));
    }

    #[test]
    fn deny_overrides_allow_across_documents() {
        let allow = doc("Allow", r#""iot:*""#, r#""*""#);
        let deny = doc(
            "Deny",
            r#""iot:Connect""#,
            r#""arn:aws:iot:us-east-1:123456789012:client/test-*""#,
        );
        let denied = PolicyDenial::ExplicitDeny {
            resource: "arn:aws:iot:us-east-1:123456789012:client/test-1".into(),
        };
        assert_eq!(allows_connect(&[&allow, &deny], &REQ), Err(denied.clone()));
        assert_eq!(allows_connect(&[&deny, &allow], &REQ), Err(denied.clone()));
        // The Deny does not cover other clients.
        assert_eq!(
            allows_connect(&[&allow, &deny], &with_client("prod-1")),
            Ok(())
        );
        assert_eq!(
            denied.to_string(),
            "a policy statement explicitly denies iot:Connect on arn:aws:iot:us-east-1:123456789012:client/test-1"
        );
    }

    #[test]
    fn publish_only_policy_denies_connect() {
        let d = doc(
            "Allow",
            r#"["iot:Publish","iot:Subscribe","iot:Receive"]"#,
            r#""*""#,
        );
        let got = allows_connect(&[&d], &with_client("foo"));
        assert_eq!(got, no_allow("foo"));
        assert_eq!(
            got.unwrap_err().to_string(),
            "no policy statement allows iot:Connect on arn:aws:iot:us-east-1:123456789012:client/foo"
        );
    }

    #[test]
    fn no_documents_allow_nothing() {
        assert_eq!(allows_connect(&[], &REQ), no_allow("test-1"));
    }

    #[test]
    fn invalid_json_is_reported() {
        let good = doc("Allow", r#""*""#, r#""*""#);
        let got = allows_connect(&[&good, "{\"Statement\": ["], &REQ);
        let Err(
            err @ PolicyDenial::Invalid {
                document: 2,
                reason: PolicyError::NotJson { .. },
            },
        ) = got
        else {
            panic!("expected Invalid in document 2, got {got:?}");
        };
        assert!(
            err.to_string().starts_with(
                "invalid policy: policy document 2: not valid JSON: EOF while parsing"
            ),
            "{err}"
        );
    }

    #[test]
    fn malformed_documents_are_reported() {
        let cases = [
            (r#"{"Version":"2012-10-17"}"#, "policy document 1: has no Statement"),
            (r#"[]"#, "policy document 1: not a JSON object"),
            (r#"{"Statement":"x"}"#, "policy document 1: Statement is neither an object nor an array"),
            (r#"{"Statement":[1]}"#, "policy document 1: statement 1 is not an object"),
            (
                r#"{"Statement":[{"Effect":"allow","Action":"*","Resource":"*"}]}"#,
                "policy document 1: statement 1: Effect must be \"Allow\" or \"Deny\", not \"allow\"",
            ),
            (
                r#"{"Statement":[{"Effect":"Allow","Resource":"*"}]}"#,
                "policy document 1: statement 1: has no Action",
            ),
            (
                r#"{"Statement":[{"Effect":"Allow","Action":"*","Resource":[3]}]}"#,
                "policy document 1: statement 1: Resource holds 3, which is not a string",
            ),
        ];
        for (document, reason) in cases {
            let err = allows_connect(&[document], &REQ).expect_err(document);
            assert!(
                matches!(err, PolicyDenial::Invalid { document: 1, .. }),
                "{err:?}"
            );
            assert_eq!(
                err.to_string(),
                format!("invalid policy: {reason}"),
                "{document}"
            );
        }
        // The kinds carry the statement and element.
        assert_eq!(
            allows_connect(
                &[
                    r#"{"Statement":[{"Effect":"Allow","Action":"*","Resource":"*"},{"Effect":"Deny","Action":"*","Resource":{}}]}"#
                ],
                &REQ
            ),
            Err(PolicyDenial::Invalid {
                document: 1,
                reason: PolicyError::Statement {
                    statement: 2,
                    problem: StatementError::WrongType {
                        element: "Resource",
                        found: "{}".into()
                    }
                }
            })
        );
    }

    #[test]
    fn other_region_or_account_does_not_match() {
        let region = doc(
            "Allow",
            r#""iot:Connect""#,
            r#""arn:aws:iot:eu-west-1:123456789012:client/*""#,
        );
        let account = doc(
            "Allow",
            r#""iot:Connect""#,
            r#""arn:aws:iot:us-east-1:210987654321:client/*""#,
        );
        assert_eq!(allows_connect(&[&region], &REQ), no_allow("test-1"));
        assert_eq!(allows_connect(&[&account], &REQ), no_allow("test-1"));
        // Wildcards in those fields do match.
        let any = doc(
            "Allow",
            r#""iot:Connect""#,
            r#""arn:aws:iot:*:*:client/test-1""#,
        );
        assert_eq!(allows_connect(&[&any], &REQ), Ok(()));
    }

    #[test]
    fn resource_match_is_case_sensitive() {
        let d = doc(
            "Allow",
            r#""iot:Connect""#,
            r#""arn:aws:iot:us-east-1:123456789012:client/Test-1""#,
        );
        assert_eq!(allows_connect(&[&d], &REQ), no_allow("test-1"));
    }

    #[test]
    fn statements_with_unsupported_elements_are_skipped() {
        let allow = r#"{"Statement":[
            {"Effect":"Allow","NotAction":"iot:Publish","Resource":"*"},
            {"Effect":"Allow","Action":"iot:Connect","NotResource":"arn:aws:iot:*:*:client/x"},
            {"Effect":"Allow","Action":"iot:Connect","Resource":"*","Condition":{"Bool":{"iot:Connection.Thing.IsAttached":"true"}}}
        ]}"#;
        assert_eq!(allows_connect(&[allow], &REQ), no_allow("test-1"));
        let deny_with_condition = r#"{"Statement":[
            {"Effect":"Allow","Action":"iot:Connect","Resource":"*"},
            {"Effect":"Deny","Action":"iot:Connect","Resource":"*","Condition":{"Bool":{"aws:SecureTransport":"false"}}}
        ]}"#;
        assert_eq!(allows_connect(&[deny_with_condition], &REQ), Ok(()));
    }

    #[test]
    fn glob_backtracks() {
        let pat: Vec<Tok> = "a*b*c".chars().map(wildcard).collect();
        let yes: Vec<char> = "axxbyybzc".chars().collect();
        let no: Vec<char> = "axxcyyb".chars().collect();
        assert!(glob(&pat, &yes, |a, b| a == b));
        assert!(!glob(&pat, &no, |a, b| a == b));
        let empty: Vec<char> = Vec::new();
        assert!(glob(&[Tok::Any], &empty, |a, b| a == b));
        assert!(!glob(&[Tok::One], &empty, |a, b| a == b));
    }
}
