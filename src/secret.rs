//! Client secrets and client ids: generation, keyed hashing and comparison.
//! The controller and the token endpoint both use these, so a secret hashed by
//! one is recognised by the other.
//!
//! Hashes are HMAC-SHA256 under a key only the operator's pods hold (kept
//! beside the signing keys), over the client id and the secret. Whoever may
//! write a credential's status or its Secret's annotations therefore cannot
//! write the hash of a secret of their choosing, nor reuse the hash of
//! another credential's secret.

use std::fmt;

use aws_lc_rs::hmac;
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};

/// Prefix of every hash string, as written in status and annotations.
const HASH_PREFIX: &str = "hmac-sha256:";

/// Bytes of OS randomness in a client secret (256 bits).
const SECRET_BYTES: usize = 32;

/// Prefix that makes a leaked secret easy to recognise for secret scanners.
const SECRET_PREFIX: &str = "catalio_cs_";

/// Prefix of every client id.
const CLIENT_ID_PREFIX: &str = "ci_";

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

    pub fn hash(&self, hasher: &SecretHasher, client_id: &str) -> SecretHash {
        hasher.hash(client_id, self.0.as_bytes())
    }
}

impl fmt::Debug for ClientSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientSecret(<redacted>)")
    }
}

/// The key of every secret hash. Its `Debug` never shows the key.
pub struct SecretHasher {
    key: hmac::Key,
}

impl SecretHasher {
    /// Length of a hash key, in bytes.
    pub const KEY_BYTES: usize = 32;

    pub fn new(key: &[u8]) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, key),
        }
    }

    /// A fresh key from the OS CSPRNG.
    pub fn generate_key() -> Result<[u8; Self::KEY_BYTES], getrandom::Error> {
        let mut key = [0u8; Self::KEY_BYTES];
        getrandom::fill(&mut key)?;
        Ok(key)
    }

    /// The hash of `secret` as the secret of `client_id`. Client ids hold no
    /// NUL byte, so the input is unambiguous.
    pub fn hash(&self, client_id: &str, secret: &[u8]) -> SecretHash {
        SecretHash(self.mac(&[client_id.as_bytes(), b"\0", secret]))
    }

    /// A MAC over `parts`, each preceded by its length: state the
    /// controller writes and must recognise as its own when it reads it back.
    pub fn seal(&self, parts: &[&[u8]]) -> String {
        let mut context = hmac::Context::with_key(&self.key);
        for part in parts {
            context.update(&(part.len() as u64).to_be_bytes());
            context.update(part);
        }
        hex(context.sign().as_ref())
    }

    fn mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut context = hmac::Context::with_key(&self.key);
        for part in parts {
            context.update(part);
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(context.sign().as_ref());
        out
    }
}

impl fmt::Debug for SecretHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretHasher(<redacted>)")
    }
}

/// The hash key, once some process has loaded it (from the key Secret,
/// where it is kept beside the signing keys but is none of them): what the
/// controller hashes and seals with, and waits for before it reconciles.
#[derive(Default)]
pub struct HashKey {
    hasher: std::sync::RwLock<Option<std::sync::Arc<SecretHasher>>>,
    loaded: tokio::sync::Notify,
}

impl HashKey {
    pub fn set(&self, hasher: std::sync::Arc<SecretHasher>) {
        *self.hasher.write().unwrap_or_else(|e| e.into_inner()) = Some(hasher);
        self.loaded.notify_waiters();
    }

    pub fn get(&self) -> Option<std::sync::Arc<SecretHasher>> {
        self.hasher
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Resolves once the key is loaded.
    pub async fn loaded(&self) {
        loop {
            let loaded = self.loaded.notified();
            if self.get().is_some() {
                return;
            }
            loaded.await;
        }
    }
}

/// The keyed hash of a client secret, `hmac-sha256:<hex>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SecretHash([u8; 32]);

impl SecretHash {
    /// Parses `hmac-sha256:<64 lowercase hex>`.
    pub fn parse(text: &str) -> Option<Self> {
        let hex = text.strip_prefix(HASH_PREFIX)?;
        if hex.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (byte, pair) in out.iter_mut().zip(hex.as_bytes().chunks_exact(2)) {
            *byte = hex_digit(pair[0])? << 4 | hex_digit(pair[1])?;
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

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

/// `bytes` in lowercase hexadecimal. By table, not `write!`: a token's
/// secret id is made this way on every request.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
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
    format!("{CLIENT_ID_PREFIX}{compact}")
}

/// The client id as a number, if `text` has the form of the client ids
/// this operator issues (`ci_` and the 32 hex digits of an object UID).
/// Anything else is no client of ours, and is refused before any state is
/// kept about it.
pub fn parse_client_id(text: &str) -> Option<u128> {
    let digits = text.strip_prefix(CLIENT_ID_PREFIX)?;
    if digits.len() != 32 {
        return None;
    }
    digits
        .bytes()
        .try_fold(0u128, |n, c| Some(n << 4 | u128::from(hex_digit(c)?)))
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

    const ID: &str = "ci_0f1e2d3c4b5a69788695a4b3c2d1e0f9";

    #[test]
    fn hash_is_hmac_sha256_over_the_client_id_and_the_secret() {
        let hasher = SecretHasher::new(&[b'k'; 32]);
        let h = hasher.hash(ID, b"catalio_cs_abc");
        assert_eq!(
            h.to_string(),
            "hmac-sha256:cc7228b68765c428adb5faf6f70d0a9d0b4896ad525704cd23cff292d60e3c38"
        );
        assert_eq!(SecretHash::parse(&h.to_string()), Some(h));
        assert_eq!(h.short_id(), "cc7228b68765c428");
        assert!(h.ct_eq(&hasher.hash(ID, b"catalio_cs_abc")));
        assert!(!h.ct_eq(&hasher.hash(ID, b"catalio_cs_abd")));
        // Another credential's hash of the same secret is another value,
        // and so is the hash under another key.
        let other = "ci_00000000000000000000000000000001";
        assert!(!h.ct_eq(&hasher.hash(other, b"catalio_cs_abc")));
        assert!(!h.ct_eq(&SecretHasher::new(&[b'j'; 32]).hash(ID, b"catalio_cs_abc")));
        assert_eq!(format!("{hasher:?}"), "SecretHasher(<redacted>)");
    }

    #[test]
    fn hash_parse_rejects_malformed_and_unkeyed_text() {
        let good = SecretHasher::new(&[1; 32]).hash(ID, b"x").to_string();
        assert!(SecretHash::parse(&good.to_uppercase()).is_none());
        assert!(SecretHash::parse(&good[..good.len() - 1]).is_none());
        assert!(SecretHash::parse(good.trim_start_matches("hmac-sha256:")).is_none());
        assert!(SecretHash::parse(&good.replace("hmac-sha256:", "sha256:")).is_none());
        assert!(SecretHash::parse(&good.replace('b', "g")).is_none());
    }

    #[test]
    fn seals_tell_parts_apart() {
        let hasher = SecretHasher::new(&[2; 32]);
        let seal = hasher.seal(&[b"ab", b"c"]);
        assert_eq!(seal.len(), 64);
        assert_eq!(seal, hasher.seal(&[b"ab", b"c"]));
        assert_ne!(seal, hasher.seal(&[b"a", b"bc"]));
        assert_ne!(seal, hasher.seal(&[b"abc"]));
        assert_ne!(seal, SecretHasher::new(&[3; 32]).seal(&[b"ab", b"c"]));
    }

    #[test]
    fn client_id_is_derived_from_uid() {
        assert_eq!(
            client_id_for_uid("0F1e2d3c-4b5a-6978-8695-a4b3c2d1e0f9"),
            ID
        );
    }

    #[test]
    fn only_ids_of_our_form_parse() {
        assert_eq!(
            parse_client_id(ID),
            Some(0x0f1e2d3c4b5a69788695a4b3c2d1e0f9)
        );
        let long = format!("ci_{}", "a".repeat(10_000));
        for bad in [
            "",
            "ci_",
            "ci_0f1e2d3c4b5a69788695a4b3c2d1e0f",
            "ci_0f1e2d3c4b5a69788695a4b3c2d1e0f9a",
            "ci_0F1E2D3C4B5A69788695A4B3C2D1E0F9",
            "cx_0f1e2d3c4b5a69788695a4b3c2d1e0f9",
            "ci_0f1e2d3c-b5a69788695a4b3c2d1e0f9",
            "ci_0f1e2d3c4b5a69788695a4b3c2d1e0fé",
            &long,
        ] {
            assert_eq!(parse_client_id(bad), None, "{bad}");
        }
    }
}
