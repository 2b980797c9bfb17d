//! The business resource types, declared once: each type's custom resource,
//! and how its JSON:API attributes and relationships map onto the spec.
//! Everything else (the CRDs, scopes, the index, the query language,
//! documents, request validation, OpenAPI, metrics) reads these
//! declarations, so adding a type is adding an entry here and its kind in
//! [`super::business`].

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

use super::business;

/// What values an attribute holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttrKind {
    /// A string.
    String,
    /// One of a fixed set of strings, ordered as listed (for sorting).
    Enum(&'static [&'static str]),
    /// A list of strings.
    List,
    /// An RFC 3339 timestamp.
    Time,
}

#[derive(Debug)]
pub struct Attribute {
    /// JSON:API name (snake_case).
    pub name: &'static str,
    /// Field in the custom resource's spec (camelCase).
    pub field: &'static str,
    pub kind: AttrKind,
    pub required: bool,
    /// Matched by `filter[search]`.
    pub searchable: bool,
}

/// A relationship stored on this type as object names in its spec.
#[derive(Debug)]
pub struct Relationship {
    pub name: &'static str,
    pub field: &'static str,
    /// JSON:API type of the related objects.
    pub target: &'static str,
    pub many: bool,
}

/// A to-many relationship computed from another type's relationship that
/// points here.
#[derive(Debug)]
pub struct Inverse {
    pub name: &'static str,
    /// JSON:API type holding the relationship.
    pub source: &'static str,
    /// Name of the source type's relationship.
    pub via: &'static str,
}

impl Inverse {
    /// The source type and the position of the relationship in it. The
    /// registry is static and a unit test resolves every inverse, so this
    /// cannot fail at run time.
    pub fn resolve(&self) -> (&'static ResourceType, usize) {
        let source = by_name(self.source).expect("inverse source is a declared type");
        let via = source
            .relationships
            .iter()
            .position(|r| r.name == self.via)
            .expect("inverse names a relationship of its source");
        (source, via)
    }
}

#[derive(Debug)]
pub struct ResourceType {
    /// JSON:API type, as in scopes.
    pub name: &'static str,
    /// Path segment under `/api/v1/`.
    pub endpoint: &'static str,
    pub kind: &'static str,
    /// Plural of the custom resource.
    pub plural: &'static str,
    /// The custom resource's definition.
    pub crd: fn() -> CustomResourceDefinition,
    pub attributes: &'static [Attribute],
    pub relationships: &'static [Relationship],
    pub inverses: &'static [Inverse],
}

/// Attributes every type has besides its own.
pub const ARCHIVED: &str = "archived";
pub const CREATED_AT: &str = "created_at";
pub const UPDATED_AT: &str = "updated_at";

/// A field (attribute or relationship) of a type, as named in `fields[...]`,
/// `sort`, `filter[...]` and `include`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    Attribute(usize),
    Archived,
    CreatedAt,
    UpdatedAt,
    Relationship(usize),
    Inverse(usize),
}

impl ResourceType {
    pub fn field(&self, name: &str) -> Option<Field> {
        if let Some(i) = self.attributes.iter().position(|a| a.name == name) {
            return Some(Field::Attribute(i));
        }
        if let Some(i) = self.relationships.iter().position(|r| r.name == name) {
            return Some(Field::Relationship(i));
        }
        if let Some(i) = self.inverses.iter().position(|r| r.name == name) {
            return Some(Field::Inverse(i));
        }
        match name {
            ARCHIVED => Some(Field::Archived),
            CREATED_AT => Some(Field::CreatedAt),
            UPDATED_AT => Some(Field::UpdatedAt),
            _ => None,
        }
    }

    /// Type of the objects at the end of a relationship field.
    pub fn related(&self, field: Field) -> Option<&'static ResourceType> {
        match field {
            Field::Relationship(i) => by_name(self.relationships[i].target),
            Field::Inverse(i) => by_name(self.inverses[i].source),
            _ => None,
        }
    }

    /// The JSON:API name of a field, as [`ResourceType::field`] takes it.
    pub fn field_name(&self, field: Field) -> &'static str {
        match field {
            Field::Attribute(i) => self.attributes[i].name,
            Field::Relationship(i) => self.relationships[i].name,
            Field::Inverse(i) => self.inverses[i].name,
            Field::Archived => ARCHIVED,
            Field::CreatedAt => CREATED_AT,
            Field::UpdatedAt => UPDATED_AT,
        }
    }

    /// Whether `field` is a relationship to at most one object.
    pub fn is_to_one(&self, field: Field) -> bool {
        matches!(field, Field::Relationship(i) if !self.relationships[i].many)
    }

    /// The declaration of an inverse relationship field.
    pub fn inverse(&self, field: Field) -> Option<&'static Inverse> {
        match field {
            Field::Inverse(i) => self.inverses.get(i),
            _ => None,
        }
    }

    /// Every field of the type, as `fields[...]` may name them.
    pub fn fields(&self) -> impl Iterator<Item = Field> + '_ {
        (0..self.attributes.len())
            .map(Field::Attribute)
            .chain((0..self.relationships.len()).map(Field::Relationship))
            .chain((0..self.inverses.len()).map(Field::Inverse))
            .chain([Field::Archived, Field::CreatedAt, Field::UpdatedAt])
    }

    /// Position in [`TYPES`].
    pub fn index(&self) -> usize {
        TYPES.iter().position(|t| t.name == self.name).unwrap_or(0)
    }
}

pub fn by_name(name: &str) -> Option<&'static ResourceType> {
    TYPES.iter().find(|t| t.name == name)
}

pub fn by_endpoint(endpoint: &str) -> Option<&'static ResourceType> {
    TYPES.iter().find(|t| t.endpoint == endpoint)
}

const fn attr(name: &'static str, field: &'static str, kind: AttrKind) -> Attribute {
    Attribute {
        name,
        field,
        kind,
        required: false,
        searchable: false,
    }
}

const fn text(name: &'static str, field: &'static str) -> Attribute {
    Attribute {
        searchable: true,
        ..attr(name, field, AttrKind::String)
    }
}

const fn required(a: Attribute) -> Attribute {
    Attribute {
        required: true,
        ..a
    }
}

const fn one(name: &'static str, field: &'static str, target: &'static str) -> Relationship {
    Relationship {
        name,
        field,
        target,
        many: false,
    }
}

pub const REQUIREMENT_STATUS: &[&str] = &[
    "draft",
    "active",
    "confirmed",
    "investigating",
    "deprecated",
    "superseded",
    "rejected",
];
pub const PRIORITY: &[&str] = &["low", "medium", "high", "critical"];
pub const OUTCOME: &[&str] = &["passed", "failed", "skipped", "blocked"];

const NAMED: &[Attribute] = &[
    required(text("name", "name")),
    text("description", "description"),
];

pub static TYPES: &[ResourceType] = &[
    ResourceType {
        name: "requirement",
        endpoint: "requirements",
        kind: "Requirement",
        plural: "requirements",
        crd: business::Requirement::crd,
        attributes: &[
            required(text("title", "title")),
            text("description", "description"),
            text("as_a", "asA"),
            text("i_want", "iWant"),
            text("so_that", "soThat"),
            attr("status", "status", AttrKind::Enum(REQUIREMENT_STATUS)),
            attr("priority", "priority", AttrKind::Enum(PRIORITY)),
            attr("tags", "tags", AttrKind::List),
            attr("assignee", "assignee", AttrKind::String),
        ],
        relationships: &[
            one("persona", "persona", "persona"),
            one("team", "team", "team"),
            Relationship {
                name: "components",
                field: "components",
                target: "component",
                many: true,
            },
            one("superseded_by", "supersededBy", "requirement"),
        ],
        inverses: &[Inverse {
            name: "use_cases",
            source: "use_case",
            via: "requirement",
        }],
    },
    ResourceType {
        name: "persona",
        endpoint: "personas",
        kind: "Persona",
        plural: "personas",
        crd: business::Persona::crd,
        attributes: &[
            required(text("name", "name")),
            text("description", "description"),
            text("role", "role"),
        ],
        relationships: &[],
        inverses: &[Inverse {
            name: "requirements",
            source: "requirement",
            via: "persona",
        }],
    },
    ResourceType {
        name: "use_case",
        endpoint: "use_cases",
        kind: "UseCase",
        plural: "usecases",
        crd: business::UseCase::crd,
        attributes: &[
            required(text("title", "title")),
            text("description", "description"),
            attr("acceptance_criteria", "acceptanceCriteria", AttrKind::List),
            attr("status", "status", AttrKind::String),
        ],
        relationships: &[one("requirement", "requirement", "requirement")],
        inverses: &[Inverse {
            name: "test_cases",
            source: "test_case",
            via: "use_case",
        }],
    },
    ResourceType {
        name: "test_case",
        endpoint: "test_cases",
        kind: "TestCase",
        plural: "testcases",
        crd: business::TestCase::crd,
        attributes: &[
            required(text("title", "title")),
            attr("steps", "steps", AttrKind::List),
            text("expected_result", "expectedResult"),
            attr("status", "status", AttrKind::String),
        ],
        relationships: &[one("use_case", "useCase", "use_case")],
        inverses: &[Inverse {
            name: "test_results",
            source: "test_result",
            via: "test_case",
        }],
    },
    ResourceType {
        name: "test_result",
        endpoint: "test_results",
        kind: "TestResult",
        plural: "testresults",
        crd: business::TestResult::crd,
        attributes: &[
            required(attr("outcome", "outcome", AttrKind::Enum(OUTCOME))),
            attr("executed_at", "executedAt", AttrKind::Time),
            text("notes", "notes"),
        ],
        relationships: &[one("test_case", "testCase", "test_case")],
        inverses: &[],
    },
    ResourceType {
        name: "component",
        endpoint: "components",
        kind: "Component",
        plural: "components",
        crd: business::Component::crd,
        attributes: NAMED,
        relationships: &[],
        inverses: &[Inverse {
            name: "requirements",
            source: "requirement",
            via: "components",
        }],
    },
    ResourceType {
        name: "process",
        endpoint: "processes",
        kind: "Process",
        plural: "processes",
        crd: business::Process::crd,
        attributes: &[
            required(text("name", "name")),
            text("description", "description"),
            attr("steps", "steps", AttrKind::List),
        ],
        relationships: &[],
        inverses: &[],
    },
    ResourceType {
        name: "policy",
        endpoint: "policies",
        kind: "Policy",
        plural: "policies",
        crd: business::Policy::crd,
        attributes: &[
            required(text("name", "name")),
            text("description", "description"),
            text("framework", "framework"),
        ],
        relationships: &[],
        inverses: &[],
    },
    ResourceType {
        name: "capability",
        endpoint: "capabilities",
        kind: "Capability",
        plural: "capabilities",
        crd: business::Capability::crd,
        attributes: NAMED,
        relationships: &[],
        inverses: &[],
    },
    ResourceType {
        name: "team",
        endpoint: "teams",
        kind: "Team",
        plural: "teams",
        crd: business::Team::crd,
        attributes: NAMED,
        relationships: &[],
        inverses: &[Inverse {
            name: "requirements",
            source: "requirement",
            via: "team",
        }],
    },
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd;
    use serde_json::Value;

    fn spec_schema(kind: &str) -> Value {
        let crd = crd::all()
            .into_iter()
            .find(|c| c.spec.names.kind == kind)
            .unwrap_or_else(|| panic!("no CRD for {kind}"));
        let schema = serde_json::to_value(&crd.spec.versions[0].schema).unwrap();
        schema["openAPIV3Schema"]["properties"]["spec"].clone()
    }

    #[test]
    fn types_are_found_by_name_endpoint_and_position() {
        for (i, t) in TYPES.iter().enumerate() {
            assert_eq!(by_name(t.name).map(|t| t.name), Some(t.name));
            assert_eq!(t.index(), i);
            assert_eq!(by_endpoint(t.endpoint).map(|t| t.name), Some(t.name));
        }
    }

    /// The registry and the CRD schemas describe the same fields; the API
    /// server enforces the schema, the API validates by the registry.
    #[test]
    fn registry_matches_the_crd_schemas() {
        for t in TYPES {
            let crd = crd::all()
                .into_iter()
                .find(|c| c.spec.names.kind == t.kind)
                .unwrap();
            assert_eq!(crd.spec.names.plural, t.plural, "{}", t.name);
            let spec = spec_schema(t.kind);
            let props = spec["properties"].as_object().unwrap();
            let required: Vec<&str> = spec["required"]
                .as_array()
                .map(|r| r.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let mut declared = vec!["archived"];
            for a in t.attributes {
                declared.push(a.field);
                let p = &props[a.field];
                let ty = p["type"].as_str();
                match a.kind {
                    AttrKind::String => assert_eq!(ty, Some("string"), "{}.{}", t.name, a.name),
                    AttrKind::Time => {
                        assert_eq!(ty, Some("string"));
                        assert_eq!(p["format"], "date-time", "{}.{}", t.name, a.name);
                    }
                    AttrKind::List => assert_eq!(ty, Some("array"), "{}.{}", t.name, a.name),
                    AttrKind::Enum(values) => {
                        let listed: Vec<&str> = p["enum"]
                            .as_array()
                            .unwrap_or_else(|| panic!("{}.{} has no enum", t.name, a.name))
                            .iter()
                            .filter_map(Value::as_str)
                            .collect();
                        assert_eq!(listed, values, "{}.{}", t.name, a.name);
                    }
                }
                assert_eq!(
                    required.contains(&a.field),
                    a.required,
                    "{}.{} required",
                    t.name,
                    a.name
                );
            }
            for r in t.relationships {
                declared.push(r.field);
                let ty = props[r.field]["type"].as_str();
                assert_eq!(ty, Some(if r.many { "array" } else { "string" }));
                assert!(by_name(r.target).is_some());
            }
            for i in t.inverses {
                let (source, via) = i.resolve();
                assert_eq!(
                    source.relationships[via].target, t.name,
                    "{}.{}",
                    t.name, i.name
                );
            }
            let mut in_schema: Vec<&str> = props.keys().map(String::as_str).collect();
            in_schema.sort_unstable();
            declared.sort_unstable();
            assert_eq!(in_schema, declared, "{}", t.name);
        }
    }

    #[test]
    fn field_names_name_their_fields() {
        for t in TYPES {
            for field in t.fields() {
                assert_eq!(t.field(t.field_name(field)), Some(field), "{}", t.name);
            }
        }
    }

    #[test]
    fn every_relationship_has_its_inverse_or_is_self_referencing() {
        for t in TYPES {
            for r in t.relationships {
                let target = by_name(r.target).unwrap();
                let inverse = target
                    .inverses
                    .iter()
                    .any(|i| i.source == t.name && i.via == r.name);
                assert!(inverse || r.target == t.name, "{}.{}", t.name, r.name);
            }
        }
    }
}
