//! Topic names and filters: what is valid, IoT Core's size and depth limits on them, and which
//! filter matches which topic, with IoT Core's one departure from MQTT: `sensor/#` matches
//! `sensor/` and deeper, but not `sensor`.

/// IoT Core's longest topic name or filter, in bytes of UTF-8, not counting an exempt prefix.
pub const MAX_TOPIC_BYTES: usize = 256;
/// IoT Core's most `/` in a topic name or filter (8 levels), not counting an exempt prefix.
pub const MAX_TOPIC_SLASHES: usize = 7;
/// The longest share name of a `$share/<name>/` filter, in characters.
pub const MAX_SHARE_NAME: usize = 128;
/// The prefix of Basic Ingest topics, `$aws/rules/<rule>/<topic>`.
pub const RULES_PREFIX: &str = "$aws/rules/";

/// Why a topic name or filter is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error("the topic is empty")]
    Empty,
    #[error("a topic name may not contain '+' or '#'")]
    WildcardInName,
    #[error("'#' must be the last level, alone")]
    BadMultiLevel,
    #[error("'+' must be alone in its level")]
    BadSingleLevel,
    #[error(
        "a shared subscription must be $share/<name>/<filter> with a name without '+', '#' or '/'"
    )]
    BadShare,
}

/// Check a topic name (PUBLISH, will).
pub fn check_name(topic: &str) -> Result<(), TopicError> {
    if topic.is_empty() {
        return Err(TopicError::Empty);
    }
    if topic.contains(['+', '#']) {
        return Err(TopicError::WildcardInName);
    }
    Ok(())
}

/// A topic name or filter beyond IoT Core's limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error(
        "it has {bytes} bytes{}, above IoT Core's limit of {MAX_TOPIC_BYTES}",
        not_counting(*.exempt)
    )]
    TooLong {
        bytes: usize,
        exempt: Option<&'static str>,
    },
    #[error(
        "it has {slashes} '/'{}, above IoT Core's limit of {MAX_TOPIC_SLASHES} (8 levels)",
        not_counting(*.exempt)
    )]
    TooDeep {
        slashes: usize,
        exempt: Option<&'static str>,
    },
    #[error("its share name has {chars} characters, above IoT Core's limit of {MAX_SHARE_NAME}")]
    ShareNameTooLong { chars: usize },
}

fn not_counting(exempt: Option<&str>) -> String {
    exempt
        .map(|prefix| format!(" (not counting the {prefix} prefix)"))
        .unwrap_or_default()
}

/// A Basic Ingest topic split into its rule name and the topic after `$aws/rules/<rule>/` (which
/// may be empty); `None` for any other topic.
pub fn basic_ingest(topic: &str) -> Option<(&str, &str)> {
    let (rule, rest) = topic.strip_prefix(RULES_PREFIX)?.split_once('/')?;
    (!rule.is_empty()).then_some((rule, rest))
}

/// IoT Core's limits on a topic name (PUBLISH, will): at most [`MAX_TOPIC_BYTES`] bytes and
/// [`MAX_TOPIC_SLASHES`] slashes, the `$aws/rules/<rule>/` prefix not counted.
pub fn check_name_limits(topic: &str) -> Result<(), LimitError> {
    match basic_ingest(topic) {
        Some((_, rest)) => measure(rest, Some("$aws/rules/<rule>/")),
        None => measure(topic, None),
    }
}

/// IoT Core's limits on a parsed filter: those of a topic name on the filter after
/// `$share/<name>/`, and at most [`MAX_SHARE_NAME`] characters of share name.
pub fn check_filter_limits(filter: &Filter<'_>) -> Result<(), LimitError> {
    match filter.share {
        Some(name) => {
            let chars = name.chars().count();
            if chars > MAX_SHARE_NAME {
                return Err(LimitError::ShareNameTooLong { chars });
            }
            measure(filter.filter, Some("$share/<name>/"))
        }
        None => measure(filter.filter, None),
    }
}

fn measure(text: &str, exempt: Option<&'static str>) -> Result<(), LimitError> {
    if text.len() > MAX_TOPIC_BYTES {
        return Err(LimitError::TooLong {
            bytes: text.len(),
            exempt,
        });
    }
    let slashes = text.bytes().filter(|&b| b == b'/').count();
    if slashes > MAX_TOPIC_SLASHES {
        return Err(LimitError::TooDeep { slashes, exempt });
    }
    Ok(())
}

/// A parsed subscription filter: the share group, if any, and the filter that matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Filter<'a> {
    pub share: Option<&'a str>,
    pub filter: &'a str,
}

/// Check a topic filter (SUBSCRIBE, UNSUBSCRIBE), splitting off `$share/<name>/`.
pub fn parse_filter(full: &str) -> Result<Filter<'_>, TopicError> {
    let (share, filter) = match full.strip_prefix("$share/") {
        Some(rest) => {
            let (name, filter) = rest.split_once('/').ok_or(TopicError::BadShare)?;
            if name.is_empty() || name.contains(['+', '#']) || filter.is_empty() {
                return Err(TopicError::BadShare);
            }
            (Some(name), filter)
        }
        None => (None, full),
    };
    if filter.is_empty() {
        return Err(TopicError::Empty);
    }
    let levels: Vec<&str> = filter.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        if level.contains('#') && (*level != "#" || i + 1 != levels.len()) {
            return Err(TopicError::BadMultiLevel);
        }
        if level.contains('+') && *level != "+" {
            return Err(TopicError::BadSingleLevel);
        }
    }
    Ok(Filter { share, filter })
}

/// Whether `filter` (already checked, without `$share/`) matches the topic name `topic`.
///
/// `+` matches one level (possibly empty), `#` one or more remaining levels: unlike MQTT,
/// `a/#` does not match `a` (IoT Core). A filter starting with a wildcard does not match a
/// topic starting with `$`.
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), Some(_)) => return true,
            (Some("+"), Some(_)) => {}
            (Some(fl), Some(tl)) if fl == tl => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_level_wildcard_needs_a_level_below() {
        assert!(!matches("sensor/#", "sensor"), "IoT Core: not the parent");
        assert!(matches("sensor/#", "sensor/"));
        assert!(matches("sensor/#", "sensor/a/b"));
        assert!(matches("#", "a"));
        assert!(matches("#", "a/b/c"));
        assert!(!matches("sensor/#", "sensors/a"));
    }

    #[test]
    fn single_level_wildcard_is_one_level() {
        assert!(matches("a/+/c", "a/b/c"));
        assert!(matches("a/+/c", "a//c"));
        assert!(!matches("a/+/c", "a/b/d/c"));
        assert!(!matches("a/+", "a"));
        assert!(matches("+", "a"));
        assert!(!matches("+", "a/b"));
        assert!(matches("a/b", "a/b"));
        assert!(!matches("a/b", "a/b/c"));
        assert!(!matches("a/b/c", "a/b"));
    }

    #[test]
    fn leading_wildcards_skip_dollar_topics() {
        assert!(!matches("#", "$aws/things/x/shadow/update"));
        assert!(!matches("+/things/#", "$aws/things/x"));
        assert!(matches(
            "$aws/things/+/shadow/#",
            "$aws/things/x/shadow/update"
        ));
        assert!(matches("$aws/things/x", "$aws/things/x"));
    }

    #[test]
    fn names_and_filters_are_checked() {
        assert_eq!(check_name(""), Err(TopicError::Empty));
        assert_eq!(check_name("a/+"), Err(TopicError::WildcardInName));
        assert_eq!(check_name("a/#"), Err(TopicError::WildcardInName));
        assert_eq!(check_name("a//b/"), Ok(()));
        assert_eq!(parse_filter("a/#/b"), Err(TopicError::BadMultiLevel));
        assert_eq!(parse_filter("a#"), Err(TopicError::BadMultiLevel));
        assert_eq!(parse_filter("a/b+"), Err(TopicError::BadSingleLevel));
        assert_eq!(parse_filter(""), Err(TopicError::Empty));
        assert_eq!(
            parse_filter("a/+/#"),
            Ok(Filter {
                share: None,
                filter: "a/+/#"
            })
        );
        assert_eq!(
            parse_filter("$share/g1/a/+"),
            Ok(Filter {
                share: Some("g1"),
                filter: "a/+"
            })
        );
        assert_eq!(parse_filter("$share/g1"), Err(TopicError::BadShare));
        assert_eq!(parse_filter("$share//a"), Err(TopicError::BadShare));
        assert_eq!(parse_filter("$share/g+/a"), Err(TopicError::BadShare));
        assert_eq!(parse_filter("$share/g/"), Err(TopicError::BadShare));
    }

    /// `levels` levels of "a" joined with '/', the last padded with "x" to `bytes` bytes.
    fn topic_of(levels: usize, bytes: usize) -> String {
        let mut t = vec!["a"; levels].join("/");
        t.push_str(&"x".repeat(bytes - t.len()));
        t
    }

    #[test]
    fn topic_names_are_limited_to_256_bytes_and_7_slashes() {
        assert_eq!(check_name_limits(&topic_of(8, 256)), Ok(()));
        assert_eq!(
            check_name_limits(&topic_of(8, 257)),
            Err(LimitError::TooLong {
                bytes: 257,
                exempt: None
            })
        );
        assert_eq!(
            check_name_limits(&topic_of(9, 20)),
            Err(LimitError::TooDeep {
                slashes: 8,
                exempt: None
            })
        );
        assert_eq!(
            check_name_limits("a/b/c/d/e/f/g/h/")
                .unwrap_err()
                .to_string(),
            "it has 8 '/', above IoT Core's limit of 7 (8 levels)"
        );
        // A multi-byte character counts its UTF-8 bytes.
        assert!(check_name_limits(&"é".repeat(129)).is_err());
        assert_eq!(check_name_limits(&"é".repeat(128)), Ok(()));
    }

    #[test]
    fn the_basic_ingest_prefix_is_not_counted() {
        let rest = topic_of(8, 256);
        assert_eq!(check_name_limits(&format!("$aws/rules/r1/{rest}")), Ok(()));
        let long = topic_of(8, 257);
        let err = check_name_limits(&format!("$aws/rules/r1/{long}")).unwrap_err();
        assert_eq!(
            err,
            LimitError::TooLong {
                bytes: 257,
                exempt: Some("$aws/rules/<rule>/")
            }
        );
        assert_eq!(
            err.to_string(),
            "it has 257 bytes (not counting the $aws/rules/<rule>/ prefix), above IoT Core's limit of 256"
        );
        assert_eq!(
            check_name_limits(&format!("$aws/rules/r1/{}", topic_of(9, 20))),
            Err(LimitError::TooDeep {
                slashes: 8,
                exempt: Some("$aws/rules/<rule>/")
            })
        );
        // Without a rule name there is no prefix to exempt: the whole topic is measured.
        assert_eq!(
            check_name_limits(&format!("$aws/rules//{}", topic_of(6, 20))),
            Err(LimitError::TooDeep {
                slashes: 8,
                exempt: None
            })
        );
        assert_eq!(basic_ingest("$aws/rules/r1/a/b"), Some(("r1", "a/b")));
        assert_eq!(basic_ingest("$aws/rules/r1/"), Some(("r1", "")));
        assert_eq!(basic_ingest("$aws/rules/r1"), None);
        assert_eq!(basic_ingest("$aws/rules//a"), None);
        assert_eq!(basic_ingest("$aws/rulesx/r1/a"), None);
    }

    #[test]
    fn the_share_prefix_is_not_counted_but_the_share_name_is_limited() {
        let check = |full: &str| check_filter_limits(&parse_filter(full).expect("valid filter"));
        let filter = topic_of(8, 256);
        assert_eq!(check(&filter), Ok(()));
        assert_eq!(check(&format!("$share/g/{filter}")), Ok(()));
        assert_eq!(
            check(&format!("$share/g/{}", topic_of(8, 257))),
            Err(LimitError::TooLong {
                bytes: 257,
                exempt: Some("$share/<name>/")
            })
        );
        assert_eq!(
            check(&format!("$share/g/{}", topic_of(9, 20))),
            Err(LimitError::TooDeep {
                slashes: 8,
                exempt: Some("$share/<name>/")
            })
        );
        assert_eq!(
            check(&format!("{}/#", topic_of(8, 20))),
            Err(LimitError::TooDeep {
                slashes: 8,
                exempt: None
            })
        );
        let name = "n".repeat(128);
        assert_eq!(check(&format!("$share/{name}/a")), Ok(()));
        assert_eq!(
            check(&format!("$share/{name}n/a")),
            Err(LimitError::ShareNameTooLong { chars: 129 })
        );
    }
}
