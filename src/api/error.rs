//! JSON:API error documents: every failure under `/api` answers with one,
//! with the status, a fixed title, a detail safe to show, and where it helps
//! a `source` pointing at the offending member or parameter.

use http::{StatusCode, header};
use serde::Serialize;

pub const MEDIA_TYPE: &str = "application/vnd.api+json";

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Source {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pointer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameter: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ErrorObject {
    pub status: String,
    /// Machine-readable reason, stable across releases.
    pub code: &'static str,
    pub title: String,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
}

impl ErrorObject {
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        ErrorObject {
            status: status.as_u16().to_string(),
            code,
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            detail: detail.into(),
            source: None,
        }
    }

    pub fn pointer(mut self, pointer: impl Into<String>) -> Self {
        self.source = Some(Source {
            pointer: Some(pointer.into()),
            parameter: None,
            header: None,
        });
        self
    }

    pub fn parameter(mut self, parameter: impl Into<String>) -> Self {
        self.source = Some(Source {
            pointer: None,
            parameter: Some(parameter.into()),
            header: None,
        });
        self
    }

    pub fn header(mut self, header: impl Into<String>) -> Self {
        self.source = Some(Source {
            pointer: None,
            parameter: None,
            header: Some(header.into()),
        });
        self
    }
}

/// A failed request: one status, one or more error objects, and the headers
/// the status calls for.
#[derive(Debug, PartialEq, Eq)]
pub struct Problem {
    pub status: StatusCode,
    pub errors: Vec<ErrorObject>,
    pub headers: Vec<(header::HeaderName, String)>,
}

impl From<ErrorObject> for Problem {
    fn from(e: ErrorObject) -> Self {
        let status = e
            .status
            .parse()
            .ok()
            .and_then(|s| StatusCode::from_u16(s).ok());
        Problem {
            status: status.unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            errors: vec![e],
            headers: Vec::new(),
        }
    }
}

impl Problem {
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        ErrorObject::new(status, code, detail).into()
    }

    /// Several errors of one status, as request validation finds them.
    pub fn many(status: StatusCode, errors: Vec<ErrorObject>) -> Self {
        Problem {
            status,
            errors,
            headers: Vec::new(),
        }
    }

    pub fn with_header(mut self, name: header::HeaderName, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// The seed's answer to every token failure.
    pub fn unauthorized(challenge: &str) -> Self {
        Problem::new(
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            "Invalid or expired token",
        )
        .with_header(header::WWW_AUTHENTICATE, challenge)
    }

    pub fn not_found(what: &str, id: &str) -> Self {
        // The id is the client's: echo a bounded part of it.
        let shown: String = id.chars().take(80).collect();
        let more = if shown.len() < id.len() { "..." } else { "" };
        Problem::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no {what} with id {shown:?}{more}"),
        )
    }

    pub fn internal(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", detail)
    }

    /// The error document.
    pub fn body(&self) -> String {
        serde_json::json!({
            "jsonapi": {"version": super::document::JSONAPI_VERSION},
            "errors": self.errors,
        })
        .to_string()
    }
}
