//! `POST /oauth/token` (RFC 6749 section 4.4, client credentials), its
//! error objects (section 5.2), and the well-known documents (RFC 7517 JWKS,
//! RFC 8414 metadata).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use jiff::Timestamp;
use serde_json::json;
use tracing::{debug, warn};
use warp::http::{HeaderValue, StatusCode, header};
use warp::reply::Response;

use super::assertion::{self, ASSERTION_TYPE, TokenReviewer};
use super::limit::RateLimit;
use super::throttle::Throttle;
use crate::index::{CredentialEntry, CredentialIndex, SecretSlot, service_account_sid};
use crate::metrics::{Metrics, ReasonLabel};
use crate::scope;
use crate::secret::{SecretHash, parse_client_id};
use crate::token::{AccessClaims, KeyRing, KeyStore, new_jti};
use crate::usage::UsageRecorder;

/// Largest token request body accepted.
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

use warp::Reply;

fn no_store(headers: &mut warp::http::HeaderMap) {
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}

/// The body of a successful token response (RFC 6749 §5.1), written
/// directly: no JSON tree on the hot path. The token is a compact JWS,
/// base64url segments joined by dots, which JSON never escapes, so it is
/// copied as it is; the scope is escaped like any string.
fn token_body(token: &str, expires_in: i64, scope: &str) -> Vec<u8> {
    debug_assert!(
        token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    );
    let mut body = Vec::with_capacity(token.len() + scope.len() + 96);
    body.extend_from_slice(br#"{"access_token":""#);
    body.extend_from_slice(token.as_bytes());
    body.extend_from_slice(br#"","token_type":"Bearer","expires_in":"#);
    body.extend_from_slice(expires_in.to_string().as_bytes());
    body.extend_from_slice(br#","scope":"#);
    // Writing a &str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut body, scope);
    body.push(b'}');
    body
}

/// The parameters of a token request, from either body format.
#[derive(Debug, Default, PartialEq)]
pub struct TokenRequest {
    pub grant_type: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub audience: Option<String>,
    pub scope: Option<String>,
    pub client_assertion_type: Option<String>,
    pub client_assertion: Option<String>,
}

impl TokenRequest {
    /// The client authenticates with an assertion (RFC 7523) rather than a
    /// secret.
    pub fn asserts(&self) -> bool {
        self.client_assertion.is_some() || self.client_assertion_type.is_some()
    }

    fn field(&mut self, name: &str) -> Option<&mut Option<String>> {
        Some(match name {
            "grant_type" => &mut self.grant_type,
            "client_id" => &mut self.client_id,
            "client_secret" => &mut self.client_secret,
            "audience" => &mut self.audience,
            "scope" => &mut self.scope,
            "client_assertion_type" => &mut self.client_assertion_type,
            "client_assertion" => &mut self.client_assertion,
            _ => return None,
        })
    }
}

/// Parses the body by its media type: form (RFC 6749) or JSON (as Catalio
/// documents). Unknown parameters are ignored, as RFC 6749 section 3.2 says.
pub fn parse_body(content_type: Option<&str>, body: &[u8]) -> Result<TokenRequest, OAuthError> {
    let media = content_type
        .and_then(|c| c.split(';').next())
        .map(|m| m.trim().to_ascii_lowercase());
    let mut request = TokenRequest::default();
    match media.as_deref() {
        Some("application/x-www-form-urlencoded") => {
            let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body)
                .map_err(|_| OAuthError::invalid_request("The form body is malformed"))?;
            for (name, value) in pairs {
                if let Some(slot) = request.field(&name) {
                    if slot.is_some() {
                        return Err(OAuthError::invalid_request(format!(
                            "Parameter {name} is repeated"
                        )));
                    }
                    *slot = Some(value);
                }
            }
        }
        Some("application/json") => {
            let JsonBody(parsed) = serde_json::from_slice(body).map_err(|e| {
                OAuthError::invalid_request(match e.classify() {
                    serde_json::error::Category::Data => "The JSON body must be an object",
                    _ => "The JSON body is malformed",
                })
            })?;
            request = parsed.map_err(OAuthError::invalid_request)?;
        }
        _ => {
            return Err(OAuthError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "invalid_request",
                "Content-Type must be application/x-www-form-urlencoded or application/json",
            ));
        }
    }
    Ok(request)
}

/// A JSON token request: the parameters, or what is wrong with them. A
/// repeated member is refused as a repeated form field is (serde_json and
/// most parsers keep the last, so a gateway that reads the first one would
/// check another client than the one that authenticates); members must be
/// strings or null; unknown members are ignored.
struct JsonBody(Result<TokenRequest, String>);

impl<'de> serde::Deserialize<'de> for JsonBody {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(JsonBodyVisitor)
    }
}

struct JsonBodyVisitor;

impl<'de> serde::de::Visitor<'de> for JsonBodyVisitor {
    type Value = JsonBody;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<JsonBody, A::Error> {
        use serde::de::IgnoredAny;
        let mut request = TokenRequest::default();
        let mut seen: Vec<String> = Vec::new();
        let mut problem = None;
        while let Some(name) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            let slot = match request.field(&name) {
                Some(slot) if problem.is_none() => slot,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            if seen.iter().any(|s| *s == name) {
                problem = Some(format!("Parameter {name} is repeated"));
                map.next_value::<IgnoredAny>()?;
                continue;
            }
            seen.push(name.to_string());
            match map.next_value::<serde_json::Value>()? {
                serde_json::Value::String(v) => *slot = Some(v),
                serde_json::Value::Null => {}
                _ => problem = Some(format!("Parameter {name} must be a string")),
            }
        }
        Ok(JsonBody(match problem {
            Some(p) => Err(p),
            None => Ok(request),
        }))
    }
}

/// Client id and secret from `Authorization: Basic`, each form-urlencoded
/// as RFC 6749 section 2.3.1 requires.
pub fn parse_basic(authorization: &str) -> Result<(String, String), OAuthError> {
    let malformed = || OAuthError {
        basic_challenge: true,
        ..OAuthError::invalid_request("The Authorization header is malformed")
    };
    let (scheme, credentials) = authorization.trim().split_once(' ').ok_or_else(malformed)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(malformed());
    }
    let decoded = STANDARD
        .decode(credentials.trim())
        .map_err(|_| malformed())?;
    let text = String::from_utf8(decoded).map_err(|_| malformed())?;
    let (id, secret) = text.split_once(':').ok_or_else(malformed)?;
    let unescape = |s: &str| {
        form_urlencoded::parse(format!("v={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
    };
    Ok((
        unescape(id).ok_or_else(malformed)?,
        unescape(secret).ok_or_else(malformed)?,
    ))
}

/// A token request that names a client: what is left once the checks that
/// need no credential passed (grant type, audience, one authentication
/// method).
#[derive(Debug, PartialEq)]
pub struct ClientRequest {
    pub client_id: String,
    pub client_secret: String,
    /// Space-delimited scopes asked for, if any.
    pub scope: Option<String>,
    /// The client authenticated with HTTP Basic.
    pub basic: bool,
}

/// Checks a parsed request against `audience` and extracts the client's
/// credentials, from the body or from `Authorization: Basic`.
pub fn client_request(
    request: TokenRequest,
    authorization: Option<&str>,
    audience: &str,
) -> Result<ClientRequest, OAuthError> {
    check_grant(&request, audience)?;
    let basic = authorization.is_some();
    let (client_id, client_secret) = match (authorization, request.client_id, request.client_secret)
    {
        (Some(header), None, None) => parse_basic(header)?,
        (Some(_), _, _) => {
            return Err(OAuthError {
                basic_challenge: true,
                ..OAuthError::invalid_request(
                    "Use one client authentication method, not HTTP Basic and the body together",
                )
            });
        }
        (None, Some(id), Some(secret)) => (id, secret),
        (None, _, _) => return Err(OAuthError::invalid_client(false)),
    };
    Ok(ClientRequest {
        client_id,
        client_secret,
        scope: request.scope,
        basic,
    })
}

/// A token request that authenticates with a ServiceAccount token.
#[derive(Debug, PartialEq)]
pub struct AssertionRequest {
    /// Needed only when several credentials name the account.
    pub client_id: Option<String>,
    pub assertion: String,
    pub scope: Option<String>,
}

/// Checks a parsed request that carries a client assertion against
/// `audience`: one authentication method, and the assertion type RFC 7523
/// defines.
pub fn assertion_request(
    request: TokenRequest,
    authorization: Option<&str>,
    audience: &str,
) -> Result<AssertionRequest, OAuthError> {
    check_grant(&request, audience)?;
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
    let Some(assertion) = request.client_assertion else {
        return Err(OAuthError::invalid_request("Missing client_assertion"));
    };
    Ok(AssertionRequest {
        client_id: request.client_id,
        assertion,
        scope: request.scope,
    })
}

/// The grant type and audience every token request must get right.
fn check_grant(request: &TokenRequest, audience: &str) -> Result<(), OAuthError> {
    match request.grant_type.as_deref() {
        None => return Err(OAuthError::invalid_request("Missing grant_type")),
        Some("client_credentials") => {}
        Some(_) => {
            return Err(OAuthError::new(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "Only grant_type=client_credentials is supported",
            ));
        }
    }
    if let Some(asked) = &request.audience
        && asked != audience
    {
        // RFC 8707 section 2: the resource the token is for is unknown.
        return Err(OAuthError::new(
            StatusCode::BAD_REQUEST,
            "invalid_target",
            format!("audience must be {audience}"),
        ));
    }
    Ok(())
}

/// What every token carries besides its client's part.
#[derive(Clone, Debug)]
pub struct TokenSettings {
    pub issuer: String,
    pub audience: String,
    /// Unless the credential sets its own.
    pub default_lifetime: Duration,
}

/// Decides a token request, without I/O: the credential the client id
/// names (if any), the presented secret's keyed hash and the time in; the
/// claims of the token to sign, or why there is none, out. Unknown clients,
/// wrong secrets and revoked credentials are refused alike.
pub fn issue(
    entry: Option<&CredentialEntry>,
    presented: &SecretHash,
    request: &ClientRequest,
    settings: &TokenSettings,
    now: Timestamp,
    jti: String,
) -> Result<AccessClaims, OAuthError> {
    let (Some(entry), Some(slot)) = (entry, entry.and_then(|e| e.match_secret(presented, now)))
    else {
        return Err(OAuthError::invalid_client(request.basic));
    };
    let secret_id = match slot {
        SecretSlot::Current => entry.current,
        SecretSlot::Previous => entry.previous.map(|(h, _)| h),
    }
    .map(|h| h.short_id())
    .unwrap_or_default();
    claims(
        entry,
        request.scope.as_deref(),
        secret_id,
        settings,
        now,
        jti,
    )
}

/// The claims of a token for `entry`, narrowed to the `scope` asked for,
/// bound to `sid` (the secret, or the ServiceAccount, it was issued to).
fn claims(
    entry: &CredentialEntry,
    scope: Option<&str>,
    sid: String,
    settings: &TokenSettings,
    now: Timestamp,
    jti: String,
) -> Result<AccessClaims, OAuthError> {
    let granted = scope::narrow(&entry.scopes, scope)
        .map_err(|e| OAuthError::new(StatusCode::BAD_REQUEST, "invalid_scope", e.to_string()))?;
    let lifetime = entry.token_lifetime.unwrap_or(settings.default_lifetime);
    let iat = now.as_second();
    Ok(AccessClaims {
        iss: settings.issuer.clone(),
        aud: settings.audience.clone(),
        sub: entry.client_id.clone(),
        client_id: entry.client_id.clone(),
        org: entry.namespace.clone(),
        scope: granted.join(" "),
        iat,
        nbf: iat,
        exp: iat + lifetime.as_secs() as i64,
        jti,
        rot: entry.rotation_counter,
        sid,
    })
}

/// What the token endpoint needs, shared by every request.
pub struct TokenService {
    pub index: Arc<CredentialIndex>,
    pub keys: Arc<KeyStore>,
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
}

impl TokenService {
    /// Handles one token request from `peer` (the connection's address).
    pub async fn respond(
        &self,
        content_type: Option<&str>,
        authorization: Option<&str>,
        body: &[u8],
        peer: Option<SocketAddr>,
        now: Timestamp,
    ) -> Response {
        let source = peer.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |p| p.ip());
        // Before its credentials and keys are loaded, a replica would
        // refuse good clients (and count them as failed attempts).
        let ready = self.index.is_synced() && self.keys.is_loaded();
        let answer = match parse_body(content_type, body) {
            Err(e) => Err(e),
            Ok(_) if !ready => Err(OAuthError {
                retry_after: Some(Duration::from_secs(1)),
                ..OAuthError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "temporarily_unavailable",
                    "This replica has not loaded the credentials yet; retry",
                )
            }),
            Ok(request) if request.asserts() => {
                self.by_assertion(request, authorization, source, now).await
            }
            Ok(request) => self.by_secret(request, authorization, source, now),
        };
        match answer {
            Ok(response) => {
                self.metrics.tokens_issued.inc();
                response
            }
            Err(e) => {
                debug!(
                    error = e.error,
                    status = e.status.as_u16(),
                    "token request refused"
                );
                let reason = match (e.status, e.error) {
                    (StatusCode::TOO_MANY_REQUESTS, "invalid_client") => "throttled",
                    (StatusCode::TOO_MANY_REQUESTS, _) => "rate_limited",
                    (StatusCode::INTERNAL_SERVER_ERROR, _) => "server_error",
                    (_, error) => error,
                };
                self.metrics
                    .tokens_refused
                    .get_or_create(&ReasonLabel { reason })
                    .inc();
                e.into_response()
            }
        }
    }

    /// Client id and secret: looks the client up, lets [`issue`] decide,
    /// then signs and records the use. The secret is checked before the
    /// throttle is asked: behind a proxy every client shares one address,
    /// and a right secret (256 bits) must never be refused for what others
    /// got wrong there. The throttle answers only failures.
    fn by_secret(
        &self,
        request: TokenRequest,
        authorization: Option<&str>,
        source: IpAddr,
        now: Timestamp,
    ) -> Result<Response, OAuthError> {
        let request = client_request(request, authorization, &self.settings.audience)?;
        // Anything but our form is no client of ours: refused before any
        // state is kept about it.
        let Some(client) = parse_client_id(&request.client_id) else {
            return Err(OAuthError::invalid_client(request.basic));
        };
        let clock = Instant::now();
        let ring = self.keys.ring();
        let hasher = ring.hasher().ok_or_else(server_error)?;
        // Hashed before the lookup: an unknown client costs what a wrong
        // secret costs.
        let presented = hasher.hash(&request.client_id, request.client_secret.as_bytes());
        let entry = self.index.lookup(&request.client_id);
        let jti = new_jti().map_err(|_| server_error())?;
        let claims = issue(
            entry.as_deref(),
            &presented,
            &request,
            &self.settings,
            now,
            jti,
        )
        .map_err(|e| self.failed(e, client, source, clock))?;
        let entry = entry.ok_or_else(server_error)?;
        self.grant(&ring, &entry, &claims, clock, now)
    }

    /// A ServiceAccount token as client assertion: its unverified claims
    /// pick the credential (refused at once when none names the account),
    /// then its signature is checked against the cluster's keys and the
    /// API server reviews it. As with secrets, a valid assertion is never
    /// refused for failures; the access token ends when the assertion does.
    async fn by_assertion(
        &self,
        request: TokenRequest,
        authorization: Option<&str>,
        source: IpAddr,
        now: Timestamp,
    ) -> Result<Response, OAuthError> {
        let request = assertion_request(request, authorization, &self.settings.audience)?;
        let refused = || OAuthError::invalid_client(false);
        let claimed = assertion::claimed(&request.assertion, self.reviewer.audience(), now)
            .ok_or_else(refused)?;
        let named = self
            .index
            .by_service_account(&claimed.namespace, &claimed.account);
        let entry = match &request.client_id {
            Some(id) => named.iter().find(|e| e.client_id == *id),
            None => named.first(),
        }
        .cloned()
        .ok_or_else(refused)?;
        let client = parse_client_id(&entry.client_id).ok_or_else(refused)?;
        let clock = Instant::now();
        match self.reviewer.verify(&request.assertion, &claimed).await {
            Ok(true) => {}
            Ok(false) => return Err(self.failed(refused(), client, source, clock)),
            Err(e) => {
                warn!(error = %e, "could not verify a ServiceAccount token");
                return Err(OAuthError {
                    retry_after: Some(Duration::from_secs(1)),
                    ..OAuthError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "temporarily_unavailable",
                        "The ServiceAccount token could not be verified now; retry",
                    )
                });
            }
        }
        if request.client_id.is_none() && named.len() > 1 {
            return Err(OAuthError::invalid_request(
                "Several credentials name this ServiceAccount; send client_id to choose one",
            ));
        }
        let jti = new_jti().map_err(|_| server_error())?;
        let sid = service_account_sid(&claimed.account);
        let mut claims = claims(
            &entry,
            request.scope.as_deref(),
            sid,
            &self.settings,
            now,
            jti,
        )?;
        // Never past the assertion: not past the pod, the account or the
        // token the kubelet would have replaced.
        claims.exp = claims.exp.min(claimed.expires);
        self.grant(&self.keys.ring(), &entry, &claims, clock, now)
    }

    /// What a failed authentication of `client` from `source` answers:
    /// `e`, counted, or 429 once the pair has failed too often. Other
    /// errors pass unchanged.
    fn failed(&self, e: OAuthError, client: u128, source: IpAddr, clock: Instant) -> OAuthError {
        if e.error != "invalid_client" {
            return e;
        }
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

    /// An authenticated client's token: counts it against the client's
    /// allowance, signs it with `ring` (the key ring the request was
    /// checked with) and records the use.
    fn grant(
        &self,
        ring: &KeyRing,
        entry: &CredentialEntry,
        claims: &AccessClaims,
        clock: Instant,
        now: Timestamp,
    ) -> Result<Response, OAuthError> {
        // Counted only once the client authenticated: client ids are
        // public, and a stranger must not spend an owner's allowance.
        if let Err(wait) = self.issuance.take(&entry.client_id, clock) {
            return Err(OAuthError {
                retry_after: Some(wait),
                ..OAuthError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "invalid_request",
                    "Too many tokens issued to this client; reuse the last one until it expires",
                )
            });
        }
        let key = ring.signer(now).ok_or_else(server_error)?;
        let payload = serde_json::to_vec(claims).map_err(|_| server_error())?;
        let token = key.sign(&payload).map_err(|_| server_error())?;
        self.usage.record(entry);

        let body = token_body(&token, claims.exp - claims.iat, &claims.scope);
        let mut response = Response::new(body.into());
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        no_store(headers);
        Ok(response)
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
        // Only what is implemented: no authorization endpoint (so no
        // response types), no JWT client authentication.
        warp::reply::json(&json!({
            "issuer": self.settings.issuer,
            "token_endpoint": self.token_url,
            "jwks_uri": self.jwks_url,
            "grant_types_supported": ["client_credentials"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
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
    fn the_token_body_is_the_json_a_serializer_writes() {
        let token = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJjaV8xIn0.c2ln-_0";
        for scope in ["*", "requirement:read persona:write", "a\"b\\c\u{7}"] {
            let body: serde_json::Value =
                serde_json::from_slice(&token_body(token, 86_400, scope)).unwrap();
            assert_eq!(
                body,
                json!({"access_token": token, "token_type": "Bearer", "expires_in": 86_400, "scope": scope})
            );
        }
    }

    #[test]
    fn parses_json_and_form_bodies_alike() {
        let json = br#"{"client_id":"ci_1","client_secret":"s","audience":"a","grant_type":"client_credentials","extra":1}"#;
        let form =
            b"client_id=ci_1&client_secret=s&audience=a&grant_type=client_credentials&extra=1";
        let want = TokenRequest {
            grant_type: Some("client_credentials".into()),
            client_id: Some("ci_1".into()),
            client_secret: Some("s".into()),
            audience: Some("a".into()),
            scope: None,
            ..Default::default()
        };
        assert_eq!(parse_body(Some("application/json"), json).unwrap(), want);
        assert_eq!(
            parse_body(
                Some("application/x-www-form-urlencoded; charset=UTF-8"),
                form
            )
            .unwrap(),
            want
        );
    }

    #[test]
    fn rejects_bad_bodies_with_oauth_errors() {
        let status = |ct: Option<&str>, body: &[u8]| parse_body(ct, body).unwrap_err().status;
        assert_eq!(
            status(Some("text/plain"), b"x"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
        assert_eq!(status(None, b"x"), StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert_eq!(
            status(Some("application/json"), b"{"),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            status(Some("application/json"), b"[]"),
            StatusCode::BAD_REQUEST
        );
        let e = parse_body(Some("application/json"), br#"{"client_id":7}"#).unwrap_err();
        assert_eq!(e.description, "Parameter client_id must be a string");
        let e = parse_body(
            Some("application/x-www-form-urlencoded"),
            b"client_id=a&client_id=b",
        )
        .unwrap_err();
        assert_eq!(
            (e.error, e.description.as_str()),
            ("invalid_request", "Parameter client_id is repeated")
        );
    }

    #[test]
    fn json_members_are_read_once_and_as_strings() {
        let json = |body: &str| parse_body(Some("application/json"), body.as_bytes());
        let described = |body: &str| json(body).unwrap_err().description;
        assert_eq!(
            described(r#"{"client_id":"a","client_id":"b"}"#),
            "Parameter client_id is repeated"
        );
        assert_eq!(
            described(r#"{"scope":null,"scope":"x"}"#),
            "Parameter scope is repeated"
        );
        assert_eq!(
            described(r#"{"client_id":{"nested":[1,2]}}"#),
            "Parameter client_id must be a string"
        );
        assert_eq!(
            described(r#"{"client_id":"a""#),
            "The JSON body is malformed"
        );
        assert_eq!(described(r#""text""#), "The JSON body must be an object");
        // Unknown members may repeat and hold anything.
        let r = json(r#"{"x":1,"x":[{}],"client_id":"a","client_secret":null}"#).unwrap();
        assert_eq!(r.client_id.as_deref(), Some("a"));
        assert_eq!(r.client_secret, None);
    }

    #[test]
    fn basic_credentials_are_form_decoded() {
        let header = format!("Basic {}", STANDARD.encode("ci_1:a%2Bb%3Ac"));
        assert_eq!(
            parse_basic(&header).unwrap(),
            ("ci_1".into(), "a+b:c".into())
        );
        assert_eq!(
            parse_basic(&format!("basic {}", STANDARD.encode("x:y"))).unwrap(),
            ("x".into(), "y".into())
        );
        for bad in [
            "Bearer abc",
            "Basic !!!",
            "Basic",
            &format!("Basic {}", STANDARD.encode("nocolon")),
        ] {
            let e = parse_basic(bad).unwrap_err();
            assert!(e.basic_challenge && e.error == "invalid_request", "{bad}");
        }
    }

    fn request(id: &str, scope: Option<&str>) -> ClientRequest {
        ClientRequest {
            client_id: id.into(),
            client_secret: "s".into(),
            scope: scope.map(str::to_owned),
            basic: false,
        }
    }

    #[test]
    fn requests_name_one_client_for_our_audience() {
        let parsed = |body: &str| {
            parse_body(Some("application/x-www-form-urlencoded"), body.as_bytes()).unwrap()
        };
        let error = |body: &str, authorization: Option<&str>| {
            client_request(parsed(body), authorization, "aud")
                .unwrap_err()
                .error
        };
        assert_eq!(
            error("client_id=a&client_secret=s", None),
            "invalid_request"
        );
        assert_eq!(error("grant_type=password", None), "unsupported_grant_type");
        assert_eq!(
            error("grant_type=client_credentials&audience=other", None),
            "invalid_target"
        );
        assert_eq!(
            error("grant_type=client_credentials&client_id=a", None),
            "invalid_client"
        );
        let basic = format!("Basic {}", STANDARD.encode("a:s"));
        let both = client_request(
            parsed("grant_type=client_credentials&client_id=a"),
            Some(&basic),
            "aud",
        )
        .unwrap_err();
        assert!(both.basic_challenge && both.error == "invalid_request");
        assert_eq!(
            client_request(
                parsed("grant_type=client_credentials&audience=aud&scope=x"),
                Some(&basic),
                "aud"
            ),
            Ok(ClientRequest {
                client_id: "a".into(),
                client_secret: "s".into(),
                scope: Some("x".into()),
                basic: true,
            })
        );
    }

    #[test]
    fn issue_decides_from_the_credential_alone() {
        use crate::secret::SecretHasher;
        let hasher = SecretHasher::new(&[3; 32]);
        let id = "ci_0f1e2d3c4b5a69788695a4b3c2d1e0f9";
        let (current, previous) = (hasher.hash(id, b"new"), hasher.hash(id, b"old"));
        let at = |s: i64| Timestamp::from_second(1_800_000_000 + s).unwrap();
        let entry = CredentialEntry {
            client_id: id.into(),
            namespace: "org".into(),
            name: "ci".into(),
            uid: "u".into(),
            scopes: vec!["*:read".into(), "requirement:write".into()],
            revoked: false,
            current: Some(current),
            previous: Some((previous, at(100))),
            rotation_counter: 4,
            token_lifetime: Some(Duration::from_secs(3600)),
            phase: crate::crd::Phase::Active,
            last_used_at: None,
            unused: false,
            service_accounts: vec![],
        };
        let settings = TokenSettings {
            issuer: "https://catalio.ai".into(),
            audience: "aud".into(),
            default_lifetime: Duration::from_secs(86_400),
        };
        let decide = |entry: Option<&CredentialEntry>, hash: &SecretHash, scope, now| {
            issue(
                entry,
                hash,
                &request(id, scope),
                &settings,
                now,
                "jti".into(),
            )
        };
        let claims = decide(Some(&entry), &current, None, at(0)).unwrap();
        assert_eq!(
            (
                claims.sub.as_str(),
                claims.client_id.as_str(),
                claims.org.as_str()
            ),
            (id, id, "org")
        );
        assert_eq!(claims.scope, "*:read requirement:write");
        assert_eq!(
            (claims.iat, claims.nbf, claims.exp),
            (1_800_000_000, 1_800_000_000, 1_800_003_600)
        );
        assert_eq!(
            (claims.rot, claims.sid.as_str()),
            (4, current.short_id().as_str())
        );
        assert_eq!(
            (
                claims.iss.as_str(),
                claims.aud.as_str(),
                claims.jti.as_str()
            ),
            ("https://catalio.ai", "aud", "jti")
        );
        // The previous secret during its grace period, bound to itself.
        let claims = decide(Some(&entry), &previous, Some("persona:read"), at(99)).unwrap();
        assert_eq!(
            (claims.sid, claims.scope),
            (previous.short_id(), "persona:read".into())
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
            assert_eq!(
                decide(entry, hash, None, now).unwrap_err(),
                OAuthError::invalid_client(false)
            );
        }
        // Scopes beyond the credential's; the server's lifetime by default.
        let e = decide(Some(&entry), &current, Some("persona:write"), at(0)).unwrap_err();
        assert_eq!(
            (e.status, e.error),
            (StatusCode::BAD_REQUEST, "invalid_scope")
        );
        let default = CredentialEntry {
            token_lifetime: None,
            ..entry.clone()
        };
        let claims = decide(Some(&default), &current, None, at(0)).unwrap();
        assert_eq!(claims.exp - claims.iat, 86_400);
    }

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
