//! Reconciles `ApiCredential` objects into Secrets. [`plan`] decides; this
//! module reads the Secret, carries the plan out under one field manager and
//! publishes the plan's events.
//!
//! A missing Secret is created, never applied: a forced apply would take
//! over (and overwrite) a Secret someone else created between our read and
//! our write. An existing one is applied at the resourceVersion read, so a
//! Secret replaced meanwhile is not written either.

pub mod events;
pub mod plan;
pub mod restart;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt, future};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ObjectReference, Secret};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::core::PartialObjectMeta;
use kube::core::{DeserializeGuard, error_boundary::InvalidObject};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;
use tracing::{debug, info, warn};

use crate::audit::{self, Audit};
use crate::crd::{ApiCredential, ApiCredentialStatus, Phase};
use crate::metrics::{Metrics, ReasonLabel};
use crate::secret::{ClientSecret, HashKey, client_id_for_uid};
use events::{Events, Reporter};
use plan::{MANAGER, Plan, Reason, SecretAction, Settings};

/// How often a credential is looked at even when nothing announced a change.
const RESYNC: Duration = Duration::from_secs(600);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading Secret failed: {0}")]
    ReadSecret(#[source] kube::Error),
    #[error("writing Secret failed: {}", api_reason(.0))]
    WriteSecret(#[source] kube::Error),
    #[error("deleting Secret failed: {0}")]
    DeleteSecret(#[source] kube::Error),
    #[error("writing status failed: {0}")]
    WriteStatus(#[source] kube::Error),
    #[error("revoking the unused credential failed: {0}")]
    RevokeUnused(#[source] kube::Error),
    #[error("the secret hash key is not loaded yet")]
    NoHashKey,
    #[error(transparent)]
    Plan(#[from] plan::PlanError),
}

impl Error {
    /// A fixed label per variant, for metrics and event reasons.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::ReadSecret(_) => "read_secret",
            Error::WriteSecret(_) => "write_secret",
            Error::DeleteSecret(_) => "delete_secret",
            Error::WriteStatus(_) => "write_status",
            Error::RevokeUnused(_) => "revoke_unused",
            Error::NoHashKey => "no_hash_key",
            Error::Plan(e) => e.metric_label(),
        }
    }
}

/// Every [`Error::metric_label`], for metrics that start at zero.
pub const ERROR_LABELS: [&str; 8] = [
    "read_secret",
    "write_secret",
    "delete_secret",
    "write_status",
    "revoke_unused",
    "no_hash_key",
    "missing_uid",
    "random",
];

/// A failed Secret write is described by the API server's reason and code
/// only: a validation message could echo the data that was sent.
fn api_reason(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(status) => format!("{} ({})", status.reason, status.code),
        _ => "request failed".to_owned(),
    }
}

pub struct Context {
    pub client: Client,
    pub events: Events,
    pub settings: Settings,
    /// The secret hash key, once loaded.
    pub hash_key: Arc<HashKey>,
    pub metrics: Arc<Metrics>,
    /// Every lifecycle change goes to the audit trail as well as into an
    /// event.
    pub audit: Audit,
    /// The managed Secrets' metadata, as the controller's watch of them
    /// sees it (set by [`run`]).
    secrets: OnceLock<Store<PartialObjectMeta<Secret>>>,
    /// Per credential uid: what the last complete reconcile left behind.
    done: Mutex<HashMap<String, Done>>,
    /// Credentials whose Secret must be read from the API server even when
    /// the watch has not seen it: a create found one there.
    look_up: Mutex<HashSet<String>>,
}

/// The state a reconcile left the credential and its Secret in, and when
/// its plan wanted to look again.
struct Done {
    credential: Option<String>,
    secret: Option<String>,
    due: Instant,
}

impl Context {
    /// When neither the credential nor its Secret changed since the last
    /// complete reconcile (same resourceVersions: the event is the echo of
    /// our own status write, or a resync) and nothing is due yet, the time
    /// left until it is: the reconcile would read the Secret to decide
    /// nothing.
    fn unchanged(&self, cred: &ApiCredential) -> Option<Duration> {
        let uid = cred.metadata.uid.as_deref()?;
        let mut done = self.done.lock().unwrap_or_else(|e| e.into_inner());
        // Whatever happens next, this record is spent unless it holds.
        let last = done.remove(uid)?;
        let secret = self
            .secrets
            .get()?
            .get(&ObjectRef::new(cred.secret_name()).within(&cred.namespace().unwrap_or_default()));
        let secret = secret.and_then(|s| s.metadata.resource_version.clone());
        let now = Instant::now();
        let same = last.credential == cred.metadata.resource_version
            && last.secret == secret
            && now < last.due;
        if !same {
            return None;
        }
        let left = last.due - now;
        done.insert(uid.to_owned(), last);
        Some(left)
    }

    /// Whether the credential's Secret surely does not exist: the watch of
    /// managed Secrets has listed and has none of that name, and no create
    /// of it was refused.
    fn known_missing(&self, cred: &ApiCredential) -> bool {
        let Some(uid) = cred.metadata.uid.as_deref() else {
            return false;
        };
        if self
            .look_up
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(uid)
        {
            return false;
        }
        let Some(store) = self.secrets.get() else {
            return false;
        };
        let listed = store
            .wait_until_ready()
            .now_or_never()
            .is_some_and(|r| r.is_ok());
        let key = ObjectRef::new(cred.secret_name()).within(&cred.namespace().unwrap_or_default());
        listed && store.get(&key).is_none()
    }

    fn look_up(&self, cred: &ApiCredential) {
        if let Some(uid) = &cred.metadata.uid {
            let mut all = self.look_up.lock().unwrap_or_else(|e| e.into_inner());
            all.insert(uid.clone());
        }
    }

    fn remember(
        &self,
        uid: &str,
        credential: Option<String>,
        secret: Option<String>,
        wait: Duration,
    ) {
        let done = Done {
            credential,
            secret,
            due: Instant::now() + wait,
        };
        let mut all = self.done.lock().unwrap_or_else(|e| e.into_inner());
        all.insert(uid.to_owned(), done);
    }

    pub fn new(
        client: Client,
        settings: Settings,
        hash_key: Arc<HashKey>,
        metrics: Arc<Metrics>,
        audit: Audit,
    ) -> Self {
        let reporter = Reporter {
            controller: MANAGER.to_owned(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Self {
            events: Events::new(client.clone(), reporter),
            client,
            settings,
            hash_key,
            metrics,
            audit,
            secrets: OnceLock::new(),
            done: Mutex::default(),
            look_up: Mutex::default(),
        }
    }

    async fn publish(
        &self,
        cred: &ApiCredential,
        reason: &'static str,
        action: &str,
        warning: bool,
        note: String,
    ) {
        self.publish_related(cred, None, reason, action, warning, note)
            .await;
    }

    /// An event about `cred` that also concerns `related` (events about
    /// different related objects are separate series).
    async fn publish_related(
        &self,
        cred: &ApiCredential,
        related: Option<ObjectReference>,
        reason: &'static str,
        action: &str,
        warning: bool,
        note: String,
    ) {
        let event = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.to_owned(),
            note: Some(note),
            action: action.to_owned(),
            secondary: related,
        };
        self.metrics
            .credential_events
            .get_or_create(&ReasonLabel { reason })
            .inc();
        if let Err(e) = self.events.publish(&event, &cred.object_ref(&())).await {
            warn!(error = %e, credential = %cred.name_any(), "publishing event failed");
        }
    }
}

/// Runs the controller until `shutdown` resolves. `namespace` limits the
/// watch to one namespace.
pub async fn run(
    ctx: Arc<Context>,
    namespace: Option<&str>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let (credentials, secrets) = match namespace {
        Some(ns) => (
            Api::<DeserializeGuard<ApiCredential>>::namespaced(client.clone(), ns),
            Api::<PartialObjectMeta<Secret>>::namespaced(client, ns),
        ),
        None => (Api::all(client.clone()), Api::all(client)),
    };
    // Only the metadata of Secrets we manage: payloads stay out of memory.
    // Kept in a store, so a reconcile can tell that its Secret has not
    // changed since it last looked.
    let (store, writer) = reflector::store();
    let owned = watcher(
        secrets,
        watcher::Config::default().labels(&plan::managed_secret_selector()),
    )
    .backoff(crate::watch::backoff())
    .modify(keep_identity)
    .reflect(writer)
    .touched_objects();
    let _ = ctx.secrets.set(store);
    // The credentials' own store, as Controller::new would keep it, less
    // the managed fields.
    let (reader, writer) = reflector::store();
    let credentials = watcher(credentials, watcher::Config::default())
        .modify(forget_managed_fields)
        .reflect(writer)
        .applied_objects();
    let config = kube::runtime::controller::Config::default().concurrency(32);
    Controller::for_stream(credentials, reader)
        .with_config(config)
        .trigger_backoff(crate::watch::backoff())
        .owns_stream(owned)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| {
            if let Err(e) = result {
                debug!(error = %e, "reconcile did not complete");
            }
            future::ready(())
        })
        .await;
}

/// Keeps of a managed Secret what the reconcile reads: where it is, its
/// resourceVersion, and the credential that controls it. Anyone who may
/// create a Secret may give it our label, and fill its labels, annotations
/// and owner references: none of that stays in memory.
fn keep_identity(secret: &mut PartialObjectMeta<Secret>) {
    let meta = &mut secret.metadata;
    let controller = meta
        .owner_references
        .take()
        .into_iter()
        .flatten()
        .find(|o| o.controller == Some(true) && o.kind == ApiCredential::kind(&()));
    *meta = kube::api::ObjectMeta {
        name: meta.name.take(),
        namespace: meta.namespace.take(),
        uid: meta.uid.take(),
        resource_version: meta.resource_version.take(),
        owner_references: controller.map(|o| vec![o]),
        ..Default::default()
    };
}

/// Drops what the API server records of who wrote which field: nothing
/// here reads it, and it is often the larger part of what a store of
/// small objects holds.
fn forget_managed_fields(object: &mut impl Resource) {
    object.meta_mut().managed_fields = None;
}

async fn reconcile(
    guarded: Arc<DeserializeGuard<ApiCredential>>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let cred = match &guarded.0 {
        Ok(cred) => cred,
        Err(invalid) => return report_invalid(invalid, &ctx).await,
    };
    let namespace = cred.namespace().unwrap_or_default();
    let secrets = Api::<Secret>::namespaced(ctx.client.clone(), &namespace);
    let started = std::time::Instant::now();
    let result = apply(cred, &secrets, &ctx).await;
    ctx.metrics.reconciled(
        started.elapsed(),
        result.as_ref().err().map(Error::metric_label),
    );
    if let Err(e) = &result {
        ctx.publish(cred, "ReconcileFailed", "Reconcile", true, e.to_string())
            .await;
    }
    result
}

/// One reconcile: unless nothing changed since the last one, plans from
/// the credential and its Secret, then writes the Secret, rolls restart
/// targets, writes the status, publishes the events and, for a credential
/// unused too long with `revokeWhenUnused`, revokes it.
async fn apply(
    cred: &ApiCredential,
    secrets: &Api<Secret>,
    ctx: &Context,
) -> Result<Action, Error> {
    if let Some(wait) = ctx.unchanged(cred) {
        return Ok(Action::requeue(wait));
    }
    let hasher = ctx.hash_key.get().ok_or(Error::NoHashKey)?;
    // A Secret the watch of managed Secrets has never seen is not read:
    // the plan creates it, and a create refused because it exists after
    // all (someone else's Secret of that name) sends the next reconcile
    // to the API server.
    let secret = match ctx.known_missing(cred) {
        true => None,
        false => secrets
            .get_opt(cred.secret_name())
            .await
            .map_err(Error::ReadSecret)?,
    };
    let Plan {
        secret: action,
        mut status,
        notes,
        requeue_after,
        revoke_unused,
        restart,
    } = plan::plan(
        cred,
        secret.as_ref(),
        &ctx.settings,
        &hasher,
        Timestamp::now(),
        &mut ClientSecret::generate,
    )?;
    let Written::Done(secret_version) =
        write_secret(cred, secrets, secret.as_ref(), action, ctx).await?
    else {
        return Ok(Action::requeue(RACED));
    };
    // The Secret holds the new secret: roll the workloads that read it
    // once, then say so in the status.
    let retry_restarts = roll_targets(cred, restart.as_deref(), &mut status, ctx).await;
    let mut credential_version = cred.metadata.resource_version.clone();
    if plan::status_changed(cred.status.as_ref(), &status) {
        credential_version = write_status(cred, &status, ctx).await?;
    }
    publish_notes(cred, notes, ctx).await;
    if revoke_unused {
        revoke(cred, ctx).await?;
        return Ok(Action::requeue(RACED));
    }
    let requeue_after = match retry_restarts {
        true => Some(requeue_after.map_or(RESTART_RETRY, |d| d.min(RESTART_RETRY))),
        false => requeue_after,
    };
    let wait = requeue_after.map_or(RESYNC, |d| {
        // A moment past the deadline, so the next plan sees it passed.
        d.min(RESYNC) + Duration::from_millis(500)
    });
    if !retry_restarts && let Some(uid) = &cred.metadata.uid {
        ctx.remember(uid, credential_version, secret_version, wait);
    }
    Ok(Action::requeue(wait))
}

/// How soon a reconcile looks again when the Secret changed between its
/// read and its write, or after it revoked an unused credential.
const RACED: Duration = Duration::from_millis(200);

/// What became of the Secret write.
enum Written {
    /// Done: the Secret's resourceVersion now (none once deleted).
    Done(Option<String>),
    /// The Secret changed between our read and our write: look again.
    Raced,
}

/// The Secret changed (or appeared) between our read and our write.
fn raced(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

/// Carries out the plan's Secret action on `secret` (as read).
async fn write_secret(
    cred: &ApiCredential,
    secrets: &Api<Secret>,
    secret: Option<&Secret>,
    action: SecretAction,
    ctx: &Context,
) -> Result<Written, Error> {
    let version = secret.and_then(|s| s.metadata.resource_version.clone());
    match action {
        SecretAction::Keep => Ok(Written::Done(version)),
        SecretAction::Create(desired) => create_secret(cred, secrets, &desired, ctx).await,
        SecretAction::Update { secret, stray } => {
            update_secret(cred.secret_name(), secrets, &secret, &stray).await
        }
        SecretAction::Delete => {
            let uid = secret.and_then(|s| s.metadata.uid.clone());
            delete_secret(cred.secret_name(), secrets, uid).await
        }
    }
}

/// Creates the missing Secret; never takes over one someone else created
/// meanwhile (the next reconcile reads it from the API server).
async fn create_secret(
    cred: &ApiCredential,
    secrets: &Api<Secret>,
    desired: &Secret,
    ctx: &Context,
) -> Result<Written, Error> {
    let params = PostParams {
        field_manager: Some(MANAGER.to_owned()),
        ..Default::default()
    };
    match secrets.create(&params, desired).await {
        Ok(created) => Ok(Written::Done(created.metadata.resource_version)),
        Err(e) if raced(&e) => {
            ctx.look_up(cred);
            info!(credential = %cred.name_any(), secret = cred.secret_name(), "the Secret appeared before ours was created; looking again");
            Ok(Written::Raced)
        }
        Err(e) => Err(Error::WriteSecret(e)),
    }
}

/// Applies `desired` at the version read, then removes the `stray` keys
/// under `catalio.ai/` the operator did not write.
async fn update_secret(
    name: &str,
    secrets: &Api<Secret>,
    desired: &Secret,
    stray: &plan::Stray,
) -> Result<Written, Error> {
    let written = match secrets
        .patch(
            name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(desired),
        )
        .await
    {
        Ok(written) => written,
        Err(e) if raced(&e) => return Ok(Written::Raced),
        Err(e) => return Err(Error::WriteSecret(e)),
    };
    if stray.is_empty() {
        return Ok(Written::Done(written.metadata.resource_version));
    }
    let nulls = |keys: &[String]| -> serde_json::Map<String, serde_json::Value> {
        keys.iter()
            .map(|k| (k.clone(), serde_json::Value::Null))
            .collect()
    };
    let patch = json!({"metadata": {
        "resourceVersion": written.metadata.resource_version,
        "labels": nulls(&stray.labels),
        "annotations": nulls(&stray.annotations),
    }});
    let params = PatchParams {
        field_manager: Some(MANAGER.to_owned()),
        ..Default::default()
    };
    match secrets.patch(name, &params, &Patch::Merge(&patch)).await {
        Ok(cleaned) => Ok(Written::Done(cleaned.metadata.resource_version)),
        Err(e) if raced(&e) => Ok(Written::Raced),
        Err(e) => Err(Error::WriteSecret(e)),
    }
}

/// Deletes the Secret read (its uid), and no other of the same name.
async fn delete_secret(
    name: &str,
    secrets: &Api<Secret>,
    uid: Option<String>,
) -> Result<Written, Error> {
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid,
            resource_version: None,
        }),
        ..Default::default()
    };
    match secrets.delete(name, &params).await {
        Ok(_) => Ok(Written::Done(None)),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(Written::Done(None)),
        Err(e) => Err(Error::DeleteSecret(e)),
    }
}

/// Logs, records in the audit trail and publishes the plan's events.
async fn publish_notes(cred: &ApiCredential, notes: Vec<plan::Note>, ctx: &Context) {
    let (name, namespace) = (cred.name_any(), cred.namespace().unwrap_or_default());
    let client_id = cred
        .status
        .as_ref()
        .and_then(|s| s.client_id.clone())
        .or_else(|| cred.metadata.uid.as_deref().map(client_id_for_uid))
        .unwrap_or_default();
    for note in notes {
        info!(
            credential = %name,
            namespace = %namespace,
            reason = note.reason.as_str(),
            "{}", note.message
        );
        ctx.audit.record(audit::Event::Credential {
            change: note.reason.as_str(),
            org: &namespace,
            credential: &name,
            client_id: &client_id,
            message: &note.message,
        });
        ctx.publish(
            cred,
            note.reason.as_str(),
            note.action,
            note.reason.is_warning(),
            note.message,
        )
        .await;
    }
}

/// Revokes a credential unused too long, in the spec, where the API
/// server keeps anyone from undoing it; the next reconcile revokes as for
/// a manual revoke.
async fn revoke(cred: &ApiCredential, ctx: &Context) -> Result<(), Error> {
    let api =
        Api::<ApiCredential>::namespaced(ctx.client.clone(), &cred.namespace().unwrap_or_default());
    let params = PatchParams {
        field_manager: Some(MANAGER.to_owned()),
        ..Default::default()
    };
    let patch = json!({"spec": {"revoked": true}});
    api.patch(&cred.name_any(), &params, &Patch::Merge(&patch))
        .await
        .map_err(Error::RevokeUnused)?;
    Ok(())
}

/// How soon restart targets that could not be rolled are tried again.
const RESTART_RETRY: Duration = Duration::from_secs(30);

/// Rolls the credential's restart targets to the secret `to` (if the plan
/// says so), with an event per workload, and sets condition
/// `TargetsRestarted`; keeps the condition as it was when there is nothing
/// to roll. True when a target could not be rolled: `restartedFor` then
/// keeps its old value, so the next reconcile tries again.
async fn roll_targets(
    cred: &ApiCredential,
    to: Option<&str>,
    status: &mut ApiCredentialStatus,
    ctx: &Context,
) -> bool {
    if cred.spec.rotation.restart_targets.is_empty() || status.phase == Some(Phase::Revoked) {
        return false;
    }
    let old = cred.status.clone().unwrap_or_default();
    let Some(to) = to else {
        let kept = old.conditions.iter().filter(|c| c.type_ == plan::RESTARTED);
        status.conditions.extend(kept.cloned());
        return false;
    };
    let namespace = cred.namespace().unwrap_or_default();
    let outcome = restart::roll(&ctx.client, &namespace, cred, to).await;
    for (workload, reference) in &outcome.restarted {
        let note = format!("Restarted {workload} for client secret {to}");
        info!(credential = %cred.name_any(), namespace = %namespace, "{note}");
        let related = Some(reference.clone());
        ctx.publish_related(
            cred,
            related,
            "RestartedWorkload",
            "RestartWorkload",
            false,
            note,
        )
        .await;
    }
    let ok = outcome.failed.is_empty();
    let message = if ok {
        format!(
            "{} workload(s) run with client secret {to}",
            outcome.restarted.len() + outcome.current
        )
    } else {
        status.restarted_for = old.restarted_for.clone();
        let note = format!("Could not restart {}", outcome.failed.join("; "));
        warn!(credential = %cred.name_any(), namespace = %namespace, "{note}");
        ctx.publish(cred, "RestartFailed", "RestartWorkload", true, note.clone())
            .await;
        note
    };
    status.conditions.push(plan::restart_condition(
        &old,
        Timestamp::now(),
        cred,
        ok,
        message,
    ));
    !ok
}

/// Writes the status; the credential's resourceVersion after the write.
async fn write_status(
    cred: &ApiCredential,
    status: &ApiCredentialStatus,
    ctx: &Context,
) -> Result<Option<String>, Error> {
    let api =
        Api::<ApiCredential>::namespaced(ctx.client.clone(), &cred.namespace().unwrap_or_default());
    let patch = json!({
        "apiVersion": ApiCredential::api_version(&()),
        "kind": ApiCredential::kind(&()),
        "status": status,
    });
    api.patch_status(
        &cred.name_any(),
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(patch),
    )
    .await
    .map_err(Error::WriteStatus)
    .map(|written| written.metadata.resource_version)
}

/// An object the controller cannot parse gets a Failed status and a Warning,
/// and the controller carries on with the others.
async fn report_invalid(invalid: &InvalidObject, ctx: &Context) -> Result<Action, Error> {
    let name = invalid.metadata.name.clone().unwrap_or_default();
    let namespace = invalid.metadata.namespace.clone().unwrap_or_default();
    warn!(credential = %name, %namespace, error = %invalid.error, "cannot parse ApiCredential");
    let api = Api::<DeserializeGuard<ApiCredential>>::namespaced(ctx.client.clone(), &namespace);
    let message = format!("The object cannot be read: {}", invalid.error);
    let patch = json!({
        "apiVersion": ApiCredential::api_version(&()),
        "kind": ApiCredential::kind(&()),
        "status": {
            "phase": Phase::Failed,
            "observedGeneration": invalid.metadata.generation,
            "conditions": [{
                "type": "Ready",
                "status": "False",
                "reason": Reason::InvalidSpec.as_str(),
                "message": message,
                "observedGeneration": invalid.metadata.generation,
                "lastTransitionTime": Timestamp::now().to_string(),
            }],
        },
    });
    api.patch_status(
        &name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(patch),
    )
    .await
    .map_err(Error::WriteStatus)?;
    let reference = k8s_openapi::api::core::v1::ObjectReference {
        api_version: Some(ApiCredential::api_version(&()).into_owned()),
        kind: Some(ApiCredential::kind(&()).into_owned()),
        name: Some(name),
        namespace: Some(namespace),
        uid: invalid.metadata.uid.clone(),
        ..Default::default()
    };
    let event = Event {
        type_: EventType::Warning,
        reason: Reason::InvalidSpec.as_str().to_owned(),
        note: Some(message),
        action: "Reconcile".to_owned(),
        secondary: None,
    };
    if let Err(e) = ctx.events.publish(&event, &reference).await {
        warn!(error = %e, "publishing event failed");
    }
    Ok(Action::await_change())
}

fn error_policy(
    guarded: Arc<DeserializeGuard<ApiCredential>>,
    error: &Error,
    _ctx: Arc<Context>,
) -> Action {
    let name = guarded.0.as_ref().map(|c| c.name_any()).unwrap_or_default();
    warn!(credential = %name, reason = error.metric_label(), error = %error, "reconcile failed");
    Action::requeue(Duration::from_secs(5))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reconcile-error metric starts at zero for every label an error
    /// can have.
    #[test]
    fn every_error_label_is_listed() {
        let kube = || kube::Error::ReadEvents(std::io::Error::other("test"));
        let errors = [
            Error::ReadSecret(kube()),
            Error::WriteSecret(kube()),
            Error::DeleteSecret(kube()),
            Error::WriteStatus(kube()),
            Error::RevokeUnused(kube()),
            Error::NoHashKey,
            Error::Plan(plan::PlanError::MissingUid),
            Error::Plan(plan::PlanError::Random(getrandom::Error::UNSUPPORTED)),
        ];
        let labels: Vec<&str> = errors.iter().map(Error::metric_label).collect();
        assert_eq!(labels, ERROR_LABELS);
    }
}
