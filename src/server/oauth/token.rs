//! `POST /oauth/token`: RFC 6749 section 4.4, the client credentials grant.
//! The grant's checks, the client's authentication, the claims decided
//! without I/O from the credential alone, then the signature.

use std::time::{Duration, Instant};

use jiff::Timestamp;
use warp::http::{HeaderValue, StatusCode, header};
use warp::reply::Response;

use super::client::{Authenticated, Client};
use super::params::TokenRequest;
use super::{Call, OAuthError, TokenService, no_store, server_error};
use crate::audit::Event;
use crate::index::CredentialEntry;
use crate::scope;
use crate::token::dpop::{self, ProofError};
use crate::token::{AccessClaims, Confirmation, new_jti};

/// What every token carries besides its client's part.
#[derive(Clone, Debug)]
pub struct TokenSettings {
    pub issuer: String,
    pub audience: String,
    /// Unless the credential sets its own.
    pub default_lifetime: Duration,
}

/// The grant type and audience every token request must get right.
pub fn check_grant(request: &TokenRequest, audience: &str) -> Result<(), OAuthError> {
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

/// The claims of a token for `client`'s credential, narrowed to the
/// `scope` asked for and bound to what it authenticated with (the secret,
/// or the ServiceAccount); never past an assertion's expiry. No I/O.
pub fn claims(
    client: &Authenticated,
    scope: Option<&str>,
    settings: &TokenSettings,
    now: Timestamp,
    jti: String,
) -> Result<AccessClaims, OAuthError> {
    let entry: &CredentialEntry = &client.entry;
    let granted = scope::narrow(&entry.scopes, scope)
        .map_err(|e| OAuthError::new(StatusCode::BAD_REQUEST, "invalid_scope", e.to_string()))?;
    let lifetime = entry.token_lifetime.unwrap_or(settings.default_lifetime);
    let iat = now.as_second();
    let exp = iat + lifetime.as_secs() as i64;
    Ok(AccessClaims {
        iss: settings.issuer.clone(),
        aud: settings.audience.clone(),
        sub: entry.client_id.clone(),
        client_id: entry.client_id.clone(),
        org: entry.namespace.clone(),
        scope: granted.join(" "),
        iat,
        nbf: iat,
        // Never past the assertion: not past the pod, the account or the
        // token the kubelet would have replaced.
        exp: client.expires.map_or(exp, |limit| exp.min(limit)),
        jti,
        rot: entry.rotation_counter,
        sid: client.sid.clone(),
        cnf: None,
    })
}

/// The body of a successful token response (RFC 6749 §5.1), written
/// directly: no JSON tree on the hot path. The token is a compact JWS,
/// base64url segments joined by dots, which JSON never escapes, so it is
/// copied as it is; the scope is escaped like any string.
fn token_body(token: &str, token_type: &str, expires_in: i64, scope: &str) -> Vec<u8> {
    debug_assert!(
        token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    );
    let mut body = Vec::with_capacity(token.len() + scope.len() + 96);
    body.extend_from_slice(br#"{"access_token":""#);
    body.extend_from_slice(token.as_bytes());
    body.extend_from_slice(br#"","token_type":""#);
    body.extend_from_slice(token_type.as_bytes());
    body.extend_from_slice(br#"","expires_in":"#);
    body.extend_from_slice(expires_in.to_string().as_bytes());
    body.extend_from_slice(br#","scope":"#);
    // Writing a &str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut body, scope);
    body.push(b'}');
    body
}

/// RFC 9449 section 5: a token request whose proof is wrong or missing.
fn invalid_dpop_proof(description: impl Into<String>) -> OAuthError {
    OAuthError::new(StatusCode::BAD_REQUEST, "invalid_dpop_proof", description)
}

impl TokenService {
    /// The thumbprint of the key a token request's DPoP proof binds the
    /// token to.
    fn dpop_key(&self, proof: &str, now: Timestamp) -> Result<String, OAuthError> {
        let url = self.token_url.as_str();
        match dpop::verify_once(&self.replays, proof, "POST", url, None, now) {
            Ok(proof) => Ok(proof.jkt),
            Err(ProofError::Busy) => Err(OAuthError {
                retry_after: Some(Duration::from_secs(1)),
                ..OAuthError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "temporarily_unavailable",
                    "Too many proofs in flight; retry",
                )
            }),
            Err(e) => Err(invalid_dpop_proof(format!(
                "The DPoP proof is invalid: {e}"
            ))),
        }
    }

    /// A token request: the grant, the client, then the token.
    pub(super) async fn token(
        &self,
        request: TokenRequest,
        call: &Call<'_>,
        now: Timestamp,
    ) -> Result<Response, OAuthError> {
        check_grant(&request, &self.settings.audience)?;
        // The proof first: it needs no credential.
        let bound = match call.dpop {
            Some(proof) => Some(self.dpop_key(proof, now)?),
            None => None,
        };
        let Client::Credential(client) = self.authenticate(&request, call, now, false).await?
        else {
            return Err(OAuthError::invalid_client(false));
        };
        if client.entry.dpop && bound.is_none() {
            return Err(invalid_dpop_proof(
                "This client's tokens are bound to a key: send a DPoP proof",
            ));
        }
        let jti = new_jti().map_err(|_| server_error())?;
        let mut claims = claims(&client, request.scope.as_deref(), &self.settings, now, jti)?;
        claims.cnf = bound.map(|jkt| Confirmation { jkt });
        let response = self.grant(&client.entry, &claims, now).await?;
        self.audit.record(Event::TokenIssued {
            org: &claims.org,
            credential: &client.entry.name,
            client_id: &claims.client_id,
            sid: &claims.sid,
            jti: &claims.jti,
            scope: &claims.scope,
            lifetime: claims.exp - claims.iat,
            method: client.method.as_str(),
            source: call.source,
            user_agent: call.user_agent,
        });
        Ok(response)
    }

    /// An authenticated client's token: counts it against the client's
    /// allowance, signs it (in a batch) and records the use.
    async fn grant(
        &self,
        entry: &CredentialEntry,
        claims: &AccessClaims,
        now: Timestamp,
    ) -> Result<Response, OAuthError> {
        // Counted only once the client authenticated: client ids are
        // public, and a stranger must not spend an owner's allowance.
        if let Err(wait) = self.issuance.take(&entry.client_id, Instant::now()) {
            return Err(OAuthError {
                retry_after: Some(wait),
                ..OAuthError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "invalid_request",
                    "Too many tokens issued to this client; reuse the last one until it expires",
                )
            });
        }
        let ring = self.keys.ring();
        let key = ring.signer(now).ok_or_else(server_error)?.clone();
        let payload = serde_json::to_vec(claims).map_err(|_| server_error())?;
        let token = self
            .signer
            .sign(key, payload)
            .await
            .map_err(|_| server_error())?;
        self.usage.record(entry);

        let token_type = if claims.cnf.is_some() {
            "DPoP"
        } else {
            "Bearer"
        };
        let body = token_body(&token, token_type, claims.exp - claims.iat, &claims.scope);
        let mut response = Response::new(body.into());
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        no_store(headers);
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::oauth::client::Method;
    use serde_json::json;

    #[test]
    fn the_token_body_is_the_json_a_serializer_writes() {
        let token = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJjaV8xIn0.c2ln-_0";
        for scope in ["*", "requirement:read persona:write", "a\"b\\c\u{7}"] {
            let body: serde_json::Value =
                serde_json::from_slice(&token_body(token, "Bearer", 86_400, scope)).unwrap();
            assert_eq!(
                body,
                json!({"access_token": token, "token_type": "Bearer", "expires_in": 86_400, "scope": scope})
            );
        }
    }

    #[test]
    fn grants_are_checked_before_any_client() {
        let parsed = |body: &str| {
            super::super::params::parse_body(
                Some("application/x-www-form-urlencoded"),
                body.as_bytes(),
            )
            .unwrap()
        };
        let error = |body: &str| check_grant(&parsed(body), "aud").unwrap_err().error;
        assert_eq!(error("client_id=a&client_secret=s"), "invalid_request");
        assert_eq!(error("grant_type=password"), "unsupported_grant_type");
        assert_eq!(
            error("grant_type=client_credentials&audience=other"),
            "invalid_target"
        );
        assert!(check_grant(&parsed("grant_type=client_credentials&audience=aud"), "aud").is_ok());
        assert!(check_grant(&parsed("grant_type=client_credentials"), "aud").is_ok());
    }

    #[test]
    fn claims_come_from_the_credential_alone() {
        let id = "ci_0f1e2d3c4b5a69788695a4b3c2d1e0f9";
        let at = |s: i64| Timestamp::from_second(1_800_000_000 + s).unwrap();
        let entry = CredentialEntry {
            scopes: vec!["*:read".into(), "requirement:write".into()],
            rotation_counter: 4,
            token_lifetime: Some(Duration::from_secs(3600)),
            ..CredentialEntry::example(id)
        };
        let settings = TokenSettings {
            issuer: "https://catalio.ai".into(),
            audience: "aud".into(),
            default_lifetime: Duration::from_secs(86_400),
        };
        let client = |entry: &CredentialEntry, expires| Authenticated {
            entry: std::sync::Arc::new(entry.clone()),
            sid: "s1".into(),
            method: Method::ClientSecretPost,
            expires,
        };
        let decide = |entry: &CredentialEntry, scope, expires| {
            claims(
                &client(entry, expires),
                scope,
                &settings,
                at(0),
                "jti".into(),
            )
        };
        let c = decide(&entry, None, None).unwrap();
        assert_eq!(
            (c.sub.as_str(), c.client_id.as_str(), c.org.as_str()),
            (id, id, "org")
        );
        assert_eq!(c.scope, "*:read requirement:write");
        assert_eq!(
            (c.iat, c.nbf, c.exp),
            (1_800_000_000, 1_800_000_000, 1_800_003_600)
        );
        assert_eq!((c.rot, c.sid.as_str()), (4, "s1"));
        assert_eq!(
            (c.iss.as_str(), c.aud.as_str(), c.jti.as_str()),
            ("https://catalio.ai", "aud", "jti")
        );
        assert_eq!(
            decide(&entry, Some("persona:read"), None).unwrap().scope,
            "persona:read"
        );
        // An assertion that ends sooner ends the token; one that ends later
        // does not lengthen it.
        assert_eq!(
            decide(&entry, None, Some(1_800_000_600)).unwrap().exp,
            1_800_000_600
        );
        assert_eq!(
            decide(&entry, None, Some(1_900_000_000)).unwrap().exp,
            1_800_003_600
        );
        // Scopes beyond the credential's; the server's lifetime by default.
        let e = decide(&entry, Some("persona:write"), None).unwrap_err();
        assert_eq!(
            (e.status, e.error),
            (StatusCode::BAD_REQUEST, "invalid_scope")
        );
        let default = CredentialEntry {
            token_lifetime: None,
            ..entry.clone()
        };
        let c = decide(&default, None, None).unwrap();
        assert_eq!(c.exp - c.iat, 86_400);
    }
}
