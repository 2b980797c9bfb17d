//! The Helm chart: it lints and renders, installs on a real API server, and
//! the RBAC it grants is exactly enough for the operator, proved by running
//! the operator binary with a token of the chart's ServiceAccount.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use catalio_operator::crd::{ApiCredential, Phase};
use catalio_test_support::{
    OperatorProcess, REPO, TestNamespace, access_token, cluster, credential_secret, eventually,
    free_port,
};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::api::{ListParams, PostParams};
use kube::config::Kubeconfig;
use kube::{Api, Client};
use serde_json::{Value, json};

const OPERATOR: &str = env!("CARGO_BIN_EXE_catalio-operator");
const WAIT: Duration = Duration::from_secs(30);

fn chart() -> String {
    format!("{REPO}/charts/catalio-operator")
}

fn helm(args: &[&str]) -> Output {
    std::process::Command::new(cluster().bin.join("helm"))
        .args(args)
        .env("KUBECONFIG", &cluster().kubeconfig)
        .env(
            "HELM_CACHE_HOME",
            std::env::temp_dir().join("catalio-helm-cache"),
        )
        .env(
            "HELM_CONFIG_HOME",
            std::env::temp_dir().join("catalio-helm-config"),
        )
        .env(
            "HELM_DATA_HOME",
            std::env::temp_dir().join("catalio-helm-data"),
        )
        .output()
        .expect("run helm")
}

fn helm_ok(args: &[&str]) -> String {
    let out = helm(args);
    assert!(
        out.status.success(),
        "helm {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

const ALL_FEATURES: &[&str] = &[
    "--set",
    "serviceMonitor.enabled=true,networkPolicy.enabled=true,watchNamespaces={org-a,org-b}",
    "--set-json",
    r#"networkPolicy.adminFrom=[{"namespaceSelector":{}}]"#,
];

fn kinds(rendered: &str) -> Vec<String> {
    let mut kinds: Vec<String> = rendered
        .lines()
        .filter_map(|l| l.strip_prefix("kind: ").map(String::from))
        .collect();
    kinds.sort();
    kinds
}

#[test]
fn chart_lints_and_renders_with_defaults_and_every_feature() {
    let chart = chart();
    for extra in [&[][..], ALL_FEATURES] {
        let mut args = vec!["lint", "--strict", chart.as_str()];
        args.extend_from_slice(extra);
        let out = helm_ok(&args);
        assert!(out.contains("0 chart(s) failed"), "{out}");
    }
    let template = |extra: &[&str]| {
        let mut args = vec![
            "template",
            "rel",
            chart.as_str(),
            "-n",
            "ops",
            "--kube-version",
            "1.37.0",
        ];
        args.extend_from_slice(extra);
        helm_ok(&args)
    };
    assert_eq!(
        kinds(&template(&[])),
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "Deployment",
            "PodDisruptionBudget",
            "Role",
            "RoleBinding",
            "Service",
            "ServiceAccount"
        ]
    );
    let all = template(ALL_FEATURES);
    assert_eq!(
        kinds(&all),
        [
            "Deployment",
            "NetworkPolicy",
            "PodDisruptionBudget",
            "Role",
            "Role",
            "Role",
            "RoleBinding",
            "RoleBinding",
            "RoleBinding",
            "Service",
            "ServiceAccount",
            "ServiceMonitor"
        ]
    );
    assert!(all.contains("namespace: org-a") && all.contains("namespace: org-b"));
    // The token URL and audience reach the operator.
    let default = template(&[]);
    assert!(default.contains("http://rel-catalio-operator.ops.svc:8080/oauth/token"));
    assert!(default.contains("https://catalio.ai/api/v1"));
    // Hardened pod.
    for needle in [
        "runAsNonRoot: true",
        "readOnlyRootFilesystem: true",
        "allowPrivilegeEscalation: false",
        "- ALL",
        "type: RuntimeDefault",
        "path: /readyz",
        "path: /healthz",
    ] {
        assert!(default.contains(needle), "missing {needle}");
    }

    // values.schema.json rejects what would otherwise render silently wrong.
    for (set, message) in [
        ("replicaCount=0", "minimum"),
        ("signingAlgorithm=HS256", "signingAlgorithm"),
        ("watchNamespaces={Not_Valid}", "watchNamespaces"),
        ("tokenLifetime=1day", "tokenLifetime"),
        ("typo=1", "additional properties 'typo' not allowed"),
    ] {
        let out = helm(&[
            "template",
            "rel",
            &chart,
            "--kube-version",
            "1.37.0",
            "--set",
            set,
        ]);
        assert!(!out.status.success(), "{set} was accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(message), "{set}: {stderr}");
    }
}

#[test]
fn chart_crds_are_the_top_level_crds() {
    let top = std::fs::read(Path::new(REPO).join("crds/catalio-crds.yaml")).unwrap();
    let chart =
        std::fs::read(Path::new(REPO).join("charts/catalio-operator/crds/catalio-crds.yaml"))
            .unwrap();
    assert!(
        top == chart,
        "charts/catalio-operator/crds drifted: run `make crds`"
    );
}

/// A client and a kubeconfig file that authenticate as the ServiceAccount.
async fn as_service_account(
    admin: &Client,
    namespace: &str,
    name: &str,
    dir: &Path,
) -> (Client, std::path::PathBuf) {
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: Some(vec!["https://kubernetes.default.svc.cluster.local".into()]),
            expiration_seconds: Some(3600),
            ..Default::default()
        }),
        ..Default::default()
    };
    let issued: TokenRequest = Api::<ServiceAccount>::namespaced(admin.clone(), namespace)
        .create_subresource("token", name, &PostParams::default(), &request)
        .await
        .unwrap();
    let token = issued.status.and_then(|s| s.token).unwrap();
    let admin_config = Kubeconfig::read_from(&cluster().kubeconfig).unwrap();
    let cluster_entry = admin_config.clusters[0].cluster.clone().unwrap();
    let kubeconfig = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {
            "server": cluster_entry.server,
            "certificate-authority": cluster_entry.certificate_authority,
        }}],
        "users": [{"name": "sa", "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "c", "user": "sa"}}],
        "current-context": "sa",
    });
    let path = dir.join(format!("{namespace}-{name}.kubeconfig"));
    std::fs::write(&path, serde_json::to_vec(&kubeconfig).unwrap()).unwrap();
    let config = kube::Config::from_custom_kubeconfig(
        Kubeconfig::read_from(&path).unwrap(),
        &Default::default(),
    )
    .await
    .unwrap();
    (Client::try_from(config).unwrap(), path)
}

/// Runs the operator with the ServiceAccount's kubeconfig and takes one
/// credential in `org` through create, token and revocation.
async fn lifecycle_as(kubeconfig: &Path, release_ns: &str, release: &str, org: &str, watch: &str) {
    let admin = cluster().client().await;
    let keys = format!("{release}-catalio-operator-signing-keys");
    let lease = format!("{release}-catalio-operator-leader");
    let mut args = vec![
        "--namespace",
        release_ns,
        "--signing-key-secret",
        &keys,
        "--leader-lease",
        &lease,
    ];
    if !watch.is_empty() {
        args.extend(["--watch-namespaces", watch]);
    }
    let (mut operator, endpoints) = OperatorProcess::run_serving(OPERATOR, kubeconfig, &args);
    operator.wait_ready(&endpoints, WAIT).await;
    let http = reqwest::Client::new();

    let creds = Api::<ApiCredential>::namespaced(admin.clone(), org);
    let yaml = "apiVersion: catalio.ai/v1\nkind: ApiCredential\nmetadata: {name: ci}\nspec: {displayName: CI, scopes: [\"*:write\"]}\n";
    let out = cluster().kubectl_stdin(&["-n", org, "apply", "-f", "-"], Some(yaml));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eventually(WAIT, "credential Active under the chart's RBAC", || async {
        (creds.get("ci").await.ok()?.status?.phase == Some(Phase::Active)).then_some(())
    })
    .await;
    let (id, secret) = credential_secret(&admin, org, "ci").await;
    let token = access_token(&endpoints.base, &id, &secret, WAIT).await;
    // The JSON:API writes and reads business objects under the same RBAC.
    let created = http
        .post(format!("{}/api/v1/requirements", endpoints.base))
        .bearer_auth(&token)
        .header("content-type", "application/vnd.api+json")
        .body(r#"{"data":{"type":"requirement","attributes":{"title":"Under RBAC"}}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201, "{}", created.text().await.unwrap());
    let id = created.json::<serde_json::Value>().await.unwrap()["data"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let archived = http
        .delete(format!("{}/api/v1/requirements/{id}", endpoints.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(archived.status(), 204);
    let title = cluster().kubectl_ok(&[
        "-n",
        org,
        "get",
        "requirement",
        &id,
        "-o",
        "jsonpath={.spec.title}/{.spec.archived}",
    ]);
    assert_eq!(title, "Under RBAC/true");
    let out = cluster().kubectl(&[
        "-n",
        org,
        "patch",
        "apicred",
        "ci",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"revoked":true}}"#,
    ]);
    assert!(out.status.success());
    eventually(WAIT, "revocation under the chart's RBAC", || async {
        let revoked = creds.get("ci").await.ok()?.status?.phase == Some(Phase::Revoked);
        let gone = Api::<Secret>::namespaced(admin.clone(), org)
            .get_opt("ci")
            .await
            .ok()?
            .is_none();
        (revoked && gone).then_some(())
    })
    .await;
    // The API server words every refusal "... is forbidden: User ... cannot
    // ...", with reason Forbidden and code 403 (a bare "403" would also match
    // timestamps and ids).
    let logs = operator.logs();
    assert!(
        !logs.to_lowercase().contains("forbidden") && !logs.contains("code: 403"),
        "the operator was refused something:\n{logs}"
    );
}

#[tokio::test]
async fn helm_install_grants_exactly_what_the_operator_needs() {
    let admin = cluster().client().await;
    let dir = std::env::temp_dir();

    // Cluster-wide (default values).
    let ops = TestNamespace::new(&admin, "ops").await;
    let org = TestNamespace::new(&admin, "org").await;
    let release = format!("r{}", &ops.name[ops.name.len() - 5..]);
    helm_ok(&["install", &release, &chart(), "-n", &ops.name]);
    let full = format!("{release}-catalio-operator");
    for (kind, namespaced) in [
        ("deployment", true),
        ("service", true),
        ("serviceaccount", true),
        ("poddisruptionbudget", true),
        ("role", true),
        ("rolebinding", true),
        ("clusterrole", false),
        ("clusterrolebinding", false),
    ] {
        let name = if kind.starts_with("role") {
            format!("{full}-self")
        } else {
            full.clone()
        };
        let mut args = vec!["get", kind, name.as_str(), "-o", "name"];
        if namespaced {
            args.extend(["-n", ops.name.as_str()]);
        }
        cluster().kubectl_ok(&args);
    }
    let (_, kubeconfig) = as_service_account(&admin, &ops.name, &full, &dir).await;
    lifecycle_as(&kubeconfig, &ops.name, &release, &org.name, "").await;
    helm_ok(&["uninstall", &release, "-n", &ops.name]);

    // Restricted to listed namespaces: works inside, 403 outside.
    let ops2 = TestNamespace::new(&admin, "ops").await;
    let inside = TestNamespace::new(&admin, "inside").await;
    let outside = TestNamespace::new(&admin, "outside").await;
    let release2 = format!("r{}", &ops2.name[ops2.name.len() - 5..]);
    let set = format!("watchNamespaces={{{}}}", inside.name);
    helm_ok(&[
        "install",
        &release2,
        &chart(),
        "-n",
        &ops2.name,
        "--set",
        &set,
    ]);
    let full2 = format!("{release2}-catalio-operator");
    let out = cluster().kubectl(&["get", "clusterrole", &full2]);
    assert!(!out.status.success(), "no ClusterRole with watchNamespaces");
    let (restricted, kubeconfig) = as_service_account(&admin, &ops2.name, &full2, &dir).await;
    let denied = Api::<ApiCredential>::namespaced(restricted.clone(), &outside.name)
        .list(&ListParams::default())
        .await
        .expect_err("outside its namespaces");
    assert!(
        matches!(denied, kube::Error::Api(ref s) if s.code == 403),
        "{denied:?}"
    );
    let denied = Api::<Secret>::namespaced(restricted.clone(), &outside.name)
        .list(&ListParams::default())
        .await
        .expect_err("no Secrets outside");
    assert!(matches!(denied, kube::Error::Api(ref s) if s.code == 403));
    let cluster_wide = Api::<ApiCredential>::all(restricted.clone())
        .list(&ListParams::default())
        .await
        .expect_err("no cluster-wide list");
    assert!(matches!(cluster_wide, kube::Error::Api(ref s) if s.code == 403));
    lifecycle_as(
        &kubeconfig,
        &ops2.name,
        &release2,
        &inside.name,
        &inside.name,
    )
    .await;

    let status: Value = serde_json::from_str(&helm_ok(&[
        "status", &release2, "-n", &ops2.name, "-o", "json",
    ]))
    .unwrap();
    assert_eq!(status["info"]["status"], "deployed");
    helm_ok(&["uninstall", &release2, "-n", &ops2.name]);
}

#[tokio::test]
async fn readyz_stays_unready_until_the_caches_can_sync() {
    let admin = cluster().client().await;
    let ns = TestNamespace::new(&admin, "unready").await;
    // A ServiceAccount with no permissions at all: nothing can be listed, so
    // no cache ever syncs.
    let sa = ServiceAccount {
        metadata: kube::api::ObjectMeta {
            name: Some("nobody".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<ServiceAccount>::namespaced(admin.clone(), &ns.name)
        .create(&PostParams::default(), &sa)
        .await
        .unwrap();
    let (_, kubeconfig) =
        as_service_account(&admin, &ns.name, "nobody", &std::env::temp_dir()).await;
    let (port, admin_port) = (free_port(), free_port());
    let args = [
        "server".to_owned(),
        "--listen".into(),
        format!("127.0.0.1:{port}"),
        "--admin-listen".into(),
        format!("127.0.0.1:{admin_port}"),
        "--namespace".into(),
        ns.name.clone(),
        "--watch-namespaces".into(),
        ns.name.clone(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let _operator = OperatorProcess::start_with_kubeconfig(OPERATOR, &args, &kubeconfig);
    let http = reqwest::Client::new();
    let healthz = format!("http://127.0.0.1:{admin_port}/healthz");
    eventually(WAIT, "the admin port to answer", || async {
        (http.get(&healthz).send().await.ok()?.status() == 200).then_some(())
    })
    .await;
    for _ in 0..20 {
        let r = http
            .get(format!("http://127.0.0.1:{admin_port}/readyz"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 503);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
