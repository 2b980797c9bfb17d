//! Workload identity federation against a real outside issuer: a second
//! kube-apiserver (its own etcd, ServiceAccount issuer and signing key, its
//! discovery document served over HTTPS) plays another cluster whose
//! workloads get tokens here with their ServiceAccount tokens. Its other
//! accounts and other audiences do not; its key rotation is followed; and
//! while it is down, tokens whose keys are cached still work.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use catalio_test_support::{
    OperatorProcess, REPO, TestNamespace, cluster, eventually, list_status,
};
use serde_json::{Value, json};

const OPERATOR: &str = env!("CARGO_BIN_EXE_catalio-operator");
const WAIT: Duration = Duration::from_secs(30);
const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// The audience the remote workloads ask their tokens for.
const AUDIENCE: &str = "https://catalio.ai";

/// The other cluster: a control plane that is its own ServiceAccount
/// issuer, stopped when this test binary exits.
struct Remote {
    dir: PathBuf,
    kubeconfig: PathBuf,
    /// Its `iss`: the API server's own URL.
    issuer: String,
}

impl Remote {
    fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("catalio-cp.remote-{}", std::process::id()));
        let out = Command::new(format!("{REPO}/tests/controlplane/cluster.sh"))
            .arg("up")
            .arg(&dir)
            .args(["--owner-pid", &std::process::id().to_string()])
            .env("CLUSTER_ISSUER", "self")
            .stderr(Stdio::inherit())
            .output()
            .expect("cluster.sh");
        assert!(
            out.status.success(),
            "the remote control plane did not start"
        );
        let kubeconfig = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
        let text = std::fs::read_to_string(&kubeconfig).unwrap();
        let issuer = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("server: "))
            .unwrap()
            .to_owned();
        let remote = Self {
            dir,
            kubeconfig,
            issuer,
        };
        // Its discovery document and keys are public, as a cloud provider's
        // or GitHub's are.
        remote.kubectl(&[
            "create",
            "clusterrolebinding",
            "discovery-public",
            "--clusterrole=system:service-account-issuer-discovery",
            "--group=system:unauthenticated",
        ]);
        for account in ["deployer", "other"] {
            remote.kubectl(&["create", "serviceaccount", account]);
        }
        remote
    }

    fn kubectl(&self, args: &[&str]) -> String {
        let out = Command::new(cluster().bin.join("kubectl"))
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// A ServiceAccount token of the remote cluster.
    fn token(&self, account: &str, audience: &str) -> String {
        self.kubectl(&[
            "create",
            "token",
            account,
            "--audience",
            audience,
            "--duration",
            "10m",
        ])
        .trim()
        .to_owned()
    }

    fn ca(&self) -> String {
        std::fs::read_to_string(self.dir.join("pki/ca.crt")).unwrap()
    }

    fn pid(&self) -> String {
        std::fs::read_to_string(self.dir.join("apiserver.pid"))
            .unwrap()
            .trim()
            .to_owned()
    }

    fn rotate_key(&self) {
        let out = Command::new(format!("{REPO}/tests/controlplane/cluster.sh"))
            .arg("rotate-sa-key")
            .arg(&self.dir)
            .stderr(Stdio::inherit())
            .output()
            .unwrap();
        assert!(out.status.success(), "rotating the remote's key failed");
    }
}

fn kid(jwt: &str) -> String {
    let header: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(jwt.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    header["kid"].as_str().unwrap().to_owned()
}

fn claims(jwt: &str) -> Value {
    serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(jwt.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap()
}

#[tokio::test]
async fn another_clusters_workloads_get_tokens_through_its_issuer() {
    let remote = Remote::start();
    let client = cluster().client().await;
    let ns = TestNamespace::new(&client, "federation").await;
    let issuers = std::env::temp_dir().join(format!("{}-issuers.json", ns.name));
    let declared = json!({"issuers": [{
        "name": "remote", "issuer": remote.issuer, "audiences": [AUDIENCE], "caBundle": remote.ca(),
    }]});
    std::fs::write(&issuers, declared.to_string()).unwrap();
    let args = [
        "--namespace",
        &ns.name,
        "--watch-namespaces",
        &ns.name,
        "--trusted-issuers",
        issuers.to_str().unwrap(),
    ];
    let (mut operator, endpoints) =
        OperatorProcess::run_serving(OPERATOR, &cluster().kubeconfig, &args);
    operator.wait_ready(&endpoints, WAIT).await;
    let yaml = "apiVersion: catalio.ai/v1\nkind: ApiCredential\nmetadata: {name: pipeline}\n\
                spec:\n  displayName: Remote pipeline\n  clientSecret: Disabled\n  \
                scopes: [\"requirement:read\"]\n  federation:\n  - issuer: remote\n    \
                subject: \"system:serviceaccount:default:deployer\"\n";
    let out = cluster().kubectl_stdin(&["-n", &ns.name, "apply", "-f", "-"], Some(yaml));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    cluster().kubectl_ok(&[
        "-n",
        &ns.name,
        "wait",
        "--for=jsonpath={.status.phase}=Active",
        "--timeout=60s",
        "apicredential/pipeline",
    ]);
    // A connection per request: the waits below outlast the server's
    // keep-alive, and a POST is not retried on a connection it closed.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let exchange = |assertion: String| {
        let (http, url) = (http.clone(), format!("{}/oauth/token", endpoints.base));
        async move {
            let r = http
                .post(url)
                .form(&[
                    ("grant_type", "client_credentials"),
                    ("client_assertion_type", ASSERTION_TYPE),
                    ("client_assertion", assertion.as_str()),
                ])
                .send()
                .await
                .unwrap();
            (
                r.status().as_u16(),
                r.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };

    // The named account, for our audience: a token here, for no longer
    // than its own.
    let deployer = remote.token("deployer", AUDIENCE);
    let body = eventually(WAIT, "the remote token to be taken", || async {
        let (status, body) = exchange(deployer.clone()).await;
        (status == 200).then_some(body)
    })
    .await;
    let access = body["access_token"].as_str().unwrap().to_owned();
    let c = claims(&access);
    assert!(c["sid"].as_str().unwrap().starts_with("fed:"), "{c}");
    assert!(c["exp"].as_i64().unwrap() <= claims(&deployer)["exp"].as_i64().unwrap());
    assert_eq!(c["org"], ns.name.as_str());
    assert_eq!(list_status(&endpoints.base, &access).await, 200);

    // Its other accounts, other audiences, and a token our own cluster
    // signed with the remote's subject: refused.
    let refused = |answer: (u16, Value)| answer.0 == 401 && answer.1["error"] == "invalid_client";
    assert!(
        refused(exchange(remote.token("other", AUDIENCE)).await),
        "another account"
    );
    assert!(
        refused(exchange(remote.token("deployer", "https://elsewhere.example")).await),
        "another audience"
    );

    // The remote rotates its signing key: its new tokens are taken once
    // our cache has fetched the new key (at most every 30s for an unknown
    // key id).
    let before = kid(&deployer);
    remote.rotate_key();
    let rotated = remote.token("deployer", AUDIENCE);
    assert_ne!(kid(&rotated), before, "the remote signs with a new key");
    eventually(
        Duration::from_secs(90),
        "the rotated key to be fetched",
        || async { (exchange(rotated.clone()).await.0 == 200).then_some(()) },
    )
    .await;

    // The remote goes down (its API server frozen): tokens signed with
    // keys we hold still get tokens here.
    let pid = remote.pid();
    let frozen = remote.token("deployer", AUDIENCE);
    Command::new("kill").args(["-STOP", &pid]).status().unwrap();
    let (status, body) = exchange(frozen).await;
    Command::new("kill").args(["-CONT", &pid]).status().unwrap();
    assert_eq!(status, 200, "{body}");

    // Taking the identity off the credential ends what it got.
    cluster().kubectl_ok(&[
        "-n",
        &ns.name,
        "patch",
        "apicredential",
        "pipeline",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"federation":[{"issuer":"remote","subject":"system:serviceaccount:default:other"}]}}"#,
    ]);
    eventually(WAIT, "the access token to stop", || async {
        (list_status(&endpoints.base, &access).await == 401).then_some(())
    })
    .await;
    let _ = std::fs::remove_file(&issuers);
    drop(remote);
}

impl Drop for Remote {
    fn drop(&mut self) {
        let _ = Command::new(format!("{REPO}/tests/controlplane/cluster.sh"))
            .arg("down")
            .arg(&self.dir)
            .output();
    }
}
