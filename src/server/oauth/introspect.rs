//! `POST /oauth/introspect` (RFC 7662): whether a token is active, as the
//! JSON:API would decide now (signature, expiry, the credential's secret or
//! account still working, not rotated, narrowed or revoked away, the token
//! itself not revoked), and what it may do: its scopes as issued,
//! intersected with the credential's current ones.
//!
//! A credential may introspect its own organization's tokens when its spec
//! says `introspection: true`; the ServiceAccounts the cluster administrator
//! names (`--introspectors`) may introspect every organization's. Anyone
//! else who authenticates learns `active: false` for every token, so no
//! answer tells a valid token from an invalid one. With `Accept:
//! application/token-introspection+jwt` the answer is a JWT signed with our
//! key (RFC 9701).

use jiff::Timestamp;
use serde::Serialize;
use warp::http::{HeaderValue, StatusCode, header};
use warp::reply::Response;

use super::client::Client;
use super::params::TokenRequest;
use super::{Call, OAuthError, TokenService, no_store, server_error};
use crate::audit::Event;
use crate::scope;
use crate::token::{Confirmation, Verified};

/// The media type of a signed answer (RFC 9701).
pub const JWT_RESPONSE: &str = "application/token-introspection+jwt";

/// An active token's introspection (RFC 7662 section 2.2), ours: `org`.
#[derive(Serialize, Debug, PartialEq)]
pub struct Active {
    pub active: bool,
    pub scope: String,
    pub client_id: String,
    pub sub: String,
    pub aud: String,
    pub iss: String,
    pub exp: i64,
    pub iat: i64,
    pub nbf: i64,
    pub jti: String,
    pub token_type: &'static str,
    pub org: String,
    /// The key a DPoP-bound token is bound to (RFC 9449 section 6.2).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cnf: Option<Confirmation>,
}

impl Active {
    fn of(verified: &Verified) -> Self {
        let c = &verified.claims;
        let issued: Vec<&str> = c.scopes().collect();
        Self {
            active: true,
            scope: scope::effective(&issued, &verified.credential.scopes).join(" "),
            client_id: c.client_id.clone(),
            sub: c.sub.clone(),
            aud: c.aud.clone(),
            iss: c.iss.clone(),
            exp: c.exp,
            iat: c.iat,
            nbf: c.nbf,
            jti: c.jti.clone(),
            token_type: if c.cnf.is_some() { "DPoP" } else { "Bearer" },
            org: c.org.clone(),
            cnf: c.cnf.clone(),
        }
    }
}

/// Whether `caller` may learn about tokens of organization `org`.
pub fn may_introspect(caller: &Client, org: &str) -> bool {
    match caller {
        Client::Introspector(_) => true,
        Client::Credential(a) => a.entry.introspection && a.entry.namespace == org,
    }
}

/// Whether the caller asks for the signed answer.
pub fn wants_jwt(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| {
        a.split(',')
            .filter_map(|m| m.split(';').next())
            .any(|m| m.trim().eq_ignore_ascii_case(JWT_RESPONSE))
    })
}

impl TokenService {
    pub(super) async fn introspect(
        &self,
        request: TokenRequest,
        call: &Call<'_>,
        now: Timestamp,
    ) -> Result<Response, OAuthError> {
        let caller = self.authenticate(&request, call, now, true).await?;
        let Some(token) = request.token.as_deref().filter(|t| !t.is_empty()) else {
            return Err(OAuthError::invalid_request("Missing token"));
        };
        let active = self
            .verifier
            .verify(token, now)
            .ok()
            .filter(|v| may_introspect(&caller, &v.claims.org))
            .map(|v| Active::of(&v));
        self.counted_introspection(active.is_some());
        self.audit.record(Event::Introspection {
            caller: caller.name(),
            active: active.is_some(),
            org: active.as_ref().map(|a| a.org.as_str()),
            client_id: active.as_ref().map(|a| a.client_id.as_str()),
            jti: active.as_ref().map(|a| a.jti.as_str()),
            source: call.source,
        });
        let body = match &active {
            Some(active) => serde_json::to_value(active).map_err(|_| server_error())?,
            None => serde_json::json!({"active": false}),
        };
        match wants_jwt(call.accept) {
            true => self.signed_answer(&caller, body, now),
            false => Ok(answer(
                "application/json",
                serde_json::to_vec(&body).unwrap_or_default(),
            )),
        }
    }

    /// RFC 9701: the answer as a JWT our key signs, for the caller.
    fn signed_answer(
        &self,
        caller: &Client,
        introspection: serde_json::Value,
        now: Timestamp,
    ) -> Result<Response, OAuthError> {
        let claims = serde_json::json!({
            "iss": self.settings.issuer,
            "aud": caller.name(),
            "iat": now.as_second(),
            "token_introspection": introspection,
        });
        let ring = self.keys.ring();
        let key = ring.signer(now).ok_or_else(server_error)?;
        let jwt = key
            .sign_as("token-introspection+jwt", claims.to_string().as_bytes())
            .map_err(|_| server_error())?;
        Ok(answer(JWT_RESPONSE, jwt.into_bytes()))
    }

    fn counted_introspection(&self, active: bool) {
        let result = if active { "active" } else { "inactive" };
        self.metrics
            .introspections
            .get_or_create(&crate::metrics::ResultLabel { result })
            .inc();
    }
}

fn answer(content_type: &'static str, body: Vec<u8>) -> Response {
    let mut response = Response::new(body.into());
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    no_store(headers);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signed_answer_is_asked_for_by_media_type() {
        assert!(wants_jwt(Some(JWT_RESPONSE)));
        assert!(wants_jwt(Some(
            "application/json;q=0.5, Application/Token-Introspection+JWT"
        )));
        assert!(!wants_jwt(Some("application/json")));
        assert!(!wants_jwt(None));
    }
}
