//! What the JSON:API tests read from an answer, shared by the in-process
//! tests (`src/server/jsonapi/tests.rs`) and the ones against the real
//! control plane (`tests/jsonapi.rs`).

use hyper::HeaderMap;
use serde_json::Value;

/// One answer: status, headers and the parsed document.
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Reply {
    /// The ids of the primary data, in order.
    pub fn ids(&self) -> Vec<String> {
        self.body["data"]
            .as_array()
            .unwrap_or_else(|| panic!("no data array in {}", self.body))
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_owned())
            .collect()
    }

    /// The single error's status, code and source member.
    pub fn error(&self) -> (u16, String, Value) {
        let errors = self.body["errors"]
            .as_array()
            .unwrap_or_else(|| panic!("not an error document ({}): {}", self.status, self.body));
        let e = &errors[0];
        assert_eq!(e["status"], self.status.to_string(), "{}", self.body);
        assert!(e["title"].is_string() && e["detail"].is_string());
        assert_eq!(self.body["jsonapi"]["version"], "1.1");
        (
            self.status,
            e["code"].as_str().unwrap_or_default().to_owned(),
            e["source"].clone(),
        )
    }
}

/// Decodes a link's query into sorted key=value pairs.
pub fn link_query(link: &Value) -> Vec<(String, String)> {
    let link = link
        .as_str()
        .unwrap_or_else(|| panic!("not a link: {link}"));
    let (_, query) = link.split_once('?').unwrap_or((link, ""));
    let mut pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    pairs.sort();
    pairs
}

/// The value of `key` in a link's query.
pub fn page_of(link: &Value, key: &str) -> Option<String> {
    link_query(link)
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
}
