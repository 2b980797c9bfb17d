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
use crate::index::{CredentialEntry, SecretSlot, service_account_sid};
use crate::secret::{SecretHash, parse_client_id};
use crate::server::assertion::{self, ASSERTION_TYPE, Claimed};

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
    /// A ServiceAccount token as RFC 7523 client assertion.
    ServiceAccount,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::ClientSecretBasic => "client_secret_basic",
            Method::ClientSecretPost => "client_secret_post",
            Method::ServiceAccount => "service_account_assertion",
        }
    }
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
            self.by_assertion(request, call, now, introspectors).await
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

    /// A ServiceAccount token: its unverified claims pick the credential
    /// (refused at once when none names the account), then its signature
    /// is checked against the cluster's keys and the API server reviews it.
    async fn by_assertion(
        &self,
        request: &TokenRequest,
        call: &Call<'_>,
        now: Timestamp,
        introspectors: bool,
    ) -> Result<Client, OAuthError> {
        let request = assertion_request(request, call.authorization)?;
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
}
