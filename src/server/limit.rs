//! Rate limiting: a token bucket per key, refilled continuously. The
//! JSON:API keys by organization (namespace), the token endpoint by client
//! id. A refused request learns how long to wait (`Retry-After`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Keys tracked at once; full buckets are dropped first.
const CAPACITY: usize = 100_000;

pub struct RateLimit {
    /// Requests per second; 0 turns limiting off.
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimit {
    pub fn new(per_second: u32, burst: u32) -> Self {
        RateLimit {
            rate: f64::from(per_second),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::default(),
        }
    }

    /// Takes one request from `key`'s bucket at `now`, or says how long
    /// until one is available.
    pub fn take(&self, key: &str, now: Instant) -> Result<(), Duration> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= CAPACITY && !buckets.contains_key(key) {
            let (rate, burst) = (self.rate, self.burst);
            buckets.retain(|_, (level, at)| {
                *level + now.saturating_duration_since(*at).as_secs_f64() * rate < burst
            });
        }
        let (level, at) = buckets.entry(key.to_owned()).or_insert((self.burst, now));
        let refilled =
            (*level + now.saturating_duration_since(*at).as_secs_f64() * self.rate).min(self.burst);
        *at = now;
        if refilled >= 1.0 {
            *level = refilled - 1.0;
            Ok(())
        } else {
            *level = refilled;
            Err(Duration::from_secs_f64((1.0 - refilled) / self.rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate_per_organization() {
        let limit = RateLimit::new(2, 3);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(limit.take("a", t0), Ok(()));
        }
        let wait = limit.take("a", t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        // Another organization has its own bucket.
        assert_eq!(limit.take("b", t0), Ok(()));
        // Half a second refills one request at 2/s.
        assert_eq!(limit.take("a", t0 + Duration::from_millis(500)), Ok(()));
        assert!(limit.take("a", t0 + Duration::from_millis(500)).is_err());
        // Idle time refills up to the burst, no further.
        let later = t0 + Duration::from_secs(60);
        for _ in 0..3 {
            assert_eq!(limit.take("a", later), Ok(()));
        }
        assert!(limit.take("a", later).is_err());
    }

    #[test]
    fn zero_rate_is_unlimited() {
        let limit = RateLimit::new(0, 1);
        let now = Instant::now();
        for _ in 0..1000 {
            assert_eq!(limit.take("a", now), Ok(()));
        }
    }
}
