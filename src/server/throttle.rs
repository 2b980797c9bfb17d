//! Throttles repeated authentication failures per client id, whether the
//! client exists or not (so the throttle tells nothing about which do).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures allowed in one window before the client id is refused.
const LIMIT: u32 = 10;
const WINDOW: Duration = Duration::from_secs(60);
/// Client ids tracked at once; past this, expired windows are dropped, and
/// if that is not enough new ids go untracked rather than exhaust memory.
const CAPACITY: usize = 100_000;

#[derive(Default)]
pub struct Throttle {
    windows: Mutex<HashMap<String, (u32, Instant)>>,
}

impl Throttle {
    /// How long the client id must wait, if it is throttled.
    pub fn blocked(&self, client_id: &str) -> Option<Duration> {
        let windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        let (failures, start) = windows.get(client_id)?;
        let left = WINDOW.checked_sub(start.elapsed())?;
        (*failures >= LIMIT).then_some(left)
    }

    pub fn failed(&self, client_id: &str) {
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        if windows.len() >= CAPACITY && !windows.contains_key(client_id) {
            windows.retain(|_, (_, start)| start.elapsed() < WINDOW);
            if windows.len() >= CAPACITY {
                return;
            }
        }
        let entry = windows
            .entry(client_id.to_owned())
            .or_insert((0, Instant::now()));
        if entry.1.elapsed() >= WINDOW {
            *entry = (0, Instant::now());
        }
        entry.0 += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_the_limit_for_the_rest_of_the_window() {
        let t = Throttle::default();
        for _ in 0..LIMIT - 1 {
            t.failed("ci_x");
        }
        assert_eq!(t.blocked("ci_x"), None);
        t.failed("ci_x");
        let wait = t.blocked("ci_x").expect("blocked");
        assert!(wait <= WINDOW && wait > WINDOW - Duration::from_secs(5));
        assert_eq!(t.blocked("ci_other"), None);
    }
}
