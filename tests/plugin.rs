//! `kubectl catalio`: the operator binary on PATH as `kubectl-catalio` and
//! `kubectl_complete-catalio` (symlinks), run through the real kubectl
//! against the real API server, with the operator serving tokens.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use catalio_operator::crd::{ApiCredential, Phase};
use catalio_test_support::{OperatorProcess, TestNamespace, cluster, eventually, patch_credential};
use kube::Api;

const OPERATOR: &str = env!("CARGO_BIN_EXE_catalio-operator");
const WAIT: Duration = Duration::from_secs(30);

struct Harness {
    ns: TestNamespace,
    creds: Api<ApiCredential>,
    _operator: OperatorProcess,
    base: String,
    /// Holds the two symlinks; first on PATH.
    bin: PathBuf,
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
            "--unused-after",
            "1h",
        ];
        let (mut operator, endpoints) =
            OperatorProcess::run_serving(OPERATOR, &cluster().kubeconfig, &args);
        operator.wait_ready(&endpoints, WAIT).await;
        let bin = std::env::temp_dir().join(format!("plugin-bin-{}", ns.name));
        std::fs::create_dir_all(&bin).unwrap();
        for name in ["kubectl-catalio", "kubectl_complete-catalio"] {
            let _ = std::fs::remove_file(bin.join(name));
            std::os::unix::fs::symlink(OPERATOR, bin.join(name)).unwrap();
        }
        Self {
            creds: Api::namespaced(client, &ns.name),
            ns,
            _operator: operator,
            base: endpoints.base,
            bin,
        }
    }

    /// `kubectl ARGS` with the plugin on PATH and `stdin` as its input.
    fn kubectl(&self, args: &[&str], stdin: &str) -> Output {
        use std::io::Write;
        let path = format!(
            "{}:{}:{}",
            self.bin.display(),
            cluster().bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut child = Command::new(cluster().bin.join("kubectl"))
            .args(args)
            .env("PATH", path)
            .env("KUBECONFIG", &cluster().kubeconfig)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    /// `kubectl catalio -n <ns> ARGS`; stdout on success, stderr on failure.
    fn catalio(&self, args: &[&str], stdin: &str) -> Result<String, String> {
        let mut all = vec!["catalio", "-n", &self.ns.name];
        all.extend_from_slice(args);
        let out = self.kubectl(&all, stdin);
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        if out.status.success() {
            Ok(text(&out.stdout))
        } else {
            Err(text(&out.stderr))
        }
    }

    fn apply(&self, name: &str, spec: &str) {
        let yaml = format!(
            "apiVersion: catalio.ai/v1\nkind: ApiCredential\nmetadata: {{name: {name}}}\n\
             spec:\n  displayName: {name}\n  scopes: [\"requirement:read\"]\n{spec}"
        );
        let out = cluster().kubectl_stdin(&["-n", &self.ns.name, "apply", "-f", "-"], Some(&yaml));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    async fn active(&self, name: &str) -> ApiCredential {
        eventually(WAIT, "credential to be Active", || async {
            let c = self.creds.get(name).await.ok()?;
            (c.status.as_ref()?.phase == Some(Phase::Active)).then_some(c)
        })
        .await
    }

    async fn list(&self, token: &str) -> u16 {
        catalio_test_support::list_status(&self.base, token).await
    }
}

/// token, rotate and revoke through `kubectl catalio`, each doing what it
/// says and refusing what it should.
#[tokio::test]
async fn token_rotate_and_revoke_do_what_they_say() {
    let h = Harness::start("plugin").await;
    h.apply("ci", "");
    let before = h.active("ci").await.status.unwrap().secret_hash.unwrap();

    // token: an access token the API takes, once the server knows the
    // credential.
    let token = eventually(WAIT, "a token through the plugin", || async {
        h.catalio(&["token", "ci"], "").ok()
    })
    .await;
    let token = token.trim();
    assert_eq!(token.split('.').count(), 3, "{token}");
    assert_eq!(h.list(token).await, 200);
    let narrowed = h.catalio(&["token", "ci", "--scope", "persona:read"], "");
    assert!(narrowed.unwrap_err().contains("invalid_scope"));
    let missing = h.catalio(&["token", "nope"], "").unwrap_err();
    assert!(
        missing.contains(&format!("no ApiCredential nope in namespace {}", h.ns.name)),
        "{missing}"
    );

    // rotate: waits for the new secret and prints its hash.
    let printed = h.catalio(&["rotate", "ci"], "").unwrap();
    let status = h.creds.get("ci").await.unwrap().status.unwrap();
    let after = status.secret_hash.unwrap();
    assert_ne!(after, before);
    assert_eq!(printed, format!("ci rotated: client secret {after}\n"));
    assert_eq!(status.rotation_counter, Some(1));
    assert!(!printed.contains(&token[..20]));

    // revoke: no without a yes, whatever stdin says.
    for answer in ["n\n", "", "maybe\n"] {
        let refused = h.catalio(&["revoke", "ci"], answer).unwrap_err();
        assert!(
            refused.contains("ci was not revoked"),
            "{answer:?}: {refused}"
        );
        assert!(!h.creds.get("ci").await.unwrap().spec.revoked, "{answer:?}");
    }
    assert_eq!(h.catalio(&["revoke", "ci"], "y\n").unwrap(), "ci revoked\n");
    let revoked = h.creds.get("ci").await.unwrap();
    assert_eq!(revoked.status.unwrap().phase, Some(Phase::Revoked));
    assert_eq!(h.list(token).await, 401);
    assert!(
        h.catalio(&["rotate", "ci"], "")
            .unwrap_err()
            .contains("revoked")
    );
    assert!(
        h.catalio(&["revoke", "ci", "--yes"], "")
            .unwrap_err()
            .contains("already revoked")
    );
}

/// status: one row per credential with last use, unused and the next
/// rotation; completion through kubectl's plugin completion.
#[tokio::test]
async fn status_lists_use_and_rotation_and_kubectl_completes_names() {
    let h = Harness::start("plugin-status").await;
    h.apply("used", "  rotation: {every: 720h}\n");
    h.apply("idle", "  unusedAfter: 1s\n");
    h.apply("gone", "");
    h.active("used").await;
    h.active("gone").await;
    eventually(WAIT, "a token for used", || async {
        h.catalio(&["token", "used"], "").ok()
    })
    .await;
    patch_credential(&h.ns.name, "gone", r#"{"spec":{"revoked":true}}"#);
    eventually(WAIT, "used's last use and idle marked Unused", || async {
        let used = h.creds.get("used").await.ok()?.status?;
        let idle = h.creds.get("idle").await.ok()?.status?;
        let gone = h.creds.get("gone").await.ok()?.status?;
        let unused = idle
            .conditions
            .iter()
            .any(|c| c.type_ == "Unused" && c.status == "True");
        (used.last_used_at.is_some() && unused && gone.phase == Some(Phase::Revoked)).then_some(())
    })
    .await;

    let table = h.catalio(&["status"], "").unwrap();
    let rows: Vec<Vec<&str>> = table
        .lines()
        .map(|l| {
            l.split("   ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .collect()
        })
        .collect();
    assert_eq!(
        rows[0],
        [
            "NAME",
            "PHASE",
            "CLIENT ID",
            "LAST USED",
            "UNUSED",
            "NEXT ROTATION"
        ],
        "{table}"
    );
    let row = |name: &str| {
        rows.iter()
            .find(|r| r[0] == name)
            .unwrap_or_else(|| panic!("{table}"))
    };
    assert_eq!(row("gone")[1], "Revoked");
    assert_eq!((row("gone")[4], row("gone")[5]), ("-", "-"));
    assert_eq!(row("idle")[3], "never");
    assert_eq!(row("idle")[4], "yes");
    assert!(row("used")[3].ends_with("ago"), "{table}");
    assert_eq!(row("used")[4], "no");
    assert!(
        row("used")[5] == "in 29d" || row("used")[5] == "in 30d",
        "{table}"
    );
    assert!(row("used")[2].starts_with("ci_"));
    let all = h.catalio(&["status", "-A"], "").unwrap();
    assert!(all.starts_with("NAMESPACE"));
    assert!(
        all.lines()
            .any(|l| l.starts_with(&h.ns.name) && l.contains("used"))
    );

    // kubectl asks kubectl_complete-catalio (cobra's protocol).
    let complete = |args: &[&str]| {
        let mut all = vec!["__complete", "catalio"];
        all.extend_from_slice(args);
        let out = h.kubectl(&all, "");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let subcommands = complete(&["r"]);
    assert!(
        subcommands.contains("rotate\n") && subcommands.contains("revoke\n"),
        "{subcommands}"
    );
    assert!(!subcommands.contains("status"));
    let names = complete(&["-n", &h.ns.name, "rotate", ""]);
    let names: Vec<&str> = names.lines().filter(|l| !l.starts_with(':')).collect();
    assert_eq!(
        names,
        ["idle", "used"],
        "revoked credentials are not offered"
    );
    // And a script for the plugin's own name.
    let script = h.catalio(&["completion", "bash"], "").unwrap();
    assert!(script.contains("kubectl-catalio"));
}

/// A listener on loopback that answers every request with `status` and
/// `Location: location`, and tells how many requests it was sent.
struct Redirector {
    url: String,
    served: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Redirector {
    fn start(status: u16, location: &str) -> Self {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/oauth/token", listener.local_addr().unwrap());
        let served = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = served.clone();
        let reply = format!(
            "HTTP/1.1 {status} Redirect\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut buf = [0u8; 16 * 1024];
                let _ = stream.read(&mut buf);
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let _ = stream.write_all(reply.as_bytes());
            }
        });
        Self { url, served }
    }

    fn served(&self) -> usize {
        self.served.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Second review, hole 8: `kubectl catalio token` re-posted the form,
/// client secret included, to wherever a 307 or 308 pointed, and sent it
/// over plain http to any host.
#[tokio::test]
async fn token_follows_no_redirect_and_sends_no_secret_over_plain_http() {
    let h = Harness::start("plugin-redirect").await;
    h.apply("ci", "");
    h.active("ci").await;
    // Where a redirect would take the secret: another listener.
    let thief = Redirector::start(404, "/");
    for status in [307, 308, 302] {
        let redirect = Redirector::start(status, &thief.url);
        let refused = h
            .catalio(&["token", "ci", "--token-url", &redirect.url], "")
            .unwrap_err();
        assert!(refused.contains("redirect"), "{status}: {refused}");
        assert_eq!(redirect.served(), 1);
    }
    // The plugin has exited: anything it sent has arrived.
    assert_eq!(thief.served(), 0, "the secret followed a redirect");

    // Plain http to anything but loopback is refused before connecting,
    // unless asked for.
    let refused = h
        .catalio(
            &[
                "token",
                "ci",
                "--token-url",
                "http://192.0.2.1:8080/oauth/token",
            ],
            "",
        )
        .unwrap_err();
    assert!(
        refused.contains("plain http") && refused.contains("--insecure"),
        "{refused}"
    );
    let tried = h
        .catalio(
            &[
                "token",
                "ci",
                "--insecure",
                "--token-url",
                "http://0.0.0.0:1/oauth/token",
            ],
            "",
        )
        .unwrap_err();
    assert!(!tried.contains("plain http"), "{tried}");
    // Loopback (a port-forward) stays allowed.
    let token = eventually(WAIT, "a token through loopback", || async {
        let url = format!("{}/oauth/token", h.base);
        h.catalio(&["token", "ci", "--token-url", &url], "").ok()
    })
    .await;
    assert_eq!(h.list(token.trim()).await, 200);
}
