//! The operator as users run it: in pods on a real node. tests/node/node.sh
//! starts a one-node cluster (kubelet, containerd, runc, CNI, kube-proxy,
//! CoreDNS) in its own network and mount namespace; the image is built with
//! the Dockerfile's steps (image/build.sh) and imported, never pulled; the
//! chart is installed with its defaults, and every client call comes from a
//! pod through the Service's DNS name.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use catalio_test_support::{Cluster, REPO};

const RELEASE: &str = "catalio";
const NAMESPACE: &str = "catalio-system";
const ORG: &str = "acme";
const CREDENTIAL: &str = "ci-pipeline";
/// Generous: these machines are busy, and nothing here is a speed target.
const WAIT: Duration = Duration::from_secs(300);

/// A node of this test binary; `down` when dropped (and by the watchdog
/// node.sh leaves, should this process die first).
struct Node {
    dir: PathBuf,
    cluster: Cluster,
}

impl Node {
    fn up() -> Self {
        // Short: containerd's socket paths must stay under 108 bytes.
        let dir = std::env::temp_dir().join(format!("catalio-node.{}", std::process::id()));
        let out = Command::new(format!("{REPO}/tests/node/node.sh"))
            .arg("up")
            .arg(&dir)
            .args(["--owner-pid", &std::process::id().to_string()])
            .stderr(Stdio::inherit())
            .output()
            .expect("run node.sh");
        assert!(out.status.success(), "the node did not start");
        let kubeconfig = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
        let bin = std::fs::read_to_string(dir.join("bin")).expect("node.sh records its binaries");
        let bin = PathBuf::from(bin.lines().next().expect("the control plane's binaries"));
        Node {
            dir,
            cluster: Cluster { kubeconfig, bin },
        }
    }

    fn kubectl(&self, args: &[&str]) -> String {
        self.cluster.kubectl_ok(args)
    }

    fn apply(&self, namespace: &str, manifest: &str) {
        let out = self
            .cluster
            .kubectl_stdin(&["-n", namespace, "apply", "-f", "-"], Some(manifest));
        assert!(out.status.success(), "apply: {}", stderr(&out));
    }

    fn helm(&self, args: &[&str]) -> String {
        self.cluster.helm_ok(args)
    }

    fn import(&self, tarball: &Path) {
        let out = Command::new(format!("{REPO}/tests/node/node.sh"))
            .arg("import")
            .arg(&self.dir)
            .arg(tarball)
            .output()
            .expect("run node.sh import");
        assert!(out.status.success(), "import: {}", stderr(&out));
    }

    fn pods(&self, component: &str) -> Vec<String> {
        let selector =
            format!("app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component={component}");
        self.kubectl(&[
            "-n",
            NAMESPACE,
            "get",
            "pods",
            "-l",
            &selector,
            "-o",
            "jsonpath={range .items[*]}{.metadata.name}{\"\\n\"}{end}",
        ])
        .lines()
        .map(str::to_owned)
        .collect()
    }

    /// Whether every replica of the release's Deployments is updated and
    /// ready, and no pod of an older template is left.
    fn rolled_out(&self) -> bool {
        let state = self.kubectl(&[
            "-n",
            NAMESPACE,
            "get",
            "deployments",
            "-l",
            &format!("app.kubernetes.io/instance={RELEASE}"),
            "-o",
            "jsonpath={range .items[*]}{.spec.replicas} {.status.updatedReplicas} {.status.readyReplicas} {.status.replicas} {.metadata.generation} {.status.observedGeneration}{\"\\n\"}{end}",
        ]);
        let lines: Vec<_> = state.lines().collect();
        lines.len() == 2
            && lines.iter().all(|l| {
                let f: Vec<_> = l.split(' ').collect();
                f.len() == 6 && f[0] == f[1] && f[0] == f[2] && f[0] == f[3] && f[4] == f[5]
            })
    }

    /// `jsonpath` of the organization's credential.
    fn credential(&self, jsonpath: &str) -> String {
        self.kubectl(&[
            "-n",
            ORG,
            "get",
            "apicredential",
            CREDENTIAL,
            "-o",
            &format!("jsonpath={jsonpath}"),
        ])
    }

    fn leader(&self) -> String {
        self.kubectl(&[
            "-n",
            NAMESPACE,
            "get",
            "lease",
            &format!("{RELEASE}-catalio-operator-leader"),
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ])
    }

    /// What each server replica says about itself (its restarts and last
    /// log lines) and what the API server holds in the organization: for
    /// failures where a replica answers without an object it should hold.
    fn server_report(&self) -> String {
        let mut report = self.kubectl(&["-n", ORG, "get", "requirements", "-o", "wide"]);
        for pod in self.pods("server") {
            let restarts = self.kubectl(&[
                "-n",
                NAMESPACE,
                "get",
                "pod",
                &pod,
                "-o",
                "jsonpath={.status.containerStatuses[0].restartCount}",
            ]);
            let logs = self.kubectl(&["-n", NAMESPACE, "logs", "--tail=40", &pod]);
            report.push_str(&format!("\n--- {pod} (restarts: {restarts})\n{logs}"));
        }
        report
    }

    /// Runs a busybox Job in the organization's namespace with the
    /// credential's Secret as its environment; returns its logs.
    fn job(&self, name: &str, script: &str) -> String {
        self.apply(ORG, &client_job(name, script));
        let done = wait_for(&format!("job {name} to finish"), || {
            let status = self.kubectl(&[
                "-n",
                ORG,
                "get",
                "job",
                name,
                "-o",
                "jsonpath={.status.succeeded}/{.status.failed}",
            ]);
            match status.as_str() {
                "1/" => Ok(true),
                "/1" => Ok(false),
                _ => Err(status),
            }
        });
        let logs = self.kubectl(&["-n", ORG, "logs", &format!("job/{name}")]);
        assert!(done, "job {name} failed:\n{logs}");
        logs
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let status = Command::new(format!("{REPO}/tests/node/node.sh"))
            .arg("down")
            .arg(&self.dir)
            .status();
        if status.is_ok_and(|s| s.success()) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Polls `check` until it returns Ok, for at most WAIT; on timeout, the
/// panic shows what the last check saw.
fn wait_for<T>(what: &str, mut check: impl FnMut() -> Result<T, String>) -> T {
    let start = Instant::now();
    loop {
        match check() {
            Ok(value) => return value,
            Err(seen) if start.elapsed() > WAIT => panic!("timed out waiting for {what}: {seen}"),
            Err(_) => std::thread::sleep(Duration::from_millis(250)),
        }
    }
}

/// Ok when `done`, else what was seen.
fn seen(done: bool, what: impl std::fmt::Debug) -> Result<(), String> {
    if done {
        Ok(())
    } else {
        Err(format!("{what:?}"))
    }
}

/// A shell fragment that gets a token with the Secret's values (from the
/// environment) into $token, failing loudly otherwise.
const GET_TOKEN: &str = r#"
token_request() {
  timeout 10 wget -q -O- --header 'Content-Type: application/x-www-form-urlencoded' \
    --post-data "grant_type=client_credentials&client_id=$client_id&client_secret=$client_secret" \
    "$token_url"
}
body=$(token_request) || { echo "token request failed"; exit 1; }
token=$(echo "$body" | sed -n 's/.*"access_token":"\([^"]*\)".*/\1/p')
[ -n "$token" ] || { echo "no token in the answer"; exit 1; }
api=${token_url%/oauth/token}/api/v1
list() {
  timeout 10 wget -q -O- --header 'Accept: application/vnd.api+json' \
    --header "Authorization: Bearer $token" "$api/requirements"
}
"#;

fn client_job(name: &str, script: &str) -> String {
    let script = format!("set -e\n{GET_TOKEN}\n{script}");
    let script = serde_json::to_string(&script).unwrap();
    format!(
        r#"apiVersion: batch/v1
kind: Job
metadata: {{name: {name}}}
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      securityContext: {{runAsUser: 65532, runAsNonRoot: true, seccompProfile: {{type: RuntimeDefault}}}}
      containers:
      - name: client
        image: catalio.test/busybox:1
        imagePullPolicy: Never
        envFrom: [{{secretRef: {{name: {CREDENTIAL}}}}}]
        command: ["/bin/busybox", "sh", "-c", {script}]
        securityContext: {{readOnlyRootFilesystem: true, allowPrivilegeEscalation: false}}
"#
    )
}

#[test]
fn a_helm_release_serves_pods_through_failover_upgrade_and_uninstall() {
    let node = Node::up();

    // The image, built as the Dockerfile describes, imported into the node.
    let image = node.dir.join("operator.tar");
    let status = Command::new(format!("{REPO}/image/build.sh"))
        .arg(&image)
        .status()
        .expect("run image/build.sh");
    assert!(status.success(), "building the image failed");
    node.import(&image);

    // helm install with the chart's defaults: both Deployments' replicas
    // become Ready through their own probes.
    node.helm(&[
        "install",
        RELEASE,
        &format!("{REPO}/charts/catalio-operator"),
        "--namespace",
        NAMESPACE,
        "--create-namespace",
    ]);
    wait_for("both replicas of both Deployments to be Ready", || {
        seen(node.rolled_out(), node.pods("server"))
    });

    // A credential, applied as a user would; a pod gets a token from the
    // Service's DNS name with the Secret's values and calls the JSON:API.
    node.kubectl(&["create", "namespace", ORG]);
    node.kubectl(&[
        "-n",
        ORG,
        "apply",
        "-f",
        &format!("{REPO}/examples/apicredential.yaml"),
        "-f",
        &format!("{REPO}/examples/requirements.yaml"),
    ]);
    node.kubectl(&[
        "-n",
        ORG,
        "wait",
        "--for=jsonpath={.status.phase}=Active",
        &format!("apicredential/{CREDENTIAL}"),
        "--timeout=300s",
    ]);
    let token_url = node.kubectl(&[
        "-n",
        ORG,
        "get",
        "secret",
        CREDENTIAL,
        "-o",
        "jsonpath={.data.token_url}",
    ]);
    let token_url = String::from_utf8(
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, token_url).unwrap(),
    )
    .unwrap();
    assert_eq!(
        token_url,
        format!("http://{RELEASE}-catalio-operator.{NAMESPACE}.svc:8080/oauth/token")
    );
    let listed = node.job("first-call", "list");
    assert!(
        listed.contains(r#""id":"export-csv""#) && listed.contains(r#""type":"requirement""#),
        "the JSON:API did not list the organization's requirement:\n{listed}\n{}",
        node.server_report()
    );

    // Failover: the leader's pod is deleted; it gives the Lease up as it
    // stops, another controller takes it (the standby, or the replacement
    // pod when that starts first: both race for a released Lease), and the
    // new leader carries out a rotation.
    let controllers = node.pods("controller");
    assert_eq!(controllers.len(), 2, "{controllers:?}");
    let leader = wait_for("a leader", || {
        let l = node.leader();
        if controllers.contains(&l) {
            Ok(l)
        } else {
            Err(l)
        }
    });
    let deleted = Instant::now();
    node.kubectl(&["-n", NAMESPACE, "delete", "pod", &leader, "--wait=false"]);
    let successor = wait_for("another controller to take the Lease", || {
        let l = node.leader();
        if l != leader && node.pods("controller").contains(&l) {
            Ok(l)
        } else {
            Err(l)
        }
    });
    let takeover = deleted.elapsed();
    let which = if controllers.contains(&successor) {
        "the standby"
    } else {
        "the replacement pod"
    };
    eprintln!(
        "failover: {which} {successor} took the Lease {takeover:.1?} after {leader} was deleted"
    );
    // The chart's leaseDuration (15s), plus the successor's retry period and
    // the old leader's graceful release; far less when the release happens.
    assert!(
        takeover < Duration::from_secs(30),
        "takeover took {takeover:?}, longer than the lease allows"
    );
    let old_hash = node.credential("{.status.secretHash}");
    node.kubectl(&[
        "-n",
        ORG,
        "patch",
        "apicredential",
        CREDENTIAL,
        "--type=merge",
        "-p",
        r#"{"spec":{"rotation":{"counter":1}}}"#,
    ]);
    wait_for("the new leader to rotate the secret", || {
        let hash = node.credential("{.status.secretHash} {.status.phase}");
        seen(
            !hash.starts_with(&old_hash) && hash.ends_with(" Active"),
            hash,
        )
    });
    let rotated = node.job("after-failover", "list");
    assert!(
        rotated.contains(r#""id":"export-csv""#),
        "{rotated}\n{}",
        node.server_report()
    );

    // helm upgrade with a changed value rolls both Deployments while a
    // client pod polls the token endpoint and the JSON:API from three loops
    // (about 45 requests/s, under the chart's rate limits): no request
    // fails. Checked to fail with shutdownDelay=0s, which drops requests
    // that kube-proxy still sends to a stopping pod.
    let before: Vec<String> = [node.pods("server"), node.pods("controller")].concat();
    node.apply(
        ORG,
        &client_job(
            "poller",
            r#"
poll() {
  n=0
  while :; do
    n=$((n + 1))
    if [ $((n % 10)) -eq 0 ]; then
      err=$(token_request 2>&1 > /dev/null) || echo "FAIL $1 token request $n: $err"
    fi
    err=$(list 2>&1 > /dev/null) || echo "FAIL $1 list $n: $err"
    [ $((n % 20)) -eq 0 ] && echo "progress $1 $n"
    sleep 0.05
  done
}
poll a & poll b & poll c
"#,
        )
        .replace("set -e\n", ""),
    );
    let progress = |logs: &str| -> u64 {
        logs.lines()
            .filter(|l| l.starts_with("progress "))
            .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
            .max()
            .unwrap_or(0)
    };
    let poller_logs = || {
        let out = node.cluster.kubectl(&["-n", ORG, "logs", "job/poller"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    wait_for("the poller to be polling", || {
        let logs = poller_logs();
        seen(progress(&logs) >= 40, logs)
    });
    node.helm(&[
        "upgrade",
        RELEASE,
        &format!("{REPO}/charts/catalio-operator"),
        "--namespace",
        NAMESPACE,
        "--reuse-values",
        // In both Deployments' pod templates.
        "--set",
        "tokenLifetime=12h",
    ]);
    wait_for("the upgrade to roll out", || {
        let now: Vec<String> = [node.pods("server"), node.pods("controller")].concat();
        seen(
            node.rolled_out() && now.len() == 4 && now.iter().all(|p| !before.contains(p)),
            now,
        )
    });
    let at_rollout = progress(&poller_logs());
    wait_for("the poller to go on past the rollout", || {
        let logs = poller_logs();
        seen(progress(&logs) >= at_rollout + 40, logs)
    });
    let logs = poller_logs();
    node.kubectl(&["-n", ORG, "delete", "job", "poller", "--wait=false"]);
    let failures: Vec<_> = logs.lines().filter(|l| l.starts_with("FAIL")).collect();
    eprintln!(
        "upgrade: {} polls in each of three loops, {} failed",
        progress(&logs),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "requests failed during the rolling update:\n{}",
        failures.join("\n")
    );

    // helm uninstall leaves nothing of the release: no pod, no object in its
    // namespace but what Kubernetes puts in every namespace, no cluster-wide
    // RBAC. (CRDs stay, as Helm keeps every chart's CRDs.)
    node.helm(&["uninstall", RELEASE, "--namespace", NAMESPACE, "--wait"]);
    wait_for("the release to be gone", || {
        let namespaced = node.kubectl(&[
            "-n",
            NAMESPACE,
            "get",
            "pods,services,endpointslices,deployments,replicasets,serviceaccounts,secrets,configmaps,roles,rolebindings,leases,poddisruptionbudgets,networkpolicies",
            "-o",
            "name",
        ]);
        let cluster_wide = node.kubectl(&[
            "get",
            "clusterroles,clusterrolebindings",
            "-l",
            &format!("app.kubernetes.io/instance={RELEASE}"),
            "-o",
            "name",
        ]);
        let left: Vec<String> = namespaced
            .lines()
            .chain(cluster_wide.lines())
            .filter(|l| !["configmap/kube-root-ca.crt", "serviceaccount/default"].contains(l))
            .map(str::to_owned)
            .collect();
        seen(left.is_empty(), left)
    });
}

/// Without the capabilities a node needs, `up` says which and stops at
/// once: no hang, nothing created.
#[test]
fn a_missing_capability_is_a_clear_error() {
    let dir = std::env::temp_dir().join(format!("catalio-node.{}-nocap", std::process::id()));
    let out = Command::new("setpriv")
        .args([
            "--bounding-set",
            "-sys_admin",
            "--inh-caps",
            "-sys_admin",
            "--",
        ])
        .arg(format!("{REPO}/tests/node/node.sh"))
        .arg("up")
        .arg(&dir)
        .output()
        .expect("run node.sh under setpriv");
    assert!(
        !out.status.success(),
        "the node started without CAP_SYS_ADMIN"
    );
    let said = stderr(&out);
    assert!(
        said.contains("cannot create network and mount namespaces (needs CAP_SYS_ADMIN"),
        "{said}"
    );
    assert!(!dir.exists(), "up created {} before failing", dir.display());
}
