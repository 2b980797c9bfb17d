//! What the JSON:API's operations share, as small steps a handler calls
//! when it needs them: the id check, the query with its scope rules, the
//! body, the `If-Match` precondition, the quota, the checks on what a
//! write links to, and the written object's answer.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;
use warp::http::{HeaderValue, StatusCode, header};
use warp::reply::Response;

use super::{BODY_LIMIT, JsonApi, MAX_LOOKUPS, problem_response};
use crate::api::error::{ErrorObject, MEDIA_TYPE, Problem};
use crate::api::query::{self, Target};
use crate::api::store::{Entry, Index, Organization, Writes};
use crate::api::{document, input, media};
use crate::crd::registry::{self, Relationship, ResourceType};
use crate::scope::Access;
use crate::server::body::{BodyError, Unread};
use crate::token::Verified;

/// What an admitted request brought besides its path: the raw query, the
/// headers writes read, and the body, unread.
pub struct Parts {
    pub query: String,
    pub content_type: Option<String>,
    pub if_match: Option<String>,
    pub body: Unread,
}

/// An admitted request (its token, rate limit, scopes and media type
/// passed) for objects of `ty`, in the token's organization.
pub struct Request<S, W> {
    pub api: Arc<JsonApi<S, W>>,
    pub ty: &'static ResourceType,
    pub verified: Verified,
    raw_query: String,
    content_type: Option<String>,
    if_match: Option<String>,
    /// In a mutex only to be `Sync` (a body stream is not): the shared
    /// steps borrow the request across awaits.
    body: std::sync::Mutex<Option<Unread>>,
}

impl<S: Index, W: Writes> Request<S, W> {
    pub fn new(
        api: Arc<JsonApi<S, W>>,
        ty: &'static ResourceType,
        verified: Verified,
        parts: Parts,
    ) -> Self {
        Self {
            api,
            ty,
            verified,
            raw_query: parts.query,
            content_type: parts.content_type,
            if_match: parts.if_match,
            body: std::sync::Mutex::new(Some(parts.body)),
        }
    }

    /// The organization: the token's namespace.
    pub fn org(&self) -> &str {
        &self.verified.claims.org
    }

    /// The client the token was issued to.
    pub fn client(&self) -> &str {
        &self.verified.claims.sub
    }

    /// The query, for primary data of `primary` (one object or a
    /// collection), with its scope rules: nothing about objects the token
    /// may not read shapes the answer. Filtering by them is refused, their
    /// counts are left out, and each included type needs its read scope.
    pub fn query(
        &self,
        primary: &'static ResourceType,
        target: Target,
    ) -> Result<query::Query, Problem> {
        let readable = |t: &ResourceType| self.verified.allows(t.name, Access::Read);
        let mut query = query::parse(primary, &self.raw_query, target).map_err(|e| {
            Problem::from(
                ErrorObject::new(StatusCode::BAD_REQUEST, "invalid_query", e.detail)
                    .parameter(e.parameter),
            )
        })?;
        if let Some((name, hidden)) = query.inverse_filters(primary).find(|(_, t)| !readable(t)) {
            return Err(ErrorObject::new(
                StatusCode::FORBIDDEN,
                "insufficient_scope",
                format!(
                    "filtering by {name} reads {} objects: it needs the scope {}:read",
                    hidden.name, hidden.name
                ),
            )
            .parameter(format!("filter[{name}]"))
            .into());
        }
        query.hide_unreadable(readable);
        if let Some(hidden) = query
            .include
            .types(primary)
            .into_iter()
            .find(|t| !readable(t))
        {
            return Err(ErrorObject::new(
                StatusCode::FORBIDDEN,
                "insufficient_scope",
                format!(
                    "including {} objects needs the scope {}:read",
                    hidden.name, hidden.name
                ),
            )
            .parameter("include")
            .into());
        }
        Ok(query)
    }

    /// Relationship endpoints take no query parameters.
    pub fn no_query(&self) -> Result<(), Problem> {
        match form_urlencoded::parse(self.raw_query.as_bytes()).next() {
            None => Ok(()),
            Some((parameter, _)) => Err(ErrorObject::new(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                "relationship endpoints take no query parameters",
            )
            .parameter(parameter)
            .into()),
        }
    }

    /// The body of a write, once its media type is right; read once.
    pub async fn body(&mut self) -> Result<Bytes, Problem> {
        if !media::content_type_ok(self.content_type.as_deref()) {
            return Err(ErrorObject::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                format!("request bodies must be {MEDIA_TYPE} without extensions"),
            )
            .header("Content-Type")
            .into());
        }
        let unread = self
            .body
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .ok_or_else(|| Problem::internal("the body was read twice"))?;
        unread.read(BODY_LIMIT).await.map_err(|e| match e {
            BodyError::TooLarge => Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("request bodies are limited to {BODY_LIMIT} bytes"),
            ),
            BodyError::Read => Problem::new(
                StatusCode::BAD_REQUEST,
                "invalid_document",
                "the request body could not be read",
            ),
            BodyError::TimedOut => Problem::new(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                "the request body did not arrive in time",
            ),
        })
    }

    /// The resource version `If-Match` asks for; none without the header
    /// or for `*`.
    pub fn precondition(&self) -> Result<Option<String>, Problem> {
        let Some(raw) = self.if_match.as_deref() else {
            return Ok(None);
        };
        let raw = raw.trim();
        if raw == "*" {
            return Ok(None);
        }
        let tag = raw.strip_prefix("W/").unwrap_or(raw);
        match tag.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
            Some(rv) if !rv.is_empty() && !rv.contains('"') => Ok(Some(rv.to_owned())),
            _ => Err(ErrorObject::new(
                StatusCode::BAD_REQUEST,
                "invalid_header",
                "If-Match must be one entity tag from an ETag header",
            )
            .header("If-Match")
            .into()),
        }
    }

    /// Refuses a write that could take the type past the organization's
    /// quota: one that adds `adds` objects and `grows` bytes at most.
    pub fn admits(&self, adds: usize, grows: usize) -> Result<(), Problem> {
        self.api.index.read(self.org(), |o| {
            self.api.quota.admits(self.ty, o, adds, grows)
        })
    }

    /// What a write links to: objects the token may read (whether they
    /// exist would tell about them), and that exist in the organization.
    /// `pointer` says where each related id is in the request.
    pub async fn check_links(
        &self,
        changes: &input::Changes,
        pointer: &(dyn Fn(&Relationship, usize) -> String + Sync),
    ) -> Result<(), Problem> {
        for (i, names) in &changes.relationships {
            let rel = &self.ty.relationships[*i];
            if !names.is_empty() && !self.verified.allows(rel.target, Access::Read) {
                return Err(ErrorObject::new(
                    StatusCode::FORBIDDEN,
                    "insufficient_scope",
                    format!(
                        "linking {} objects needs the scope {}:read",
                        rel.target, rel.target
                    ),
                )
                .pointer(pointer(rel, 0))
                .into());
            }
        }
        self.check_related(changes, pointer).await
    }

    /// Every related id a change points at must exist in the organization.
    /// The index answers almost always; an object created a moment ago may
    /// not have reached it, so a miss asks the API server.
    async fn check_related(
        &self,
        changes: &input::Changes,
        pointer: &(dyn Fn(&Relationship, usize) -> String + Sync),
    ) -> Result<(), Problem> {
        let ty = self.ty;
        let unknown: Vec<(&'static ResourceType, String, String)> =
            self.api.index.read(self.org(), |o| {
                let mut unknown = Vec::new();
                for (i, names) in &changes.relationships {
                    let rel = &ty.relationships[*i];
                    let Some(target) = registry::by_name(rel.target) else {
                        continue;
                    };
                    for (j, name) in names.iter().enumerate() {
                        if o.get(target, name).is_none() {
                            unknown.push((target, name.clone(), pointer(rel, j)));
                        }
                    }
                }
                unknown
            });
        let mut errors = Vec::new();
        for (i, (target, name, pointer)) in unknown.into_iter().enumerate() {
            // One request asks the API server about a few objects at most.
            let exists =
                i < MAX_LOOKUPS && self.api.writes.exists(target, self.org(), &name).await?;
            if !exists {
                errors.push(
                    ErrorObject::new(
                        StatusCode::NOT_FOUND,
                        "related_not_found",
                        format!("no {} with id {name:?}", target.name),
                    )
                    .pointer(pointer),
                );
            }
        }
        match errors.is_empty() {
            true => Ok(()),
            false => Err(Problem::many(StatusCode::NOT_FOUND, errors)),
        }
    }

    /// Stores what the API server returned, so this replica reads its own
    /// write at once.
    pub fn remember(&self, entry: &Entry) {
        self.api.index.remember(self.ty, self.org(), entry.clone());
    }

    /// The answer to a write, which has happened by now: the object's
    /// document, without its include if that is too large rather than as
    /// an error, and its ETag.
    pub fn written(&self, status: StatusCode, entry: &Entry, query: &query::Query) -> Response {
        let ty = self.ty;
        let response = self.api.index.read(self.org(), |o| {
            match document::single(ty, o, entry, query) {
                Ok(doc) => respond(status, &doc),
                Err(_) => {
                    let mut plain = query.clone();
                    plain.include = query::Include::default();
                    plain.kept.retain(|(k, _)| k != "include");
                    match document::single(ty, o, entry, &plain) {
                        Ok(doc) => respond(status, &doc),
                        Err(_) => respond(status, &Value::Null),
                    }
                }
            }
        });
        with_etag(response, entry)
    }
}

/// An id that cannot name an object names none here: it never reaches the
/// API server, where it could name a path of its own.
pub fn object_id<'a>(ty: &ResourceType, id: &'a str) -> Result<&'a str, Problem> {
    match crate::crd::is_object_name(id) {
        true => Ok(id),
        false => Err(Problem::not_found(ty.name, id)),
    }
}

/// The object `id` of `ty` in the organization, or 404.
pub fn lookup<'o>(
    org: &'o impl Organization,
    ty: &ResourceType,
    id: &str,
) -> Result<&'o Arc<Entry>, Problem> {
    org.get(ty, id)
        .ok_or_else(|| Problem::not_found(ty.name, id))
}

/// A document as the response body, with the JSON:API media type.
pub fn respond(status: StatusCode, doc: &impl serde::Serialize) -> Response {
    // Straight into bytes, in a buffer most documents fit.
    let mut body = Vec::with_capacity(4096);
    if serde_json::to_writer(&mut body, doc).is_err() {
        // Documents are written from values that always serialize.
        return problem_response(&Problem::internal("the document could not be written"));
    }
    let mut response = Response::new(body.into());
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(MEDIA_TYPE));
    response
}

pub fn no_content() -> Response {
    let mut response = Response::new(Vec::new().into());
    *response.status_mut() = StatusCode::NO_CONTENT;
    response
}

pub fn with_etag(mut response: Response, entry: &Entry) -> Response {
    if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", entry.resource_version)) {
        response.headers_mut().insert(header::ETAG, v);
    }
    response
}

pub fn too_many(e: document::TooManyIncluded) -> Problem {
    ErrorObject::new(StatusCode::BAD_REQUEST, "invalid_query", e.to_string())
        .parameter("include")
        .into()
}

/// Where a related id is in a resource document.
pub fn in_document(rel: &Relationship, j: usize) -> String {
    if rel.many {
        format!("/data/relationships/{}/data/{j}", rel.name)
    } else {
        format!("/data/relationships/{}/data", rel.name)
    }
}

/// Where a related id is in a relationship endpoint's linkage document.
pub fn in_linkage(rel: &Relationship, j: usize) -> String {
    if rel.many {
        format!("/data/{j}")
    } else {
        "/data".to_owned()
    }
}
