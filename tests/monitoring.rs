//! The chart's operations pack against the real tools: its alerts under
//! `promtool test rules`, and its dashboard's queries answered by a real
//! Prometheus that scrapes the real binary while it serves a short load.
//! Both built from the Prometheus Go module (tests/prometheus/build.sh).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use catalio_test_support::prometheus::{Job, Prometheus, tools};
use catalio_test_support::{
    OperatorProcess, REPO, TestNamespace, access_token, cluster, create_credential, eventually,
    list_status,
};
use serde_json::Value;

const OPERATOR: &str = env!("CARGO_BIN_EXE_catalio-operator");
const WAIT: Duration = Duration::from_secs(60);
const RUNBOOK: &str = "https://github.com/catalio/catalio-operator/blob/main/README.md";

fn chart() -> String {
    format!("{REPO}/charts/catalio-operator")
}

/// A fresh directory for one test's files.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("catalio-{name}.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir
}

/// The chart's PrometheusRule as rendered with the defaults, written as a
/// Prometheus rule file into `dir`; returns its groups.
fn rendered_rules(dir: &std::path::Path) -> (PathBuf, Value) {
    let chart = chart();
    let rendered = cluster().helm_ok(&[
        "template",
        "rel",
        &chart,
        "--kube-version",
        "1.37.0",
        "--set",
        "prometheusRule.enabled=true",
        "--show-only",
        "templates/prometheusrule.yaml",
    ]);
    let rule: Value = serde_saphyr::from_str(&rendered).expect("the PrometheusRule is YAML");
    assert_eq!(rule["kind"], "PrometheusRule");
    let path = dir.join("catalio-rules.yaml");
    // JSON is YAML: promtool and Prometheus read it as a rule file.
    std::fs::write(&path, rule["spec"].to_string()).expect("rule file");
    (path, rule["spec"].clone())
}

fn alerts(groups: &Value) -> Vec<Value> {
    groups["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
        .collect()
}

/// Every alert passes promtool's checks and unit tests, has a case where
/// it fires and one where it stays quiet, says what to do, and links a
/// runbook section that the README has.
#[test]
fn every_alert_fires_and_stays_quiet_as_its_unit_tests_say() {
    let dir = scratch("alerts");
    let (rules, groups) = rendered_rules(&dir);
    std::fs::copy(
        format!("{REPO}/tests/prometheus/alerts_test.yaml"),
        dir.join("alerts_test.yaml"),
    )
    .expect("copy the unit tests");
    for args in [
        &["check", "rules", rules.to_str().unwrap()][..],
        &["test", "rules", "alerts_test.yaml"],
    ] {
        let out = tools().promtool(args, &dir);
        assert!(
            out.status.success(),
            "promtool {args:?}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let unit: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(dir.join("alerts_test.yaml")).unwrap())
            .expect("the unit tests are YAML");
    let cases: Vec<&Value> = unit["tests"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| t["alert_rule_test"].as_array().unwrap())
        .collect();
    let readme = std::fs::read_to_string(format!("{REPO}/README.md")).unwrap();
    let alerts = alerts(&groups);
    assert_eq!(alerts.len(), 11, "the alerts the issue asks for");
    for alert in &alerts {
        let name = alert["alert"].as_str().unwrap();
        let of_this = || cases.iter().filter(|c| c["alertname"] == name);
        let fires = |c: &&&Value| c["exp_alerts"].as_array().is_some_and(|a| !a.is_empty());
        assert!(
            of_this().any(|c| fires(&c)),
            "{name}: no case where it fires"
        );
        assert!(of_this().any(|c| !fires(&c)), "{name}: no quiet case");
        let annotations = &alert["annotations"];
        for key in ["summary", "description"] {
            assert!(
                annotations[key].as_str().is_some_and(|s| s.len() > 20),
                "{name}: {key}"
            );
        }
        assert_eq!(
            annotations["runbook_url"],
            format!("{RUNBOOK}#{}", name.to_lowercase())
        );
        assert!(
            readme.lines().any(|l| l == format!("#### {name}")),
            "the README has no runbook section for {name}"
        );
    }
}

/// Every query of the dashboard, with Grafana's variables filled in.
fn dashboard_queries() -> Vec<(String, String)> {
    let path = format!("{REPO}/charts/catalio-operator/dashboards/catalio-operator.json");
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).expect("dashboard JSON");
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("a PromQL target");
            queries.push((
                panel["title"].as_str().unwrap().to_owned(),
                expr.replace("$__rate_interval", "1m"),
            ));
        }
    }
    queries
}

/// The series names the binary exports, from its exposition.
fn exported(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap().to_owned())
        .collect()
}

/// The metric names `expr` uses that the binary does not export.
async fn unknown(prometheus: &Prometheus, expr: &str, exported: &BTreeSet<String>) -> Vec<String> {
    let names = prometheus.metric_names(expr).await;
    assert!(!names.is_empty(), "{expr} selects no metric");
    names
        .into_iter()
        .filter(|n| !exported.contains(n))
        .collect()
}

/// A real Prometheus scrapes the operator while it issues and refuses
/// tokens and serves the JSON:API: every panel's query returns a series,
/// the load shows, every metric a panel or an alert names is one the
/// binary exports, and every alert evaluates.
#[tokio::test]
async fn every_dashboard_query_returns_series_from_a_real_prometheus() {
    let client = cluster().client().await;
    let org = TestNamespace::new(&client, "dash").await;
    let (mut operator, endpoints) = OperatorProcess::run_serving(
        OPERATOR,
        &cluster().kubeconfig,
        &[
            "--namespace",
            &org.name,
            "--watch-namespaces",
            &org.name,
            "--token-url",
            "{base}/oauth/token",
            "--shutdown-delay",
            "0s",
        ],
    );
    operator.wait_ready(&endpoints, WAIT).await;
    let dir = scratch("dashboard");
    let (rules, groups) = rendered_rules(&dir);
    let admin = endpoints.admin.trim_start_matches("http://").to_owned();
    let prometheus = Prometheus::start(
        &[Job {
            name: "catalio-operator",
            targets: vec![admin],
            labels: vec![("pod", "catalio-operator-0".into())],
        }],
        &[rules],
    )
    .await;

    // The load: a used credential, an idle one that becomes Unused, tokens
    // issued and refused, JSON:API calls that succeed and fail.
    let (id, secret) = create_credential(&client, &org.name, "used", "").await;
    create_credential(&client, &org.name, "idle", "  unusedAfter: 1s\n").await;
    let token = access_token(&endpoints.base, &id, &secret, WAIT).await;
    let http = reqwest::Client::new();
    for round in 0..20 {
        assert_eq!(list_status(&endpoints.base, &token).await, 200);
        assert_eq!(list_status(&endpoints.base, "not-a-token").await, 401);
        let wrong = http
            .post(format!("{}/oauth/token", endpoints.base))
            .basic_auth(&id, Some(format!("wrong-{round}")))
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .unwrap();
        // Refused, then throttled after ten failures a minute.
        assert!(matches!(wrong.status().as_u16(), 401 | 429), "{wrong:?}");
        access_token(&endpoints.base, &id, &secret, WAIT).await;
    }

    // Rates need two scrapes after the load; the Unused mark needs the
    // controller's next look at the idle credential.
    let scraped = |expr: &'static str| {
        let prometheus = &prometheus;
        async move {
            let series = prometheus.query(expr).await;
            (!series.is_empty()).then_some(())
        }
    };
    eventually(WAIT, "rates of the load", || {
        scraped("sum(rate(catalio_tokens_issued_total[1m])) > 0")
    })
    .await;
    eventually(WAIT, "the idle credential counted Unused", || {
        scraped("max(catalio_credentials_unused) > 0")
    })
    .await;

    let exposition = catalio_test_support::metrics(&endpoints.admin).await;
    let exported = exported(&exposition);
    // The check itself can fail: a name the binary does not export.
    assert_eq!(
        unknown(
            &prometheus,
            "rate(catalio_tokens_minted_total[1m])",
            &exported
        )
        .await,
        ["catalio_tokens_minted_total"]
    );
    let queries = dashboard_queries();
    assert!(queries.len() >= 25, "{} queries", queries.len());
    for (panel, expr) in &queries {
        let missing = unknown(&prometheus, expr, &exported).await;
        assert!(missing.is_empty(), "{panel}: {expr} names {missing:?}");
        assert!(
            !prometheus.query(expr).await.is_empty(),
            "{panel}: {expr} returns no series\n{}",
            prometheus.logs()
        );
    }
    for alert in alerts(&groups) {
        let expr = alert["expr"].as_str().unwrap();
        let missing = unknown(&prometheus, expr, &exported).await;
        assert!(
            missing.is_empty(),
            "{}: {expr} names {missing:?}",
            alert["alert"]
        );
    }

    // What the load did shows on the dashboard.
    let value = |series: &Value| -> f64 { series["value"][1].as_str().unwrap().parse().unwrap() };
    for (expr, at_least) in [
        (r#"max(catalio_credentials{phase="Active"})"#, 2.0),
        (r#"max(catalio_credentials_unused{namespace="ORG"})"#, 1.0),
        (
            r#"sum(increase(catalio_tokens_refused_total{reason="invalid_client"}[1m]))"#,
            1.0,
        ),
        (
            r#"sum(increase(catalio_http_requests_total{route="api:requirements",status="200"}[1m]))"#,
            1.0,
        ),
        (
            r#"sum(increase(catalio_api_auth_failures_total{reason="malformed"}[1m]))"#,
            1.0,
        ),
    ] {
        let expr = expr.replace("ORG", &org.name);
        let series = prometheus.query(&expr).await;
        assert!(
            series.first().is_some_and(|s| value(s) >= at_least),
            "{expr}: {series:?}"
        );
    }

    // Every alert evaluates against what the binary exports.
    eventually(WAIT, "every alert evaluated", || {
        let prometheus = &prometheus;
        async move {
            let data = prometheus.api("rules", &[("type", "alert")]).await;
            let rules: Vec<Value> = data["groups"]
                .as_array()?
                .iter()
                .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
                .collect();
            let evaluated = rules.len() == 11
                && rules
                    .iter()
                    .all(|r| r["health"] == "ok" && r["lastEvaluation"] != "0001-01-01T00:00:00Z");
            evaluated.then_some(())
        }
    })
    .await;
}
