//! DPoP proofs (RFC 9449): a JWT the client signs with its own key for
//! each request, naming the method and URL, fresh (`iat`, a `jti` used
//! once) and, at a resource, the access token it goes with (`ath`). A token
//! issued with a proof is bound to the proof's key (`cnf.jkt`, the key's
//! RFC 7638 thumbprint), so whoever copies the token cannot use it.
//!
//! In: the `DPoP` header, the request's method and URL, the access token;
//! out: the key's thumbprint and the proof's id, or why not. The replay
//! check on the id is the caller's ([`super::replay::Replays`]).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jiff::Timestamp;
use jsonwebtoken::{DecodingKey, Validation, decode, decode_header};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::jwks;
use super::replay::{Replays, Seen};

/// The `typ` of a proof.
pub const PROOF_TYPE: &str = "dpop+jwt";
/// What proofs may be signed with (advertised as
/// `dpop_signing_alg_values_supported`).
pub const ALGORITHMS: &[&str] = &["ES256", "ES384", "RS256", "PS256", "EdDSA"];
/// A proof's `iat` may be this far from our clock, either way.
pub const WINDOW: i64 = 60;
/// Longer proofs are refused unread.
const MAX_PROOF: usize = 8 * 1024;

/// A proof that holds.
#[derive(Debug, PartialEq)]
pub struct Proof {
    /// The RFC 7638 SHA-256 thumbprint of its key, base64url.
    pub jkt: String,
    pub jti: String,
    pub iat: i64,
}

/// Why a proof was not accepted. All are `invalid_dpop_proof` to the
/// client; the variant is for logs.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("not a JWT")]
    Malformed,
    #[error("typ is not dpop+jwt")]
    Type,
    #[error("algorithm not accepted")]
    Algorithm,
    #[error("no usable public key in the header")]
    Key,
    #[error("bad signature")]
    Signature,
    #[error("htm is not the request's method")]
    Method,
    #[error("htu is not the request's URL")]
    Url,
    #[error("iat is outside the accepted window")]
    Time,
    #[error("ath does not match the access token")]
    Ath,
    #[error("jti missing or too long")]
    Id,
    #[error("the proof was used before")]
    Replayed,
    #[error("too many proofs in flight")]
    Busy,
}

#[derive(Deserialize)]
struct Claims {
    jti: Option<String>,
    htm: Option<String>,
    htu: Option<String>,
    iat: Option<i64>,
    ath: Option<String>,
}

/// [`verify`], and the proof's `jti` not seen before (on this replica)
/// for its key.
pub fn verify_once(
    replays: &Replays,
    proof: &str,
    method: &str,
    url: &str,
    access_token: Option<&str>,
    now: Timestamp,
) -> Result<Proof, ProofError> {
    let proof = verify(proof, method, url, access_token, now)?;
    let scope = format!("dpop:{}", proof.jkt);
    match replays.first_use(&scope, &proof.jti, proof.iat + WINDOW, now.as_second()) {
        Ok(()) => Ok(proof),
        Err(Seen::Again) => Err(ProofError::Replayed),
        Err(Seen::Full) => Err(ProofError::Busy),
    }
}

/// The thumbprint (RFC 7638) of a public JWK as JSON: SHA-256 over its
/// required members, in order, without whitespace.
pub fn thumbprint(jwk: &serde_json::Value) -> Option<String> {
    let member = |name: &str| jwk.get(name).and_then(|v| v.as_str());
    let canonical = match member("kty")? {
        "EC" => serde_json::json!({
            "crv": member("crv")?, "kty": "EC", "x": member("x")?, "y": member("y")?,
        }),
        "RSA" => serde_json::json!({"e": member("e")?, "kty": "RSA", "n": member("n")?}),
        "OKP" => serde_json::json!({"crv": member("crv")?, "kty": "OKP", "x": member("x")?}),
        _ => return None,
    };
    // serde_json writes object members sorted and without whitespace.
    Some(URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.to_string().as_bytes())))
}

/// `ath`: the base64url SHA-256 of an access token.
pub fn token_hash(access_token: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(access_token.as_bytes()))
}

/// Whether `htu` names `url`: the same scheme, host, port and path; query
/// and fragment ignored (RFC 9449 section 4.3).
fn same_url(htu: &str, url: &str) -> bool {
    let (Ok(a), Ok(b)) = (reqwest::Url::parse(htu), reqwest::Url::parse(url)) else {
        return false;
    };
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
        && a.path() == b.path()
}

/// Checks a proof for a `method` request to `url` at `now`, with
/// `access_token` at a resource (its hash must be the proof's `ath`).
pub fn verify(
    proof: &str,
    method: &str,
    url: &str,
    access_token: Option<&str>,
    now: Timestamp,
) -> Result<Proof, ProofError> {
    if proof.len() > MAX_PROOF {
        return Err(ProofError::Malformed);
    }
    let header = decode_header(proof).map_err(|_| ProofError::Malformed)?;
    if !header
        .typ
        .as_deref()
        .is_some_and(|t| t.eq_ignore_ascii_case(PROOF_TYPE))
    {
        return Err(ProofError::Type);
    }
    let raw: serde_json::Value = proof
        .split('.')
        .next()
        .and_then(|h| URL_SAFE_NO_PAD.decode(h).ok())
        .and_then(|h| serde_json::from_slice(&h).ok())
        .ok_or(ProofError::Malformed)?;
    let jwk_json = raw.get("jwk").ok_or(ProofError::Key)?;
    // A private key in a header is no proof of anything.
    if ["d", "p", "q", "dp", "dq", "qi", "k"]
        .iter()
        .any(|m| jwk_json.get(m).is_some())
    {
        return Err(ProofError::Key);
    }
    let jwk = header.jwk.as_ref().ok_or(ProofError::Key)?;
    let alg = jwks::algorithm(jwk).ok_or(ProofError::Key)?;
    let named = format!("{:?}", header.alg);
    if header.alg != alg || !ALGORITHMS.contains(&named.as_str()) {
        return Err(ProofError::Algorithm);
    }
    let key = DecodingKey::from_jwk(jwk).map_err(|_| ProofError::Key)?;
    let mut validation = Validation::new(alg);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_aud = false;
    let claims = decode::<Claims>(proof, &key, &validation)
        .map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::InvalidSignature => ProofError::Signature,
            _ => ProofError::Malformed,
        })?
        .claims;
    if claims.htm.as_deref() != Some(method) {
        return Err(ProofError::Method);
    }
    if !claims.htu.as_deref().is_some_and(|htu| same_url(htu, url)) {
        return Err(ProofError::Url);
    }
    let iat = claims.iat.ok_or(ProofError::Time)?;
    if (iat - now.as_second()).abs() > WINDOW {
        return Err(ProofError::Time);
    }
    if let Some(token) = access_token
        && claims.ath.as_deref() != Some(token_hash(token).as_str())
    {
        return Err(ProofError::Ath);
    }
    let jti = claims
        .jti
        .filter(|j| !j.is_empty() && j.len() <= 128)
        .ok_or(ProofError::Id)?;
    let jkt = thumbprint(jwk_json).ok_or(ProofError::Key)?;
    Ok(Proof { jkt, jti, iat })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::{Algorithm, SigningKey, StoredKey};
    use serde_json::json;

    /// A client key, and proofs it signs with whatever header and claims.
    struct Client {
        key: SigningKey,
        jwk: serde_json::Value,
    }

    impl Client {
        fn new() -> Self {
            let now = Timestamp::now();
            let stored = StoredKey::generate(Algorithm::Es256, now, now).unwrap();
            let key = SigningKey::load(&stored).unwrap();
            let mut jwk = key.jwk().clone();
            for private_or_ours in ["kid", "alg", "use"] {
                jwk.as_object_mut().unwrap().remove(private_or_ours);
            }
            Self { key, jwk }
        }

        fn proof(&self, header: serde_json::Value, claims: serde_json::Value) -> String {
            let mut h = json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": self.jwk});
            for (k, v) in header.as_object().unwrap() {
                h[k] = v.clone();
            }
            let input = format!(
                "{}.{}",
                URL_SAFE_NO_PAD.encode(h.to_string()),
                URL_SAFE_NO_PAD.encode(claims.to_string())
            );
            let sig = self.key.sign_raw(input.as_bytes()).unwrap();
            format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
        }
    }

    #[test]
    fn a_proof_names_the_request_its_time_its_token_and_its_key() {
        let c = Client::new();
        let now = Timestamp::now();
        let url = "https://api.example/api/v1/requirements";
        let claims = |extra: serde_json::Value| {
            let mut base = json!({"jti": "j1", "htm": "GET", "htu": url, "iat": now.as_second(), "ath": token_hash("tok")});
            for (k, v) in extra.as_object().unwrap() {
                base[k] = v.clone();
            }
            base
        };
        let good = c.proof(json!({}), claims(json!({})));
        let proof = verify(
            &good,
            "GET",
            &format!("{url}?page[size]=1"),
            Some("tok"),
            now,
        )
        .unwrap();
        assert_eq!(proof.jkt, thumbprint(&c.jwk).unwrap());
        assert_eq!(proof.jti, "j1");
        for (what, header, extra, want) in [
            (
                "another method",
                json!({}),
                json!({"htm": "POST"}),
                ProofError::Method,
            ),
            (
                "another URL",
                json!({}),
                json!({"htu": "https://api.example/other"}),
                ProofError::Url,
            ),
            (
                "another host",
                json!({}),
                json!({"htu": "https://evil.example/api/v1/requirements"}),
                ProofError::Url,
            ),
            (
                "old",
                json!({}),
                json!({"iat": now.as_second() - 300}),
                ProofError::Time,
            ),
            (
                "from the future",
                json!({}),
                json!({"iat": now.as_second() + 300}),
                ProofError::Time,
            ),
            (
                "another token",
                json!({}),
                json!({"ath": token_hash("other")}),
                ProofError::Ath,
            ),
            ("no jti", json!({}), json!({"jti": ""}), ProofError::Id),
            (
                "another type",
                json!({"typ": "JWT"}),
                json!({}),
                ProofError::Type,
            ),
            ("no key", json!({"jwk": null}), json!({}), ProofError::Key),
            (
                "HMAC",
                json!({"alg": "HS256"}),
                json!({}),
                ProofError::Algorithm,
            ),
        ] {
            let proof = c.proof(header, claims(extra));
            assert_eq!(
                verify(&proof, "GET", url, Some("tok"), now),
                Err(want),
                "{what}"
            );
        }
        // Another key's header over the same signature.
        let other = Client::new();
        let swapped = c.proof(json!({"jwk": other.jwk}), claims(json!({})));
        assert_eq!(
            verify(&swapped, "GET", url, Some("tok"), now),
            Err(ProofError::Signature)
        );
        // A private member in the key.
        let mut private = c.jwk.clone();
        private["d"] = json!("AAAA");
        let leaked = c.proof(json!({"jwk": private}), claims(json!({})));
        assert_eq!(
            verify(&leaked, "GET", url, Some("tok"), now),
            Err(ProofError::Key)
        );
        // alg none.
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD
                .encode(json!({"typ": "dpop+jwt", "alg": "none", "jwk": c.jwk}).to_string()),
            URL_SAFE_NO_PAD.encode(claims(json!({})).to_string())
        );
        assert!(verify(&format!("{input}."), "GET", url, Some("tok"), now).is_err());
    }

    #[test]
    fn thumbprints_are_rfc_7638s() {
        // RFC 7638 section 3.1's example.
        let jwk = json!({
            "kty": "RSA",
            "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
            "e": "AQAB",
            "alg": "RS256",
            "kid": "2011-04-29"
        });
        assert_eq!(
            thumbprint(&jwk).unwrap(),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }
}
