//! The signing-key Secret in the operator's namespace: created when absent,
//! rotated by [`keys::plan_keys`], and watched by every replica. Beside the
//! signing keys it holds the key of the client secrets' hashes, made once
//! and never rotated: every stored hash depends on it.
//!
//! Writes use optimistic concurrency (create, or replace at the read
//! resourceVersion), so replicas that start together or rotate at the same
//! moment agree on one key list: the loser of a race rereads and finds
//! nothing left to do.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use tracing::{info, warn};

use super::KeyStore;
use super::keys::{self, KeyRing, RotationPolicy, StoredKey};
use crate::controller::plan::{MANAGER, keys as labels};
use crate::owner;
use crate::secret::SecretHasher;
use crate::watch::Tracker;

/// The key under which the Secret stores the key list (JSON).
pub const DATA_KEY: &str = "keys.json";
/// The key under which the Secret stores the secret hash key (raw bytes).
pub const HASH_KEY: &str = "secret-hash-key";

#[derive(Debug, thiserror::Error)]
pub enum KeyStoreError {
    #[error("reading the signing-key Secret failed: {0}")]
    Read(#[source] kube::Error),
    #[error("writing the signing-key Secret failed: {0}")]
    Write(#[source] kube::Error),
    #[error("the signing-key Secret cannot be parsed: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Key(#[from] keys::KeyError),
    #[error("the signing-key Secret kept changing underneath")]
    Contended,
}

fn parse(secret: &Secret) -> Result<Vec<StoredKey>, KeyStoreError> {
    let Some(raw) = secret.data.as_ref().and_then(|d| d.get(DATA_KEY)) else {
        return Ok(Vec::new());
    };
    serde_json::from_slice(&raw.0).map_err(|e| KeyStoreError::Corrupt(e.to_string()))
}

fn hash_key(secret: &Secret) -> Option<&[u8]> {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(HASH_KEY))
        .map(|k| k.0.as_slice())
}

fn with_keys(mut secret: Secret, keys: &[StoredKey]) -> Result<Secret, KeyStoreError> {
    let json = serde_json::to_vec(keys).map_err(|e| KeyStoreError::Corrupt(e.to_string()))?;
    secret
        .data
        .get_or_insert_with(BTreeMap::new)
        .insert(DATA_KEY.to_owned(), ByteString(json));
    Ok(secret)
}

/// Brings the Secret's key list in line with `policy`. Returns whether it
/// wrote. A Secret that cannot be parsed is left alone: overwriting it would
/// throw away keys that tokens in circulation were signed with.
pub async fn maintain(
    api: &Api<Secret>,
    name: &str,
    policy: &RotationPolicy,
    owner: Option<&OwnerReference>,
) -> Result<bool, KeyStoreError> {
    for _ in 0..5 {
        let existing = api.get_opt(name).await.map_err(KeyStoreError::Read)?;
        let stored = existing
            .as_ref()
            .map(parse)
            .transpose()?
            .unwrap_or_default();
        let hash_key = match existing.as_ref().and_then(hash_key) {
            Some(key) if key.len() == SecretHasher::KEY_BYTES => None,
            // Replacing a key that is there would break every stored hash.
            Some(_) => {
                return Err(KeyStoreError::Corrupt(format!(
                    "{HASH_KEY} is not {} bytes",
                    SecretHasher::KEY_BYTES
                )));
            }
            None => Some(SecretHasher::generate_key().map_err(|_| keys::KeyError::Generate)?),
        };
        let planned = keys::plan_keys(&stored, policy, Timestamp::now())?;
        let unowned = existing
            .as_ref()
            .is_some_and(|s| owner::missing(&s.metadata, owner));
        if planned.is_none() && hash_key.is_none() && !unowned {
            return Ok(false);
        }
        let next = planned.unwrap_or(stored);
        let fill = |mut secret: Secret| -> Result<Secret, KeyStoreError> {
            owner::adopt(&mut secret.metadata, owner);
            let mut secret = with_keys(secret, &next)?;
            if let Some(key) = hash_key {
                secret
                    .data
                    .get_or_insert_with(BTreeMap::new)
                    .insert(HASH_KEY.to_owned(), ByteString(key.to_vec()));
            }
            Ok(secret)
        };
        let result = match existing {
            Some(secret) => {
                api.replace(name, &PostParams::default(), &fill(secret)?)
                    .await
            }
            None => {
                let secret = Secret {
                    metadata: ObjectMeta {
                        name: Some(name.to_owned()),
                        labels: Some(BTreeMap::from([(
                            labels::MANAGED_BY.to_owned(),
                            MANAGER.to_owned(),
                        )])),
                        ..Default::default()
                    },
                    type_: Some("Opaque".to_owned()),
                    ..Default::default()
                };
                api.create(&PostParams::default(), &fill(secret)?).await
            }
        };
        match result {
            Ok(_) => {
                let kids: Vec<_> = next.iter().map(|k| k.kid.as_str()).collect();
                info!(secret = name, keys = ?kids, "signing keys updated");
                return Ok(true);
            }
            // Another replica wrote first: read again and re-plan.
            Err(kube::Error::Api(s)) if s.code == 409 => continue,
            Err(e) => return Err(KeyStoreError::Write(e)),
        }
    }
    Err(KeyStoreError::Contended)
}

/// Runs [`maintain`] now and then forever, logging failures.
pub async fn run_maintenance(
    api: Api<Secret>,
    name: String,
    policy: RotationPolicy,
    owner: Option<OwnerReference>,
) {
    let every = (policy.publish_delay / 2).clamp(Duration::from_secs(1), Duration::from_secs(60));
    loop {
        if let Err(e) = maintain(&api, &name, &policy, owner.as_ref()).await {
            warn!(secret = %name, error = %e, "signing-key maintenance failed");
        }
        tokio::time::sleep(every).await;
    }
}

/// Keeps `store` loaded with the keys in the Secret until the watch ends.
pub async fn watch(api: Api<Secret>, name: String, store: Arc<KeyStore>, mut tracker: Tracker) {
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut events = std::pin::pin!(
        watcher(api, config)
            .backoff(crate::watch::backoff())
            .applied_objects()
    );
    while let Some(item) = events.next().await {
        let Some(secret) = tracker.on(item) else {
            continue;
        };
        match parse(&secret) {
            Ok(stored) => {
                let (ring, errors) = KeyRing::load(&stored, hash_key(&secret));
                for e in errors {
                    warn!(secret = %name, error = %e, "skipping signing key");
                }
                store.replace(ring);
            }
            Err(e) => warn!(secret = %name, error = %e, "keeping the previous signing keys"),
        }
    }
}
