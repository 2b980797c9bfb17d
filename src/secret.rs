//! Client secrets and client ids: generation, hashing and comparison. The
//! controller and the token endpoint both use these, so a secret hashed by one
//! is recognised by the other.

use std::fmt;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use sha2::{Digest, Sha256};

/// Prefix of every hash string, as written in status and annotations.
const HASH_PREFIX: &str = "sha256:";

/// Bytes of OS randomness in a client secret (256 bits).
const SECRET_BYTES: usize = 32;

/// Prefix that makes a leaked secret easy to recognise for secret scanners.
const SECRET_PREFIX: &str = "catalio_cs_";

/// A generated client secret. Its `Debug` and `Display` never show the value,
/// so it cannot leak through a log line or an error by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientSecret(String);

impl ClientSecret {
    /// 256 bits from the operating system's CSPRNG, as URL-safe text.
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut bytes = [0u8; SECRET_BYTES];
        getrandom::fill(&mut bytes)?;
        Ok(Self(format!(
            "{SECRET_PREFIX}{}",
            URL_SAFE_NO_PAD.encode(bytes)
        )))
    }

    pub fn from_plaintext(value: String) -> Self {
        Self(value)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn hash(&self) -> SecretHash {
        SecretHash::of(self.0.as_bytes())
    }
}

impl fmt::Debug for ClientSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientSecret(<redacted>)")
    }
}

/// SHA-256 digest of a client secret.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SecretHash([u8; 32]);

impl SecretHash {
    pub fn of(secret: &[u8]) -> Self {
        Self(Sha256::digest(secret).into())
    }

    /// Parses `sha256:<64 lowercase hex>`.
    pub fn parse(text: &str) -> Option<Self> {
        let hex = text.strip_prefix(HASH_PREFIX)?;
        if hex.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (byte, pair) in out.iter_mut().zip(hex.as_bytes().chunks_exact(2)) {
            let digit = |c: u8| match c {
                b'0'..=b'9' => Some(c - b'0'),
                b'a'..=b'f' => Some(c - b'a' + 10),
                _ => None,
            };
            *byte = digit(pair[0])? << 4 | digit(pair[1])?;
        }
        Some(Self(out))
    }

    /// Compares digests in constant time, so timing tells an attacker
    /// nothing about how much of a guess was right.
    pub fn ct_eq(&self, other: &SecretHash) -> bool {
        self.0
            .iter()
            .zip(other.0.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }

    /// A short, non-reversible id for the secret, used to bind access tokens
    /// to the secret they were issued for.
    pub fn short_id(&self) -> String {
        hex(&self.0[..8])
    }
}

impl fmt::Display for SecretHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{HASH_PREFIX}{}", hex(&self.0))
    }
}

impl fmt::Debug for SecretHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

fn hex(bytes: &[u8]) -> String {
    use fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// The client id of the credential with this object UID. Deriving it from
/// the UID makes it stable for the object's life, recoverable when status and
/// Secret are both lost, and never reused: the API server never reissues a
/// UID.
pub fn client_id_for_uid(uid: &str) -> String {
    let compact: String = uid
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    format!("ci_{compact}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secrets_are_long_random_and_url_safe() {
        let a = ClientSecret::generate().unwrap();
        let b = ClientSecret::generate().unwrap();
        assert_ne!(a, b);
        let body = a.expose().strip_prefix(SECRET_PREFIX).unwrap();
        assert_eq!(URL_SAFE_NO_PAD.decode(body).unwrap().len(), 32);
        assert!(
            a.expose()
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let s = ClientSecret::generate().unwrap();
        let shown = format!("{s:?}");
        assert_eq!(shown, "ClientSecret(<redacted>)");
        assert!(!shown.contains(s.expose()));
    }

    #[test]
    fn hash_round_trips_and_matches_sha256() {
        let h = SecretHash::of(b"abc");
        assert_eq!(
            h.to_string(),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(SecretHash::parse(&h.to_string()), Some(h));
        assert_eq!(h.short_id(), "ba7816bf8f01cfea");
        assert!(h.ct_eq(&SecretHash::of(b"abc")));
        assert!(!h.ct_eq(&SecretHash::of(b"abd")));
    }

    #[test]
    fn hash_parse_rejects_malformed_text() {
        let good = SecretHash::of(b"x").to_string();
        assert!(SecretHash::parse(&good.to_uppercase()).is_none());
        assert!(SecretHash::parse(&good[..good.len() - 1]).is_none());
        assert!(SecretHash::parse(good.trim_start_matches("sha256:")).is_none());
        assert!(SecretHash::parse(&good.replace('b', "g")).is_none());
    }

    #[test]
    fn client_id_is_derived_from_uid() {
        assert_eq!(
            client_id_for_uid("0F1e2d3c-4b5a-6978-8695-a4b3c2d1e0f9"),
            "ci_0f1e2d3c4b5a69788695a4b3c2d1e0f9"
        );
    }
}
