//! JSON:API documents built from the index: a collection after filters,
//! sort and paging, or one object, with relationships, sparse fieldsets,
//! compound documents and links. Pure functions of the index and the query.

use std::collections::HashSet;
use std::sync::Arc;

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Value, json};

use super::order::{Order, compare, sort_value};
use super::query::{Filter, Include, Page, Query};
use super::store::{Attr, Entry, Organization};
use crate::crd::registry::{self, AttrKind, Field, ResourceType};

pub const API_PREFIX: &str = "/api/v1";
pub const JSONAPI_VERSION: &str = "1.1";

pub fn self_link(ty: &ResourceType, id: &str) -> String {
    format!("{API_PREFIX}/{}/{id}", ty.endpoint)
}

pub fn collection_path(ty: &ResourceType) -> String {
    format!("{API_PREFIX}/{}", ty.endpoint)
}

/// `/api/v1/requirements/{id}/persona`: the object or objects a
/// relationship points at.
pub fn related_path(ty: &ResourceType, id: &str, relationship: &str) -> String {
    format!("{}/{relationship}", self_link(ty, id))
}

/// `/api/v1/requirements/{id}/relationships/persona`: the linkage itself.
pub fn relationship_path(ty: &ResourceType, id: &str, relationship: &str) -> String {
    format!("{}/relationships/{relationship}", self_link(ty, id))
}

fn relationship_links(ty: &ResourceType, id: &str, relationship: &str) -> Value {
    json!({
        "self": relationship_path(ty, id, relationship),
        "related": related_path(ty, id, relationship),
    })
}

fn with_params(path: &str, params: &[(String, String)]) -> String {
    if params.is_empty() {
        return path.to_owned();
    }
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        query.append_pair(k, v);
    }
    format!("{path}?{}", query.finish())
}

/// How many objects a collection request selects, and the page of them it
/// asked for, in order.
pub fn select<'o, O: Organization>(
    ty: &'static ResourceType,
    org: &'o O,
    query: &Query,
) -> (usize, Vec<&'o Arc<Entry>>) {
    let (skip, take) = query.page.window();
    if query.filters.is_empty() && query.search.is_none() && query.sort.is_empty() {
        // The common request: the table knows the total, and the page is
        // a walk of skip + take objects.
        let page = org
            .all(ty)
            .filter(|e| e.archived == query.archived)
            .skip(skip)
            .take(take)
            .collect();
        return (org.count(ty, query.archived), page);
    }
    let matcher = Matcher::new(ty, org, query);
    let selected = org.all(ty).filter(|e| matcher.matches(e));
    if query.sort.is_empty() {
        // The table's own order: one pass counts and keeps the page.
        let mut total = 0;
        let mut page = Vec::with_capacity(take);
        for e in selected {
            if total >= skip && page.len() < take {
                page.push(e);
            }
            total += 1;
        }
        return (total, page);
    }
    if let Some((order, value)) = Order::of(ty, query)
        && let Some(sorted) = org.sorted(&order, value)
    {
        // The order is kept: the page is a walk to its end (of the objects
        // with the filter's value only, when the order is parted by it),
        // and the total a count without sorting.
        let total = counted(ty, org, query).unwrap_or_else(|| selected.count());
        let page = sorted
            .filter(|e| matcher.matches(e))
            .skip(skip)
            .take(take)
            .collect();
        return (total, page);
    }
    sorted_page(ty, query, selected.collect(), skip, take)
}

/// Whether an object passes a query's filters and search.
struct Matcher<'q> {
    ty: &'q ResourceType,
    query: &'q Query,
    /// Per filter: for an inverse relationship's, the names of the objects
    /// it selects, found once rather than looked up per object.
    inverse_sets: Vec<Option<HashSet<&'q str>>>,
}

impl<'q> Matcher<'q> {
    fn new<O: Organization>(ty: &'q ResourceType, org: &'q O, query: &'q Query) -> Self {
        let inverse_sets = query
            .filters
            .iter()
            .map(|f| match f {
                Filter::Related(Field::Inverse(i), ids) => {
                    let (source, via) = ty.inverses[*i].resolve();
                    Some(
                        ids.iter()
                            .filter_map(|id| org.get(source, id))
                            .flat_map(|e| e.relationships[via].iter().map(|n| &**n))
                            .collect(),
                    )
                }
                _ => None,
            })
            .collect();
        Self {
            ty,
            query,
            inverse_sets,
        }
    }

    fn matches(&self, e: &Entry) -> bool {
        let query = self.query;
        e.archived == query.archived
            && query.search.as_deref().is_none_or(|s| found(self.ty, e, s))
            && query
                .filters
                .iter()
                .zip(&self.inverse_sets)
                .all(|(f, set)| match f {
                    Filter::Id(ids) => ids.contains(&e.name),
                    Filter::Attribute(i, values) => {
                        let attr = &e.attributes[*i];
                        let listed = |s: &str| values.iter().any(|v| v == s);
                        attr.as_str().is_some_and(listed) || attr.items().iter().any(|s| listed(s))
                    }
                    Filter::Related(Field::Relationship(i), ids) => e.relationships[*i]
                        .iter()
                        .any(|r| ids.iter().any(|id| **id == **r)),
                    Filter::Related(_, _) => {
                        set.as_ref().is_some_and(|s| s.contains(e.name.as_str()))
                    }
                })
    }
}

/// Whether a searchable attribute of `e` contains `needle` (lowercase),
/// regardless of case. ASCII text is compared in place; other text is
/// lowercased for the comparison, not held lowercased in every entry.
fn found(ty: &ResourceType, e: &Entry, needle: &str) -> bool {
    ty.attributes
        .iter()
        .zip(e.attributes.iter())
        .filter(|(a, _)| a.searchable)
        .filter_map(|(_, v)| v.as_str())
        .any(|text| {
            if text.is_ascii() {
                let needle = needle.as_bytes();
                needle.is_empty()
                    || text
                        .as_bytes()
                        .windows(needle.len())
                        .any(|w| w.eq_ignore_ascii_case(needle))
            } else {
                text.to_lowercase().contains(needle)
            }
        })
}

/// The total and the page of `selected` (in the table's order: oldest
/// first, then id) sorted by the query's keys, sorting only what the page
/// needs.
fn sorted_page<'o>(
    ty: &ResourceType,
    query: &Query,
    selected: Vec<&'o Arc<Entry>>,
    skip: usize,
    take: usize,
) -> (usize, Vec<&'o Arc<Entry>>) {
    // Each object's sort keys, computed once, side by side in one buffer.
    let k = query.sort.len();
    let mut keys = Vec::with_capacity(selected.len() * k);
    for e in &selected {
        keys.extend(query.sort.iter().map(|key| sort_value(ty, key.field, e)));
    }
    // Ties fall back to the position: the order is total, and only the
    // objects up to the page's end need sorting once partitioned off.
    let order = |a: &usize, b: &usize| {
        compare(&query.sort, &keys[a * k..][..k], &keys[b * k..][..k]).then(a.cmp(b))
    };
    let total = selected.len();
    let end = skip.saturating_add(take).min(total);
    let mut positions: Vec<usize> = (0..total).collect();
    if end == 0 {
        return (total, Vec::new());
    }
    if end < total {
        positions.select_nth_unstable_by(end - 1, order);
        positions.truncate(end);
    }
    positions.sort_unstable_by(order);
    let page = positions
        .into_iter()
        .skip(skip)
        .map(|i| selected[i])
        .collect();
    (total, page)
}

/// A collection's total from the index's counts, when the request filters
/// by nothing but the values of one enum attribute.
fn counted(ty: &ResourceType, org: &impl Organization, query: &Query) -> Option<usize> {
    if query.search.is_some() {
        return None;
    }
    match &query.filters[..] {
        [] => Some(org.count(ty, query.archived)),
        [Filter::Attribute(i, values)] if !query.archived => {
            let mut values: Vec<&str> = values.iter().map(String::as_str).collect();
            values.sort_unstable();
            values.dedup();
            values.iter().map(|v| org.live_with(ty, *i, v)).sum()
        }
        _ => None,
    }
}

/// Collects included objects without duplicates, primary data excluded.
struct Compound<'o, O> {
    org: &'o O,
    /// Objects in the document, by type position and id.
    seen: HashSet<(usize, String)>,
    /// Objects whose relationships were walked, per include path (the
    /// address of the path's node in the include tree): each once.
    walked: HashSet<(usize, String, usize)>,
    included: Vec<Object<'o>>,
    /// Related names read so far.
    steps: usize,
    overflow: Option<TooManyIncluded>,
}

/// Objects one document may include; inverse relationships can be large,
/// and one request should not render a whole organization.
pub const MAX_INCLUDED: usize = 1000;
/// Related names one document's includes may read, whatever they find.
pub const MAX_INCLUDE_STEPS: usize = 100_000;

/// The include asked for more than one document may hold or read.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TooManyIncluded {
    #[error(
        "include would add more than {MAX_INCLUDED} objects; use a smaller page or filter the related collection"
    )]
    Objects,
    #[error(
        "include would read more than {MAX_INCLUDE_STEPS} related objects; use a smaller page, a shorter include path or the related collection"
    )]
    Steps,
}

impl<'o, O: Organization> Compound<'o, O> {
    fn new(org: &'o O) -> Self {
        Compound {
            org,
            seen: HashSet::new(),
            walked: HashSet::new(),
            included: Vec::new(),
            steps: 0,
            overflow: None,
        }
    }

    fn primary(&mut self, ty: &ResourceType, e: &Entry) {
        self.seen.insert((ty.index(), e.name.clone()));
    }

    /// Includes what `include` names below `e`. Every related name read
    /// counts against the budget, and an object is walked at most once per
    /// include path, so the work is bounded whatever the graph.
    fn walk(&mut self, ty: &'static ResourceType, e: &'o Entry, include: &'o Include) {
        let org = self.org;
        for (field, child) in &include.children {
            let Some(target) = ty.related(*field) else {
                continue;
            };
            let node = child as *const Include as usize;
            let mut below = Vec::new();
            for name in related_iter(ty, org, e, *field) {
                self.steps += 1;
                if self.steps > MAX_INCLUDE_STEPS {
                    self.overflow = Some(TooManyIncluded::Steps);
                }
                if self.overflow.is_some() {
                    return;
                }
                let Some(related) = org.get(target, name) else {
                    // A dangling name: linkage shows it, nothing to include.
                    continue;
                };
                if self.seen.insert((target.index(), name.to_owned())) {
                    if self.included.len() == MAX_INCLUDED {
                        self.overflow = Some(TooManyIncluded::Objects);
                        return;
                    }
                    self.included.push(Object {
                        ty: target,
                        entry: related,
                        include: Some(child),
                    });
                }
                if !child.is_empty() && self.walked.insert((target.index(), name.to_owned(), node))
                {
                    below.push(related);
                }
            }
            for related in below {
                self.walk(target, related, child);
            }
        }
    }
}

/// The names a relationship field of `e` points at, read in place.
/// Inverse relationships leave archived objects out, as collections do.
fn related_iter<'o, O: Organization>(
    ty: &ResourceType,
    org: &'o O,
    e: &'o Entry,
    field: Field,
) -> Box<dyn Iterator<Item = &'o str> + 'o> {
    match field {
        Field::Relationship(i) => Box::new(e.relationships[i].iter().map(|n| &**n)),
        Field::Inverse(i) => {
            let (source, via) = ty.inverses[i].resolve();
            Box::new(org.referring(source, via, &e.name))
        }
        _ => Box::new(std::iter::empty()),
    }
}

/// Names a relationship field of `e` points at, owned.
fn related_names(
    ty: &ResourceType,
    org: &impl Organization,
    e: &Entry,
    field: Field,
) -> Vec<String> {
    related_iter(ty, org, e, field).map(str::to_owned).collect()
}

fn linkage(ty: &str, id: &str) -> Value {
    json!({"type": ty, "id": id})
}

/// A relationship's `data`: one linkage object or `null` for a to-one, an
/// array for the others.
fn linkage_data<'n>(target: &str, to_one: bool, mut names: impl Iterator<Item = &'n str>) -> Value {
    if to_one {
        names.next().map_or(Value::Null, |n| linkage(target, n))
    } else {
        Value::Array(names.map(|n| linkage(target, n)).collect())
    }
}

/// The document of `/{type}/{id}/relationships/{name}`: the relationship's
/// linkage (for an inverse, the live objects pointing here) and its links.
pub fn relationship(ty: &ResourceType, org: &impl Organization, e: &Entry, field: Field) -> Value {
    let target = ty.related(field).map_or("", |t| t.name);
    let names = related_names(ty, org, e, field);
    let mut doc = json!({"jsonapi": {"version": JSONAPI_VERSION}});
    doc["links"] = relationship_links(ty, &e.name, ty.field_name(field));
    doc["data"] = linkage_data(
        target,
        ty.is_to_one(field),
        names.iter().map(String::as_str),
    );
    doc
}

/// The document of `/{type}/{id}/{name}`: the object a to-one relationship
/// points at (or `null`), or the collection a to-many or inverse one does,
/// under the whole query language, with links on this path. The filter
/// that picks the related objects is added to `query`.
pub fn related<'a, O: Organization>(
    ty: &'static ResourceType,
    org: &'a O,
    e: &'a Entry,
    field: Field,
    query: &'a mut Query,
) -> Result<Document<'a, O>, TooManyIncluded> {
    let path = related_path(ty, &e.name, ty.field_name(field));
    let Some(target) = ty.related(field) else {
        return single_at(ty, org, None, query, &path);
    };
    let filter = match field {
        Field::Relationship(i) if ty.is_to_one(field) => {
            let one = e.relationships[i]
                .first()
                .and_then(|name| org.get(target, name));
            return single_at(target, org, one.map(|e| &**e), query, &path);
        }
        Field::Relationship(i) => {
            Filter::Id(e.relationships[i].iter().map(|n| n.to_string()).collect())
        }
        // The source objects whose relationship points here.
        Field::Inverse(i) => {
            let (_, via) = ty.inverses[i].resolve();
            Filter::Related(Field::Relationship(via), vec![e.name.clone()])
        }
        _ => return single_at(target, org, None, query, &path),
    };
    query.filters.push(filter);
    collection_at(target, org, query, &path)
}

/// One object of a document. `include` is the include tree at this
/// object, so inverse relationships carry linkage exactly where they are
/// included.
#[derive(Clone, Copy)]
struct Object<'a> {
    ty: &'static ResourceType,
    entry: &'a Entry,
    include: Option<&'a Include>,
}

/// A JSON:API document. Its resource objects are written when it is
/// serialized, straight from the entries it borrows: no tree of values is
/// built and no attribute is copied.
pub struct Document<'a, O> {
    org: &'a O,
    query: &'a Query,
    total: Option<usize>,
    links: Value,
    data: Data<'a>,
    included: Option<Vec<Object<'a>>>,
}

enum Data<'a> {
    One(Option<Object<'a>>),
    Many(Vec<Object<'a>>),
}

/// An object of a document, ready to be written.
struct Rendered<'a, O> {
    org: &'a O,
    query: &'a Query,
    object: Object<'a>,
}

/// Objects of a document, written as an array.
struct RenderedAll<'a, O> {
    org: &'a O,
    query: &'a Query,
    objects: &'a [Object<'a>],
}

impl<'a, O: Organization> Document<'a, O> {
    fn rendered(&self, object: Object<'a>) -> Rendered<'a, O> {
        Rendered {
            org: self.org,
            query: self.query,
            object,
        }
    }

    fn rendered_all(&'a self, objects: &'a [Object<'a>]) -> RenderedAll<'a, O> {
        RenderedAll {
            org: self.org,
            query: self.query,
            objects,
        }
    }
}

impl<O: Organization> Serialize for Document<'_, O> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("jsonapi", &Member("version", JSONAPI_VERSION))?;
        if let Some(total) = self.total {
            map.serialize_entry("meta", &Member("total", total))?;
        }
        map.serialize_entry("links", &self.links)?;
        match &self.data {
            Data::One(one) => map.serialize_entry("data", &one.map(|o| self.rendered(o)))?,
            Data::Many(many) => map.serialize_entry("data", &self.rendered_all(many))?,
        }
        if let Some(included) = &self.included {
            map.serialize_entry("included", &self.rendered_all(included))?;
        }
        map.end()
    }
}

/// An object of one member.
struct Member<T>(&'static str, T);

impl<T: Serialize> Serialize for Member<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(1))?;
        map.serialize_entry(self.0, &self.1)?;
        map.end()
    }
}

impl<O: Organization> Serialize for RenderedAll<'_, O> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.objects.iter().map(|&object| Rendered {
            org: self.org,
            query: self.query,
            object,
        }))
    }
}

impl<O: Organization> Serialize for Rendered<'_, O> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let Object { ty, entry: e, .. } = self.object;
        let wants = self.query.wanted(ty);
        let attributes = (0..ty.attributes.len())
            .map(Field::Attribute)
            .chain([Field::Archived, Field::CreatedAt, Field::UpdatedAt])
            .any(&wants);
        let relationships = (0..ty.relationships.len())
            .map(Field::Relationship)
            .chain((0..ty.inverses.len()).map(Field::Inverse))
            .any(&wants);
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("type", ty.name)?;
        map.serialize_entry("id", &e.name)?;
        if attributes {
            map.serialize_entry("attributes", &Attributes(self))?;
        }
        if relationships {
            map.serialize_entry("relationships", &Relationships(self))?;
        }
        map.serialize_entry("links", &Links([("self", Path::One(ty, &e.name))]))?;
        map.end()
    }
}

/// The attributes the query wants, in the type's order.
struct Attributes<'r, 'a, O>(&'r Rendered<'a, O>);

impl<O: Organization> Serialize for Attributes<'_, '_, O> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let Object { ty, entry: e, .. } = self.0.object;
        let wants = self.0.query.wanted(ty);
        let mut map = s.serialize_map(None)?;
        for (i, a) in ty.attributes.iter().enumerate() {
            if wants(Field::Attribute(i)) {
                match (&e.attributes[i], a.kind) {
                    (Attr::Unset, AttrKind::List) => map.serialize_entry(a.name, &[(); 0])?,
                    (v, _) => map.serialize_entry(a.name, v)?,
                }
            }
        }
        if wants(Field::Archived) {
            map.serialize_entry(registry::ARCHIVED, &e.archived)?;
        }
        if wants(Field::CreatedAt) {
            map.serialize_entry(registry::CREATED_AT, &Shown(&e.created))?;
        }
        if wants(Field::UpdatedAt) {
            map.serialize_entry(registry::UPDATED_AT, &Shown(&e.updated))?;
        }
        map.end()
    }
}

/// The relationships the query wants: forward ones with their linkage;
/// inverse ones (which can be long) with a count and links, and linkage
/// only where they are included.
struct Relationships<'r, 'a, O>(&'r Rendered<'a, O>);

impl<O: Organization> Serialize for Relationships<'_, '_, O> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let Rendered { org, query, object } = self.0;
        let Object {
            ty,
            entry: e,
            include,
        } = *object;
        let wants = query.wanted(ty);
        let mut map = s.serialize_map(None)?;
        for (i, r) in ty.relationships.iter().enumerate() {
            if wants(Field::Relationship(i)) {
                // Linkage only: a client follows it by type and id, and the
                // links would double the size of a page (and cost a third
                // of its throughput, measured with bench/api.sh).
                let names = &e.relationships[i];
                map.serialize_entry(r.name, &ForwardLinkage(r.target, !r.many, names))?;
            }
        }
        for (i, inv) in ty.inverses.iter().enumerate() {
            let field = Field::Inverse(i);
            if !wants(field) {
                continue;
            }
            let (source, via) = inv.resolve();
            let included = include.and_then(|i| i.child(field)).is_some();
            map.serialize_entry(
                inv.name,
                &Inverse {
                    count: org.referring_count(source, via, &e.name),
                    links: Links([
                        ("self", Path::Relationship(ty, &e.name, inv.name)),
                        ("related", Path::Related(ty, &e.name, inv.name)),
                    ]),
                    data: included.then(|| InverseLinkage {
                        org: *org,
                        target: inv.source,
                        source,
                        via,
                        name: &e.name,
                    }),
                },
            )?;
        }
        map.end()
    }
}

/// `{"data": linkage}` of a forward relationship.
struct ForwardLinkage<'a>(&'a str, bool, &'a [Box<str>]);

impl Serialize for ForwardLinkage<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let ForwardLinkage(target, to_one, names) = *self;
        if to_one {
            Member("data", names.first().map(|n| Linkage(target, n))).serialize(s)
        } else {
            Member("data", Linkages(target, names.iter().map(|n| &**n))).serialize(s)
        }
    }
}

struct Inverse<'a, O> {
    count: usize,
    links: Links<'a, 2>,
    data: Option<InverseLinkage<'a, O>>,
}

impl<O: Organization> Serialize for Inverse<'_, O> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("meta", &Member("count", self.count))?;
        map.serialize_entry("links", &self.links)?;
        if let Some(data) = &self.data {
            map.serialize_entry("data", data)?;
        }
        map.end()
    }
}

/// The live objects whose relationship `via` points at `name`.
struct InverseLinkage<'a, O> {
    org: &'a O,
    target: &'a str,
    source: &'a ResourceType,
    via: usize,
    name: &'a str,
}

impl<O: Organization> Serialize for InverseLinkage<'_, O> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let names = self.org.referring(self.source, self.via, self.name);
        s.collect_seq(names.map(|n| Linkage(self.target, n)))
    }
}

/// `{"type": ..., "id": ...}`.
struct Linkage<'a>(&'a str, &'a str);

impl Serialize for Linkage<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(2))?;
        map.serialize_entry("type", self.0)?;
        map.serialize_entry("id", self.1)?;
        map.end()
    }
}

/// An array of linkage objects of one type.
struct Linkages<'a, I>(&'a str, I);

impl<'a, I: Iterator<Item = &'a str> + Clone> Serialize for Linkages<'a, I> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.1.clone().map(|n| Linkage(self.0, n)))
    }
}

/// Links to paths of the API, written without building the strings.
struct Links<'a, const N: usize>([(&'static str, Path<'a>); N]);

#[derive(Clone, Copy)]
enum Path<'a> {
    One(&'a ResourceType, &'a str),
    Relationship(&'a ResourceType, &'a str, &'a str),
    Related(&'a ResourceType, &'a str, &'a str),
}

impl std::fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Path::One(ty, id) => write!(f, "{API_PREFIX}/{}/{id}", ty.endpoint),
            Path::Relationship(ty, id, name) => {
                write!(f, "{API_PREFIX}/{}/{id}/relationships/{name}", ty.endpoint)
            }
            Path::Related(ty, id, name) => write!(f, "{API_PREFIX}/{}/{id}/{name}", ty.endpoint),
        }
    }
}

impl<const N: usize> Serialize for Links<'_, N> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(N))?;
        for (name, path) in &self.0 {
            map.serialize_entry(name, &Shown(path))?;
        }
        map.end()
    }
}

/// A value written as the string its `Display` makes.
struct Shown<'a, T>(&'a T);

impl<T: std::fmt::Display> Serialize for Shown<'_, T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self.0)
    }
}

/// The document for one object.
pub fn single<'a, O: Organization>(
    ty: &'static ResourceType,
    org: &'a O,
    e: &'a Entry,
    query: &'a Query,
) -> Result<Document<'a, O>, TooManyIncluded> {
    single_at(ty, org, Some(e), query, &self_link(ty, &e.name))
}

/// The document for at most one object, read at `path`: a to-one related
/// resource is `null` when the relationship is empty.
pub fn single_at<'a, O: Organization>(
    ty: &'static ResourceType,
    org: &'a O,
    e: Option<&'a Entry>,
    query: &'a Query,
    path: &str,
) -> Result<Document<'a, O>, TooManyIncluded> {
    let mut compound = Compound::new(org);
    let data = e.map(|e| {
        compound.primary(ty, e);
        compound.walk(ty, e, &query.include);
        Object {
            ty,
            entry: e,
            include: Some(&query.include),
        }
    });
    let mut params = query.kept.clone();
    params.retain(|(k, _)| k == "include" || k.starts_with("fields["));
    compound.document(
        query,
        None,
        json!({"self": with_params(path, &params)}),
        Data::One(data),
    )
}

/// The document for a collection request.
pub fn collection<'a, O: Organization>(
    ty: &'static ResourceType,
    org: &'a O,
    query: &'a Query,
) -> Result<Document<'a, O>, TooManyIncluded> {
    collection_at(ty, org, query, &collection_path(ty))
}

/// A collection read at `path`, which its links repeat: the type's own
/// endpoint, or a to-many related resource.
pub fn collection_at<'a, O: Organization>(
    ty: &'static ResourceType,
    org: &'a O,
    query: &'a Query,
    path: &str,
) -> Result<Document<'a, O>, TooManyIncluded> {
    let (total, page) = select(ty, org, query);
    let mut compound = Compound::new(org);
    for e in &page {
        compound.primary(ty, e);
    }
    for e in &page {
        compound.walk(ty, e, &query.include);
    }
    let data = page
        .into_iter()
        .map(|e| Object {
            ty,
            entry: e,
            include: Some(&query.include),
        })
        .collect();
    compound.document(
        query,
        Some(total),
        page_links(path, query, total),
        Data::Many(data),
    )
}

impl<'o, O: Organization> Compound<'o, O> {
    /// The document of `data` with what was included for it.
    fn document(
        self,
        query: &'o Query,
        total: Option<usize>,
        links: Value,
        data: Data<'o>,
    ) -> Result<Document<'o, O>, TooManyIncluded> {
        if let Some(overflow) = self.overflow {
            return Err(overflow);
        }
        Ok(Document {
            org: self.org,
            query,
            total,
            links,
            data,
            included: (!query.include.is_empty()).then_some(self.included),
        })
    }
}

fn page_links(path: &str, query: &Query, total: usize) -> Value {
    let link = |page: Page| {
        let mut params = query.kept.clone();
        match page {
            Page::Number { number, size } => {
                params.push(("page[number]".into(), number.to_string()));
                params.push(("page[size]".into(), size.to_string()));
            }
            Page::Offset { offset, limit } => {
                params.push(("page[offset]".into(), offset.to_string()));
                params.push(("page[limit]".into(), limit.to_string()));
            }
        }
        Value::String(with_params(path, &params))
    };
    let (first, prev, next, last) = match query.page {
        Page::Number { number, size } => {
            let last = total.div_ceil(size).max(1);
            let at = |number| Page::Number { number, size };
            (
                at(1),
                (number > 1).then(|| at((number - 1).min(last))),
                (number < last).then(|| at(number + 1)),
                at(last),
            )
        }
        Page::Offset { offset, limit } => {
            let at = |offset| Page::Offset { offset, limit };
            (
                at(0),
                (offset > 0).then(|| {
                    at(offset
                        .saturating_sub(limit)
                        .min(total.saturating_sub(limit)))
                }),
                (offset + limit < total).then(|| at(offset + limit)),
                at(total.saturating_sub(limit)),
            )
        }
    };
    json!({
        "self": link(query.page),
        "first": link(first),
        "prev": prev.map_or(Value::Null, link),
        "next": next.map_or(Value::Null, link),
        "last": link(last),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::query::{self, Target};
    use crate::api::store::Names;
    use crate::crd::registry::by_name;
    use crate::index::resources::Org;
    use jiff::Timestamp;

    /// A document as the value it serializes to.
    fn value<O: Organization>(doc: Result<Document<'_, O>, TooManyIncluded>) -> Value {
        serde_json::to_value(doc.expect("a document")).expect("documents serialize")
    }

    fn requirement(
        name: &str,
        created: i64,
        assignee: Option<&str>,
        persona: Option<&str>,
    ) -> Entry {
        let mut attributes = vec![Attr::Unset; 9];
        attributes[0] = format!("Title {name}").as_str().into();
        attributes[8] = assignee.map_or(Attr::Unset, Attr::from);
        Entry {
            name: name.into(),
            resource_version: "1".into(),
            created: Timestamp::from_second(created).unwrap(),
            updated: Timestamp::from_second(created).unwrap(),
            archived: false,
            attributes: attributes.into(),
            relationships: vec![
                persona
                    .map(|p| Box::new([p.into()]) as Names)
                    .unwrap_or_default(),
                Names::default(),
                Names::default(),
                Names::default(),
            ]
            .into(),
        }
    }

    fn persona(name: &str) -> Entry {
        Entry {
            name: name.into(),
            resource_version: "1".into(),
            created: Timestamp::from_second(1).unwrap(),
            updated: Timestamp::from_second(1).unwrap(),
            archived: false,
            attributes: vec![Attr::from("P"), Attr::Unset, Attr::Unset].into(),
            relationships: Vec::new().into(),
        }
    }

    fn org() -> Org {
        let (req, per) = (by_name("requirement").unwrap(), by_name("persona").unwrap());
        let mut org = Org::default();
        org.upsert(req, requirement("b", 10, Some("bob"), Some("p1")));
        org.upsert(req, requirement("a", 10, None, Some("p1")));
        org.upsert(req, requirement("c", 5, Some("alice"), None));
        let mut archived = requirement("d", 1, Some("zed"), Some("p1"));
        archived.archived = true;
        org.upsert(req, archived);
        org.upsert(per, persona("p1"));
        org
    }

    fn ids(ty: &'static ResourceType, org: &Org, raw: &str) -> Vec<String> {
        let q = query::parse(ty, raw, Target::Collection).unwrap();
        value(collection(ty, org, &q))["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["id"].as_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn default_order_is_oldest_first_then_id_and_unset_values_sort_last() {
        let (req, org) = (by_name("requirement").unwrap(), org());
        assert_eq!(ids(req, &org, ""), ["c", "a", "b"]);
        assert_eq!(ids(req, &org, "sort=assignee"), ["c", "b", "a"]);
        assert_eq!(ids(req, &org, "sort=-assignee"), ["b", "c", "a"]);
        assert_eq!(ids(req, &org, "sort=-created_at,-id"), ["b", "a", "c"]);
        assert_eq!(ids(req, &org, "filter[archived]=true"), ["d"]);
    }

    #[test]
    fn sorted_pages_partition_the_whole_order() {
        let req = by_name("requirement").unwrap();
        let mut org = Org::default();
        // Many ties on the sort key, so the fallback order decides.
        for i in 0..37 {
            let assignee = ["ann", "bob", "cy"][i % 3];
            let unset = i % 5 == 0;
            org.upsert(
                req,
                requirement(
                    &format!("r{i:02}"),
                    (i % 4) as i64,
                    (!unset).then_some(assignee),
                    None,
                ),
            );
        }
        for sort in [
            "assignee",
            "-assignee",
            "-assignee,-id",
            "created_at",
            "-created_at,assignee",
        ] {
            let all = ids(req, &org, &format!("sort={sort}&page[size]=100"));
            assert_eq!(all.len(), 37);
            for size in [1, 4, 10] {
                let mut paged = Vec::new();
                for number in 1..=37usize.div_ceil(size) {
                    paged.extend(ids(
                        req,
                        &org,
                        &format!("sort={sort}&page[number]={number}&page[size]={size}"),
                    ));
                }
                assert_eq!(paged, all, "sort={sort} size={size}");
            }
        }
        // Unset values last, ties by creation then id.
        let all = ids(req, &org, "sort=assignee&page[size]=100");
        assert_eq!(&all[..3], ["r12", "r24", "r36"].map(String::from));
        assert!(
            all[29..]
                .iter()
                .all(|id| id[1..].parse::<usize>().unwrap() % 5 == 0)
        );
    }

    #[test]
    fn kept_orders_answer_what_sorting_answers_as_objects_change() {
        let req = by_name("requirement").unwrap();
        let mut sorting = Org::default();
        let upsert = |org: &mut Org, i: usize, version: usize| {
            let assignee = ["ann", "Bob", "cy", "bob"][(i + version) % 4];
            let mut e = requirement(
                &format!("r{i:02}"),
                (i % 4) as i64,
                (!i.is_multiple_of(5)).then_some(assignee),
                i.is_multiple_of(3).then_some("p1"),
            );
            e.archived = i.is_multiple_of(7);
            let status = req.attributes.iter().position(|a| a.field == "status");
            e.attributes[status.unwrap()] = ["draft", "active", "active"][(i + version) % 3].into();
            e.resource_version = version.to_string().into();
            org.upsert(req, e);
        };
        for i in 0..40 {
            upsert(&mut sorting, i, 1);
        }
        let queries = [
            "sort=assignee&filter[status]=active",
            "sort=-assignee,-id",
            "sort=title&filter[status]=rejected",
            "sort=title&filter[persona]=p1",
            "sort=-created_at,assignee&page[size]=7&page[number]=2",
            "sort=-assignee&filter[archived]=true",
            "sort=assignee&filter[search]=r1",
            "sort=id&page[offset]=35&page[limit]=10",
            "sort=title&filter[status]=draft,active,draft",
            "sort=title&filter[status]=draft",
        ];
        // The first four orders are kept (one filter on one enum value
        // parts an order by that attribute: the third serves the last);
        // past that cap, orders sort per request (and answer the same).
        let mut kept = sorting.clone();
        let order = |raw: &str| {
            let q = query::parse(req, raw, Target::Collection).unwrap();
            Order::of(req, &q).map(|(order, value)| (order, value.map(str::to_owned)))
        };
        for raw in queries {
            kept.keep_sorted(order(raw).unwrap().0);
        }
        let is_kept: Vec<bool> = queries
            .iter()
            .map(|raw| {
                let (order, value) = order(raw).unwrap();
                kept.sorted(&order, value.as_deref()).is_some()
            })
            .collect();
        assert_eq!(
            is_kept,
            [
                true, true, true, true, false, false, false, false, true, true
            ]
        );
        let same = |sorting: &Org, kept: &Org, when: &str| {
            for raw in queries {
                let q = query::parse(req, raw, Target::Collection).unwrap();
                let (a, b) = (
                    value(collection(req, sorting, &q)),
                    value(collection(req, kept, &q)),
                );
                assert_eq!(a, b, "{raw} {when}");
            }
        };
        same(&sorting, &kept, "at first");
        // Changes reach the kept orders: new values, removals, archiving.
        for org in [&mut sorting, &mut kept] {
            for i in (0..40).step_by(3) {
                upsert(org, i, 2);
            }
            for i in (1..40).step_by(8) {
                org.remove(req, &format!("r{i:02}"));
            }
            upsert(org, 41, 1);
        }
        same(&sorting, &kept, "after changes");
    }

    #[test]
    fn offset_links_at_both_edges() {
        let (req, org) = (by_name("requirement").unwrap(), org());
        let q = query::parse(req, "page[offset]=0&page[limit]=2", Target::Collection).unwrap();
        let doc = value(collection(req, &org, &q));
        assert_eq!(doc["meta"]["total"], 3);
        assert_eq!(doc["links"]["prev"], Value::Null);
        assert_eq!(
            doc["links"]["next"],
            "/api/v1/requirements?page%5Boffset%5D=2&page%5Blimit%5D=2"
        );
        assert_eq!(
            doc["links"]["last"],
            "/api/v1/requirements?page%5Boffset%5D=1&page%5Blimit%5D=2"
        );
        let q = query::parse(req, "page[offset]=2&page[limit]=2", Target::Collection).unwrap();
        let doc = value(collection(req, &org, &q));
        assert_eq!(doc["data"].as_array().unwrap().len(), 1);
        assert_eq!(doc["links"]["next"], Value::Null);
        assert_eq!(
            doc["links"]["prev"],
            "/api/v1/requirements?page%5Boffset%5D=0&page%5Blimit%5D=2"
        );
    }

    #[test]
    fn includes_are_unique_and_inverses_leave_archived_objects_out() {
        let (req, per, org) = (
            by_name("requirement").unwrap(),
            by_name("persona").unwrap(),
            org(),
        );
        let q = query::parse(req, "include=persona", Target::Collection).unwrap();
        let doc = value(collection(req, &org, &q));
        assert_eq!(doc["included"].as_array().unwrap().len(), 1, "{doc}");
        assert_eq!(doc["included"][0]["id"], "p1");
        let q = query::parse(per, "include=requirements", Target::Single).unwrap();
        let p1 = org.get(per, "p1").unwrap();
        let doc = value(single(per, &org, p1, &q));
        let rel = &doc["data"]["relationships"]["requirements"];
        assert_eq!(rel["meta"]["count"], 2);
        assert_eq!(
            rel["data"],
            json!([{"type": "requirement", "id": "a"}, {"type": "requirement", "id": "b"}])
        );
        assert_eq!(rel["links"]["related"], "/api/v1/personas/p1/requirements");
        assert_eq!(
            rel["links"]["self"],
            "/api/v1/personas/p1/relationships/requirements"
        );
        // Without the include, an inverse carries its count and link only.
        let q = query::parse(per, "", Target::Single).unwrap();
        let doc = value(single(per, &org, p1, &q));
        assert!(
            doc["data"]["relationships"]["requirements"]
                .get("data")
                .is_none()
        );
        assert!(doc.get("included").is_none());
    }

    #[test]
    fn includes_are_capped() {
        let (req, per) = (by_name("requirement").unwrap(), by_name("persona").unwrap());
        let mut org = Org::default();
        org.upsert(per, persona("p1"));
        for i in 0..MAX_INCLUDED {
            org.upsert(req, requirement(&format!("r{i:04}"), 1, None, Some("p1")));
        }
        let q = query::parse(per, "include=requirements", Target::Single).unwrap();
        let p1 = org.get(per, "p1").unwrap().clone();
        let doc = value(single(per, &org, &p1, &q));
        assert_eq!(doc["included"].as_array().unwrap().len(), MAX_INCLUDED);
        org.upsert(req, requirement("r9999", 1, None, Some("p1")));
        assert_eq!(
            single(per, &org, &p1, &q).err(),
            Some(TooManyIncluded::Objects)
        );
        let q = query::parse(per, "include=requirements", Target::Collection).unwrap();
        assert_eq!(
            collection(per, &org, &q).err(),
            Some(TooManyIncluded::Objects)
        );
    }

    #[test]
    fn search_matches_searchable_text_regardless_of_case() {
        let req = by_name("requirement").unwrap();
        let mut e = requirement("r1", 1, Some("Ärger Ltd"), None);
        e.attributes[2] = "Data ANALYST".into();
        e.attributes[1] = "Straße und NAÏVE".into();
        let found = |needle: &str| found(req, &e, &needle.to_lowercase());
        assert!(found("title R1"));
        assert!(found("analyst"));
        assert!(found("a analy"));
        assert!(found("naïve"));
        assert!(found("STRAßE"));
        // Lowercasing, not full case folding: ß is not "ss".
        assert!(!found("strasse"));
        assert!(found(""));
        // Not searchable (the assignee), or not there.
        assert!(!found("ärger"));
        assert!(!found("analystx"));
    }

    #[test]
    fn collections_sort_text_regardless_of_case() {
        let req = by_name("requirement").unwrap();
        let mut org = Org::default();
        for (name, assignee) in [("a", "bob"), ("b", "Alice"), ("c", "alice"), ("d", "Carol")] {
            org.upsert(req, requirement(name, 1, Some(assignee), None));
        }
        assert_eq!(ids(req, &org, "sort=assignee"), ["b", "c", "a", "d"]);
        assert_eq!(ids(req, &org, "sort=-assignee"), ["d", "a", "c", "b"]);
    }
}
