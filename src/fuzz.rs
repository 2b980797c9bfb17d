//! Entry points of the fuzz targets in `fuzz/` (`make fuzz`), and the
//! regression test that replays their seeds and every input a fuzzer ever
//! found. Each feeds bytes as they arrive from the network to one parser and
//! checks what must hold whatever they are; a panic is a finding.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use jiff::Timestamp;

use crate::api::input::{self, Intent};
use crate::api::media;
use crate::api::query;
use crate::crd::registry;
use crate::index::CredentialIndex;
use crate::secret::parse_client_id;
use crate::server::oauth;
use crate::token::jwks::PublicKeys;
use crate::token::{Algorithm, KeyRing, KeyStore, SigningKey, StoredKey, Verifier};

/// A fuzz target: bytes in, a panic for a finding.
pub type Target = fn(&[u8]);

/// Every target, by the name of its binary in `fuzz/` and its corpus.
pub const TARGETS: &[(&str, Target)] = &[
    ("token_request", token_request),
    ("bearer_token", bearer_token),
    ("jsonapi_query", jsonapi_query),
    ("jsonapi_document", jsonapi_document),
    ("duration", duration),
    ("service_account_assertion", service_account_assertion),
    ("introspect_revoke_request", introspect_revoke_request),
    ("client_key_assertion", client_key_assertion),
    ("dpop_proof", dpop_proof),
    ("federated_assertion", federated_assertion),
];

/// A token request body of each media type (the first byte picks one),
/// with the claims of any client assertion in it, and the same bytes as an
/// `Authorization: Basic` header. What Basic parses encodes back to itself.
pub fn token_request(data: &[u8]) {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let content_type = match selector % 4 {
        0 => Some("application/x-www-form-urlencoded"),
        1 => Some("application/json"),
        2 => Some("application/json; charset=utf-8"),
        _ => None,
    };
    if let Ok(request) = oauth::parse_body(content_type, body) {
        if let Some(id) = &request.client_id {
            let _ = parse_client_id(id);
        }
        // A client assertion's claims are read before anything verifies
        // them: whatever they say, reading them must not fail badly.
        if let Some(assertion) = &request.client_assertion {
            let now = jiff::Timestamp::from_second(1_800_000_000).unwrap_or_default();
            if let Some(c) = crate::server::assertion::claimed(assertion, "https://catalio.ai", now)
            {
                assert!(c.expires > now.as_second());
                assert!(!c.account.contains(':') && !c.namespace.is_empty());
            }
        }
    }
    let Ok(header) = std::str::from_utf8(body) else {
        return;
    };
    if let Ok((id, secret)) = oauth::parse_basic(header) {
        let encode = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        let again = format!(
            "Basic {}",
            STANDARD.encode(format!("{}:{}", encode(&id), encode(&secret)))
        );
        assert_eq!(oauth::parse_basic(&again).ok(), Some((id, secret)));
    }
}

/// A verifier with one RS256 and one ES256 key and one credential, made
/// once. The keys have fixed ids, so seeds can name them and mutated tokens
/// reach the signature check.
static VERIFIER: LazyLock<Verifier> = LazyLock::new(|| {
    let now = Timestamp::from_second(1_800_000_000).unwrap_or(Timestamp::UNIX_EPOCH);
    let stored: Vec<StoredKey> = [
        (Algorithm::Rs256, "fuzz-rs256"),
        (Algorithm::Es256, "fuzz-es256"),
    ]
    .into_iter()
    .filter_map(|(alg, kid)| {
        let key = StoredKey::generate(alg, now, now).ok()?;
        Some(StoredKey {
            kid: kid.to_owned(),
            ..key
        })
    })
    .collect();
    let keys = KeyStore::new();
    keys.replace(KeyRing::load(&stored, Some(&[7; 32])).0);
    let index = CredentialIndex::new();
    let mut cred = crate::crd::ApiCredential::new(
        "ci",
        crate::crd::ApiCredentialSpec {
            display_name: "fuzz".into(),
            scopes: vec!["*:write".into()],
            ..Default::default()
        },
    );
    cred.metadata.uid = Some("0f1e2d3c-4b5a-6978-8695-a4b3c2d1e0f9".into());
    cred.metadata.namespace = Some("org".into());
    index.upsert(&cred);
    Verifier {
        keys: Arc::clone(&keys),
        index,
        issuer: "https://catalio.ai".into(),
        audience: "https://catalio.ai/api/v1".into(),
        leeway: Duration::from_secs(60),
        verified: Default::default(),
    }
});

/// Whatever arrives as a bearer token is refused: no token the fuzzer can
/// make without our keys verifies.
pub fn bearer_token(data: &[u8]) {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    let now = Timestamp::from_second(1_800_000_000).unwrap_or(Timestamp::UNIX_EPOCH);
    assert!(VERIFIER.verify(token, now).is_err());
}

/// A JSON:API query string for one type (the first byte picks it, and
/// whether a collection or one object is asked for), and the same text as
/// `Accept` and `Content-Type` headers.
pub fn jsonapi_query(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let Ok(raw) = std::str::from_utf8(rest) else {
        return;
    };
    let ty = &registry::TYPES[usize::from(selector) % registry::TYPES.len()];
    let target = if selector & 0x80 == 0 {
        query::Target::Collection
    } else {
        query::Target::Single
    };
    let _ = query::parse(ty, raw, target);
    let _ = media::accept_ok(Some(raw));
    let _ = media::content_type_ok(Some(raw));
}

/// A JSON:API request document for one type (the first byte picks it): as
/// a create, an update and each relationship's linkage. Every refusal
/// renders as an error document.
pub fn jsonapi_document(data: &[u8]) {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let ty = &registry::TYPES[usize::from(selector) % registry::TYPES.len()];
    let problems = [
        input::parse(ty, body, Intent::Create, None).err(),
        input::parse(ty, body, Intent::Update, Some("an-id")).err(),
    ];
    let linkage =
        (0..ty.relationships.len()).filter_map(|i| input::parse_linkage(ty, i, body).err());
    for problem in problems.into_iter().flatten().chain(linkage) {
        let _ = problem.body();
    }
}

/// The cluster's service-account keys as a fuzzer cannot know them: one
/// RS256 and one ES256 key, made once, with fixed key ids (so seeds can
/// name them and mutated tokens reach the signature check).
static CLUSTER_KEYS: LazyLock<PublicKeys> = LazyLock::new(|| {
    let now = Timestamp::from_second(1_800_000_000).unwrap_or(Timestamp::UNIX_EPOCH);
    let jwks: Vec<serde_json::Value> = [
        (Algorithm::Rs256, "sa-rs256"),
        (Algorithm::Es256, "sa-es256"),
    ]
    .into_iter()
    .filter_map(|(alg, kid)| {
        let stored = StoredKey::generate(alg, now, now).ok()?;
        let key = SigningKey::load(&StoredKey {
            kid: kid.to_owned(),
            ..stored
        })
        .ok()?;
        Some(key.jwk().clone())
    })
    .collect();
    let document = serde_json::json!({ "keys": jwks }).to_string();
    PublicKeys::parse(document.as_bytes()).unwrap_or_default()
});

/// A client assertion checked against the cluster's keys before any
/// TokenReview (the first byte even), or a JWKS document as the API server
/// would serve it (odd): no assertion the fuzzer makes without the keys
/// verifies, and a document yields only keys it can use.
pub fn service_account_assertion(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    if selector % 2 == 1 {
        if let Ok(keys) = PublicKeys::parse(rest) {
            assert!(keys.len() <= 64);
        }
        return;
    }
    let Ok(assertion) = std::str::from_utf8(rest) else {
        return;
    };
    assert!(!crate::server::assertion::signature_holds(
        &CLUSTER_KEYS,
        assertion,
        "https://catalio.ai"
    ));
    let _ = crate::token::jwks::key_id(assertion);
}

/// An introspection or revocation request (RFC 7662, RFC 7009) as the
/// endpoints read it: the body by media type (the first byte picks one,
/// and an `Accept` header), the client's authentication from it, and the
/// token it names. A request that parses names its token as sent.
pub fn introspect_revoke_request(data: &[u8]) {
    use crate::server::oauth::{client, introspect};
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let content_type = match selector % 3 {
        0 => "application/x-www-form-urlencoded",
        1 => "application/json",
        _ => "application/x-www-form-urlencoded; charset=utf-8",
    };
    let accept = std::str::from_utf8(body).ok();
    let _ = introspect::wants_jwt(accept);
    let Ok(request) = oauth::parse_body(Some(content_type), body) else {
        return;
    };
    match request.asserts() {
        true => {
            if let Ok(a) = client::assertion_request(&request, None) {
                assert_eq!(Some(a.assertion), request.client_assertion.as_deref());
            }
        }
        false => {
            if let Ok(c) = client::client_request(&request, None) {
                assert_eq!(Some(&c.client_id), request.client_id.as_ref());
                assert!(!c.basic);
            }
        }
    }
}

/// A `private_key_jwt` assertion against client keys the fuzzer cannot
/// know (the cluster keys' twins, under the same ids): never accepted.
pub fn client_key_assertion(data: &[u8]) {
    let Ok(assertion) = std::str::from_utf8(data) else {
        return;
    };
    let now = Timestamp::from_second(1_800_000_000).unwrap_or(Timestamp::UNIX_EPOCH);
    let id = "ci_0f1e2d3c4b5a69788695a4b3c2d1e0f9";
    let audiences = ["https://catalio.ai/oauth/token", "https://catalio.ai"];
    let checked =
        crate::server::oauth::client::key_assertion(&CLUSTER_KEYS, assertion, id, &audiences, now);
    assert!(checked.is_err());
    let _ = crate::federation::claimed_issuer(assertion);
}

/// A DPoP proof (RFC 9449) as the token endpoint and the JSON:API read
/// it: whatever holds names the request it was checked against, and its
/// key's thumbprint is one.
pub fn dpop_proof(data: &[u8]) {
    let Ok(proof) = std::str::from_utf8(data) else {
        return;
    };
    let now = Timestamp::from_second(1_800_000_000).unwrap_or(Timestamp::UNIX_EPOCH);
    let url = "https://catalio.ai/api/v1/requirements";
    for token in [None, Some("a.b.c")] {
        if let Ok(p) = crate::token::dpop::verify(proof, "GET", url, token, now) {
            assert_eq!(p.jkt.len(), 43);
            assert!((p.iat - now.as_second()).abs() <= crate::token::dpop::WINDOW);
        }
    }
}

/// An outside issuer's token against keys the fuzzer cannot know: never
/// someone.
pub fn federated_assertion(data: &[u8]) {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    let now = Timestamp::from_second(1_800_000_000).unwrap_or(Timestamp::UNIX_EPOCH);
    let config = crate::federation::IssuerConfig {
        name: "ci".into(),
        issuer: "https://ci.example".into(),
        audiences: vec!["https://catalio.ai".into()],
        ca_bundle: None,
        jwks: None,
    };
    assert!(crate::federation::verify_with(&CLUSTER_KEYS, &config, token, now).is_err());
}

/// Durations as specs carry them: what parses formats back to the same
/// whole seconds.
pub fn duration(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(d) = crate::duration::parse(text) {
        let again = crate::duration::parse(&crate::duration::format(d));
        assert_eq!(again.map(|a| a.as_secs()), Ok(d.as_secs()), "{text:?}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// Every seed and every input a fuzzer found (`fuzz/regressions/`) runs
    /// through its target on each `cargo test`.
    #[test]
    fn seeds_and_findings_replay() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
        for (name, target) in TARGETS {
            let mut replayed = 0;
            for dir in ["seeds", "regressions"] {
                let Ok(entries) = std::fs::read_dir(root.join(dir).join(name)) else {
                    continue;
                };
                for entry in entries {
                    let path = entry.unwrap().path();
                    target(&std::fs::read(&path).unwrap());
                    replayed += 1;
                }
            }
            assert!(replayed > 0, "no seeds for {name}");
        }
    }
}
