//! Client authentication without a client secret: an RFC 7523 client
//! assertion that is a projected ServiceAccount token, for credentials that
//! list the account in `spec.serviceAccounts`.
//!
//! The token is verified the way Kubernetes intends, by the API server that
//! issued it, through the TokenReview API: it checks the signature, expiry
//! and audience, and that the ServiceAccount and any object the token is
//! bound to (a pod, a Secret) still exist with the same UID. Before asking,
//! the token's unverified claims must name an account some live credential
//! lists, with our audience and not expired, so a stranger's garbage never
//! reaches the API server. Answers are kept for a few seconds (never past
//! the token's expiry), and at most a few reviews run at once.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jiff::Timestamp;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::{Api, PostParams};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

/// `client_assertion_type` of a JWT client assertion (RFC 7523 section 2.2).
pub const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Longer assertions are refused unread: a ServiceAccount token is ~1 KiB.
const MAX_ASSERTION: usize = 16 * 1024;
/// How long a positive review is believed.
const CACHE_FOR: Duration = Duration::from_secs(10);
/// Reviews kept at most; past it, expired ones go, then all.
const CACHE_SIZE: usize = 10_000;
/// Reviews in flight at once per replica.
const CONCURRENT_REVIEWS: usize = 8;
/// A review that takes longer fails (the client may retry).
const REVIEW_TIMEOUT: Duration = Duration::from_secs(5);

/// The ServiceAccount a token claims to be, read before it is verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claimed {
    pub namespace: String,
    pub account: String,
    /// Its `exp`, seconds since the epoch.
    pub expires: i64,
}

impl Claimed {
    /// The user name the API server gives the account.
    pub fn username(&self) -> String {
        format!("system:serviceaccount:{}:{}", self.namespace, self.account)
    }
}

#[derive(Deserialize)]
struct Unverified {
    sub: String,
    #[serde(default)]
    aud: Audience,
    exp: i64,
}

#[derive(Deserialize, Default)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
    #[default]
    None,
}

impl Audience {
    fn contains(&self, wanted: &str) -> bool {
        match self {
            Audience::One(a) => a == wanted,
            Audience::Many(all) => all.iter().any(|a| a == wanted),
            Audience::None => false,
        }
    }
}

/// Reads a ServiceAccount token's claims without verifying them: `None`
/// unless it is a JWT whose subject is a ServiceAccount, whose audience
/// includes `audience` and that has not expired at `now`.
pub fn claimed(assertion: &str, audience: &str, now: Timestamp) -> Option<Claimed> {
    if assertion.len() > MAX_ASSERTION {
        return None;
    }
    let mut parts = assertion.split('.');
    let (_header, payload, _signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let payload = URL_SAFE_NO_PAD.decode(payload).ok()?;
    let claims: Unverified = serde_json::from_slice(&payload).ok()?;
    let rest = claims.sub.strip_prefix("system:serviceaccount:")?;
    let (namespace, account) = rest.split_once(':')?;
    if namespace.is_empty() || account.is_empty() || account.contains(':') {
        return None;
    }
    if !claims.aud.contains(audience) || claims.exp <= now.as_second() {
        return None;
    }
    Some(Claimed {
        namespace: namespace.to_owned(),
        account: account.to_owned(),
        expires: claims.exp,
    })
}

/// Why a review gave no answer (as opposed to a refusal).
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    #[error("the API server did not answer the token review in time")]
    TimedOut,
    #[error("token review failed: {0}")]
    Api(#[from] kube::Error),
}

struct Reviewed {
    username: String,
    until: Instant,
}

/// Asks the API server whether ServiceAccount tokens are valid for our
/// audience, remembering recent answers.
pub struct TokenReviewer {
    api: Api<TokenReview>,
    audience: String,
    cache: Mutex<HashMap<[u8; 32], Reviewed>>,
    permits: Semaphore,
}

impl TokenReviewer {
    pub fn new(client: kube::Client, audience: String) -> Self {
        Self {
            api: Api::all(client),
            audience,
            cache: Mutex::default(),
            permits: Semaphore::new(CONCURRENT_REVIEWS),
        }
    }

    /// The audience assertions must be issued for.
    pub fn audience(&self) -> &str {
        &self.audience
    }

    /// Whether `assertion` is a valid token of exactly the account
    /// `claimed` names, for our audience.
    pub async fn verify(&self, assertion: &str, claimed: &Claimed) -> Result<bool, ReviewError> {
        let key: [u8; 32] = Sha256::digest(assertion.as_bytes()).into();
        let username = claimed.username();
        if let Some(hit) = self.cached(&key) {
            return Ok(hit == username);
        }
        let _permit = self.permits.acquire().await.expect("never closed");
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: assertion.to_owned(),
                audiences: Some(vec![self.audience.clone()]),
            },
            ..Default::default()
        };
        let answer = tokio::time::timeout(
            REVIEW_TIMEOUT,
            self.api.create(&PostParams::default(), &review),
        )
        .await
        .map_err(|_| ReviewError::TimedOut)??;
        let Some(status) = answer.status else {
            return Ok(false);
        };
        let reviewed = status
            .user
            .and_then(|u| u.username)
            .filter(|_| status.authenticated == Some(true))
            .filter(|_| status.audiences.is_some_and(|a| a.contains(&self.audience)));
        let Some(reviewed) = reviewed else {
            return Ok(false);
        };
        let left = claimed.expires - Timestamp::now().as_second();
        let keep = CACHE_FOR.min(Duration::from_secs(left.max(0) as u64));
        self.remember(key, &reviewed, keep);
        Ok(reviewed == username)
    }

    fn cached(&self, key: &[u8; 32]) -> Option<String> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .get(key)
            .filter(|r| r.until > Instant::now())
            .map(|r| r.username.clone())
    }

    fn remember(&self, key: [u8; 32], username: &str, keep: Duration) {
        let now = Instant::now();
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= CACHE_SIZE {
            cache.retain(|_, r| r.until > now);
            if cache.len() >= CACHE_SIZE {
                cache.clear();
            }
        }
        cache.insert(
            key,
            Reviewed {
                username: username.to_owned(),
                until: now + keep,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(claims: serde_json::Value) -> String {
        format!(
            "eyJhbGciOiJSUzI1NiJ9.{}.c2ln",
            URL_SAFE_NO_PAD.encode(claims.to_string())
        )
    }

    #[test]
    fn only_unexpired_service_account_tokens_for_us_are_worth_reviewing() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let exp = 1_800_000_600;
        let good = token(serde_json::json!({
            "sub": "system:serviceaccount:org-a:sync", "aud": ["x", "https://catalio.ai"], "exp": exp
        }));
        assert_eq!(
            claimed(&good, "https://catalio.ai", now),
            Some(Claimed {
                namespace: "org-a".into(),
                account: "sync".into(),
                expires: exp
            })
        );
        let single = token(serde_json::json!({
            "sub": "system:serviceaccount:org-a:sync", "aud": "https://catalio.ai", "exp": exp
        }));
        assert!(claimed(&single, "https://catalio.ai", now).is_some());
        for (what, bad) in [
            (
                "other audience",
                serde_json::json!({"sub": "system:serviceaccount:org-a:sync", "aud": "https://kubernetes.default.svc", "exp": exp}),
            ),
            (
                "no audience",
                serde_json::json!({"sub": "system:serviceaccount:org-a:sync", "exp": exp}),
            ),
            (
                "expired",
                serde_json::json!({"sub": "system:serviceaccount:org-a:sync", "aud": "https://catalio.ai", "exp": 1_800_000_000}),
            ),
            (
                "a user",
                serde_json::json!({"sub": "alice", "aud": "https://catalio.ai", "exp": exp}),
            ),
            (
                "no name",
                serde_json::json!({"sub": "system:serviceaccount:org-a:", "aud": "https://catalio.ai", "exp": exp}),
            ),
            (
                "extra part",
                serde_json::json!({"sub": "system:serviceaccount:org-a:sync:x", "aud": "https://catalio.ai", "exp": exp}),
            ),
            (
                "no exp",
                serde_json::json!({"sub": "system:serviceaccount:org-a:sync", "aud": "https://catalio.ai"}),
            ),
        ] {
            assert_eq!(
                claimed(&token(bad), "https://catalio.ai", now),
                None,
                "{what}"
            );
        }
        for garbage in [
            "",
            "a.b",
            "a.b.c.d",
            "a.!!!.c",
            &"a".repeat(MAX_ASSERTION + 1),
        ] {
            assert_eq!(
                claimed(garbage, "https://catalio.ai", now),
                None,
                "{garbage:.20}"
            );
        }
    }
}
