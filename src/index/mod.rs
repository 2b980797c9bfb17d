//! In-memory state built from watches, read by the HTTP side without I/O.

pub mod credentials;
pub mod resources;

use std::sync::Arc;

use futures::StreamExt;
use kube::api::DynamicObject;
use kube::core::DeserializeGuard;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use tracing::warn;

use crate::crd::ApiCredential;
use crate::crd::registry::ResourceType;
use crate::watch::{self, Tracker};
pub use credentials::{CredentialEntry, CredentialIndex, SecretSlot, service_account_sid};
use resources::{Entry, ResourceStore};

/// Keeps `index` in step with the `ApiCredential` objects `api` sees
/// (`namespace`, or all of them for `None`), until the watch ends. Objects that cannot be parsed are dropped from the index,
/// so their clients are refused rather than served stale data.
pub async fn run_credential_watch(
    api: Api<DeserializeGuard<ApiCredential>>,
    namespace: Option<String>,
    index: Arc<CredentialIndex>,
    mut tracker: Tracker,
) {
    // Entries, not objects: a relist of every credential holds only what
    // the index keeps of each, never the objects whole.
    let mut relist: Vec<CredentialEntry> = Vec::new();
    let mut events =
        std::pin::pin!(watcher(api, watcher::Config::default()).backoff(watch::backoff()));
    while let Some(item) = events.next().await {
        let Some(event) = tracker.on(item) else {
            continue;
        };
        match event {
            watcher::Event::Init => relist.clear(),
            watcher::Event::InitApply(DeserializeGuard(Ok(cred))) => {
                relist.extend(CredentialEntry::from_object(&cred));
            }
            watcher::Event::InitDone => {
                index.replace_scope(namespace.as_deref(), relist.drain(..));
                tracker.listed();
            }
            watcher::Event::Apply(DeserializeGuard(Ok(cred))) => index.upsert(&cred),
            watcher::Event::Delete(DeserializeGuard(Ok(cred))) => {
                index.remove_uid(&cred.uid().unwrap_or_default());
            }
            watcher::Event::InitApply(DeserializeGuard(Err(bad)))
            | watcher::Event::Apply(DeserializeGuard(Err(bad)))
            | watcher::Event::Delete(DeserializeGuard(Err(bad))) => {
                warn!(
                    credential = bad.metadata.name.as_deref().unwrap_or_default(),
                    error = %bad.error,
                    "ignoring ApiCredential that cannot be parsed"
                );
                if let Some(uid) = &bad.metadata.uid {
                    index.remove_uid(uid);
                }
            }
        }
    }
}

/// Keeps `store` in step with the objects of `ty` that `api` sees (in
/// `namespace`, or everywhere for `None`); `watch` identifies this watch for
/// readiness. An object that does not fit the type's declaration is left
/// out and logged, and never stops the others.
pub async fn run_resource_watch(
    api: Api<DynamicObject>,
    ty: &'static ResourceType,
    watch: usize,
    namespace: Option<String>,
    store: Arc<ResourceStore>,
    mut tracker: Tracker,
) {
    let read = |obj: &DynamicObject| match Entry::from_object(ty, obj) {
        Ok(entry) => Some(entry),
        Err(e) => {
            warn!(kind = ty.kind, name = obj.name_any(), error = %e, "leaving out an object the API cannot serve");
            None
        }
    };
    let mut relist: Vec<(String, Entry)> = Vec::new();
    let mut events =
        std::pin::pin!(watcher(api, watcher::Config::default()).backoff(watch::backoff()));
    while let Some(item) = events.next().await {
        let Some(event) = tracker.on(item) else {
            continue;
        };
        match event {
            watcher::Event::Init => relist.clear(),
            watcher::Event::InitApply(obj) => relist.extend(read(&obj)),
            watcher::Event::InitDone => {
                store.replace(watch, ty, namespace.as_deref(), relist.drain(..));
                tracker.listed();
            }
            watcher::Event::Apply(obj) => match read(&obj) {
                Some((ns, entry)) => store.upsert(ty, &ns, entry),
                None => store.remove(ty, &obj.namespace().unwrap_or_default(), &obj.name_any()),
            },
            watcher::Event::Delete(obj) => {
                store.remove(ty, &obj.namespace().unwrap_or_default(), &obj.name_any());
            }
        }
    }
}
