//! What every watch shares: how soon it tries again when the API server
//! goes away, and which watches are broken right now, for `/readyz`.
//!
//! A broken watch never ends: its stream reports the error, waits (at most
//! [`MAX_BACKOFF`]) and lists again, so a replica catches up within
//! seconds of the API server's return and keeps serving from its caches
//! meanwhile.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::runtime::utils::{Backoff, ResetTimerBackoff};
use kube::runtime::watcher::ExponentialBackoff;
use prometheus_client::metrics::counter::Counter;
use tracing::{debug, info, warn};

/// The longest wait between two attempts: client-go's 30 s is kind to a
/// struggling API server but leaves a replica 30 s behind after an outage;
/// a replica has a dozen watches, so 2 s apart is a few requests a second.
pub const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// How long connecting to the API server may take (30 s by default).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A broken watch fails again at least this often (a wait, then a connect
/// that fails): one that has not failed for this long, with no event to
/// show for it, reconnected. A watch that reconnects to quiet data sends
/// nothing, so this is how its recovery shows.
const QUIET: Duration = Duration::from_secs(10);

/// Retries from 250 ms, doubling to [`MAX_BACKOFF`], with jitter; back to
/// 250 ms after two minutes without an error.
pub fn backoff() -> impl Backoff + 'static {
    let exponential = backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(250))
        .with_max_delay(MAX_BACKOFF)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times();
    ResetTimerBackoff::new(
        ExponentialBackoff::from(exponential),
        Duration::from_secs(120),
    )
}

/// When a watch broke, when it last failed, and why.
struct Broken {
    since: Instant,
    last: Instant,
    error: String,
}

impl Broken {
    fn current(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.last) < QUIET
    }
}

/// The watches that are broken now, and how often they listed.
#[derive(Default)]
pub struct Health {
    broken: Mutex<BTreeMap<String, Broken>>,
    lists: Counter,
}

impl Health {
    /// Counting complete lists in `lists`.
    pub fn counting(lists: Counter) -> Self {
        Self {
            broken: Mutex::default(),
            lists,
        }
    }

    /// What is degraded, for `/readyz`; `None` when every watch is whole.
    pub fn report(&self) -> Option<String> {
        self.report_at(Instant::now())
    }

    fn report_at(&self, now: Instant) -> Option<String> {
        let broken = self.lock();
        let parts: Vec<String> = broken
            .iter()
            .filter(|(_, b)| b.current(now))
            .map(|(watch, b)| {
                format!(
                    "{watch} broken for {}s ({})",
                    now.saturating_duration_since(b.since).as_secs(),
                    b.error
                )
            })
            .collect();
        (!parts.is_empty()).then(|| format!("degraded: {}", parts.join("; ")))
    }

    /// Follows one watch's stream items.
    pub fn tracker(self: &Arc<Self>, watch: impl Into<String>) -> Tracker {
        Tracker {
            health: self.clone(),
            watch: watch.into(),
            broken: false,
        }
    }

    // Every write is one insert or remove: a poisoned lock is safe to take.
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Broken>> {
        self.broken.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One watch's state, reported to [`Health`] when it changes.
pub struct Tracker {
    health: Arc<Health>,
    watch: String,
    broken: bool,
}

impl Tracker {
    /// The event, or `None` for an error (recorded; the stream retries).
    pub fn on<T, E: Display>(&mut self, item: Result<T, E>) -> Option<T> {
        match item {
            Ok(event) => {
                self.whole();
                Some(event)
            }
            Err(e) => {
                self.failed(&e);
                None
            }
        }
    }

    /// A complete list, at start or after the watch could not resume.
    pub fn listed(&self) {
        self.health.lists.inc();
    }

    /// A request that succeeded.
    pub fn whole(&mut self) {
        if self.broken {
            self.broken = false;
            self.health.lock().remove(&self.watch);
            info!(what = %self.watch, "whole again");
        }
    }

    /// A request that failed (and will be retried).
    pub fn failed(&mut self, e: &impl Display) {
        self.broken = true;
        let now = Instant::now();
        let mut broken = self.health.lock();
        match broken.get_mut(&self.watch) {
            Some(b) if b.current(now) => {
                debug!(what = %self.watch, error = %e, "still broken");
                b.last = now;
            }
            _ => {
                warn!(what = %self.watch, error = %e, "broken; serving from the caches and retrying");
                let error = short(e);
                broken.insert(
                    self.watch.clone(),
                    Broken {
                        since: now,
                        last: now,
                        error,
                    },
                );
            }
        }
    }
}

/// An error's first line, bounded: what `/readyz` shows.
fn short(e: &impl Display) -> String {
    let text = e.to_string();
    let line = text.lines().next().unwrap_or_default();
    line.chars().take(160).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_what_is_broken_until_it_is_whole() {
        let health = Arc::new(Health::default());
        let mut keys = health.tracker("signing keys watch");
        let mut requirements = health.tracker("requirements in org-a watch");
        assert_eq!(health.report(), None);
        assert_eq!(keys.on(Ok::<_, String>(1)), Some(1));
        assert_eq!(keys.on(Err::<i32, _>("connection refused\nmore")), None);
        assert_eq!(requirements.on(Err::<i32, _>("reset")), None);
        assert_eq!(requirements.on(Err::<i32, _>("reset again")), None);
        let report = health.report().unwrap();
        assert!(report.starts_with("degraded: "), "{report}");
        assert!(report.contains("signing keys watch broken for 0s (connection refused)"));
        assert!(report.contains("requirements in org-a watch broken for 0s (reset)"));
        assert!(!report.contains("more"));
        // A watch that reconnects to quiet data sends nothing: once it has
        // not failed for a while, it is whole.
        let later = Instant::now() + QUIET + Duration::from_secs(1);
        assert!(health.report_at(later - Duration::from_secs(2)).is_some());
        assert_eq!(health.report_at(later), None);
        assert_eq!(keys.on(Ok::<_, String>(2)), Some(2));
        assert_eq!(requirements.on(Ok::<_, String>(3)), Some(3));
        assert_eq!(health.report(), None);
    }
}
