//! Request documents for POST and PATCH, checked against the type's
//! declaration and turned into spec changes. Every problem is reported at
//! once, each with a `source.pointer`: structure errors are 400, a wrong
//! type or id 409, invalid values 422.

use http::StatusCode;
use serde_json::{Map, Value};

use super::error::{ErrorObject, Problem};
use crate::crd::registry::{self, AttrKind, Field, Relationship, ResourceType};

/// What a request document asks to set. `Null` removes an optional value.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Changes {
    /// Spec field and new value (attributes and `archived`).
    pub fields: Vec<(&'static str, Value)>,
    /// Relationship index and the names it should point at.
    pub relationships: Vec<(usize, Vec<String>)>,
}

impl Changes {
    /// The spec for a new object: the merge patch without its removals.
    pub fn spec(&self, ty: &ResourceType) -> Map<String, Value> {
        let mut spec = self.merge_patch(ty);
        spec.retain(|_, v| !v.is_null());
        spec
    }

    /// A JSON merge patch of the spec: `null` deletes.
    pub fn merge_patch(&self, ty: &ResourceType) -> Map<String, Value> {
        let mut spec = Map::new();
        for (field, value) in &self.fields {
            spec.insert((*field).to_owned(), value.clone());
        }
        for (i, names) in &self.relationships {
            let r = &ty.relationships[*i];
            let value = match (r.many, names.first()) {
                (true, _) if names.is_empty() => Value::Null,
                (true, _) => names.clone().into(),
                (false, Some(name)) => name.clone().into(),
                (false, None) => Value::Null,
            };
            spec.insert(r.field.to_owned(), value);
        }
        spec
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Intent {
    Create,
    /// Update of the object with this id.
    Update,
}

fn bad(detail: impl Into<String>, pointer: &str) -> Problem {
    ErrorObject::new(StatusCode::BAD_REQUEST, "invalid_document", detail)
        .pointer(pointer)
        .into()
}

fn invalid(detail: impl Into<String>, pointer: String) -> ErrorObject {
    ErrorObject::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_attribute",
        detail,
    )
    .pointer(pointer)
}

/// Parses and checks a request document for `ty`; `id` is the URL's for an
/// update.
pub fn parse(
    ty: &ResourceType,
    body: &[u8],
    intent: Intent,
    id: Option<&str>,
) -> Result<Changes, Problem> {
    let doc: Value = serde_json::from_slice(body)
        .map_err(|e| bad(format!("the body is not valid JSON: {e}"), ""))?;
    let data = doc
        .get("data")
        .ok_or_else(|| bad("the document has no data member", ""))?
        .as_object()
        .ok_or_else(|| bad("data must be a resource object", "/data"))?;
    check_type(ty, data)?;
    check_id(intent, id, data)?;
    let mut changes = Changes::default();
    let mut errors = Vec::new();
    match data.get("attributes") {
        None => {}
        Some(Value::Object(attributes)) => {
            for (name, value) in attributes {
                check_attribute(ty, name, value, &mut changes, &mut errors);
            }
        }
        Some(_) => return Err(bad("attributes must be an object", "/data/attributes")),
    }
    match data.get("relationships") {
        None => {}
        Some(Value::Object(relationships)) => {
            for (name, value) in relationships {
                check_relationship(ty, name, value, &mut changes, &mut errors)?;
            }
        }
        Some(_) => {
            return Err(bad(
                "relationships must be an object",
                "/data/relationships",
            ));
        }
    }
    errors.extend(missing_required(ty, intent, &changes));
    if errors.is_empty() {
        Ok(changes)
    } else {
        Err(Problem::many(StatusCode::UNPROCESSABLE_ENTITY, errors))
    }
}

/// The resource object's type is the endpoint's (409 otherwise).
fn check_type(ty: &ResourceType, data: &Map<String, Value>) -> Result<(), Problem> {
    match data.get("type") {
        None => Err(bad("the resource object has no type", "/data/type")),
        Some(Value::String(t)) if t == ty.name => Ok(()),
        Some(other) => Err(ErrorObject::new(
            StatusCode::CONFLICT,
            "type_conflict",
            format!("this endpoint takes type {:?}, not {other}", ty.name),
        )
        .pointer("/data/type")
        .into()),
    }
}

/// A new object has no id (the server assigns it); an update's is the
/// URL's.
fn check_id(intent: Intent, id: Option<&str>, data: &Map<String, Value>) -> Result<(), Problem> {
    match (intent, data.get("id")) {
        (Intent::Create, None) => Ok(()),
        (Intent::Create, Some(_)) => Err(ErrorObject::new(
            StatusCode::FORBIDDEN,
            "client_id_unsupported",
            "ids are assigned by the server; leave id out",
        )
        .pointer("/data/id")
        .into()),
        (Intent::Update, None) => Err(bad("the resource object has no id", "/data/id")),
        (Intent::Update, Some(Value::String(given))) if Some(given.as_str()) == id => Ok(()),
        (Intent::Update, Some(other)) => Err(ErrorObject::new(
            StatusCode::CONFLICT,
            "id_conflict",
            format!(
                "the URL names {:?}, the document {other}",
                id.unwrap_or_default()
            ),
        )
        .pointer("/data/id")
        .into()),
    }
}

/// Required attributes a new object lacks, or an update removes.
fn missing_required(ty: &ResourceType, intent: Intent, changes: &Changes) -> Vec<ErrorObject> {
    ty.attributes
        .iter()
        .filter(|a| a.required)
        .filter(
            |a| match changes.fields.iter().find(|(f, _)| *f == a.field) {
                Some((_, v)) => v.is_null(),
                None => intent == Intent::Create,
            },
        )
        .map(|a| {
            invalid(
                format!("{} is required", a.name),
                format!("/data/attributes/{}", a.name),
            )
        })
        .collect()
}

fn check_attribute(
    ty: &ResourceType,
    name: &str,
    value: &Value,
    changes: &mut Changes,
    errors: &mut Vec<ErrorObject>,
) {
    let pointer = format!("/data/attributes/{name}");
    let field = match ty.field(name) {
        Some(Field::Attribute(i)) => &ty.attributes[i],
        Some(Field::Archived) => {
            match value {
                Value::Bool(_) => changes.fields.push(("archived", value.clone())),
                _ => errors.push(invalid("archived must be true or false", pointer)),
            }
            return;
        }
        Some(Field::CreatedAt | Field::UpdatedAt) => {
            errors.push(invalid(format!("{name} is read-only"), pointer));
            return;
        }
        Some(Field::Relationship(_) | Field::Inverse(_)) => {
            errors.push(invalid(
                format!("{name} is a relationship; set it under relationships"),
                pointer,
            ));
            return;
        }
        None => {
            errors.push(invalid(
                format!("{name:?} is not an attribute of {}", ty.name),
                pointer,
            ));
            return;
        }
    };
    let value = match (value, field.kind) {
        (Value::Null, _) => Ok(Value::Null),
        (Value::String(s), AttrKind::String) => Ok(s.clone().into()),
        (Value::String(s), AttrKind::Enum(allowed)) if allowed.contains(&s.as_str()) => {
            Ok(s.clone().into())
        }
        (_, AttrKind::Enum(allowed)) => {
            Err(format!("{name} must be one of {}", allowed.join(", ")))
        }
        (Value::String(s), AttrKind::Time) => s
            .parse::<jiff::Timestamp>()
            .map(|t| t.to_string().into())
            .map_err(|_| format!("{name} must be an RFC 3339 timestamp")),
        (Value::Array(items), AttrKind::List) if items.iter().all(Value::is_string) => {
            Ok(value.clone())
        }
        (_, AttrKind::List) => Err(format!("{name} must be a list of strings")),
        (_, AttrKind::String) => Err(format!("{name} must be a string")),
        (_, AttrKind::Time) => Err(format!("{name} must be an RFC 3339 timestamp")),
    };
    match value {
        Ok(v) => changes.fields.push((field.field, v)),
        Err(detail) => errors.push(invalid(detail, pointer)),
    }
}

fn check_relationship(
    ty: &ResourceType,
    name: &str,
    value: &Value,
    changes: &mut Changes,
    errors: &mut Vec<ErrorObject>,
) -> Result<(), Problem> {
    let pointer = format!("/data/relationships/{name}");
    let (i, rel) = match ty.field(name) {
        Some(Field::Relationship(i)) => (i, &ty.relationships[i]),
        Some(Field::Inverse(i)) => {
            let inv = &ty.inverses[i];
            errors.push(invalid(
                format!(
                    "{name} is computed from {}.{}; change it there",
                    inv.source, inv.via
                ),
                pointer,
            ));
            return Ok(());
        }
        _ => {
            errors.push(invalid(
                format!("{name:?} is not a relationship of {}", ty.name),
                pointer,
            ));
            return Ok(());
        }
    };
    let data = value
        .get("data")
        .ok_or_else(|| bad("a relationship needs a data member", &pointer))?;
    if let Some(names) = linkage_names(rel, data, &format!("{pointer}/data"), errors) {
        changes.relationships.push((i, names));
    }
    Ok(())
}

/// The body of a write to `/{type}/{id}/relationships/{name}`: linkage for
/// the forward relationship `i` of `ty`, one object or `null` for to-one,
/// an array for to-many. Returns the names, without duplicates.
pub fn parse_linkage(ty: &ResourceType, i: usize, body: &[u8]) -> Result<Vec<String>, Problem> {
    let doc: Value = serde_json::from_slice(body)
        .map_err(|e| bad(format!("the body is not valid JSON: {e}"), ""))?;
    let data = doc
        .get("data")
        .ok_or_else(|| bad("the document has no data member", ""))?;
    let mut errors = Vec::new();
    match linkage_names(&ty.relationships[i], data, "/data", &mut errors) {
        Some(names) if errors.is_empty() => Ok(names),
        _ => Err(Problem::many(StatusCode::UNPROCESSABLE_ENTITY, errors)),
    }
}

/// The names a relationship's `data` (at `pointer`) links to, or `None`
/// with the problems in `errors`.
fn linkage_names(
    rel: &Relationship,
    data: &Value,
    pointer: &str,
    errors: &mut Vec<ErrorObject>,
) -> Option<Vec<String>> {
    let name = rel.name;
    let linkage = |v: &Value, at: String, errors: &mut Vec<ErrorObject>| -> Option<String> {
        let (Some(t), Some(id)) = (
            v.get("type").and_then(Value::as_str),
            v.get("id").and_then(Value::as_str),
        ) else {
            errors.push(invalid("linkage needs a type and an id", at));
            return None;
        };
        if t != rel.target {
            errors.push(invalid(
                format!("{name} takes type {:?}, not {t:?}", rel.target),
                format!("{at}/type"),
            ));
            return None;
        }
        if !crate::crd::is_object_name(id) {
            errors.push(invalid(
                "id must be an object name: lowercase letters, digits, '-' and '.'",
                format!("{at}/id"),
            ));
            return None;
        }
        Some(id.to_owned())
    };
    match (rel.many, data) {
        (false, Value::Null) => Some(Vec::new()),
        (false, Value::Object(_)) => linkage(data, pointer.to_owned(), errors).map(|n| vec![n]),
        (true, Value::Array(items)) => {
            let mut names: Vec<String> = Vec::new();
            let mut ok = true;
            for (j, item) in items.iter().enumerate() {
                match linkage(item, format!("{pointer}/{j}"), errors) {
                    Some(n) if !names.contains(&n) => names.push(n),
                    Some(_) => {}
                    None => ok = false,
                }
            }
            ok.then_some(names)
        }
        (false, _) => {
            errors.push(invalid(
                format!("{name} takes one linkage object or null"),
                pointer.to_owned(),
            ));
            None
        }
        (true, _) => {
            errors.push(invalid(
                format!("{name} takes an array of linkage objects"),
                pointer.to_owned(),
            ));
            None
        }
    }
}

/// Where a field of the spec, as the API server names it in a validation
/// error (`spec.title`, `spec.components[2]`), is in a request document.
pub fn pointer_for(ty: &ResourceType, field: &str) -> Option<String> {
    let path = field.strip_prefix("spec.")?;
    let head = path.split(['.', '[']).next()?;
    if let Some(a) = ty.attributes.iter().find(|a| a.field == head) {
        return Some(format!("/data/attributes/{}", a.name));
    }
    if head == "archived" {
        return Some(format!("/data/attributes/{}", registry::ARCHIVED));
    }
    ty.relationships
        .iter()
        .find(|r| r.field == head)
        .map(|r| format!("/data/relationships/{}", r.name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::registry::by_name;
    use serde_json::json;

    fn req() -> &'static ResourceType {
        by_name("requirement").unwrap()
    }

    fn pointers(p: &Problem) -> Vec<(&str, &str)> {
        p.errors
            .iter()
            .map(|e| {
                (
                    e.status.as_str(),
                    e.source
                        .as_ref()
                        .and_then(|s| s.pointer.as_deref())
                        .unwrap_or(""),
                )
            })
            .collect()
    }

    #[test]
    fn a_create_document_becomes_a_spec() {
        let body = json!({"data": {"type": "requirement", "attributes": {
            "title": "Export", "as_a": "Analyst", "priority": "high", "tags": ["a"],
            "assignee": null
        }, "relationships": {
            "persona": {"data": {"type": "persona", "id": "p1"}},
            "components": {"data": [{"type": "component", "id": "c1"}, {"type": "component", "id": "c1"}]}
        }}});
        let changes = parse(req(), body.to_string().as_bytes(), Intent::Create, None).unwrap();
        assert_eq!(
            Value::Object(changes.spec(req())),
            json!({"title": "Export", "asA": "Analyst", "priority": "high", "tags": ["a"],
                   "persona": "p1", "components": ["c1"]})
        );
        let patch = json!({"data": {"type": "requirement", "id": "r1", "attributes": {
            "description": null, "archived": false
        }, "relationships": {"persona": {"data": null}, "components": {"data": []}}}});
        let changes = parse(
            req(),
            patch.to_string().as_bytes(),
            Intent::Update,
            Some("r1"),
        )
        .unwrap();
        assert_eq!(
            Value::Object(changes.merge_patch(req())),
            json!({"description": null, "archived": false, "persona": null, "components": null})
        );
    }

    #[test]
    fn every_invalid_member_is_reported_with_its_pointer() {
        let body = json!({"data": {"type": "requirement", "attributes": {
            "priority": "urgent", "tags": "one", "colour": "red", "created_at": "x",
            "persona": "p1"
        }, "relationships": {
            "use_cases": {"data": []},
            "team": {"data": {"type": "persona", "id": "t1"}},
            "components": {"data": {"type": "component", "id": "c1"}}
        }}});
        let p = parse(req(), body.to_string().as_bytes(), Intent::Create, None).unwrap_err();
        assert_eq!(p.status, StatusCode::UNPROCESSABLE_ENTITY);
        let mut got = pointers(&p);
        got.sort();
        assert_eq!(
            got,
            [
                ("422", "/data/attributes/colour"),
                ("422", "/data/attributes/created_at"),
                ("422", "/data/attributes/persona"),
                ("422", "/data/attributes/priority"),
                ("422", "/data/attributes/tags"),
                ("422", "/data/attributes/title"),
                ("422", "/data/relationships/components/data"),
                ("422", "/data/relationships/team/data/type"),
                ("422", "/data/relationships/use_cases"),
            ]
        );
    }

    #[test]
    fn structure_type_and_id_problems() {
        let status = |body: Value, intent, id| {
            let p = parse(req(), body.to_string().as_bytes(), intent, id).unwrap_err();
            (p.status.as_u16(), pointers(&p)[0].1.to_owned())
        };
        let create = Intent::Create;
        assert_eq!(status(json!({}), create, None), (400, "".into()));
        assert_eq!(
            status(json!({"data": []}), create, None),
            (400, "/data".into())
        );
        assert_eq!(
            status(json!({"data": {"attributes": {}}}), create, None),
            (400, "/data/type".into())
        );
        assert_eq!(
            status(json!({"data": {"type": "persona"}}), create, None),
            (409, "/data/type".into())
        );
        assert_eq!(
            status(
                json!({"data": {"type": "requirement", "id": "x"}}),
                create,
                None
            ),
            (403, "/data/id".into())
        );
        let update = Intent::Update;
        assert_eq!(
            status(json!({"data": {"type": "requirement"}}), update, Some("r1")),
            (400, "/data/id".into())
        );
        assert_eq!(
            status(
                json!({"data": {"type": "requirement", "id": "r2"}}),
                update,
                Some("r1")
            ),
            (409, "/data/id".into())
        );
        assert_eq!(
            status(
                json!({"data": {"type": "requirement", "id": "r1", "attributes": {"title": null}}}),
                update,
                Some("r1")
            ),
            (422, "/data/attributes/title".into())
        );
        let p = parse(req(), b"{not json", create, None).unwrap_err();
        assert_eq!(p.status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn server_field_paths_map_to_pointers() {
        assert_eq!(
            pointer_for(req(), "spec.asA").as_deref(),
            Some("/data/attributes/as_a")
        );
        assert_eq!(
            pointer_for(req(), "spec.components[3]").as_deref(),
            Some("/data/relationships/components")
        );
        assert_eq!(pointer_for(req(), "metadata.name"), None);
    }
}
