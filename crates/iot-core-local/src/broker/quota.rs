//! IoT Core's publish quota on one connection: at most so many PUBLISH packets per second,
//! inbound and outbound counted together (default 100, `serve --publish-quota`, 0 = none).
//!
//! The count runs in windows of one second, the first starting at the first PUBLISH. What goes
//! over is the connection's business ([`super::connection`]): an inbound PUBLISH is discarded
//! (QoS 1 without PUBACK), a QoS 0 delivery dropped, a QoS 1 delivery held until the next
//! window. The drops are counted here and reported once per window, after it ends.
//!
//! Pure: every method takes the time, so that the window logic is tested without waiting.

use std::time::Duration;

use tokio::time::Instant;

/// IoT Core's default quota: PUBLISH packets per second per connection, in and out together.
pub const DEFAULT_PUBLISH_QUOTA: u32 = 100;
/// The length of a window.
pub const WINDOW: Duration = Duration::from_secs(1);

/// What went over the quota and was not reported yet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Dropped {
    /// Inbound PUBLISH discarded.
    pub inbound: u64,
    /// QoS 0 deliveries dropped.
    pub outbound: u64,
}

/// The quota of one connection.
#[derive(Debug)]
pub struct PublishQuota {
    /// PUBLISH per window; 0: no quota.
    limit: u32,
    /// The current window: when it started and how many PUBLISH it counted.
    start: Option<Instant>,
    used: u32,
    dropped: Dropped,
    /// When the drops in `dropped` may be reported: the end of the window of the first one.
    report_at: Option<Instant>,
}

impl PublishQuota {
    /// A quota of `limit` PUBLISH per second (0: none).
    pub fn new(limit: u32) -> PublishQuota {
        PublishQuota {
            limit,
            start: None,
            used: 0,
            dropped: Dropped::default(),
            report_at: None,
        }
    }

    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// Start a new window if the current one has ended at `now`.
    fn roll(&mut self, now: Instant) {
        if self.start.is_none_or(|s| now >= s + WINDOW) {
            self.start = Some(now);
            self.used = 0;
        }
    }

    /// How many more PUBLISH fit in the window at `now` (`usize::MAX` without a quota).
    pub fn left(&mut self, now: Instant) -> usize {
        if self.limit == 0 {
            return usize::MAX;
        }
        self.roll(now);
        self.limit.saturating_sub(self.used) as usize
    }

    /// Count one PUBLISH at `now`; false, and nothing counted, when the window is full.
    pub fn take(&mut self, now: Instant) -> bool {
        if self.left(now) == 0 {
            return false;
        }
        if self.limit > 0 {
            self.used += 1;
        }
        true
    }

    /// Count a PUBLISH that went over the quota at `now` (`inbound`: discarded on its way in;
    /// otherwise a QoS 0 delivery dropped).
    pub fn dropped(&mut self, now: Instant, inbound: bool) {
        self.roll(now);
        if inbound {
            self.dropped.inbound += 1;
        } else {
            self.dropped.outbound += 1;
        }
        if self.report_at.is_none() {
            self.report_at = self.start.map(|s| s + WINDOW);
        }
    }

    /// The drops not reported yet, once the window of the first one has ended at `now`; all of
    /// them whatever the time when `ending` (the connection ends).
    pub fn report(&mut self, now: Instant, ending: bool) -> Option<Dropped> {
        let due = self.report_at.is_some_and(|at| ending || now >= at);
        if !due {
            return None;
        }
        self.report_at = None;
        Some(std::mem::take(&mut self.dropped))
    }

    /// When the connection must wake up without anything arriving: when drops are due for a
    /// report, or, if it `holds` deliveries back for lack of quota, when the window ends.
    pub fn wake_at(&self, holds: bool) -> Option<Instant> {
        let window_end = self
            .start
            .filter(|_| holds && self.limit > 0)
            .map(|s| s + WINDOW);
        match (self.report_at, window_end) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(start: Instant, ms: u64) -> Instant {
        start + Duration::from_millis(ms)
    }

    #[test]
    fn at_most_the_limit_per_window_of_a_second() {
        let t0 = Instant::now();
        let mut q = PublishQuota::new(100);
        assert_eq!(q.left(t0), 100);
        let taken = (0..150).filter(|_| q.take(ms(t0, 10))).count();
        assert_eq!(taken, 100);
        assert_eq!(
            q.left(ms(t0, 999)),
            0,
            "the window runs from the first publish"
        );
        assert!(!q.take(ms(t0, 999)));
        assert!(q.take(ms(t0, 1000)), "a new window at one second");
        assert_eq!(q.left(ms(t0, 1999)), 99);
        assert_eq!(q.left(ms(t0, 2000)), 100);
    }

    #[test]
    fn a_quota_of_0_is_no_quota() {
        let t0 = Instant::now();
        let mut q = PublishQuota::new(0);
        assert!((0..10_000).all(|_| q.take(t0)));
        assert_eq!(q.left(t0), usize::MAX);
        assert_eq!(q.wake_at(true), None);
    }

    #[test]
    fn drops_are_reported_once_their_window_has_ended() {
        let t0 = Instant::now();
        let mut q = PublishQuota::new(2);
        assert!(q.take(t0) && q.take(t0));
        q.dropped(ms(t0, 100), true);
        q.dropped(ms(t0, 200), true);
        q.dropped(ms(t0, 300), false);
        assert_eq!(q.wake_at(false), Some(ms(t0, 1000)));
        assert_eq!(q.report(ms(t0, 999), false), None);
        assert_eq!(
            q.report(ms(t0, 1000), false),
            Some(Dropped {
                inbound: 2,
                outbound: 1
            })
        );
        assert_eq!(q.report(ms(t0, 5000), false), None, "reported once");
        assert_eq!(q.wake_at(false), None);
        // A drop in a later window is reported at that window's end, or when the connection ends.
        assert!(q.take(ms(t0, 3000)) && q.take(ms(t0, 3000)));
        q.dropped(ms(t0, 3500), true);
        assert_eq!(q.wake_at(false), Some(ms(t0, 4000)));
        assert_eq!(
            q.report(ms(t0, 3600), true),
            Some(Dropped {
                inbound: 1,
                outbound: 0
            })
        );
    }

    #[test]
    fn held_deliveries_wake_the_connection_at_the_end_of_the_window() {
        let t0 = Instant::now();
        let mut q = PublishQuota::new(1);
        assert_eq!(q.wake_at(true), None, "no window yet");
        assert!(q.take(ms(t0, 250)));
        assert_eq!(q.wake_at(false), None);
        assert_eq!(q.wake_at(true), Some(ms(t0, 1250)));
    }
}
