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

use futures::future::BoxFuture;
use jiff::Timestamp;
use tracing::debug;
use warp::http::{HeaderValue, Method, StatusCode, header};
use warp::reply::Response;
use warp::{Filter, Rejection, reject};

use super::Route;
use super::limit::RateLimit;
use crate::api::error::{ErrorObject, MEDIA_TYPE, Problem};
use crate::api::media;
use crate::api::store::{Index, Organization, Writes};
use crate::crd::registry::{self, Field, ResourceType, TYPES};
use crate::metrics::Metrics;
use crate::scope::Access;
use crate::token::dpop::{self, ProofError};
use crate::token::replay::Replays;
use crate::token::{Verified, Verifier};
use crate::usage::UsageRecorder;
use request::{Parts, Request};

/// Request bodies above this answer 413.
pub const BODY_LIMIT: u64 = 1024 * 1024;
/// Related ids one write may ask the API server about when the index does
/// not know them (objects created a moment ago); beyond, they are unknown.
const MAX_LOOKUPS: usize = 16;

/// What the JSON:API needs, shared by every request.
pub struct JsonApi<S, W> {
    pub index: Arc<S>,
    pub writes: W,
    pub verifier: Arc<Verifier>,
    pub limit: RateLimit,
    pub quota: Quota,
    pub metrics: Arc<Metrics>,
    /// The OpenAPI document, rendered once.
    pub openapi: String,
    /// `GET /api/v1`: every type and how to use it, rendered once.
    pub overview: String,
    /// Authenticated calls count as uses of their credential.
    pub usage: UsageRecorder,
    /// What checks the DPoP proofs of bound tokens.
    pub dpop: Dpop,
}

/// What a DPoP proof (RFC 9449) of a call with a bound token is checked
/// against.
pub struct Dpop {
    /// The public URL the API is reached at (`https://host:port`): the
    /// proof's `htu` is it and the request's path.
    pub public_base: String,
    /// Proof ids seen, until they expire.
    pub replays: Arc<Replays>,
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
        .and(presented())
        .and(warp::header::optional::<String>("accept"))
        .and_then(
            |call: Call,
             api: Arc<JsonApi<S, W>>,
             presented: Presented,
             accept: Option<String>| async move {
                let route = Some(call.route);
                let verified = api
                    .authenticate(&presented, &call.method)
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

/// What a call presents to be let in: its `Authorization` and `DPoP`
/// headers, and the path a DPoP proof must name.
struct Presented {
    authorization: Option<String>,
    dpop: Option<String>,
    path: String,
}

fn presented() -> impl Filter<Extract = (Presented,), Error = Rejection> + Clone {
    warp::header::optional::<String>("authorization")
        .and(warp::header::optional::<String>("dpop"))
        .and(warp::path::full())
        .map(
            |authorization, dpop, path: warp::path::FullPath| Presented {
                authorization,
                dpop,
                path: path.as_str().to_owned(),
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
    // type). Held as `Bytes`, shared, not copied: warp clones a filter
    // into every request's future that passes it, matched or not, and the
    // OpenAPI document is a quarter of a megabyte (copying it twice was a
    // quarter of a GET's CPU).
    let fixed = |body: String, content_type: &'static str, route: &'static str| {
        let body = bytes::Bytes::from(body);
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
    let served = admission(api).and(parts(body_timeout)).and_then(
        |admitted: Admitted<S, W>, parts| async move {
            let Admitted {
                api,
                call,
                verified,
            } = admitted;
            let Call {
                ty,
                at,
                method,
                route,
                ..
            } = call;
            let req = Request::new(api, ty, verified, parts);
            // The operations, by method and path shape. Each is boxed: this
            // future is moved whole on every request (by the `or` chains and
            // the boxing around these routes), and unboxed it would be as
            // large as the largest operation, a write's 4.5 KiB, for a GET
            // too.
            let answer: BoxFuture<'_, Result<Response, Problem>> = match (method, at) {
                (Method::GET, At::Collection) => Box::pin(handlers::list(req)),
                (Method::POST, At::Collection) => Box::pin(handlers::create(req)),
                (Method::GET, At::One(id)) => Box::pin(handlers::show(req, id)),
                (Method::PATCH, At::One(id)) => Box::pin(handlers::update(req, id)),
                (Method::DELETE, At::One(id)) => Box::pin(handlers::archive(req, id)),
                (Method::GET, At::Related(id, field)) => {
                    Box::pin(handlers::related(req, id, field))
                }
                (Method::GET, At::Relationship(id, field)) => {
                    Box::pin(handlers::relationship(req, id, field))
                }
                (method, At::Relationship(id, Field::Relationship(i))) => {
                    Box::pin(handlers::edit_relationship(req, method, id, i))
                }
                (_, At::Relationship(id, field)) => Box::pin(handlers::read_only(req, id, field)),
                // `call` admits no other method.
                (_, at) => Box::pin(std::future::ready(Err(method_not_allowed(at.allowed(ty))))),
            };
            answer
                .await
                .map(|response| routed(response, route))
                .map_err(|problem| refuse(problem, Some(route)))
        },
    );
    let elsewhere = warp::path!("api" / "v1" / ..)
        .and_then(|| async { Err::<Response, _>(reject::custom(NoSuchEndpoint)) });
    openapi.or(served).unify().or(elsewhere).unify()
}

/// What a request brings besides its path, for the handlers.
fn parts(body_timeout: Duration) -> impl Filter<Extract = (Parts,), Error = Rejection> + Clone {
    warp::query::raw()
        .or(warp::any().map(String::new))
        .unify()
        .and(warp::header::optional::<String>("content-type"))
        .and(warp::header::optional::<String>("if-match"))
        .and(super::body::unread(body_timeout))
        .map(|query, content_type, if_match, body| Parts {
            query,
            content_type,
            if_match,
            body,
        })
}

fn routed(mut response: Response, route: &'static str) -> Response {
    response.extensions_mut().insert(Route(route));
    response
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

impl<S: Index, W: Writes> JsonApi<S, W> {
    /// The call's token: verified, and, when it is bound to a key, sent
    /// as `Authorization: DPoP` with a proof of that key for this call.
    fn authenticate(&self, presented: &Presented, method: &Method) -> Result<Verified, Problem> {
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
        let Some(value) = presented.authorization.as_deref() else {
            self.metrics.api_refused("missing");
            return Err(Problem::unauthorized(challenge));
        };
        let scheme_token = value
            .split_once(' ')
            .map(|(scheme, t)| (scheme, t.trim()))
            .filter(|(_, t)| !t.is_empty());
        let (bound, token) = match scheme_token {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => (false, token),
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("dpop") => (true, token),
            _ => {
                self.metrics.api_refused("malformed");
                return Err(Problem::unauthorized(challenge));
            }
        };
        let verified = self.verifier.verify(token, Timestamp::now()).map_err(|e| {
            debug!(reason = e.metric_label(), "access token refused");
            self.metrics.api_refused(e.metric_label());
            let challenge = match bound {
                true => dpop_challenge("invalid_token"),
                false => "Bearer realm=\"catalio\", error=\"invalid_token\"".to_owned(),
            };
            Problem::unauthorized(&challenge)
        })?;
        self.check_binding(&verified, bound, token, presented, method)?;
        self.usage.record(&verified.credential);
        Ok(verified)
    }

    /// RFC 9449 section 7: a bound token comes as `DPoP` with a fresh proof
    /// of its key for this method and URL; an unbound one as `Bearer`.
    fn check_binding(
        &self,
        verified: &Verified,
        bound: bool,
        token: &str,
        presented: &Presented,
        method: &Method,
    ) -> Result<(), Problem> {
        let refused = |reason: &'static str, error: &str| {
            self.metrics.api_refused(reason);
            Problem::unauthorized(&dpop_challenge(error))
        };
        let Some(cnf) = &verified.claims.cnf else {
            return match bound {
                false => Ok(()),
                true => Err(refused("dpop_unbound", "invalid_token")),
            };
        };
        if !bound {
            return Err(refused("dpop_as_bearer", "invalid_token"));
        }
        let Some(proof) = presented.dpop.as_deref() else {
            return Err(refused("dpop_missing", "invalid_dpop_proof"));
        };
        let url = format!("{}{}", self.dpop.public_base, presented.path);
        let now = Timestamp::now();
        match dpop::verify_once(
            &self.dpop.replays,
            proof,
            method.as_str(),
            &url,
            Some(token),
            now,
        ) {
            Ok(proof) if proof.jkt == cnf.jkt => Ok(()),
            Ok(_) => Err(refused("dpop_other_key", "invalid_dpop_proof")),
            Err(ProofError::Busy) => Err(Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                "too many DPoP proofs in flight; retry",
            )
            .with_header(header::RETRY_AFTER, "1")),
            Err(e) => {
                debug!(error = %e, "DPoP proof refused");
                Err(refused("dpop_invalid", "invalid_dpop_proof"))
            }
        }
    }
}

/// The challenge of a refusal about DPoP, with the algorithms we take.
fn dpop_challenge(error: &str) -> String {
    format!(
        "DPoP error=\"{error}\", algs=\"{}\"",
        dpop::ALGORITHMS.join(" ")
    )
}

mod handlers;
mod request;
#[cfg(test)]
mod tests;
