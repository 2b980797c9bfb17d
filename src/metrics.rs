//! Prometheus metrics, served on the admin port at `/metrics`. Every label
//! value comes from a fixed set (result, error reason, OAuth error code,
//! route, status), never from request data, so cardinality stays bounded.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::index::CredentialIndex;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AuditLabels {
    pub sink: &'static str,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NamespaceLabel {
    pub namespace: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabel {
    pub phase: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    pub route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: &'static str,
    pub status: u16,
}

/// Creates the series of each of `labels` in `family`, at zero.
fn at_zero<L, M, C>(family: &Family<L, M, C>, labels: impl IntoIterator<Item = L>)
where
    L: Clone + std::hash::Hash + Eq,
    C: MetricConstructor<M>,
{
    for labels in labels {
        drop(family.get_or_create(&labels));
    }
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 0.5 ms .. ~4 s
    Histogram::new(exponential_buckets(0.0005, 2.0, 14))
}

pub struct Metrics {
    registry: Registry,
    pub reconciles: Family<ResultLabel, Counter>,
    pub reconcile_errors: Family<ReasonLabel, Counter>,
    pub reconcile_duration: Histogram,
    pub tokens_issued: Counter,
    pub tokens_refused: Family<ReasonLabel, Counter>,
    pub api_refused: Family<ReasonLabel, Counter>,
    pub http_requests: Family<RequestLabels, Counter>,
    pub http_duration: HistogramFamily<RouteLabel>,
    pub open_connections: Gauge,
    pub usage_notes: Family<ResultLabel, Counter>,
    pub watch_lists: Counter,
    pub token_reviews: Family<ResultLabel, Counter>,
    pub introspections: Family<ResultLabel, Counter>,
    pub introspections_refused: Family<ReasonLabel, Counter>,
    pub revocations: Family<ResultLabel, Counter>,
    pub revocations_refused: Family<ReasonLabel, Counter>,
    pub audit_records: Family<AuditLabels, Counter>,
    /// What the controller did to credentials, by event reason.
    pub credential_events: Family<ReasonLabel, Counter>,
    /// The signing-key rotation period (set by the controller).
    pub signing_key_rotation: Gauge,
    signing_key_age: Gauge,
    ready: Gauge,
    degraded: Gauge,
    resident_memory: Gauge,
    credentials: Family<PhaseLabel, Gauge>,
    unused: Family<NamespaceLabel, Gauge>,
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let mut metrics = Self {
            registry: Registry::with_prefix("catalio"),
            reconciles: Family::default(),
            reconcile_errors: Family::default(),
            reconcile_duration: latency_histogram(),
            tokens_issued: Counter::default(),
            tokens_refused: Family::default(),
            api_refused: Family::default(),
            http_requests: Family::default(),
            http_duration: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            open_connections: Gauge::default(),
            usage_notes: Family::default(),
            watch_lists: Counter::default(),
            token_reviews: Family::default(),
            introspections: Family::default(),
            introspections_refused: Family::default(),
            revocations: Family::default(),
            revocations_refused: Family::default(),
            audit_records: Family::default(),
            credential_events: Family::default(),
            signing_key_rotation: Gauge::default(),
            signing_key_age: Gauge::default(),
            ready: Gauge::default(),
            degraded: Gauge::default(),
            resident_memory: Gauge::default(),
            credentials: Family::default(),
            unused: Family::default(),
        };
        metrics.register_controller();
        metrics.register_server();
        metrics.register_process();
        metrics.start_at_zero();
        Arc::new(metrics)
    }

    /// Every label set the dashboards and alerts name exists from the
    /// start, at zero: a query over it returns a series before the first
    /// event, and a rate is one from the first.
    fn start_at_zero(&self) {
        let reason = |reason: &'static str| ReasonLabel { reason };
        let result = |result: &'static str| ResultLabel { result };
        at_zero(
            &self.reconcile_errors,
            crate::controller::ERROR_LABELS.map(reason),
        );
        let events = crate::controller::plan::Reason::ALL
            .iter()
            .map(|r| r.as_str())
            .chain(["RestartedWorkload", "RestartFailed", "ReconcileFailed"]);
        at_zero(&self.credential_events, events.map(reason));
        at_zero(&self.reconciles, ["ok", "error"].map(result));
        let refusals = [
            "invalid_request",
            "invalid_client",
            "invalid_scope",
            "invalid_target",
            "unsupported_grant_type",
            "invalid_dpop_proof",
            "throttled",
            "rate_limited",
            "temporarily_unavailable",
            "server_error",
        ];
        at_zero(&self.tokens_refused, refusals.map(reason));
        let refusals = ["invalid_request", "invalid_client", "rate_limited"];
        at_zero(&self.introspections_refused, refusals.map(reason));
        at_zero(&self.revocations_refused, refusals.map(reason));
        let api_refusals = [
            "not_ready",
            "missing",
            "malformed",
            "unknown_key",
            "invalid",
            "expired",
            "inactive",
            "dpop_unbound",
            "dpop_as_bearer",
            "dpop_missing",
            "dpop_other_key",
            "dpop_invalid",
        ];
        at_zero(&self.api_refused, api_refusals.map(reason));
        at_zero(&self.introspections, ["active", "inactive"].map(result));
        at_zero(&self.revocations, ["revoked", "unchanged"].map(result));
        let reviews = ["authenticated", "refused", "failed"];
        at_zero(&self.token_reviews, reviews.map(result));
        at_zero(
            &self.usage_notes,
            ["written", "skipped", "dropped"].map(result),
        );
        let outcomes = ["written", "delivered", "failed", "dropped"];
        for sink in ["log", "webhook"] {
            let labels = outcomes.map(|result| AuditLabels { sink, result });
            at_zero(&self.audit_records, labels);
        }
    }

    /// A registry with a sample in every family, for the reference
    /// documents (which name each family's labels from its samples).
    pub fn sampled() -> Arc<Self> {
        let metrics = Self::new();
        metrics.request("token", 200, Duration::ZERO);
        at_zero(&metrics.credentials, [PhaseLabel { phase: "Active" }]);
        let namespace = "organization".to_owned();
        at_zero(&metrics.unused, [NamespaceLabel { namespace }]);
        metrics
    }

    /// What every process reports of itself.
    fn register_process(&mut self) {
        let r = &mut self.registry;
        r.register(
            "ready",
            "1 when this replica is ready (its caches listed, its keys loaded, not draining), 0 otherwise",
            self.ready.clone(),
        );
        r.register(
            "degraded",
            "1 when a watch or the leader election of this replica has been broken for a while (/readyz names it), 0 otherwise",
            self.degraded.clone(),
        );
        r.register(
            "signing_key_age_seconds",
            "Age of the newest signing key",
            self.signing_key_age.clone(),
        );
        r.register(
            "signing_key_rotation_seconds",
            "How often the leader makes a new signing key (--signing-key-rotation; controller only)",
            self.signing_key_rotation.clone(),
        );
        r.register(
            "resident_memory_bytes",
            "Resident memory of this process",
            self.resident_memory.clone(),
        );
    }

    /// Samples what the process reports of itself at a scrape: readiness,
    /// the keys it holds, its memory.
    pub fn observe(&self, ready: bool, degraded: bool, newest_key: Option<jiff::Timestamp>) {
        self.ready.set(i64::from(ready));
        self.degraded.set(i64::from(degraded));
        if let Some(created) = newest_key {
            let age = jiff::Timestamp::now().as_second() - created.as_second();
            self.signing_key_age.set(age.max(0));
        }
        let rss = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|status| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.split_whitespace().next()?.parse::<i64>().ok())
            });
        if let Some(kib) = rss {
            self.resident_memory.set(kib * 1024);
        }
    }

    /// What the controller and every replica's caches report.
    fn register_controller(&mut self) {
        let r = &mut self.registry;
        r.register(
            "reconciles",
            "ApiCredential reconciles by result",
            self.reconciles.clone(),
        );
        r.register(
            "reconcile_errors",
            "Failed reconciles by reason",
            self.reconcile_errors.clone(),
        );
        r.register(
            "reconcile_duration_seconds",
            "Time one reconcile takes",
            self.reconcile_duration.clone(),
        );
        r.register(
            "watch_lists",
            "Complete lists made by this replica's watches: one each at start, then one per relist (410 Gone)",
            self.watch_lists.clone(),
        );
        r.register(
            "audit_records",
            "Audit records by sink (log, webhook) and what became of them (written, delivered, failed after retries, dropped when the queue was full)",
            self.audit_records.clone(),
        );
        r.register(
            "credential_events",
            "What the controller did to credentials, by event reason (Created, Rotated, SecretReplaced, Unused, RestartFailed, ...)",
            self.credential_events.clone(),
        );
        r.register(
            "credentials",
            "Credentials this replica knows, by phase",
            self.credentials.clone(),
        );
        r.register(
            "credentials_unused",
            "Live credentials marked Unused (not used for --unused-after or spec.unusedAfter), by organization (namespace)",
            self.unused.clone(),
        );
    }

    /// What the public server reports.
    fn register_server(&mut self) {
        let r = &mut self.registry;
        r.register(
            "tokens_issued",
            "Access tokens issued",
            self.tokens_issued.clone(),
        );
        r.register(
            "tokens_refused",
            "Token requests refused, by OAuth error code",
            self.tokens_refused.clone(),
        );
        r.register(
            "api_auth_failures",
            "JSON:API requests refused for their access token, by reason",
            self.api_refused.clone(),
        );
        r.register(
            "http_requests",
            "HTTP requests by route and status",
            self.http_requests.clone(),
        );
        r.register(
            "http_request_duration_seconds",
            "HTTP request latency by route",
            self.http_duration.clone(),
        );
        r.register(
            "http_open_connections",
            "Connections open to the public listener",
            self.open_connections.clone(),
        );
        r.register(
            "usage_notes",
            "Credential uses noted for status.lastUsedAt, by what became of them (written, skipped within the interval, dropped when the writer was behind)",
            self.usage_notes.clone(),
        );
        r.register(
            "introspections",
            "Token introspections answered, by result (active, inactive)",
            self.introspections.clone(),
        );
        r.register(
            "introspections_refused",
            "Introspection requests refused, by OAuth error code",
            self.introspections_refused.clone(),
        );
        r.register(
            "revocations",
            "Token revocations answered, by result (revoked, unchanged)",
            self.revocations.clone(),
        );
        r.register(
            "revocations_refused",
            "Revocation requests refused, by OAuth error code",
            self.revocations_refused.clone(),
        );
        r.register(
            "token_reviews",
            "TokenReviews sent to the API server for ServiceAccount assertions whose signature held, by result (authenticated, refused, failed)",
            self.token_reviews.clone(),
        );
    }

    pub fn reconciled(&self, took: Duration, error: Option<&'static str>) {
        self.reconcile_duration.observe(took.as_secs_f64());
        let result = if error.is_some() { "error" } else { "ok" };
        self.reconciles.get_or_create(&ResultLabel { result }).inc();
        if let Some(reason) = error {
            self.reconcile_errors
                .get_or_create(&ReasonLabel { reason })
                .inc();
        }
    }

    pub fn api_refused(&self, reason: &'static str) {
        self.api_refused
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// Counts a served request under its route's fixed name (the routes
    /// name themselves: `token`, `api:requirements/{id}`, ...; `other` for
    /// what no route served).
    pub fn request(&self, route: &'static str, status: u16, took: Duration) {
        self.http_requests
            .get_or_create(&RequestLabels { route, status })
            .inc();
        self.http_duration
            .get_or_create(&RouteLabel { route })
            .observe(took.as_secs_f64());
    }

    /// The text exposition, with credential gauges read from `index`.
    pub fn render(&self, index: Option<&CredentialIndex>) -> String {
        if let Some(index) = index {
            for (phase, count) in index.count_by_phase() {
                self.credentials
                    .get_or_create(&PhaseLabel { phase })
                    .set(count as i64);
            }
            // Organizations gone since the last scrape leave the family.
            self.unused.clear();
            for (namespace, count) in index.unused_by_namespace() {
                self.unused
                    .get_or_create(&NamespaceLabel { namespace })
                    .set(count as i64);
            }
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_with_fixed_labels() {
        let m = Metrics::new();
        m.reconciled(Duration::from_millis(3), None);
        m.reconciled(Duration::from_millis(3), Some("write_secret"));
        m.request("token", 200, Duration::from_millis(1));
        m.request("other", 404, Duration::from_millis(1));
        m.tokens_issued.inc();
        let text = m.render(None);
        for line in [
            "catalio_reconciles_total{result=\"ok\"} 1",
            "catalio_reconcile_errors_total{reason=\"write_secret\"} 1",
            "catalio_http_requests_total{route=\"token\",status=\"200\"} 1",
            "catalio_http_requests_total{route=\"other\",status=\"404\"} 1",
            "catalio_tokens_issued_total 1",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
    }
}
