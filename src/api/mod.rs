//! The JSON:API at `/api/v1`: one generic engine over the types declared in
//! [`registry`]. A request is routed, authenticated with the access-token
//! verifier, rate limited per organization, authorized by scope and checked
//! for media types before anything is read. Reads come from the index
//! without I/O; writes go to the API server, which validates them against
//! the CRD schema, and the object it returns is what the client gets back.
//!
//! The organization is the token's namespace: every read and write is
//! confined to it, so another organization's ids are simply unknown (404).

pub mod document;
pub mod error;
pub mod input;
pub mod limit;
pub mod media;
pub mod openapi;
pub mod query;
pub mod registry;

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use jiff::Timestamp;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ObjectMeta, TypeMeta};
use serde_json::{Value, json};
use tracing::{debug, error, info, warn};
use warp::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use warp::reply::Response;

use crate::crd::GROUP;
use crate::index::resources::{Entry, Org, ResourceStore};
use crate::metrics::Metrics;
use crate::scope::Access;
use crate::server::body::BodyError;
use crate::token::Verifier;
use error::{ErrorObject, MEDIA_TYPE, Problem};
use input::Intent;
use limit::RateLimit;
use query::Target;
use registry::{Field, Relationship, ResourceType};

/// Field manager of the API's writes, as `kubectl get --show-managed-fields`
/// shows it.
pub const FIELD_MANAGER: &str = "catalio-operator-api";
/// Request bodies above this answer 413.
pub const BODY_LIMIT: u64 = 1024 * 1024;
const VERSION: &str = "v1";
/// Reads and writes of a to-many relationship's members before giving up
/// to concurrent writers.
const EDIT_ATTEMPTS: usize = 5;

pub fn api_resource(ty: &ResourceType) -> ApiResource {
    ApiResource {
        group: GROUP.to_owned(),
        version: VERSION.to_owned(),
        api_version: format!("{GROUP}/{VERSION}"),
        kind: ty.kind.to_owned(),
        plural: ty.plural.to_owned(),
    }
}

/// One request, as the warp filter hands it over.
pub struct ApiRequest {
    pub method: Method,
    /// The path after `/api/v1/`.
    pub tail: String,
    pub query: String,
    pub headers: HeaderMap,
    pub body: Result<Bytes, BodyError>,
}

pub struct ApiService {
    pub store: Arc<ResourceStore>,
    pub verifier: Verifier,
    pub client: kube::Client,
    pub limit: RateLimit,
    pub metrics: Arc<Metrics>,
    /// The OpenAPI document, rendered once.
    pub openapi: String,
}

fn header(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn respond(status: StatusCode, doc: Option<&Value>) -> Response {
    let body = doc.map(Value::to_string).unwrap_or_default();
    let mut response = Response::new(body.into());
    *response.status_mut() = status;
    if doc.is_some() {
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(MEDIA_TYPE));
    }
    response
}

fn with_etag(mut response: Response, entry: &Entry) -> Response {
    if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", entry.resource_version)) {
        response.headers_mut().insert(header::ETAG, v);
    }
    response
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

/// The resource version an `If-Match` header asks for; `*` asks for none.
fn if_match(headers: &HeaderMap) -> Result<Option<String>, Problem> {
    let Some(raw) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let raw = raw.to_str().unwrap_or_default().trim();
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

impl ApiService {
    pub async fn handle(&self, request: ApiRequest) -> Response {
        match self.serve(request).await {
            Ok(response) => response,
            Err(problem) => problem.into_response(),
        }
    }

    async fn serve(&self, request: ApiRequest) -> Result<Response, Problem> {
        let segments: Vec<&str> = request.tail.split('/').filter(|s| !s.is_empty()).collect();
        if segments == ["open_api"] {
            if request.method != Method::GET {
                return Err(method_not_allowed("GET"));
            }
            let mut response = Response::new(self.openapi.clone().into());
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            return Ok(response);
        }
        let (ty, at) = route(&segments)?;
        let method = request.method.clone();
        let allowed = at.allowed(ty);
        let access = match &method {
            &Method::GET => Access::Read,
            m if allowed.split(", ").any(|a| a == m.as_str()) => Access::Write,
            _ => return Err(method_not_allowed(allowed)),
        };
        let verified = self.admit(&request.headers, ty, access)?;
        let org = verified.claims.org.as_str();
        // Objects of the related type are read too, except for the linkage
        // a forward relationship keeps in this object itself.
        let related = match at {
            At::Related(_, field) => ty.related(field),
            At::Relationship(_, field @ Field::Inverse(_)) => ty.related(field),
            _ => None,
        };
        if let Some(related) = related
            && !verified.allows(related.name, Access::Read)
        {
            return Err(insufficient_scope(related, Access::Read));
        }
        if !media::accept_ok(header(&request.headers, header::ACCEPT)) {
            return Err(ErrorObject::new(
                StatusCode::NOT_ACCEPTABLE,
                "not_acceptable",
                format!("responses are {MEDIA_TYPE} without extensions"),
            )
            .header("Accept")
            .into());
        }
        // The type of the primary data and whether it is one object.
        let (primary, target) = match at {
            At::Collection if method == Method::POST => (ty, Target::Single),
            At::Collection => (ty, Target::Collection),
            At::One(_) => (ty, Target::Single),
            At::Related(_, field) => (
                ty.related(field).unwrap_or(ty),
                if ty.is_to_one(field) {
                    Target::Single
                } else {
                    Target::Collection
                },
            ),
            At::Relationship(..) => {
                if let Some((parameter, _)) =
                    form_urlencoded::parse(request.query.as_bytes()).next()
                {
                    return Err(ErrorObject::new(
                        StatusCode::BAD_REQUEST,
                        "invalid_query",
                        "relationship endpoints take no query parameters",
                    )
                    .parameter(parameter)
                    .into());
                }
                (ty, Target::Single)
            }
        };
        let query = query::parse(primary, &request.query, target).map_err(|e| {
            Problem::from(
                ErrorObject::new(StatusCode::BAD_REQUEST, "invalid_query", e.detail)
                    .parameter(e.parameter),
            )
        })?;
        // Included objects are read too: each type needs its read scope.
        if let Some(hidden) = query
            .include
            .types(primary)
            .into_iter()
            .find(|t| !verified.allows(t.name, Access::Read))
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
        let body = || -> Result<&Bytes, Problem> {
            if !media::content_type_ok(header(&request.headers, header::CONTENT_TYPE)) {
                return Err(ErrorObject::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    format!("request bodies must be {MEDIA_TYPE} without extensions"),
                )
                .header("Content-Type")
                .into());
            }
            match &request.body {
                Ok(body) => Ok(body),
                Err(BodyError::TooLarge) => Err(Problem::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    format!("request bodies are limited to {BODY_LIMIT} bytes"),
                )),
                Err(BodyError::Read) => Err(Problem::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_document",
                    "the request body could not be read",
                )),
            }
        };
        match (method, at) {
            (Method::GET, At::Collection) => {
                let snapshot = self.store.read();
                let doc = document::collection(ty, snapshot.org(org), &query).map_err(too_many)?;
                Ok(respond(StatusCode::OK, Some(&doc)))
            }
            (Method::GET, At::One(id)) => {
                let snapshot = self.store.read();
                let org = snapshot.org(org);
                let entry = lookup(org, ty, id)?;
                let doc = document::single(ty, org, entry, &query).map_err(too_many)?;
                Ok(with_etag(respond(StatusCode::OK, Some(&doc)), entry))
            }
            (Method::POST, At::Collection) => {
                let changes = input::parse(ty, body()?, Intent::Create, None)?;
                self.create(ty, org, &verified.claims.sub, changes, &query)
                    .await
            }
            (Method::PATCH, At::One(id)) => {
                let changes = input::parse(ty, body()?, Intent::Update, Some(id))?;
                let precondition = if_match(&request.headers)?;
                self.check_related(ty, org, &changes, &in_document).await?;
                let entry = self
                    .patch(ty, org, id, changes.merge_patch(ty), precondition)
                    .await?;
                info!(org, client = %verified.claims.sub, kind = ty.kind, name = id, "updated through the JSON:API");
                let snapshot = self.store.read();
                let doc = written(ty, snapshot.org(org), &entry, &query);
                Ok(with_etag(respond(StatusCode::OK, Some(&doc)), &entry))
            }
            (Method::DELETE, At::One(id)) => {
                // DELETE archives: the object stays, for history and for
                // `filter[archived]=true`.
                let precondition = if_match(&request.headers)?;
                let mut spec = serde_json::Map::new();
                spec.insert("archived".into(), Value::Bool(true));
                self.patch(ty, org, id, spec, precondition).await?;
                info!(org, client = %verified.claims.sub, kind = ty.kind, name = id, "archived through the JSON:API");
                Ok(respond(StatusCode::NO_CONTENT, None))
            }
            (Method::GET, At::Related(id, field)) => {
                let snapshot = self.store.read();
                let org = snapshot.org(org);
                let entry = lookup(org, ty, id)?;
                let doc = document::related(ty, org, entry, field, query).map_err(too_many)?;
                Ok(respond(StatusCode::OK, Some(&doc)))
            }
            (Method::GET, At::Relationship(id, field)) => {
                let snapshot = self.store.read();
                let org = snapshot.org(org);
                let entry = lookup(org, ty, id)?;
                let doc = document::relationship(ty, org, entry, field);
                let response = respond(StatusCode::OK, Some(&doc));
                // A forward relationship is part of this object: its ETag
                // guards a write here.
                Ok(match field {
                    Field::Relationship(_) => with_etag(response, entry),
                    _ => response,
                })
            }
            (method, At::Relationship(id, Field::Relationship(i))) => {
                let names = input::parse_linkage(ty, i, body()?)?;
                let precondition = if_match(&request.headers)?;
                let changes = input::Changes {
                    relationships: vec![(i, names)],
                    ..input::Changes::default()
                };
                // Removing a name that does not exist is no error; adding
                // or setting one is.
                if method != Method::DELETE {
                    self.check_related(ty, org, &changes, &in_linkage).await?;
                }
                let names = &changes.relationships[0].1;
                let entry = match method {
                    Method::POST | Method::DELETE => {
                        let edit = if method == Method::POST {
                            Edit::Add(names)
                        } else {
                            Edit::Remove(names)
                        };
                        self.edit_members(ty, org, id, i, edit, precondition)
                            .await?
                    }
                    _ => {
                        self.patch(ty, org, id, changes.merge_patch(ty), precondition)
                            .await?
                    }
                };
                let relationship = ty.relationships[i].name;
                info!(org, client = %verified.claims.sub, kind = ty.kind, name = id, relationship, "relationship changed through the JSON:API");
                let snapshot = self.store.read();
                let doc =
                    document::relationship(ty, snapshot.org(org), &entry, Field::Relationship(i));
                Ok(with_etag(respond(StatusCode::OK, Some(&doc)), &entry))
            }
            (_, At::Relationship(_, field)) => {
                let (source, via) = ty
                    .inverse(field)
                    .map(|inv| (inv.source, inv.via))
                    .unwrap_or_default();
                Err(Problem::new(
                    StatusCode::FORBIDDEN,
                    "read_only_relationship",
                    format!(
                        "{} is computed from {source}.{via}; change it there",
                        ty.field_name(field)
                    ),
                ))
            }
            _ => Err(method_not_allowed(allowed)),
        }
    }

    /// The token's verdict, the organization's rate limit and the scope,
    /// in that order.
    fn admit(
        &self,
        headers: &HeaderMap,
        ty: &ResourceType,
        access: Access,
    ) -> Result<crate::token::Verified, Problem> {
        let verified = self.authenticate(headers)?;
        let org = verified.claims.org.as_str();
        if let Err(wait) = self.limit.take(org, Instant::now()) {
            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            return Err(Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many requests for this organization; retry later",
            )
            .with_header(header::RETRY_AFTER, seconds.max(1).to_string()));
        }
        if !verified.allows(ty.name, access) {
            return Err(insufficient_scope(ty, access));
        }
        Ok(verified)
    }

    async fn create(
        &self,
        ty: &'static ResourceType,
        org: &str,
        client: &str,
        changes: input::Changes,
        query: &query::Query,
    ) -> Result<Response, Problem> {
        self.check_related(ty, org, &changes, &in_document).await?;
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
            data: json!({ "spec": changes.spec(ty) }),
        };
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PostParams::default()
        };
        let created = self
            .api(ty, org)
            .create(&params, &object)
            .await
            .map_err(|e| write_error(ty, e, false))?;
        let entry = self.remember(ty, org, &created)?;
        info!(org, client, kind = ty.kind, name = %entry.name, "created through the JSON:API");
        let snapshot = self.store.read();
        let doc = written(ty, snapshot.org(org), &entry, query);
        let mut response = with_etag(respond(StatusCode::CREATED, Some(&doc)), &entry);
        if let Ok(location) = HeaderValue::from_str(&document::self_link(ty, &entry.name)) {
            response.headers_mut().insert(header::LOCATION, location);
        }
        Ok(response)
    }

    fn authenticate(&self, headers: &HeaderMap) -> Result<crate::token::Verified, Problem> {
        let challenge = "Bearer realm=\"catalio\"";
        let Some(value) = header(headers, header::AUTHORIZATION) else {
            self.metrics.api_refused("missing");
            return Err(Problem::unauthorized(challenge));
        };
        let token = value
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim())
            .filter(|t| !t.is_empty());
        let Some(token) = token else {
            self.metrics.api_refused("malformed");
            return Err(Problem::unauthorized(challenge));
        };
        self.verifier.verify(token, Timestamp::now()).map_err(|e| {
            debug!(reason = e.metric_label(), "access token refused");
            self.metrics.api_refused(e.metric_label());
            Problem::unauthorized("Bearer realm=\"catalio\", error=\"invalid_token\"")
        })
    }

    fn api(&self, ty: &ResourceType, org: &str) -> kube::Api<DynamicObject> {
        kube::Api::namespaced_with(self.client.clone(), org, &api_resource(ty))
    }

    /// Stores what the API server returned, so this replica reads its own
    /// write at once, and returns it.
    fn remember(
        &self,
        ty: &'static ResourceType,
        org: &str,
        object: &DynamicObject,
    ) -> Result<Entry, Problem> {
        let (_, entry) = Entry::from_object(ty, object).map_err(|e| {
            error!(error = %e, kind = ty.kind, "the API server returned an object the API cannot read");
            Problem::internal("the stored object could not be read")
        })?;
        self.store.upsert(ty, org, entry.clone());
        Ok(entry)
    }

    async fn patch(
        &self,
        ty: &'static ResourceType,
        org: &str,
        id: &str,
        spec: serde_json::Map<String, Value>,
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
        let updated = self
            .api(ty, org)
            .patch(id, &params, &Patch::Merge(&patch))
            .await
            .map_err(|e| match &e {
                kube::Error::Api(s) if s.code == 404 => Problem::not_found(ty.name, id),
                _ => write_error(ty, e, precondition.is_some()),
            })?;
        self.remember(ty, org, &updated)
    }

    /// Adds names to, or removes them from, the to-many relationship `i`:
    /// read from the API server, change, and write back at the version
    /// read (or the client's `If-Match`), again if another write came
    /// between and the client named no version.
    async fn edit_members(
        &self,
        ty: &'static ResourceType,
        org: &str,
        id: &str,
        i: usize,
        edit: Edit<'_>,
        precondition: Option<String>,
    ) -> Result<Entry, Problem> {
        let field = ty.relationships[i].field;
        for _ in 0..EDIT_ATTEMPTS {
            let current = self
                .api(ty, org)
                .get_opt(id)
                .await
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
                relationships: vec![(i, members)],
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

    /// Every related id a change points at must exist in the organization.
    /// The index answers almost always; an object created a moment ago may
    /// not have reached it, so a miss asks the API server.
    async fn check_related(
        &self,
        ty: &ResourceType,
        org: &str,
        changes: &input::Changes,
        pointer: &(dyn Fn(&Relationship, usize) -> String + Sync),
    ) -> Result<(), Problem> {
        let mut unknown = Vec::new();
        {
            let snapshot = self.store.read();
            let org = snapshot.org(org);
            for (i, names) in &changes.relationships {
                let rel = &ty.relationships[*i];
                let Some(target) = registry::by_name(rel.target) else {
                    continue;
                };
                for (j, name) in names.iter().enumerate() {
                    if org.table(target).get(name).is_none() {
                        unknown.push((target, name.clone(), pointer(rel, j)));
                    }
                }
            }
        }
        let mut errors = Vec::new();
        for (target, name, pointer) in unknown {
            let found = self
                .api(target, org)
                .get_opt(&name)
                .await
                .map_err(|e| write_error(target, e, false))?;
            if found.is_none() {
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
        if errors.is_empty() {
            Ok(())
        } else {
            Err(Problem::many(StatusCode::NOT_FOUND, errors))
        }
    }
}

/// The object `id` of `ty` in the organization, or 404.
fn lookup<'o>(org: &'o Org, ty: &ResourceType, id: &str) -> Result<&'o Arc<Entry>, Problem> {
    org.table(ty)
        .get(id)
        .ok_or_else(|| Problem::not_found(ty.name, id))
}

fn too_many(e: document::TooManyIncluded) -> Problem {
    ErrorObject::new(StatusCode::BAD_REQUEST, "invalid_query", e.to_string())
        .parameter("include")
        .into()
}

/// The document answering a write, which has happened by now: if its
/// include is too large, it is answered without one rather than as an error.
fn written(ty: &'static ResourceType, org: &Org, entry: &Entry, query: &query::Query) -> Value {
    document::single(ty, org, entry, query).unwrap_or_else(|_| {
        let mut plain = query.clone();
        plain.include = query::Include::default();
        plain.kept.retain(|(k, _)| k != "include");
        document::single(ty, org, entry, &plain).unwrap_or_default()
    })
}

fn precondition_failed() -> Problem {
    Problem::new(
        StatusCode::PRECONDITION_FAILED,
        "precondition_failed",
        "the object changed since the given ETag",
    )
}

fn insufficient_scope(ty: &ResourceType, access: Access) -> Problem {
    let needed = match access {
        Access::Read => format!("{}:read", ty.name),
        Access::Write => format!("{}:write", ty.name),
    };
    Problem::new(
        StatusCode::FORBIDDEN,
        "insufficient_scope",
        format!("the token's scopes do not include {needed}"),
    )
    .with_header(
        header::WWW_AUTHENTICATE,
        format!("Bearer error=\"insufficient_scope\", scope=\"{needed}\""),
    )
}

/// What a path below `/api/v1/{type}` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum At<'a> {
    Collection,
    One(&'a str),
    /// `/{id}/{relationship}`: the objects it points at.
    Related(&'a str, Field),
    /// `/{id}/relationships/{relationship}`: its linkage.
    Relationship(&'a str, Field),
}

impl At<'_> {
    /// The methods served here, for 405's `Allow`.
    fn allowed(self, ty: &ResourceType) -> &'static str {
        match self {
            At::Collection => "GET, POST",
            At::One(_) => "GET, PATCH, DELETE",
            At::Related(..) => "GET",
            At::Relationship(_, field) if ty.is_to_one(field) => "GET, PATCH",
            At::Relationship(..) => "GET, PATCH, POST, DELETE",
        }
    }
}

/// The type and what of it a path names; unknown types and relationships
/// are 404 before anything else.
fn route<'a>(segments: &[&'a str]) -> Result<(&'static ResourceType, At<'a>), Problem> {
    let not_found = || Problem::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint");
    let ty = segments
        .first()
        .and_then(|endpoint| registry::by_endpoint(endpoint))
        .ok_or_else(not_found)?;
    let relationship = |name: &str| match ty.field(name) {
        Some(field @ (Field::Relationship(_) | Field::Inverse(_))) => Ok(field),
        _ => Err(Problem::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{} has no relationship {name:?}", ty.name),
        )),
    };
    let at = match segments[1..] {
        [] => At::Collection,
        [id] => At::One(id),
        [id, name] => At::Related(id, relationship(name)?),
        [id, "relationships", name] => At::Relationship(id, relationship(name)?),
        _ => return Err(not_found()),
    };
    Ok((ty, at))
}

/// Where a related id is in a resource document.
fn in_document(rel: &Relationship, j: usize) -> String {
    if rel.many {
        format!("/data/relationships/{}/data/{j}", rel.name)
    } else {
        format!("/data/relationships/{}/data", rel.name)
    }
}

/// Where a related id is in a relationship endpoint's linkage document.
fn in_linkage(rel: &Relationship, j: usize) -> String {
    if rel.many {
        format!("/data/{j}")
    } else {
        "/data".to_owned()
    }
}

/// A change to the members of a to-many relationship.
#[derive(Clone, Copy, Debug)]
enum Edit<'a> {
    Add(&'a [String]),
    Remove(&'a [String]),
}

impl Edit<'_> {
    fn apply(self, members: &mut Vec<String>) {
        match self {
            Edit::Add(names) => {
                for name in names {
                    if !members.contains(name) {
                        members.push(name.clone());
                    }
                }
            }
            Edit::Remove(names) => members.retain(|m| !names.contains(m)),
        }
    }
}

fn method_not_allowed(allowed: &'static str) -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("allowed: {allowed}"),
    )
    .with_header(header::ALLOW, allowed)
}

/// Maps a failed API server call to the client's error. Validation
/// failures name the offending members; our own lack of permission is our
/// fault, not the client's.
fn write_error(ty: &ResourceType, e: kube::Error, precondition: bool) -> Problem {
    let kube::Error::Api(status) = e else {
        warn!(error = %e, "Kubernetes API server unreachable");
        return Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "backend_unavailable",
            "the data store is unavailable; retry later",
        )
        .with_header(header::RETRY_AFTER, "1");
    };
    match status.code {
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

    #[test]
    fn if_match_takes_one_entity_tag() {
        let mut h = HeaderMap::new();
        assert_eq!(if_match(&h), Ok(None));
        h.insert(header::IF_MATCH, HeaderValue::from_static("\"123\""));
        assert_eq!(if_match(&h), Ok(Some("123".into())));
        h.insert(header::IF_MATCH, HeaderValue::from_static("W/\"9\""));
        assert_eq!(if_match(&h), Ok(Some("9".into())));
        h.insert(header::IF_MATCH, HeaderValue::from_static("*"));
        assert_eq!(if_match(&h), Ok(None));
        h.insert(header::IF_MATCH, HeaderValue::from_static("123"));
        assert_eq!(if_match(&h).unwrap_err().status, StatusCode::BAD_REQUEST);
    }
}
