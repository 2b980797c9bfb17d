//! `kubectl catalio console`: the administrator's screen in real Chromium,
//! against the real API server with the operator issuing tokens: an
//! administrator does everything the guide's "Managing credentials" lists;
//! a viewer (impersonated) sees the list and no write buttons; requests
//! that do not come from the console's own page, with its token, on its
//! own address, are refused; and the console stops by itself.
//! Screenshots of every screen are kept in target/test-artifacts/console.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use catalio_operator::crd::ApiCredential;
use catalio_test_support::{
    OperatorProcess, REPO, TestNamespace, clients, cluster, create_credential, eventually,
};
use kube::Api;
use serde_json::{Value, json};

const OPERATOR: &str = env!("CARGO_BIN_EXE_catalio-operator");
const WAIT: Duration = Duration::from_secs(60);

/// An organization and the operator serving it.
struct Harness {
    ns: TestNamespace,
    _operator: OperatorProcess,
}

impl Harness {
    async fn start(prefix: &str) -> Self {
        let client = cluster().client().await;
        let ns = TestNamespace::new(&client, prefix).await;
        let args = [
            "--namespace",
            &ns.name,
            "--watch-namespaces",
            &ns.name,
            "--token-url",
            "{base}/oauth/token",
            "--last-used-interval",
            "1s",
            "--shutdown-delay",
            "0s",
        ];
        let (mut operator, endpoints) =
            OperatorProcess::run_serving(OPERATOR, &cluster().kubeconfig, &args);
        operator.wait_ready(&endpoints, WAIT).await;
        Self {
            ns,
            _operator: operator,
        }
    }
}

/// `kubectl-catalio console --no-open` as a process, and the link it
/// printed.
struct ConsoleProcess {
    child: Child,
    output: BufReader<ChildStdout>,
    /// `http://127.0.0.1:PORT/#token=...`
    url: String,
    /// `http://127.0.0.1:PORT`
    origin: String,
    token: String,
}

impl ConsoleProcess {
    fn start(kubeconfig: &Path, namespace: &str, extra: &[&str]) -> Self {
        let bin = std::env::temp_dir().join(format!("console-bin-{}", std::process::id()));
        std::fs::create_dir_all(&bin).unwrap();
        let plugin = bin.join("kubectl-catalio");
        if !plugin.exists() {
            std::os::unix::fs::symlink(OPERATOR, &plugin).unwrap();
        }
        let mut child = Command::new(&plugin)
            .args(["console", "-n", namespace, "--no-open"])
            .args(extra)
            .env("KUBECONFIG", kubeconfig)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start kubectl-catalio console");
        let mut output = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        output.read_line(&mut first).unwrap();
        let url = first
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no link in {first:?}"))
            .to_owned();
        let (origin, token) = url.split_once("/#token=").expect("a token in the link");
        ConsoleProcess {
            origin: origin.to_owned(),
            token: token.to_owned(),
            url,
            child,
            output,
        }
    }

    /// Waits for the process to exit by itself; everything it printed
    /// after the link.
    fn wait_exit(mut self, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "the console did not stop");
            std::thread::sleep(Duration::from_millis(100));
        }
        let mut rest = String::new();
        self.output.read_to_string(&mut rest).unwrap();
        rest
    }
}

impl Drop for ConsoleProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn shots() -> PathBuf {
    let dir = Path::new(REPO).join("target/test-artifacts/console");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The guide's "Managing credentials", in the browser: create and copy the
/// secret shown once, get a token with it, see a rotation made elsewhere
/// arrive without a reload, rotate and see the old secret refused, read
/// the events, revoke (only once the name is typed), delete.
#[tokio::test]
async fn an_administrator_does_everything_the_guide_lists_in_a_browser() {
    let h = Harness::start("console-admin").await;
    let console = ConsoleProcess::start(&cluster().kubeconfig, &h.ns.name, &[]);
    let kubectl = cluster().bin.join("kubectl");
    let out = clients::console(
        "admin",
        &json!({
            "url": console.url,
            "namespace": h.ns.name,
            "shots": shots(),
            "kubectl": kubectl,
            "kubeconfig": cluster().kubeconfig,
        }),
    );
    assert_eq!(out["problems"], json!([]), "{out}");
    // The token leaves the address bar.
    let address = out["addressBar"].as_str().unwrap();
    assert!(!address.contains("token"), "{address}");
    // Shown once, usable, then gone from the page.
    assert_eq!(out["firstToken"], 200, "{out}");
    assert_eq!(out["firstStillOnPage"], false);
    assert!(
        out["first"]["clientId"]
            .as_str()
            .unwrap()
            .starts_with("ci_")
    );
    let curl = out["first"]["curl"].as_str().unwrap();
    assert!(
        curl.starts_with("curl -s -u '") && curl.ends_with("/oauth/token"),
        "{curl}"
    );
    assert_eq!(out["scopes"], json!(["requirement:read", "persona:read"]));
    assert!(
        out["nextRotation"].as_str().unwrap().contains("in "),
        "{out}"
    );
    // Live, and the rotations.
    assert_eq!(out["rotatedElsewhereWithoutReload"], true);
    assert_eq!(out["rotateGraceOffered"], "1h");
    assert_eq!(out["sameClientId"], true);
    assert_eq!(out["newSecret"], true);
    assert_eq!(out["secondStillOnPage"], false);
    assert_eq!(out["firstTokenAfterRotation"], 401, "{out}");
    assert_eq!(out["secondToken"], 200);
    let events = out["events"].to_string();
    assert!(
        events.contains("Rotated") && events.contains("Created"),
        "{events}"
    );
    // Revoke asks for the name and says it is for good.
    assert_eq!(out["revokeEnabledAtFirst"], false);
    assert_eq!(out["revokeEnabledMistyped"], false);
    assert_eq!(out["revokeEnabledTyped"], true);
    assert!(
        out["revokeWarning"]
            .as_str()
            .unwrap()
            .contains("cannot be undone")
    );
    assert_eq!(out["rotateOfferedWhenRevoked"], 0);
    assert_eq!(out["secondTokenAfterRevoke"], 401);
    assert_eq!(out["emptyAgain"], true);

    // The cluster agrees, and the console printed no secret.
    let creds: Api<ApiCredential> = Api::namespaced(cluster().client().await, &h.ns.name);
    eventually(WAIT, "the credential deleted", || {
        let creds = creds.clone();
        async move {
            creds
                .get_opt("ci-pipeline")
                .await
                .unwrap()
                .is_none()
                .then_some(())
        }
    })
    .await;
    let mut printed = console.url.clone();
    let mut console = console;
    let _ = console.child.kill();
    console.output.read_to_string(&mut printed).unwrap();
    assert!(!printed.contains("catalio_cs_"), "{printed}");
}

/// A kubeconfig that acts as `user` (impersonated by the admin's).
fn impersonating(user: &str) -> PathBuf {
    let text = std::fs::read_to_string(&cluster().kubeconfig).unwrap();
    let mut config: Value = serde_saphyr::from_str(&text).unwrap();
    for entry in config["users"].as_array_mut().unwrap() {
        entry["user"]["as"] = json!(user);
    }
    let path = std::env::temp_dir().join(format!("kubeconfig-{user}-{}", std::process::id()));
    std::fs::write(&path, config.to_string()).unwrap();
    path
}

/// A viewer sees the list, with no button their role would refuse, and
/// the API server's reason when they try anyway.
#[tokio::test]
async fn a_viewer_sees_the_list_and_no_write_buttons() {
    let h = Harness::start("console-viewer").await;
    let client = cluster().client().await;
    create_credential(&client, &h.ns.name, "shared", "").await;
    let user = "viewer@example.com";
    let rbac = format!(
        r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: credential-viewer, namespace: {ns}}}
rules:
- {{apiGroups: [catalio.ai], resources: [apicredentials], verbs: [get, list, watch]}}
- {{apiGroups: [""], resources: [events], verbs: [get, list, watch]}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: credential-viewer, namespace: {ns}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: credential-viewer}}
subjects:
- {{apiGroup: rbac.authorization.k8s.io, kind: User, name: {user}}}
"#,
        ns = h.ns.name
    );
    cluster().kubectl_stdin(&["apply", "-f", "-"], Some(&rbac));
    let console = ConsoleProcess::start(&impersonating(user), &h.ns.name, &[]);
    let out = clients::console(
        "viewer",
        &json!({"url": console.url, "namespace": h.ns.name, "shots": shots()}),
    );
    assert_eq!(out["problemsBefore"], json!([]), "{out}");
    assert_eq!(out["rows"], 1);
    assert_eq!(out["createOffered"], false);
    assert_eq!(out["writeButtons"], 0);
    assert!(
        out["live"]
            .as_str()
            .unwrap()
            .contains("You may view the credentials"),
        "{out}"
    );
    assert_eq!(out["attempt"]["status"], 403);
    let reason = out["attempt"]["body"]["error"].as_str().unwrap();
    assert!(
        reason.contains("forbidden") && reason.contains(user),
        "{reason}"
    );
}

/// The attacks on a local server: no launch token, a wrong one, a foreign
/// `Host` (DNS rebinding), a foreign `Origin` or none on a change (CSRF),
/// a CORS preflight; and in Chromium, a page on another origin that even
/// knows the token. Each is refused, and nothing is created.
#[tokio::test]
async fn the_console_refuses_what_does_not_come_from_its_page() {
    let h = Harness::start("console-attacks").await;
    let console = ConsoleProcess::start(&cluster().kubeconfig, &h.ns.name, &[]);
    let url = format!("{}/api/credentials?namespace={}", console.origin, h.ns.name);
    let http = reqwest::Client::new();
    let port = console.origin.rsplit(':').next().unwrap();
    let token = ("x-console-token", console.token.as_str());
    let own = ("origin", console.origin.as_str());
    let body = r#"{"name":"attack","displayName":"Attack"}"#;
    let status = |request: reqwest::RequestBuilder| async move {
        request.send().await.unwrap().status().as_u16()
    };
    // The page itself, with its token, gets in.
    assert_eq!(status(http.get(&url).header(token.0, token.1)).await, 200);
    assert_eq!(status(http.get(&url)).await, 401);
    assert_eq!(
        status(http.get(&url).header(token.0, "0".repeat(64))).await,
        401
    );
    let rebound = format!("attacker.example:{port}");
    let get = http.get(&url).header(token.0, token.1);
    assert_eq!(status(get.header("host", rebound)).await, 403);
    let post = |origin: Option<&str>| {
        let request = http
            .post(&url)
            .header(token.0, token.1)
            .header("content-type", "application/json")
            .body(body);
        match origin {
            Some(o) => request.header("origin", o),
            None => request,
        }
    };
    assert_eq!(status(post(Some("http://attacker.example"))).await, 403);
    assert_eq!(status(post(Some("http://127.0.0.1:1"))).await, 403);
    assert_eq!(status(post(None)).await, 403);
    let preflight = http
        .request(reqwest::Method::OPTIONS, &url)
        .header("origin", "http://127.0.0.1:1")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "x-console-token")
        .send()
        .await
        .unwrap();
    assert!(!preflight.status().is_success());
    assert!(
        preflight
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
    let page = http
        .get(format!("{}/", console.origin))
        .send()
        .await
        .unwrap();
    let policy = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(policy.contains("script-src 'self'") && policy.contains("frame-ancestors 'none'"));
    assert!(!own.1.is_empty());

    let out = clients::console(
        "foreign",
        &json!({"url": console.url, "namespace": h.ns.name, "shots": shots()}),
    );
    let attempts = &out["attempts"];
    for blocked in ["readWithToken", "createWithToken"] {
        assert!(attempts[blocked]["error"].is_string(), "{blocked}: {out}");
    }
    // Sent without the token (a "simple" request needs no preflight), so
    // refused; and its answer is not even readable there (an opaque
    // response, or none: Cross-Origin-Resource-Policy).
    let simple = &attempts["createSimple"];
    assert!(
        simple["error"].is_string() || simple["type"] == "opaque",
        "{out}"
    );
    assert_eq!(out["form"], 403, "{out}");
    let creds: Api<ApiCredential> = Api::namespaced(cluster().client().await, &h.ns.name);
    let listed = creds.list(&Default::default()).await.unwrap();
    assert!(listed.items.is_empty(), "{:?}", listed.items);
}

/// With no page open the console stops after --idle-timeout; it stops
/// when its terminal goes away (SIGHUP).
#[tokio::test]
async fn the_console_stops_when_idle_or_when_its_terminal_goes_away() {
    let client = cluster().client().await;
    let ns = TestNamespace::new(&client, "console-stops").await;
    let idle = ConsoleProcess::start(&cluster().kubeconfig, &ns.name, &["--idle-timeout", "2s"]);
    let said = idle.wait_exit(WAIT);
    assert!(said.contains("stopped: no page was open"), "{said}");

    let hung_up = ConsoleProcess::start(&cluster().kubeconfig, &ns.name, &[]);
    let pid = hung_up.child.id().to_string();
    Command::new("kill").args(["-HUP", &pid]).status().unwrap();
    let said = hung_up.wait_exit(WAIT);
    assert!(said.contains("stopped: the terminal went away"), "{said}");
}
