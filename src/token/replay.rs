//! Ids seen once: a client assertion's or a DPoP proof's `jti` is accepted
//! the first time within its life, never again on this replica.
//!
//! Each replica keeps its own: a captured assertion (at most 5 minutes of
//! life) or proof (a minute) could be replayed once at each other replica
//! before it expires. That window is what sharing the ids would close, at
//! the price of a write to the API server on every token request; it is
//! small, and open only to someone who captured the assertion or proof in
//! transit, which TLS is there to prevent.
//!
//! Memory is bounded: ids are kept as 128-bit hashes until they expire,
//! pruned at most once a second when the table is full, and at the cap a
//! new id is refused (fails closed) rather than an old one forgotten.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// Ids kept at once: about 40 MiB at most.
const CAPACITY: usize = 1_000_000;
const PRUNE_EVERY: Duration = Duration::from_secs(1);

#[derive(Default)]
struct Table {
    /// Hash of (scope, id) to when it may be forgotten (seconds).
    until: HashMap<u128, i64>,
    pruned: Option<Instant>,
}

#[derive(Default)]
pub struct Replays {
    table: Mutex<Table>,
}

/// Why an id was not accepted.
#[derive(Debug, PartialEq, Eq)]
pub enum Seen {
    /// It was used before.
    Again,
    /// The table is full of live ids.
    Full,
}

fn key(scope: &str, id: &str) -> u128 {
    let digest = Sha256::new()
        .chain_update(scope.as_bytes())
        .chain_update([0])
        .chain_update(id.as_bytes())
        .finalize();
    let mut out = [0u8; 16];
    out.copy_from_slice(&digest[..16]);
    u128::from_le_bytes(out)
}

impl Replays {
    /// Records `id` within `scope` (a client id, a key thumbprint) until
    /// `until` (seconds); `Ok` the first time it is seen.
    pub fn first_use(&self, scope: &str, id: &str, until: i64, now: i64) -> Result<(), Seen> {
        let key = key(scope, id);
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(expires) = table.until.get(&key)
            && *expires > now
        {
            return Err(Seen::Again);
        }
        if table.until.len() >= CAPACITY {
            let due = table.pruned.is_none_or(|at| at.elapsed() >= PRUNE_EVERY);
            if due {
                table.until.retain(|_, expires| *expires > now);
                table.pruned = Some(Instant::now());
            }
            if table.until.len() >= CAPACITY {
                return Err(Seen::Full);
            }
        }
        table.until.insert(key, until);
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.table
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .until
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_accepted_once_per_scope_until_it_expires() {
        let r = Replays::default();
        assert_eq!(r.first_use("ci_a", "j1", 100, 0), Ok(()));
        assert_eq!(r.first_use("ci_a", "j1", 100, 50), Err(Seen::Again));
        assert_eq!(r.first_use("ci_b", "j1", 100, 50), Ok(()), "another scope");
        // Past its life the id may come again (its token or proof is
        // refused for its age elsewhere).
        assert_eq!(r.first_use("ci_a", "j1", 200, 100), Ok(()));
        assert_eq!(r.len(), 2);
    }
}
