//! Signing keys: generation, the stored form kept in a Secret, the public
//! JWKs, and the rotation policy.
//!
//! Keys are parsed once when loaded and held for their whole life: parsing an
//! RSA key costs about as much as a signature, so signing through a library
//! that parses per call halves the token endpoint's throughput.

use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair, RSA_PKCS1_SHA256, RsaKeyPair,
};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jiff::{SignedDuration, Timestamp};
use jsonwebtoken::DecodingKey;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::secret::SecretHasher;

/// The JOSE `typ` of an access token (RFC 9068 section 2.1).
pub const ACCESS_TOKEN_TYPE: &str = "at+jwt";

/// JWS algorithm of a signing key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
pub enum Algorithm {
    #[serde(rename = "RS256")]
    #[value(name = "RS256")]
    Rs256,
    #[serde(rename = "ES256")]
    #[value(name = "ES256")]
    Es256,
}

impl Algorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Rs256 => "RS256",
            Algorithm::Es256 => "ES256",
        }
    }

    pub fn jsonwebtoken(self) -> jsonwebtoken::Algorithm {
        match self {
            Algorithm::Rs256 => jsonwebtoken::Algorithm::RS256,
            Algorithm::Es256 => jsonwebtoken::Algorithm::ES256,
        }
    }
}

/// A key as stored in the signing-key Secret.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredKey {
    pub kid: String,
    pub alg: Algorithm,
    /// PKCS#8 DER, standard base64.
    pub pkcs8: String,
    pub created_at: Timestamp,
    /// The key is published from creation and signs from this time on.
    pub active_from: Timestamp,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key {kid}: {reason}")]
    Invalid { kid: String, reason: &'static str },
    #[error("key generation failed")]
    Generate,
    #[error("signing failed")]
    Sign,
}

impl StoredKey {
    /// A fresh key that signs from `active_from`.
    pub fn generate(
        alg: Algorithm,
        now: Timestamp,
        active_from: Timestamp,
    ) -> Result<Self, KeyError> {
        let der = match alg {
            Algorithm::Rs256 => RsaKeyPair::generate(KeySize::Rsa2048)
                .and_then(|k| k.as_der())
                .map(|d| d.as_ref().to_vec()),
            Algorithm::Es256 => EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
                .and_then(|k| k.to_pkcs8v1())
                .map(|d| d.as_ref().to_vec()),
        }
        .map_err(|_| KeyError::Generate)?;
        let mut id = [0u8; 12];
        getrandom::fill(&mut id).map_err(|_| KeyError::Generate)?;
        Ok(Self {
            kid: format!("{}-{}", now.strftime("%Y%m%d"), URL_SAFE_NO_PAD.encode(id)),
            alg,
            pkcs8: STANDARD.encode(der),
            created_at: now,
            active_from,
        })
    }
}

enum Signer {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
}

/// A loaded key, ready to sign and verify.
pub struct SigningKey {
    pub kid: String,
    pub alg: Algorithm,
    pub created_at: Timestamp,
    pub active_from: Timestamp,
    signer: Signer,
    /// `base64url(header).`, computed once.
    header_prefix: String,
    jwk: serde_json::Value,
    decoding: DecodingKey,
}

impl SigningKey {
    pub fn load(stored: &StoredKey) -> Result<Self, KeyError> {
        let invalid = |reason| KeyError::Invalid {
            kid: stored.kid.clone(),
            reason,
        };
        let der = STANDARD
            .decode(&stored.pkcs8)
            .map_err(|_| invalid("pkcs8 is not base64"))?;
        let (signer, jwk, decoding) = match stored.alg {
            Algorithm::Rs256 => {
                let pair = RsaKeyPair::from_pkcs8(&der).map_err(|_| invalid("not an RSA key"))?;
                let public = pair.public_key();
                let n = URL_SAFE_NO_PAD.encode(public.modulus().big_endian_without_leading_zero());
                let e = URL_SAFE_NO_PAD.encode(public.exponent().big_endian_without_leading_zero());
                let decoding = DecodingKey::from_rsa_components(&n, &e)
                    .map_err(|_| invalid("bad RSA public key"))?;
                let jwk = json!({"kty": "RSA", "use": "sig", "alg": "RS256", "kid": stored.kid, "n": n, "e": e});
                (Signer::Rsa(pair), jwk, decoding)
            }
            Algorithm::Es256 => {
                let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der)
                    .map_err(|_| invalid("not a P-256 key"))?;
                // Uncompressed point: 0x04 || x || y.
                let point = pair.public_key().as_ref();
                if point.len() != 65 {
                    return Err(invalid("unexpected P-256 point"));
                }
                let x = URL_SAFE_NO_PAD.encode(&point[1..33]);
                let y = URL_SAFE_NO_PAD.encode(&point[33..]);
                let decoding = DecodingKey::from_ec_components(&x, &y)
                    .map_err(|_| invalid("bad EC public key"))?;
                let jwk = json!({"kty": "EC", "use": "sig", "alg": "ES256", "kid": stored.kid, "crv": "P-256", "x": x, "y": y});
                (Signer::Ec(pair), jwk, decoding)
            }
        };
        // RFC 9068: access tokens say what they are, so no other JWT signed
        // with the key can pass for one.
        let header =
            json!({"alg": stored.alg.as_str(), "typ": ACCESS_TOKEN_TYPE, "kid": stored.kid});
        Ok(Self {
            kid: stored.kid.clone(),
            alg: stored.alg,
            created_at: stored.created_at,
            active_from: stored.active_from,
            signer,
            header_prefix: format!("{}.", URL_SAFE_NO_PAD.encode(header.to_string())),
            jwk,
            decoding,
        })
    }

    /// Signs `claims` (a JSON object) as a compact JWS access token.
    pub fn sign(&self, claims: &[u8]) -> Result<String, KeyError> {
        self.sign_with(&self.header_prefix, claims)
    }

    /// Signs `claims` as a compact JWS of another type (`typ`), such as a
    /// signed introspection answer: never one that passes for an access
    /// token.
    pub fn sign_as(&self, typ: &str, claims: &[u8]) -> Result<String, KeyError> {
        if typ.eq_ignore_ascii_case(ACCESS_TOKEN_TYPE) {
            return Err(KeyError::Sign);
        }
        let header = json!({"alg": self.alg.as_str(), "typ": typ, "kid": self.kid});
        let prefix = format!("{}.", URL_SAFE_NO_PAD.encode(header.to_string()));
        self.sign_with(&prefix, claims)
    }

    fn sign_with(&self, header_prefix: &str, claims: &[u8]) -> Result<String, KeyError> {
        let mut token = String::with_capacity(header_prefix.len() + claims.len() * 4 / 3 + 400);
        token.push_str(header_prefix);
        URL_SAFE_NO_PAD.encode_string(claims, &mut token);
        let signature = self.sign_raw(token.as_bytes())?;
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(signature, &mut token);
        Ok(token)
    }

    /// The JWS signature of `input` (for ES256, r || s).
    pub fn sign_raw(&self, input: &[u8]) -> Result<Vec<u8>, KeyError> {
        Ok(match &self.signer {
            Signer::Rsa(pair) => {
                let mut sig = vec![0u8; pair.public_modulus_len()];
                pair.sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), input, &mut sig)
                    .map_err(|_| KeyError::Sign)?;
                sig
            }
            Signer::Ec(pair) => pair
                .sign(&SystemRandom::new(), input)
                .map_err(|_| KeyError::Sign)?
                .as_ref()
                .to_vec(),
        })
    }

    pub fn jwk(&self) -> &serde_json::Value {
        &self.jwk
    }

    pub fn decoding_key(&self) -> &DecodingKey {
        &self.decoding
    }
}

/// Every published key, the one that signs chosen by time, and the key of
/// the client secrets' hashes.
#[derive(Default)]
pub struct KeyRing {
    keys: Vec<Arc<SigningKey>>,
    hasher: Option<Arc<SecretHasher>>,
}

impl KeyRing {
    /// Loads every key; one that cannot be loaded is skipped and named in
    /// the errors, so a single bad entry does not take signing down.
    pub fn load(stored: &[StoredKey], hash_key: Option<&[u8]>) -> (Self, Vec<KeyError>) {
        let mut errors = Vec::new();
        let mut keys: Vec<_> = stored
            .iter()
            .filter_map(|s| SigningKey::load(s).map_err(|e| errors.push(e)).ok())
            .map(Arc::new)
            .collect();
        keys.sort_by_key(|k| k.created_at);
        let hasher = match hash_key {
            Some(key) if key.len() == SecretHasher::KEY_BYTES => {
                Some(Arc::new(SecretHasher::new(key)))
            }
            Some(_) => {
                errors.push(KeyError::Invalid {
                    kid: "secret-hash-key".to_owned(),
                    reason: "not 32 bytes",
                });
                None
            }
            None => None,
        };
        (Self { keys, hasher }, errors)
    }

    /// The key of the client secrets' hashes, once the Secret holds one.
    pub fn hasher(&self) -> Option<&Arc<SecretHasher>> {
        self.hasher.as_ref()
    }

    /// The newest key that may sign at `now`.
    pub fn signer(&self, now: Timestamp) -> Option<&Arc<SigningKey>> {
        self.keys.iter().rev().find(|k| k.active_from <= now)
    }

    pub fn by_kid(&self, kid: &str) -> Option<&Arc<SigningKey>> {
        self.keys.iter().find(|k| k.kid == kid)
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// When the newest key was made: a new one is due every rotation
    /// period.
    pub fn newest(&self) -> Option<Timestamp> {
        self.keys.iter().map(|k| k.created_at).max()
    }

    /// The RFC 7517 key set with every published key.
    pub fn jwks(&self) -> serde_json::Value {
        json!({"keys": self.keys.iter().map(|k| k.jwk()).collect::<Vec<_>>()})
    }
}

/// When keys are added and removed.
#[derive(Clone, Debug)]
pub struct RotationPolicy {
    pub alg: Algorithm,
    /// A new key is made when the newest is this old.
    pub rotate_every: Duration,
    /// How long a new key is published before it signs; longer than any
    /// JWKS cache.
    pub publish_delay: Duration,
    /// The longest token lifetime: a superseded key stays published this
    /// long after its successor started signing.
    pub max_token_lifetime: Duration,
}

fn plus(t: Timestamp, d: Duration) -> Timestamp {
    SignedDuration::try_from(d)
        .ok()
        .and_then(|d| t.checked_add(d).ok())
        .unwrap_or(Timestamp::MAX)
}

/// The key list as it should be at `now`, or `None` when `stored` is right.
pub fn plan_keys(
    stored: &[StoredKey],
    policy: &RotationPolicy,
    now: Timestamp,
) -> Result<Option<Vec<StoredKey>>, KeyError> {
    let mut keys = stored.to_vec();
    keys.sort_by_key(|k| k.created_at);
    let mut changed = false;

    let needs_new = match keys.last() {
        None => true,
        Some(newest) => {
            newest.alg != policy.alg || plus(newest.created_at, policy.rotate_every) <= now
        }
    };
    if needs_new {
        // The very first key signs at once: nobody can hold a JWKS without it.
        let active_from = if keys.is_empty() {
            now
        } else {
            plus(now, policy.publish_delay)
        };
        keys.push(StoredKey::generate(policy.alg, now, active_from)?);
        changed = true;
    }

    // A key is superseded when a later key starts signing; tokens it signed
    // live at most max_token_lifetime after that.
    let grace = policy.max_token_lifetime + Duration::from_secs(60);
    let superseded_at: Vec<Option<Timestamp>> = (0..keys.len())
        .map(|i| {
            keys[i + 1..]
                .iter()
                .map(|k| k.active_from)
                .filter(|&t| t <= now)
                .min()
        })
        .collect();
    let before = keys.len();
    let mut i = 0;
    keys.retain(|_| {
        let keep = superseded_at[i].is_none_or(|at| now < plus(at, grace));
        i += 1;
        keep
    });
    changed |= keys.len() != before;
    Ok(changed.then_some(keys))
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{Validation, decode, decode_header};

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    fn policy(alg: Algorithm) -> RotationPolicy {
        RotationPolicy {
            alg,
            rotate_every: Duration::from_secs(1000),
            publish_delay: Duration::from_secs(100),
            max_token_lifetime: Duration::from_secs(500),
        }
    }

    #[test]
    fn signed_tokens_verify_with_the_public_key_for_both_algorithms() {
        for alg in [Algorithm::Rs256, Algorithm::Es256] {
            let stored = StoredKey::generate(alg, at(0), at(0)).unwrap();
            let key = SigningKey::load(&stored).unwrap();
            let token = key.sign(br#"{"sub":"ci_1","exp":99999999999}"#).unwrap();
            let header = decode_header(&token).unwrap();
            assert_eq!(header.alg, alg.jsonwebtoken());
            assert_eq!(header.kid.as_deref(), Some(stored.kid.as_str()));
            assert_eq!(header.typ.as_deref(), Some("at+jwt"));
            let mut validation = Validation::new(alg.jsonwebtoken());
            validation.required_spec_claims.clear();
            let claims =
                decode::<serde_json::Value>(&token, key.decoding_key(), &validation).unwrap();
            assert_eq!(claims.claims["sub"], "ci_1");
            // And the JWK is what a JOSE library reads.
            let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(key.jwk().clone()).unwrap();
            let from_jwk = DecodingKey::from_jwk(&jwk).unwrap();
            decode::<serde_json::Value>(&token, &from_jwk, &validation).unwrap();
        }
    }

    #[test]
    fn a_corrupt_key_is_skipped_not_fatal() {
        let good = StoredKey::generate(Algorithm::Es256, at(0), at(0)).unwrap();
        let mut bad = good.clone();
        bad.kid = "bad".into();
        bad.pkcs8 = "not base64!".into();
        let (ring, errors) = KeyRing::load(&[bad, good.clone()], None);
        assert_eq!(errors.len(), 1);
        assert_eq!(ring.signer(at(0)).unwrap().kid, good.kid);
    }

    #[test]
    fn first_key_signs_at_once() {
        let keys = plan_keys(&[], &policy(Algorithm::Es256), at(0))
            .unwrap()
            .unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].active_from, at(0));
        assert_eq!(
            plan_keys(&keys, &policy(Algorithm::Es256), at(999)).unwrap(),
            None
        );
    }

    #[test]
    fn a_new_key_is_published_before_it_signs_and_the_old_one_outlives_its_tokens() {
        let p = policy(Algorithm::Es256);
        let first = plan_keys(&[], &p, at(0)).unwrap().unwrap();
        let rotated = plan_keys(&first, &p, at(1000)).unwrap().unwrap();
        assert_eq!(rotated.len(), 2);
        assert_eq!(rotated[1].active_from, at(1100));
        let (ring, _) = KeyRing::load(&rotated, None);
        assert_eq!(ring.jwks()["keys"].as_array().unwrap().len(), 2);
        assert_eq!(
            ring.signer(at(1099)).unwrap().kid,
            first[0].kid,
            "published, not yet signing"
        );
        assert_eq!(ring.signer(at(1100)).unwrap().kid, rotated[1].kid);
        // The old key stays while its last tokens can live (500s + 60s).
        assert_eq!(plan_keys(&rotated, &p, at(1659)).unwrap(), None);
        let pruned = plan_keys(&rotated, &p, at(1660)).unwrap().unwrap();
        assert_eq!(pruned, vec![rotated[1].clone()]);
    }

    #[test]
    fn changing_the_algorithm_adds_a_key_of_the_new_kind() {
        let first = plan_keys(&[], &policy(Algorithm::Es256), at(0))
            .unwrap()
            .unwrap();
        let next = plan_keys(&first, &policy(Algorithm::Rs256), at(1))
            .unwrap()
            .unwrap();
        assert_eq!(next[1].alg, Algorithm::Rs256);
        assert_eq!(next[1].active_from, at(101));
    }
}
