//! The state connections share: sessions by client id (with their subscriptions and queued
//! messages), the subscription index, and the retained messages. One mutex guards it; every
//! operation is short and never waits while holding it, and a panic elsewhere cannot poison it
//! for the others (a poisoned lock is taken over as it is).
//!
//! A session lives while its client is connected; after that only if it is persistent (its
//! expiry is above 0), until the expiry sweep frees it. A connection acts on its session only
//! while its `generation` is the session's: a connection that was taken over cannot remove or
//! change what the new one holds.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::{lifecycle, topic};
use crate::logsafe::escaped;
use crate::mqtt::Version;

/// QoS 0 messages are dropped once a session's queue holds this many messages.
pub const QUEUE_QOS0_CAP: usize = 1_000;
/// QoS 1 messages are dropped (one log line per episode) once a session's queue holds this many.
pub const QUEUE_CAP: usize = 1_000;
/// ... or this many payload bytes.
pub const QUEUE_BYTES_CAP: usize = 16 * 1024 * 1024;
/// At most this many retained topics, holding at most [`RETAINED_BYTES_CAP`] of payload; a new
/// one past either is not stored (logged).
pub const RETAINED_CAP: usize = 10_000;
pub const RETAINED_BYTES_CAP: usize = 64 * 1024 * 1024;
/// Subscriptions per session (IoT Core's per-connection quota).
pub const SUBSCRIPTIONS_CAP: usize = 50;

/// A published message, shared by every session it is queued for.
#[derive(Debug)]
pub struct Message {
    pub topic: Arc<str>,
    pub payload: Arc<[u8]>,
    /// MQTT 5 properties to forward (never a topic alias).
    pub properties: Arc<[u8]>,
    pub qos: u8,
    /// Who published it (for No Local); empty for a message from no client (a lifecycle event),
    /// which No Local never filters.
    pub from: Arc<str>,
}

/// A message waiting for one session.
#[derive(Clone, Debug)]
pub struct Queued {
    pub message: Arc<Message>,
    /// min(published QoS, subscription QoS).
    pub qos: u8,
    /// RETAIN on the delivery: only for retained messages sent at SUBSCRIBE.
    pub retain: bool,
    /// Sent before and not acknowledged (delivered again with DUP).
    pub dup: bool,
}

/// The signals a connection gets from the router.
#[derive(Default)]
pub struct Link {
    /// Messages were queued, or the connection was taken over.
    pub notify: Notify,
    taken_over: AtomicBool,
}

impl Link {
    pub fn taken_over(&self) -> bool {
        self.taken_over.load(Ordering::Acquire)
    }
}

/// A subscription's options as the router applies them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubscriptionOptions {
    /// Granted QoS (0 or 1).
    pub qos: u8,
    pub no_local: bool,
}

struct Session {
    generation: u64,
    /// Stays the same when a session is resumed; new when it is created.
    lineage: u64,
    version: Version,
    /// Seconds the session outlives its connection; 0: it ends with it.
    expiry: u32,
    /// Full filter as subscribed (`$share/...` included) -> options.
    subscriptions: BTreeMap<String, SubscriptionOptions>,
    queue: VecDeque<Queued>,
    queue_bytes: usize,
    /// Logged once while the queue overflows.
    dropping: bool,
    link: Option<Arc<Link>>,
    offline_since: Option<Instant>,
}

#[derive(Default)]
struct Inner {
    sessions: HashMap<String, Session>,
    /// Full filter -> client ids subscribed with it.
    index: HashMap<String, BTreeSet<String>>,
    retained: HashMap<String, Arc<Message>>,
    retained_bytes: usize,
}

/// What the router holds, for tests and logs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub sessions: usize,
    pub connected: usize,
    pub filters: usize,
    pub subscriptions: usize,
    pub queued: usize,
    pub retained: usize,
}

/// Why a subscription was not made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotSubscribed {
    /// The connection no longer holds the session (it was taken over).
    NotHolder,
    /// The session already has [`SUBSCRIPTIONS_CAP`] subscriptions.
    TooMany,
}

/// What a connection gets when it registers.
#[derive(Clone, Copy, Debug)]
pub struct Registered {
    pub generation: u64,
    pub lineage: u64,
    pub session_present: bool,
}

#[derive(Default)]
pub struct Router {
    inner: Mutex<Inner>,
    next: AtomicU64,
    /// The lifecycle events' `versionNumber` of each client id.
    pub(super) versions: lifecycle::Versions,
}

impl Router {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn next_id(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Register a connection for `client_id`. A connection holding it is taken over (told
    /// through its link, after which nothing it does changes this session). The session is
    /// resumed when `clean_start` is false and a session of the same MQTT version exists.
    pub fn connect(
        &self,
        client_id: &str,
        version: Version,
        clean_start: bool,
        expiry: u32,
        link: Arc<Link>,
    ) -> Registered {
        let generation = self.next_id();
        let mut inner = self.lock();
        let inner = &mut *inner;
        if let Some(old) = inner.sessions.get_mut(client_id) {
            if let Some(old_link) = old.link.take() {
                old_link.taken_over.store(true, Ordering::Release);
                old_link.notify.notify_one();
                log::info!(
                    "client '{}': a new connection takes the session over",
                    escaped(client_id)
                );
            }
            if !clean_start && old.version == version {
                old.generation = generation;
                old.expiry = expiry;
                old.link = Some(link);
                old.offline_since = None;
                if !old.queue.is_empty() {
                    if let Some(l) = &old.link {
                        l.notify.notify_one();
                    }
                }
                return Registered {
                    generation,
                    lineage: old.lineage,
                    session_present: true,
                };
            }
            remove_session(inner, client_id);
        }
        let lineage = generation;
        inner.sessions.insert(
            client_id.to_string(),
            Session {
                generation,
                lineage,
                version,
                expiry,
                subscriptions: BTreeMap::new(),
                queue: VecDeque::new(),
                queue_bytes: 0,
                dropping: false,
                link: Some(link),
                offline_since: None,
            },
        );
        Registered {
            generation,
            lineage,
            session_present: false,
        }
    }

    /// The connection `reg` of `client_id` ended. Its unacknowledged messages go back to the
    /// front of the session's queue if the session continues; a session that does not persist
    /// is removed, with its subscriptions.
    pub fn disconnect(&self, client_id: &str, reg: Registered, unacked: Vec<Queued>) {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let Some(s) = inner.sessions.get_mut(client_id) else {
            return;
        };
        if s.lineage != reg.lineage {
            return;
        }
        for mut q in unacked.into_iter().rev() {
            q.dup = true;
            s.queue_bytes += q.message.payload.len();
            s.queue.push_front(q);
        }
        if s.generation != reg.generation {
            return;
        }
        s.link = None;
        if s.expiry == 0 {
            remove_session(inner, client_id);
        } else {
            s.offline_since = Some(Instant::now());
            s.queue.retain(|q| q.qos > 0);
            s.queue_bytes = s.queue.iter().map(|q| q.message.payload.len()).sum();
        }
    }

    /// Change the expiry of a live session (MQTT 5 DISCONNECT).
    pub fn set_expiry(&self, client_id: &str, reg: Registered, expiry: u32) {
        if let Some(s) = self.lock().sessions.get_mut(client_id) {
            if s.generation == reg.generation {
                s.expiry = expiry;
            }
        }
    }

    /// Free the sessions whose expiry has passed, and the version numbers of client ids offline
    /// long enough; returns how many sessions.
    pub fn sweep(&self, now: Instant) -> usize {
        self.versions.sweep(now);
        let mut inner = self.lock();
        let expired: Vec<String> = inner
            .sessions
            .iter()
            .filter(|(_, s)| {
                s.offline_since.is_some_and(|t| {
                    now.saturating_duration_since(t) >= Duration::from_secs(u64::from(s.expiry))
                })
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in &expired {
            remove_session(&mut inner, id);
            log::debug!("session of client '{}' expired", escaped(id));
        }
        expired.len()
    }

    /// Add or replace a subscription. A retained message whose topic equals the filter (never for a wildcard or
    /// shared filter) is queued with RETAIN=1 when `send_retained` says so.
    pub fn subscribe(
        &self,
        client_id: &str,
        reg: Registered,
        filter: &str,
        options: SubscriptionOptions,
        retain_handling: u8,
    ) -> Result<(), NotSubscribed> {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let Some(s) = inner.sessions.get_mut(client_id) else {
            return Err(NotSubscribed::NotHolder);
        };
        if s.generation != reg.generation {
            return Err(NotSubscribed::NotHolder);
        }
        if s.subscriptions.len() >= SUBSCRIPTIONS_CAP && !s.subscriptions.contains_key(filter) {
            return Err(NotSubscribed::TooMany);
        }
        let existed = s
            .subscriptions
            .insert(filter.to_string(), options)
            .is_some();
        inner
            .index
            .entry(filter.to_string())
            .or_default()
            .insert(client_id.to_string());
        let send = match retain_handling {
            0 => true,
            1 => !existed,
            _ => false,
        };
        if send && !filter.starts_with("$share/") {
            if let Some(m) = inner.retained.get(filter) {
                let q = Queued {
                    message: m.clone(),
                    qos: m.qos.min(options.qos),
                    retain: true,
                    dup: false,
                };
                enqueue(client_id, s, q);
            }
        }
        Ok(())
    }

    /// Remove a subscription; whether it existed.
    pub fn unsubscribe(&self, client_id: &str, reg: Registered, filter: &str) -> bool {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let Some(s) = inner.sessions.get_mut(client_id) else {
            return false;
        };
        if s.generation != reg.generation || s.subscriptions.remove(filter).is_none() {
            return false;
        }
        unindex(&mut inner.index, filter, client_id);
        true
    }

    /// Route a message: store or delete it as retained if `retain`, then queue it for every
    /// matching subscription (one member per shared group).
    pub fn publish(&self, message: Arc<Message>, retain: bool) {
        let mut inner = self.lock();
        let inner = &mut *inner;
        if retain {
            let topic: &str = &message.topic;
            if let Some(old) = inner.retained.remove(topic) {
                inner.retained_bytes = inner.retained_bytes.saturating_sub(old.payload.len());
            }
            let fits = inner.retained.len() < RETAINED_CAP
                && inner.retained_bytes + message.payload.len() <= RETAINED_BYTES_CAP;
            // An empty payload only deletes.
            if !message.payload.is_empty() {
                if fits {
                    inner.retained_bytes += message.payload.len();
                    inner.retained.insert(topic.to_string(), message.clone());
                } else {
                    log::warn!(
                        "retained message on '{}' not stored: the store is full ({} topics, {} bytes)",
                        escaped(topic),
                        inner.retained.len(),
                        inner.retained_bytes
                    );
                }
            }
        }
        // client id -> QoS, so that overlapping filters deliver once, at the highest QoS.
        let mut targets: HashMap<&str, u8> = HashMap::new();
        for (full, members) in &inner.index {
            let Ok(f) = topic::parse_filter(full) else {
                continue;
            };
            if !topic::matches(f.filter, &message.topic) {
                continue;
            }
            let qos_of = |id: &str| {
                inner
                    .sessions
                    .get(id)
                    .and_then(|s| s.subscriptions.get(full.as_str()))
                    .copied()
            };
            if f.share.is_some() {
                // One member: a connected one if any, chosen at random.
                let online: Vec<&String> = members
                    .iter()
                    .filter(|id| inner.sessions.get(*id).is_some_and(|s| s.link.is_some()))
                    .collect();
                let pool: Vec<&String> = if online.is_empty() {
                    members.iter().collect()
                } else {
                    online
                };
                if pool.is_empty() {
                    continue;
                }
                let id = pool[fastrand::usize(..pool.len())];
                if let Some(o) = qos_of(id) {
                    let t = targets.entry(id.as_str()).or_insert(0);
                    *t = (*t).max(o.qos);
                }
            } else {
                for id in members {
                    let Some(o) = qos_of(id) else { continue };
                    if o.no_local && !message.from.is_empty() && **id == *message.from {
                        continue;
                    }
                    let t = targets.entry(id.as_str()).or_insert(0);
                    *t = (*t).max(o.qos);
                }
            }
        }
        let targets: Vec<(String, u8)> = targets
            .into_iter()
            .map(|(id, q)| (id.to_string(), q))
            .collect();
        for (id, qos) in targets {
            if let Some(s) = inner.sessions.get_mut(&id) {
                let q = Queued {
                    message: message.clone(),
                    qos: qos.min(message.qos),
                    retain: false,
                    dup: false,
                };
                enqueue(&id, s, q);
            }
        }
    }

    /// Take queued messages for the connection `reg`: QoS 0 ones freely, at most `room` QoS 1
    /// ones, at most `max` in all, in order.
    pub fn take(
        &self,
        client_id: &str,
        reg: Registered,
        mut room: usize,
        max: usize,
    ) -> Vec<Queued> {
        let mut inner = self.lock();
        let Some(s) = inner.sessions.get_mut(client_id) else {
            return Vec::new();
        };
        if s.generation != reg.generation {
            return Vec::new();
        }
        let mut out = Vec::new();
        while out.len() < max {
            match s.queue.front() {
                Some(q) if q.qos == 0 || room > 0 => {
                    if q.qos > 0 {
                        room -= 1;
                    }
                    if let Some(q) = s.queue.pop_front() {
                        s.queue_bytes = s.queue_bytes.saturating_sub(q.message.payload.len());
                        out.push(q);
                    }
                }
                _ => break,
            }
        }
        if s.queue.len() < QUEUE_CAP / 2 {
            s.dropping = false;
        }
        if s.queue.capacity() > 64 && s.queue.is_empty() {
            s.queue = VecDeque::new();
        }
        out
    }

    /// Whether the session of `reg` has messages waiting.
    pub fn has_queued(&self, client_id: &str, reg: Registered) -> bool {
        self.lock()
            .sessions
            .get(client_id)
            .is_some_and(|s| s.generation == reg.generation && !s.queue.is_empty())
    }

    pub fn stats(&self) -> Stats {
        let inner = self.lock();
        Stats {
            sessions: inner.sessions.len(),
            connected: inner.sessions.values().filter(|s| s.link.is_some()).count(),
            filters: inner.index.len(),
            subscriptions: inner.index.values().map(BTreeSet::len).sum(),
            queued: inner.sessions.values().map(|s| s.queue.len()).sum(),
            retained: inner.retained.len(),
        }
    }
}

fn enqueue(client_id: &str, s: &mut Session, q: Queued) {
    let offline = s.link.is_none();
    if q.qos == 0 && (offline || s.queue.len() >= QUEUE_QOS0_CAP) {
        return;
    }
    let bytes = q.message.payload.len();
    if s.queue.len() >= QUEUE_CAP || s.queue_bytes + bytes > QUEUE_BYTES_CAP {
        if !s.dropping {
            s.dropping = true;
            log::warn!(
                "client '{}': {} messages ({} bytes) are waiting; new messages are dropped until it catches up",
                escaped(client_id),
                s.queue.len(),
                s.queue_bytes
            );
        }
        return;
    }
    s.queue_bytes += bytes;
    s.queue.push_back(q);
    if let Some(l) = &s.link {
        l.notify.notify_one();
    }
}

fn remove_session(inner: &mut Inner, client_id: &str) {
    if let Some(s) = inner.sessions.remove(client_id) {
        for filter in s.subscriptions.keys() {
            unindex(&mut inner.index, filter, client_id);
        }
    }
}

fn unindex(index: &mut HashMap<String, BTreeSet<String>>, filter: &str, client_id: &str) {
    if let Some(members) = index.get_mut(filter) {
        members.remove(client_id);
        if members.is_empty() {
            index.remove(filter);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(topic: &str, payload: &[u8], qos: u8) -> Arc<Message> {
        Arc::new(Message {
            topic: topic.into(),
            payload: payload.into(),
            properties: Arc::from(&[][..]),
            qos,
            from: "publisher".into(),
        })
    }

    const Q1: SubscriptionOptions = SubscriptionOptions {
        qos: 1,
        no_local: false,
    };

    #[test]
    fn clean_sessions_leave_nothing_behind() {
        let r = Router::default();
        for i in 0..100 {
            let id = format!("c{i}");
            let reg = r.connect(&id, Version::V5, true, 0, Arc::default());
            assert_eq!(r.subscribe(&id, reg, "a/b", Q1, 0), Ok(()));
            assert_eq!(r.subscribe(&id, reg, "$share/g/a/#", Q1, 0), Ok(()));
            r.disconnect(&id, reg, Vec::new());
        }
        assert_eq!(r.stats(), Stats::default());
    }

    #[test]
    fn a_taken_over_connection_cannot_touch_the_new_session() {
        let r = Router::default();
        let old_link = Arc::new(Link::default());
        let old = r.connect("c", Version::V5, true, 0, old_link.clone());
        let new = r.connect("c", Version::V311, true, 0, Arc::default());
        assert!(old_link.taken_over());
        assert_eq!(
            r.subscribe("c", old, "x", Q1, 0),
            Err(NotSubscribed::NotHolder)
        );
        r.disconnect("c", old, Vec::new());
        assert_eq!(r.stats().sessions, 1, "the new connection's session stays");
        assert_eq!(r.subscribe("c", new, "x", Q1, 0), Ok(()));
        r.disconnect("c", new, Vec::new());
        assert_eq!(r.stats(), Stats::default());
    }

    #[test]
    fn persistent_sessions_queue_qos1_until_they_expire() {
        let r = Router::default();
        let reg = r.connect("p", Version::V311, false, 3600, Arc::default());
        assert_eq!(r.subscribe("p", reg, "t/+", Q1, 0), Ok(()));
        r.disconnect("p", reg, Vec::new());
        r.publish(message("t/1", b"one", 1), false);
        r.publish(message("t/0", b"zero", 0), false);
        assert_eq!(
            r.stats().queued,
            1,
            "QoS 0 is not kept for an offline client"
        );
        let back = r.connect("p", Version::V311, false, 3600, Arc::default());
        assert!(back.session_present);
        let got = r.take("p", back, 100, 100);
        assert_eq!(got.len(), 1);
        assert_eq!(&*got[0].message.topic, "t/1");
        r.disconnect("p", back, got);
        assert_eq!(r.stats().queued, 1, "unacknowledged messages go back");
        assert_eq!(r.sweep(Instant::now()), 0);
        assert_eq!(r.sweep(Instant::now() + Duration::from_secs(3600)), 1);
        assert_eq!(r.stats(), Stats::default());
    }

    #[test]
    fn a_clean_start_or_another_version_discards_the_old_session() {
        let r = Router::default();
        let reg = r.connect("p", Version::V311, false, 3600, Arc::default());
        r.disconnect("p", reg, Vec::new());
        let v5 = r.connect("p", Version::V5, false, 3600, Arc::default());
        assert!(!v5.session_present, "3.1.1 and 5 sessions do not mix");
        r.disconnect("p", v5, Vec::new());
        let clean = r.connect("p", Version::V5, true, 0, Arc::default());
        assert!(!clean.session_present);
    }

    #[test]
    fn retained_only_on_the_exact_filter() {
        let r = Router::default();
        r.publish(message("s/1", b"v", 1), true);
        let reg = r.connect("c", Version::V5, true, 0, Arc::default());
        let _ = r.subscribe("c", reg, "s/+", Q1, 0);
        let _ = r.subscribe("c", reg, "$share/g/s/1", Q1, 0);
        assert!(r.take("c", reg, 10, 10).is_empty());
        let _ = r.subscribe("c", reg, "s/1", Q1, 0);
        let got = r.take("c", reg, 10, 10);
        assert_eq!(got.len(), 1);
        assert!(got[0].retain);
        let _ = r.subscribe("c", reg, "s/1", Q1, 1);
        assert!(
            r.take("c", reg, 10, 10).is_empty(),
            "retain handling 1: not again"
        );
        r.publish(message("s/1", b"", 1), true);
        assert_eq!(r.stats().retained, 0, "an empty payload deletes");
        let live = r.take("c", reg, 10, 10);
        assert_eq!(
            live.len(),
            1,
            "and is still delivered, once despite two filters"
        );
        assert!(!live[0].retain);
    }

    #[test]
    fn shared_groups_get_one_copy() {
        let r = Router::default();
        let a = r.connect("a", Version::V5, true, 0, Arc::default());
        let b = r.connect("b", Version::V5, true, 0, Arc::default());
        let _ = r.subscribe("a", a, "$share/g/t", Q1, 0);
        let _ = r.subscribe("b", b, "$share/g/t", Q1, 0);
        for _ in 0..10 {
            r.publish(message("t", b"x", 1), false);
        }
        let got = r.take("a", a, 100, 100).len() + r.take("b", b, 100, 100).len();
        assert_eq!(got, 10);
    }

    #[test]
    fn queues_are_bounded() {
        let r = Router::default();
        let reg = r.connect("c", Version::V5, true, 0, Arc::default());
        let _ = r.subscribe("c", reg, "t", Q1, 0);
        for _ in 0..QUEUE_CAP + 10 {
            r.publish(message("t", b"x", 1), false);
        }
        assert_eq!(r.stats().queued, QUEUE_CAP);
        let got = r.take("c", reg, 5, 1000);
        assert_eq!(got.len(), 5, "at most `room` QoS 1 messages");
    }

    #[test]
    fn no_local_never_filters_a_message_from_no_client() {
        let r = Router::default();
        let no_local = SubscriptionOptions {
            qos: 1,
            no_local: true,
        };
        // An empty client id exists on the plain broker (MQTT 3.1.1).
        let regs: Vec<_> = ["publisher", ""]
            .into_iter()
            .map(|id| {
                let reg = r.connect(id, Version::V311, true, 0, Arc::default());
                assert_eq!(r.subscribe(id, reg, "t", no_local, 0), Ok(()));
                (id, reg)
            })
            .collect();
        r.publish(message("t", b"own", 1), false);
        let mut event = message("t", b"event", 1);
        Arc::get_mut(&mut event).expect("unshared").from = "".into();
        r.publish(event, false);
        let got = |(id, reg)| -> Vec<Vec<u8>> {
            r.take(id, reg, 10, 10)
                .iter()
                .map(|q| q.message.payload.to_vec())
                .collect()
        };
        assert_eq!(
            got(regs[0]),
            [b"event".to_vec()],
            "its own is not delivered"
        );
        assert_eq!(got(regs[1]), [b"own".to_vec(), b"event".to_vec()]);
    }

    #[test]
    fn subscriptions_per_session_are_capped() {
        let r = Router::default();
        let reg = r.connect("c", Version::V5, true, 0, Arc::default());
        for i in 0..SUBSCRIPTIONS_CAP {
            assert_eq!(r.subscribe("c", reg, &format!("t/{i}"), Q1, 0), Ok(()));
        }
        assert_eq!(
            r.subscribe("c", reg, "t/one-more", Q1, 0),
            Err(NotSubscribed::TooMany)
        );
        assert_eq!(r.subscribe("c", reg, "t/0", Q1, 0), Ok(()), "a replacement");
    }
}
