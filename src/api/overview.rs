//! `GET /api/v1`: the API's table of contents, as a JSON:API document. One
//! `resource_type` per type, generated from the same declarations the
//! engine serves: its collection link, attributes, relationships (and the
//! inverse ones computed from other types), the scopes it needs, and usage
//! examples; with links to the OpenAPI description, the explorer and the token endpoint.

use serde_json::{Value, json};

use super::document::{API_PREFIX, collection_path};
use super::error::MEDIA_TYPE;
use super::openapi::attribute_schema;
use crate::crd::registry::{ResourceType, TYPES};

/// Where the OpenAPI description is served.
pub const OPENAPI_PATH: &str = "/api/v1/open_api";
/// Where the API explorer (Swagger UI over that description) is served.
pub const EXPLORER_PATH: &str = "/api/swaggerui";

fn resource_type(ty: &ResourceType) -> Value {
    let path = collection_path(ty);
    let attributes: Vec<Value> = ty
        .attributes
        .iter()
        .map(|a| {
            let mut schema = attribute_schema(a);
            schema["name"] = json!(a.name);
            schema["required"] = json!(a.required);
            schema
        })
        .collect();
    let relationships: Vec<Value> =
        ty.relationships
            .iter()
            .map(|r| json!({"name": r.name, "type": r.target, "many": r.many}))
            .chain(ty.inverses.iter().map(
                |i| json!({"name": i.name, "type": i.source, "many": true, "read_only": true}),
            ))
            .collect();
    let first_attribute = ty.attributes.first().map_or("title", |a| a.name);
    json!({
        "type": "resource_type",
        "id": ty.name,
        "attributes": {
            "endpoint": path,
            "attributes": attributes,
            "relationships": relationships,
            "scopes": {
                "read": [format!("{}:read", ty.name), format!("{}:write", ty.name), "*:read", "*:write"],
                "write": [format!("{}:write", ty.name), "*:write"],
            },
            "examples": {
                "list": format!("GET {path}?sort=-updated_at&page[size]=20"),
                "search": format!("GET {path}?filter[search]=checkout"),
                "read": format!("GET {path}/{{id}}"),
                "create": format!(
                    "POST {path} {{\"data\": {{\"type\": \"{}\", \"attributes\": {{\"{first_attribute}\": \"...\"}}}}}}",
                    ty.name
                ),
                "update": format!("PATCH {path}/{{id}}"),
                "archive": format!("DELETE {path}/{{id}}"),
            },
        },
        "links": {"self": path},
    })
}

/// The document, naming `token_url` as where tokens come from.
pub fn document(token_url: &str) -> Value {
    json!({
        "jsonapi": {"version": "1.1"},
        "links": {
            "self": API_PREFIX,
            "describedby": OPENAPI_PATH,
            "explorer": EXPLORER_PATH,
        },
        "meta": {
            "media_type": MEDIA_TYPE,
            "authentication": {
                "token_url": token_url,
                "grant_type": "client_credentials",
                "header": "Authorization: Bearer <access_token>",
            },
        },
        "data": TYPES.iter().map(resource_type).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_is_listed_with_what_it_needs() {
        let doc = document("http://example/oauth/token");
        let data = doc["data"].as_array().unwrap();
        assert_eq!(data.len(), TYPES.len());
        for (entry, ty) in data.iter().zip(TYPES) {
            assert_eq!(entry["id"], ty.name);
            assert_eq!(entry["links"]["self"], format!("/api/v1/{}", ty.endpoint));
            let names: Vec<&str> = entry["attributes"]["attributes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a["name"].as_str().unwrap())
                .collect();
            let declared: Vec<&str> = ty.attributes.iter().map(|a| a.name).collect();
            assert_eq!(names, declared);
            let relationships = entry["attributes"]["relationships"].as_array().unwrap();
            assert_eq!(
                relationships.len(),
                ty.relationships.len() + ty.inverses.len()
            );
            assert_eq!(
                entry["attributes"]["scopes"]["write"][0],
                format!("{}:write", ty.name)
            );
        }
        assert_eq!(
            doc["meta"]["authentication"]["token_url"],
            "http://example/oauth/token"
        );
        assert_eq!(doc["links"]["describedby"], OPENAPI_PATH);
        assert_eq!(doc["links"]["explorer"], "/api/swaggerui");
    }
}
