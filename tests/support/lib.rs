//! Test support shared by the integration tests: a real control plane per
//! test binary, a namespace per test, and the operator as a real process.
//!
//! The control plane is started by `tests/controlplane/cluster.sh` with this
//! process as its owner: a detached watchdog stops it as soon as the test
//! binary exits, however it exits (Rust runs no destructor for statics).
//! Set `CATALIO_TEST_KUBECONFIG` to reuse a running control plane instead
//! (for example the one `make cluster-up` starts).
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};

pub mod clients;
pub mod cut;
pub mod events;
pub mod jsonapi;
pub mod pki;
pub mod prometheus;
pub mod webhook;

/// The repository root.
pub const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

pub struct Cluster {
    pub kubeconfig: PathBuf,
    pub bin: PathBuf,
}

impl Cluster {
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_stdin(args, None)
    }

    pub fn kubectl_stdin(&self, args: &[&str], stdin: Option<&str>) -> Output {
        use std::io::Write;
        let mut child = Command::new(self.bin.join("kubectl"))
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kubectl");
        if let Some(input) = stdin {
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(input.as_bytes())
                .expect("write stdin");
        }
        drop(child.stdin.take());
        child.wait_with_output().expect("kubectl output")
    }

    /// Runs kubectl and returns stdout, panicking with stderr on failure.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs helm against this control plane, with its caches in the
    /// temporary directory.
    pub fn helm(&self, args: &[&str]) -> Output {
        let home = std::env::temp_dir();
        Command::new(self.bin.join("helm"))
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HELM_CACHE_HOME", home.join("catalio-helm-cache"))
            .env("HELM_CONFIG_HOME", home.join("catalio-helm-config"))
            .env("HELM_DATA_HOME", home.join("catalio-helm-data"))
            .output()
            .expect("run helm")
    }

    /// Runs helm and returns stdout, panicking with stderr on failure.
    pub fn helm_ok(&self, args: &[&str]) -> String {
        let out = self.helm(args);
        assert!(
            out.status.success(),
            "helm {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The key the API server signs ServiceAccount tokens with (PEM).
    pub fn service_account_key(&self) -> PathBuf {
        self.kubeconfig
            .parent()
            .expect("the kubeconfig is in the cluster's directory")
            .join("pki/sa.key")
    }

    pub async fn client(&self) -> Client {
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig).expect("read kubeconfig");
        let config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .expect("kubeconfig");
        Client::try_from(config).expect("client")
    }
}

/// The control plane of this test binary, started on first use.
pub fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        let script = Path::new(REPO).join("tests/controlplane/cluster.sh");
        let bin = || -> PathBuf {
            let out = Command::new(Path::new(REPO).join("tests/controlplane/build.sh"))
                .stderr(Stdio::inherit())
                .output()
                .expect("run build.sh");
            assert!(out.status.success(), "building the control plane failed");
            PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
        };
        if let Ok(kubeconfig) = std::env::var("CATALIO_TEST_KUBECONFIG") {
            let cluster = Cluster {
                kubeconfig: kubeconfig.into(),
                bin: bin(),
            };
            cluster.kubectl_ok(&["apply", "--server-side", "-f", &format!("{REPO}/crds")]);
            cluster.kubectl_ok(&[
                "wait",
                "--for",
                "condition=Established",
                "--timeout",
                "60s",
                "crd",
                "--all",
            ]);
            return cluster;
        }
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let dir = std::env::temp_dir().join(format!("catalio-cp.{}-{nanos}", std::process::id()));
        let out = Command::new(&script)
            .arg("up")
            .arg(&dir)
            .args(["--owner-pid", &std::process::id().to_string()])
            .args(["--crds", &format!("{REPO}/crds")])
            .stderr(Stdio::inherit())
            .output()
            .expect("run cluster.sh");
        assert!(out.status.success(), "starting the control plane failed");
        Cluster {
            kubeconfig: PathBuf::from(String::from_utf8(out.stdout).unwrap().trim()),
            bin: bin(),
        }
    })
}

/// A namespace of its own for one test, deleted when dropped (also when the
/// test panics).
pub struct TestNamespace {
    pub name: String,
}

impl TestNamespace {
    pub async fn new(client: &Client, prefix: &str) -> Self {
        use k8s_openapi::api::core::v1::Namespace;
        use kube::api::PostParams;
        let mut ns = Namespace::default();
        ns.metadata.generate_name = Some(format!("{prefix}-"));
        let created = Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .expect("create namespace");
        Self {
            name: created.metadata.name.expect("generated name"),
        }
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        // Blocking and synchronous, so it also runs while a test unwinds.
        let _ = cluster().kubectl(&["delete", "namespace", &self.name, "--wait=false"]);
    }
}

/// Polls `check` until it returns `Some`, or panics after `timeout` with
/// `what` and the last value seen.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Where an operator started by [`OperatorProcess::run_serving`] listens.
pub struct Endpoints {
    /// The public port: `http://127.0.0.1:PORT`.
    pub base: String,
    /// The admin port: `http://127.0.0.1:PORT`.
    pub admin: String,
}

/// The operator binary running as a real process, with its logs in a file.
pub struct OperatorProcess {
    child: Child,
    watchdog: Child,
    pub log: PathBuf,
}

impl OperatorProcess {
    /// `binary` is the test's `env!("CARGO_BIN_EXE_catalio-operator")`.
    pub fn start(binary: &str, args: &[&str]) -> Self {
        Self::start_with_kubeconfig(binary, args, &cluster().kubeconfig)
    }

    /// As [`OperatorProcess::start`], authenticating with `kubeconfig`.
    pub fn start_with_kubeconfig(binary: &str, args: &[&str], kubeconfig: &Path) -> Self {
        let log = std::env::temp_dir().join(format!(
            "catalio-operator-test-{}-{}.log",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(binary)
            .args(args)
            .env("KUBECONFIG", kubeconfig)
            .env(
                "RUST_LOG",
                "debug,hyper=info,tower=info,rustls=info,kube_client=info",
            )
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .spawn()
            .expect("start catalio-operator");
        // If this test binary dies without unwinding, the watchdog still ends
        // the operator.
        let watchdog = Command::new("sh")
            .arg("-c")
            .arg("while kill -0 \"$1\" 2>/dev/null && kill -0 \"$2\" 2>/dev/null; do sleep 0.5; done; kill -9 \"$2\" 2>/dev/null")
            .args(["watchdog", &std::process::id().to_string(), &child.id().to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start watchdog");
        Self {
            child,
            watchdog,
            log,
        }
    }

    /// `catalio-operator run` on fresh loopback ports, with `args` added
    /// (`{base}` in them becomes the public base URL), authenticating with
    /// `kubeconfig`.
    pub fn run_serving(binary: &str, kubeconfig: &Path, args: &[&str]) -> (Self, Endpoints) {
        Self::run_serving_mode(binary, kubeconfig, "run", args)
    }

    /// As [`OperatorProcess::run_serving`], in `mode` (`run` or `server`).
    pub fn run_serving_mode(
        binary: &str,
        kubeconfig: &Path,
        mode: &str,
        args: &[&str],
    ) -> (Self, Endpoints) {
        let listen = format!("127.0.0.1:{}", free_port());
        let admin = format!("127.0.0.1:{}", free_port());
        let endpoints = Endpoints {
            base: format!("http://{listen}"),
            admin: format!("http://{admin}"),
        };
        let args: Vec<String> = args
            .iter()
            .map(|a| a.replace("{base}", &endpoints.base))
            .collect();
        let mut all = vec![mode, "--listen", &listen, "--admin-listen", &admin];
        all.extend(args.iter().map(String::as_str));
        (
            Self::start_with_kubeconfig(binary, &all, kubeconfig),
            endpoints,
        )
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until `endpoints.admin` answers `/readyz` with 200; panics with
    /// the operator's logs after `timeout`, or at once if it exits.
    pub async fn wait_ready(&mut self, endpoints: &Endpoints, timeout: Duration) {
        let http = reqwest::Client::new();
        let url = format!("{}/readyz", endpoints.admin);
        let deadline = Instant::now() + timeout;
        loop {
            let ready = http.get(&url).send().await;
            if ready.is_ok_and(|r| r.status() == 200) {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "the operator exited ({status}) before it was ready:\n{}",
                    self.logs()
                );
            }
            assert!(
                Instant::now() < deadline,
                "the operator did not become ready:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops the process the hard way, as a crash or an OOM kill would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM, as the kubelet does, and waits for the exit status.
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        self.signal_term();
        self.wait_exit(timeout)
    }

    /// Sends SIGTERM and returns: the process stops in its own time.
    pub fn signal_term(&self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
    }

    /// The exit status, once the process exits within `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        self.kill();
        let _ = self.watchdog.kill();
        let _ = self.watchdog.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// The `client_id` and `client_secret` in a credential's Secret.
pub async fn credential_secret(client: &Client, namespace: &str, name: &str) -> (String, String) {
    use k8s_openapi::api::core::v1::Secret;
    let secret = Api::<Secret>::namespaced(client.clone(), namespace)
        .get(name)
        .await
        .expect("the credential's Secret");
    let data = secret.data.expect("Secret data");
    let text = |k: &str| String::from_utf8(data[k].0.clone()).expect("UTF-8");
    (text("client_id"), text("client_secret"))
}

/// `GET url` as JSON, panicking on any failure.
pub async fn get_json<T: serde::de::DeserializeOwned>(url: &str) -> T {
    reqwest::get(url)
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

/// `kubectl patch apicred NAME --type merge -p PATCH` in `namespace`; panics
/// with kubectl's message unless it succeeds.
pub fn patch_credential(namespace: &str, name: &str, patch: &str) {
    cluster().kubectl_ok(&[
        "-n", namespace, "patch", "apicred", name, "--type", "merge", "-p", patch,
    ]);
}

/// The secret hash key the operator keeps in its signing-key Secret
/// (`catalio-operator-signing-keys` in `namespace`, the operator's own).
pub async fn hash_key(client: &Client, namespace: &str) -> Vec<u8> {
    use k8s_openapi::api::core::v1::Secret;
    let secret = Api::<Secret>::namespaced(client.clone(), namespace)
        .get("catalio-operator-signing-keys")
        .await
        .expect("the signing-key Secret");
    secret.data.expect("Secret data")["secret-hash-key"]
        .0
        .clone()
}

/// An access token from the operator at `base` (JSON body, as Catalio
/// documents it), retried until the server knows the client or `timeout`
/// passes.
pub async fn access_token(base: &str, client_id: &str, secret: &str, timeout: Duration) -> String {
    let http = reqwest::Client::new();
    let url = format!("{base}/oauth/token");
    let body = serde_json::json!({
        "grant_type": "client_credentials", "client_id": client_id, "client_secret": secret,
    });
    eventually(timeout, "an access token", || async {
        let r = http.post(&url).json(&body).send().await.ok()?;
        if r.status() != 200 {
            return None;
        }
        let body: serde_json::Value = r.json().await.ok()?;
        body["access_token"].as_str().map(str::to_owned)
    })
    .await
}

/// The status of `GET base/api/v1/requirements` with `token`: whether the
/// JSON:API takes the token.
pub async fn list_status(base: &str, token: &str) -> u16 {
    reqwest::Client::new()
        .get(format!("{base}/api/v1/requirements"))
        .header("accept", "application/vnd.api+json")
        .bearer_auth(token)
        .send()
        .await
        .expect("GET /api/v1/requirements")
        .status()
        .as_u16()
}

/// A loopback port nothing listens on right now, for a process to bind.
///
/// The kernel's ephemeral port (`127.0.0.1:0`) would be free only until the
/// next outgoing connection: with tests running in parallel, one of their
/// connections can take it before the operator binds it. So the ports come
/// from below the ephemeral range, which connections never use, and never
/// the same one twice in a process; `cluster.sh` picks its ports the same way.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const LOWEST: u32 = 10_000;
    let ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768);
    let span = ephemeral.saturating_sub(LOWEST).max(1);
    // Test binaries run one after another, each from its own place.
    let start = std::process::id().wrapping_mul(7_919) % span;
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        assert!(n < span, "no free loopback port below {ephemeral}");
        let port = u16::try_from(LOWEST + (start + n) % span).expect("a port");
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// The Python with the OAuth/JOSE client libraries (`make pyclients`).
pub fn python() -> PathBuf {
    std::env::var_os("CATALIO_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").unwrap_or_default();
            Path::new(&home).join(".cache/catalio-operator/pyclients/bin/python")
        })
}

/// Resident memory of process `pid`, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS")
}

/// A rustls server configuration serving `leaf`.
pub fn tls_server_config(leaf: &pki::Leaf) -> std::sync::Arc<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_slice_iter(leaf.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("certificate PEM");
    let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).expect("key PEM");
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server certificate");
    std::sync::Arc::new(config)
}

/// Applies an `ApiCredential` named `name` (display name the same) with
/// `spec` (YAML lines under `spec:`, indented two spaces), waits until it is
/// Active and returns the client id and secret from its Secret.
pub async fn create_credential(
    client: &Client,
    namespace: &str,
    name: &str,
    spec: &str,
) -> (String, String) {
    let yaml = format!(
        "apiVersion: catalio.ai/v1\nkind: ApiCredential\nmetadata:\n  name: {name}\nspec:\n  displayName: {name}\n{spec}"
    );
    let out = cluster().kubectl_stdin(&["-n", namespace, "apply", "-f", "-"], Some(&yaml));
    assert!(
        out.status.success(),
        "applying {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    cluster().kubectl_ok(&[
        "-n",
        namespace,
        "wait",
        "--for=jsonpath={.status.phase}=Active",
        "--timeout=60s",
        &format!("apicredential/{name}"),
    ]);
    credential_secret(client, namespace, name).await
}

/// The Prometheus text an operator's admin port (`http://HOST:PORT`)
/// serves at `/metrics`.
pub async fn metrics(admin: &str) -> String {
    let r = reqwest::get(format!("{admin}/metrics"))
        .await
        .expect("/metrics answers");
    assert_eq!(r.status(), 200);
    r.text().await.expect("/metrics body")
}

/// The value of one sample line (`series` with its labels) in a Prometheus
/// text exposition; 0 when absent.
pub fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}
