//! JSON:API media-type rules (v1.1 section "Content Negotiation"): requests
//! with a body must say `application/vnd.api+json` with no parameters but
//! `ext` and `profile` (415 otherwise); `Accept` must allow that media type
//! without unsupported parameters (406 otherwise). No extensions are
//! supported, so any `ext` is refused.

use super::error::MEDIA_TYPE;

struct MediaRange<'a> {
    essence: String,
    params: Vec<(String, &'a str)>,
}

fn parse_range(text: &str) -> MediaRange<'_> {
    let mut parts = text.split(';');
    let essence = parts.next().unwrap_or("").trim().to_ascii_lowercase();
    let params = parts
        .filter_map(|p| {
            let (k, v) = p.split_once('=')?;
            Some((k.trim().to_ascii_lowercase(), v.trim().trim_matches('"')))
        })
        .collect();
    MediaRange { essence, params }
}

/// Whether a JSON:API media type instance is one we can honour: only
/// `profile`, or an `ext` list that is empty, and nothing else (`q` is a
/// weight in `Accept`, not a media type parameter).
fn usable(range: &MediaRange<'_>) -> bool {
    range.params.iter().all(|(k, v)| match k.as_str() {
        "profile" | "q" => true,
        "ext" => v.trim().is_empty(),
        _ => false,
    })
}

/// Whether a request's `Content-Type` is acceptable.
pub fn content_type_ok(header: Option<&str>) -> bool {
    let Some(header) = header else {
        return false;
    };
    let range = parse_range(header);
    range.essence == MEDIA_TYPE && range.params.iter().all(|(k, _)| k != "q") && usable(&range)
}

/// Whether a response can satisfy the request's `Accept` header.
pub fn accept_ok(header: Option<&str>) -> bool {
    let Some(header) = header.filter(|h| !h.trim().is_empty()) else {
        return true;
    };
    let mut jsonapi_seen = false;
    let mut wildcard = false;
    for range in header.split(',').map(parse_range) {
        let refused = range
            .params
            .iter()
            .any(|(k, v)| k == "q" && v.parse::<f32>().is_ok_and(|q| q <= 0.0));
        match range.essence.as_str() {
            MEDIA_TYPE => {
                jsonapi_seen = true;
                if usable(&range) && !refused {
                    return true;
                }
            }
            "*/*" | "application/*" if !refused => wildcard = true,
            _ => {}
        }
    }
    !jsonapi_seen && wildcard
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_type_rules() {
        assert!(content_type_ok(Some("application/vnd.api+json")));
        assert!(content_type_ok(Some(
            "application/vnd.api+json; profile=\"https://example.com/p\""
        )));
        assert!(!content_type_ok(None));
        assert!(!content_type_ok(Some("application/json")));
        assert!(!content_type_ok(Some(
            "application/vnd.api+json; charset=utf-8"
        )));
        assert!(!content_type_ok(Some(
            "application/vnd.api+json; ext=\"https://jsonapi.org/ext/atomic\""
        )));
    }

    #[test]
    fn accept_rules() {
        for ok in [
            None,
            Some("application/vnd.api+json"),
            Some("*/*"),
            Some("application/*"),
            Some("text/html, */*;q=0.8"),
            Some("application/vnd.api+json; charset=utf-8, application/vnd.api+json"),
            Some("application/vnd.api+json; profile=\"x\""),
        ] {
            assert!(accept_ok(ok), "{ok:?}");
        }
        for refused in [
            "application/json",
            "text/html",
            "application/vnd.api+json; charset=utf-8",
            // Every instance carries an unsupported parameter: 406 even with
            // a wildcard alongside.
            "application/vnd.api+json; version=2, */*",
            "application/vnd.api+json; ext=\"https://jsonapi.org/ext/atomic\"",
            "application/vnd.api+json;q=0",
        ] {
            assert!(!accept_ok(Some(refused)), "{refused}");
        }
    }
}
