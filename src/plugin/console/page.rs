//! The console's page: three files built into the binary (`page/`), and
//! how the browser is sent to it.

use std::path::PathBuf;

use warp::http::{HeaderValue, header};
use warp::reply::Response;
use warp::{Filter, Rejection};

use crate::server::explorer::Asset;

static ASSETS: [Asset; 4] = [
    Asset {
        name: "",
        content_type: "text/html; charset=utf-8",
        bytes: include_bytes!("page/index.html"),
    },
    Asset {
        name: "console.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("page/console.js"),
    },
    Asset {
        name: "console.css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("page/console.css"),
    },
    Asset {
        name: "favicon.svg",
        content_type: "image/svg+xml",
        bytes: include_bytes!("page/favicon.svg"),
    },
];

/// `GET /`, `/console.js`, `/console.css`, `/favicon.svg`.
pub fn routes() -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    warp::get()
        .and(warp::path::tail())
        .and_then(|tail: warp::path::Tail| async move {
            let asset = ASSETS
                .iter()
                .find(|a| a.name == tail.as_str())
                .ok_or_else(warp::reject::not_found)?;
            let mut response = Response::new(asset.bytes.into());
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            );
            Ok::<_, Rejection>(response)
        })
}

/// A file that sends the browser to the console, readable by the user
/// only, removed when dropped. The browser is started with the file's
/// path rather than the URL, so the launch token is not in any process's
/// command line for other users of the machine to read.
pub struct Redirect(PathBuf);

impl Drop for Redirect {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Opens `url` in the user's browser (`$BROWSER`, else `xdg-open`, else
/// `open`); None when none could be started.
pub fn open_in_browser(url: &str) -> Option<Redirect> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let mut random = [0u8; 8];
    getrandom::fill(&mut random).ok()?;
    let name: String = random.iter().map(|b| format!("{b:02x}")).collect();
    let dir = std::env::temp_dir().join(format!("catalio-console-{name}"));
    std::fs::DirBuilder::new().mode(0o700).create(&dir).ok()?;
    let redirect = Redirect(dir);
    let file = redirect.0.join("console.html");
    let html = format!(
        "<!doctype html><meta charset=utf-8><meta http-equiv=refresh content=\"0;url={url}\"><title>Catalio console</title>"
    );
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&file)
        .ok()?;
    std::io::Write::write_all(&mut out, html.as_bytes()).ok()?;
    let openers = std::env::var("BROWSER")
        .ok()
        .into_iter()
        .chain(["xdg-open".to_owned(), "open".to_owned()]);
    for opener in openers {
        let started = std::process::Command::new(&opener)
            .arg(&file)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
        if started.is_ok() {
            return Some(redirect);
        }
    }
    None
}
