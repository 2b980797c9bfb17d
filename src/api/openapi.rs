//! The OpenAPI 3.1 description of the JSON:API, generated from the same
//! declarations the engine serves, so it cannot drift from the behaviour.

use serde_json::{Map, Value, json};

use super::document::API_PREFIX;
use super::error::MEDIA_TYPE;
use super::query::{DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE};
use crate::crd::registry::{AttrKind, Attribute, ResourceType, TYPES};

pub fn attribute_schema(a: &Attribute) -> Value {
    match a.kind {
        AttrKind::String => json!({"type": "string"}),
        AttrKind::Enum(values) => json!({"type": "string", "enum": values}),
        AttrKind::List => json!({"type": "array", "items": {"type": "string"}}),
        AttrKind::Time => json!({"type": "string", "format": "date-time"}),
    }
}

fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn content(schema: Value) -> Value {
    json!({ MEDIA_TYPE: {"schema": schema} })
}

fn error_response(description: &str) -> Value {
    json!({"description": description, "content": content(schema_ref("errors"))})
}

fn type_schemas(ty: &ResourceType, schemas: &mut Map<String, Value>) {
    let mut attributes = Map::new();
    for a in ty.attributes {
        attributes.insert(a.name.into(), attribute_schema(a));
    }
    attributes.insert("archived".into(), json!({"type": "boolean"}));
    let mut read_only = attributes.clone();
    for t in ["created_at", "updated_at"] {
        read_only.insert(
            t.into(),
            json!({"type": "string", "format": "date-time", "readOnly": true}),
        );
    }
    let required: Vec<&str> = ty
        .attributes
        .iter()
        .filter(|a| a.required)
        .map(|a| a.name)
        .collect();
    let mut relationships = Map::new();
    for r in ty.relationships {
        let data = if r.many {
            json!({"type": "array", "items": schema_ref(&format!("{}_linkage", r.target))})
        } else {
            json!({"oneOf": [schema_ref(&format!("{}_linkage", r.target)), {"type": "null"}]})
        };
        relationships.insert(
            r.name.into(),
            json!({"type": "object", "properties": {"data": data}, "required": ["data"]}),
        );
    }
    let mut read_relationships = relationships.clone();
    for i in ty.inverses {
        read_relationships.insert(
            i.name.into(),
            json!({
                "type": "object",
                "readOnly": true,
                "description": format!("Computed from {}.{}; data appears when included.", i.source, i.via),
                "properties": {
                    "data": {"type": "array", "items": schema_ref(&format!("{}_linkage", i.source))},
                    "links": schema_ref("relationship_links"),
                    "meta": {"type": "object", "properties": {"count": {"type": "integer"}}}
                }
            }),
        );
    }
    let name = ty.name;
    schemas.insert(
        format!("{name}_linkage"),
        json!({
            "type": "object",
            "properties": {"type": {"const": name}, "id": {"type": "string"}},
            "required": ["type", "id"]
        }),
    );
    schemas.insert(
        format!("{name}_resource"),
        json!({
            "type": "object",
            "properties": {
                "type": {"const": name},
                "id": {"type": "string"},
                "attributes": {"type": "object", "properties": read_only},
                "relationships": {"type": "object", "properties": read_relationships},
                "links": {"type": "object", "properties": {"self": {"type": "string"}}}
            },
            "required": ["type", "id"]
        }),
    );
    let write = |with_id: bool, required: &[&str]| {
        let mut props = json!({
            "type": {"const": name},
            "attributes": {"type": "object", "properties": attributes, "additionalProperties": false},
            "relationships": {"type": "object", "properties": relationships, "additionalProperties": false}
        });
        let mut needed = vec!["type"];
        if with_id {
            props["id"] = json!({"type": "string"});
            needed.push("id");
        }
        if !required.is_empty() {
            props["attributes"]["required"] = json!(required);
            needed.push("attributes");
        }
        let data = json!({"type": "object", "properties": props, "required": needed});
        json!({"type": "object", "properties": {"data": data}, "required": ["data"]})
    };
    schemas.insert(format!("{name}_create"), write(false, &required));
    schemas.insert(format!("{name}_update"), write(true, &[]));
    schemas.insert(
        format!("{name}_document"),
        json!({
            "type": "object",
            "properties": {
                "data": schema_ref(&format!("{name}_resource")),
                "included": {"type": "array", "items": {"type": "object"}},
                "links": {"type": "object"},
                "jsonapi": {"type": "object"}
            },
            "required": ["data"]
        }),
    );
    schemas.insert(
        format!("{name}_collection"),
        json!({
            "type": "object",
            "properties": {
                "data": {"type": "array", "items": schema_ref(&format!("{name}_resource"))},
                "included": {"type": "array", "items": {"type": "object"}},
                "links": schema_ref("pagination_links"),
                "meta": {"type": "object", "properties": {"total": {"type": "integer"}}},
                "jsonapi": {"type": "object"}
            },
            "required": ["data", "links", "meta"]
        }),
    );
}

fn parameter(name: &str, description: &str, schema: Value) -> Value {
    json!({"name": name, "in": "query", "required": false, "description": description, "schema": schema})
}

fn collection_parameters(ty: &ResourceType) -> Vec<Value> {
    let mut params = vec![
        parameter(
            "filter[search]",
            "Case-insensitive text in any text attribute.",
            json!({"type": "string"}),
        ),
        parameter(
            "filter[id]",
            "Comma-separated ids.",
            json!({"type": "string"}),
        ),
        parameter(
            "filter[archived]",
            "true serves archived objects instead of live ones.",
            json!({"type": "boolean", "default": false}),
        ),
    ];
    for a in ty.attributes.iter().filter(|a| a.kind != AttrKind::Time) {
        params.push(parameter(
            &format!("filter[{}]", a.name),
            "Comma-separated values; any matches.",
            json!({"type": "string"}),
        ));
    }
    for r in ty.relationships {
        params.push(parameter(
            &format!("filter[{}]", r.name),
            &format!("Comma-separated {} ids.", r.target),
            json!({"type": "string"}),
        ));
    }
    for i in ty.inverses {
        params.push(parameter(
            &format!("filter[{}]", i.name),
            &format!("Comma-separated {} ids.", i.source),
            json!({"type": "string"}),
        ));
    }
    params.push(parameter(
        "sort",
        "Comma-separated fields, - for descending (id, created_at, updated_at, archived or a non-list attribute); enums sort in their declared order, text regardless of case.",
        json!({"type": "string"}),
    ));
    // Two ways to page, never mixed: only the first states its default,
    // because clients (Swagger UI among them) send every default they see.
    let size = json!({"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE});
    let mut sized = size.clone();
    sized["default"] = json!(DEFAULT_PAGE_SIZE);
    params.push(parameter(
        "page[number]",
        "Page number, from 1.",
        json!({"type": "integer", "minimum": 1}),
    ));
    params.push(parameter("page[size]", "Page size.", sized));
    params.push(parameter(
        "page[offset]",
        "Items to skip; with page[limit], instead of page[number] and page[size].",
        json!({"type": "integer", "minimum": 0}),
    ));
    params.push(parameter(
        "page[limit]",
        &format!("Items to return ({DEFAULT_PAGE_SIZE} if not given); with page[offset], instead of page[number] and page[size]."),
        size,
    ));
    params
}

fn shape_parameters() -> Vec<Value> {
    let mut params = vec![parameter(
        "include",
        "Comma-separated relationship paths, such as persona,use_cases.test_cases.",
        json!({"type": "string"}),
    )];
    for t in TYPES {
        params.push(parameter(
            &format!("fields[{}]", t.name),
            &format!("Comma-separated {} fields to return.", t.name),
            json!({"type": "string"}),
        ));
    }
    params
}

/// The linkage a relationship of `many`-ness holds, pointing at `target`.
fn linkage_data(target: &str, many: bool) -> Value {
    let linkage = schema_ref(&format!("{target}_linkage"));
    if many {
        json!({"type": "array", "items": linkage})
    } else {
        json!({"oneOf": [linkage, {"type": "null"}]})
    }
}

fn linkage_document(target: &str, many: bool) -> Value {
    json!({
        "type": "object",
        "properties": {"data": linkage_data(target, many), "links": schema_ref("relationship_links")},
        "required": ["data"]
    })
}

/// The related-resource and relationship paths of every relationship of
/// `ty`: reads for all, writes for the ones stored on `ty`.
fn relationship_paths(
    ty: &ResourceType,
    common: &dyn Fn(Map<String, Value>) -> Value,
    security: &dyn Fn(&str, &str) -> Value,
    paths: &mut Map<String, Value>,
) {
    let name = ty.name;
    let id_param =
        json!({"name": "id", "in": "path", "required": true, "schema": {"type": "string"}});
    let forward = ty
        .relationships
        .iter()
        .map(|r| (r.name, r.target, r.many, None));
    let inverse = ty.inverses.iter().map(|i| {
        (
            i.name,
            i.source,
            true,
            Some(format!("{}.{}", i.source, i.via)),
        )
    });
    for (rel, target, many, computed) in forward.chain(inverse) {
        let mut related = Map::new();
        let (content_schema, mut parameters) = if many {
            let target_type = crate::crd::registry::by_name(target).unwrap_or(ty);
            (
                schema_ref(&format!("{target}_collection")),
                collection_parameters(target_type),
            )
        } else {
            (
                json!({
                    "type": "object",
                    "properties": {"data": {"oneOf": [schema_ref(&format!("{target}_resource")), {"type": "null"}]}},
                    "required": ["data"]
                }),
                Vec::new(),
            )
        };
        parameters.extend(shape_parameters());
        related.insert(
            "200".into(),
            json!({"description": format!("The {target} objects {rel} points at"), "content": content(content_schema)}),
        );
        related.insert("400".into(), error_response("Bad query parameter"));
        related.insert("404".into(), error_response("Unknown id"));
        paths.insert(
            format!("{API_PREFIX}/{}/{{id}}/{rel}", ty.endpoint),
            json!({
                "parameters": [id_param.clone()],
                "get": {
                    "operationId": format!("get_{name}_{rel}"),
                    "summary": format!("Get the {target} objects a {name}'s {rel} points at"),
                    "parameters": parameters,
                    "security": security("read", target),
                    "responses": common(related),
                }
            }),
        );
        let mut read = Map::new();
        read.insert(
            "200".into(),
            json!({"description": "The linkage", "content": content(linkage_document(target, many))}),
        );
        read.insert("400".into(), error_response("Query parameters given"));
        read.insert("404".into(), error_response("Unknown id"));
        let mut item = json!({
            "parameters": [id_param.clone()],
            "get": {
                "operationId": format!("get_{name}_{rel}_relationship"),
                "summary": format!("Get the linkage of a {name}'s {rel}"),
                "security": security("read", if computed.is_some() { target } else { name }),
                "responses": common(read.clone()),
            }
        });
        if let Some(source) = computed {
            item["get"]["description"] = format!("Computed from {source}; change it there.").into();
            paths.insert(
                format!("{API_PREFIX}/{}/{{id}}/relationships/{rel}", ty.endpoint),
                item,
            );
            continue;
        }
        let mut write = read;
        for (status, what) in [
            ("400", "Malformed document"),
            ("404", "Unknown id or related id"),
            ("412", "If-Match does not match"),
            ("413", "Body too large"),
            ("415", "Content-Type is not the JSON:API media type"),
            ("422", "Invalid linkage"),
        ] {
            write.insert(status.into(), error_response(what));
        }
        let body = json!({"required": true, "content": content(linkage_document(target, many))});
        let mut operations = vec![("patch", "update", "Replace")];
        if many {
            operations.push(("post", "add_to", "Add to"));
            operations.push(("delete", "remove_from", "Remove from"));
        }
        for (method, verb, summary) in operations {
            item[method] = json!({
                "operationId": format!("{verb}_{name}_{rel}_relationship"),
                "summary": format!("{summary} a {name}'s {rel}"),
                "requestBody": body,
                "security": security("write", name),
                "responses": common(write.clone()),
            });
        }
        paths.insert(
            format!("{API_PREFIX}/{}/{{id}}/relationships/{rel}", ty.endpoint),
            item,
        );
    }
}

/// The document served at `/api/v1/open_api`.
pub fn document(token_url: &str) -> Value {
    let mut schemas = Map::new();
    let mut paths = Map::new();
    let mut scopes = Map::new();
    scopes.insert("*:read".into(), "Read every type".into());
    scopes.insert("*:write".into(), "Read and write every type".into());
    for ty in TYPES {
        type_schemas(ty, &mut schemas);
        let name = ty.name;
        scopes.insert(
            format!("{name}:read"),
            format!("Read {}", ty.endpoint).into(),
        );
        scopes.insert(
            format!("{name}:write"),
            format!("Read and write {}", ty.endpoint).into(),
        );
        // Scopes: this type's, and for reads of related objects theirs.
        let security_for = |access: &str, other: &str| {
            let mut needed = vec![format!("{name}:{access}")];
            if other != name {
                needed.push(format!("{other}:read"));
            }
            json!([{"bearer": []}, {"oauth2": needed}])
        };
        let security = |access: &str| security_for(access, name);
        let common = |mut responses: Map<String, Value>| {
            for (status, what) in [
                ("401", "Missing, invalid, expired or revoked token"),
                ("403", "The token lacks the scope"),
                ("406", "Accept does not allow the JSON:API media type"),
                ("429", "Rate limited; see Retry-After"),
            ] {
                responses.insert(status.into(), error_response(what));
            }
            Value::Object(responses)
        };
        let mut list = Map::new();
        list.insert("200".into(), json!({"description": "A page of objects", "content": content(schema_ref(&format!("{name}_collection")))}));
        list.insert("400".into(), error_response("Bad query parameter"));
        let mut create = Map::new();
        create.insert("201".into(), json!({"description": "Created", "content": content(schema_ref(&format!("{name}_document")))}));
        let mut one = Map::new();
        one.insert("200".into(), json!({"description": "The object", "content": content(schema_ref(&format!("{name}_document")))}));
        one.insert("404".into(), error_response("Unknown id"));
        let mut update = one.clone();
        let mut archive = Map::new();
        archive.insert("204".into(), json!({"description": "Archived"}));
        archive.insert("404".into(), error_response("Unknown id"));
        for (status, what) in [
            ("400", "Malformed document"),
            ("404", "Unknown related id"),
            ("409", "Type or id conflicts with the endpoint"),
            ("413", "Body too large"),
            ("415", "Content-Type is not the JSON:API media type"),
            ("422", "Invalid attributes or relationships"),
        ] {
            create.insert(status.into(), error_response(what));
            update.insert(status.into(), error_response(what));
        }
        update.insert("412".into(), error_response("If-Match does not match"));
        archive.insert("412".into(), error_response("If-Match does not match"));
        let id_param =
            json!({"name": "id", "in": "path", "required": true, "schema": {"type": "string"}});
        let mut list_params = collection_parameters(ty);
        list_params.extend(shape_parameters());
        paths.insert(
            format!("{API_PREFIX}/{}", ty.endpoint),
            json!({
                "get": {
                    "operationId": format!("list_{}", ty.endpoint),
                    "summary": format!("List {}", ty.endpoint),
                    "parameters": list_params,
                    "security": security("read"),
                    "responses": common(list),
                },
                "post": {
                    "operationId": format!("create_{name}"),
                    "summary": format!("Create a {name}"),
                    "requestBody": {"required": true, "content": content(schema_ref(&format!("{name}_create")))},
                    "security": security("write"),
                    "responses": common(create),
                }
            }),
        );
        paths.insert(
            format!("{API_PREFIX}/{}/{{id}}", ty.endpoint),
            json!({
                "parameters": [id_param],
                "get": {
                    "operationId": format!("get_{name}"),
                    "summary": format!("Get a {name}"),
                    "parameters": shape_parameters(),
                    "security": security("read"),
                    "responses": common(one),
                },
                "patch": {
                    "operationId": format!("update_{name}"),
                    "summary": format!("Update a {name}; only the given members change"),
                    "requestBody": {"required": true, "content": content(schema_ref(&format!("{name}_update")))},
                    "security": security("write"),
                    "responses": common(update),
                },
                "delete": {
                    "operationId": format!("archive_{name}"),
                    "summary": format!("Archive a {name}"),
                    "security": security("write"),
                    "responses": common(archive),
                }
            }),
        );
        relationship_paths(ty, &common, &security_for, &mut paths);
    }
    paths.insert(
        API_PREFIX.into(),
        json!({
            "get": {
                "operationId": "overview",
                "summary": "Every resource type: its collection, attributes, relationships, scopes and usage examples",
                "security": [],
                "responses": {"200": {
                    "description": "A JSON:API document with one resource_type per type",
                    "content": {MEDIA_TYPE: {"schema": {"type": "object"}}}
                }}
            }
        }),
    );
    schemas.insert(
        "relationship_links".into(),
        json!({
            "type": "object",
            "properties": {
                "self": {"type": "string", "description": "The relationship's linkage"},
                "related": {"type": "string", "description": "The objects it points at"}
            }
        }),
    );
    schemas.insert(
        "pagination_links".into(),
        json!({
            "type": "object",
            "properties": {
                "self": {"type": "string"},
                "first": {"type": "string"},
                "prev": {"type": ["string", "null"]},
                "next": {"type": ["string", "null"]},
                "last": {"type": "string"}
            }
        }),
    );
    schemas.insert(
        "errors".into(),
        json!({
            "type": "object",
            "properties": {"errors": {"type": "array", "items": {
                "type": "object",
                "properties": {
                    "status": {"type": "string"},
                    "code": {"type": "string"},
                    "title": {"type": "string"},
                    "detail": {"type": "string"},
                    "source": {"type": "object", "properties": {
                        "pointer": {"type": "string"},
                        "parameter": {"type": "string"},
                        "header": {"type": "string"}
                    }}
                },
                "required": ["status", "title"]
            }}},
            "required": ["errors"]
        }),
    );
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Catalio JSON:API",
            "version": "v1",
            "description": "Requirements, personas, use cases, test cases and more, served from Kubernetes custom resources. Authenticate with an access token from the token endpoint."
        },
        "tags": tag_operations(&mut paths),
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "oauth2": {"type": "oauth2", "flows": {"clientCredentials": {"tokenUrl": token_url, "scopes": scopes}}}
            }
        }
    })
}

/// Groups operations by the type whose path they are under (the
/// overview and this document under `overview`), so that an explorer
/// shows one section per type; returns the tags, in registry order.
fn tag_operations(paths: &mut Map<String, Value>) -> Value {
    const OVERVIEW: &str = "overview";
    const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];
    for (path, item) in paths.iter_mut() {
        let segment = path
            .strip_prefix(API_PREFIX)
            .and_then(|rest| rest.strip_prefix('/'))
            .and_then(|rest| rest.split('/').next());
        let tag = TYPES
            .iter()
            .find(|t| Some(t.endpoint) == segment)
            .map_or(OVERVIEW, |t| t.endpoint);
        let operations = item.as_object_mut().into_iter().flat_map(|o| o.iter_mut());
        for (_, operation) in operations.filter(|(k, _)| METHODS.contains(&k.as_str())) {
            operation["tags"] = json!([tag]);
        }
    }
    let mut tags = vec![json!({
        "name": OVERVIEW,
        "description": "What the API serves, and this description of it"
    })];
    tags.extend(TYPES.iter().map(|t| {
        json!({"name": t.endpoint, "description": format!("{} objects (custom resource {}), type {}", t.endpoint, t.kind, t.name)})
    }));
    Value::Array(tags)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client that fills in every default the document states (as
    /// Swagger UI's "Try it out" does) sends a query the API accepts.
    #[test]
    fn the_stated_defaults_together_are_a_valid_query() {
        let doc = document("https://catalio.example/oauth/token");
        for t in TYPES {
            let list = &doc["paths"][format!("/api/v1/{}", t.endpoint)]["get"];
            let defaults: Vec<(String, String)> = list["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|p| p["in"] == "query")
                .filter_map(|p| {
                    let value = p["schema"].get("default")?;
                    let value = value
                        .as_str()
                        .map_or_else(|| value.to_string(), str::to_owned);
                    Some((p["name"].as_str().unwrap().to_owned(), value))
                })
                .collect();
            assert!(defaults.len() >= 2, "{}: {defaults:?}", t.name);
            let raw = form_urlencoded::Serializer::new(String::new())
                .extend_pairs(&defaults)
                .finish();
            let query = crate::api::query::parse(t, &raw, crate::api::query::Target::Collection);
            assert!(query.is_ok(), "{}: {raw}: {query:?}", t.name);
        }
    }

    #[test]
    fn every_endpoint_and_method_is_described() {
        let doc = document("https://catalio.example/oauth/token");
        for t in TYPES {
            let list = &doc["paths"][format!("/api/v1/{}", t.endpoint)];
            let item = &doc["paths"][format!("/api/v1/{}/{{id}}", t.endpoint)];
            for op in [
                &list["get"],
                &list["post"],
                &item["get"],
                &item["patch"],
                &item["delete"],
            ] {
                assert!(op["responses"]["401"].is_object(), "{}", t.name);
                assert!(op["security"].is_array());
            }
            assert_eq!(
                doc["components"]["schemas"][format!("{}_create", t.name)]["properties"]["data"]["properties"]
                    ["type"]["const"],
                t.name
            );
            for r in t.relationships {
                let related = &doc["paths"][format!("/api/v1/{}/{{id}}/{}", t.endpoint, r.name)];
                let linkage = &doc["paths"]
                    [format!("/api/v1/{}/{{id}}/relationships/{}", t.endpoint, r.name)];
                assert!(related["get"]["responses"]["200"].is_object(), "{}", r.name);
                assert!(linkage["patch"]["requestBody"].is_object(), "{}", r.name);
                assert_eq!(linkage["post"].is_object(), r.many, "{}", r.name);
                assert_eq!(linkage["delete"].is_object(), r.many, "{}", r.name);
            }
            for i in t.inverses {
                let linkage = &doc["paths"]
                    [format!("/api/v1/{}/{{id}}/relationships/{}", t.endpoint, i.name)];
                assert!(linkage["get"].is_object(), "{}", i.name);
                assert!(linkage.get("patch").is_none(), "{} is computed", i.name);
                assert_eq!(
                    doc["paths"][format!("/api/v1/{}/{{id}}/{}", t.endpoint, i.name)]["get"]["security"]
                        [1]["oauth2"],
                    json!([format!("{}:read", t.name), format!("{}:read", i.source)])
                );
            }
        }
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (_, op) in item
                .as_object()
                .unwrap()
                .iter()
                .filter(|(k, _)| *k != "parameters")
            {
                let tag = op["tags"][0].as_str().unwrap();
                assert!(
                    tag == "overview" || path.starts_with(&format!("/api/v1/{tag}")),
                    "{path}: {tag}"
                );
            }
        }
        assert_eq!(doc["tags"].as_array().unwrap().len(), TYPES.len() + 1);
        assert_eq!(
            doc["components"]["securitySchemes"]["oauth2"]["flows"]["clientCredentials"]["tokenUrl"],
            "https://catalio.example/oauth/token"
        );
    }
}
