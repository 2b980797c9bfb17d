//! The API explorer at `/api/swaggerui` (the overview's `EXPLORER_PATH`): Swagger UI over this server's
//! OpenAPI document, from files built into the binary. Swagger UI itself
//! is `assets/swagger-ui` (the `swagger-ui-dist` package, vendored by
//! `assets/update-swagger-ui.sh`); the page and the script that starts it
//! are ours (`explorer/`). Nothing is fetched from elsewhere, at build
//! time, at run time or by the browser: the page's Content-Security-Policy
//! allows this origin only.

use std::sync::LazyLock;

use sha2::{Digest, Sha256};
use warp::http::{HeaderValue, StatusCode, header};
use warp::reply::Response;
use warp::{Filter, Rejection};

use super::routed;
use crate::secret::hex;

/// One file built into the binary and served by name: the explorer's at
/// `/api/swaggerui/<name>` (the page at `/api/swaggerui` too), the
/// console's at `/<name>`.
pub(crate) struct Asset {
    pub name: &'static str,
    pub content_type: &'static str,
    pub bytes: &'static [u8],
}

macro_rules! vendored {
    ($name:literal, $type:literal) => {
        Asset {
            name: $name,
            content_type: $type,
            bytes: include_bytes!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/assets/swagger-ui/",
                $name
            )),
        }
    };
}

const PAGE: &str = "index.html";

static ASSETS: [Asset; 6] = [
    Asset {
        name: PAGE,
        content_type: "text/html; charset=utf-8",
        bytes: include_bytes!("explorer/index.html"),
    },
    Asset {
        name: "explorer.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("explorer/explorer.js"),
    },
    vendored!("swagger-ui-bundle.js", "text/javascript; charset=utf-8"),
    vendored!("swagger-ui.css", "text/css; charset=utf-8"),
    vendored!("favicon-32x32.png", "image/png"),
    vendored!("favicon-16x16.png", "image/png"),
];

/// Each asset's entity tag: its content's hash, so a browser revalidates
/// cheaply and never keeps a file an upgrade replaced.
static ETAGS: LazyLock<Vec<HeaderValue>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|a| {
            let digest = Sha256::digest(a.bytes);
            let tag = format!("\"{}\"", hex(&digest[..16]));
            HeaderValue::from_str(&tag).expect("hex is a valid header value")
        })
        .collect()
});

/// The page may run scripts and load styles, images and data from this
/// origin only. Swagger UI sets element styles and draws icons from
/// `data:` URLs; it evaluates no strings.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
     img-src 'self' data:; font-src 'self' data:; connect-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// `GET /api/swaggerui`, `/api/swaggerui/` and `/api/swaggerui/<asset>`;
/// any other name below it is 404.
pub fn routes() -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    warp::path!("api" / "swaggerui" / ..)
        .and(warp::get())
        .and(warp::path::tail())
        .and(warp::header::optional::<String>("if-none-match"))
        .and_then(|tail: warp::path::Tail, seen: Option<String>| async move {
            let name = match tail.as_str() {
                "" => PAGE,
                name => name,
            };
            let i = ASSETS
                .iter()
                .position(|a| a.name == name)
                .ok_or_else(warp::reject::not_found)?;
            Ok::<_, Rejection>(routed(serve(i, seen.as_deref()), "explorer"))
        })
}

fn serve(i: usize, seen: Option<&str>) -> Response {
    let asset = &ASSETS[i];
    let etag = &ETAGS[i];
    let fresh = seen.is_some_and(|seen| {
        seen.split(',')
            .any(|t| t.trim().trim_start_matches("W/") == etag)
    });
    let mut response = if fresh {
        let mut r = Response::new(Default::default());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        Response::new(asset.bytes.into())
    };
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    headers.insert(header::ETAG, etag.clone());
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if asset.name == PAGE {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(POLICY),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::overview::EXPLORER_PATH as PATH;

    /// The vendored files are the ones `assets/update-swagger-ui.sh`
    /// recorded: nobody edited them by hand, and the version the README
    /// names is the one served.
    #[test]
    fn the_vendored_swagger_ui_is_what_the_update_script_recorded() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/assets/swagger-ui");
        let sums = std::fs::read_to_string(format!("{dir}/SHA256SUMS")).unwrap();
        let recorded: Vec<(&str, &str)> = sums
            .lines()
            .map(|l| l.split_once("  ").expect("sha256sum format"))
            .map(|(sum, name)| (name, sum))
            .collect();
        for asset in ASSETS
            .iter()
            .filter(|a| a.name.contains("swagger") || a.name.starts_with("favicon"))
        {
            let (_, sum) = recorded
                .iter()
                .find(|(name, _)| *name == asset.name)
                .unwrap_or_else(|| panic!("{} is not in SHA256SUMS", asset.name));
            assert_eq!(hex(&Sha256::digest(asset.bytes)), *sum, "{}", asset.name);
        }
        for (name, sum) in &recorded {
            let bytes = std::fs::read(format!("{dir}/{name}")).unwrap();
            assert_eq!(hex(&Sha256::digest(&bytes)), *sum, "{name}");
        }
        let package: serde_json::Value =
            serde_json::from_slice(&std::fs::read(format!("{dir}/package.json")).unwrap()).unwrap();
        let source = std::fs::read_to_string(format!("{dir}/SOURCE")).unwrap();
        assert!(
            source.starts_with(&format!(
                "swagger-ui-dist@{} sha512-",
                package["version"].as_str().unwrap()
            )),
            "{source}"
        );
    }

    #[tokio::test]
    async fn assets_are_served_with_their_type_and_revalidated_by_tag() {
        let routes = routes();
        for path in [PATH, "/api/swaggerui/"] {
            let page = warp::test::request().path(path).reply(&routes).await;
            assert_eq!(page.status(), StatusCode::OK);
            assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
            let csp = page.headers()["content-security-policy"].to_str().unwrap();
            assert!(csp.contains("script-src 'self';"), "{csp}");
            let body = std::str::from_utf8(page.body()).unwrap();
            assert!(body.contains("/api/swaggerui/swagger-ui-bundle.js"));
        }
        let bundle = warp::test::request()
            .path("/api/swaggerui/swagger-ui-bundle.js")
            .reply(&routes)
            .await;
        assert_eq!(bundle.status(), StatusCode::OK);
        assert_eq!(
            bundle.headers()["content-type"],
            "text/javascript; charset=utf-8"
        );
        assert_eq!(bundle.headers()["x-content-type-options"], "nosniff");
        assert!(bundle.body().len() > 1_000_000);
        let tag = bundle.headers()["etag"].to_str().unwrap().to_owned();
        let again = warp::test::request()
            .path("/api/swaggerui/swagger-ui-bundle.js")
            .header("if-none-match", format!("\"other\", W/{tag}"))
            .reply(&routes)
            .await;
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        assert!(again.body().is_empty());
        let stale = warp::test::request()
            .path("/api/swaggerui/swagger-ui.css")
            .header("if-none-match", tag)
            .reply(&routes)
            .await;
        assert_eq!(stale.status(), StatusCode::OK);
        for missing in [
            "/api/swaggerui/SHA256SUMS",
            "/api/swaggerui/../v1",
            "/api/swaggerui/swagger-ui-bundle.js/x",
        ] {
            assert!(
                warp::test::request()
                    .path(missing)
                    .filter(&routes)
                    .await
                    .is_err(),
                "{missing}"
            );
        }
        let post = warp::test::request()
            .method("POST")
            .path(PATH)
            .filter(&routes)
            .await;
        assert!(post.is_err());
    }
}
