//! One handler per JSON:API operation, as `routes()` names them. Each takes
//! an admitted [`Request`] (and what its path named), calls the shared
//! steps it needs, reads the index or writes through [`Writes`], and lets
//! the engine in [`crate::api`] write the document.

use serde_json::Value;
use tracing::info;
use warp::http::{HeaderValue, Method, StatusCode, header};
use warp::reply::Response;

use super::request::{
    Request, in_document, in_linkage, lookup, no_content, object_id, respond, too_many, with_etag,
};
use crate::api::document;
use crate::api::error::Problem;
use crate::api::input::{self, Intent};
use crate::api::order::Order;
use crate::api::query::Target;
use crate::api::store::{Edit, Index, Organization, Writes};
use crate::crd::registry::Field;

/// `GET /{type}`: a page of the collection.
pub async fn list<S: Index, W: Writes>(req: Request<S, W>) -> Result<Response, Problem> {
    let (ty, api) = (req.ty, &req.api);
    let query = req.query(ty, Target::Collection)?;
    let order = Order::of(ty, &query);
    let (response, kept) = api.index.read(req.org(), |o| {
        let kept = order
            .as_ref()
            .is_none_or(|(order, value)| o.sorted(order, *value).is_some());
        let doc = document::collection(ty, o, &query);
        (doc.map(|doc| respond(StatusCode::OK, &doc)), kept)
    });
    // Sorted per request this time; kept for the next ones.
    if let (false, Some((order, _))) = (kept, order) {
        api.index.keep_sorted(req.org(), order);
    }
    response.map_err(too_many)
}

/// `GET /{type}/{id}`: one object, with its ETag.
pub async fn show<S: Index, W: Writes>(
    req: Request<S, W>,
    id: String,
) -> Result<Response, Problem> {
    let ty = req.ty;
    let id = object_id(ty, &id)?;
    let query = req.query(ty, Target::Single)?;
    req.api.index.read(req.org(), |o| {
        let entry = lookup(o, ty, id)?;
        let doc = document::single(ty, o, entry, &query).map_err(too_many)?;
        Ok(with_etag(respond(StatusCode::OK, &doc), entry))
    })
}

/// `POST /{type}`: a new object, named by a new UUID.
pub async fn create<S: Index, W: Writes>(mut req: Request<S, W>) -> Result<Response, Problem> {
    let ty = req.ty;
    let query = req.query(ty, Target::Single)?;
    let body = req.body().await?;
    req.admits(1, body.len())?;
    let changes = input::parse(ty, &body, Intent::Create, None)?;
    req.check_links(&changes, &in_document).await?;
    let entry = req
        .api
        .writes
        .create(ty, req.org(), changes.spec(ty))
        .await?;
    req.remember(&entry);
    info!(org = req.org(), client = req.client(), kind = ty.kind, name = %entry.name, "created through the JSON:API");
    let mut response = req.written(StatusCode::CREATED, &entry, &query);
    if let Ok(location) = HeaderValue::from_str(&document::self_link(ty, &entry.name)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// `PATCH /{type}/{id}`: the members the document names change.
pub async fn update<S: Index, W: Writes>(
    mut req: Request<S, W>,
    id: String,
) -> Result<Response, Problem> {
    let ty = req.ty;
    let id = object_id(ty, &id)?;
    let query = req.query(ty, Target::Single)?;
    let body = req.body().await?;
    req.admits(0, body.len())?;
    let changes = input::parse(ty, &body, Intent::Update, Some(id))?;
    let precondition = req.precondition()?;
    req.check_links(&changes, &in_document).await?;
    let patch = changes.merge_patch(ty);
    let entry = req
        .api
        .writes
        .patch(ty, req.org(), id, patch, precondition)
        .await?;
    req.remember(&entry);
    info!(
        org = req.org(),
        client = req.client(),
        kind = ty.kind,
        name = id,
        "updated through the JSON:API"
    );
    Ok(req.written(StatusCode::OK, &entry, &query))
}

/// `DELETE /{type}/{id}` archives: the object stays, for history and for
/// `filter[archived]=true`.
pub async fn archive<S: Index, W: Writes>(
    req: Request<S, W>,
    id: String,
) -> Result<Response, Problem> {
    let ty = req.ty;
    let id = object_id(ty, &id)?;
    // Checked as for every object route, though nothing is answered.
    req.query(ty, Target::Single)?;
    let precondition = req.precondition()?;
    let mut spec = serde_json::Map::new();
    spec.insert("archived".into(), Value::Bool(true));
    let entry = req
        .api
        .writes
        .patch(ty, req.org(), id, spec, precondition)
        .await?;
    req.remember(&entry);
    info!(
        org = req.org(),
        client = req.client(),
        kind = ty.kind,
        name = id,
        "archived through the JSON:API"
    );
    Ok(no_content())
}

/// `GET /{type}/{id}/{relationship}`: the related object, or collection
/// with the whole query language.
pub async fn related<S: Index, W: Writes>(
    req: Request<S, W>,
    id: String,
    field: Field,
) -> Result<Response, Problem> {
    let ty = req.ty;
    let id = object_id(ty, &id)?;
    let primary = ty.related(field).unwrap_or(ty);
    let target = match ty.is_to_one(field) {
        true => Target::Single,
        false => Target::Collection,
    };
    let mut query = req.query(primary, target)?;
    req.api.index.read(req.org(), |o| {
        let entry = lookup(o, ty, id)?;
        let doc = document::related(ty, o, entry, field, &mut query).map_err(too_many)?;
        Ok(respond(StatusCode::OK, &doc))
    })
}

/// `GET /{type}/{id}/relationships/{relationship}`: the linkage.
pub async fn relationship<S: Index, W: Writes>(
    req: Request<S, W>,
    id: String,
    field: Field,
) -> Result<Response, Problem> {
    let ty = req.ty;
    let id = object_id(ty, &id)?;
    req.no_query()?;
    req.api.index.read(req.org(), |o| {
        let entry = lookup(o, ty, id)?;
        let response = respond(StatusCode::OK, &document::relationship(ty, o, entry, field));
        // A forward relationship is part of this object: its ETag guards
        // a write here.
        Ok(match field {
            Field::Relationship(_) => with_etag(response, entry),
            _ => response,
        })
    })
}

/// `PATCH`, `POST` and `DELETE` on a stored relationship's linkage:
/// replace it, add members, remove members.
pub async fn edit_relationship<S: Index, W: Writes>(
    mut req: Request<S, W>,
    method: Method,
    id: String,
    i: usize,
) -> Result<Response, Problem> {
    let ty = req.ty;
    let id = object_id(ty, &id)?;
    req.no_query()?;
    let body = req.body().await?;
    // Removing adds nothing, and removing a name that does not exist is no
    // error; adding or setting one is.
    let adds = method != Method::DELETE;
    if adds {
        req.admits(0, body.len())?;
    }
    let names = input::parse_linkage(ty, i, &body)?;
    let precondition = req.precondition()?;
    let changes = input::Changes {
        relationships: vec![(i, names)],
        ..input::Changes::default()
    };
    if adds {
        req.check_links(&changes, &in_linkage).await?;
    }
    let (writes, org) = (&req.api.writes, req.org());
    let entry = match method {
        Method::POST | Method::DELETE => {
            let names = &changes.relationships[0].1;
            let edit = match method {
                Method::POST => Edit::Add(names),
                _ => Edit::Remove(names),
            };
            writes
                .edit_members(ty, org, id, i, edit, precondition)
                .await?
        }
        _ => {
            let patch = changes.merge_patch(ty);
            writes.patch(ty, org, id, patch, precondition).await?
        }
    };
    req.remember(&entry);
    let relationship = ty.relationships[i].name;
    info!(
        org,
        client = req.client(),
        kind = ty.kind,
        name = id,
        relationship,
        "relationship changed through the JSON:API"
    );
    let doc = req.api.index.read(org, |o| {
        document::relationship(ty, o, &entry, Field::Relationship(i))
    });
    Ok(with_etag(respond(StatusCode::OK, &doc), &entry))
}

/// Any write to an inverse relationship: it is computed from the other
/// side, which is where it changes.
pub async fn read_only<S: Index, W: Writes>(
    req: Request<S, W>,
    id: String,
    field: Field,
) -> Result<Response, Problem> {
    let ty = req.ty;
    object_id(ty, &id)?;
    req.no_query()?;
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
