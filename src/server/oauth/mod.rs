//! The OAuth 2.0 endpoints: `POST /oauth/token` (RFC 6749 section 4.4, the
//! client credentials grant), `POST /oauth/introspect` (RFC 7662) and `POST
//! /oauth/revoke` (RFC 7009), their error objects (RFC 6749 section 5.2),
//! and the well-known documents (RFC 7517 JWKS, RFC 8414 metadata). The
//! three POSTs read the same body formats ([`params`]) and authenticate the
//! client the same ways ([`client`]); each has a module of its own.

pub mod client;
pub mod introspect;
pub mod params;
pub mod revoke;
pub mod token;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use serde_json::json;
use tracing::debug;
use warp::Reply;
use warp::http::{HeaderValue, StatusCode, header};
use warp::reply::Response;

use crate::audit::{Audit, Event};
use crate::federation::Federation;
use crate::index::CredentialIndex;
use crate::metrics::{Metrics, ReasonLabel};
use crate::secret::parse_client_id;
use crate::server::assertion::TokenReviewer;
use crate::server::limit::RateLimit;
use crate::server::throttle::Throttle;
use crate::token::replay::Replays;
use crate::token::{BatchSigner, KeyStore, Verifier};
use crate::usage::UsageRecorder;
pub use params::{TokenRequest, parse_basic, parse_body};
pub use token::TokenSettings;

/// Largest request body accepted at any of the endpoints.
pub const BODY_LIMIT: u64 = 16 * 1024;

/// An RFC 6749 section 5.2 error.
#[derive(Debug, PartialEq)]
pub struct OAuthError {
    pub status: StatusCode,
    pub error: &'static str,
    pub description: String,
    /// Answer with `WWW-Authenticate: Basic` (the client used HTTP Basic).
    pub basic_challenge: bool,
    pub retry_after: Option<Duration>,
}

impl OAuthError {
    pub fn new(status: StatusCode, error: &'static str, description: impl Into<String>) -> Self {
        Self {
            status,
            error,
            description: description.into(),
            basic_challenge: false,
            retry_after: None,
        }
    }

    pub fn invalid_request(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", description)
    }

    /// Unknown client, wrong secret and revoked credential all look like this.
    pub fn invalid_client(basic: bool) -> Self {
        Self {
            basic_challenge: basic,
            ..Self::new(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "Client authentication failed",
            )
        }
    }

    pub fn into_response(self) -> Response {
        let body = json!({"error": self.error, "error_description": self.description});
        let mut response =
            warp::reply::with_status(warp::reply::json(&body), self.status).into_response();
        let headers = response.headers_mut();
        no_store(headers);
        if self.basic_challenge {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"catalio\", charset=\"UTF-8\""),
            );
        }
        if let Some(after) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&after.as_secs().max(1).to_string())
        {
            headers.insert(header::RETRY_AFTER, v);
        }
        response
    }
}

fn no_store(headers: &mut warp::http::HeaderMap) {
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}

/// The three POST endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Token,
    Introspect,
    Revoke,
}

impl Endpoint {
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Token => "token",
            Endpoint::Introspect => "introspect",
            Endpoint::Revoke => "revoke",
        }
    }
}

/// A POST to one of the endpoints: its body, and what the route read of
/// its headers and connection.
pub struct Call<'a> {
    pub content_type: Option<&'a str>,
    pub authorization: Option<&'a str>,
    pub accept: Option<&'a str>,
    pub user_agent: Option<&'a str>,
    /// A DPoP proof (RFC 9449).
    pub dpop: Option<&'a str>,
    pub body: &'a [u8],
    /// The connection's address (unspecified when unknown).
    pub source: IpAddr,
}

/// What the OAuth endpoints need, shared by every request.
pub struct TokenService {
    pub index: Arc<CredentialIndex>,
    pub keys: Arc<KeyStore>,
    /// Signs the tokens.
    pub signer: BatchSigner,
    /// Decides introspections and revocations as the JSON:API decides
    /// its calls.
    pub verifier: Arc<Verifier>,
    pub settings: TokenSettings,
    pub token_url: String,
    pub jwks_url: String,
    pub throttle: Throttle,
    /// Tokens issued per credential: one looping client cannot take every
    /// signature the replica can make.
    pub issuance: RateLimit,
    pub usage: UsageRecorder,
    pub metrics: Arc<Metrics>,
    /// Verifies ServiceAccount tokens presented as client assertions.
    pub reviewer: TokenReviewer,
    /// ServiceAccounts (`namespace/name`) that may introspect every
    /// organization's tokens.
    pub introspectors: Vec<String>,
    /// Writes revoked tokens into their credentials' status.
    pub client: kube::Client,
    pub audit: Audit,
    /// The outside issuers the administrator trusts.
    pub federation: Federation,
    /// Assertion and DPoP proof ids seen, until they expire.
    pub replays: Arc<Replays>,
}

impl TokenService {
    /// Answers one POST to `endpoint`.
    pub async fn respond(&self, endpoint: Endpoint, call: Call<'_>, now: Timestamp) -> Response {
        let request = parse_body(call.content_type, call.body);
        let client_id = request
            .as_ref()
            .ok()
            .and_then(|r| r.client_id.clone())
            .filter(|id| parse_client_id(id).is_some());
        let answer = match request {
            Err(e) => Err(e),
            Ok(_) if !self.ready() => Err(OAuthError {
                retry_after: Some(Duration::from_secs(1)),
                ..OAuthError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "temporarily_unavailable",
                    "This replica has not loaded the credentials yet; retry",
                )
            }),
            Ok(request) => match endpoint {
                Endpoint::Token => self.token(request, &call, now).await,
                Endpoint::Introspect => self.introspect(request, &call, now).await,
                Endpoint::Revoke => self.revoke(request, &call, now).await,
            },
        };
        match answer {
            Ok(response) => {
                if endpoint == Endpoint::Token {
                    self.metrics.tokens_issued.inc();
                }
                response
            }
            Err(e) => self.refused(endpoint, e, client_id.as_deref(), &call),
        }
    }

    /// Before its credentials and keys are loaded, a replica would refuse
    /// good clients (and count them as failed attempts).
    fn ready(&self) -> bool {
        self.index.is_synced() && self.keys.is_loaded()
    }

    /// A refusal: counted, recorded, answered.
    fn refused(
        &self,
        endpoint: Endpoint,
        e: OAuthError,
        client_id: Option<&str>,
        call: &Call<'_>,
    ) -> Response {
        debug!(
            endpoint = endpoint.as_str(),
            error = e.error,
            status = e.status.as_u16(),
            "request refused"
        );
        let reason = match (e.status, e.error) {
            (StatusCode::TOO_MANY_REQUESTS, "invalid_client") => "throttled",
            (StatusCode::TOO_MANY_REQUESTS, _) => "rate_limited",
            (StatusCode::INTERNAL_SERVER_ERROR, _) => "server_error",
            (_, error) => error,
        };
        let family = match endpoint {
            Endpoint::Token => &self.metrics.tokens_refused,
            Endpoint::Introspect => &self.metrics.introspections_refused,
            Endpoint::Revoke => &self.metrics.revocations_refused,
        };
        family.get_or_create(&ReasonLabel { reason }).inc();
        self.audit.record(Event::Refused {
            endpoint: endpoint.as_str(),
            reason,
            client_id,
            source: call.source,
            user_agent: crate::audit::user_agent(call.user_agent),
        });
        e.into_response()
    }

    pub fn jwks(&self) -> Response {
        let mut response = warp::reply::json(&self.keys.ring().jwks()).into_response();
        // New keys are published well before this expires (publish delay).
        response.headers_mut().insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=300"),
        );
        response
    }

    pub fn metadata(&self) -> Response {
        let scopes: Vec<String> = std::iter::once("*".to_owned())
            .chain(
                crate::crd::registry::TYPES
                    .iter()
                    .map(|t| t.name.to_owned()),
            )
            .flat_map(|t| [format!("{t}:read"), format!("{t}:write")])
            .collect();
        let base = self.token_url.strip_suffix("/oauth/token");
        let endpoint = |path: &str| match base {
            Some(base) => format!("{base}/oauth/{path}"),
            None => format!(
                "{}/oauth/{path}",
                self.settings.issuer.trim_end_matches('/')
            ),
        };
        let methods = [
            "client_secret_basic",
            "client_secret_post",
            "private_key_jwt",
        ];
        let signing = [
            "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
        ];
        // Only what is implemented: no authorization endpoint (so no
        // response types).
        warp::reply::json(&json!({
            "issuer": self.settings.issuer,
            "token_endpoint": self.token_url,
            "jwks_uri": self.jwks_url,
            "introspection_endpoint": endpoint("introspect"),
            "revocation_endpoint": endpoint("revoke"),
            "grant_types_supported": ["client_credentials"],
            "token_endpoint_auth_methods_supported": methods,
            "token_endpoint_auth_signing_alg_values_supported": signing,
            "introspection_endpoint_auth_methods_supported": methods,
            "revocation_endpoint_auth_methods_supported": methods,
            "dpop_signing_alg_values_supported": crate::token::dpop::ALGORITHMS,
            "response_types_supported": [],
            "scopes_supported": scopes,
        }))
        .into_response()
    }
}

/// The answer to a body that could not be read.
pub fn body_error(e: super::body::BodyError) -> OAuthError {
    match e {
        super::body::BodyError::TooLarge => OAuthError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request",
            format!("The body is larger than {BODY_LIMIT} bytes"),
        ),
        super::body::BodyError::Read => OAuthError::invalid_request("The body could not be read"),
        super::body::BodyError::TimedOut => OAuthError::new(
            StatusCode::REQUEST_TIMEOUT,
            "invalid_request",
            "The body did not arrive in time",
        ),
    }
}

fn server_error() -> OAuthError {
    OAuthError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "server_error",
        "The token could not be issued",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_responses_carry_the_rfc_headers() {
        let r = OAuthError::invalid_client(true).into_response();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(r.headers()[header::CACHE_CONTROL], "no-store");
        assert!(
            r.headers()[header::WWW_AUTHENTICATE]
                .to_str()
                .unwrap()
                .starts_with("Basic")
        );
        let throttled = OAuthError {
            retry_after: Some(Duration::from_secs(42)),
            ..OAuthError::invalid_request("x")
        }
        .into_response();
        assert_eq!(throttled.headers()[header::RETRY_AFTER], "42");
    }
}
