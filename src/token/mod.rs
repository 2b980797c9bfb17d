//! Access tokens: the keys that sign them, issuing them, and verifying them.
//!
//! A token is bound to the exact client secret it was issued for: its `sid`
//! claim is a short id of that secret's hash. The verifier accepts a token only
//! while that secret still works, so rotation (with or without a grace
//! period), a replaced Secret and revocation all end the tokens of the secret
//! they retire, at the moment the index learns of it. `rot` records the
//! rotation counter the token was issued under.

mod batch;
mod cache;
pub mod dpop;
pub mod jwks;
pub mod keys;
pub mod keystore;
pub mod replay;

use std::sync::{Arc, RwLock};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jiff::Timestamp;
use jsonwebtoken::{Validation, decode, decode_header};
use serde::{Deserialize, Serialize};

use crate::index::{CredentialEntry, CredentialIndex};
use crate::scope::{self, Access};
use crate::secret::HashKey;
pub use batch::BatchSigner;
use cache::Checked;
pub use cache::VerifiedTokens;
pub use keys::{ACCESS_TOKEN_TYPE, Algorithm, KeyRing, RotationPolicy, SigningKey, StoredKey};

/// The claims of an access token (RFC 9068 section 2.2, and ours).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub aud: String,
    /// The client id: the token was issued to the client itself.
    pub sub: String,
    pub client_id: String,
    /// The organization: the credential's namespace.
    pub org: String,
    /// Granted scopes, space-delimited.
    pub scope: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub jti: String,
    /// The rotation counter the token was issued under.
    pub rot: i64,
    /// Short id of the client secret the token was issued for.
    pub sid: String,
    /// The key the token is bound to (RFC 9449 `cnf.jkt`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cnf: Option<Confirmation>,
}

/// A token's confirmation (RFC 7800): the thumbprint of the key whose
/// DPoP proofs must come with it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Confirmation {
    pub jkt: String,
}

impl AccessClaims {
    pub fn scopes(&self) -> impl Iterator<Item = &str> {
        self.scope.split(' ').filter(|s| !s.is_empty())
    }
}

/// The signing keys every replica holds, swapped whole when the key Secret
/// changes. The hash key that comes with them is also handed to
/// [`HashKey`], where the controller, which signs nothing, takes it.
#[derive(Default)]
pub struct KeyStore {
    ring: RwLock<Arc<KeyRing>>,
    hash_key: Arc<HashKey>,
}

impl KeyStore {
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    pub fn ring(&self) -> Arc<KeyRing> {
        self.ring.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn replace(&self, ring: KeyRing) {
        if let Some(hasher) = ring.hasher() {
            self.hash_key.set(hasher.clone());
        }
        *self.ring.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(ring);
    }

    /// The hash key, as the key Secret last gave it.
    pub fn hash_key(&self) -> Arc<HashKey> {
        self.hash_key.clone()
    }

    /// Whether the Secret has given us signing keys and the hash key.
    pub fn is_loaded(&self) -> bool {
        let ring = self.ring();
        !ring.is_empty() && ring.hasher().is_some()
    }
}

/// A random token id (128 bits).
///
/// From a per-thread pool that aws-lc's DRBG fills 256 ids at a time. Every
/// `aws_lc_rs::rand::fill` also draws fresh input from the CPU's random
/// number generator (RDRAND: a quarter of a fill's cost on a fast host, and
/// a trap to the hypervisor on some), so a fill per token made the id a
/// cost that grew with the host rather than with the work. An id handed
/// out is wiped from the pool.
pub fn new_jti() -> Result<String, aws_lc_rs::error::Unspecified> {
    const IDS: usize = 256;
    struct Pool {
        bytes: [u8; 16 * IDS],
        used: usize,
    }
    thread_local! {
        static POOL: std::cell::RefCell<Pool> = const {
            std::cell::RefCell::new(Pool { bytes: [0; 16 * IDS], used: 16 * IDS })
        };
    }
    POOL.with_borrow_mut(|pool| {
        if pool.used == pool.bytes.len() {
            aws_lc_rs::rand::fill(&mut pool.bytes)?;
            pool.used = 0;
        }
        let id = &mut pool.bytes[pool.used..][..16];
        let jti = URL_SAFE_NO_PAD.encode(&*id);
        id.fill(0);
        pool.used += 16;
        Ok(jti)
    })
}

/// Why a token was not accepted. Every variant answers 401 alike; the
/// variant is for metrics and debug logs only.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("token is malformed")]
    Malformed,
    #[error("token names no published key")]
    UnknownKey,
    #[error("token is invalid: {0}")]
    Invalid(&'static str),
    #[error("token has expired")]
    Expired,
    #[error("token's credential no longer works")]
    Inactive,
}

impl VerifyError {
    pub fn metric_label(&self) -> &'static str {
        match self {
            VerifyError::Malformed => "malformed",
            VerifyError::UnknownKey => "unknown_key",
            VerifyError::Invalid(_) => "invalid",
            VerifyError::Expired => "expired",
            VerifyError::Inactive => "inactive",
        }
    }
}

/// A token that passed every check, with the credential it belongs to.
#[derive(Debug)]
pub struct Verified {
    pub claims: Arc<AccessClaims>,
    pub credential: Arc<CredentialEntry>,
}

impl Verified {
    /// Whether the token may do `access` to `resource`: its scopes as
    /// issued, intersected with the credential's scopes now, so narrowing
    /// `spec.scopes` takes effect on live tokens at once.
    pub fn allows(&self, resource: &str, access: Access) -> bool {
        let issued: Vec<&str> = self.claims.scopes().collect();
        scope::allows(&issued, resource, access)
            && scope::allows(&self.credential.scopes, resource, access)
    }
}

/// Checks access tokens: signature by one of our keys with the key's own
/// algorithm, issuer, audience, lifetime, and a credential that still
/// accepts the secret the token was issued for.
pub struct Verifier {
    pub keys: Arc<KeyStore>,
    pub index: Arc<CredentialIndex>,
    pub issuer: String,
    pub audience: String,
    /// Clock skew tolerated on `exp` and `nbf`.
    pub leeway: Duration,
    /// Tokens whose signature was checked already.
    pub verified: VerifiedTokens,
}

impl Verifier {
    pub fn verify(&self, token: &str, now: Timestamp) -> Result<Verified, VerifyError> {
        let claims = match self.verified.get(token) {
            Some(checked) => {
                // Its signature held; what can change since is checked now.
                if self.keys.ring().by_kid(&checked.kid).is_none() {
                    return Err(VerifyError::UnknownKey);
                }
                let (at, leeway) = (now.as_second(), self.leeway.as_secs() as i64);
                if checked.claims.exp < at - leeway {
                    return Err(VerifyError::Expired);
                }
                if checked.claims.nbf > at + leeway {
                    return Err(VerifyError::Invalid("not yet valid"));
                }
                checked.claims.clone()
            }
            None => {
                let (kid, claims) = self.check(token)?;
                let claims = Arc::new(claims);
                self.verified.insert(
                    token,
                    Checked {
                        kid,
                        claims: claims.clone(),
                    },
                );
                claims
            }
        };
        let credential = self
            .index
            .lookup(&claims.sub)
            .ok_or(VerifyError::Inactive)?;
        if claims.client_id != claims.sub
            || credential.namespace != claims.org
            || !credential.token_live(&claims.sid, claims.rot, now)
            || credential.token_revoked(&claims.jti, claims.iat)
        {
            return Err(VerifyError::Inactive);
        }
        Ok(Verified { claims, credential })
    }

    /// The signature and the claims that never change: the key that signed
    /// and the claims.
    fn check(&self, token: &str) -> Result<(String, AccessClaims), VerifyError> {
        let header = decode_header(token).map_err(|_| VerifyError::Malformed)?;
        // RFC 9068 section 4: only what says it is an access token is one.
        let typ = header.typ.as_deref().unwrap_or_default();
        if !(typ.eq_ignore_ascii_case(ACCESS_TOKEN_TYPE)
            || typ.eq_ignore_ascii_case("application/at+jwt"))
        {
            return Err(VerifyError::Invalid("type"));
        }
        let kid = header.kid.ok_or(VerifyError::UnknownKey)?;
        let ring = self.keys.ring();
        let key = ring.by_kid(&kid).ok_or(VerifyError::UnknownKey)?;
        // The algorithm comes from our key, never from the token: this is
        // what stops `alg: none` and HS256-with-the-public-key forgeries.
        let mut validation = Validation::new(key.alg.jsonwebtoken());
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iat", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = self.leeway.as_secs();
        let claims = decode::<AccessClaims>(token, key.decoding_key(), &validation)
            .map_err(|e| {
                use jsonwebtoken::errors::ErrorKind as K;
                match e.kind() {
                    K::ExpiredSignature => VerifyError::Expired,
                    K::InvalidSignature => VerifyError::Invalid("signature"),
                    K::InvalidAlgorithm => VerifyError::Invalid("algorithm"),
                    K::InvalidIssuer => VerifyError::Invalid("issuer"),
                    K::InvalidAudience => VerifyError::Invalid("audience"),
                    K::ImmatureSignature => VerifyError::Invalid("not yet valid"),
                    K::MissingRequiredClaim(_) => VerifyError::Invalid("missing claim"),
                    _ => VerifyError::Malformed,
                }
            })?
            .claims;
        Ok((kid, claims))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{ApiCredential, ApiCredentialSpec, ApiCredentialStatus};
    use crate::secret::{SecretHasher, client_id_for_uid};

    #[test]
    fn token_ids_are_128_random_bits_and_never_repeat_across_refills() {
        // 10,000 ids span 40 refills of the per-thread pool, on two threads.
        let ids = |n| (0..n).map(|_| new_jti().unwrap()).collect::<Vec<_>>();
        let mut all = std::thread::spawn(move || ids(5_000)).join().unwrap();
        all.extend(ids(5_000));
        assert!(
            all.iter()
                .all(|id| id.len() == 22 && URL_SAFE_NO_PAD.decode(id).is_ok())
        );
        let distinct: std::collections::HashSet<_> = all.iter().collect();
        assert_eq!(distinct.len(), all.len());
        // A wiped slot would show as an id of zeros.
        assert!(!all.contains(&URL_SAFE_NO_PAD.encode([0u8; 16])));
    }
    use base64::engine::general_purpose::STANDARD;
    use jsonwebtoken::{EncodingKey, Header, encode};

    const UID: &str = "0f1e2d3c-4b5a-6978-8695-a4b3c2d1e0f9";

    /// A verifier knowing one ES256 key and one credential, and claims
    /// that credential's tokens carry.
    struct Fixture {
        now: Timestamp,
        stored: StoredKey,
        keys: Arc<KeyStore>,
        cred: ApiCredential,
        verifier: Verifier,
        claims: AccessClaims,
    }

    fn fixture() -> Fixture {
        let now = Timestamp::now();
        let stored = StoredKey::generate(Algorithm::Es256, now, now).unwrap();
        let keys = KeyStore::new();
        keys.replace(KeyRing::load(std::slice::from_ref(&stored), Some(&[1; 32])).0);
        let client_id = client_id_for_uid(UID);
        let hash = SecretHasher::new(&[1; 32]).hash(&client_id, b"s");
        let mut cred = ApiCredential::new(
            "ci",
            ApiCredentialSpec {
                display_name: "CI".into(),
                scopes: vec!["*:read".into()],
                ..Default::default()
            },
        );
        cred.metadata.uid = Some(UID.into());
        cred.metadata.namespace = Some("org".into());
        cred.status = Some(ApiCredentialStatus {
            secret_hash: Some(hash.to_string()),
            ..Default::default()
        });
        let index = CredentialIndex::new();
        index.upsert(&cred);
        let verifier = Verifier {
            keys: keys.clone(),
            index,
            issuer: "https://catalio.ai".into(),
            audience: "https://catalio.ai/api/v1".into(),
            leeway: Duration::from_secs(60),
            verified: Default::default(),
        };
        let iat = now.as_second();
        let claims = AccessClaims {
            iss: "https://catalio.ai".into(),
            aud: "https://catalio.ai/api/v1".into(),
            sub: client_id.clone(),
            client_id: client_id.clone(),
            org: "org".into(),
            scope: "*:read".into(),
            iat,
            nbf: iat,
            exp: iat + 60,
            jti: "j".into(),
            rot: 0,
            sid: hash.short_id(),
            cnf: None,
        };
        Fixture {
            now,
            stored,
            keys,
            cred,
            verifier,
            claims,
        }
    }

    #[test]
    fn only_access_tokens_verify() {
        let Fixture {
            now,
            stored,
            verifier,
            claims,
            ..
        } = fixture();
        let ours = SigningKey::load(&stored).unwrap();
        let token = ours.sign(&serde_json::to_vec(&claims).unwrap()).unwrap();
        assert!(verifier.verify(&token, now).is_ok());

        // The same claims under the same key, as a plain JWT: refused for
        // its type alone.
        let der = STANDARD.decode(&stored.pkcs8).unwrap();
        let mut header = Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some(stored.kid.clone());
        header.typ = Some("JWT".into());
        let plain = encode(&header, &claims, &EncodingKey::from_ec_der(&der)).unwrap();
        assert_eq!(
            verifier.verify(&plain, now).unwrap_err(),
            VerifyError::Invalid("type")
        );
        header.typ = Some("application/at+jwt".into());
        let media_type = encode(&header, &claims, &EncodingKey::from_ec_der(&der)).unwrap();
        assert!(verifier.verify(&media_type, now).is_ok());

        // A token whose client_id is not its subject is no one's.
        let mut other = claims.clone();
        other.client_id = "ci_00000000000000000000000000000000".into();
        let token = ours.sign(&serde_json::to_vec(&other).unwrap()).unwrap();
        assert_eq!(
            verifier.verify(&token, now).unwrap_err(),
            VerifyError::Inactive
        );
    }

    #[test]
    fn a_checked_signature_is_remembered_and_the_rest_checked_every_time() {
        let Fixture {
            now,
            stored,
            keys,
            mut cred,
            verifier,
            claims,
        } = fixture();
        let ours = SigningKey::load(&stored).unwrap();
        let token = ours.sign(&serde_json::to_vec(&claims).unwrap()).unwrap();
        assert!(verifier.verify(&token, now).is_ok());
        assert!(verifier.verify(&token, now).is_ok());
        assert_eq!(verifier.verified.len(), 1);
        // Another signature on the same claims is not the remembered token.
        let mut forged = token.clone();
        forged.truncate(token.len() - 4);
        forged.push_str(if token.ends_with("AAAA") {
            "BBBB"
        } else {
            "AAAA"
        });
        assert_eq!(
            verifier.verify(&forged, now).unwrap_err(),
            VerifyError::Invalid("signature")
        );
        // Expiry and not-before read the clock each time.
        let later = now + jiff::SignedDuration::from_secs(60 + 61);
        assert_eq!(
            verifier.verify(&token, later).unwrap_err(),
            VerifyError::Expired
        );
        let earlier = now - jiff::SignedDuration::from_secs(61);
        assert_eq!(
            verifier.verify(&token, earlier).unwrap_err(),
            VerifyError::Invalid("not yet valid")
        );
        // Revocation and a retired key apply at once.
        cred.spec.revoked = true;
        verifier.index.upsert(&cred);
        assert_eq!(
            verifier.verify(&token, now).unwrap_err(),
            VerifyError::Inactive
        );
        cred.spec.revoked = false;
        verifier.index.upsert(&cred);
        assert!(verifier.verify(&token, now).is_ok());
        let other = StoredKey::generate(Algorithm::Es256, now, now).unwrap();
        keys.replace(KeyRing::load(&[other], Some(&[1; 32])).0);
        assert_eq!(
            verifier.verify(&token, now).unwrap_err(),
            VerifyError::UnknownKey
        );
    }
}
