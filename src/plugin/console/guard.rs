//! What keeps other pages and other local processes out of the console.
//!
//! A server on loopback is reachable by every page the user has open: a
//! page elsewhere can make the browser send requests to it (CSRF), and a
//! name that resolves to 127.0.0.1 makes a foreign page same-origin with
//! it (DNS rebinding). So:
//!
//! - The `Host` must be this server's own loopback address and port.
//! - An `Origin`, when sent, must be this server's; a request that can
//!   change anything (not GET or HEAD) must send one.
//! - Every API call carries the launch token in `X-Console-Token`. The
//!   token is random per launch and reaches the page in the URL's
//!   fragment, which is never sent to a server; the page keeps it in
//!   `sessionStorage`, which is per origin. A cookie would be sent to
//!   every port of 127.0.0.1, so to any other local server the browser
//!   visits. A custom header also makes every cross-origin call need a
//!   CORS preflight, which this server never grants.
//! - Every response forbids framing, sniffing and any script, style or
//!   connection but this origin's (the page's files are built into the
//!   binary), and is not cached.

use warp::http::{HeaderMap, HeaderValue, Method, StatusCode, header};

/// The header API calls carry the launch token in.
pub const TOKEN_HEADER: &str = "x-console-token";

const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// Why a request was refused; the message names the rule, never a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    pub message: &'static str,
}

pub struct Guard {
    token: String,
    hosts: Vec<String>,
    origins: Vec<String>,
}

impl Guard {
    /// For a server on loopback `port`, with a fresh random token.
    pub fn new(port: u16) -> anyhow::Result<Self> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes)?;
        let token = bytes.iter().map(|b| format!("{b:02x}")).collect();
        Ok(Self::with_token(port, token))
    }

    pub fn with_token(port: u16, token: String) -> Self {
        let hosts: Vec<String> = ["127.0.0.1", "localhost", "[::1]"]
            .iter()
            .map(|h| format!("{h}:{port}"))
            .collect();
        let origins = hosts.iter().map(|h| format!("http://{h}")).collect();
        Guard {
            token,
            hosts,
            origins,
        }
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    /// Whether the request may be served.
    pub fn check(&self, method: &Method, path: &str, headers: &HeaderMap) -> Result<(), Refusal> {
        let refuse = |status, message| Err(Refusal { status, message });
        let text = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
        let host = text(header::HOST).unwrap_or_default();
        if !self.hosts.iter().any(|h| h.eq_ignore_ascii_case(host)) {
            return refuse(
                StatusCode::FORBIDDEN,
                "this console answers on its own address only",
            );
        }
        let origin = text(header::ORIGIN);
        let changes = !matches!(*method, Method::GET | Method::HEAD);
        match origin {
            Some(o) if !self.origins.iter().any(|mine| mine.eq_ignore_ascii_case(o)) => {
                return refuse(
                    StatusCode::FORBIDDEN,
                    "requests from other origins are refused",
                );
            }
            None if changes => {
                return refuse(
                    StatusCode::FORBIDDEN,
                    "a change must come from the console's page",
                );
            }
            _ => {}
        }
        if path.starts_with("/api/") {
            let presented = headers
                .get(TOKEN_HEADER)
                .map(HeaderValue::as_bytes)
                .unwrap_or_default();
            let right =
                aws_lc_rs::constant_time::verify_slices_are_equal(presented, self.token.as_bytes())
                    .is_ok();
            if !right {
                return refuse(
                    StatusCode::UNAUTHORIZED,
                    "open the console with the link `kubectl catalio console` printed",
                );
            }
        }
        Ok(())
    }
}

/// The headers every response carries.
pub fn harden(headers: &mut HeaderMap) {
    let set = [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
        (
            header::HeaderName::from_static("cross-origin-opener-policy"),
            "same-origin",
        ),
        (
            header::HeaderName::from_static("cross-origin-resource-policy"),
            "same-origin",
        ),
    ];
    for (name, value) in set {
        headers.insert(name, HeaderValue::from_static(value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn only_the_page_with_the_token_on_this_address_gets_in() {
        let guard = Guard::with_token(4000, "t0k3n".to_owned());
        let ok = |method: Method, path: &str, pairs: &[(&'static str, &str)]| {
            guard.check(&method, path, &headers(pairs))
        };
        let host = ("host", "127.0.0.1:4000");
        let token = ("x-console-token", "t0k3n");
        let origin = ("origin", "http://127.0.0.1:4000");
        assert!(ok(Method::GET, "/", &[host]).is_ok());
        assert!(ok(Method::GET, "/api/credentials", &[host, token]).is_ok());
        assert!(ok(Method::POST, "/api/credentials", &[host, token, origin]).is_ok());
        assert!(ok(Method::GET, "/", &[("host", "localhost:4000")]).is_ok());

        let status = |r: Result<(), Refusal>| r.unwrap_err().status.as_u16();
        // DNS rebinding: a foreign name, or another port.
        assert_eq!(
            status(ok(Method::GET, "/", &[("host", "evil.example:4000")])),
            403
        );
        assert_eq!(
            status(ok(Method::GET, "/", &[("host", "127.0.0.1:4001")])),
            403
        );
        assert_eq!(status(ok(Method::GET, "/", &[])), 403);
        // CSRF: another origin, or a change without one.
        let evil = ("origin", "http://127.0.0.1:4001");
        assert_eq!(
            status(ok(Method::POST, "/api/credentials", &[host, token, evil])),
            403
        );
        assert_eq!(
            status(ok(Method::DELETE, "/api/credentials/a", &[host, token])),
            403
        );
        assert_eq!(
            status(ok(Method::GET, "/api/credentials", &[host, evil])),
            403
        );
        // The token: missing, wrong, a prefix.
        assert_eq!(status(ok(Method::GET, "/api/credentials", &[host])), 401);
        let wrong = ("x-console-token", "t0k3m");
        assert_eq!(status(ok(Method::GET, "/api/stream", &[host, wrong])), 401);
        let prefix = ("x-console-token", "t0k");
        assert_eq!(
            status(ok(Method::GET, "/api/session", &[host, prefix])),
            401
        );
    }

    #[test]
    fn launch_tokens_are_random() {
        let (a, b) = (Guard::new(1).unwrap(), Guard::new(1).unwrap());
        assert_eq!(a.token().len(), 64);
        assert_ne!(a.token(), b.token());
    }
}
