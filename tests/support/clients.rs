//! The independent OAuth 2.0 / JOSE clients in `tests/clients`, run as
//! processes (`make pyclients jsclients` installs them). Each prints one
//! JSON object; a client that refuses the server fails the test with its
//! message.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::{REPO, python};

fn run(mut command: Command, what: &str) -> Value {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("running {what}: {e}"));
    assert!(
        out.status.success(),
        "{what} refused the server: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{what} printed no JSON: {e}"))
}

fn oauth4webapi_dir() -> PathBuf {
    std::env::var_os("CATALIO_TEST_OAUTH4WEBAPI")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").unwrap_or_default();
            Path::new(&home).join(".cache/catalio-operator/jsclients/node_modules/oauth4webapi")
        })
}

/// oauth4webapi: discovery at `issuer`, the client credentials grant and
/// `validateJwtAccessToken`; `ca` is trusted for https. Prints the token
/// response and the validated claims.
pub fn oauth4webapi(
    issuer: &str,
    id: &str,
    secret: &str,
    audience: &str,
    ca: Option<&Path>,
) -> Value {
    let mut command = Command::new("node");
    command
        .arg(format!("{REPO}/tests/clients/strict_client.mjs"))
        .arg(oauth4webapi_dir())
        .args([issuer, id, secret, audience]);
    if let Some(ca) = ca {
        command.env("NODE_EXTRA_CA_CERTS", ca);
    }
    run(command, "oauth4webapi")
}

/// The node_modules the npm clients are installed in (Playwright's too).
fn node_modules() -> PathBuf {
    oauth4webapi_dir()
        .parent()
        .expect("node_modules holds oauth4webapi")
        .to_owned()
}

/// Swagger UI at `base/api/swaggerui` in headless Chromium (Debian's, or
/// `CATALIO_TEST_CHROMIUM`), driven by Playwright: authorizes with `id` and
/// `secret`, executes `GET /api/v1/requirements` and saves a screenshot at
/// `screenshot`. Prints the rendered status and body, the page's requests,
/// and its console errors and CSP violations.
pub fn explorer(base: &str, id: &str, secret: &str, screenshot: &Path) -> Value {
    let mut command = Command::new("node");
    command
        .arg(format!("{REPO}/tests/clients/explorer.mjs"))
        .arg(node_modules())
        .args([base, id, secret])
        .arg(screenshot);
    run(command, "the explorer in Chromium")
}

/// `kubectl catalio console` in Chromium: `scenario` (admin, viewer or
/// foreign) of tests/clients/console.mjs with `config`.
pub fn console(scenario: &str, config: &Value) -> Value {
    let mut command = Command::new("node");
    command
        .arg(format!("{REPO}/tests/clients/console.mjs"))
        .arg(node_modules())
        .arg(scenario)
        .arg(config.to_string());
    run(command, "the console in Chromium")
}

/// Where a client gets its token and keys, and what it expects of them.
pub struct Server<'a> {
    pub token_url: &'a str,
    pub jwks_url: &'a str,
    pub issuer: &'a str,
    pub audience: &'a str,
    /// A CA to trust for https.
    pub ca: Option<&'a Path>,
}

impl Server<'_> {
    fn python(&self, script: &str, args: &[&str]) -> Command {
        let mut command = Command::new(python());
        command
            .arg(format!("{REPO}/tests/clients/{script}"))
            .arg(self.token_url)
            .arg(self.jwks_url)
            .args(args);
        if let Some(ca) = self.ca {
            command.env("REQUESTS_CA_BUNDLE", ca);
        }
        command
    }

    /// Authlib's client with `method` (client_secret_basic or
    /// client_secret_post), and its JOSE verification. Prints the token
    /// response, the header and the claims.
    pub fn authlib(&self, id: &str, secret: &str, method: &str) -> Value {
        let command = self.python(
            "oauth_client.py",
            &[id, secret, method, self.issuer, self.audience],
        );
        run(command, "Authlib")
    }

    /// joserfc: the signature, `typ: at+jwt` and the RFC 9068 claims.
    /// Prints the header and the claims.
    pub fn joserfc(&self, id: &str, secret: &str) -> Value {
        let command = self.python("at_jwt.py", &[id, secret, self.issuer, self.audience]);
        run(command, "joserfc")
    }
}
