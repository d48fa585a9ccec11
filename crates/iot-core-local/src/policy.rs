//! Authorization: do the principal's policies allow this action on this resource?
//!
//! The policies are the documents attached to the principal (IoT policies on a certificate, the
//! IAM-style documents of a SigV4 access key, or the `policyDocuments` a custom authorizer
//! returned). They are parsed once, into a [`PolicySet`], and every request is evaluated against
//! it: `iot:Connect` on `client/<clientId>`, `iot:Publish` and `iot:RetainPublish` on
//! `topic/<topic>`, `iot:Subscribe` on `topicfilter/<filter as sent>`, `iot:Receive` on
//! `topic/<topic>` at each delivery (reference on the data plane, §1).
//!
//! The rules, as AWS IoT Core applies them:
//! - default deny; a matching `Deny` wins over any `Allow`, across all documents;
//! - `Action`/`NotAction` match case-insensitively, `Resource`/`NotResource` case-sensitively, with
//!   the IAM wildcards `*` (any run of characters, `/` included) and `?` (one character). MQTT's
//!   `+` and `#` are ordinary characters in a policy: `topicfilter/a/+` allows only the filter
//!   `a/+` itself;
//! - policy variables, substituted as literal text: `${iot:ClientId}`, the certificate's
//!   `${iot:Certificate.Subject.<attribute>[.N]}` and `${iot:Certificate.Issuer.<attribute>[.N]}`,
//!   the attached thing's `${iot:Connection.Thing.ThingName}`, `.ThingTypeName` and
//!   `.Attributes[<name>]`; and the escapes `${*}`, `${?}`, `${$}` (also written `$(*)`, `$(?)`,
//!   `$($)`) for a literal `*`, `?`, `$`. A variable with no value for this connection matches
//!   nothing, so it neither allows nor denies;
//! - the condition operators `String(Not)Equals[IgnoreCase]`, `String(Not)Like`, `Bool`,
//!   `(Not)IpAddress` and `Null`, each optionally `...IfExists`, and the set qualifiers
//!   `ForAnyValue:` and `ForAllValues:`, on the keys listed in [`CONDITION_KEYS`].
//!
//! Anything else (another operator, key, variable or statement element) makes the whole document
//! invalid, refused when it is loaded or returned by an authorizer, never skipped: a skipped Allow
//! condition would grant more than AWS does, and a skipped Deny would deny less.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use serde_json::{Map, Value};

/// The actions of the data plane, each checked on its own resource type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Connect,
    Publish,
    RetainPublish,
    Subscribe,
    Receive,
}

impl Action {
    /// The action's name in a policy, e.g. `iot:Publish`.
    pub fn name(self) -> &'static str {
        match self {
            Action::Connect => "iot:Connect",
            Action::Publish => "iot:Publish",
            Action::RetainPublish => "iot:RetainPublish",
            Action::Subscribe => "iot:Subscribe",
            Action::Receive => "iot:Receive",
        }
    }

    fn resource_type(self) -> &'static str {
        match self {
            Action::Connect => "client",
            Action::Publish | Action::RetainPublish | Action::Receive => "topic",
            Action::Subscribe => "topicfilter",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What is known about a connection, for resources, variables and conditions.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    pub region: String,
    pub account_id: String,
    pub client_id: String,
    /// The client's address (`aws:SourceIp`).
    pub source_ip: Option<IpAddr>,
    /// The client certificate's names, for mTLS connections.
    pub certificate: Option<CertificateNames>,
    /// The thing attached to the principal, if any.
    pub thing: Option<Thing>,
    /// What the CONNECT asked for: `iot:ConnectAttributes` and `iot:LastWillTopic` exist only
    /// when `iot:Connect` is evaluated.
    pub connect: ConnectAttributes,
}

/// A certificate's subject and issuer attributes, by AWS's attribute names (`CommonName`,
/// `Organization`, ...), in certificate order; an attribute may occur more than once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertificateNames {
    pub subject: Vec<(String, String)>,
    pub issuer: Vec<(String, String)>,
}

/// A thing attached to the authenticating principal.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Thing {
    pub name: String,
    pub type_name: Option<String>,
    pub attributes: BTreeMap<String, String>,
}

/// The CONNECT's own facts, seen by `iot:Connect` conditions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectAttributes {
    /// The client asked for a persistent session.
    pub persistent: bool,
    /// The topic of the will message, if the CONNECT carries one.
    pub last_will_topic: Option<String>,
}

/// The certificate attribute names AWS IoT Core defines policy variables for.
pub const CERTIFICATE_ATTRIBUTES: &[&str] = &[
    "CommonName",
    "Country",
    "DistinguishedNameQualifier",
    "GenerationQualifier",
    "GivenName",
    "Initials",
    "Locality",
    "Organization",
    "OrganizationalUnit",
    "Pseudonym",
    "SerialNumber",
    "State",
    "Surname",
    "Title",
];

/// The condition keys this evaluator knows.
pub const CONDITION_KEYS: &[&str] = &[
    "aws:SourceIp",
    "iot:ClientId",
    "iot:ConnectAttributes",
    "iot:LastWillTopic",
    "iot:Connection.Thing.IsAttached",
    "iot:Connection.Thing.ThingName",
    "iot:Connection.Thing.ThingTypeName",
    "iot:Connection.Thing.Attributes[<name>]",
];

/// Why a set of policy documents cannot be used: the first problem found, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("policy document {document}: {problem}")]
pub struct PolicyError {
    /// 1-based, in the order the documents were given.
    pub document: usize,
    pub problem: DocumentError,
}

/// What is wrong with one policy document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DocumentError {
    #[error("not valid JSON: {detail}")]
    NotJson { detail: String },
    #[error("not a JSON object")]
    NotAnObject,
    #[error("has no Statement")]
    NoStatement,
    #[error("Statement is neither an object nor an array")]
    BadStatementList,
    #[error("statement {statement}: {problem}")]
    Statement {
        /// 1-based position in the document.
        statement: usize,
        problem: StatementError,
    },
}

/// What is wrong with one statement.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatementError {
    #[error("not a JSON object")]
    NotAnObject,
    #[error("has no Effect")]
    NoEffect,
    #[error("Effect must be \"Allow\" or \"Deny\", not {found}")]
    BadEffect { found: String },
    #[error("Sid must be a string, not {found}")]
    BadSid { found: String },
    #[error("has neither {element} nor Not{element}")]
    Missing { element: &'static str },
    #[error("has both {element} and Not{element}")]
    Both { element: &'static str },
    #[error("{element} holds {found}, which is not a string")]
    NotAString { element: String, found: String },
    #[error("{element} must be a string or an array of strings, not {found}")]
    WrongType { element: String, found: String },
    #[error("Condition must be an object that maps operators to objects, not {found}")]
    BadCondition { found: String },
    #[error("the values of the condition key {key:?} must be strings, numbers or booleans")]
    BadConditionValue { key: String },
    #[error("the condition key {key:?} has no value")]
    NoConditionValue { key: String },
    #[error("{operator:?} takes \"true\" or \"false\", not {found:?}")]
    NotABoolean { operator: String, found: String },
    #[error("{found:?} is not an IP address or CIDR block")]
    NotAnAddress { found: String },
    #[error(
        "{0} is not supported by iot-core-local, so the document is refused rather than \
         evaluated differently from AWS"
    )]
    Unsupported(Unsupported),
}

/// What a statement uses that this evaluator does not implement.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unsupported {
    #[error("the element {0:?}")]
    Element(String),
    #[error("the condition operator {0:?}")]
    Operator(String),
    #[error("the condition key {0:?} (known keys: {keys})", keys = CONDITION_KEYS.join(", "))]
    ConditionKey(String),
    #[error("the policy variable ${{{0}}}")]
    Variable(String),
    #[error("an unclosed policy variable in {0:?}")]
    UnclosedVariable(String),
    #[error(
        "{operator:?} on {key:?} (the multivalued iot:ConnectAttributes needs ForAnyValue: or \
         ForAllValues:, and only it takes them)"
    )]
    SetQualifier { operator: String, key: String },
    #[error("{operator:?} on {key:?} (only aws:SourceIp is an address)")]
    NotAnAddressKey { operator: String, key: String },
}

/// Which statement decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementRef {
    /// 1-based, in the order the documents were given.
    pub document: usize,
    /// 1-based, within its document.
    pub statement: usize,
    pub sid: Option<String>,
}

impl fmt::Display for StatementRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "policy document {}, statement {}",
            self.document, self.statement
        )?;
        if let Some(sid) = &self.sid {
            write!(f, " (Sid {sid:?})")?;
        }
        Ok(())
    }
}

/// The outcome of one evaluation. `Display` is the reason the server logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allowed {
        action: Action,
        resource: String,
        by: StatementRef,
    },
    ExplicitDeny {
        action: Action,
        resource: String,
        by: StatementRef,
    },
    ImplicitDeny {
        action: Action,
        resource: String,
    },
}

impl Verdict {
    pub fn is_allowed(&self) -> bool {
        matches!(self, Verdict::Allowed { .. })
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Allowed {
                action,
                resource,
                by,
            } => write!(f, "{by} allows {action} on {resource}"),
            Verdict::ExplicitDeny {
                action,
                resource,
                by,
            } => write!(f, "{by} explicitly denies {action} on {resource}"),
            Verdict::ImplicitDeny { action, resource } => {
                write!(f, "no policy statement allows {action} on {resource}")
            }
        }
    }
}

/// `arn:aws:iot:<region>:<account>:<type>/<name>`, the resource `action` is checked on.
pub fn resource_arn(action: Action, name: &str, facts: &Facts) -> String {
    format!(
        "arn:aws:iot:{}:{}:{}/{}",
        facts.region,
        facts.account_id,
        action.resource_type(),
        name
    )
}

/// The parsed statements of all the documents of one principal.
#[derive(Debug, Clone, Default)]
pub struct PolicySet {
    statements: Vec<Statement>,
}

impl PolicySet {
    /// Parse every document; the first error refuses them all.
    pub fn parse<S: AsRef<str>>(documents: &[S]) -> Result<PolicySet, PolicyError> {
        let mut statements = Vec::new();
        for (i, document) in documents.iter().enumerate() {
            statements.extend(parse_document(i + 1, document.as_ref())?);
        }
        Ok(PolicySet { statements })
    }

    /// Evaluate `action` on the resource named `name` (a client id, a topic, or a topic filter
    /// as the client sent it).
    pub fn evaluate(&self, action: Action, name: &str, facts: &Facts) -> Verdict {
        let resource = resource_arn(action, name, facts);
        let applies = |s: &&Statement| s.applies(action, &resource, facts);
        if let Some(s) = self
            .statements
            .iter()
            .filter(|s| s.effect == Effect::Deny)
            .find(applies)
        {
            return Verdict::ExplicitDeny {
                action,
                resource,
                by: s.at.clone(),
            };
        }
        match self
            .statements
            .iter()
            .filter(|s| s.effect == Effect::Allow)
            .find(applies)
        {
            Some(s) => Verdict::Allowed {
                action,
                resource,
                by: s.at.clone(),
            },
            None => Verdict::ImplicitDeny { action, resource },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Effect {
    Allow,
    Deny,
}

#[derive(Debug, Clone)]
struct Statement {
    at: StatementRef,
    effect: Effect,
    /// `Action` (false) or `NotAction` (true).
    not_action: bool,
    actions: Vec<Pattern>,
    not_resource: bool,
    resources: Vec<Pattern>,
    conditions: Vec<Condition>,
}

impl Statement {
    fn applies(&self, action: Action, resource: &str, facts: &Facts) -> bool {
        let action_listed = self
            .actions
            .iter()
            .any(|p| p.matches(action.name(), facts, true));
        let resource_listed = self
            .resources
            .iter()
            .any(|p| p.matches(resource, facts, false));
        action_listed != self.not_action
            && resource_listed != self.not_resource
            && self.conditions.iter().all(|c| c.holds(action, facts))
    }
}

fn parse_document(document: usize, text: &str) -> Result<Vec<Statement>, PolicyError> {
    let fail = |problem| PolicyError { document, problem };
    let value: Value = serde_json::from_str(text).map_err(|e| {
        fail(DocumentError::NotJson {
            detail: e.to_string(),
        })
    })?;
    let Value::Object(doc) = value else {
        return Err(fail(DocumentError::NotAnObject));
    };
    let items: Vec<&Value> = match doc.get("Statement") {
        None => return Err(fail(DocumentError::NoStatement)),
        Some(Value::Array(items)) => items.iter().collect(),
        Some(item @ Value::Object(_)) => vec![item],
        Some(_) => return Err(fail(DocumentError::BadStatementList)),
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            parse_statement(document, i + 1, item).map_err(|problem| {
                fail(DocumentError::Statement {
                    statement: i + 1,
                    problem,
                })
            })
        })
        .collect()
}

fn parse_statement(
    document: usize,
    statement: usize,
    item: &Value,
) -> Result<Statement, StatementError> {
    let Value::Object(s) = item else {
        return Err(StatementError::NotAnObject);
    };
    for key in s.keys() {
        match key.as_str() {
            "Sid" | "Effect" | "Action" | "NotAction" | "Resource" | "NotResource"
            | "Condition" => {}
            other => {
                return Err(StatementError::Unsupported(Unsupported::Element(
                    other.to_string(),
                )))
            }
        }
    }
    let sid = match s.get("Sid") {
        None => None,
        Some(Value::String(sid)) => Some(sid.clone()),
        Some(other) => {
            return Err(StatementError::BadSid {
                found: other.to_string(),
            })
        }
    };
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
    let (not_action, actions) = one_of(s, "Action")?;
    let (not_resource, resources) = one_of(s, "Resource")?;
    let parse_all = |texts: Vec<String>| -> Result<Vec<Pattern>, StatementError> {
        texts
            .iter()
            .map(|t| Pattern::parse(t).map_err(StatementError::Unsupported))
            .collect()
    };
    let conditions = match s.get("Condition") {
        None => Vec::new(),
        Some(Value::Object(block)) => parse_conditions(block)?,
        Some(other) => {
            return Err(StatementError::BadCondition {
                found: other.to_string(),
            })
        }
    };
    Ok(Statement {
        at: StatementRef {
            document,
            statement,
            sid,
        },
        effect,
        not_action,
        actions: parse_all(actions)?,
        not_resource,
        resources: parse_all(resources)?,
        conditions,
    })
}

/// Exactly one of `element` and `Not<element>`: (is it the `Not` form, its strings).
fn one_of(
    s: &Map<String, Value>,
    element: &'static str,
) -> Result<(bool, Vec<String>), StatementError> {
    let not_element = format!("Not{element}");
    match (s.get(element), s.get(&not_element)) {
        (Some(v), None) => Ok((false, strings(element, v)?)),
        (None, Some(v)) => Ok((true, strings(&not_element, v)?)),
        (Some(_), Some(_)) => Err(StatementError::Both { element }),
        (None, None) => Err(StatementError::Missing { element }),
    }
}

/// A string-or-array-of-strings element.
fn strings(element: &str, value: &Value) -> Result<Vec<String>, StatementError> {
    match value {
        Value::String(one) => Ok(vec![one.clone()]),
        Value::Array(items) => items
            .iter()
            .map(|v| match v {
                Value::String(one) => Ok(one.clone()),
                other => Err(StatementError::NotAString {
                    element: element.to_string(),
                    found: other.to_string(),
                }),
            })
            .collect(),
        other => Err(StatementError::WrongType {
            element: element.to_string(),
            found: other.to_string(),
        }),
    }
}

/// A policy variable.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Var {
    ClientId,
    ThingName,
    ThingTypeName,
    ThingAttribute(String),
    Certificate {
        issuer: bool,
        attribute: String,
        /// `.N`: the (N+1)-th value; without it, the first.
        index: usize,
    },
}

impl Var {
    fn parse(name: &str) -> Result<Var, Unsupported> {
        let unsupported = || Unsupported::Variable(name.to_string());
        Ok(match name {
            "iot:ClientId" => Var::ClientId,
            "iot:Connection.Thing.ThingName" => Var::ThingName,
            "iot:Connection.Thing.ThingTypeName" => Var::ThingTypeName,
            _ => {
                if let Some(attr) = name
                    .strip_prefix("iot:Connection.Thing.Attributes[")
                    .and_then(|r| r.strip_suffix(']'))
                {
                    return Ok(Var::ThingAttribute(attr.to_string()));
                }
                let (issuer, rest) = if let Some(r) = name.strip_prefix("iot:Certificate.Subject.")
                {
                    (false, r)
                } else if let Some(r) = name.strip_prefix("iot:Certificate.Issuer.") {
                    (true, r)
                } else {
                    return Err(unsupported());
                };
                let (attribute, index) = match rest.split_once('.') {
                    None => (rest, 0),
                    Some((a, n)) => (a, n.parse::<usize>().map_err(|_| unsupported())?),
                };
                if !CERTIFICATE_ATTRIBUTES.contains(&attribute) {
                    return Err(unsupported());
                }
                Var::Certificate {
                    issuer,
                    attribute: attribute.to_string(),
                    index,
                }
            }
        })
    }

    /// The value for this connection, if it has one.
    fn value<'f>(&self, facts: &'f Facts) -> Option<&'f str> {
        match self {
            Var::ClientId => Some(&facts.client_id),
            Var::ThingName => facts.thing.as_ref().map(|t| t.name.as_str()),
            Var::ThingTypeName => facts.thing.as_ref()?.type_name.as_deref(),
            Var::ThingAttribute(a) => facts.thing.as_ref()?.attributes.get(a).map(String::as_str),
            Var::Certificate {
                issuer,
                attribute,
                index,
            } => {
                let names = facts.certificate.as_ref()?;
                let list = if *issuer {
                    &names.issuer
                } else {
                    &names.subject
                };
                list.iter()
                    .filter(|(a, _)| a == attribute)
                    .nth(*index)
                    .map(|(_, v)| v.as_str())
            }
        }
    }
}

/// One piece of a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    /// A run of literal characters (one piece for the run, not one per character: a parsed
    /// policy is kept for as long as its connection lives).
    Lit(String),
    /// `*`: any run of characters, possibly empty.
    Any,
    /// `?`: exactly one character.
    One,
    Var(Var),
}

/// An `Action`, `Resource` or condition value, with its wildcards and variables.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pattern(Vec<Piece>);

/// One element of a pattern after substitution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    Lit(char),
    Any,
    One,
}

impl Pattern {
    fn parse(text: &str) -> Result<Pattern, Unsupported> {
        let mut pieces = Vec::new();
        // A literal character joins the run before it, if any.
        let literal = |pieces: &mut Vec<Piece>, c: char| match pieces.last_mut() {
            Some(Piece::Lit(run)) => run.push(c),
            _ => pieces.push(Piece::Lit(c.to_string())),
        };
        let mut rest = text;
        while let Some(c) = rest.chars().next() {
            // The escapes for a literal `*`, `?` or `$`, in both spellings.
            let escape = ["${*}", "${?}", "${$}", "$(*)", "$(?)", "$($)"]
                .into_iter()
                .find(|e| rest.starts_with(e));
            if let Some(e) = escape {
                literal(&mut pieces, e.chars().nth(2).unwrap_or('$'));
                rest = &rest[e.len()..];
                continue;
            }
            if let Some(after) = rest.strip_prefix("${") {
                let end = after
                    .find('}')
                    .ok_or_else(|| Unsupported::UnclosedVariable(text.to_string()))?;
                pieces.push(Piece::Var(Var::parse(&after[..end])?));
                rest = &after[end + 1..];
                continue;
            }
            match c {
                '*' => pieces.push(Piece::Any),
                '?' => pieces.push(Piece::One),
                c => literal(&mut pieces, c),
            }
            rest = &rest[c.len_utf8()..];
        }
        for piece in &mut pieces {
            if let Piece::Lit(run) = piece {
                run.shrink_to_fit();
            }
        }
        pieces.shrink_to_fit();
        Ok(Pattern(pieces))
    }

    /// The pattern with its variables replaced by their values as literal text; `None` if one
    /// has no value for this connection.
    fn tokens(&self, facts: &Facts) -> Option<Vec<Tok>> {
        let mut toks = Vec::with_capacity(self.0.len());
        for piece in &self.0 {
            match piece {
                Piece::Lit(run) => toks.extend(run.chars().map(Tok::Lit)),
                Piece::Any => toks.push(Tok::Any),
                Piece::One => toks.push(Tok::One),
                Piece::Var(v) => toks.extend(v.value(facts)?.chars().map(Tok::Lit)),
            }
        }
        Some(toks)
    }

    /// Wildcard match of the whole `text`.
    fn matches(&self, text: &str, facts: &Facts, ignore_case: bool) -> bool {
        let Some(pattern) = self.tokens(facts) else {
            return false;
        };
        let text: Vec<char> = text.chars().collect();
        glob(&pattern, &text, ignore_case)
    }

    /// The pattern as a plain string (variables substituted, wildcards as written).
    fn literal(&self, facts: &Facts) -> Option<String> {
        Some(
            self.tokens(facts)?
                .into_iter()
                .map(|t| match t {
                    Tok::Lit(c) => c,
                    Tok::Any => '*',
                    Tok::One => '?',
                })
                .collect(),
        )
    }
}

/// Wildcard match, backtracking to the last `*` only (O(pattern × text)).
fn glob(pattern: &[Tok], text: &[char], ignore_case: bool) -> bool {
    let eq = |p: char, t: char| {
        if ignore_case {
            p.to_lowercase().eq(t.to_lowercase())
        } else {
            p == t
        }
    };
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    StringEquals,
    StringEqualsIgnoreCase,
    StringLike,
    Bool,
    IpAddress,
    Null,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SetQualifier {
    None,
    ForAnyValue,
    ForAllValues,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Key {
    SourceIp,
    ClientId,
    ConnectAttributes,
    LastWillTopic,
    ThingIsAttached,
    ThingName,
    ThingTypeName,
    ThingAttribute(String),
}

impl Key {
    fn parse(name: &str) -> Option<Key> {
        Some(match name {
            "aws:SourceIp" => Key::SourceIp,
            "iot:ClientId" => Key::ClientId,
            "iot:ConnectAttributes" => Key::ConnectAttributes,
            "iot:LastWillTopic" => Key::LastWillTopic,
            "iot:Connection.Thing.IsAttached" => Key::ThingIsAttached,
            "iot:Connection.Thing.ThingName" => Key::ThingName,
            "iot:Connection.Thing.ThingTypeName" => Key::ThingTypeName,
            _ => Key::ThingAttribute(
                name.strip_prefix("iot:Connection.Thing.Attributes[")?
                    .strip_suffix(']')?
                    .to_string(),
            ),
        })
    }

    fn multivalued(&self) -> bool {
        *self == Key::ConnectAttributes
    }

    /// The request's values for this key; empty when the key is absent.
    fn values(&self, action: Action, facts: &Facts) -> Vec<String> {
        let connect = action == Action::Connect;
        match self {
            Key::SourceIp => facts.source_ip.iter().map(|ip| ip.to_string()).collect(),
            Key::ClientId => vec![facts.client_id.clone()],
            Key::ConnectAttributes if connect => {
                let mut v = Vec::new();
                if facts.connect.persistent {
                    v.push("PersistentConnect".to_string());
                }
                if facts.connect.last_will_topic.is_some() {
                    v.push("LastWill".to_string());
                }
                v
            }
            Key::LastWillTopic if connect => {
                facts.connect.last_will_topic.iter().cloned().collect()
            }
            Key::ConnectAttributes | Key::LastWillTopic => Vec::new(),
            Key::ThingIsAttached => vec![facts.thing.is_some().to_string()],
            Key::ThingName => facts.thing.iter().map(|t| t.name.clone()).collect(),
            Key::ThingTypeName => facts
                .thing
                .as_ref()
                .and_then(|t| t.type_name.clone())
                .into_iter()
                .collect(),
            Key::ThingAttribute(a) => facts
                .thing
                .as_ref()
                .and_then(|t| t.attributes.get(a).cloned())
                .into_iter()
                .collect(),
        }
    }
}

/// One `operator: { key: values }` entry.
#[derive(Debug, Clone)]
struct Condition {
    set: SetQualifier,
    op: Op,
    negated: bool,
    if_exists: bool,
    key: Key,
    values: Vec<Pattern>,
    /// For `IpAddress`: the parsed CIDR blocks.
    networks: Vec<(IpAddr, u8)>,
}

fn parse_conditions(block: &Map<String, Value>) -> Result<Vec<Condition>, StatementError> {
    let unsupported = StatementError::Unsupported;
    let mut out = Vec::new();
    for (operator, entries) in block {
        let (set, rest) = if let Some(r) = operator.strip_prefix("ForAnyValue:") {
            (SetQualifier::ForAnyValue, r)
        } else if let Some(r) = operator.strip_prefix("ForAllValues:") {
            (SetQualifier::ForAllValues, r)
        } else {
            (SetQualifier::None, operator.as_str())
        };
        let (rest, if_exists) = match rest.strip_suffix("IfExists") {
            Some(r) => (r, true),
            None => (rest, false),
        };
        let (op, negated) = match rest {
            "StringEquals" => (Op::StringEquals, false),
            "StringNotEquals" => (Op::StringEquals, true),
            "StringEqualsIgnoreCase" => (Op::StringEqualsIgnoreCase, false),
            "StringNotEqualsIgnoreCase" => (Op::StringEqualsIgnoreCase, true),
            "StringLike" => (Op::StringLike, false),
            "StringNotLike" => (Op::StringLike, true),
            "Bool" => (Op::Bool, false),
            "IpAddress" => (Op::IpAddress, false),
            "NotIpAddress" => (Op::IpAddress, true),
            "Null" if !if_exists && set == SetQualifier::None => (Op::Null, false),
            _ => return Err(unsupported(Unsupported::Operator(operator.clone()))),
        };
        let Value::Object(entries) = entries else {
            return Err(StatementError::BadCondition {
                found: entries.to_string(),
            });
        };
        for (key_name, values) in entries {
            let key = Key::parse(key_name)
                .ok_or_else(|| unsupported(Unsupported::ConditionKey(key_name.clone())))?;
            if key.multivalued() != (set != SetQualifier::None) && op != Op::Null {
                return Err(unsupported(Unsupported::SetQualifier {
                    operator: operator.clone(),
                    key: key_name.clone(),
                }));
            }
            let texts: Vec<String> = match values {
                Value::Array(items) => items.iter().map(scalar).collect(),
                one => vec![scalar(one)],
            }
            .into_iter()
            .collect::<Option<_>>()
            .ok_or_else(|| StatementError::BadConditionValue {
                key: key_name.clone(),
            })?;
            if texts.is_empty() {
                return Err(StatementError::NoConditionValue {
                    key: key_name.clone(),
                });
            }
            let mut networks = Vec::new();
            match op {
                Op::Bool | Op::Null => {
                    if let Some(bad) = texts.iter().find(|t| *t != "true" && *t != "false") {
                        return Err(StatementError::NotABoolean {
                            operator: operator.clone(),
                            found: bad.clone(),
                        });
                    }
                }
                Op::IpAddress => {
                    if key != Key::SourceIp {
                        return Err(unsupported(Unsupported::NotAnAddressKey {
                            operator: operator.clone(),
                            key: key_name.clone(),
                        }));
                    }
                    for t in &texts {
                        networks
                            .push(parse_cidr(t).ok_or_else(|| StatementError::NotAnAddress {
                                found: t.clone(),
                            })?);
                    }
                }
                _ => {}
            }
            let values = texts
                .iter()
                .map(|t| Pattern::parse(t))
                .collect::<Result<_, _>>()
                .map_err(unsupported)?;
            out.push(Condition {
                set,
                op,
                negated,
                if_exists,
                key,
                values,
                networks,
            });
        }
    }
    Ok(out)
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn parse_cidr(text: &str) -> Option<(IpAddr, u8)> {
    let (addr, bits) = match text.split_once('/') {
        Some((a, b)) => (a.parse::<IpAddr>().ok()?, b.parse::<u8>().ok()?),
        None => {
            let a = text.parse::<IpAddr>().ok()?;
            (a, if a.is_ipv4() { 32 } else { 128 })
        }
    };
    let max = if addr.is_ipv4() { 32 } else { 128 };
    (bits <= max).then_some((addr, bits))
}

fn in_network(ip: IpAddr, (net, bits): (IpAddr, u8)) -> bool {
    let ip = match (ip, net) {
        (IpAddr::V6(v6), IpAddr::V4(_)) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => return false,
        },
        _ => ip,
    };
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

impl Condition {
    fn holds(&self, action: Action, facts: &Facts) -> bool {
        let present = self.key.values(action, facts);
        if self.op == Op::Null {
            // "Null": "true" means the key must be absent.
            let want_absent = self
                .values
                .iter()
                .any(|v| v.literal(facts).as_deref() == Some("true"));
            return present.is_empty() == want_absent;
        }
        if present.is_empty() && self.set == SetQualifier::None {
            // An absent key: only ...IfExists and the negated operators hold (IAM's rule).
            return self.if_exists || self.negated;
        }
        let one = |v: &str| self.value_matches(v, facts);
        match self.set {
            SetQualifier::None => present.iter().all(|v| one(v) != self.negated),
            SetQualifier::ForAnyValue => present.iter().any(|v| one(v) != self.negated),
            SetQualifier::ForAllValues => present.iter().all(|v| one(v) != self.negated),
        }
    }

    /// Does the request value match any of the condition's values?
    fn value_matches(&self, value: &str, facts: &Facts) -> bool {
        match self.op {
            Op::StringEquals => self
                .values
                .iter()
                .any(|p| p.literal(facts).is_some_and(|l| l == value)),
            Op::StringEqualsIgnoreCase => self.values.iter().any(|p| {
                p.literal(facts)
                    .is_some_and(|l| l.to_lowercase() == value.to_lowercase())
            }),
            Op::StringLike => self.values.iter().any(|p| p.matches(value, facts, false)),
            Op::Bool => self
                .values
                .iter()
                .any(|p| p.literal(facts).is_some_and(|l| l == value)),
            Op::IpAddress => value
                .parse::<IpAddr>()
                .is_ok_and(|ip| self.networks.iter().any(|n| in_network(ip, *n))),
            Op::Null => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARN: &str = "arn:aws:iot:us-east-1:123456789012";

    fn facts(client_id: &str) -> Facts {
        Facts {
            region: "us-east-1".into(),
            account_id: "123456789012".into(),
            client_id: client_id.into(),
            source_ip: Some("127.0.0.1".parse().unwrap()),
            ..Facts::default()
        }
    }

    /// A document of the given statements (JSON objects).
    fn doc(statements: &[&str]) -> String {
        format!(
            r#"{{"Version":"2012-10-17","Statement":[{}]}}"#,
            statements.join(",")
        )
    }

    fn st(effect: &str, action: &str, resource: &str) -> String {
        format!(r#"{{"Effect":"{effect}","Action":{action},"Resource":{resource}}}"#)
    }

    fn set(statements: &[&str]) -> PolicySet {
        PolicySet::parse(&[doc(statements)]).expect("valid policy")
    }

    fn allowed(p: &PolicySet, action: Action, name: &str, f: &Facts) -> bool {
        p.evaluate(action, name, f).is_allowed()
    }

    #[test]
    fn each_action_is_checked_on_its_own_resource_type() {
        let p = set(&[
            &st(
                "Allow",
                r#""iot:Connect""#,
                &format!(r#""{ARN}:client/dev-1""#),
            ),
            &st(
                "Allow",
                r#"["iot:Publish","iot:Receive"]"#,
                &format!(r#""{ARN}:topic/a/b""#),
            ),
            &st(
                "Allow",
                r#""iot:Subscribe""#,
                &format!(r#""{ARN}:topicfilter/a/b""#),
            ),
        ]);
        let f = facts("dev-1");
        assert!(allowed(&p, Action::Connect, "dev-1", &f));
        assert!(allowed(&p, Action::Publish, "a/b", &f));
        assert!(allowed(&p, Action::Receive, "a/b", &f));
        assert!(allowed(&p, Action::Subscribe, "a/b", &f));
        // Denied: another client, topic or filter; a topic ARN does not allow a subscription,
        // and Publish does not imply RetainPublish.
        assert!(!allowed(&p, Action::Connect, "dev-2", &f));
        assert!(!allowed(&p, Action::Publish, "a/c", &f));
        assert!(!allowed(&p, Action::RetainPublish, "a/b", &f));
        let p = set(&[&st(
            "Allow",
            r#""iot:Subscribe""#,
            &format!(r#""{ARN}:topic/a/b""#),
        )]);
        assert!(!allowed(&p, Action::Subscribe, "a/b", &f));
        assert_eq!(
            p.evaluate(Action::Subscribe, "a/b", &f).to_string(),
            format!("no policy statement allows iot:Subscribe on {ARN}:topicfilter/a/b")
        );
    }

    #[test]
    fn iam_wildcards_and_literal_mqtt_wildcards() {
        let p = set(&[
            &st(
                "Allow",
                r#""iot:Subscribe""#,
                &format!(r#""{ARN}:topicfilter/some/+/topic""#),
            ),
            &st(
                "Allow",
                r#""iot:Subscribe""#,
                &format!(r#""{ARN}:topicfilter/x/*""#),
            ),
            &st(
                "Allow",
                r#""iot:Publish""#,
                &format!(r#""{ARN}:topic/room-?""#),
            ),
        ]);
        let f = facts("c");
        // `+` in a policy is the character '+': only the filter `some/+/topic` itself.
        assert!(allowed(&p, Action::Subscribe, "some/+/topic", &f));
        assert!(!allowed(&p, Action::Subscribe, "some/a/topic", &f));
        assert!(!allowed(&p, Action::Subscribe, "some/#", &f));
        // `*` crosses levels and matches MQTT wildcards too.
        assert!(allowed(&p, Action::Subscribe, "x/a/b/c", &f));
        assert!(allowed(&p, Action::Subscribe, "x/#", &f));
        assert!(!allowed(&p, Action::Subscribe, "y/a", &f));
        // `?` is exactly one character.
        assert!(allowed(&p, Action::Publish, "room-1", &f));
        assert!(!allowed(&p, Action::Publish, "room-12", &f));
        assert!(!allowed(&p, Action::Publish, "room-", &f));
        // Actions match case-insensitively and with wildcards; resources are case-sensitive.
        let p = set(&[&st(
            "Allow",
            r#""IOT:pub*""#,
            &format!(r#""{ARN}:topic/A""#),
        )]);
        assert!(allowed(&p, Action::Publish, "A", &f));
        assert!(!allowed(&p, Action::Publish, "a", &f));
        assert!(!allowed(&p, Action::Receive, "A", &f));
    }

    #[test]
    fn an_explicit_deny_wins_across_documents() {
        let allow = doc(&[&st("Allow", r#""iot:*""#, r#""*""#)]);
        let deny = doc(&[&format!(
            r#"{{"Sid":"no-secrets","Effect":"Deny","Action":"iot:Publish","Resource":"{ARN}:topic/secret/*"}}"#
        )]);
        let p = PolicySet::parse(&[&allow, &deny]).unwrap();
        let f = facts("c");
        assert!(allowed(&p, Action::Publish, "open/x", &f));
        let v = p.evaluate(Action::Publish, "secret/x", &f);
        assert_eq!(
            v.to_string(),
            format!(
                "policy document 2, statement 1 (Sid \"no-secrets\") explicitly denies \
                 iot:Publish on {ARN}:topic/secret/x"
            )
        );
        // The Deny is on Publish only.
        assert!(allowed(&p, Action::Receive, "secret/x", &f));
    }

    #[test]
    fn not_action_and_not_resource() {
        let f = facts("c");
        // Everything but Publish.
        let p = set(&[r#"{"Effect":"Allow","NotAction":"iot:Publish","Resource":"*"}"#]);
        assert!(allowed(&p, Action::Subscribe, "a", &f));
        assert!(allowed(&p, Action::Receive, "a", &f));
        assert!(!allowed(&p, Action::Publish, "a", &f));
        // The documented fix: Deny Receive on everything except a/public/*.
        let p = set(&[
            &st("Allow", r#""iot:*""#, r#""*""#),
            &format!(
                r#"{{"Effect":"Deny","Action":"iot:Receive","NotResource":"{ARN}:topic/a/public/*"}}"#
            ),
        ]);
        assert!(allowed(&p, Action::Receive, "a/public/x", &f));
        assert!(!allowed(&p, Action::Receive, "a/restricted/x", &f));
        assert!(allowed(&p, Action::Subscribe, "a/#", &f));
    }

    #[test]
    fn client_id_variable_is_literal_text() {
        let p = set(&[&st(
            "Allow",
            r#"["iot:Connect","iot:Subscribe"]"#,
            &format!(
                r#"["{ARN}:client/${{iot:ClientId}}","{ARN}:topicfilter/my/${{iot:ClientId}}/topic"]"#
            ),
        )]);
        assert!(allowed(&p, Action::Connect, "dev-1", &facts("dev-1")));
        assert!(!allowed(&p, Action::Connect, "dev-2", &facts("dev-1")));
        assert!(allowed(
            &p,
            Action::Subscribe,
            "my/dev-1/topic",
            &facts("dev-1")
        ));
        assert!(!allowed(
            &p,
            Action::Subscribe,
            "my/dev-2/topic",
            &facts("dev-1")
        ));
        // A client id with wildcard characters is its own literal text, not a wildcard.
        assert!(allowed(&p, Action::Connect, "a*", &facts("a*")));
        assert!(!allowed(&p, Action::Subscribe, "my/x/topic", &facts("*")));
        // The case AWS warns about: client id `+` makes the filter `my/+/topic` allowed.
        assert!(allowed(&p, Action::Subscribe, "my/+/topic", &facts("+")));
    }

    #[test]
    fn escapes_are_literal_characters() {
        let p = set(&[&st(
            "Allow",
            r#""iot:Publish""#,
            &format!(r#"["{ARN}:topic/q${{?}}","{ARN}:topic/star$(*)","{ARN}:topic/${{$}}aws/x"]"#),
        )]);
        let f = facts("c");
        assert!(allowed(&p, Action::Publish, "q?", &f));
        assert!(!allowed(&p, Action::Publish, "qx", &f));
        assert!(allowed(&p, Action::Publish, "star*", &f));
        assert!(!allowed(&p, Action::Publish, "starx", &f));
        assert!(allowed(&p, Action::Publish, "$aws/x", &f));
    }

    #[test]
    fn certificate_and_thing_variables() {
        let p = set(&[&st(
            "Allow",
            r#""iot:Publish""#,
            &format!(
                r#"["{ARN}:topic/cn/${{iot:Certificate.Subject.CommonName}}","{ARN}:topic/ou2/${{iot:Certificate.Subject.OrganizationalUnit.1}}","{ARN}:topic/issuer/${{iot:Certificate.Issuer.Organization}}","{ARN}:topic/thing/${{iot:Connection.Thing.ThingName}}","{ARN}:topic/room/${{iot:Connection.Thing.Attributes[room]}}"]"#
            ),
        )]);
        let mut f = facts("c");
        // No certificate, no thing: those variables have no value and match nothing.
        assert!(!allowed(&p, Action::Publish, "cn/", &f));
        assert!(!allowed(&p, Action::Publish, "thing/", &f));
        f.certificate = Some(CertificateNames {
            subject: vec![
                ("CommonName".into(), "dev-1".into()),
                ("OrganizationalUnit".into(), "first".into()),
                ("OrganizationalUnit".into(), "second".into()),
            ],
            issuer: vec![("Organization".into(), "Acme".into())],
        });
        f.thing = Some(Thing {
            name: "lamp".into(),
            type_name: None,
            attributes: [("room".to_string(), "kitchen".to_string())].into(),
        });
        assert!(allowed(&p, Action::Publish, "cn/dev-1", &f));
        assert!(!allowed(&p, Action::Publish, "cn/dev-2", &f));
        assert!(allowed(&p, Action::Publish, "ou2/second", &f));
        assert!(!allowed(&p, Action::Publish, "ou2/first", &f));
        assert!(allowed(&p, Action::Publish, "issuer/Acme", &f));
        assert!(allowed(&p, Action::Publish, "thing/lamp", &f));
        assert!(allowed(&p, Action::Publish, "room/kitchen", &f));
        assert!(!allowed(&p, Action::Publish, "room/hall", &f));
    }

    fn with_condition(condition: &str) -> PolicySet {
        set(&[&format!(
            r#"{{"Effect":"Allow","Action":"iot:*","Resource":"*","Condition":{condition}}}"#
        )])
    }

    #[test]
    fn string_conditions() {
        let p = with_condition(r#"{"StringEquals":{"iot:ClientId":["a","b"]}}"#);
        assert!(allowed(&p, Action::Publish, "t", &facts("b")));
        assert!(!allowed(&p, Action::Publish, "t", &facts("B")));
        let p = with_condition(r#"{"StringEqualsIgnoreCase":{"iot:ClientId":"a"}}"#);
        assert!(allowed(&p, Action::Publish, "t", &facts("A")));
        let p = with_condition(r#"{"StringNotEquals":{"iot:ClientId":"a"}}"#);
        assert!(allowed(&p, Action::Publish, "t", &facts("b")));
        assert!(!allowed(&p, Action::Publish, "t", &facts("a")));
        let p = with_condition(r#"{"StringLike":{"iot:ClientId":"dev-*"}}"#);
        assert!(allowed(&p, Action::Publish, "t", &facts("dev-9")));
        assert!(!allowed(&p, Action::Publish, "t", &facts("prod-9")));
        let p = with_condition(r#"{"StringNotLike":{"iot:ClientId":"dev-*"}}"#);
        assert!(!allowed(&p, Action::Publish, "t", &facts("dev-9")));
        // Two operators: both must hold.
        let p = with_condition(
            r#"{"StringLike":{"iot:ClientId":"dev-*"},"StringNotEquals":{"iot:ClientId":"dev-0"}}"#,
        );
        assert!(allowed(&p, Action::Publish, "t", &facts("dev-1")));
        assert!(!allowed(&p, Action::Publish, "t", &facts("dev-0")));
    }

    #[test]
    fn absent_keys_if_exists_and_null() {
        // No thing attached: ThingName is absent, so StringEquals fails...
        let p = with_condition(r#"{"StringEquals":{"iot:Connection.Thing.ThingName":"lamp"}}"#);
        assert!(!allowed(&p, Action::Publish, "t", &facts("c")));
        // ...a negated operator holds...
        let p = with_condition(r#"{"StringNotEquals":{"iot:Connection.Thing.ThingName":"lamp"}}"#);
        assert!(allowed(&p, Action::Publish, "t", &facts("c")));
        // ...and so does ...IfExists.
        let p =
            with_condition(r#"{"StringEqualsIfExists":{"iot:Connection.Thing.ThingName":"lamp"}}"#);
        assert!(allowed(&p, Action::Publish, "t", &facts("c")));
        let p = with_condition(r#"{"Null":{"iot:Connection.Thing.ThingName":"true"}}"#);
        assert!(allowed(&p, Action::Publish, "t", &facts("c")));
        let p = with_condition(r#"{"Null":{"iot:Connection.Thing.ThingName":"false"}}"#);
        assert!(!allowed(&p, Action::Publish, "t", &facts("c")));
        let p = with_condition(r#"{"Bool":{"iot:Connection.Thing.IsAttached":"true"}}"#);
        assert!(!allowed(&p, Action::Publish, "t", &facts("c")));
        let mut f = facts("c");
        f.thing = Some(Thing {
            name: "lamp".into(),
            ..Thing::default()
        });
        assert!(allowed(&p, Action::Publish, "t", &f));
    }

    #[test]
    fn connect_attributes_and_last_will_exist_only_for_connect() {
        let p = with_condition(
            r#"{"ForAnyValue:StringEquals":{"iot:ConnectAttributes":["PersistentConnect"]}}"#,
        );
        let mut f = facts("c");
        assert!(!allowed(&p, Action::Connect, "c", &f));
        f.connect.persistent = true;
        assert!(allowed(&p, Action::Connect, "c", &f));
        assert!(!allowed(&p, Action::Publish, "t", &f));
        // ForAllValues: every requested attribute must be listed (an empty set passes).
        let p = with_condition(
            r#"{"ForAllValues:StringEquals":{"iot:ConnectAttributes":["PersistentConnect"]}}"#,
        );
        assert!(allowed(&p, Action::Connect, "c", &facts("c")));
        f.connect.last_will_topic = Some("will/c".into());
        assert!(!allowed(&p, Action::Connect, "c", &f));
        let p = with_condition(r#"{"StringLike":{"iot:LastWillTopic":"will/${iot:ClientId}"}}"#);
        assert!(allowed(&p, Action::Connect, "c", &f));
        f.connect.last_will_topic = Some("will/other".into());
        assert!(!allowed(&p, Action::Connect, "c", &f));
    }

    #[test]
    fn source_ip_conditions() {
        let p = with_condition(r#"{"IpAddress":{"aws:SourceIp":["127.0.0.0/8","::1"]}}"#);
        let mut f = facts("c");
        assert!(allowed(&p, Action::Publish, "t", &f));
        f.source_ip = Some("10.1.2.3".parse().unwrap());
        assert!(!allowed(&p, Action::Publish, "t", &f));
        f.source_ip = Some("::1".parse().unwrap());
        assert!(allowed(&p, Action::Publish, "t", &f));
        f.source_ip = Some("::ffff:127.0.0.2".parse().unwrap());
        assert!(allowed(&p, Action::Publish, "t", &f));
        let p = with_condition(r#"{"NotIpAddress":{"aws:SourceIp":"127.0.0.1"}}"#);
        assert!(allowed(&p, Action::Publish, "t", &facts_at("127.0.0.2")));
        assert!(!allowed(&p, Action::Publish, "t", &facts_at("127.0.0.1")));
    }

    fn facts_at(ip: &str) -> Facts {
        Facts {
            source_ip: Some(ip.parse().unwrap()),
            ..facts("c")
        }
    }

    #[test]
    fn what_is_not_supported_is_refused_not_skipped() {
        let refused = |statement: &str| PolicySet::parse(&[doc(&[statement])]).unwrap_err();
        let e = refused(
            r#"{"Effect":"Allow","Action":"iot:*","Resource":"*","Condition":{"DateLessThan":{"aws:CurrentTime":"2030-01-01T00:00:00Z"}}}"#,
        );
        assert_eq!(
            e.to_string(),
            "policy document 1: statement 1: the condition operator \"DateLessThan\" is not \
             supported by iot-core-local, so the document is refused rather than evaluated \
             differently from AWS"
        );
        let e = refused(
            r#"{"Effect":"Deny","Action":"iot:*","Resource":"*","Condition":{"StringEquals":{"aws:PrincipalTag/x":"y"}}}"#,
        );
        assert!(
            e.to_string()
                .contains("the condition key \"aws:PrincipalTag/x\""),
            "{e}"
        );
        let e = refused(r#"{"Effect":"Allow","Action":"iot:*","Resource":"${aws:username}"}"#);
        assert!(
            e.to_string()
                .contains("the policy variable ${aws:username}"),
            "{e}"
        );
        let e = refused(r#"{"Effect":"Allow","Principal":"*","Action":"iot:*","Resource":"*"}"#);
        assert!(e.to_string().contains("the element \"Principal\""), "{e}");
        let e = refused(
            r#"{"Effect":"Allow","Action":"iot:*","Resource":"*","Condition":{"StringEquals":{"iot:ConnectAttributes":"LastWill"}}}"#,
        );
        assert!(e.to_string().contains("ForAnyValue"), "{e}");
        let e = refused(
            r#"{"Effect":"Allow","Action":"iot:*","NotAction":"iot:Publish","Resource":"*"}"#,
        );
        assert_eq!(
            e,
            PolicyError {
                document: 1,
                problem: DocumentError::Statement {
                    statement: 1,
                    problem: StatementError::Both { element: "Action" }
                }
            }
        );
        assert_eq!(
            e.to_string(),
            "policy document 1: statement 1: has both Action and NotAction"
        );
        let e = refused(r#"{"Effect":"allow","Action":"iot:*","Resource":"*"}"#);
        assert!(e.to_string().contains("Effect must be"), "{e}");
        let e = refused(
            r#"{"Effect":"Allow","Action":"iot:*","Resource":"*","Condition":{"IpAddress":{"aws:SourceIp":"localhost"}}}"#,
        );
        assert!(e.to_string().contains("not an IP address"), "{e}");
        assert!(matches!(
            PolicySet::parse(&["{"]),
            Err(PolicyError {
                document: 1,
                problem: DocumentError::NotJson { .. }
            })
        ));
        let ok = doc(&[&st("Allow", r#""iot:*""#, r#""*""#)]);
        assert_eq!(
            PolicySet::parse(&[ok.as_str(), "{}"]).unwrap_err(),
            PolicyError {
                document: 2,
                problem: DocumentError::NoStatement
            }
        );
    }

    // What the iot:Connect-only evaluator's tests covered, on the engine.

    #[test]
    fn action_wildcards_and_case() {
        for action in [
            r#""iot:*""#,
            r#""*""#,
            r#""IOT:connect""#,
            r#""iot:Conn?ct""#,
        ] {
            let p = set(&[&st("Allow", action, r#""*""#)]);
            assert!(
                allowed(&p, Action::Connect, "test-1", &facts("test-1")),
                "{action}"
            );
        }
        for action in [r#""iot:Connect*x""#, r#""iotdata:*""#, r#""iot:Connec""#] {
            let p = set(&[&st("Allow", action, r#""*""#)]);
            assert!(
                !allowed(&p, Action::Connect, "test-1", &facts("test-1")),
                "{action}"
            );
        }
    }

    #[test]
    fn client_resources_prefix_exact_and_question_mark() {
        let p = set(&[&st(
            "Allow",
            r#""iot:Connect""#,
            &format!(r#"["{ARN}:client/test-?","{ARN}:client/exact"]"#),
        )]);
        for (id, expected) in [
            ("test-7", true),
            ("test-", false),
            ("test-77", false),
            ("exact", true),
            ("exact2", false),
        ] {
            assert_eq!(
                allowed(&p, Action::Connect, id, &facts(id)),
                expected,
                "{id}"
            );
        }
        let escaped = set(&[&st(
            "Allow",
            r#""iot:Connect""#,
            &format!(r#""{ARN}:client/a${{*}}""#),
        )]);
        assert!(allowed(&escaped, Action::Connect, "a*", &facts("a*")));
        assert!(!allowed(&escaped, Action::Connect, "ab", &facts("ab")));
    }

    #[test]
    fn other_region_or_account_does_not_match_and_resources_are_case_sensitive() {
        for resource in [
            r#""arn:aws:iot:eu-west-1:123456789012:client/*""#,
            r#""arn:aws:iot:us-east-1:210987654321:client/*""#,
            r#""arn:aws:iot:us-east-1:123456789012:client/Test-1""#,
        ] {
            let p = set(&[&st("Allow", r#""iot:Connect""#, resource)]);
            assert!(
                !allowed(&p, Action::Connect, "test-1", &facts("test-1")),
                "{resource}"
            );
        }
        let any = set(&[&st(
            "Allow",
            r#""iot:Connect""#,
            r#""arn:aws:iot:*:*:client/test-1""#,
        )]);
        assert!(allowed(&any, Action::Connect, "test-1", &facts("test-1")));
    }

    #[test]
    fn single_statement_object_form_and_no_documents() {
        let d = format!(
            r#"{{"Statement":{{"Effect":"Allow","Action":"iot:Connect","Resource":"{ARN}:client/*"}}}}"#
        );
        let p = PolicySet::parse(&[d]).expect("valid");
        assert!(allowed(&p, Action::Connect, "x", &facts("x")));
        let none = PolicySet::parse::<&str>(&[]).expect("no documents");
        assert_eq!(
            none.evaluate(Action::Connect, "foo", &facts("foo")).to_string(),
            "no policy statement allows iot:Connect on arn:aws:iot:us-east-1:123456789012:client/foo"
        );
    }

    #[test]
    fn an_explicit_deny_names_its_statement() {
        let allow = st("Allow", r#""iot:*""#, r#""*""#);
        let deny = st(
            "Deny",
            r#""iot:Connect""#,
            &format!(r#""{ARN}:client/test-*""#),
        );
        for p in [set(&[&allow, &deny]), set(&[&deny, &allow])] {
            let v = p.evaluate(Action::Connect, "test-1", &facts("test-1"));
            assert!(!v.is_allowed());
            assert!(
                v.to_string().ends_with(
                    "explicitly denies iot:Connect on arn:aws:iot:us-east-1:123456789012:client/test-1"
                ),
                "{v}"
            );
            assert!(allowed(&p, Action::Connect, "prod-1", &facts("prod-1")));
        }
    }

    #[test]
    fn malformed_documents_are_reported() {
        let good = doc(&[&st("Allow", r#""*""#, r#""*""#)]);
        let err = PolicySet::parse(&[good.as_str(), "{\"Statement\": ["]).expect_err("not JSON");
        assert!(
            matches!(err.problem, DocumentError::NotJson { .. }),
            "{err:?}"
        );
        assert_eq!(err.document, 2);
        assert!(
            err.to_string()
                .starts_with("policy document 2: not valid JSON: EOF while parsing"),
            "{err}"
        );
        let cases = [
            (r#"{"Version":"2012-10-17"}"#, DocumentError::NoStatement),
            (r#"[]"#, DocumentError::NotAnObject),
            (r#"{"Statement":"x"}"#, DocumentError::BadStatementList),
            (
                r#"{"Statement":[1]}"#,
                DocumentError::Statement {
                    statement: 1,
                    problem: StatementError::NotAnObject,
                },
            ),
            (
                r#"{"Statement":[{"Effect":"Allow","Resource":"*"}]}"#,
                DocumentError::Statement {
                    statement: 1,
                    problem: StatementError::Missing { element: "Action" },
                },
            ),
        ];
        for (document, problem) in cases {
            let err = PolicySet::parse(&[document]).expect_err(document);
            assert_eq!(
                err,
                PolicyError {
                    document: 1,
                    problem
                },
                "{document}"
            );
        }
        let err = PolicySet::parse(&[
            r#"{"Statement":[{"Effect":"allow","Action":"*","Resource":"*"}]}"#,
        ])
        .expect_err("lower-case effect");
        assert_eq!(
            err.to_string(),
            "policy document 1: statement 1: Effect must be \"Allow\" or \"Deny\", not \"allow\""
        );
    }
}
