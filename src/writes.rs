//! The JSON:API's writes, made to the API server, which validates them
//! against the CRD schemas: create, merge patch and to-many edits, each
//! answering the object as stored; and the API server's refusals mapped to
//! JSON:API problems. Implements [`Writes`] for the HTTP handlers.

use http::StatusCode;
use http::header;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ObjectMeta, TypeMeta};
use serde_json::{Map, Value, json};
use std::time::Duration;
use tracing::{error, warn};

use crate::api::error::{ErrorObject, Problem};
use crate::api::input;
use crate::api::store::{Edit, Entry, Writes};
use crate::crd::GROUP;
use crate::crd::registry::ResourceType;

/// Field manager of the API's writes, as `kubectl get --show-managed-fields`
/// shows it.
pub const FIELD_MANAGER: &str = "catalio-operator-api";
const VERSION: &str = "v1";
/// Reads and writes of a to-many relationship's members before giving up
/// to concurrent writers.
const EDIT_ATTEMPTS: usize = 5;

/// The Kubernetes resource of a type, for dynamic clients and watches.
pub fn api_resource(ty: &ResourceType) -> ApiResource {
    ApiResource {
        group: GROUP.to_owned(),
        version: VERSION.to_owned(),
        api_version: format!("{GROUP}/{VERSION}"),
        kind: ty.kind.to_owned(),
        plural: ty.plural.to_owned(),
    }
}

/// A new object name: a lowercase UUID version 4.
pub fn new_id() -> Result<String, getrandom::Error> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b)?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    ))
}

/// How long a JSON:API write waits for the API server. Without its storage
/// the API server answers only after a minute; the client hears sooner
/// that it may retry.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// `call`, or a 503 to retry once [`WRITE_TIMEOUT`] has passed without an
/// answer (when the write may or may not have been applied).
async fn within<T>(
    call: impl Future<Output = Result<T, kube::Error>>,
) -> Result<Result<T, kube::Error>, Problem> {
    tokio::time::timeout(WRITE_TIMEOUT, call).await.map_err(|_| {
        warn!(timeout = ?WRITE_TIMEOUT, "Kubernetes API server did not answer a write in time");
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "backend_unavailable",
            "the data store did not answer in time; the change may or may not have been made; retry later",
        )
        .with_header(header::RETRY_AFTER, "1")
    })
}

/// Writes with the operator's client.
#[derive(Clone)]
pub struct KubeWrites {
    pub client: kube::Client,
}

impl KubeWrites {
    fn api(&self, ty: &ResourceType, org: &str) -> kube::Api<DynamicObject> {
        kube::Api::namespaced_with(self.client.clone(), org, &api_resource(ty))
    }
}

/// The entry for what the API server returned.
fn stored(ty: &ResourceType, object: &DynamicObject) -> Result<Entry, Problem> {
    Entry::from_object(ty, object)
        .map(|(_, entry)| entry)
        .map_err(|e| {
            error!(error = %e, kind = ty.kind, "the API server returned an object the API cannot read");
            Problem::internal("the stored object could not be read")
        })
}

impl Writes for KubeWrites {
    async fn create(
        &self,
        ty: &'static ResourceType,
        org: &str,
        spec: Map<String, Value>,
    ) -> Result<Entry, Problem> {
        let name = new_id().map_err(|_| Problem::internal("no randomness available"))?;
        let object = DynamicObject {
            types: Some(TypeMeta {
                api_version: format!("{GROUP}/{VERSION}"),
                kind: ty.kind.to_owned(),
            }),
            metadata: ObjectMeta {
                name: Some(name),
                namespace: Some(org.to_owned()),
                ..ObjectMeta::default()
            },
            data: json!({ "spec": spec }),
        };
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PostParams::default()
        };
        let created = within(self.api(ty, org).create(&params, &object))
            .await?
            .map_err(|e| write_error(ty, e, false))?;
        stored(ty, &created)
    }

    async fn patch(
        &self,
        ty: &'static ResourceType,
        org: &str,
        id: &str,
        spec: Map<String, Value>,
        precondition: Option<String>,
    ) -> Result<Entry, Problem> {
        let mut patch = json!({ "spec": spec });
        if let Some(rv) = &precondition {
            patch["metadata"] = json!({ "resourceVersion": rv });
        }
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PatchParams::default()
        };
        let updated = within(self.api(ty, org).patch(id, &params, &Patch::Merge(&patch)))
            .await?
            .map_err(|e| match &e {
                kube::Error::Api(s) if s.code == 404 => Problem::not_found(ty.name, id),
                _ => write_error(ty, e, precondition.is_some()),
            })?;
        stored(ty, &updated)
    }

    /// Read from the API server, changed, and written back at the version
    /// read (or the client's `If-Match`), again if another write came
    /// between and the client named no version.
    async fn edit_members(
        &self,
        ty: &'static ResourceType,
        org: &str,
        id: &str,
        rel: usize,
        edit: Edit<'_>,
        precondition: Option<String>,
    ) -> Result<Entry, Problem> {
        let field = ty.relationships[rel].field;
        for _ in 0..EDIT_ATTEMPTS {
            let current = within(self.api(ty, org).get_opt(id))
                .await?
                .map_err(|e| write_error(ty, e, false))?
                .ok_or_else(|| Problem::not_found(ty.name, id))?;
            let mut members: Vec<String> = current.data["spec"][field]
                .as_array()
                .map(|names| {
                    names
                        .iter()
                        .filter_map(|n| n.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            edit.apply(&mut members);
            let changes = input::Changes {
                relationships: vec![(rel, members)],
                ..input::Changes::default()
            };
            let version = precondition
                .clone()
                .or_else(|| current.metadata.resource_version.clone());
            match self
                .patch(ty, org, id, changes.merge_patch(ty), version)
                .await
            {
                Err(p) if p.status == StatusCode::PRECONDITION_FAILED && precondition.is_none() => {
                    continue;
                }
                written => return written,
            }
        }
        Err(Problem::new(
            StatusCode::CONFLICT,
            "conflict",
            "the object kept changing meanwhile; retry",
        ))
    }

    async fn exists(
        &self,
        ty: &'static ResourceType,
        org: &str,
        name: &str,
    ) -> Result<bool, Problem> {
        let found = within(self.api(ty, org).get_opt(name))
            .await?
            .map_err(|e| write_error(ty, e, false))?;
        Ok(found.is_some())
    }
}

fn precondition_failed() -> Problem {
    Problem::new(
        StatusCode::PRECONDITION_FAILED,
        "precondition_failed",
        "the object changed since the given ETag",
    )
}

/// Maps a failed API server call to the client's error. Validation
/// failures name the offending members; our own lack of permission is our
/// fault, not the client's.
fn write_error(ty: &ResourceType, e: kube::Error, precondition: bool) -> Problem {
    let unavailable = || {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "backend_unavailable",
            "the data store is unavailable; retry later",
        )
        .with_header(header::RETRY_AFTER, "1")
    };
    let kube::Error::Api(status) = e else {
        warn!(error = %e, "Kubernetes API server unreachable");
        return unavailable();
    };
    match status.code {
        // The API server up without etcd (500 "etcdserver: ..."), timing
        // out (504), overloaded (429, 503): it will be back.
        429 | 500 | 503 | 504 => {
            warn!(code = status.code, reason = %status.reason, "Kubernetes API server cannot write now");
            unavailable()
        }
        422 => {
            let causes = status
                .details
                .as_ref()
                .map(|d| d.causes.clone())
                .unwrap_or_default();
            let errors: Vec<ErrorObject> = if causes.is_empty() {
                vec![ErrorObject::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_attribute",
                    status.message.clone(),
                )]
            } else {
                causes
                    .iter()
                    .map(|c| {
                        let e = ErrorObject::new(
                            StatusCode::UNPROCESSABLE_ENTITY,
                            "invalid_attribute",
                            c.message.clone(),
                        );
                        match input::pointer_for(ty, &c.field) {
                            Some(p) => e.pointer(p),
                            None => e,
                        }
                    })
                    .collect()
            };
            Problem::many(StatusCode::UNPROCESSABLE_ENTITY, errors)
        }
        409 if precondition => precondition_failed(),
        409 => Problem::new(
            StatusCode::CONFLICT,
            "conflict",
            "the object changed meanwhile; retry",
        ),
        403 => {
            error!(kind = ty.kind, message = %status.message, "the operator's RBAC does not allow this write");
            Problem::internal(format!("the operator may not write {}", ty.plural))
        }
        code => {
            warn!(code, reason = %status.reason, "Kubernetes API server refused a write");
            Problem::new(
                StatusCode::BAD_GATEWAY,
                "backend_error",
                "the data store refused the request",
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_api_server_that_cannot_write_now_is_a_503_to_retry() {
        let ty = crate::crd::registry::by_name("requirement").unwrap();
        let refusal = |code: u16, reason: &str| {
            let status: kube::core::Status = serde_json::from_value(serde_json::json!({
                "status": "Failure", "code": code, "reason": reason,
                "message": "etcdserver: request timed out",
            }))
            .unwrap();
            write_error(ty, kube::Error::Api(Box::new(status)), false)
        };
        for (code, reason) in [
            (500, "InternalError"),
            (503, "ServiceUnavailable"),
            (504, "Timeout"),
            (429, "TooManyRequests"),
        ] {
            let p = refusal(code, reason);
            assert_eq!(p.status, StatusCode::SERVICE_UNAVAILABLE, "{code}");
            assert_eq!(p.errors[0].code, "backend_unavailable");
            assert!(
                p.headers
                    .iter()
                    .any(|(h, v)| *h == header::RETRY_AFTER && v == "1")
            );
        }
        // No answer at all (the connection could not be made): the write
        // was never sent.
        let unreached = write_error(
            ty,
            kube::Error::Service(Box::new(std::io::Error::other("connect timed out"))),
            false,
        );
        assert_eq!(unreached.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            unreached.errors[0].detail,
            "the data store is unavailable; retry later"
        );
        // What the API server refuses for good stays a refusal.
        assert_eq!(refusal(400, "BadRequest").status, StatusCode::BAD_GATEWAY);
        assert_eq!(refusal(409, "Conflict").status, StatusCode::CONFLICT);
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_that_is_never_answered_is_a_503_that_says_it_may_have_been_made() {
        let never = std::future::pending::<Result<(), kube::Error>>();
        let started = tokio::time::Instant::now();
        let p = within(never).await.unwrap_err();
        assert_eq!(started.elapsed(), WRITE_TIMEOUT);
        assert_eq!(p.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(p.errors[0].code, "backend_unavailable");
        assert!(
            p.errors[0].detail.contains("may or may not have been made"),
            "{}",
            p.errors[0].detail
        );
        assert!(
            p.headers
                .iter()
                .any(|(h, v)| *h == header::RETRY_AFTER && v == "1")
        );
        // An answer in time is passed on as it is.
        let answered = within(async { Ok::<_, kube::Error>(7) }).await;
        assert_eq!(answered.unwrap().unwrap(), 7);
    }

    #[test]
    fn ids_are_lowercase_uuid_v4() {
        let id = new_id().unwrap();
        assert_eq!(id.len(), 36);
        let parts: Vec<&str> = id.split('-').collect();
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12]
        );
        assert!(parts[2].starts_with('4'));
        assert!(matches!(&parts[3][..1], "8" | "9" | "a" | "b"));
        assert!(
            id.chars()
                .all(|c| c == '-' || c.is_ascii_digit() || ('a'..='f').contains(&c))
        );
        assert_ne!(new_id().unwrap(), id);
    }
}
