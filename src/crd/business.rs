//! The business resources the JSON:API serves: requirements, personas, use
//! cases, test cases and results, components, processes, policies,
//! capabilities and teams. Each is a namespaced custom resource, so
//! `kubectl` and GitOps see the same objects as the API.
//!
//! Relationships are stored as object names (same namespace) in the spec of
//! the owning side; inverse relationships are computed by the API's index.
//! `archived` is how the API's DELETE keeps history.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Name of another object in the same namespace.
const NAME_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/// A requirement: what a persona needs and why.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "catalio.ai",
    version = "v1",
    kind = "Requirement",
    namespaced,
    category = "catalio",
    shortname = "req",
    doc = "A requirement: what a persona needs and why. Served at /api/v1/requirements.",
    printcolumn = r#"{"name":"Title","type":"string","jsonPath":".spec.title"}"#,
    printcolumn = r#"{"name":"Status","type":"string","jsonPath":".spec.status"}"#,
    printcolumn = r#"{"name":"Priority","type":"string","jsonPath":".spec.priority"}"#,
    printcolumn = r#"{"name":"Archived","type":"boolean","jsonPath":".spec.archived","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct RequirementSpec {
    /// Short statement of the requirement.
    #[schemars(length(min = 1, max = 512))]
    pub title: String,
    /// Longer explanation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 65536))]
    pub description: Option<String>,
    /// User story: "As a ...".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub as_a: Option<String>,
    /// User story: "I want ...".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub i_want: Option<String>,
    /// User story: "so that ...".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub so_that: Option<String>,
    /// Lifecycle status.
    #[serde(default)]
    pub status: RequirementStatus,
    /// How much it matters.
    #[serde(default)]
    pub priority: Priority,
    /// Free-form tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 64)))]
    pub tags: Vec<String>,
    /// Who works on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub assignee: Option<String>,
    /// The Persona this requirement serves (object name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253), regex(pattern = NAME_PATTERN))]
    pub persona: Option<String>,
    /// The Team that owns it (object name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253), regex(pattern = NAME_PATTERN))]
    pub team: Option<String>,
    /// Components it touches (object names).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(length(max = 253), regex(pattern = NAME_PATTERN)))]
    pub components: Vec<String>,
    /// The Requirement that replaces this one (object name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253), regex(pattern = NAME_PATTERN))]
    pub superseded_by: Option<String>,
    /// Archived objects are left out of API collections by default.
    #[serde(default)]
    pub archived: bool,
}

/// Lifecycle status of a requirement.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RequirementStatus {
    #[default]
    Draft,
    Active,
    Confirmed,
    Investigating,
    Deprecated,
    Superseded,
    Rejected,
}

/// How much a requirement matters.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    Low,
    #[default]
    Medium,
    High,
    Critical,
}

/// A persona: a kind of user requirements are written for.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "catalio.ai",
    version = "v1",
    kind = "Persona",
    namespaced,
    category = "catalio",
    doc = "A persona: a kind of user requirements are written for. Served at /api/v1/personas.",
    printcolumn = r#"{"name":"Name","type":"string","jsonPath":".spec.name"}"#,
    printcolumn = r#"{"name":"Role","type":"string","jsonPath":".spec.role"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct PersonaSpec {
    /// Display name.
    #[schemars(length(min = 1, max = 256))]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 65536))]
    pub description: Option<String>,
    /// Their role, such as "Product Manager".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub role: Option<String>,
    #[serde(default)]
    pub archived: bool,
}

/// A use case realising a requirement.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "catalio.ai",
    version = "v1",
    kind = "UseCase",
    namespaced,
    category = "catalio",
    doc = "A use case realising a requirement. Served at /api/v1/use_cases.",
    printcolumn = r#"{"name":"Title","type":"string","jsonPath":".spec.title"}"#,
    printcolumn = r#"{"name":"Status","type":"string","jsonPath":".spec.status"}"#,
    printcolumn = r#"{"name":"Requirement","type":"string","jsonPath":".spec.requirement"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct UseCaseSpec {
    #[schemars(length(min = 1, max = 512))]
    pub title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 65536))]
    pub description: Option<String>,
    /// Conditions that must hold for the use case to be done.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(length(max = 4096)))]
    pub acceptance_criteria: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub status: Option<String>,
    /// The Requirement it realises (object name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253), regex(pattern = NAME_PATTERN))]
    pub requirement: Option<String>,
    #[serde(default)]
    pub archived: bool,
}

/// A test case checking a use case.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "catalio.ai",
    version = "v1",
    kind = "TestCase",
    namespaced,
    category = "catalio",
    doc = "A test case checking a use case. Served at /api/v1/test_cases.",
    printcolumn = r#"{"name":"Title","type":"string","jsonPath":".spec.title"}"#,
    printcolumn = r#"{"name":"Status","type":"string","jsonPath":".spec.status"}"#,
    printcolumn = r#"{"name":"Use Case","type":"string","jsonPath":".spec.useCase"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct TestCaseSpec {
    #[schemars(length(min = 1, max = 512))]
    pub title: String,
    /// What to do, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(length(max = 4096)))]
    pub steps: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 65536))]
    pub expected_result: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub status: Option<String>,
    /// The UseCase it checks (object name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253), regex(pattern = NAME_PATTERN))]
    pub use_case: Option<String>,
    #[serde(default)]
    pub archived: bool,
}

/// One execution of a test case.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "catalio.ai",
    version = "v1",
    kind = "TestResult",
    namespaced,
    category = "catalio",
    doc = "One execution of a test case. Served at /api/v1/test_results.",
    printcolumn = r#"{"name":"Outcome","type":"string","jsonPath":".spec.outcome"}"#,
    printcolumn = r#"{"name":"Test Case","type":"string","jsonPath":".spec.testCase"}"#,
    printcolumn = r#"{"name":"Executed","type":"date","jsonPath":".spec.executedAt"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct TestResultSpec {
    pub outcome: Outcome,
    /// When the test ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executed_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 65536))]
    pub notes: Option<String>,
    /// The TestCase that ran (object name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253), regex(pattern = NAME_PATTERN))]
    pub test_case: Option<String>,
    #[serde(default)]
    pub archived: bool,
}

/// Result of a test run.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Passed,
    Failed,
    Skipped,
    Blocked,
}

/// A business process.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "catalio.ai",
    version = "v1",
    kind = "Process",
    namespaced,
    category = "catalio",
    doc = "A business process. Served at /api/v1/processes.",
    printcolumn = r#"{"name":"Name","type":"string","jsonPath":".spec.name"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ProcessSpec {
    #[schemars(length(min = 1, max = 256))]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 65536))]
    pub description: Option<String>,
    /// The process's steps, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(length(max = 4096)))]
    pub steps: Vec<String>,
    #[serde(default)]
    pub archived: bool,
}

/// A policy requirements must follow.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "catalio.ai",
    version = "v1",
    kind = "Policy",
    namespaced,
    category = "catalio",
    doc = "A policy requirements must follow. Served at /api/v1/policies.",
    printcolumn = r#"{"name":"Name","type":"string","jsonPath":".spec.name"}"#,
    printcolumn = r#"{"name":"Framework","type":"string","jsonPath":".spec.framework"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct PolicySpec {
    #[schemars(length(min = 1, max = 256))]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 65536))]
    pub description: Option<String>,
    /// The framework it comes from, such as "SOC 2" or "GDPR".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub framework: Option<String>,
    #[serde(default)]
    pub archived: bool,
}

/// Kinds that carry only a name and a description.
macro_rules! named_kind {
    ($spec:ident, $kind:literal, $what:literal) => {
        #[doc = $what]
        #[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
        #[kube(
            group = "catalio.ai",
            version = "v1",
            kind = $kind,
            namespaced,
            category = "catalio",
            doc = $what,
            printcolumn = r#"{"name":"Name","type":"string","jsonPath":".spec.name"}"#,
            printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
        )]
        #[serde(rename_all = "camelCase")]
        pub struct $spec {
            /// Display name.
            #[schemars(length(min = 1, max = 256))]
            pub name: String,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            #[schemars(length(max = 65536))]
            pub description: Option<String>,
            /// Archived objects are left out of API collections by default.
            #[serde(default)]
            pub archived: bool,
        }
    };
}

named_kind!(
    ComponentSpec,
    "Component",
    "A part of the system requirements touch. Served at /api/v1/components."
);
named_kind!(
    CapabilitySpec,
    "Capability",
    "Something the organization can do. Served at /api/v1/capabilities."
);
named_kind!(
    TeamSpec,
    "Team",
    "A team that owns requirements. Served at /api/v1/teams."
);
