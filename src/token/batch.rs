//! Access tokens signed in batches.
//!
//! A token request's own work (reading it, authenticating the client,
//! deciding the claims) is a few microseconds of the server's code; its
//! signature is tens of microseconds of aws-lc's, walking tables of
//! precomputed points that push that code out of the CPU's caches. Done one
//! request at a time, the two take turns evicting each other, and every
//! answer goes out alone, waking its client alone. Here the requests that
//! are ready together reach their signatures first; a lane then signs them
//! one after another and they answer together.
//!
//! One lane per runtime worker, requests dealt to them in turn, so the
//! signatures still spread over every CPU. A lane that has signed for
//! [`TURN`] lets the rest of its worker run before it goes on.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::keys::{KeyError, SigningKey};

/// Most tokens a lane takes at once.
const BATCH: usize = 64;

/// Longest a lane signs before it lets its worker's other tasks run: the
/// answers it has made go out, and the server's other endpoints stay
/// responsive behind a batch of slow signatures (RSA on a slow CPU).
const TURN: Duration = Duration::from_millis(1);

/// Requests waiting for a lane, each lane: beyond them, callers wait to
/// queue (a bounded number of connections bounds them anyway).
const QUEUE: usize = 1024;

struct Job {
    key: Arc<SigningKey>,
    claims: Vec<u8>,
    done: oneshot::Sender<Result<String, KeyError>>,
}

/// Where token requests get their signatures; cheap to clone.
#[derive(Clone)]
pub struct BatchSigner {
    lanes: Arc<[mpsc::Sender<Job>]>,
    next: Arc<AtomicUsize>,
}

impl BatchSigner {
    /// Starts a lane per worker of the current runtime. The lanes end when
    /// the last clone is dropped.
    pub fn start() -> Self {
        let workers = tokio::runtime::Handle::current().metrics().num_workers();
        let lanes = (0..workers.max(1))
            .map(|_| {
                let (tx, rx) = mpsc::channel(QUEUE);
                tokio::spawn(lane(rx));
                tx
            })
            .collect();
        Self {
            lanes,
            next: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// `claims` (a JSON object) signed with `key` as a compact JWS access
    /// token, in the next lane's next batch.
    pub async fn sign(&self, key: Arc<SigningKey>, claims: Vec<u8>) -> Result<String, KeyError> {
        let turn = self.next.fetch_add(1, Ordering::Relaxed) % self.lanes.len();
        let (done, signed) = oneshot::channel();
        self.lanes[turn]
            .send(Job { key, claims, done })
            .await
            .map_err(|_| KeyError::Sign)?;
        signed.await.map_err(|_| KeyError::Sign)?
    }
}

/// Signs what its queue holds, a batch at a time.
async fn lane(mut queue: mpsc::Receiver<Job>) {
    let mut batch = Vec::with_capacity(BATCH);
    while queue.recv_many(&mut batch, BATCH).await > 0 {
        // The first request woke this lane at once; the others that are
        // ready now get to their signatures before it starts.
        tokio::task::yield_now().await;
        while batch.len() < BATCH
            && let Ok(job) = queue.try_recv()
        {
            batch.push(job);
        }
        let mut turn = Instant::now();
        for job in batch.drain(..) {
            if turn.elapsed() >= TURN {
                tokio::task::yield_now().await;
                turn = Instant::now();
            }
            // A request that has gone (its connection closed) costs no
            // signature.
            if !job.done.is_closed() {
                let _ = job.done.send(job.key.sign(&job.claims));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::keys::{Algorithm, StoredKey};
    use futures::FutureExt;
    use jiff::Timestamp;
    use jsonwebtoken::{Validation, decode, decode_header};

    /// The claims of `token`, which must verify with `key`.
    fn claims_of(token: &str, key: &SigningKey) -> serde_json::Value {
        let mut validation = Validation::new(key.alg.jsonwebtoken());
        validation.required_spec_claims.clear();
        decode(token, key.decoding_key(), &validation)
            .unwrap()
            .claims
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_request_gets_its_own_claims_signed_with_its_own_key() {
        let at = Timestamp::from_second(1_800_000_000).unwrap();
        let keys: Vec<Arc<SigningKey>> = [Algorithm::Es256, Algorithm::Rs256, Algorithm::Es256]
            .into_iter()
            .map(|alg| {
                let stored = StoredKey::generate(alg, at, at).unwrap();
                Arc::new(SigningKey::load(&stored).unwrap())
            })
            .collect();
        let signer = BatchSigner::start();
        // More requests at once than a batch holds, the keys interleaved
        // as a rotation interleaves them.
        let requests = (0..3 * BATCH).map(|n| {
            let (signer, key) = (signer.clone(), keys[n % keys.len()].clone());
            tokio::spawn(async move {
                let claims = format!(r#"{{"jti":"{n}"}}"#).into_bytes();
                (n, signer.sign(key, claims).await)
            })
        });
        for request in futures::future::join_all(requests).await {
            let (n, token) = request.unwrap();
            let token = token.unwrap();
            let key = &keys[n % keys.len()];
            assert_eq!(
                decode_header(&token).unwrap().kid.as_deref(),
                Some(key.kid.as_str())
            );
            assert_eq!(claims_of(&token, key)["jti"], n.to_string());
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_caller_that_goes_away_leaves_the_lane_signing_for_the_others() {
        let at = Timestamp::from_second(1_800_000_000).unwrap();
        let stored = StoredKey::generate(Algorithm::Es256, at, at).unwrap();
        let key = Arc::new(SigningKey::load(&stored).unwrap());
        let signer = BatchSigner::start();
        // Queued, then dropped before the lane got to it.
        let gone = signer.sign(key.clone(), b"{}".to_vec()).now_or_never();
        assert!(gone.is_none());
        let token = signer
            .sign(key.clone(), br#"{"sub":"ci_1"}"#.to_vec())
            .await
            .unwrap();
        assert_eq!(claims_of(&token, &key)["sub"], "ci_1");
    }
}
