//! Client authentication, the same at every endpoint: a client id and
//! secret (in the body, or `Authorization: Basic` as RFC 6749 section 2.3.1
//! says), or a ServiceAccount token as an RFC 7523 client assertion.
//!
//! The presented secret or assertion is checked before the failure
//! throttle is asked: behind a proxy every client shares one address, and a
//! right secret (256 bits) or a valid assertion must never be refused for
//! what others got wrong there. The throttle answers only failures.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use tracing::warn;
use warp::http::StatusCode;

use super::params::{TokenRequest, parse_basic};
use super::{Call, OAuthError, TokenService, server_error};
use crate::federation;
use crate::index::credentials::{client_key_sid, federation_sid};
use crate::index::{CredentialEntry, SecretSlot, service_account_sid};
use crate::secret::{SecretHash, parse_client_id};
use crate::server::assertion::{self, ASSERTION_TYPE, Claimed};
use crate::token::jwks::{self, PublicKeys};
use crate::token::replay::Seen;

/// A request that authenticates with a client id and secret.
#[derive(Debug, PartialEq)]
pub struct ClientRequest {
    pub client_id: String,
    pub client_secret: String,
    /// The client authenticated with HTTP Basic.
    pub basic: bool,
}

/// The client's id and secret, from the body or from `Authorization:
/// Basic`, never both.
pub fn client_request(
    request: &TokenRequest,
    authorization: Option<&str>,
) -> Result<ClientRequest, OAuthError> {
    let basic = authorization.is_some();
    let (id, secret) = (&request.client_id, &request.client_secret);
    let (client_id, client_secret) = match (authorization, id, secret) {
        (Some(header), None, None) => parse_basic(header)?,
        (Some(_), _, _) => {
            return Err(OAuthError {
                basic_challenge: true,
                ..OAuthError::invalid_request(
                    "Use one client authentication method, not HTTP Basic and the body together",
                )
            });
        }
        (None, Some(id), Some(secret)) => (id.clone(), secret.clone()),
        (None, _, _) => return Err(OAuthError::invalid_client(false)),
    };
    Ok(ClientRequest {
        client_id,
        client_secret,
        basic,
    })
}

/// A request that authenticates with a ServiceAccount token.
#[derive(Debug, PartialEq)]
pub struct AssertionRequest<'r> {
    /// Needed only when several credentials name the account.
    pub client_id: Option<&'r str>,
    pub assertion: &'r str,
}

/// The assertion of a request that carries one: one authentication
/// method, and the assertion type RFC 7523 defines.
pub fn assertion_request<'r>(
    request: &'r TokenRequest,
    authorization: Option<&str>,
) -> Result<AssertionRequest<'r>, OAuthError> {
    if authorization.is_some() || request.client_secret.is_some() {
        return Err(OAuthError::invalid_request(
            "Use one client authentication method, not a client assertion and a secret together",
        ));
    }
    if request.client_assertion_type.as_deref() != Some(ASSERTION_TYPE) {
        return Err(OAuthError::invalid_request(format!(
            "client_assertion_type must be {ASSERTION_TYPE}"
        )));
    }
    let Some(assertion) = request.client_assertion.as_deref() else {
        return Err(OAuthError::invalid_request("Missing client_assertion"));
    };
    Ok(AssertionRequest {
        client_id: request.client_id.as_deref(),
        assertion,
    })
}

/// How a client authenticated, as RFC 8414 and the audit trail name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    ClientSecretBasic,
    ClientSecretPost,
    /// A JWT signed with one of the credential's `clientKeys`.
    PrivateKeyJwt,
    /// A ServiceAccount token as RFC 7523 client assertion.
    ServiceAccount,
    /// A token from a trusted outside issuer.
    Federated,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::ClientSecretBasic => "client_secret_basic",
            Method::ClientSecretPost => "client_secret_post",
            Method::PrivateKeyJwt => "private_key_jwt",
            Method::ServiceAccount => "service_account_assertion",
            Method::Federated => "federated_assertion",
        }
    }
}

/// A `private_key_jwt` assertion's life, at most (its `exp` past `now`).
pub const MAX_ASSERTION_LIFE: i64 = 300;
/// Clock skew tolerated on an assertion's `exp` and `nbf`.
const LEEWAY: i64 = 30;

/// What a `private_key_jwt` assertion that holds says.
#[derive(Debug, PartialEq)]
pub struct KeyAssertion {
    /// The client key that signed it.
    pub kid: String,
    pub jti: String,
    pub expires: i64,
}

/// Checks a `private_key_jwt` assertion (RFC 7523, OpenID Connect Core
/// section 9) of `client_id` against its `keys`: signed by one of them
/// with that key's algorithm; `iss` and `sub` the client id; `aud` one of
/// `audiences` (the token endpoint's URL, the issuer); not expired, and
/// expiring within [`MAX_ASSERTION_LIFE`]; a `jti`. No I/O; the replay
/// check on the `jti` is the caller's.
pub fn key_assertion(
    keys: &PublicKeys,
    assertion: &str,
    client_id: &str,
    audiences: &[&str],
    now: Timestamp,
) -> Result<KeyAssertion, jwks::Refusal> {
    #[derive(serde::Deserialize)]
    struct Claims {
        exp: i64,
        jti: Option<String>,
    }
    let kid = jwks::key_id(assertion).ok_or(jwks::Refusal::UnknownKey)?;
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_issuer(&[client_id]);
    validation.sub = Some(client_id.to_owned());
    validation.set_audience(audiences);
    validation.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
    validation.validate_nbf = true;
    validation.leeway = LEEWAY as u64;
    let claims: Claims = jwks::verify(keys, assertion, validation)?;
    let now = now.as_second();
    if claims.exp + LEEWAY <= now {
        return Err(jwks::Refusal::Expired);
    }
    if claims.exp > now + MAX_ASSERTION_LIFE + LEEWAY {
        return Err(jwks::Refusal::Claims("exp too far ahead"));
    }
    let jti = claims
        .jti
        .filter(|j| !j.is_empty() && j.len() <= 256)
        .ok_or(jwks::Refusal::Claims("jti"))?;
    Ok(KeyAssertion {
        kid,
        jti,
        expires: claims.exp,
    })
}

/// A credential's client, authenticated.
#[derive(Debug)]
pub struct Authenticated {
    pub entry: Arc<CredentialEntry>,
    /// What its tokens are bound to: the secret's short id, or the
    /// ServiceAccount's `sa:` id.
    pub sid: String,
    pub method: Method,
    /// An assertion's `exp`: nothing issued for it outlives it.
    pub expires: Option<i64>,
}

/// Who a request authenticated as.
#[derive(Debug)]
pub enum Client {
    Credential(Authenticated),
    /// A ServiceAccount the cluster administrator named to introspect
    /// every organization's tokens (a gateway), as `namespace/name`.
    Introspector(String),
}

impl Client {
    /// How it appears in the audit trail: the client id, or the account.
    pub fn name(&self) -> &str {
        match self {
            Client::Credential(a) => &a.entry.client_id,
            Client::Introspector(account) => account,
        }
    }
}

/// Which of the credential's live secrets `presented` is the hash of, as
/// the id its tokens are bound to. Unknown clients, wrong secrets and
/// revoked credentials are all `None`.
pub fn secret_id(
    entry: Option<&CredentialEntry>,
    presented: &SecretHash,
    now: Timestamp,
) -> Option<String> {
    let entry = entry?;
    let hash = match entry.match_secret(presented, now)? {
        SecretSlot::Current => entry.current,
        SecretSlot::Previous => entry.previous.map(|(h, _)| h),
    };
    Some(hash.map(|h| h.short_id()).unwrap_or_default())
}

impl TokenService {
    /// Authenticates the request's client. `introspectors`: whether the
    /// ServiceAccounts named to introspect every organization count.
    pub(super) async fn authenticate(
        &self,
        request: &TokenRequest,
        call: &Call<'_>,
        now: Timestamp,
        introspectors: bool,
    ) -> Result<Client, OAuthError> {
        if request.asserts() {
            // Boxed: an assertion's check (a TokenReview, an issuer's
            // discovery) is a 2.7 KiB future; inline, every request's
            // future is that large and copied as it is built and moved,
            // secrets' requests too.
            Box::pin(self.by_assertion(request, call, now, introspectors)).await
        } else {
            self.by_secret(request, call, now).map(Client::Credential)
        }
    }

    fn by_secret(
        &self,
        request: &TokenRequest,
        call: &Call<'_>,
        now: Timestamp,
    ) -> Result<Authenticated, OAuthError> {
        let request = client_request(request, call.authorization)?;
        let refused = || OAuthError::invalid_client(request.basic);
        // Anything but our form is no client of ours: refused before any
        // state is kept about it.
        let client = parse_client_id(&request.client_id).ok_or_else(refused)?;
        let clock = Instant::now();
        let ring = self.keys.ring();
        let hasher = ring.hasher().ok_or_else(server_error)?;
        // Hashed before the lookup: an unknown client costs what a wrong
        // secret costs.
        let presented = hasher.hash(&request.client_id, request.client_secret.as_bytes());
        let entry = self.index.lookup(&request.client_id);
        let Some(sid) = secret_id(entry.as_deref(), &presented, now) else {
            return Err(self.failed(refused(), client, call.source, clock));
        };
        Ok(Authenticated {
            entry: entry.ok_or_else(server_error)?,
            sid,
            method: match request.basic {
                true => Method::ClientSecretBasic,
                false => Method::ClientSecretPost,
            },
            expires: None,
        })
    }

    /// A client assertion, by who its unverified `iss` says signed it: a
    /// trusted outside issuer, the client itself (`private_key_jwt`), or
    /// the cluster (a ServiceAccount token).
    async fn by_assertion(
        &self,
        request: &TokenRequest,
        call: &Call<'_>,
        now: Timestamp,
        introspectors: bool,
    ) -> Result<Client, OAuthError> {
        let request = assertion_request(request, call.authorization)?;
        let iss = federation::claimed_issuer(request.assertion);
        if let Some(issuer) = iss.as_deref().and_then(|i| self.federation.by_url(i)) {
            return self.by_federation(&request, issuer, now).await;
        }
        if let Some(client_id) = iss.filter(|i| parse_client_id(i).is_some()) {
            return self.by_client_key(&request, &client_id, call, now);
        }
        self.by_service_account(&request, call, now, introspectors)
            .await
    }

    /// `private_key_jwt`: a JWT the client signed with one of its keys. A
    /// token bound to the key (`key:<kid>`) lives while the credential
    /// lists it; the assertion is accepted once per replica.
    fn by_client_key(
        &self,
        request: &AssertionRequest<'_>,
        client_id: &str,
        call: &Call<'_>,
        now: Timestamp,
    ) -> Result<Client, OAuthError> {
        let refused = || OAuthError::invalid_client(false);
        if request.client_id.is_some_and(|id| id != client_id) {
            return Err(refused());
        }
        let client = parse_client_id(client_id).ok_or_else(refused)?;
        let clock = Instant::now();
        let entry = self.index.lookup(client_id).filter(|e| !e.revoked);
        let keys = entry.as_ref().and_then(|e| e.client_keys.clone());
        let audiences = [self.token_url.as_str(), self.settings.issuer.as_str()];
        let checked = keys
            .ok_or(jwks::Refusal::UnknownKey)
            .and_then(|keys| key_assertion(&keys, request.assertion, client_id, &audiences, now));
        let (Some(entry), Ok(assertion)) = (entry, checked) else {
            return Err(self.failed(refused(), client, call.source, clock));
        };
        match self.replays.first_use(
            client_id,
            &assertion.jti,
            assertion.expires,
            now.as_second(),
        ) {
            Ok(()) => {}
            Err(Seen::Again) => return Err(self.failed(refused(), client, call.source, clock)),
            Err(Seen::Full) => return Err(busy()),
        }
        Ok(Client::Credential(Authenticated {
            entry,
            sid: client_key_sid(&assertion.kid),
            method: Method::PrivateKeyJwt,
            expires: None,
        }))
    }

    /// A token of a trusted outside issuer: the credential whose
    /// federation names its subject and claims (the one `client_id` names,
    /// when several do). The access token ends when it does.
    async fn by_federation(
        &self,
        request: &AssertionRequest<'_>,
        issuer: &federation::Issuer,
        now: Timestamp,
    ) -> Result<Client, OAuthError> {
        let refused = || OAuthError::invalid_client(false);
        let identity = issuer
            .verify(request.assertion, now)
            .await
            .map_err(|_| refused())?;
        let name = issuer.config.name.as_str();
        let candidates = match request.client_id {
            Some(id) => self.index.lookup(id).into_iter().collect(),
            None => self.index.by_identity(name, &identity.subject),
        };
        let mut matching = candidates.into_iter().filter(|e| {
            !e.revoked
                && e.federation
                    .iter()
                    .any(|f| federation::matches(f, name, &identity))
        });
        let (Some(entry), None) = (matching.next(), matching.next()) else {
            return Err(match request.client_id {
                None if !self.index.by_identity(name, &identity.subject).is_empty() => {
                    OAuthError::invalid_request(
                        "Several credentials name this identity; send client_id to choose one",
                    )
                }
                _ => refused(),
            });
        };
        Ok(Client::Credential(Authenticated {
            entry,
            sid: federation_sid(name, &identity.subject),
            method: Method::Federated,
            expires: Some(identity.expires),
        }))
    }

    /// A ServiceAccount token: its unverified claims pick the credential
    /// (refused at once when none names the account), then its signature
    /// is checked against the cluster's keys and the API server reviews it.
    async fn by_service_account(
        &self,
        request: &AssertionRequest<'_>,
        call: &Call<'_>,
        now: Timestamp,
        introspectors: bool,
    ) -> Result<Client, OAuthError> {
        let refused = || OAuthError::invalid_client(false);
        let claimed = assertion::claimed(request.assertion, self.reviewer.audience(), now)
            .ok_or_else(refused)?;
        let account = format!("{}/{}", claimed.namespace, claimed.account);
        if introspectors && self.introspectors.contains(&account) {
            return match self.review(request.assertion, &claimed).await? {
                true => Ok(Client::Introspector(account)),
                false => Err(refused()),
            };
        }
        let named = self
            .index
            .by_service_account(&claimed.namespace, &claimed.account);
        let entry = match request.client_id {
            Some(id) => named.iter().find(|e| e.client_id == id),
            None => named.first(),
        }
        .cloned()
        .ok_or_else(refused)?;
        let client = parse_client_id(&entry.client_id).ok_or_else(refused)?;
        let clock = Instant::now();
        if !self.review(request.assertion, &claimed).await? {
            return Err(self.failed(refused(), client, call.source, clock));
        }
        if request.client_id.is_none() && named.len() > 1 {
            return Err(OAuthError::invalid_request(
                "Several credentials name this ServiceAccount; send client_id to choose one",
            ));
        }
        Ok(Client::Credential(Authenticated {
            entry,
            sid: service_account_sid(&claimed.account),
            method: Method::ServiceAccount,
            expires: Some(claimed.expires),
        }))
    }

    /// Whether the assertion is a valid token of the account it claims;
    /// 503 when that cannot be told now.
    async fn review(&self, assertion: &str, claimed: &Claimed) -> Result<bool, OAuthError> {
        self.reviewer.verify(assertion, claimed).await.map_err(|e| {
            warn!(error = %e, "could not verify a ServiceAccount token");
            OAuthError {
                retry_after: Some(Duration::from_secs(1)),
                ..OAuthError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "temporarily_unavailable",
                    "The ServiceAccount token could not be verified now; retry",
                )
            }
        })
    }

    /// What a failed authentication of `client` from `source` answers:
    /// `e`, counted, or 429 once the pair has failed too often.
    fn failed(&self, e: OAuthError, client: u128, source: IpAddr, clock: Instant) -> OAuthError {
        if let Some(wait) = self.throttle.blocked(client, source, clock) {
            return OAuthError {
                retry_after: Some(wait),
                ..OAuthError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "invalid_client",
                    "Too many failed attempts for this client from this address; retry later",
                )
            };
        }
        self.throttle.failed(client, source, clock);
        e
    }
}

/// 503: the replay table is full of live ids; nothing can be accepted
/// safely until some expire.
fn busy() -> OAuthError {
    OAuthError {
        retry_after: Some(Duration::from_secs(1)),
        ..OAuthError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "Too many assertions in flight; retry",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::oauth::params::parse_body;
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;

    #[test]
    fn requests_name_one_client_one_way() {
        let parsed = |body: &str| {
            parse_body(Some("application/x-www-form-urlencoded"), body.as_bytes()).unwrap()
        };
        let error = |body: &str, authorization: Option<&str>| {
            client_request(&parsed(body), authorization)
                .unwrap_err()
                .error
        };
        assert_eq!(error("client_id=a", None), "invalid_client");
        assert_eq!(error("client_secret=s", None), "invalid_client");
        let basic = format!("Basic {}", STANDARD.encode("a:s"));
        let both = client_request(&parsed("client_id=a"), Some(&basic)).unwrap_err();
        assert!(both.basic_challenge && both.error == "invalid_request");
        assert_eq!(
            client_request(&parsed("scope=x"), Some(&basic)),
            Ok(ClientRequest {
                client_id: "a".into(),
                client_secret: "s".into(),
                basic: true,
            })
        );
        let assertion =
            |body: &str| assertion_request(&parsed(body), None).map(|a| a.assertion.to_owned());
        assert_eq!(
            assertion(&format!(
                "client_assertion_type={ASSERTION_TYPE}&client_assertion=x"
            )),
            Ok("x".into())
        );
        for bad in [
            "client_assertion_type=urn:other&client_assertion=x",
            &format!("client_assertion_type={ASSERTION_TYPE}"),
            &format!("client_assertion_type={ASSERTION_TYPE}&client_assertion=x&client_secret=s"),
        ] {
            assert_eq!(
                assertion(bad).unwrap_err().error,
                "invalid_request",
                "{bad}"
            );
        }
    }

    #[test]
    fn a_secret_authenticates_only_while_it_works() {
        use crate::secret::SecretHasher;
        let hasher = SecretHasher::new(&[3; 32]);
        let id = "ci_0f1e2d3c4b5a69788695a4b3c2d1e0f9";
        let (current, previous) = (hasher.hash(id, b"new"), hasher.hash(id, b"old"));
        let at = |s: i64| Timestamp::from_second(1_800_000_000 + s).unwrap();
        let entry = CredentialEntry {
            current: Some(current),
            previous: Some((previous, at(100))),
            ..CredentialEntry::example(id)
        };
        assert_eq!(
            secret_id(Some(&entry), &current, at(0)),
            Some(current.short_id())
        );
        // The previous secret during its grace period, bound to itself.
        assert_eq!(
            secret_id(Some(&entry), &previous, at(99)),
            Some(previous.short_id())
        );
        // Refused alike: past the grace period, a wrong secret, no such
        // client, a revoked credential.
        let revoked = CredentialEntry {
            revoked: true,
            ..entry.clone()
        };
        let wrong = hasher.hash(id, b"guess");
        for (entry, hash, now) in [
            (Some(&entry), &previous, at(100)),
            (Some(&entry), &wrong, at(0)),
            (None, &current, at(0)),
            (Some(&revoked), &current, at(0)),
        ] {
            assert_eq!(secret_id(entry, hash, now), None);
        }
    }

    #[test]
    fn a_client_key_assertion_holds_only_as_openid_connect_says() {
        use crate::token::{Algorithm, SigningKey, StoredKey};
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        use serde_json::json;
        let now = Timestamp::now();
        let stored = StoredKey::generate(Algorithm::Es256, now, now).unwrap();
        let key = SigningKey::load(&stored).unwrap();
        let jwks = json!({"keys": [key.jwk()]});
        let keys = PublicKeys::parse(jwks.to_string().as_bytes()).unwrap();
        let id = "ci_0f1e2d3c4b5a69788695a4b3c2d1e0f9";
        let audiences = ["https://catalio.test/oauth/token", "https://catalio.ai"];
        let t = now.as_second();
        let claims = |extra: serde_json::Value| {
            let mut c = json!({"iss": id, "sub": id, "aud": audiences[0], "exp": t + 60, "iat": t, "jti": "j1"});
            for (k, v) in extra.as_object().unwrap() {
                c[k] = v.clone();
            }
            c
        };
        let sign = |c: serde_json::Value| key.sign(c.to_string().as_bytes()).unwrap();
        let good = key_assertion(&keys, &sign(claims(json!({}))), id, &audiences, now).unwrap();
        assert_eq!(
            (good.kid.as_str(), good.jti.as_str(), good.expires),
            (stored.kid.as_str(), "j1", t + 60)
        );
        // The issuer as audience is fine too.
        assert!(
            key_assertion(
                &keys,
                &sign(claims(json!({"aud": "https://catalio.ai"}))),
                id,
                &audiences,
                now
            )
            .is_ok()
        );
        for (what, c) in [
            (
                "a wrong aud",
                claims(json!({"aud": "https://elsewhere.example/token"})),
            ),
            (
                "another client's iss",
                claims(json!({"iss": "ci_00000000000000000000000000000000"})),
            ),
            (
                "another sub",
                claims(json!({"sub": "ci_00000000000000000000000000000000"})),
            ),
            ("a far-future exp", claims(json!({"exp": t + 3600}))),
            ("expired", claims(json!({"exp": t - 3600}))),
            ("no jti", claims(json!({"jti": null}))),
            ("no exp", claims(json!({"exp": null}))),
        ] {
            assert!(
                key_assertion(&keys, &sign(c), id, &audiences, now).is_err(),
                "{what}"
            );
        }
        // A key not in the set, alg none, HMAC keyed with the public key.
        let stranger = SigningKey::load(&StoredKey {
            kid: stored.kid.clone(),
            ..StoredKey::generate(Algorithm::Es256, now, now).unwrap()
        })
        .unwrap();
        let forged = stranger
            .sign(claims(json!({})).to_string().as_bytes())
            .unwrap();
        assert_eq!(
            key_assertion(&keys, &forged, id, &audiences, now),
            Err(jwks::Refusal::Signature)
        );
        let payload = URL_SAFE_NO_PAD.encode(claims(json!({})).to_string());
        for header in [
            json!({"alg": "none", "kid": stored.kid}),
            json!({"alg": "HS256", "kid": stored.kid}),
        ] {
            let input = format!("{}.{payload}", URL_SAFE_NO_PAD.encode(header.to_string()));
            let mac = {
                use aws_lc_rs::hmac;
                let public = key.jwk().to_string();
                let k = hmac::Key::new(hmac::HMAC_SHA256, public.as_bytes());
                URL_SAFE_NO_PAD.encode(hmac::sign(&k, input.as_bytes()))
            };
            assert!(
                key_assertion(&keys, &format!("{input}.{mac}"), id, &audiences, now).is_err(),
                "{header}"
            );
        }
    }
}
