//! The JSON:API over HTTP, at `/api/v1`. One warp filter per path shape
//! (a collection, one object, a relationship's related objects, a
//! relationship's linkage) names the type and what of it; one admission
//! filter shared by all of them checks, in this order, the access token, the
//! organization's rate limit, the scopes and the media type; then a handler
//! per method reads the index or writes through [`Writes`], and the engine
//! in [`crate::api`] builds the document. Every refusal is a [`Refusal`]
//! that the server's one `recover` renders as a JSON:API error document.
//!
//! The organization is the token's namespace: every read and write is
//! confined to it, so another organization's ids are simply unknown (404).
//! Handlers are generic over the [`Index`] and the [`Writes`], so all of
//! this runs in process against an in-memory index in the unit tests.

use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use jiff::Timestamp;
use serde_json::Value;
use tracing::{debug, info};
use warp::http::{HeaderValue, Method, StatusCode, header};
use warp::reply::Response;
use warp::{Filter, Rejection, reject};

use super::Route;
use super::body::{BodyError, Unread};
use super::limit::RateLimit;
use crate::api::error::{ErrorObject, MEDIA_TYPE, Problem};
use crate::api::input::{self, Intent};
use crate::api::query::{self, Target};
use crate::api::store::{Edit, Entry, Index, Organization, Writes};
use crate::api::{document, media};
use crate::crd::registry::{self, Field, Relationship, ResourceType, TYPES};
use crate::metrics::Metrics;
use crate::scope::Access;
use crate::token::{Verified, Verifier};
use crate::usage::UsageRecorder;

/// Request bodies above this answer 413.
pub const BODY_LIMIT: u64 = 1024 * 1024;
/// Related ids one write may ask the API server about when the index does
/// not know them (objects created a moment ago); beyond, they are unknown.
const MAX_LOOKUPS: usize = 16;

/// What the JSON:API needs, shared by every request.
pub struct JsonApi<S, W> {
    pub index: Arc<S>,
    pub writes: W,
    pub verifier: Verifier,
    pub limit: RateLimit,
    pub quota: Quota,
    pub metrics: Arc<Metrics>,
    /// The OpenAPI document, rendered once.
    pub openapi: String,
    /// `GET /api/v1`: every type and how to use it, rendered once.
    pub overview: String,
    /// Authenticated calls count as uses of their credential.
    pub usage: UsageRecorder,
}

/// What one organization may hold of each type through the API: every
/// replica holds every organization's objects, so one tenant must not be
/// able to fill them all.
#[derive(Clone, Copy, Debug)]
pub struct Quota {
    /// Objects, archived ones included (archiving keeps them).
    pub objects: usize,
    /// Bytes of content ([`Entry::footprint`]).
    pub bytes: usize,
}

impl Quota {
    /// Refuses a write that could take `ty` past the quota: one that adds
    /// `adds` objects, and `grows` bytes at most (a write's body bounds
    /// what it can add).
    fn admits(
        &self,
        ty: &ResourceType,
        org: &impl Organization,
        adds: usize,
        grows: usize,
    ) -> Result<(), Problem> {
        let held = org.count(ty, false) + org.count(ty, true);
        if adds > 0 && held + adds > self.objects {
            return Err(Problem::new(
                StatusCode::FORBIDDEN,
                "too_many_objects",
                format!(
                    "this organization holds {held} {} objects, the most its quota allows ({} per type)",
                    ty.name, self.objects
                ),
            ));
        }
        let bytes = org.bytes(ty);
        if bytes.saturating_add(grows) > self.bytes {
            return Err(Problem::new(
                StatusCode::FORBIDDEN,
                "too_many_bytes",
                format!(
                    "this organization's {} objects hold {bytes} bytes; this write could take them past its quota of {} bytes per type",
                    ty.name, self.bytes
                ),
            ));
        }
        Ok(())
    }
}

/// A refused request: the problem, and the route it was refused on (for
/// metrics; `None` before a route was known).
#[derive(Debug)]
pub struct Refusal {
    pub problem: Problem,
    pub route: Option<&'static str>,
}

impl reject::Reject for Refusal {}

/// A path below `/api/v1` that no route serves. `recover` answers it only
/// when no route refused the request for a reason of its own.
#[derive(Debug)]
pub struct NoSuchEndpoint;

impl reject::Reject for NoSuchEndpoint {}

fn refuse(problem: impl Into<Problem>, route: Option<&'static str>) -> Rejection {
    reject::custom(Refusal {
        problem: problem.into(),
        route,
    })
}

/// The error document of a problem.
pub fn problem_response(problem: &Problem) -> Response {
    let mut response = Response::new(problem.body().into());
    *response.status_mut() = problem.status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(MEDIA_TYPE));
    for (name, value) in &problem.headers {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.append(name, value);
        }
    }
    response
}

/// What a path below `/api/v1/{type}` names.
#[derive(Clone, Debug, PartialEq, Eq)]
enum At {
    Collection,
    One(String),
    /// `/{id}/{relationship}`: the objects it points at.
    Related(String, Field),
    /// `/{id}/relationships/{relationship}`: its linkage.
    Relationship(String, Field),
}

impl At {
    /// The methods served here, for 405's `Allow`.
    fn allowed(&self, ty: &ResourceType) -> &'static str {
        match self {
            At::Collection => "GET, POST",
            At::One(_) => "GET, PATCH, DELETE",
            At::Related(..) => "GET",
            At::Relationship(_, field) if ty.is_to_one(*field) => "GET, PATCH",
            At::Relationship(..) => "GET, PATCH, POST, DELETE",
        }
    }
}

/// A request whose path names a type and what of it, with its method.
struct Call {
    ty: &'static ResourceType,
    at: At,
    method: Method,
    access: Access,
    route: &'static str,
}

/// A call whose token, rate limit, scopes and media type passed.
struct Admitted<S, W> {
    api: Arc<JsonApi<S, W>>,
    call: Call,
    verified: Verified,
}

/// Metric route names, fixed per type and relationship (never per id):
/// `api:requirements`, `api:requirements/{id}`,
/// `api:requirements/{id}/persona`, `api:requirements/{id}/relationships/persona`.
struct TypeRoutes {
    collection: String,
    one: String,
    /// Per relationship, then per inverse: related and relationship routes.
    fields: Vec<(String, String)>,
}

static ROUTES: LazyLock<Vec<TypeRoutes>> = LazyLock::new(|| {
    TYPES
        .iter()
        .map(|t| {
            let names = t.relationships.iter().map(|r| r.name);
            let inverses = t.inverses.iter().map(|i| i.name);
            TypeRoutes {
                collection: format!("api:{}", t.endpoint),
                one: format!("api:{}/{{id}}", t.endpoint),
                fields: names
                    .chain(inverses)
                    .map(|name| {
                        (
                            format!("api:{}/{{id}}/{name}", t.endpoint),
                            format!("api:{}/{{id}}/relationships/{name}", t.endpoint),
                        )
                    })
                    .collect(),
            }
        })
        .collect()
});

fn route_name(ty: &ResourceType, at: &At) -> &'static str {
    let routes = &ROUTES[ty.index()];
    let field = |f: &Field| match *f {
        Field::Inverse(i) => &routes.fields[ty.relationships.len() + i],
        Field::Relationship(i) => &routes.fields[i],
        _ => &routes.fields[0],
    };
    match at {
        At::Collection => &routes.collection,
        At::One(_) => &routes.one,
        At::Related(_, f) => &field(f).0,
        At::Relationship(_, f) => &field(f).1,
    }
}

pub fn not_found() -> Problem {
    Problem::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}

/// The type a path's first segment names, and what the rest names; unknown
/// types and relationships are 404 before anything else.
fn target(
    endpoint: &str,
    id: Option<String>,
    relationship: Option<(&str, bool)>,
) -> Result<(&'static ResourceType, At), Rejection> {
    let ty = registry::by_endpoint(endpoint).ok_or_else(|| refuse(not_found(), None))?;
    let at = match (id, relationship) {
        (None, _) => At::Collection,
        (Some(id), None) => At::One(id),
        (Some(id), Some((name, linkage))) => {
            let field = match ty.field(name) {
                Some(field @ (Field::Relationship(_) | Field::Inverse(_))) => field,
                _ => {
                    let problem = Problem::new(
                        StatusCode::NOT_FOUND,
                        "not_found",
                        format!("{} has no relationship {name:?}", ty.name),
                    );
                    return Err(refuse(problem, None));
                }
            };
            if linkage {
                At::Relationship(id, field)
            } else {
                At::Related(id, field)
            }
        }
    };
    Ok((ty, at))
}

fn method_not_allowed(allowed: &'static str) -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("allowed: {allowed}"),
    )
    .with_header(header::ALLOW, allowed)
}

/// The call, if its method is served at the path.
fn call((ty, at): (&'static ResourceType, At), method: Method) -> Result<Call, Rejection> {
    let route = route_name(ty, &at);
    let allowed = at.allowed(ty);
    let access = match &method {
        &Method::GET => Access::Read,
        m if allowed.split(", ").any(|a| a == m.as_str()) => Access::Write,
        _ => return Err(refuse(method_not_allowed(allowed), Some(route))),
    };
    Ok(Call {
        ty,
        at,
        method,
        access,
        route,
    })
}

/// The four path shapes below `/api/v1/{type}`, each naming its call.
fn calls() -> impl Filter<Extract = (Call,), Error = Rejection> + Clone {
    let collection = warp::path!("api" / "v1" / String)
        .and_then(|endpoint: String| async move { target(&endpoint, None, None) });
    let one = warp::path!("api" / "v1" / String / String)
        .and_then(|endpoint: String, id| async move { target(&endpoint, Some(id), None) });
    let related = warp::path!("api" / "v1" / String / String / String).and_then(
        |endpoint: String, id, name: String| async move {
            target(&endpoint, Some(id), Some((&name, false)))
        },
    );
    let relationship = warp::path!("api" / "v1" / String / String / "relationships" / String)
        .and_then(|endpoint: String, id, name: String| async move {
            target(&endpoint, Some(id), Some((&name, true)))
        });
    collection
        .or(one)
        .unify()
        .or(related)
        .unify()
        .or(relationship)
        .unify()
        .and(warp::method())
        .and_then(|target, method| async move { call(target, method) })
}

/// Token, organization rate limit, scopes and media type, in that order:
/// one filter every path shape goes through.
fn admission<S: Index, W: Writes>(
    api: Arc<JsonApi<S, W>>,
) -> impl Filter<Extract = (Admitted<S, W>,), Error = Rejection> + Clone {
    calls()
        .and(warp::any().map(move || api.clone()))
        .and(warp::header::optional::<String>("authorization"))
        .and(warp::header::optional::<String>("accept"))
        .and_then(
            |call: Call,
             api: Arc<JsonApi<S, W>>,
             authorization: Option<String>,
             accept: Option<String>| async move {
                let route = Some(call.route);
                let verified = api
                    .authenticate(authorization.as_deref())
                    .map_err(|p| refuse(p, route))?;
                let org = verified.claims.org.as_str();
                if let Err(wait) = api.limit.take(org, Instant::now()) {
                    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                    let problem = Problem::new(
                        StatusCode::TOO_MANY_REQUESTS,
                        "rate_limited",
                        "too many requests for this organization; retry later",
                    )
                    .with_header(header::RETRY_AFTER, seconds.max(1).to_string());
                    return Err(refuse(problem, route));
                }
                if !verified.allows(call.ty.name, call.access) {
                    return Err(refuse(insufficient_scope(call.ty, call.access), route));
                }
                // Objects of the related type are read too, except for the
                // linkage a forward relationship keeps in this object itself.
                let related = match call.at {
                    At::Related(_, field) => call.ty.related(field),
                    At::Relationship(_, field @ Field::Inverse(_)) => call.ty.related(field),
                    _ => None,
                };
                if let Some(related) = related
                    && !verified.allows(related.name, Access::Read)
                {
                    return Err(refuse(insufficient_scope(related, Access::Read), route));
                }
                if !media::accept_ok(accept.as_deref()) {
                    let problem = ErrorObject::new(
                        StatusCode::NOT_ACCEPTABLE,
                        "not_acceptable",
                        format!("responses are {MEDIA_TYPE} without extensions"),
                    )
                    .header("Accept");
                    return Err(refuse(problem, route));
                }
                Ok::<_, Rejection>(Admitted {
                    api,
                    call,
                    verified,
                })
            },
        )
}

/// Every JSON:API route: the OpenAPI document, the four path shapes, and a
/// 404 for anything else below `/api/v1`.
pub fn routes<S: Index, W: Writes>(
    api: Arc<JsonApi<S, W>>,
    body_timeout: Duration,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    // Documents rendered once, public, GET only: answered here, not
    // refused (the collection shape would refuse `open_api` as an unknown
    // type).
    let fixed = |body: String, content_type: &'static str, route: &'static str| {
        warp::method().and_then(move |method: Method| {
            let body = body.clone();
            async move {
                if method != Method::GET {
                    let response = problem_response(&method_not_allowed("GET"));
                    return Ok::<_, Rejection>(routed(response, route));
                }
                let mut response = Response::new(body.into());
                response
                    .headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
                Ok(routed(response, route))
            }
        })
    };
    let openapi = warp::path!("api" / "v1" / "open_api").and(fixed(
        api.openapi.clone(),
        "application/json",
        "open_api",
    ));
    let overview =
        warp::path!("api" / "v1").and(fixed(api.overview.clone(), MEDIA_TYPE, "overview"));
    let openapi = overview.or(openapi).unify();
    let query = warp::query::raw().or(warp::any().map(String::new)).unify();
    let served = admission(api)
        .and(query)
        .and(warp::header::optional::<String>("content-type"))
        .and(warp::header::optional::<String>("if-match"))
        .and(super::body::unread(body_timeout))
        .and_then(
            |admitted: Admitted<S, W>, query: String, content_type, if_match, body| async move {
                let route = admitted.call.route;
                serve(admitted, query, content_type, if_match, body)
                    .await
                    .map(|response| routed(response, route))
                    .map_err(|problem| refuse(problem, Some(route)))
            },
        );
    let elsewhere = warp::path!("api" / "v1" / ..)
        .and_then(|| async { Err::<Response, _>(reject::custom(NoSuchEndpoint)) });
    openapi.or(served).unify().or(elsewhere).unify()
}

fn routed(mut response: Response, route: &'static str) -> Response {
    response.extensions_mut().insert(Route(route));
    response
}

fn respond(status: StatusCode, doc: &impl serde::Serialize) -> Response {
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

fn no_content() -> Response {
    let mut response = Response::new(Vec::new().into());
    *response.status_mut() = StatusCode::NO_CONTENT;
    response
}

fn with_etag(mut response: Response, entry: &Entry) -> Response {
    if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", entry.resource_version)) {
        response.headers_mut().insert(header::ETAG, v);
    }
    response
}

/// The resource version an `If-Match` header asks for; `*` asks for none.
fn if_match(header: Option<&str>) -> Result<Option<String>, Problem> {
    let Some(raw) = header else {
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

fn too_many(e: document::TooManyIncluded) -> Problem {
    ErrorObject::new(StatusCode::BAD_REQUEST, "invalid_query", e.to_string())
        .parameter("include")
        .into()
}

/// The object `id` of `ty` in the organization, or 404.
fn lookup<'o>(
    org: &'o impl Organization,
    ty: &ResourceType,
    id: &str,
) -> Result<&'o Arc<Entry>, Problem> {
    org.get(ty, id)
        .ok_or_else(|| Problem::not_found(ty.name, id))
}

/// The answer to a write, which has happened by now: if the document's
/// include is too large, it is answered without one rather than as an error.
fn written(
    status: StatusCode,
    ty: &'static ResourceType,
    org: &impl Organization,
    entry: &Entry,
    query: &query::Query,
) -> Response {
    let response = match document::single(ty, org, entry, query) {
        Ok(doc) => respond(status, &doc),
        Err(_) => {
            let mut plain = query.clone();
            plain.include = query::Include::default();
            plain.kept.retain(|(k, _)| k != "include");
            match document::single(ty, org, entry, &plain) {
                Ok(doc) => respond(status, &doc),
                Err(_) => respond(status, &Value::Null),
            }
        }
    };
    with_etag(response, entry)
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

/// A write may point only at objects the token may read: whether they
/// exist would tell about them.
fn check_link_scopes(
    ty: &ResourceType,
    changes: &input::Changes,
    verified: &Verified,
    pointer: &(dyn Fn(&Relationship, usize) -> String + Sync),
) -> Result<(), Problem> {
    for (i, names) in &changes.relationships {
        let rel = &ty.relationships[*i];
        if !names.is_empty() && !verified.allows(rel.target, Access::Read) {
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
    Ok(())
}

impl<S: Index, W: Writes> JsonApi<S, W> {
    fn authenticate(&self, authorization: Option<&str>) -> Result<Verified, Problem> {
        // A replica that has not listed everything yet (it has just
        // started, or cannot read some type) would refuse good tokens and
        // answer with objects missing: it says so instead.
        if !(self.index.listed()
            && self.verifier.index.is_synced()
            && self.verifier.keys.is_loaded())
        {
            self.metrics.api_refused("not_ready");
            return Err(Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_ready",
                "this replica has not loaded its data from the API server yet; retry",
            )
            .with_header(header::RETRY_AFTER, "1"));
        }
        let challenge = "Bearer realm=\"catalio\"";
        let Some(value) = authorization else {
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
        let verified = self.verifier.verify(token, Timestamp::now()).map_err(|e| {
            debug!(reason = e.metric_label(), "access token refused");
            self.metrics.api_refused(e.metric_label());
            Problem::unauthorized("Bearer realm=\"catalio\", error=\"invalid_token\"")
        })?;
        self.usage.record(&verified.credential);
        Ok(verified)
    }

    /// Stores what the API server returned, so this replica reads its own
    /// write at once.
    fn remember(&self, ty: &ResourceType, org: &str, entry: &Entry) {
        self.index.remember(ty, org, entry.clone());
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
        let unknown: Vec<(&'static ResourceType, String, String)> = self.index.read(org, |o| {
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
            let exists = i < MAX_LOOKUPS && self.writes.exists(target, org, &name).await?;
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
        if errors.is_empty() {
            Ok(())
        } else {
            Err(Problem::many(StatusCode::NOT_FOUND, errors))
        }
    }
}

/// The body of a write, once its media type is right.
async fn body(content_type: Option<&str>, body: Unread) -> Result<Bytes, Problem> {
    if !media::content_type_ok(content_type) {
        return Err(ErrorObject::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("request bodies must be {MEDIA_TYPE} without extensions"),
        )
        .header("Content-Type")
        .into());
    }
    match body.read(BODY_LIMIT).await {
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
        Err(BodyError::TimedOut) => Err(Problem::new(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            "the request body did not arrive in time",
        )),
    }
}

/// Serves an admitted call: its query, then by method and path.
async fn serve<S: Index, W: Writes>(
    admitted: Admitted<S, W>,
    raw_query: String,
    content_type: Option<String>,
    if_match_header: Option<String>,
    unread: Unread,
) -> Result<Response, Problem> {
    let Admitted {
        api,
        call,
        verified,
    } = admitted;
    let Call { ty, at, method, .. } = call;
    // An id that cannot name an object names none here: it never reaches
    // the API server, where it could name a path of its own.
    if let At::One(id) | At::Related(id, _) | At::Relationship(id, _) = &at
        && !crate::crd::is_object_name(id)
    {
        return Err(Problem::not_found(ty.name, id));
    }
    let org = verified.claims.org.as_str();
    let client = verified.claims.sub.as_str();
    // The type of the primary data and whether it is one object.
    let (primary, target) = match &at {
        At::Collection if method == Method::POST => (ty, Target::Single),
        At::Collection => (ty, Target::Collection),
        At::One(_) => (ty, Target::Single),
        At::Related(_, field) => (
            ty.related(*field).unwrap_or(ty),
            if ty.is_to_one(*field) {
                Target::Single
            } else {
                Target::Collection
            },
        ),
        At::Relationship(..) => {
            if let Some((parameter, _)) = form_urlencoded::parse(raw_query.as_bytes()).next() {
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
    let mut query = query::parse(primary, &raw_query, target).map_err(|e| {
        Problem::from(
            ErrorObject::new(StatusCode::BAD_REQUEST, "invalid_query", e.detail)
                .parameter(e.parameter),
        )
    })?;
    // Nothing about objects the token may not read shapes the answer:
    // filtering by them is refused, and their counts are left out.
    if let Some((name, hidden)) = query
        .inverse_filters(primary)
        .find(|(_, t)| !verified.allows(t.name, Access::Read))
    {
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
    query.hide_unreadable(|t| verified.allows(t.name, Access::Read));
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
    let content_type = content_type.as_deref();
    match (method, at) {
        (Method::GET, At::Collection) => {
            let (response, kept) = api.index.read(org, |o| {
                let kept = query.sort.is_empty() || o.sorted(ty, &query.sort).is_some();
                let doc = document::collection(ty, o, &query);
                (doc.map(|doc| respond(StatusCode::OK, &doc)), kept)
            });
            // Sorted per request this time; kept for the next ones.
            if !kept {
                api.index.keep_sorted(org, ty, &query.sort);
            }
            Ok(response.map_err(too_many)?)
        }
        (Method::GET, At::One(id)) => api.index.read(org, |o| {
            let entry = lookup(o, ty, &id)?;
            let doc = document::single(ty, o, entry, &query).map_err(too_many)?;
            Ok(with_etag(respond(StatusCode::OK, &doc), entry))
        }),
        (Method::POST, At::Collection) => {
            let body = body(content_type, unread).await?;
            api.index
                .read(org, |o| api.quota.admits(ty, o, 1, body.len()))?;
            let changes = input::parse(ty, &body, Intent::Create, None)?;
            check_link_scopes(ty, &changes, &verified, &in_document)?;
            api.check_related(ty, org, &changes, &in_document).await?;
            let entry = api.writes.create(ty, org, changes.spec(ty)).await?;
            api.remember(ty, org, &entry);
            info!(org, client, kind = ty.kind, name = %entry.name, "created through the JSON:API");
            let mut response = api
                .index
                .read(org, |o| written(StatusCode::CREATED, ty, o, &entry, &query));
            if let Ok(location) = HeaderValue::from_str(&document::self_link(ty, &entry.name)) {
                response.headers_mut().insert(header::LOCATION, location);
            }
            Ok(response)
        }
        (Method::PATCH, At::One(id)) => {
            let body = body(content_type, unread).await?;
            api.index
                .read(org, |o| api.quota.admits(ty, o, 0, body.len()))?;
            let changes = input::parse(ty, &body, Intent::Update, Some(&id))?;
            let precondition = if_match(if_match_header.as_deref())?;
            check_link_scopes(ty, &changes, &verified, &in_document)?;
            api.check_related(ty, org, &changes, &in_document).await?;
            let entry = api
                .writes
                .patch(ty, org, &id, changes.merge_patch(ty), precondition)
                .await?;
            api.remember(ty, org, &entry);
            info!(
                org,
                client,
                kind = ty.kind,
                name = id,
                "updated through the JSON:API"
            );
            Ok(api
                .index
                .read(org, |o| written(StatusCode::OK, ty, o, &entry, &query)))
        }
        (Method::DELETE, At::One(id)) => {
            // DELETE archives: the object stays, for history and for
            // `filter[archived]=true`.
            let precondition = if_match(if_match_header.as_deref())?;
            let mut spec = serde_json::Map::new();
            spec.insert("archived".into(), Value::Bool(true));
            let entry = api.writes.patch(ty, org, &id, spec, precondition).await?;
            api.remember(ty, org, &entry);
            info!(
                org,
                client,
                kind = ty.kind,
                name = id,
                "archived through the JSON:API"
            );
            Ok(no_content())
        }
        (Method::GET, At::Related(id, field)) => api.index.read(org, |o| {
            let entry = lookup(o, ty, &id)?;
            let mut query = query;
            let doc = document::related(ty, o, entry, field, &mut query).map_err(too_many)?;
            Ok(respond(StatusCode::OK, &doc))
        }),
        (Method::GET, At::Relationship(id, field)) => api.index.read(org, |o| {
            let entry = lookup(o, ty, &id)?;
            let doc = document::relationship(ty, o, entry, field);
            let response = respond(StatusCode::OK, &doc);
            // A forward relationship is part of this object: its ETag
            // guards a write here.
            Ok(match field {
                Field::Relationship(_) => with_etag(response, entry),
                _ => response,
            })
        }),
        (method, At::Relationship(id, Field::Relationship(i))) => {
            let body = body(content_type, unread).await?;
            if method != Method::DELETE {
                api.index
                    .read(org, |o| api.quota.admits(ty, o, 0, body.len()))?;
            }
            let names = input::parse_linkage(ty, i, &body)?;
            let precondition = if_match(if_match_header.as_deref())?;
            let changes = input::Changes {
                relationships: vec![(i, names)],
                ..input::Changes::default()
            };
            // Removing a name that does not exist is no error; adding or
            // setting one is.
            if method != Method::DELETE {
                check_link_scopes(ty, &changes, &verified, &in_linkage)?;
                api.check_related(ty, org, &changes, &in_linkage).await?;
            }
            let names = &changes.relationships[0].1;
            let entry = match method {
                Method::POST => {
                    api.writes
                        .edit_members(ty, org, &id, i, Edit::Add(names), precondition)
                        .await?
                }
                Method::DELETE => {
                    api.writes
                        .edit_members(ty, org, &id, i, Edit::Remove(names), precondition)
                        .await?
                }
                _ => {
                    api.writes
                        .patch(ty, org, &id, changes.merge_patch(ty), precondition)
                        .await?
                }
            };
            api.remember(ty, org, &entry);
            let relationship = ty.relationships[i].name;
            info!(
                org,
                client,
                kind = ty.kind,
                name = id,
                relationship,
                "relationship changed through the JSON:API"
            );
            let doc = api.index.read(org, |o| {
                document::relationship(ty, o, &entry, Field::Relationship(i))
            });
            Ok(with_etag(respond(StatusCode::OK, &doc), &entry))
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
        (_, at) => Err(method_not_allowed(at.allowed(ty))),
    }
}

#[cfg(test)]
mod tests;
