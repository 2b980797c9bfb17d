//! The parameters every OAuth endpoint takes: a form (RFC 6749) or JSON
//! (as Catalio documents) body, and `Authorization: Basic`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use warp::http::StatusCode;

use super::OAuthError;

/// The parameters of a request to any of the endpoints, from either body
/// format: the client's authentication, the grant's parameters, and the
/// token an introspection or revocation names.
#[derive(Debug, Default, PartialEq)]
pub struct TokenRequest {
    pub grant_type: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub audience: Option<String>,
    pub scope: Option<String>,
    pub client_assertion_type: Option<String>,
    pub client_assertion: Option<String>,
    /// The token to introspect or revoke (RFC 7662, RFC 7009).
    pub token: Option<String>,
    pub token_type_hint: Option<String>,
}

impl TokenRequest {
    /// The client authenticates with an assertion (RFC 7523) rather than a
    /// secret.
    pub fn asserts(&self) -> bool {
        self.client_assertion.is_some() || self.client_assertion_type.is_some()
    }

    fn field(&mut self, name: &str) -> Option<&mut Option<String>> {
        Some(match name {
            "grant_type" => &mut self.grant_type,
            "client_id" => &mut self.client_id,
            "client_secret" => &mut self.client_secret,
            "audience" => &mut self.audience,
            "scope" => &mut self.scope,
            "client_assertion_type" => &mut self.client_assertion_type,
            "client_assertion" => &mut self.client_assertion,
            "token" => &mut self.token,
            "token_type_hint" => &mut self.token_type_hint,
            _ => return None,
        })
    }
}

/// Parses the body by its media type: form (RFC 6749) or JSON (as Catalio
/// documents). Unknown parameters are ignored, as RFC 6749 section 3.2 says.
pub fn parse_body(content_type: Option<&str>, body: &[u8]) -> Result<TokenRequest, OAuthError> {
    let media = content_type
        .and_then(|c| c.split(';').next())
        .map(|m| m.trim().to_ascii_lowercase());
    let mut request = TokenRequest::default();
    match media.as_deref() {
        Some("application/x-www-form-urlencoded") => {
            let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body)
                .map_err(|_| OAuthError::invalid_request("The form body is malformed"))?;
            for (name, value) in pairs {
                if let Some(slot) = request.field(&name) {
                    if slot.is_some() {
                        return Err(OAuthError::invalid_request(format!(
                            "Parameter {name} is repeated"
                        )));
                    }
                    *slot = Some(value);
                }
            }
        }
        Some("application/json") => {
            let JsonBody(parsed) = serde_json::from_slice(body).map_err(|e| {
                OAuthError::invalid_request(match e.classify() {
                    serde_json::error::Category::Data => "The JSON body must be an object",
                    _ => "The JSON body is malformed",
                })
            })?;
            request = parsed.map_err(OAuthError::invalid_request)?;
        }
        _ => {
            return Err(OAuthError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "invalid_request",
                "Content-Type must be application/x-www-form-urlencoded or application/json",
            ));
        }
    }
    Ok(request)
}

/// A JSON token request: the parameters, or what is wrong with them. A
/// repeated member is refused as a repeated form field is (serde_json and
/// most parsers keep the last, so a gateway that reads the first one would
/// check another client than the one that authenticates); members must be
/// strings or null; unknown members are ignored.
struct JsonBody(Result<TokenRequest, String>);

impl<'de> serde::Deserialize<'de> for JsonBody {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(JsonBodyVisitor)
    }
}

struct JsonBodyVisitor;

impl<'de> serde::de::Visitor<'de> for JsonBodyVisitor {
    type Value = JsonBody;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<JsonBody, A::Error> {
        use serde::de::IgnoredAny;
        let mut request = TokenRequest::default();
        let mut seen: Vec<String> = Vec::new();
        let mut problem = None;
        while let Some(name) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            let slot = match request.field(&name) {
                Some(slot) if problem.is_none() => slot,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            if seen.iter().any(|s| *s == name) {
                problem = Some(format!("Parameter {name} is repeated"));
                map.next_value::<IgnoredAny>()?;
                continue;
            }
            seen.push(name.to_string());
            match map.next_value::<serde_json::Value>()? {
                serde_json::Value::String(v) => *slot = Some(v),
                serde_json::Value::Null => {}
                _ => problem = Some(format!("Parameter {name} must be a string")),
            }
        }
        Ok(JsonBody(match problem {
            Some(p) => Err(p),
            None => Ok(request),
        }))
    }
}

/// Client id and secret from `Authorization: Basic`, each form-urlencoded
/// as RFC 6749 section 2.3.1 requires.
pub fn parse_basic(authorization: &str) -> Result<(String, String), OAuthError> {
    let malformed = || OAuthError {
        basic_challenge: true,
        ..OAuthError::invalid_request("The Authorization header is malformed")
    };
    let (scheme, credentials) = authorization.trim().split_once(' ').ok_or_else(malformed)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(malformed());
    }
    let decoded = STANDARD
        .decode(credentials.trim())
        .map_err(|_| malformed())?;
    let text = String::from_utf8(decoded).map_err(|_| malformed())?;
    let (id, secret) = text.split_once(':').ok_or_else(malformed)?;
    let unescape = |s: &str| {
        form_urlencoded::parse(format!("v={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
    };
    Ok((
        unescape(id).ok_or_else(malformed)?,
        unescape(secret).ok_or_else(malformed)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_json_and_form_bodies_alike() {
        let json = br#"{"client_id":"ci_1","client_secret":"s","audience":"a","grant_type":"client_credentials","extra":1}"#;
        let form =
            b"client_id=ci_1&client_secret=s&audience=a&grant_type=client_credentials&extra=1";
        let want = TokenRequest {
            grant_type: Some("client_credentials".into()),
            client_id: Some("ci_1".into()),
            client_secret: Some("s".into()),
            audience: Some("a".into()),
            scope: None,
            ..Default::default()
        };
        assert_eq!(parse_body(Some("application/json"), json).unwrap(), want);
        assert_eq!(
            parse_body(
                Some("application/x-www-form-urlencoded; charset=UTF-8"),
                form
            )
            .unwrap(),
            want
        );
    }

    #[test]
    fn rejects_bad_bodies_with_oauth_errors() {
        let status = |ct: Option<&str>, body: &[u8]| parse_body(ct, body).unwrap_err().status;
        assert_eq!(
            status(Some("text/plain"), b"x"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
        assert_eq!(status(None, b"x"), StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert_eq!(
            status(Some("application/json"), b"{"),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            status(Some("application/json"), b"[]"),
            StatusCode::BAD_REQUEST
        );
        let e = parse_body(Some("application/json"), br#"{"client_id":7}"#).unwrap_err();
        assert_eq!(e.description, "Parameter client_id must be a string");
        let e = parse_body(
            Some("application/x-www-form-urlencoded"),
            b"client_id=a&client_id=b",
        )
        .unwrap_err();
        assert_eq!(
            (e.error, e.description.as_str()),
            ("invalid_request", "Parameter client_id is repeated")
        );
    }

    #[test]
    fn json_members_are_read_once_and_as_strings() {
        let json = |body: &str| parse_body(Some("application/json"), body.as_bytes());
        let described = |body: &str| json(body).unwrap_err().description;
        assert_eq!(
            described(r#"{"client_id":"a","client_id":"b"}"#),
            "Parameter client_id is repeated"
        );
        assert_eq!(
            described(r#"{"scope":null,"scope":"x"}"#),
            "Parameter scope is repeated"
        );
        assert_eq!(
            described(r#"{"client_id":{"nested":[1,2]}}"#),
            "Parameter client_id must be a string"
        );
        assert_eq!(
            described(r#"{"client_id":"a""#),
            "The JSON body is malformed"
        );
        assert_eq!(described(r#""text""#), "The JSON body must be an object");
        // Unknown members may repeat and hold anything.
        let r = json(r#"{"x":1,"x":[{}],"client_id":"a","client_secret":null}"#).unwrap();
        assert_eq!(r.client_id.as_deref(), Some("a"));
        assert_eq!(r.client_secret, None);
    }

    #[test]
    fn basic_credentials_are_form_decoded() {
        let header = format!("Basic {}", STANDARD.encode("ci_1:a%2Bb%3Ac"));
        assert_eq!(
            parse_basic(&header).unwrap(),
            ("ci_1".into(), "a+b:c".into())
        );
        assert_eq!(
            parse_basic(&format!("basic {}", STANDARD.encode("x:y"))).unwrap(),
            ("x".into(), "y".into())
        );
        for bad in [
            "Bearer abc",
            "Basic !!!",
            "Basic",
            &format!("Basic {}", STANDARD.encode("nocolon")),
        ] {
            let e = parse_basic(bad).unwrap_err();
            assert!(e.basic_challenge && e.error == "invalid_request", "{bad}");
        }
    }
}
