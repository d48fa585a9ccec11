//! IoT Core's reserved topics: every topic that starts with `$` is reserved, and a client may use
//! only the documented ones, each as documented (the data-plane note, §4):
//!
//! - the request topics of the `$aws/...` services (shadows, named shadows included, jobs,
//!   certificates, provisioning templates, Device Defender, streams) may be published and
//!   subscribed to; their responses (`accepted`, `rejected`, `delta`, `documents`, `notify`, ...),
//!   the events under `$aws/events/`, tunnel notifications and SiteWise topics only subscribed
//!   to. Wildcards may stand for names and for anything after the service's own level
//!   (`$aws/things/+/shadow/#`), not for the service (`$aws/things/#` is refused);
//! - `$aws/rules/<rule>/<topic>` is Basic Ingest: published to the rules engine, never to
//!   subscribers, so never subscribed to;
//! - nothing else starting with `$` (`$SYS/...`, `$aws/foo`, ...), and never with RETAIN=1.
//!
//! `$share/<name>/` is not a reserved topic but a shared subscription: its filter is classified
//! here after the prefix (see [`super::topic::parse_filter`]).

use super::topic::{basic_ingest, RULES_PREFIX};

/// The documented families of `$aws/...` topics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// Device Shadow, classic and named (`$aws/things/<thing>/shadow/[name/<shadow>/]...`).
    Shadow,
    Jobs,
    /// Fleet provisioning: `$aws/certificates/create[-from-csr]/...`.
    Certificates,
    /// Fleet provisioning: `$aws/provisioning-templates/<template>/provision/...`.
    ProvisioningTemplates,
    Defender,
    /// MQTT-based file delivery.
    Streams,
    /// Secure tunneling notifications.
    Tunnels,
    /// Lifecycle, registry and job events (`$aws/events/...`).
    Events,
    Sitewise,
}

/// What a PUBLISH topic name is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Publish<'a> {
    /// Not reserved (does not start with `$`).
    Ordinary,
    /// A documented client-publishable `$aws/...` topic: a topic like any other.
    Reserved(Family),
    /// `$aws/rules/<rule>/<topic>`: acknowledged, for the rules engine only.
    BasicIngest { rule: &'a str },
}

/// Why a client may not use a reserved topic as it tried to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Unsupported {
    #[error("RETAIN=1 on a reserved topic ('$' prefix), which IoT Core does not allow")]
    Retain,
    #[error("Basic Ingest needs a topic after the rule name: $aws/rules/<rule>/<topic>")]
    BareRule,
    #[error(
        "a reserved topic ('$' prefix) that clients may not publish to: not one of the documented \
         $aws request topics or Basic Ingest"
    )]
    NotPublishable,
    #[error(
        "Basic Ingest topics ($aws/rules/...) go to the rules engine only and cannot be \
         subscribed to"
    )]
    RulesFilter,
    #[error(
        "a reserved topic filter ('$' prefix) that clients may not subscribe to: not within one \
         of the documented $aws topic families"
    )]
    NotSubscribable,
}

/// Whether a topic of the table may be published by clients, or only subscribed to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Use {
    Request,
    Response,
}

/// The documented topics, level by level: `*` is one name (any non-empty level), `(a|b)` one of
/// these words, `**` one or more levels of anything; any other level is itself.
const TOPICS: &[(Family, Use, &str)] = {
    use Family::*;
    use Use::*;
    &[
        (Shadow, Request, "$aws/things/*/shadow/(get|update|delete)"),
        (
            Shadow,
            Response,
            "$aws/things/*/shadow/(get|update|delete)/(accepted|rejected)",
        ),
        (Shadow, Response, "$aws/things/*/shadow/update/(delta|documents)"),
        (Shadow, Request, "$aws/things/*/shadow/name/*/(get|update|delete)"),
        (
            Shadow,
            Response,
            "$aws/things/*/shadow/name/*/(get|update|delete)/(accepted|rejected)",
        ),
        (
            Shadow,
            Response,
            "$aws/things/*/shadow/name/*/update/(delta|documents)",
        ),
        (Jobs, Request, "$aws/things/*/jobs/(get|start-next)"),
        (
            Jobs,
            Response,
            "$aws/things/*/jobs/(get|start-next)/(accepted|rejected)",
        ),
        (Jobs, Request, "$aws/things/*/jobs/*/(get|update)"),
        (
            Jobs,
            Response,
            "$aws/things/*/jobs/*/(get|update)/(accepted|rejected)",
        ),
        (Jobs, Response, "$aws/things/*/jobs/(notify|notify-next)"),
        (
            Certificates,
            Request,
            "$aws/certificates/(create|create-from-csr)/(json|cbor)",
        ),
        (
            Certificates,
            Response,
            "$aws/certificates/(create|create-from-csr)/(json|cbor)/(accepted|rejected)",
        ),
        (
            ProvisioningTemplates,
            Request,
            "$aws/provisioning-templates/*/provision/(json|cbor)",
        ),
        (
            ProvisioningTemplates,
            Response,
            "$aws/provisioning-templates/*/provision/(json|cbor)/(accepted|rejected)",
        ),
        (Defender, Request, "$aws/things/*/defender/metrics/(json|cbor)"),
        (
            Defender,
            Response,
            "$aws/things/*/defender/metrics/(json|cbor)/(accepted|rejected)",
        ),
        (
            Streams,
            Request,
            "$aws/things/*/streams/*/(get|describe)/(json|cbor)",
        ),
        (
            Streams,
            Response,
            "$aws/things/*/streams/*/(data|description|rejected)/(json|cbor)",
        ),
        (Tunnels, Response, "$aws/things/*/tunnels/notify"),
        (
            Events,
            Response,
            "$aws/events/(presence|subscriptions|thing|thingType|thingTypeAssociation|thingGroup|thingGroupMembership|thingGroupHierarchy|job|jobExecution|certificates)/**",
        ),
        (
            Sitewise,
            Response,
            "$aws/sitewise/asset-models/*/assets/*/properties/*",
        ),
    ]
};

/// The levels of each family's topics that a filter must name (wildcards allowed only for `*`).
const ROOTS: &[(Family, &str)] = &[
    (Family::Shadow, "$aws/things/*/shadow"),
    (Family::Jobs, "$aws/things/*/jobs"),
    (Family::Defender, "$aws/things/*/defender"),
    (Family::Streams, "$aws/things/*/streams"),
    (Family::Tunnels, "$aws/things/*/tunnels"),
    (Family::Certificates, "$aws/certificates"),
    (Family::ProvisioningTemplates, "$aws/provisioning-templates"),
    (Family::Events, "$aws/events"),
    (Family::Sitewise, "$aws/sitewise"),
];

/// What a PUBLISH on `topic` (already a valid topic name) is, or why it is refused.
pub fn check_publish(topic: &str, retain: bool) -> Result<Publish<'_>, Unsupported> {
    if !topic.starts_with('$') {
        return Ok(Publish::Ordinary);
    }
    if retain {
        return Err(Unsupported::Retain);
    }
    if topic.starts_with(RULES_PREFIX) || topic == "$aws/rules" {
        return match basic_ingest(topic) {
            Some((rule, rest)) if !rest.is_empty() => Ok(Publish::BasicIngest { rule }),
            _ => Err(Unsupported::BareRule),
        };
    }
    let levels: Vec<&str> = topic.split('/').collect();
    TOPICS
        .iter()
        .find(|(_, use_, pattern)| *use_ == Use::Request && fits(&levels, &split(pattern)))
        .map(|(family, _, _)| Publish::Reserved(*family))
        .ok_or(Unsupported::NotPublishable)
}

/// The family a SUBSCRIBE filter (already valid, after any `$share/<name>/`) belongs to: `None`
/// for a filter that is not reserved, an error for a reserved one clients may not use.
pub fn check_subscribe(filter: &str) -> Result<Option<Family>, Unsupported> {
    if !filter.starts_with('$') {
        return Ok(None);
    }
    let levels: Vec<&str> = filter.split('/').collect();
    if levels.len() >= 2 && levels[0] == "$aws" && levels[1] == "rules" {
        return Err(Unsupported::RulesFilter);
    }
    let named = |root: &str| {
        let root = split(root);
        levels.len() >= root.len()
            && root.iter().zip(&levels).all(|(r, l)| match *r {
                "*" => *l != "#" && !l.is_empty(),
                _ => r == l,
            })
    };
    ROOTS
        .iter()
        .filter(|(_, root)| named(root))
        .find(|(family, _)| {
            TOPICS
                .iter()
                .any(|(f, _, pattern)| f == family && fits(&levels, &split(pattern)))
        })
        .map(|(family, _)| Some(*family))
        .ok_or(Unsupported::NotSubscribable)
}

fn split(pattern: &str) -> Vec<&str> {
    pattern.split('/').collect()
}

/// Whether some topic is matched both by `filter` (levels of a topic name or filter) and by
/// `pattern` (levels of a [`TOPICS`] pattern).
fn fits(filter: &[&str], pattern: &[&str]) -> bool {
    match (filter.split_first(), pattern.split_first()) {
        (None, None) => true,
        // '#' is one or more levels (IoT Core): the pattern must have one left.
        (Some((&"#", _)), p) => p.is_some(),
        (Some((_, f_rest)), Some((&"**", p_rest))) => fits(f_rest, pattern) || fits(f_rest, p_rest),
        (Some((f, f_rest)), Some((p, p_rest))) => level_fits(f, p) && fits(f_rest, p_rest),
        _ => false,
    }
}

/// Whether one filter level (a name, or `+`) can be the pattern level `p`.
fn level_fits(f: &str, p: &str) -> bool {
    if f == "+" {
        return true;
    }
    match p.strip_prefix('(').and_then(|p| p.strip_suffix(')')) {
        Some(words) => words.split('|').any(|w| w == f),
        None if p == "*" => !f.is_empty(),
        None => f == p,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Family::*;

    fn publish(topic: &str) -> Result<Publish<'_>, Unsupported> {
        check_publish(topic, false)
    }

    #[test]
    fn ordinary_topics_are_not_reserved() {
        assert_eq!(publish("sensors/t1"), Ok(Publish::Ordinary));
        assert_eq!(check_publish("aws/things/x", true), Ok(Publish::Ordinary));
        assert_eq!(check_subscribe("#"), Ok(None));
        assert_eq!(check_subscribe("+/things/#"), Ok(None));
    }

    #[test]
    fn each_family_has_its_request_topics_publishable() {
        for (topic, family) in [
            ("$aws/things/t1/shadow/get", Shadow),
            ("$aws/things/t1/shadow/update", Shadow),
            ("$aws/things/t1/shadow/delete", Shadow),
            ("$aws/things/t1/shadow/name/n1/update", Shadow),
            ("$aws/things/t1/jobs/get", Jobs),
            ("$aws/things/t1/jobs/start-next", Jobs),
            ("$aws/things/t1/jobs/job-7/get", Jobs),
            ("$aws/things/t1/jobs/job-7/update", Jobs),
            ("$aws/certificates/create/json", Certificates),
            ("$aws/certificates/create-from-csr/cbor", Certificates),
            (
                "$aws/provisioning-templates/tpl/provision/json",
                ProvisioningTemplates,
            ),
            ("$aws/things/t1/defender/metrics/json", Defender),
            ("$aws/things/t1/streams/s1/get/cbor", Streams),
            ("$aws/things/t1/streams/s1/describe/json", Streams),
        ] {
            assert_eq!(publish(topic), Ok(Publish::Reserved(family)), "{topic}");
            assert_eq!(check_subscribe(topic), Ok(Some(family)), "{topic}");
        }
    }

    #[test]
    fn responses_and_events_are_subscribe_only() {
        for (topic, family) in [
            ("$aws/things/t1/shadow/update/accepted", Shadow),
            ("$aws/things/t1/shadow/get/rejected", Shadow),
            ("$aws/things/t1/shadow/update/delta", Shadow),
            ("$aws/things/t1/shadow/update/documents", Shadow),
            ("$aws/things/t1/shadow/name/n1/update/delta", Shadow),
            ("$aws/things/t1/shadow/name/n1/delete/accepted", Shadow),
            ("$aws/things/t1/jobs/notify", Jobs),
            ("$aws/things/t1/jobs/notify-next", Jobs),
            ("$aws/things/t1/jobs/start-next/accepted", Jobs),
            ("$aws/things/t1/jobs/job-7/update/rejected", Jobs),
            ("$aws/certificates/create/json/accepted", Certificates),
            (
                "$aws/provisioning-templates/tpl/provision/json/rejected",
                ProvisioningTemplates,
            ),
            ("$aws/things/t1/defender/metrics/json/accepted", Defender),
            ("$aws/things/t1/streams/s1/data/json", Streams),
            ("$aws/things/t1/streams/s1/description/cbor", Streams),
            ("$aws/things/t1/tunnels/notify", Tunnels),
            ("$aws/events/presence/connected/c1", Events),
            ("$aws/events/subscriptions/subscribed/c1", Events),
            ("$aws/events/thing/t1/created", Events),
            ("$aws/events/presence/connected/id/with/slashes", Events),
            (
                "$aws/sitewise/asset-models/m/assets/a/properties/p",
                Sitewise,
            ),
        ] {
            assert_eq!(check_subscribe(topic), Ok(Some(family)), "{topic}");
            assert_eq!(publish(topic), Err(Unsupported::NotPublishable), "{topic}");
        }
    }

    #[test]
    fn wildcards_may_stand_for_names_and_what_follows_a_family() {
        for (filter, family) in [
            ("$aws/things/+/shadow/#", Shadow),
            ("$aws/things/t1/shadow/+", Shadow),
            ("$aws/things/t1/shadow/name/+/update/#", Shadow),
            ("$aws/things/+/shadow/+/accepted", Shadow),
            ("$aws/things/t1/jobs/#", Jobs),
            ("$aws/events/presence/#", Events),
            ("$aws/events/presence/connected/+", Events),
            ("$aws/events/#", Events),
            ("$aws/certificates/create/+/accepted", Certificates),
            (
                "$aws/sitewise/asset-models/+/assets/+/properties/+",
                Sitewise,
            ),
        ] {
            assert_eq!(check_subscribe(filter), Ok(Some(family)), "{filter}");
        }
        for filter in [
            "$aws/#",
            "$aws/+/t1/shadow/update",
            "$aws/things/#",
            "$aws/things/t1/+/update",
            "$aws/things/#/shadow",
            "$aws/things/t1/shadow/update/nope",
            "$aws/things/t1/shadow/nope/#",
            "$aws/events/nope/#",
            "$aws/events/presence",
            "$aws/things//shadow/update",
        ] {
            assert_eq!(
                check_subscribe(filter),
                Err(Unsupported::NotSubscribable),
                "{filter}"
            );
        }
    }

    #[test]
    fn basic_ingest_is_publish_only() {
        assert_eq!(
            publish("$aws/rules/my_rule/sensors/t1"),
            Ok(Publish::BasicIngest { rule: "my_rule" })
        );
        assert_eq!(
            publish("$aws/rules/r/$aws/things/x"),
            Ok(Publish::BasicIngest { rule: "r" })
        );
        for bare in [
            "$aws/rules/x",
            "$aws/rules/x/",
            "$aws/rules//t",
            "$aws/rules",
        ] {
            assert_eq!(publish(bare), Err(Unsupported::BareRule), "{bare}");
        }
        for filter in [
            "$aws/rules/x/t",
            "$aws/rules/#",
            "$aws/rules/+/t",
            "$aws/rules",
        ] {
            assert_eq!(
                check_subscribe(filter),
                Err(Unsupported::RulesFilter),
                "{filter}"
            );
        }
    }

    #[test]
    fn any_other_dollar_topic_is_refused() {
        for topic in [
            "$SYS/x",
            "$aws/foo",
            "$aws",
            "$anything",
            "$awsx/things/t1/shadow/update",
            "$aws/things/t1/shadow",
            "$aws/things/t1/shadow/update/extra/level",
            "$aws/events/presence/connected/c1",
            "$share/g/t",
        ] {
            assert_eq!(publish(topic), Err(Unsupported::NotPublishable), "{topic}");
        }
        for filter in [
            "$SYS/#",
            "$SYS/broker/uptime",
            "$awsx/#",
            "$foo",
            "$share/g/t",
        ] {
            assert_eq!(
                check_subscribe(filter),
                Err(Unsupported::NotSubscribable),
                "{filter}"
            );
        }
    }

    #[test]
    fn retain_is_refused_on_every_dollar_topic() {
        for topic in ["$aws/things/t1/shadow/update", "$aws/rules/r/t", "$SYS/x"] {
            assert_eq!(
                check_publish(topic, true),
                Err(Unsupported::Retain),
                "{topic}"
            );
        }
    }

    #[test]
    fn a_shared_filter_is_classified_after_its_prefix() {
        use super::super::topic::parse_filter;
        let inner = |full| check_subscribe(parse_filter(full).expect("valid").filter);
        assert_eq!(inner("$share/g/sensors/#"), Ok(None));
        assert_eq!(
            inner("$share/g/$aws/things/+/shadow/update/accepted"),
            Ok(Some(Shadow))
        );
        assert_eq!(inner("$share/g/$SYS/#"), Err(Unsupported::NotSubscribable));
        assert_eq!(
            inner("$share/g/$aws/rules/r/t"),
            Err(Unsupported::RulesFilter)
        );
        assert_eq!(
            inner("$share/g/$share/h/t"),
            Err(Unsupported::NotSubscribable)
        );
    }
}
