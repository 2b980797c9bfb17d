//! Throttles repeated authentication failures per client id *and* source
//! address. Client ids are public (the `sub` claim, a printer column), so a
//! throttle per client id alone would let anyone lock a client's owner out;
//! per source, failures from one place never refuse a request from another.
//! IPv6 sources count per /64, the block one host is usually given.
//!
//! Only client ids of our form reach the throttle (callers parse them
//! first), and its memory is bounded by design: fixed-size entries that
//! expire with their window, pruned at most once a second, and a hard cap
//! past which new failures go untracked rather than grow the table.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures allowed in one window before the pair is refused.
const LIMIT: u32 = 10;
const WINDOW: Duration = Duration::from_secs(60);
/// Pairs tracked at once: about 4 MiB at most.
const CAPACITY: usize = 65_536;
/// At the cap, expired windows are dropped at most this often, so a full
/// table does not cost a scan per request.
const PRUNE_EVERY: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Key {
    client: u128,
    source: [u8; 16],
}

/// The part of an address that names one source: IPv4 in full, IPv6 by /64.
fn source(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_ipv6_mapped().octets(),
            None => {
                let mut block = [0u8; 16];
                block[..8].copy_from_slice(&v6.octets()[..8]);
                block
            }
        },
    }
}

struct Window {
    failures: u32,
    started: Instant,
}

struct Table {
    windows: HashMap<Key, Window>,
    pruned: Option<Instant>,
}

pub struct Throttle {
    table: Mutex<Table>,
}

impl Default for Throttle {
    fn default() -> Self {
        Self {
            table: Mutex::new(Table {
                windows: HashMap::new(),
                pruned: None,
            }),
        }
    }
}

impl Throttle {
    /// How long `client` must wait before trying again from `from`, if it
    /// is throttled there.
    pub fn blocked(&self, client: u128, from: IpAddr, now: Instant) -> Option<Duration> {
        let key = Key {
            client,
            source: source(from),
        };
        let table = self.lock();
        let window = table.windows.get(&key)?;
        let left = WINDOW.checked_sub(now.saturating_duration_since(window.started))?;
        (window.failures >= LIMIT && !left.is_zero()).then_some(left)
    }

    /// Counts a failed authentication of `client` from `from`.
    pub fn failed(&self, client: u128, from: IpAddr, now: Instant) {
        let key = Key {
            client,
            source: source(from),
        };
        let mut table = self.lock();
        if table.windows.len() >= CAPACITY && !table.windows.contains_key(&key) {
            let due = table
                .pruned
                .is_none_or(|at| now.saturating_duration_since(at) >= PRUNE_EVERY);
            if due {
                table
                    .windows
                    .retain(|_, w| now.saturating_duration_since(w.started) < WINDOW);
                table.pruned = Some(now);
            }
            if table.windows.len() >= CAPACITY {
                return;
            }
        }
        let window = table.windows.entry(key).or_insert(Window {
            failures: 0,
            started: now,
        });
        if now.saturating_duration_since(window.started) >= WINDOW {
            *window = Window {
                failures: 0,
                started: now,
            };
        }
        window.failures = window.failures.saturating_add(1);
    }

    /// How many pairs are tracked.
    pub fn len(&self) -> usize {
        self.lock().windows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    // Every change is one insert, one assignment or one retain: a panic
    // cannot leave the table half-written, so a poisoned lock is usable.
    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const A: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));

    #[test]
    fn blocks_a_client_from_one_source_for_the_rest_of_the_window() {
        let t = Throttle::default();
        let start = Instant::now();
        for _ in 0..LIMIT - 1 {
            t.failed(1, A, start);
        }
        assert_eq!(t.blocked(1, A, start), None);
        t.failed(1, A, start);
        let later = start + Duration::from_secs(5);
        assert_eq!(
            t.blocked(1, A, later),
            Some(WINDOW - Duration::from_secs(5))
        );
        // Another source, or another client from the same source, is free.
        assert_eq!(t.blocked(1, B, later), None);
        assert_eq!(t.blocked(2, A, later), None);
        // The window ends, and a new failure starts a new one.
        let over = start + WINDOW;
        assert_eq!(t.blocked(1, A, over), None);
        t.failed(1, A, over);
        assert_eq!(t.blocked(1, A, over), None);
    }

    #[test]
    fn ipv6_sources_count_per_64_and_mapped_ipv4_as_ipv4() {
        let t = Throttle::default();
        let now = Instant::now();
        let host = |last: u16| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 2, 0, 0, 0, last));
        for i in 0..LIMIT {
            t.failed(1, host(i as u16), now);
        }
        assert!(t.blocked(1, host(999), now).is_some(), "same /64");
        let elsewhere = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 3, 0, 0, 0, 1));
        assert_eq!(t.blocked(1, elsewhere, now), None);
        for _ in 0..LIMIT {
            t.failed(2, A, now);
        }
        let mapped = IpAddr::V6(Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped());
        assert!(t.blocked(2, mapped, now).is_some());
    }

    #[test]
    fn the_table_never_grows_past_its_capacity() {
        let t = Throttle::default();
        let start = Instant::now();
        for client in 0..CAPACITY as u128 + 1_000 {
            t.failed(client, A, start);
        }
        assert_eq!(t.len(), CAPACITY, "new pairs go untracked when full");

        // Full of live windows: a prune finds nothing to drop, and the next
        // one is due only a second later.
        let nearly_over = start + WINDOW - Duration::from_millis(500);
        t.failed(u128::MAX, A, nearly_over);
        assert_eq!(t.len(), CAPACITY);
        let over = nearly_over + Duration::from_millis(600);
        t.failed(u128::MAX, A, over);
        assert_eq!(t.len(), CAPACITY, "no second scan within a second");
        t.failed(u128::MAX, A, nearly_over + PRUNE_EVERY);
        assert_eq!(t.len(), 1, "expired windows make room");
    }
}
