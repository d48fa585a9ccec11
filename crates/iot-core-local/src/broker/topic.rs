//! Topic names and filters: what is valid, and which filter matches which topic, with IoT Core's
//! one departure from MQTT: `sensor/#` matches `sensor/` and deeper, but not `sensor`.

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
}
