//! Where a client's custom-authorizer credentials come from: the query after the last '?' of
//! the MQTT username, or the WebSocket upgrade's headers and query string.

use std::fmt;

use percent_encoding::percent_decode_str;

/// Parameter (and WebSocket header) naming the authorizer.
pub const NAME_PARAM: &str = "x-amz-customauthorizer-name";
/// Parameter (and WebSocket header) carrying the base64 token signature.
pub const SIGNATURE_PARAM: &str = "x-amz-customauthorizer-signature";
/// Usage metrics the official SDKs append to the username; never credentials.
const SDK_METRICS: [&str; 3] = ["SDK", "Platform", "Metadata"];

/// Where credentials came from; all optional. Percent-decoded values.
#[derive(Clone, Default)]
pub struct Presented {
    /// `x-amz-customauthorizer-name`, if given and non-empty.
    pub authorizer: Option<String>,
    /// `x-amz-customauthorizer-signature`, percent-decoded (so plain base64), if given.
    pub signature: Option<String>,
    /// Every other parameter (or header, name lower-cased), in the order seen.
    pub params: Vec<(String, String)>,
}

impl fmt::Debug for Presented {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Parameter values include the token: show the names only.
        let names: Vec<&str> = self.params.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("Presented")
            .field("authorizer", &self.authorizer)
            .field("signature", &self.signature.as_ref().map(|_| "<redacted>"))
            .field("param_names", &names)
            .finish()
    }
}

/// Parameters after the LAST '?' of an MQTT username, in any order; `SDK`, `Platform`,
/// `Metadata` (the SDK usage metrics) ignored. A username without '?' presents nothing.
pub fn from_username(username: &str) -> Presented {
    let mut p = Presented::default();
    if let Some(i) = username.rfind('?') {
        p.add_query(&username[i + 1..]);
    }
    p
}

/// From WebSocket upgrade headers (names case-insensitive) and the upgrade query string
/// (with or without its leading '?'). Headers win over query parameters of the same name.
pub fn from_http(headers: &[(String, String)], raw_query: &str) -> Presented {
    let mut p = Presented::default();
    for (name, value) in headers {
        let name = name.to_ascii_lowercase();
        if name == NAME_PARAM {
            set_once(&mut p.authorizer, value.trim().to_string());
        } else if name == SIGNATURE_PARAM {
            // Base64 has no '%': decoding is a no-op on a raw signature and undoes an encoded one.
            set_once(&mut p.signature, decode(value.trim()));
        } else {
            p.params.push((name, value.clone()));
        }
    }
    let mut q = Presented::default();
    q.add_query(raw_query.strip_prefix('?').unwrap_or(raw_query));
    p.merge(q)
}

fn decode(s: &str) -> String {
    percent_decode_str(s).decode_utf8_lossy().into_owned()
}

/// The first non-empty value wins.
fn set_once(slot: &mut Option<String>, value: String) {
    if slot.is_none() && !value.is_empty() {
        *slot = Some(value);
    }
}

impl Presented {
    fn add_query(&mut self, query: &str) {
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let (k, v) = (decode(k), decode(v));
            if k.eq_ignore_ascii_case(NAME_PARAM) {
                set_once(&mut self.authorizer, v);
            } else if k.eq_ignore_ascii_case(SIGNATURE_PARAM) {
                set_once(&mut self.signature, v);
            } else if !k.is_empty() && !SDK_METRICS.contains(&k.as_str()) {
                self.params.push((k, v));
            }
        }
    }

    /// `self` wins; `other` fills what `self` lacks, and its params come after `self`'s.
    pub fn merge(mut self, other: Presented) -> Presented {
        self.authorizer = self.authorizer.or(other.authorizer);
        self.signature = self.signature.or(other.signature);
        self.params.extend(other.params);
        self
    }

    /// The value of the token parameter `key_name`: an exact name match first, then a
    /// case-insensitive one (HTTP header names are case-insensitive).
    pub fn token(&self, key_name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == key_name)
            .or_else(|| {
                self.params
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(key_name))
            })
            .map(|(_, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::custom_auth::test_support::vector_cases;

    #[test]
    fn username_params_after_the_last_question_mark_in_any_order() {
        let python = from_username(
            "dev?x-amz-customauthorizer-name=auth1&x-amz-customauthorizer-signature=c2ln&token=t1",
        );
        let node = from_username(
            "dev?x-amz-customauthorizer-name=auth1&token=t1&x-amz-customauthorizer-signature=c2ln",
        );
        for p in [&python, &node] {
            assert_eq!(p.authorizer.as_deref(), Some("auth1"));
            assert_eq!(p.signature.as_deref(), Some("c2ln"));
            assert_eq!(p.params, vec![("token".to_string(), "t1".to_string())]);
            assert_eq!(p.token("token"), Some("t1"));
        }
        // Only the part after the last '?' counts.
        let p = from_username(
            "a?x-amz-customauthorizer-name=first?x-amz-customauthorizer-name=second&k=v",
        );
        assert_eq!(p.authorizer.as_deref(), Some("second"));
        assert_eq!(p.token("k"), Some("v"));
    }

    #[test]
    fn username_sdk_metrics_are_ignored() {
        let p = from_username(
            "u?SDK=PythonV2&Version=1.31&Platform=Linux&Metadata=(x)&x-amz-customauthorizer-name=a",
        );
        assert_eq!(p.authorizer.as_deref(), Some("a"));
        assert_eq!(p.params, vec![("Version".to_string(), "1.31".to_string())]);
        assert_eq!(p.token("SDK"), None);
    }

    #[test]
    fn username_signature_is_percent_decoded() {
        for c in vector_cases() {
            let username = format!(
                "dev?x-amz-customauthorizer-name=auth&x-amz-customauthorizer-signature={}&token={}",
                c.url_encoded,
                percent_encoding::utf8_percent_encode(&c.token, percent_encoding::NON_ALPHANUMERIC)
            );
            let p = from_username(&username);
            assert_eq!(p.signature.as_deref(), Some(c.base64.as_str()));
            assert_eq!(p.token("token"), Some(c.token.as_str()));
        }
    }

    #[test]
    fn username_without_question_mark_presents_nothing() {
        let p = from_username("demo-user");
        assert_eq!(p.authorizer, None);
        assert_eq!(p.signature, None);
        assert!(p.params.is_empty());
        let p = from_username("x-amz-customauthorizer-name=a");
        assert_eq!(
            p.authorizer, None,
            "no '?': the whole string is the user name"
        );
    }

    #[test]
    fn from_http_header_names_are_case_insensitive_and_the_query_counts() {
        let headers = vec![
            (
                "Host".to_string(),
                "example-ats.iot.us-east-1.amazonaws.com".to_string(),
            ),
            (
                "X-Amz-CustomAuthorizer-Name".to_string(),
                "auth1".to_string(),
            ),
            (
                "X-AMZ-CUSTOMAUTHORIZER-SIGNATURE".to_string(),
                "c2ln%2B".to_string(),
            ),
            ("MyToken".to_string(), "tok".to_string()),
        ];
        let p = from_http(&headers, "");
        assert_eq!(p.authorizer.as_deref(), Some("auth1"));
        assert_eq!(p.signature.as_deref(), Some("c2ln+"));
        assert_eq!(p.token("mytoken"), Some("tok"));
        assert_eq!(p.token("MyToken"), Some("tok"));

        let p = from_http(&[], "?x-amz-customauthorizer-name=q%2Dauth&x-amz-customauthorizer-signature=YQ%3D%3D&tk=a%20b");
        assert_eq!(p.authorizer.as_deref(), Some("q-auth"));
        assert_eq!(p.signature.as_deref(), Some("YQ=="));
        assert_eq!(p.token("tk"), Some("a b"));

        // Headers win over the query.
        let p = from_http(&headers, "x-amz-customauthorizer-name=other&tk=q");
        assert_eq!(p.authorizer.as_deref(), Some("auth1"));
        assert_eq!(p.token("tk"), Some("q"));
    }

    #[test]
    fn merge_keeps_self_first() {
        let a = from_username("u?x-amz-customauthorizer-name=from-user&token=1");
        let b = from_http(
            &[],
            "x-amz-customauthorizer-name=from-http&x-amz-customauthorizer-signature=s&token=2",
        );
        let m = a.merge(b);
        assert_eq!(m.authorizer.as_deref(), Some("from-user"));
        assert_eq!(m.signature.as_deref(), Some("s"));
        assert_eq!(m.token("token"), Some("1"));
    }

    #[test]
    fn presented_debug_redacts_signature_and_token() {
        let p = from_username("u?x-amz-customauthorizer-name=a&x-amz-customauthorizer-signature=SIGSECRET&token=TOKSECRET");
        let d = format!("{p:?}");
        assert!(!d.contains("SIGSECRET") && !d.contains("TOKSECRET"), "{d}");
        assert!(d.contains("<redacted>") && d.contains("\"token\""), "{d}");
    }
}
