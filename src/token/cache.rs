//! Tokens whose signature has been checked, so a client calling the
//! JSON:API with one token pays for signature verification once, not per
//! request (an ES256 verification is most of a small request's cost).
//!
//! Only what cannot change is remembered: that this exact token (by its
//! SHA-256) carries a valid signature by key `kid` and these claims.
//! Everything that can change is checked on every use: that `kid` is still
//! in the key ring, expiry and not-before against the clock, and the
//! credential (revocation, rotation) in the index.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::AccessClaims;

/// Tokens remembered at once; past it the cache starts over. A few
/// hundred bytes each.
const CAPACITY: usize = 4096;

type Digest = [u8; 32];

#[derive(Default)]
pub struct VerifiedTokens {
    tokens: Mutex<HashMap<Digest, Arc<Checked>>>,
}

/// What a signature check established.
#[derive(Debug)]
pub struct Checked {
    pub kid: String,
    pub claims: Arc<AccessClaims>,
}

fn digest(token: &str) -> Digest {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    let mut out = [0; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

impl VerifiedTokens {
    pub fn get(&self, token: &str) -> Option<Arc<Checked>> {
        let key = digest(token);
        self.lock().get(&key).cloned()
    }

    pub fn insert(&self, token: &str, checked: Checked) {
        let key = digest(token);
        let mut tokens = self.lock();
        if tokens.len() >= CAPACITY {
            tokens.clear();
        }
        tokens.insert(key, Arc::new(checked));
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    // Every write is one insert or clear: a panic cannot leave the map
    // half-written, so a poisoned lock is safe to take.
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Digest, Arc<Checked>>> {
        self.tokens.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checked(jti: &str) -> Checked {
        Checked {
            kid: "k".into(),
            claims: Arc::new(AccessClaims {
                iss: String::new(),
                aud: String::new(),
                sub: String::new(),
                client_id: String::new(),
                org: String::new(),
                scope: String::new(),
                iat: 0,
                nbf: 0,
                exp: 0,
                jti: jti.into(),
                rot: 0,
                sid: String::new(),
                cnf: None,
            }),
        }
    }

    #[test]
    fn remembers_exact_tokens_and_stays_bounded() {
        let cache = VerifiedTokens::default();
        cache.insert("a.b.c", checked("1"));
        assert_eq!(cache.get("a.b.c").unwrap().claims.jti, "1");
        assert!(cache.get("a.b.d").is_none());
        assert!(cache.get("a.b.c ").is_none());
        for i in 0..CAPACITY * 2 + 1 {
            cache.insert(&format!("t{i}"), checked("x"));
            assert!(cache.len() <= CAPACITY);
        }
        assert!(cache.get(&format!("t{}", CAPACITY * 2)).is_some());
    }
}
