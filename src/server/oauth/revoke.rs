//! `POST /oauth/revoke` (RFC 7009): a client revokes one of its own access
//! tokens. Revoking another client's token, or one that is not ours or no
//! longer active, answers 200 and changes nothing, as the RFC says.
//!
//! A revoked token's id goes where every replica already looks: its
//! credential's status (`revokedTokens`, each kept until the token would
//! have expired), which every replica's credential watch brings in within
//! moments, and which a restarted replica lists again. The list is bounded:
//! at [`MAX_REVOKED`] live entries, revoking one more revokes every token of
//! the credential issued until then (`revokedTokensBefore`) and the list
//! starts over, so a client that revokes without end only makes itself
//! fetch new tokens.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use tracing::warn;
use warp::http::StatusCode;
use warp::reply::Response;

use super::client::Client;
use super::params::TokenRequest;
use super::{Call, OAuthError, TokenService, no_store};
use crate::audit::Event;
use crate::crd::{ApiCredential, RevokedToken};
use crate::index::CredentialEntry;
use crate::token::AccessClaims;

/// Live revoked tokens kept per credential.
pub const MAX_REVOKED: usize = 100;
/// Field manager of the servers' writes of revoked tokens.
pub const REVOCATION_MANAGER: &str = "catalio-operator-revocations";
/// Writes tried when the credential keeps changing underneath.
const ATTEMPTS: usize = 5;

/// A credential's revoked tokens once `jti` (expiring at `exp`) is added
/// at `now`: expired entries go; at the bound, the list starts over and
/// every token issued until `now` is revoked instead.
pub fn with_revoked(
    list: &[RevokedToken],
    before: Option<&Time>,
    jti: &str,
    exp: i64,
    now: Timestamp,
) -> (Vec<RevokedToken>, Option<Time>) {
    let live = |t: &&RevokedToken| t.expires_at.0 > now;
    let mut kept: Vec<RevokedToken> = list.iter().filter(live).cloned().collect();
    if kept.iter().any(|t| t.jti == jti) {
        return (kept, before.cloned());
    }
    if kept.len() >= MAX_REVOKED {
        return (Vec::new(), Some(Time(now)));
    }
    let expires_at = Timestamp::from_second(exp).unwrap_or(Timestamp::MAX);
    kept.push(RevokedToken {
        jti: jti.to_owned(),
        expires_at: Time(expires_at),
    });
    (kept, before.cloned())
}

impl TokenService {
    pub(super) async fn revoke(
        &self,
        request: TokenRequest,
        call: &Call<'_>,
        now: Timestamp,
    ) -> Result<Response, OAuthError> {
        let caller = self.authenticate(&request, call, now, false).await?;
        let Some(token) = request.token.as_deref().filter(|t| !t.is_empty()) else {
            return Err(OAuthError::invalid_request("Missing token"));
        };
        // Only an active token of the caller's own changes anything.
        let own = match &caller {
            Client::Credential(a) => self
                .verifier
                .verify(token, now)
                .ok()
                .filter(|v| v.claims.client_id == a.entry.client_id),
            Client::Introspector(_) => None,
        };
        if let Some(verified) = &own {
            // Boxed: a write to the API server is a 3.4 KiB future, and
            // every OAuth request's future would be as large.
            Box::pin(self.write_revoked(&verified.credential, &verified.claims, now)).await?;
        }
        let result = if own.is_some() {
            "revoked"
        } else {
            "unchanged"
        };
        self.metrics
            .revocations
            .get_or_create(&crate::metrics::ResultLabel { result })
            .inc();
        self.audit.record(Event::Revocation {
            caller: caller.name(),
            revoked: own.is_some(),
            jti: own.as_ref().map(|v| v.claims.jti.as_str()),
            source: call.source,
        });
        let mut response = Response::new(Vec::new().into());
        no_store(response.headers_mut());
        Ok(response)
    }

    /// Adds the token to its credential's status at the version read
    /// (reading again on a conflict), and to this replica's index at once.
    async fn write_revoked(
        &self,
        credential: &CredentialEntry,
        claims: &AccessClaims,
        now: Timestamp,
    ) -> Result<(), OAuthError> {
        let api = Api::<ApiCredential>::namespaced(self.client.clone(), &credential.namespace);
        let params = PatchParams {
            field_manager: Some(REVOCATION_MANAGER.to_owned()),
            ..Default::default()
        };
        for _ in 0..ATTEMPTS {
            // The object, not its status subresource: the servers may get
            // credentials, and only patch their status.
            let current = api
                .get(&credential.name)
                .await
                .map_err(|e| unavailable(&e))?;
            if current.metadata.uid.as_deref() != Some(credential.uid.as_str()) {
                // Deleted and made anew: the token's credential is gone.
                return Ok(());
            }
            let status = current.status.unwrap_or_default();
            let (list, before) = with_revoked(
                &status.revoked_tokens,
                status.revoked_tokens_before.as_ref(),
                &claims.jti,
                claims.exp,
                now,
            );
            let patch = json!({
                "metadata": {"resourceVersion": current.metadata.resource_version},
                "status": {"revokedTokens": list, "revokedTokensBefore": before},
            });
            match api
                .patch_status(&credential.name, &params, &Patch::Merge(&patch))
                .await
            {
                Ok(written) => {
                    self.index.upsert(&written);
                    return Ok(());
                }
                Err(kube::Error::Api(s)) if s.code == 409 => continue,
                Err(e) => return Err(unavailable(&e)),
            }
        }
        Err(unavailable(&kube::Error::Service(
            "the credential kept changing".into(),
        )))
    }
}

/// RFC 7009 section 2.2.1: the revocation could not be made now.
fn unavailable(e: &kube::Error) -> OAuthError {
    warn!(error = %e, "recording a revoked token failed");
    OAuthError {
        retry_after: Some(std::time::Duration::from_secs(1)),
        ..OAuthError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "The token could not be revoked now; retry",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    fn entry(jti: &str, exp: i64) -> RevokedToken {
        RevokedToken {
            jti: jti.into(),
            expires_at: Time(at(exp)),
        }
    }

    #[test]
    fn revoked_tokens_are_kept_until_they_expire_and_bounded() {
        let exp = 1_800_000_000 + 600;
        let (list, before) = with_revoked(&[entry("old", 10)], None, "a", exp, at(20));
        assert_eq!(list, [entry("a", 600)], "the expired entry went");
        assert_eq!(before, None);
        let (again, _) = with_revoked(&list, None, "a", exp, at(30));
        assert_eq!(again, list, "a token is listed once");
        // Full: every token issued until now is revoked, the list is new.
        let full: Vec<RevokedToken> = (0..MAX_REVOKED)
            .map(|i| entry(&format!("t{i}"), 600))
            .collect();
        let (list, before) = with_revoked(&full, None, "one-more", exp, at(40));
        assert!(list.is_empty());
        assert_eq!(before, Some(Time(at(40))));
        let kept = Some(Time(at(1)));
        let (_, before) = with_revoked(&[], kept.as_ref(), "b", exp, at(50));
        assert_eq!(before, kept);
    }

    #[test]
    fn a_revocation_records_the_token_id_and_nothing_else() {
        // What goes into the status is the jti and the expiry, never the
        // token.
        let (list, _) = with_revoked(&[], None, "jti-1", 1_800_000_600, at(0));
        let json = serde_json::to_string(&list).unwrap();
        assert_eq!(
            json,
            r#"[{"jti":"jti-1","expiresAt":"2027-01-15T08:10:00Z"}]"#
        );
    }
}
