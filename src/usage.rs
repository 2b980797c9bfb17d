//! Records when a credential was last used (`status.lastUsedAt`): a token
//! issued, or an API call its token authenticated. Never on the request's
//! path: a use only drops a note in a bounded channel, and a background task
//! writes at most once per credential per interval (a minute by default),
//! skipping uses in an interval some replica has recorded already.

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
use crate::index::CredentialEntry;
use crate::metrics::{Metrics, ResultLabel};

/// Field manager of the lastUsedAt writes, separate from the controller's so
/// neither removes the other's fields.
pub const USAGE_MANAGER: &str = "catalio-operator-usage";

#[derive(Clone)]
pub struct UsageRecorder {
    tx: mpsc::Sender<(String, String)>,
    metrics: Arc<Metrics>,
    /// What lastUsedAt is rounded down to, and how often it is written.
    interval: Duration,
}

fn noted(metrics: &Metrics, result: &'static str) {
    metrics
        .usage_notes
        .get_or_create(&ResultLabel { result })
        .inc();
}

/// `at`, rounded down to whole `interval`s (at least a second): lastUsedAt
/// finer than it is written would only add writes.
fn truncated(at: Timestamp, interval: Duration) -> Timestamp {
    let step = i64::try_from(interval.as_secs()).unwrap_or(i64::MAX).max(1);
    Timestamp::from_second(at.as_second() - at.as_second().rem_euclid(step)).unwrap_or(at)
}

impl UsageRecorder {
    /// Notes a use of `credential`: a token issued, or an API call it
    /// authenticated. Never waits: when the writer is behind, the note is
    /// dropped (a later use will be recorded). A use in an interval some
    /// replica has already recorded (as this replica's watch saw it) is
    /// skipped here, so replicas rarely write the same interval twice.
    pub fn record(&self, credential: &CredentialEntry) {
        if credential
            .last_used_at
            .is_some_and(|at| at >= truncated(Timestamp::now(), self.interval))
        {
            noted(&self.metrics, "skipped");
            return;
        }
        let key = (credential.namespace.clone(), credential.name.clone());
        if self.tx.try_send(key).is_err() {
            noted(&self.metrics, "dropped");
        }
    }

    /// A recorder whose notes go to the returned receiver, for tests.
    pub fn detached(metrics: Arc<Metrics>) -> (Self, mpsc::Receiver<(String, String)>) {
        let (tx, rx) = mpsc::channel(1024);
        (
            Self {
                tx,
                metrics,
                interval: Duration::from_secs(60),
            },
            rx,
        )
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
                let minute = truncated(Timestamp::now(), interval);
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
        Self {
            tx,
            metrics,
            interval,
        }
    }
}
