//! Client authentication without a client secret: an RFC 7523 client
//! assertion that is a projected ServiceAccount token, for credentials that
//! list the account in `spec.serviceAccounts`.
//!
//! The token's unverified claims must first name an account some live
//! credential lists, with our audience and not expired. Its signature is then
//! checked here, against the cluster's service-account issuer keys (the API
//! server's `/openid/v1/jwks`, cached): a forged assertion costs a signature
//! check and never reaches the API server. Only a token whose signature
//! holds is sent to the TokenReview API, for what only the API server knows:
//! that the ServiceAccount and any object the token is bound to (a pod, a
//! Secret) still exist with the same UID. Positive answers are kept for a
//! few seconds (never past the token's expiry); at most a few reviews run at
//! once, and a request waits about a second for its turn at most.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jiff::Timestamp;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::{Api, PostParams};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use crate::metrics::{Metrics, ResultLabel};
use crate::token::jwks::{self, KeyCache, KeySource, PublicKeys};

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
/// How long a request waits for its turn to be reviewed.
const PERMIT_WAIT: Duration = Duration::from_secs(1);
/// The issuer keys are fetched again for an unknown key id at most this
/// often: forged key ids cannot make us ask the API server each time.
const REFRESH_FLOOR: Duration = Duration::from_secs(10);
/// A fetch of the issuer keys that takes longer fails.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Where the API server publishes its service-account issuer keys.
const JWKS_PATH: &str = "/openid/v1/jwks";

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

/// Why an assertion could not be checked now (as opposed to a refusal).
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    #[error("the API server did not answer the token review in time")]
    TimedOut,
    #[error("too many token reviews are waiting")]
    Busy,
    #[error("token review failed: {0}")]
    Api(#[from] kube::Error),
    #[error("the cluster's service-account keys are not available: {0}")]
    NoKeys(String),
}

struct Reviewed {
    username: String,
    until: Instant,
}

/// The API server's `/openid/v1/jwks`, with this process's identity (the
/// default `system:service-account-issuer-discovery` binding, and the
/// chart's own, allow it).
struct ApiServerKeys(kube::Client);

impl KeySource for ApiServerKeys {
    fn fetch(&self) -> futures::future::BoxFuture<'_, Result<Vec<u8>, String>> {
        Box::pin(async move {
            let request = http::Request::get(JWKS_PATH)
                .body(Vec::new())
                .map_err(|e| e.to_string())?;
            match tokio::time::timeout(FETCH_TIMEOUT, self.0.request_text(request)).await {
                Ok(Ok(text)) => Ok(text.into_bytes()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("timed out".to_owned()),
            }
        })
    }
}

/// The cluster's service-account issuer keys.
pub struct ClusterKeys(KeyCache);

/// What a valid ServiceAccount token's signature covers that we check
/// here; the API server checks the rest.
#[derive(Deserialize)]
struct Signed {}

/// Whether `assertion` is signed by one of `keys` (with that key's
/// algorithm), is for `audience` and has not expired.
pub fn signature_holds(keys: &PublicKeys, assertion: &str, audience: &str) -> bool {
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_audience(&[audience]);
    validation.set_required_spec_claims(&["exp", "sub", "aud"]);
    validation.leeway = 0;
    jwks::verify::<Signed>(keys, assertion, validation).is_ok()
}

impl ClusterKeys {
    pub fn new(source: Box<dyn KeySource>) -> Self {
        Self(KeyCache::new(source, REFRESH_FLOOR))
    }

    /// Whether `assertion` carries a valid signature by one of the
    /// cluster's keys, is for `audience` and has not expired. An error when
    /// no key could ever be fetched: nothing can be told then.
    pub async fn signed(&self, assertion: &str, audience: &str) -> Result<bool, ReviewError> {
        let Some(kid) = jwks::key_id(assertion) else {
            return Ok(false);
        };
        let keys = self.0.for_kid(&kid).await;
        if keys.is_empty() {
            let why = self
                .0
                .failure()
                .unwrap_or_else(|| "no usable key".to_owned());
            return Err(ReviewError::NoKeys(format!("{JWKS_PATH}: {why}")));
        }
        Ok(signature_holds(&keys, assertion, audience))
    }
}

/// Checks ServiceAccount tokens: the signature here, then the API server's
/// TokenReview for our audience, remembering recent positive answers.
pub struct TokenReviewer {
    api: Api<TokenReview>,
    audience: String,
    keys: ClusterKeys,
    cache: Mutex<HashMap<[u8; 32], Reviewed>>,
    permits: Semaphore,
    metrics: Arc<Metrics>,
}

impl TokenReviewer {
    pub fn new(client: kube::Client, audience: String, metrics: Arc<Metrics>) -> Self {
        Self {
            api: Api::all(client.clone()),
            audience,
            keys: ClusterKeys::new(Box::new(ApiServerKeys(client))),
            cache: Mutex::default(),
            permits: Semaphore::new(CONCURRENT_REVIEWS),
            metrics,
        }
    }

    /// The audience assertions must be issued for.
    pub fn audience(&self) -> &str {
        &self.audience
    }

    fn counted(&self, result: &'static str) {
        self.metrics
            .token_reviews
            .get_or_create(&ResultLabel { result })
            .inc();
    }

    /// Whether `assertion` is a valid token of exactly the account
    /// `claimed` names, for our audience.
    pub async fn verify(&self, assertion: &str, claimed: &Claimed) -> Result<bool, ReviewError> {
        let key: [u8; 32] = Sha256::digest(assertion.as_bytes()).into();
        let username = claimed.username();
        if !self.keys.signed(assertion, &self.audience).await? {
            return Ok(false);
        }
        if let Some(hit) = self.cached(&key) {
            return Ok(hit == username);
        }
        let _permit = tokio::time::timeout(PERMIT_WAIT, self.permits.acquire())
            .await
            .map_err(|_| ReviewError::Busy)?
            .expect("never closed");
        let reviewed = self.review(assertion).await;
        self.counted(match &reviewed {
            Ok(Some(_)) => "authenticated",
            Ok(None) => "refused",
            Err(_) => "failed",
        });
        let Some(reviewed) = reviewed? else {
            return Ok(false);
        };
        let left = claimed.expires - Timestamp::now().as_second();
        let keep = CACHE_FOR.min(Duration::from_secs(left.max(0) as u64));
        self.remember(key, &reviewed, keep);
        Ok(reviewed == username)
    }

    /// The user name the API server gives the token, if it authenticates
    /// for our audience.
    async fn review(&self, assertion: &str) -> Result<Option<String>, ReviewError> {
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
            return Ok(None);
        };
        Ok(status
            .user
            .and_then(|u| u.username)
            .filter(|_| status.authenticated == Some(true))
            .filter(|_| status.audiences.is_some_and(|a| a.contains(&self.audience))))
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

    /// A JWKS document that can change, counting fetches.
    struct Served {
        document: std::sync::Mutex<Result<Vec<u8>, String>>,
        fetches: std::sync::atomic::AtomicUsize,
    }

    impl KeySource for Arc<Served> {
        fn fetch(&self) -> futures::future::BoxFuture<'_, Result<Vec<u8>, String>> {
            self.fetches
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let document = self.document.lock().unwrap().clone();
            Box::pin(async move { document })
        }
    }

    /// A service-account-like token signed by a fresh key of ours, and
    /// that key's JWKS.
    fn issuer(kid: &str) -> (crate::token::SigningKey, serde_json::Value) {
        use crate::token::{Algorithm, SigningKey, StoredKey};
        let now = Timestamp::now();
        let mut stored = StoredKey::generate(Algorithm::Rs256, now, now).unwrap();
        stored.kid = kid.to_owned();
        let key = SigningKey::load(&stored).unwrap();
        let jwks = serde_json::json!({"keys": [key.jwk()]});
        (key, jwks)
    }

    fn sa_token(key: &crate::token::SigningKey, audience: &str) -> String {
        let exp = Timestamp::now().as_second() + 600;
        let claims = serde_json::json!({
            "sub": "system:serviceaccount:org-a:sync", "aud": [audience], "exp": exp
        });
        key.sign(claims.to_string().as_bytes()).unwrap()
    }

    #[tokio::test]
    async fn signatures_are_checked_against_the_cluster_keys_fetched_sparingly() {
        let (first, jwks) = issuer("k1");
        let served = Arc::new(Served {
            document: std::sync::Mutex::new(Ok(jwks.to_string().into_bytes())),
            fetches: Default::default(),
        });
        let fetches = || served.fetches.load(std::sync::atomic::Ordering::SeqCst);
        let keys = ClusterKeys::new(Box::new(served.clone()));
        let aud = "https://catalio.ai";
        assert!(keys.signed(&sa_token(&first, aud), aud).await.unwrap());
        assert!(!keys.signed(&sa_token(&first, "other"), aud).await.unwrap());
        assert_eq!(fetches(), 1);
        // A forged signature under a known key id: refused, no fetch.
        let mut forged = sa_token(&first, aud);
        forged.truncate(forged.rfind('.').unwrap());
        forged.push_str(".AAAA");
        assert!(!keys.signed(&forged, aud).await.unwrap());
        // Unknown key ids, however many: no fetch within the floor of the
        // last one, then one.
        let (stranger, _) = issuer("k-forged");
        for _ in 0..10 {
            assert!(!keys.signed(&sa_token(&stranger, aud), aud).await.unwrap());
        }
        assert_eq!(fetches(), 1);
        keys.0.forget_fetch().await;
        for _ in 0..100 {
            assert!(!keys.signed(&sa_token(&stranger, aud), aud).await.unwrap());
        }
        assert_eq!(fetches(), 2);
        // Junk is refused without a fetch.
        for junk in ["", "a.b.c", "not a jwt"] {
            assert!(!keys.signed(junk, aud).await.unwrap());
        }
        assert_eq!(fetches(), 2);
    }

    #[tokio::test]
    async fn failed_fetches_keep_the_keys_and_no_keys_is_an_error() {
        let served = Arc::new(Served {
            document: std::sync::Mutex::new(Err("unreachable".into())),
            fetches: Default::default(),
        });
        let keys = ClusterKeys::new(Box::new(served.clone()));
        let (key, jwks) = issuer("k1");
        let aud = "https://catalio.ai";
        let token = sa_token(&key, aud);
        assert!(matches!(
            keys.signed(&token, aud).await,
            Err(ReviewError::NoKeys(_))
        ));
        *served.document.lock().unwrap() = Ok(jwks.to_string().into_bytes());
        // Within the floor nothing is fetched again: still unknown.
        assert!(keys.signed(&token, aud).await.is_err());
        keys.0.forget_fetch().await;
        assert!(keys.signed(&token, aud).await.unwrap());
        // The API server goes away: the keys stay.
        *served.document.lock().unwrap() = Err("down".into());
        keys.0.forget_fetch().await;
        let (other, _) = issuer("k2");
        assert!(!keys.signed(&sa_token(&other, aud), aud).await.unwrap());
        assert!(keys.signed(&token, aud).await.unwrap());
    }
}
