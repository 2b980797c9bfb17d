//! Other issuers' public keys, as JSON Web Key Sets (RFC 7517), and the
//! check of a JWT one of them signed. In: a JWKS document and compact JWTs;
//! out: the claims of a token whose signature holds, or why not.
//!
//! A key's algorithm comes from the key (its `alg`, or its type and curve),
//! never from the token: a header naming another algorithm is refused, so
//! `alg: none` and HMAC-with-the-public-key forgeries never reach a
//! signature check. Symmetric keys (`kty: oct`) are never used.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use serde::de::DeserializeOwned;
use tracing::warn;

/// Keys kept from one document at most; a JWKS has a handful.
const MAX_KEYS: usize = 64;
/// Longer tokens are refused unread.
pub const MAX_TOKEN: usize = 16 * 1024;

/// One verification key and the only algorithm it verifies.
pub struct PublicKey {
    pub alg: Algorithm,
    key: DecodingKey,
}

/// The usable keys of one JWKS, by key id.
#[derive(Default)]
pub struct PublicKeys {
    by_kid: HashMap<String, PublicKey>,
}

impl std::fmt::Debug for PublicKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut kids: Vec<(&String, Algorithm)> =
            self.by_kid.iter().map(|(k, v)| (k, v.alg)).collect();
        kids.sort_by(|a, b| a.0.cmp(b.0));
        f.debug_list().entries(kids).finish()
    }
}

/// The same key ids with the same algorithms (key material is not
/// compared: an entry's keys come from one object version).
impl PartialEq for PublicKeys {
    fn eq(&self, other: &Self) -> bool {
        self.by_kid.len() == other.by_kid.len()
            && self
                .by_kid
                .iter()
                .all(|(k, v)| other.by_kid.get(k).is_some_and(|o| o.alg == v.alg))
    }
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum JwksError {
    #[error("the document is not a JSON Web Key Set")]
    NotAKeySet,
}

#[derive(serde::Deserialize)]
struct Document {
    keys: Vec<serde_json::Value>,
}

/// Why a token was not accepted. Every variant refuses alike; the variant
/// is for metrics and logs.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("not a JWT")]
    Malformed,
    #[error("no key with the token's key id")]
    UnknownKey,
    #[error("the header's algorithm is not the key's")]
    Algorithm,
    #[error("bad signature")]
    Signature,
    #[error("expired")]
    Expired,
    #[error("claims do not hold: {0}")]
    Claims(&'static str),
}

impl PublicKeys {
    /// The keys of a JWKS document that can verify signatures; others
    /// (symmetric, unknown types or curves, malformed) are left out.
    pub fn parse(document: &[u8]) -> Result<Self, JwksError> {
        let Document { keys } =
            serde_json::from_slice(document).map_err(|_| JwksError::NotAKeySet)?;
        let by_kid = keys
            .into_iter()
            .filter_map(|value| serde_json::from_value::<Jwk>(value).ok())
            .filter_map(|jwk| {
                let kid = jwk.common.key_id.clone()?;
                let alg = algorithm(&jwk)?;
                let key = DecodingKey::from_jwk(&jwk).ok()?;
                Some((kid, PublicKey { alg, key }))
            })
            .take(MAX_KEYS)
            .collect();
        Ok(Self { by_kid })
    }

    pub fn get(&self, kid: &str) -> Option<&PublicKey> {
        self.by_kid.get(kid)
    }

    pub fn len(&self) -> usize {
        self.by_kid.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_kid.is_empty()
    }
}

/// The algorithm a key verifies: its `alg` when it names one we accept,
/// otherwise the one its type and curve imply.
pub(crate) fn algorithm(jwk: &Jwk) -> Option<Algorithm> {
    let implied = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => Algorithm::ES256,
            EllipticCurve::P384 => Algorithm::ES384,
            _ => return None,
        },
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
            Algorithm::EdDSA
        }
        _ => return None,
    };
    let named = match jwk.common.key_algorithm {
        None => return Some(implied),
        Some(KeyAlgorithm::RS256) => Algorithm::RS256,
        Some(KeyAlgorithm::RS384) => Algorithm::RS384,
        Some(KeyAlgorithm::RS512) => Algorithm::RS512,
        Some(KeyAlgorithm::PS256) => Algorithm::PS256,
        Some(KeyAlgorithm::PS384) => Algorithm::PS384,
        Some(KeyAlgorithm::PS512) => Algorithm::PS512,
        Some(KeyAlgorithm::ES256) => Algorithm::ES256,
        Some(KeyAlgorithm::ES384) => Algorithm::ES384,
        Some(KeyAlgorithm::EdDSA) => Algorithm::EdDSA,
        Some(_) => return None,
    };
    // The named algorithm must suit the key: an RSA key named ES256 is
    // no key.
    let family = |a: Algorithm| match a {
        Algorithm::RS256
        | Algorithm::RS384
        | Algorithm::RS512
        | Algorithm::PS256
        | Algorithm::PS384
        | Algorithm::PS512 => 0,
        Algorithm::ES256 => 1,
        Algorithm::ES384 => 2,
        Algorithm::EdDSA => 3,
        _ => 4,
    };
    (family(named) == family(implied)).then_some(named)
}

/// Where a key set comes from: the API server's service-account keys, an
/// outside issuer's discovery document, ...
pub trait KeySource: Send + Sync {
    fn fetch(&self) -> futures::future::BoxFuture<'_, Result<Vec<u8>, String>>;
}

/// A JWKS from its source: fetched on first use, and again when a token
/// names a key it lacks, at most once per `floor` (forged key ids cannot
/// make us fetch each time); kept through failed fetches. Without a source
/// (keys given inline) it never fetches.
pub struct KeyCache {
    source: Option<Box<dyn KeySource>>,
    floor: Duration,
    keys: RwLock<Arc<PublicKeys>>,
    /// When the last fetch started; held while one runs, so concurrent
    /// requests wait for it instead of fetching again.
    fetched: tokio::sync::Mutex<Option<Instant>>,
    /// What the last failed fetch said, for the callers' errors.
    failure: RwLock<Option<String>>,
}

impl KeyCache {
    pub fn new(source: Box<dyn KeySource>, floor: Duration) -> Self {
        Self {
            source: Some(source),
            floor,
            keys: RwLock::default(),
            fetched: tokio::sync::Mutex::new(None),
            failure: RwLock::default(),
        }
    }

    /// Keys given once (an inline JWKS), never fetched.
    pub fn fixed(keys: PublicKeys) -> Self {
        Self {
            source: None,
            floor: Duration::MAX,
            keys: RwLock::new(Arc::new(keys)),
            fetched: tokio::sync::Mutex::new(None),
            failure: RwLock::default(),
        }
    }

    pub fn current(&self) -> Arc<PublicKeys> {
        self.keys.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Why the last fetch failed, if it did.
    pub fn failure(&self) -> Option<String> {
        self.failure
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The keys, fetched again first when `kid` is not among them (and
    /// the floor allows).
    pub async fn for_kid(&self, kid: &str) -> Arc<PublicKeys> {
        let keys = self.current();
        if keys.get(kid).is_some() || self.source.is_none() {
            return keys;
        }
        self.refresh().await;
        self.current()
    }

    async fn refresh(&self) {
        let Some(source) = &self.source else {
            return;
        };
        let mut fetched = self.fetched.lock().await;
        if fetched.is_some_and(|at| at.elapsed() < self.floor) {
            return;
        }
        *fetched = Some(Instant::now());
        let parsed = source
            .fetch()
            .await
            .and_then(|document| PublicKeys::parse(&document).map_err(|e| e.to_string()));
        let failure = match parsed {
            Ok(keys) => {
                *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(keys);
                None
            }
            Err(e) => {
                warn!(error = %e, "could not fetch a key set; keeping the last one");
                Some(e)
            }
        };
        *self.failure.write().unwrap_or_else(|e| e.into_inner()) = failure;
    }

    /// Forgets when the last fetch was, as if the floor had passed.
    #[cfg(test)]
    pub async fn forget_fetch(&self) {
        *self.fetched.lock().await = None;
    }
}

/// The key id a compact JWT's header names, if it parses.
pub fn key_id(token: &str) -> Option<String> {
    if token.len() > MAX_TOKEN {
        return None;
    }
    decode_header(token).ok()?.kid
}

/// Checks `token` against `keys`: the header's key id names a key, its
/// algorithm is that key's, the signature holds, and `validation` (told
/// nothing about algorithms) accepts the claims.
pub fn verify<T: DeserializeOwned>(
    keys: &PublicKeys,
    token: &str,
    mut validation: Validation,
) -> Result<T, Refusal> {
    if token.len() > MAX_TOKEN {
        return Err(Refusal::Malformed);
    }
    let header = decode_header(token).map_err(|_| Refusal::Malformed)?;
    let kid = header.kid.as_deref().ok_or(Refusal::UnknownKey)?;
    let key = keys.get(kid).ok_or(Refusal::UnknownKey)?;
    if header.alg != key.alg {
        return Err(Refusal::Algorithm);
    }
    validation.algorithms = vec![key.alg];
    decode::<T>(token, &key.key, &validation)
        .map(|data| data.claims)
        .map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            match e.kind() {
                K::InvalidSignature => Refusal::Signature,
                K::ExpiredSignature => Refusal::Expired,
                K::InvalidAudience => Refusal::Claims("audience"),
                K::InvalidIssuer => Refusal::Claims("issuer"),
                K::InvalidSubject => Refusal::Claims("subject"),
                K::ImmatureSignature => Refusal::Claims("not yet valid"),
                K::MissingRequiredClaim(_) => Refusal::Claims("missing claim"),
                K::InvalidAlgorithm => Refusal::Algorithm,
                _ => Refusal::Malformed,
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use serde_json::{Value, json};

    use crate::token::{Algorithm as Ours, SigningKey, StoredKey};

    /// A signing key of ours, and its public JWK under `kid`.
    fn key(alg: Ours, kid: &str) -> (StoredKey, Value) {
        let now = jiff::Timestamp::now();
        let mut stored = StoredKey::generate(alg, now, now).unwrap();
        stored.kid = kid.to_owned();
        let loaded = SigningKey::load(&stored).unwrap();
        let jwk = serde_json::to_value(loaded.jwk()).unwrap();
        (stored, jwk)
    }

    fn sign(stored: &StoredKey, claims: &Value) -> String {
        let key = SigningKey::load(stored).unwrap();
        key.sign(claims.to_string().as_bytes()).unwrap()
    }

    fn validation() -> Validation {
        let mut v = Validation::new(Algorithm::RS256);
        v.set_audience(&["us"]);
        v.set_required_spec_claims(&["exp", "aud"]);
        v
    }

    #[test]
    fn a_token_verifies_only_with_its_key_and_that_keys_algorithm() {
        let (rsa, rsa_jwk) = key(Ours::Rs256, "r");
        let (ec, ec_jwk) = key(Ours::Es256, "e");
        let keys = PublicKeys::parse(
            json!({"keys": [rsa_jwk, ec_jwk, {"kty": "oct", "kid": "h", "k": "c2VjcmV0"}]})
                .to_string()
                .as_bytes(),
        )
        .unwrap();
        assert_eq!(keys.len(), 2, "the symmetric key is left out");
        let exp = jiff::Timestamp::now().as_second() + 60;
        let claims = json!({"sub": "x", "aud": "us", "exp": exp});
        for stored in [&rsa, &ec] {
            let token = sign(stored, &claims);
            let got: Value = verify(&keys, &token, validation()).unwrap();
            assert_eq!(got["sub"], "x");
            assert_eq!(key_id(&token).as_deref(), Some(stored.kid.as_str()));
        }
        // Another audience, expired, a tampered signature, an unknown kid.
        let other = json!({"sub": "x", "aud": "them", "exp": exp});
        assert_eq!(
            verify::<Value>(&keys, &sign(&rsa, &other), validation()),
            Err(Refusal::Claims("audience"))
        );
        let old = json!({"sub": "x", "aud": "us", "exp": exp - 3600});
        assert_eq!(
            verify::<Value>(&keys, &sign(&ec, &old), validation()),
            Err(Refusal::Expired)
        );
        let mut token = sign(&rsa, &claims).into_bytes();
        let at = token.len() - 10;
        token[at] = if token[at] == b'A' { b'B' } else { b'A' };
        let token = String::from_utf8(token).unwrap();
        assert_eq!(
            verify::<Value>(&keys, &token, validation()),
            Err(Refusal::Signature)
        );
        let mut stranger = rsa.clone();
        stranger.kid = "unknown".into();
        let token = sign(&stranger, &claims);
        assert_eq!(
            verify::<Value>(&keys, &token, validation()),
            Err(Refusal::UnknownKey)
        );
    }

    #[test]
    fn algorithms_the_key_does_not_have_are_refused() {
        let (_, rsa_jwk) = key(Ours::Rs256, "r");
        let n = rsa_jwk["n"].as_str().unwrap().to_owned();
        let keys = PublicKeys::parse(json!({"keys": [rsa_jwk]}).to_string().as_bytes()).unwrap();
        let exp = jiff::Timestamp::now().as_second() + 60;
        let payload = URL_SAFE_NO_PAD.encode(json!({"aud": "us", "exp": exp}).to_string());
        // alg none, and HS256 keyed with the public key's modulus.
        for header in [
            json!({"alg": "none", "kid": "r"}),
            json!({"alg": "HS256", "kid": "r"}),
            json!({"alg": "ES256", "kid": "r"}),
        ] {
            let head = URL_SAFE_NO_PAD.encode(header.to_string());
            let input = format!("{head}.{payload}");
            let mac = {
                use aws_lc_rs::hmac;
                let key = hmac::Key::new(hmac::HMAC_SHA256, n.as_bytes());
                URL_SAFE_NO_PAD.encode(hmac::sign(&key, input.as_bytes()))
            };
            let token = format!("{input}.{mac}");
            let refused = verify::<Value>(&keys, &token, validation()).unwrap_err();
            assert!(
                matches!(refused, Refusal::Algorithm | Refusal::Malformed),
                "{header}: {refused:?}"
            );
        }
        // A key whose alg does not suit its type is no key.
        let (_, mut mismatched) = key(Ours::Rs256, "m");
        mismatched["alg"] = json!("ES256");
        let keys = PublicKeys::parse(json!({"keys": [mismatched]}).to_string().as_bytes()).unwrap();
        assert!(keys.is_empty());
        assert_eq!(
            PublicKeys::parse(b"[1,2]").err(),
            Some(JwksError::NotAKeySet)
        );
    }
}
