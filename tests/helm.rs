//! The Helm chart: it lints and renders, installs on a real API server, and
//! the RBAC it grants is exactly enough for the operator, proved by running
//! the operator binary with a token of the chart's ServiceAccount.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use catalio_operator::crd::{ApiCredential, Phase};
use catalio_test_support::{
    OperatorProcess, REPO, TestNamespace, access_token, cluster, credential_secret, eventually,
    free_port, patch_credential,
};
use k8s_openapi::api::authentication::v1::{
    TokenRequest, TokenRequestSpec, TokenReview, TokenReviewSpec,
};
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
    cluster().helm(args)
}

fn helm_ok(args: &[&str]) -> String {
    cluster().helm_ok(args)
}

const ALL_FEATURES: &[&str] = &[
    "--set",
    "serviceMonitor.enabled=true,networkPolicy.enabled=true,watchNamespaces={org-a,org-b}",
    "--set",
    "tls.enabled=true,tls.certManager.enabled=true,tls.certManager.issuerRef.name=ca",
    "--set-json",
    r#"networkPolicy.adminFrom=[{"namespaceSelector":{}}]"#,
    "--set-json",
    r#"federation.issuers=[{"name":"github","issuer":"https://token.actions.githubusercontent.com","audiences":["https://catalio.ai"]}]"#,
    "--set",
    "prometheusRule.enabled=true,dashboard.enabled=true",
    "--set",
    "ingress.enabled=true,ingress.className=nginx,ingress.tls.secretName=catalio-public-tls",
    "--set",
    "httpRoute.enabled=true,httpRoute.hostnames={catalio.example.com}",
    "--set-json",
    r#"httpRoute.parentRefs=[{"name":"edge","namespace":"gateways","sectionName":"https"}]"#,
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
    // A controller and the servers, each with its own ServiceAccount, RBAC,
    // disruption budget and a Service for its admin port (metrics); one
    // more Service for the servers' public port.
    let twice = |kinds: &[&str]| -> Vec<String> {
        let mut all: Vec<String> = kinds
            .iter()
            .flat_map(|k| [k.to_string(), k.to_string()])
            .collect();
        all.sort();
        all
    };
    // Plus three ClusterRoles aggregated into view, edit and admin.
    let aggregated = ["ClusterRole"; 3].map(String::from);
    let with_aggregated = |mut kinds: Vec<String>| {
        kinds.extend(aggregated.clone());
        kinds.sort();
        kinds
    };
    // Plus the servers' ClusterRole to review ServiceAccount tokens
    // (cluster-scoped, so there in every configuration).
    let token_review = ["ClusterRole", "ClusterRoleBinding"].map(String::from);
    let mut own = twice(&[
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
        "PodDisruptionBudget",
        "Role",
        "RoleBinding",
        "Service",
        "ServiceAccount",
    ]);
    own.extend(token_review.clone());
    own.push("Service".to_owned());
    own.sort();
    assert_eq!(kinds(&template(&[])), with_aggregated(own.clone()));
    assert_eq!(
        kinds(&template(&["--set", "rbac.aggregateToDefaultRoles=false"])),
        own
    );
    let all = template(ALL_FEATURES);
    let mut expected = twice(&[
        "Deployment",
        "NetworkPolicy",
        "PodDisruptionBudget",
        "Service",
        "ServiceAccount",
    ]);
    // Per component: a Role in each watched namespace and one of its own.
    expected.extend(
        ["Role", "RoleBinding"]
            .iter()
            .flat_map(|k| vec![k.to_string(); 6]),
    );
    expected.extend(
        [
            "Certificate",
            "ServiceMonitor",
            "Service",
            "ConfigMap",
            // The operations pack: alerts, the dashboard, exposure.
            "PrometheusRule",
            "ConfigMap",
            "Ingress",
            "HTTPRoute",
        ]
        .map(String::from),
    );
    expected.extend(token_review);
    assert_eq!(kinds(&all), with_aggregated(expected));
    assert!(all.contains("namespace: org-a") && all.contains("namespace: org-b"));
    // The token URL and audience reach the operator; with TLS the URL is
    // https, the servers mount the certificate and cert-manager issues it
    // for the Service's names.
    let default = template(&[]);
    assert!(default.contains("http://rel-catalio-operator.ops.svc:8080/oauth/token"));
    assert!(default.contains("https://catalio.ai/api/v1"));
    assert!(default.contains("args: [controller]") && default.contains("args: [server]"));
    // Rolling restart targets is granted only when asked for, and then
    // bounded by an admission policy.
    let workloads = "resources: [deployments, statefulsets, daemonsets]";
    assert!(!default.contains(workloads));
    let restarts = template(&["--set", "rbac.restartTargets=true"]);
    assert!(restarts.contains(workloads));
    let mut added = kinds(&restarts);
    for kind in kinds(&default) {
        let at = added.iter().position(|k| *k == kind).unwrap();
        added.remove(at);
    }
    assert_eq!(
        added,
        [
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding"
        ]
    );
    // The public Service carries the public port only: /metrics names
    // every organization. The ServiceMonitor scrapes the admin Services.
    let docs: Vec<Value> = serde_saphyr::from_multiple(&all).unwrap();
    let find = |kind: &str, name: &str| -> &Value {
        docs.iter()
            .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} {name}"))
    };
    let port_names = |service: &Value| -> Vec<String> {
        service["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let public = find("Service", "rel-catalio-operator");
    assert_eq!(port_names(public), ["http"]);
    let scraped = find("ServiceMonitor", "rel-catalio-operator")["spec"]["selector"]["matchLabels"]
        .as_object()
        .unwrap();
    let selects = |service: &Value| {
        scraped
            .iter()
            .all(|(k, v)| service["metadata"]["labels"][k] == *v)
    };
    assert!(
        !selects(public),
        "the ServiceMonitor selects the public Service"
    );
    for admin in [
        "rel-catalio-operator-admin",
        "rel-catalio-operator-controller",
    ] {
        let service = find("Service", admin);
        assert_eq!(port_names(service), ["admin"], "{admin}");
        assert!(selects(service), "the ServiceMonitor misses {admin}");
    }
    // The servers may write exactly the kinds the registry declares.
    let plurals: Vec<&str> = catalio_operator::crd::registry::TYPES
        .iter()
        .map(|t| t.plural)
        .collect();
    let rule = format!("resources: [{}]", plurals.join(", "));
    assert!(
        default.contains(&rule),
        "the chart's RBAC does not list {rule}"
    );
    assert!(!default.contains("CATALIO_TLS_CERT_FILE"));
    // Every setting the chart passes is one the binary reads.
    let help = std::process::Command::new(OPERATOR)
        .args(["run", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    let passed: Vec<&str> = all
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- name: CATALIO_"))
        .collect();
    assert!(passed.contains(&"MAX_CONNECTIONS"), "{passed:?}");
    // Large numbers reach the binary as integers, not as 1e+06.
    let big = template(&["--set", "api.maxObjectsPerKind=1000000"]);
    assert!(big.contains("value: \"1000000\""), "{big}");
    for name in passed {
        assert!(
            help.contains(&format!("env: CATALIO_{name}=")),
            "the chart sets CATALIO_{name}, which no flag reads"
        );
    }
    for needle in [
        "https://rel-catalio-operator.ops.svc:8080/oauth/token",
        "value: /etc/catalio/tls/tls.crt",
        "secretName: rel-catalio-operator-tls",
        "- rel-catalio-operator.ops.svc.cluster.local",
    ] {
        assert!(all.contains(needle), "missing {needle}");
    }
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

    // values.schema.json (and the templates) reject what would otherwise
    // render silently wrong.
    for (set, message) in [
        ("server.replicas=0", "minimum"),
        ("signingAlgorithm=HS256", "signingAlgorithm"),
        ("watchNamespaces={Not_Valid}", "watchNamespaces"),
        ("tokenLifetime=1day", "tokenLifetime"),
        ("api.maxConnections=0", "maxConnections"),
        ("api.maxBytesPerKind=32MB", "maxBytesPerKind"),
        ("api.bodyReadTimeout=forever", "bodyReadTimeout"),
        ("credentials.unusedAfter=90d", "unusedAfter"),
        ("httpRoute.enabled=true", "/httpRoute/parentRefs"),
        ("ingress.enabled=true,ingress.host=", "/ingress/host"),
        ("ingress.host=Not_A_Host", "/ingress/host"),
        (
            "prometheusRule.runbookUrl=README.md",
            "/prometheusRule/runbookUrl",
        ),
        ("dashboard.enabled=yes", "/dashboard/enabled"),
        (
            "topologySpreadConstraints[0].whenUnsatisfiable=Sometimes",
            "/topologySpreadConstraints/0/whenUnsatisfiable",
        ),
        ("typo=1", "additional properties 'typo' not allowed"),
        (
            "tls.enabled=true,tls.certManager.enabled=true",
            "issuerRef.name is required",
        ),
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

/// The binary takes every setting the chart passes, as the chart passes
/// it: with the defaults (empty lists are empty variables) and with the
/// lists set, each component gets past its flags and stops only at finding
/// the API server (KUBECONFIG names no file).
#[test]
fn the_binary_accepts_every_setting_the_chart_passes() {
    let lists = "watchNamespaces={org-a,org-b},introspection.serviceAccounts={gw/gateway}";
    for extra in [&[][..], &["--set", lists]] {
        let docs = template(extra);
        let deployments = docs.iter().filter(|d| d["kind"] == "Deployment");
        for deployment in deployments {
            let container = &deployment["spec"]["template"]["spec"]["containers"][0];
            let mut run = std::process::Command::new(OPERATOR);
            run.env_clear().env("KUBECONFIG", "/nonexistent/kubeconfig");
            for arg in container["args"].as_array().unwrap() {
                run.arg(arg.as_str().unwrap());
            }
            for env in container["env"].as_array().unwrap() {
                // Values from the pod (namespace, name, ServiceAccount).
                let value = env["value"].as_str().unwrap_or("from-the-pod");
                run.env(env["name"].as_str().unwrap(), value);
            }
            let out = run.output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                stderr.contains("finding the Kubernetes API server"),
                "{} with {extra:?}: {stderr}",
                deployment["metadata"]["name"]
            );
        }
    }
}

fn template(extra: &[&str]) -> Vec<Value> {
    let chart = chart();
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
    serde_saphyr::from_multiple(&helm_ok(&args)).expect("the chart renders YAML")
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

/// The operations pack renders what its readers expect: replicas spread
/// across nodes by default (and not when turned off), the dashboard as
/// Grafana's sidecar finds it, and only the public port exposed.
#[test]
fn the_operations_pack_renders_what_its_readers_expect() {
    let deployments = |docs: &[Value]| -> Vec<Value> {
        docs.iter()
            .filter(|d| d["kind"] == "Deployment")
            .cloned()
            .collect()
    };
    let default = template(&[]);
    assert_eq!(deployments(&default).len(), 2);
    for deployment in deployments(&default) {
        let pod = &deployment["spec"]["template"];
        let spread = &pod["spec"]["topologySpreadConstraints"];
        assert_eq!(spread.as_array().map(Vec::len), Some(1), "{spread}");
        assert_eq!(spread[0]["topologyKey"], "kubernetes.io/hostname");
        assert_eq!(spread[0]["whenUnsatisfiable"], "ScheduleAnyway");
        // It counts this component's pods, which carry these labels.
        let selector = spread[0]["labelSelector"]["matchLabels"]
            .as_object()
            .unwrap();
        assert_eq!(
            Some(selector),
            deployment["spec"]["selector"]["matchLabels"].as_object()
        );
        assert!(
            selector
                .iter()
                .all(|(k, v)| pod["metadata"]["labels"][k] == *v)
        );
    }
    let off = template(&["--set-json", "topologySpreadConstraints=[]"]);
    for deployment in deployments(&off) {
        assert!(deployment["spec"]["template"]["spec"]["topologySpreadConstraints"].is_null());
    }

    let all = template(ALL_FEATURES);
    let dashboard = find(&all, "ConfigMap", "rel-catalio-operator-dashboard");
    assert_eq!(dashboard["metadata"]["labels"]["grafana_dashboard"], "1");
    let file =
        std::fs::read_to_string(format!("{}/dashboards/catalio-operator.json", chart())).unwrap();
    let embedded: Value =
        serde_json::from_str(dashboard["data"]["catalio-operator.json"].as_str().unwrap()).unwrap();
    assert_eq!(embedded, serde_json::from_str::<Value>(&file).unwrap());

    let ingress = find(&all, "Ingress", "rel-catalio-operator");
    assert_eq!(ingress["spec"]["ingressClassName"], "nginx");
    assert_eq!(
        ingress["spec"]["tls"][0]["secretName"],
        "catalio-public-tls"
    );
    let paths = ingress["spec"]["rules"][0]["http"]["paths"]
        .as_array()
        .unwrap();
    let prefixes: Vec<&str> = paths.iter().map(|p| p["path"].as_str().unwrap()).collect();
    assert_eq!(prefixes, ["/oauth", "/.well-known", "/api"]);
    for path in paths {
        assert_eq!(path["backend"]["service"]["name"], "rel-catalio-operator");
        assert_eq!(path["backend"]["service"]["port"]["name"], "http");
    }
    let route = find(&all, "HTTPRoute", "rel-catalio-operator");
    assert_eq!(route["spec"]["parentRefs"][0]["name"], "edge");
    assert_eq!(route["spec"]["hostnames"], json!(["catalio.example.com"]));
    let backend = &route["spec"]["rules"][0]["backendRefs"][0];
    assert_eq!(backend["name"], "rel-catalio-operator");
    let public = find(&all, "Service", "rel-catalio-operator");
    assert_eq!(backend["port"], public["spec"]["ports"][0]["port"]);
}

/// `helm install` with every switch on is accepted by the real API server,
/// with the CRDs of the optional objects installed from their Go modules
/// (Gateway API, Prometheus Operator, cert-manager): their schemas, and
/// the API server's own for Ingress and the rest, validate what the chart
/// renders.
#[tokio::test]
async fn every_switch_is_accepted_by_the_api_server() {
    let crds = catalio_test_support::prometheus::tools().crds();
    let crds = crds.to_str().unwrap();
    cluster().kubectl_ok(&["apply", "--server-side", "-f", crds]);
    cluster().kubectl_ok(&[
        "wait",
        "--for",
        "condition=Established",
        "--timeout",
        "60s",
        "crd",
        "httproutes.gateway.networking.k8s.io",
        "prometheusrules.monitoring.coreos.com",
        "servicemonitors.monitoring.coreos.com",
        "certificates.cert-manager.io",
    ]);
    let client = cluster().client().await;
    let ops = TestNamespace::new(&client, "every-switch").await;
    let (chart, watch) = (chart(), format!("watchNamespaces={{{}}}", ops.name));
    let release = "every-switch";
    let mut args = vec!["install", release, chart.as_str(), "-n", ops.name.as_str()];
    args.extend_from_slice(ALL_FEATURES);
    args.extend(["--set", &watch, "--set", "rbac.restartTargets=true"]);
    helm_ok(&args);
    let full = format!("{release}-catalio-operator");
    for (kind, name) in [
        ("prometheusrule", full.clone()),
        ("servicemonitor", full.clone()),
        ("configmap", format!("{full}-dashboard")),
        ("ingress", full.clone()),
        ("httproute", full.clone()),
        ("certificate", full.clone()),
        ("networkpolicy", format!("{full}-server")),
        ("deployment", format!("{full}-controller")),
    ] {
        cluster().kubectl_ok(&["-n", &ops.name, "get", kind, &name, "-o", "name"]);
    }
    helm_ok(&["uninstall", release, "-n", &ops.name]);
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

/// Waits until `client` may `verb` the `resource` (named `name`, in
/// `namespace`): RBAC that helm just wrote reaches the API server's
/// authorizer a moment later.
async fn wait_allowed(
    client: &Client,
    verb: &str,
    resource: &str,
    namespace: &str,
    name: Option<&str>,
) {
    use k8s_openapi::api::authorization::v1::{
        ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
    };
    let (group, resource) = resource.split_once('/').unwrap_or(("", resource));
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                verb: Some(verb.into()),
                group: Some(group.into()),
                resource: Some(resource.into()),
                namespace: Some(namespace.into()),
                name: name.map(str::to_owned),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let reviews = Api::<SelfSubjectAccessReview>::all(client.clone());
    eventually(
        WAIT,
        &format!("{verb} {resource} to be allowed"),
        || async {
            let answer = reviews.create(&PostParams::default(), &review).await.ok()?;
            answer.status.is_some_and(|s| s.allowed).then_some(())
        },
    )
    .await;
}

/// The chart's two ServiceAccounts, as clients and kubeconfig files, once
/// the RBAC helm wrote for them is in force.
struct Accounts {
    controller: Client,
    controller_kubeconfig: std::path::PathBuf,
    server: Client,
    server_kubeconfig: std::path::PathBuf,
}

async fn chart_accounts(release_ns: &str, release: &str, org: &str) -> Accounts {
    let admin = cluster().client().await;
    let full = format!("{release}-catalio-operator");
    let dir = std::env::temp_dir();
    let (controller, controller_kubeconfig) =
        as_service_account(&admin, release_ns, &format!("{full}-controller"), &dir).await;
    let (server, server_kubeconfig) =
        as_service_account(&admin, release_ns, &format!("{full}-server"), &dir).await;
    let keys = format!("{full}-signing-keys");
    let lease = format!("{full}-leader");
    wait_allowed(&controller, "create", "secrets", org, None).await;
    wait_allowed(
        &controller,
        "update",
        "coordination.k8s.io/leases",
        release_ns,
        Some(&lease),
    )
    .await;
    wait_allowed(&server, "create", "catalio.ai/requirements", org, None).await;
    wait_allowed(&server, "watch", "secrets", release_ns, Some(&keys)).await;
    Accounts {
        controller,
        controller_kubeconfig,
        server,
        server_kubeconfig,
    }
}

/// The controller and the servers of a release, each run with its own
/// ServiceAccount's kubeconfig, as the chart's Deployments run them.
struct Release {
    controller: OperatorProcess,
    server: OperatorProcess,
    base: String,
    http: reqwest::Client,
}

impl Release {
    async fn start(accounts: &Accounts, release_ns: &str, release: &str, watch: &str) -> Self {
        let keys = format!("{release}-catalio-operator-signing-keys");
        let lease = format!("{release}-catalio-operator-leader");
        let mut common = vec![
            "--namespace",
            release_ns,
            "--signing-key-secret",
            &keys,
            "--leader-lease",
            &lease,
        ];
        if !watch.is_empty() {
            common.extend(["--watch-namespaces", watch]);
        }
        let (mut server, endpoints) = OperatorProcess::run_serving_mode(
            OPERATOR,
            &accounts.server_kubeconfig,
            "server",
            &common,
        );
        let admin_listen = format!("127.0.0.1:{}", free_port());
        let token_url = format!("{}/oauth/token", endpoints.base);
        // As the chart's controller Deployment sets it.
        let account = format!("{release}-catalio-operator-controller");
        let mut controller_args = vec![
            "controller",
            "--admin-listen",
            &admin_listen,
            "--token-url",
            &token_url,
            "--owner-service-account",
            &account,
        ];
        controller_args.extend(&common);
        let controller = OperatorProcess::start_with_kubeconfig(
            OPERATOR,
            &controller_args,
            &accounts.controller_kubeconfig,
        );
        // The servers are ready once the controller has made the keys.
        server.wait_ready(&endpoints, WAIT).await;
        Self {
            controller,
            server,
            base: endpoints.base,
            http: reqwest::Client::new(),
        }
    }

    async fn token_status(&self, id: &str, secret: &str) -> u16 {
        self.http
            .post(format!("{}/oauth/token", self.base))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", id),
                ("client_secret", secret),
            ])
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// The API server words every RBAC refusal "... is forbidden: User
    /// \"system:serviceaccount:...\" cannot ..." (a bare "403" would also
    /// match timestamps and ids, and a bare "forbidden" the refusal to
    /// write into a namespace being deleted, which is no RBAC matter).
    fn assert_never_refused(&self) {
        for (who, process) in [("controller", &self.controller), ("server", &self.server)] {
            let logs = process.logs();
            assert!(
                !logs.contains("forbidden: User"),
                "the {who} was refused something:\n{logs}"
            );
        }
    }
}

/// Applies `yaml` in `namespace` as the cluster admin.
fn apply(namespace: &str, yaml: &str) {
    let out = cluster().kubectl_stdin(&["-n", namespace, "apply", "-f", "-"], Some(yaml));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Waits until credential `name` in `org` satisfies `check`; its status.
async fn credential_until(
    org: &str,
    name: &str,
    what: &str,
    check: impl Fn(&catalio_operator::crd::ApiCredentialStatus) -> bool,
) -> catalio_operator::crd::ApiCredentialStatus {
    let creds = Api::<ApiCredential>::namespaced(cluster().client().await, org);
    eventually(WAIT, what, || async {
        let status = creds.get(name).await.ok()?.status?;
        check(&status).then_some(status)
    })
    .await
}

/// Runs the controller and the servers, each with its own ServiceAccount's
/// kubeconfig, and takes credentials in `org` through every feature: create,
/// tokens, JSON:API writes, last-use writes, rotation with grace, Secret
/// tampering, restart targets (when `restart_targets`, as with the chart's
/// `rbac.restartTargets=true`), ServiceAccount assertions, unused detection
/// with revoke-when-unused, and revocation. Neither process is refused
/// anything on the way.
async fn lifecycle_as(
    accounts: &Accounts,
    release_ns: &str,
    release: &str,
    org: &str,
    watch: &str,
    restart_targets: bool,
) {
    let admin = cluster().client().await;
    let r = Release::start(accounts, release_ns, release, watch).await;
    let keys = format!("{release}-catalio-operator-signing-keys");
    let lease = format!("{release}-catalio-operator-leader");
    let account = format!("{release}-catalio-operator-controller");

    // A Deployment the credential rolls after each new secret.
    let targets = if restart_targets {
        apply(
            org,
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec: {containers: [{name: web, image: web:1}]}\n",
        );
        ", rotation: {restartTargets: [{kind: Deployment, name: web}]}"
    } else {
        ""
    };
    apply(
        org,
        &format!(
            "apiVersion: catalio.ai/v1\nkind: ApiCredential\nmetadata: {{name: ci}}\nspec: {{displayName: CI, scopes: [\"*:write\"]{targets}}}\n"
        ),
    );
    credential_until(org, "ci", "credential Active under the chart's RBAC", |s| {
        s.phase == Some(Phase::Active)
    })
    .await;
    // The key Secret and the Lease belong to the controller's account, so
    // uninstalling the release takes them too.
    let owner = Api::<ServiceAccount>::namespaced(admin.clone(), release_ns)
        .get(&account)
        .await
        .expect("the chart's controller ServiceAccount")
        .metadata
        .uid;
    let owners = |meta: kube::api::ObjectMeta| -> Vec<Option<String>> {
        meta.owner_references
            .unwrap_or_default()
            .into_iter()
            .map(|o| Some(o.uid))
            .collect()
    };
    let secret = Api::<Secret>::namespaced(admin.clone(), release_ns)
        .get(&keys)
        .await
        .expect("the signing-key Secret");
    assert_eq!(owners(secret.metadata), vec![owner.clone()]);
    let held =
        Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(admin.clone(), release_ns)
            .get(&lease)
            .await
            .expect("the leader Lease");
    assert_eq!(owners(held.metadata), vec![owner]);

    // Tokens, and the JSON:API's writes under the servers' RBAC.
    let (id, first) = credential_secret(&admin, org, "ci").await;
    let token = access_token(&r.base, &id, &first, WAIT).await;
    let created = r
        .http
        .post(format!("{}/api/v1/requirements", r.base))
        .bearer_auth(&token)
        .header("content-type", "application/vnd.api+json")
        .body(r#"{"data":{"type":"requirement","attributes":{"title":"Under RBAC"}}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201, "{}", created.text().await.unwrap());
    let requirement = created.json::<serde_json::Value>().await.unwrap()["data"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let archived = r
        .http
        .delete(format!("{}/api/v1/requirements/{requirement}", r.base))
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
        &requirement,
        "-o",
        "jsonpath={.spec.title}/{.spec.archived}",
    ]);
    assert_eq!(title, "Under RBAC/true");
    // The servers record the use.
    credential_until(org, "ci", "lastUsedAt written by the servers", |s| {
        s.last_used_at.is_some()
    })
    .await;
    // Introspection, and one token revoked (the servers write it into the
    // credential's status).
    apply(
        org,
        "apiVersion: catalio.ai/v1\nkind: ApiCredential\nmetadata: {name: gw}\nspec: {displayName: Gateway, introspection: true}\n",
    );
    credential_until(org, "gw", "the gateway credential", |s| {
        s.phase == Some(Phase::Active)
    })
    .await;
    let (gw_id, gw_secret) = credential_secret(&admin, org, "gw").await;
    access_token(&r.base, &gw_id, &gw_secret, WAIT).await;
    let introspect = |token: String| {
        let (http, base) = (r.http.clone(), r.base.clone());
        let (gw_id, gw_secret) = (gw_id.clone(), gw_secret.clone());
        async move {
            let answer: Value = http
                .post(format!("{base}/oauth/introspect"))
                .basic_auth(gw_id, Some(gw_secret))
                .form(&[("token", token)])
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            answer["active"].as_bool().unwrap()
        }
    };
    let doomed = access_token(&r.base, &id, &first, WAIT).await;
    assert!(introspect(doomed.clone()).await);
    let revoked = r
        .http
        .post(format!("{}/oauth/revoke", r.base))
        .basic_auth(&id, Some(&first))
        .form(&[("token", doomed.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
    assert!(!introspect(doomed.clone()).await);
    credential_until(org, "ci", "the revoked token in the status", |s| {
        s.revoked_tokens.len() == 1
    })
    .await;
    assert!(introspect(token.clone()).await, "the other token stays");

    // Rotation with grace: both secrets work until the grace ends; the
    // restart target is rolled to the new one.
    patch_credential(
        org,
        "ci",
        r#"{"spec":{"rotation":{"counter":1,"gracePeriod":"1h"}}}"#,
    );
    let rotated = credential_until(org, "ci", "the rotation", |s| {
        s.rotation_counter == Some(1) && s.previous_secret_hash.is_some()
    })
    .await;
    let (_, second) = credential_secret(&admin, org, "ci").await;
    assert_ne!(second, first);
    access_token(&r.base, &id, &second, WAIT).await;
    assert_eq!(r.token_status(&id, &first).await, 200, "the grace period");
    if restart_targets {
        let short = rotated.restarted_for.clone().expect("restartedFor");
        let status = credential_until(org, "ci", "the target to be rolled", |s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "TargetsRestarted" && c.status == "True")
        })
        .await;
        assert_eq!(status.restarted_for.as_deref(), Some(short.as_str()));
        let annotation = cluster().kubectl_ok(&[
            "-n",
            org,
            "get",
            "deployment",
            "web",
            "-o",
            "jsonpath={.spec.template.metadata.annotations.restart\\.catalio\\.ai/ci}",
        ]);
        assert_eq!(annotation, short);
    }

    // Tampering with the Secret: a new secret, and neither old one works.
    let tampered = json!({"stringData": {"client_secret": "catalio_cs_planted"}});
    Api::<Secret>::namespaced(admin.clone(), org)
        .patch(
            "ci",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&tampered),
        )
        .await
        .unwrap();
    let third = eventually(WAIT, "the tampered Secret to be replaced", || async {
        let (_, now) = credential_secret(&admin, org, "ci").await;
        (now != second && now != "catalio_cs_planted").then_some(now)
    })
    .await;
    access_token(&r.base, &id, &third, WAIT).await;
    for old in [first.as_str(), second.as_str(), "catalio_cs_planted"] {
        assert_eq!(r.token_status(&id, old).await, 401);
    }

    // A secretless credential: a ServiceAccount's token gets access tokens
    // (TokenReview, and the cluster's service-account keys).
    let sa = ServiceAccount {
        metadata: kube::api::ObjectMeta {
            name: Some("robot".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let sas = Api::<ServiceAccount>::namespaced(admin.clone(), org);
    sas.create(&PostParams::default(), &sa).await.unwrap();
    apply(
        org,
        "apiVersion: catalio.ai/v1\nkind: ApiCredential\nmetadata: {name: robot}\nspec: {displayName: Robot, clientSecret: Disabled, serviceAccounts: [robot]}\n",
    );
    credential_until(org, "robot", "the secretless credential", |s| {
        s.phase == Some(Phase::Active)
    })
    .await;
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: Some(vec!["https://catalio.ai".into()]),
            expiration_seconds: Some(600),
            ..Default::default()
        }),
        ..Default::default()
    };
    let assertion = sas
        .create_token_request("robot", &PostParams::default(), &request)
        .await
        .unwrap()
        .status
        .unwrap()
        .token
        .unwrap();
    let form = [
        ("grant_type", "client_credentials"),
        (
            "client_assertion_type",
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        ),
        ("client_assertion", assertion.as_str()),
    ];
    let robot_token = eventually(WAIT, "a token for the assertion", || async {
        let answer = r
            .http
            .post(format!("{}/oauth/token", r.base))
            .form(&form)
            .send()
            .await
            .ok()?;
        (answer.status() == 200).then_some(answer.json::<Value>().await.ok()?)
    })
    .await;
    assert!(robot_token["access_token"].is_string());

    // Unused: marked, then revoked by the controller (in the spec, which
    // no one can undo).
    apply(
        org,
        "apiVersion: catalio.ai/v1\nkind: ApiCredential\nmetadata: {name: idle}\nspec: {displayName: Idle, unusedAfter: 3s, revokeWhenUnused: true}\n",
    );
    let idle = credential_until(org, "idle", "the unused credential to be revoked", |s| {
        s.phase == Some(Phase::Revoked)
    })
    .await;
    assert!(
        idle.conditions
            .iter()
            .all(|c| c.type_ != "Ready" || c.status == "False"),
        "{idle:?}"
    );
    let spec = Api::<ApiCredential>::namespaced(admin.clone(), org)
        .get("idle")
        .await
        .unwrap()
        .spec;
    assert!(spec.revoked, "revoked in the spec");

    // Revocation.
    patch_credential(org, "ci", r#"{"spec":{"revoked":true}}"#);
    credential_until(org, "ci", "revocation under the chart's RBAC", |s| {
        s.phase == Some(Phase::Revoked)
    })
    .await;
    eventually(WAIT, "the revoked credential's Secret to go", || async {
        Api::<Secret>::namespaced(admin.clone(), org)
            .get_opt("ci")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    assert_eq!(r.token_status(&id, &third).await, 401);
    r.assert_never_refused();
}

/// Asserts that the API server refuses `result` (403).
fn refused<T: std::fmt::Debug>(result: Result<T, kube::Error>, what: &str) {
    match result {
        Err(kube::Error::Api(s)) if s.code == 403 => {}
        other => panic!("{what} was not refused: {other:?}"),
    }
}

/// Second review, hole 6: with `rbac.restartTargets=true` the controller
/// may patch every workload of the watched namespaces. The chart's
/// ValidatingAdmissionPolicy lets its ServiceAccount change nothing on a
/// workload but the `restart.catalio.ai/` pod-template annotations.
async fn workloads_change_only_by_restart_annotations(accounts: &Accounts, org: &str, full: &str) {
    use kube::api::{Patch, PatchParams};
    let deployments =
        Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(accounts.controller.clone(), org);
    let attempt = |patch: Value| {
        let deployments = deployments.clone();
        async move {
            deployments
                .patch("web", &PatchParams::default(), &Patch::Merge(&patch))
                .await
        }
    };
    for (what, patch) in [
        (
            "an image",
            json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "evil:1"}]}}}}),
        ),
        ("the replicas", json!({"spec": {"replicas": 50}})),
        (
            "a pod label",
            json!({"spec": {"template": {"metadata": {"labels": {"app": "web", "x": "y"}}}}}),
        ),
        (
            "another annotation",
            json!({"spec": {"template": {"metadata": {"annotations": {"other/x": "y"}}}}}),
        ),
        (
            "the Deployment's labels",
            json!({"metadata": {"labels": {"x": "y"}}}),
        ),
    ] {
        match attempt(patch).await {
            Err(kube::Error::Api(s)) if s.code == 403 || s.code == 422 => assert!(
                s.message.contains(&format!("{full}-restart-targets")),
                "{what}: refused by something else: {}",
                s.message
            ),
            other => panic!("the controller changed {what}: {other:?}"),
        }
    }
    attempt(json!({"spec": {"template": {"metadata": {"annotations": {"restart.catalio.ai/ci": "x"}}}}}))
        .await
        .expect("the controller rolls a workload");
}

#[tokio::test]
async fn helm_install_grants_exactly_what_the_operator_needs() {
    let admin = cluster().client().await;

    // Cluster-wide (default values).
    let ops = TestNamespace::new(&admin, "ops").await;
    let org = TestNamespace::new(&admin, "org").await;
    let release = format!("r{}", &ops.name[ops.name.len() - 5..]);
    helm_ok(&[
        "install",
        &release,
        &chart(),
        "-n",
        &ops.name,
        "--set",
        "rbac.restartTargets=true",
    ]);
    let full = format!("{release}-catalio-operator");
    for component in ["controller", "server"] {
        let name = format!("{full}-{component}");
        for (kind, name, namespaced) in [
            ("deployment", name.clone(), true),
            ("serviceaccount", name.clone(), true),
            ("poddisruptionbudget", name.clone(), true),
            ("role", format!("{name}-self"), true),
            ("rolebinding", format!("{name}-self"), true),
            ("clusterrole", name.clone(), false),
            ("clusterrolebinding", name.clone(), false),
        ] {
            let mut args = vec!["get", kind, name.as_str(), "-o", "name"];
            if namespaced {
                args.extend(["-n", ops.name.as_str()]);
            }
            cluster().kubectl_ok(&args);
        }
    }
    // The public Service carries the public port only; each component's
    // admin port (metrics, probes) has a Service of its own.
    for (service, ports) in [
        (full.clone(), "http"),
        (format!("{full}-admin"), "admin"),
        (format!("{full}-controller"), "admin"),
    ] {
        let listed = cluster().kubectl_ok(&[
            "-n",
            &ops.name,
            "get",
            "service",
            &service,
            "-o",
            "jsonpath={.spec.ports[*].name}",
        ]);
        assert_eq!(listed, ports, "{service}");
    }
    let accounts = chart_accounts(&ops.name, &release, &org.name).await;
    lifecycle_as(&accounts, &ops.name, &release, &org.name, "", true).await;
    workloads_change_only_by_restart_annotations(&accounts, &org.name, &full).await;

    // Least privilege: the network-facing servers read no Secret but the
    // signing keys, by name; only the controller reads the organizations'.
    let mut other = Secret::default();
    other.metadata.name = Some("someone-elses".into());
    Api::<Secret>::namespaced(admin.clone(), &org.name)
        .create(&PostParams::default(), &other)
        .await
        .unwrap();
    let keys = format!("{full}-signing-keys");
    let server_secrets = |ns: &str| Api::<Secret>::namespaced(accounts.server.clone(), ns);
    refused(
        server_secrets(&org.name).get("someone-elses").await,
        "the servers reading a Secret in an organization",
    );
    refused(
        server_secrets(&org.name).list(&ListParams::default()).await,
        "the servers listing an organization's Secrets",
    );
    refused(
        server_secrets(&ops.name).list(&ListParams::default()).await,
        "the servers listing the release namespace's Secrets",
    );
    refused(
        Api::<Secret>::all(accounts.server.clone())
            .list(&ListParams::default())
            .await,
        "the servers listing Secrets cluster-wide",
    );
    server_secrets(&ops.name)
        .get(&keys)
        .await
        .expect("the servers read the signing keys");
    Api::<Secret>::namespaced(accounts.controller.clone(), &org.name)
        .get("someone-elses")
        .await
        .expect("the controller reads the organizations' Secrets");
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
    for component in ["controller", "server"] {
        let out = cluster().kubectl(&["get", "clusterrole", &format!("{full2}-{component}")]);
        assert!(!out.status.success(), "no ClusterRole with watchNamespaces");
    }
    let accounts = chart_accounts(&ops2.name, &release2, &inside.name).await;
    for client in [&accounts.controller, &accounts.server] {
        refused(
            Api::<ApiCredential>::namespaced(client.clone(), &outside.name)
                .list(&ListParams::default())
                .await,
            "listing credentials outside the watched namespaces",
        );
        refused(
            Api::<Secret>::namespaced(client.clone(), &outside.name)
                .list(&ListParams::default())
                .await,
            "listing Secrets outside the watched namespaces",
        );
        refused(
            Api::<ApiCredential>::all(client.clone())
                .list(&ListParams::default())
                .await,
            "listing credentials cluster-wide",
        );
    }
    // The servers may ask the API server about ServiceAccount tokens (for
    // client assertions), even when only some namespaces are watched; the
    // controller may not.
    let review = TokenReview {
        spec: TokenReviewSpec {
            token: "not-a-token".into(),
            audiences: Some(vec!["https://catalio.ai".into()]),
        },
        ..Default::default()
    };
    let reviewed = Api::<TokenReview>::all(accounts.server.clone())
        .create(&PostParams::default(), &review)
        .await
        .expect("the servers may create TokenReviews");
    assert_ne!(reviewed.status.unwrap().authenticated, Some(true));
    refused(
        Api::<TokenReview>::all(accounts.controller.clone())
            .create(&PostParams::default(), &review)
            .await,
        "a TokenReview by the controller",
    );
    lifecycle_as(
        &accounts,
        &ops2.name,
        &release2,
        &inside.name,
        &inside.name,
        false,
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

/// What a person bound in one namespace to Kubernetes' default roles may do
/// with the operator's kinds once the chart is installed, by real requests
/// as impersonated users: `admin` manages credentials and data, `edit`
/// writes data but no credential, `view` reads both but no Secret; status
/// is nobody's; and a binding in one namespace grants nothing in another.
#[tokio::test]
async fn namespace_admins_editors_and_viewers_get_what_the_table_says() {
    use kube::api::{ApiResource, DeleteParams, DynamicObject, Patch, PatchParams};
    use std::collections::BTreeMap;

    let admin = cluster().client().await;
    let ops = TestNamespace::new(&admin, "roles").await;
    let org = TestNamespace::new(&admin, "roles-org").await;
    let other = TestNamespace::new(&admin, "roles-other").await;
    let release = format!("r{}", &ops.name[ops.name.len() - 5..]);
    helm_ok(&["install", &release, &chart(), "-n", &ops.name]);

    // The chart's list of business kinds is the API's.
    let rendered = cluster().kubectl_ok(&[
        "get",
        "clusterrole",
        &format!("{release}-catalio-operator-view"),
        "-o",
        "jsonpath={.rules[0].resources}",
    ]);
    let mut listed: Vec<String> = serde_json::from_str(&rendered).unwrap();
    let mut plurals: Vec<String> = catalio_operator::crd::registry::TYPES
        .iter()
        .map(|t| t.plural.to_owned())
        .collect();
    listed.sort();
    plurals.sort();
    assert_eq!(listed, plurals);

    let bind = |ns: &str, user: &str, role: &str| {
        cluster().kubectl_ok(&[
            "-n",
            ns,
            "create",
            "rolebinding",
            &format!("{user}-{role}"),
            &format!("--clusterrole={role}"),
            &format!("--user={user}"),
        ]);
    };
    bind(&org.name, "alice", "admin");
    bind(&org.name, "bob", "edit");
    bind(&org.name, "carol", "view");
    bind(&other.name, "alice", "view");
    let as_user = |user: &'static str| async move {
        let mut config = kube::Config::from_custom_kubeconfig(
            Kubeconfig::read_from(&cluster().kubeconfig).unwrap(),
            &Default::default(),
        )
        .await
        .unwrap();
        config.auth_info.impersonate = Some(user.into());
        Client::try_from(config).unwrap()
    };
    // Aggregation reaches the default roles a moment after helm.
    wait_allowed(
        &as_user("alice").await,
        "create",
        "catalio.ai/apicredentials",
        &org.name,
        None,
    )
    .await;
    wait_allowed(
        &as_user("bob").await,
        "create",
        "catalio.ai/requirements",
        &org.name,
        None,
    )
    .await;
    wait_allowed(
        &as_user("carol").await,
        "list",
        "catalio.ai/apicredentials",
        &org.name,
        None,
    )
    .await;

    let resource = |kind: &str, plural: &str| ApiResource {
        group: "catalio.ai".into(),
        version: "v1".into(),
        api_version: "catalio.ai/v1".into(),
        kind: kind.into(),
        plural: plural.into(),
    };
    let credential = resource("ApiCredential", "apicredentials");
    let requirement = resource("Requirement", "requirements");
    let object = |r: &ApiResource, name: &str| -> DynamicObject {
        let spec = if r.kind == "ApiCredential" {
            json!({"displayName": name})
        } else {
            json!({"title": name})
        };
        serde_json::from_value(json!({
            "apiVersion": "catalio.ai/v1", "kind": r.kind,
            "metadata": {"name": name}, "spec": spec,
        }))
        .unwrap()
    };
    // Objects for the users to change and delete, made by the cluster admin.
    for ns in [&org.name, &other.name] {
        for r in [&credential, &requirement] {
            let api = Api::<DynamicObject>::namespaced_with(admin.clone(), ns, r);
            for name in ["shared", "del-alice", "del-bob", "del-carol"] {
                api.create(&PostParams::default(), &object(r, name))
                    .await
                    .unwrap();
            }
        }
    }

    // Whether the API server allowed it: a refusal must be 403, nothing else.
    fn allowed<T>(result: Result<T, kube::Error>, what: &str) -> bool {
        match result {
            Ok(_) => true,
            Err(kube::Error::Api(s)) if s.code == 403 => false,
            Err(e) => panic!("{what}: {e}"),
        }
    }
    let mut table: BTreeMap<String, Vec<bool>> = BTreeMap::new();
    for user in ["alice", "bob", "carol"] {
        let client = as_user(user).await;
        for (ns, place) in [(&org.name, "own"), (&other.name, "other")] {
            for r in [&credential, &requirement] {
                let api = Api::<DynamicObject>::namespaced_with(client.clone(), ns, r);
                let row = |verb: &str| format!("{place} namespace: {verb} {}", r.plural);
                let list = api.list(&ListParams::default()).await;
                table
                    .entry(row("list"))
                    .or_default()
                    .push(allowed(list, "list"));
                let create = api
                    .create(&PostParams::default(), &object(r, &format!("by-{user}")))
                    .await;
                table
                    .entry(row("create"))
                    .or_default()
                    .push(allowed(create, "create"));
                let change = json!({"metadata": {"labels": {"changed-by": user}}});
                let patch = api
                    .patch("shared", &PatchParams::default(), &Patch::Merge(&change))
                    .await;
                table
                    .entry(row("patch"))
                    .or_default()
                    .push(allowed(patch, "patch"));
                let status = json!({"status": {"phase": "Revoked"}});
                let patch_status = api
                    .patch_status("shared", &PatchParams::default(), &Patch::Merge(&status))
                    .await;
                table
                    .entry(row("patch status of"))
                    .or_default()
                    .push(allowed(patch_status, "patch status"));
                let delete = api
                    .delete(&format!("del-{user}"), &DeleteParams::default())
                    .await;
                table
                    .entry(row("delete"))
                    .or_default()
                    .push(allowed(delete, "delete"));
            }
            let secrets = Api::<Secret>::namespaced(client.clone(), ns)
                .list(&ListParams::default())
                .await;
            table
                .entry(format!("{place} namespace: list secrets"))
                .or_default()
                .push(allowed(secrets, "list secrets"));
        }
    }
    // Columns: alice (admin here, view there), bob (edit here), carol (view here).
    let expected: BTreeMap<String, Vec<bool>> = [
        ("own namespace: list apicredentials", [true, true, true]),
        ("own namespace: create apicredentials", [true, false, false]),
        ("own namespace: patch apicredentials", [true, false, false]),
        (
            "own namespace: patch status of apicredentials",
            [false, false, false],
        ),
        ("own namespace: delete apicredentials", [true, false, false]),
        ("own namespace: list requirements", [true, true, true]),
        ("own namespace: create requirements", [true, true, false]),
        ("own namespace: patch requirements", [true, true, false]),
        (
            "own namespace: patch status of requirements",
            [false, false, false],
        ),
        ("own namespace: delete requirements", [true, true, false]),
        // Kubernetes' own admin and edit read Secrets; view never does.
        ("own namespace: list secrets", [true, true, false]),
        ("other namespace: list apicredentials", [true, false, false]),
        (
            "other namespace: create apicredentials",
            [false, false, false],
        ),
        (
            "other namespace: patch apicredentials",
            [false, false, false],
        ),
        (
            "other namespace: patch status of apicredentials",
            [false, false, false],
        ),
        (
            "other namespace: delete apicredentials",
            [false, false, false],
        ),
        ("other namespace: list requirements", [true, false, false]),
        (
            "other namespace: create requirements",
            [false, false, false],
        ),
        ("other namespace: patch requirements", [false, false, false]),
        (
            "other namespace: patch status of requirements",
            [false, false, false],
        ),
        (
            "other namespace: delete requirements",
            [false, false, false],
        ),
        ("other namespace: list secrets", [false, false, false]),
    ]
    .into_iter()
    .map(|(row, cells)| (row.to_owned(), cells.to_vec()))
    .collect();
    for (row, cells) in &table {
        eprintln!(
            "{row:50} alice {:5} bob {:5} carol {:5}",
            cells[0], cells[1], cells[2]
        );
    }
    assert_eq!(table, expected);
    helm_ok(&["uninstall", &release, "-n", &ops.name]);
}
