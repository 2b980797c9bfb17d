//! Records when a credential was last used (`status.lastUsedAt`) without
//! touching the token response's path: issuance only drops a note in a
//! bounded channel, and a background task writes at most once per credential
//! per interval.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, Resource};
use serde_json::json;
use tokio::sync::mpsc;
use tracing::warn;

use crate::crd::ApiCredential;
use crate::metrics::{Metrics, ResultLabel};

/// Field manager of the lastUsedAt writes, separate from the controller's so
/// neither removes the other's fields.
pub const USAGE_MANAGER: &str = "catalio-operator-usage";

#[derive(Clone)]
pub struct UsageRecorder {
    tx: mpsc::Sender<(String, String)>,
    metrics: Arc<Metrics>,
}

fn noted(metrics: &Metrics, result: &'static str) {
    metrics
        .usage_notes
        .get_or_create(&ResultLabel { result })
        .inc();
}

impl UsageRecorder {
    /// Notes a use. Never waits: when the writer is behind, the note is
    /// dropped (a later use will be recorded).
    pub fn record(&self, namespace: &str, name: &str) {
        if self
            .tx
            .try_send((namespace.to_owned(), name.to_owned()))
            .is_err()
        {
            noted(&self.metrics, "dropped");
        }
    }

    /// Starts the writer task.
    pub fn spawn(client: Client, interval: Duration, metrics: Arc<Metrics>) -> Self {
        let (tx, mut rx) = mpsc::channel::<(String, String)>(1024);
        let counted = metrics.clone();
        tokio::spawn(async move {
            let metrics = counted;
            let mut written: HashMap<(String, String), Instant> = HashMap::new();
            while let Some(key) = rx.recv().await {
                if written.get(&key).is_some_and(|at| at.elapsed() < interval) {
                    noted(&metrics, "skipped");
                    continue;
                }
                written.retain(|_, at| at.elapsed() < interval);
                written.insert(key.clone(), Instant::now());
                let (namespace, name) = key;
                let now = Timestamp::now();
                // To the minute: finer would only add writes.
                let minute =
                    Timestamp::from_second(now.as_second() - now.as_second() % 60).unwrap_or(now);
                let patch = json!({
                    "apiVersion": ApiCredential::api_version(&()),
                    "kind": ApiCredential::kind(&()),
                    "status": {"lastUsedAt": minute.to_string()},
                });
                let api = Api::<ApiCredential>::namespaced(client.clone(), &namespace);
                if let Err(e) = api
                    .patch_status(
                        &name,
                        &PatchParams::apply(USAGE_MANAGER).force(),
                        &Patch::Apply(patch),
                    )
                    .await
                {
                    warn!(credential = %name, %namespace, error = %e, "recording lastUsedAt failed");
                }
                noted(&metrics, "written");
            }
        });
        Self { tx, metrics }
    }
}
