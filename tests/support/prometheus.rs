//! Prometheus and promtool, built from their Go module by
//! `tests/prometheus/build.sh`, and the CRDs of the chart's optional
//! objects fetched beside them. A real Prometheus runs as a process that
//! scrapes static targets and answers its HTTP API.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;

use crate::{REPO, eventually, free_port};

/// What `tests/prometheus/build.sh` built and fetched (once per test
/// binary; a no-op when cached).
pub struct Tools {
    pub dir: PathBuf,
}

impl Tools {
    pub fn promtool(&self, args: &[&str], cwd: &Path) -> Output {
        Command::new(self.dir.join("bin/promtool"))
            .args(args)
            .current_dir(cwd)
            .output()
            .expect("run promtool")
    }

    /// The Gateway API, Prometheus Operator and cert-manager CRDs.
    pub fn crds(&self) -> PathBuf {
        self.dir.join("crds")
    }
}

pub fn tools() -> &'static Tools {
    static TOOLS: OnceLock<Tools> = OnceLock::new();
    TOOLS.get_or_init(|| {
        let out = Command::new(Path::new(REPO).join("tests/prometheus/build.sh"))
            .stderr(Stdio::inherit())
            .output()
            .expect("run tests/prometheus/build.sh");
        assert!(out.status.success(), "building Prometheus failed");
        Tools {
            dir: PathBuf::from(String::from_utf8(out.stdout).unwrap().trim()),
        }
    })
}

/// One scrape job: `targets` (`HOST:PORT`) with `labels` on every series,
/// scraped like the chart's ServiceMonitor does (`honor_labels`).
pub struct Job<'a> {
    pub name: &'a str,
    pub targets: Vec<String>,
    pub labels: Vec<(&'a str, String)>,
}

/// A Prometheus process with its own storage, stopped on drop.
pub struct Prometheus {
    child: Child,
    dir: PathBuf,
    pub url: String,
    http: reqwest::Client,
}

impl Prometheus {
    /// Starts Prometheus scraping `jobs` every second and evaluating
    /// `rule_files` (paths), and waits until it has scraped every target
    /// (its first scrape comes seconds after it is ready).
    pub async fn start(jobs: &[Job<'_>], rule_files: &[PathBuf]) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "catalio-prometheus.{}.{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).expect("prometheus dir");
        let mut config = String::from(
            "global: {scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}\n",
        );
        config.push_str("rule_files:\n");
        for file in rule_files {
            config.push_str(&format!("  - {}\n", file.display()));
        }
        config.push_str("scrape_configs:\n");
        for job in jobs {
            let labels: Vec<String> = job
                .labels
                .iter()
                .map(|(k, v)| format!("{k}: {v:?}"))
                .collect();
            config.push_str(&format!(
                "  - job_name: {:?}\n    honor_labels: true\n    static_configs:\n      - targets: {:?}\n        labels: {{{}}}\n",
                job.name,
                job.targets,
                labels.join(", ")
            ));
        }
        std::fs::write(dir.join("prometheus.yml"), config).expect("prometheus.yml");
        let listen = format!("127.0.0.1:{}", free_port());
        let log = std::fs::File::create(dir.join("prometheus.log")).expect("log");
        let child = Command::new(tools().dir.join("bin/prometheus"))
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={listen}"))
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        let prometheus = Self {
            child,
            dir,
            url: format!("http://{listen}"),
            http: reqwest::Client::new(),
        };
        let ready = format!("{}/-/ready", prometheus.url);
        eventually(Duration::from_secs(60), "Prometheus is ready", || {
            let get = prometheus.http.get(&ready).send();
            async move { get.await.is_ok_and(|r| r.status() == 200).then_some(()) }
        })
        .await;
        prometheus.wait_scraped(Duration::from_secs(60)).await;
        prometheus
    }

    /// The API's `data` for `GET /api/v1/{path}` with `query`; panics
    /// with Prometheus's error otherwise.
    pub async fn api(&self, path: &str, query: &[(&str, &str)]) -> Value {
        let query = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(query)
            .finish();
        let r = self
            .http
            .get(format!("{}/api/v1/{path}?{query}", self.url))
            .send()
            .await
            .expect("Prometheus answers");
        let body: Value = r.json().await.expect("a JSON answer");
        assert_eq!(body["status"], "success", "{path}?{query}: {body}");
        body["data"].clone()
    }

    /// Waits until every target has been scraped successfully; panics
    /// with the targets' last errors otherwise.
    async fn wait_scraped(&self, timeout: Duration) {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let targets = self.api("targets", &[]).await;
            let active = targets["activeTargets"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if !active.is_empty() && active.iter().all(|t| t["health"] == "up") {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "targets not scraped: {active:?}\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The series an instant query returns.
    pub async fn query(&self, expr: &str) -> Vec<Value> {
        let data = self.api("query", &[("query", expr)]).await;
        data["result"].as_array().cloned().unwrap_or_default()
    }

    /// Every metric name `expr` selects, from Prometheus's own parse of it.
    pub async fn metric_names(&self, expr: &str) -> Vec<String> {
        fn walk(node: &Value, names: &mut Vec<String>) {
            match node {
                Value::Object(map) => {
                    let selector = matches!(
                        map.get("type").and_then(Value::as_str),
                        Some("vectorSelector" | "matrixSelector")
                    );
                    if let (true, Some(name)) = (selector, map.get("name").and_then(Value::as_str))
                        && !name.is_empty()
                    {
                        names.push(name.to_owned());
                    }
                    map.values().for_each(|v| walk(v, names));
                }
                Value::Array(items) => items.iter().for_each(|v| walk(v, names)),
                _ => {}
            }
        }
        let ast = self.api("parse_query", &[("query", expr)]).await;
        let mut names = Vec::new();
        walk(&ast, &mut names);
        names.sort();
        names.dedup();
        names
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
