//! One handler per thing the console's page does, each as the user: the
//! kube client is the user's kubeconfig identity, so the API server's RBAC
//! decides, and a refusal is shown with the API server's own reason.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use serde::{Deserialize, Serialize};
use serde_json::json;
use warp::http::StatusCode;
use warp::reply::{Reply, Response};

use super::Console;
use super::view::{CREDENTIAL_EVENTS, Listing, Permissions};
use crate::crd::ApiCredential;
use crate::plugin::credentials::{
    read_secret, revoke as revoke_credential, rotate as rotate_credential, until_active,
};

/// How long a change may take the controller before the page is told.
const WAIT: Duration = Duration::from_secs(60);
/// A stream with nothing to say sends a blank line this often, which
/// also finds out that the page has gone.
const HEARTBEAT: Duration = Duration::from_secs(15);

/// A refusal or failure, as the page shows it.
#[derive(Debug)]
pub struct Failure {
    status: StatusCode,
    message: String,
}

impl Failure {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Failure {
            status,
            message: message.into(),
        }
    }
}

/// The API server's refusal keeps its code and reason ("apicredentials is
/// forbidden: User "x" cannot create ..."); anything else is a 502.
impl From<kube::Error> for Failure {
    fn from(e: kube::Error) -> Self {
        match e {
            kube::Error::Api(status) => Failure::new(
                StatusCode::from_u16(status.code).unwrap_or(StatusCode::BAD_GATEWAY),
                status.message.clone(),
            ),
            e => Failure::new(StatusCode::BAD_GATEWAY, e.to_string()),
        }
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        match e.downcast::<kube::Error>() {
            Ok(kube) => kube.into(),
            Err(e) => Failure::new(StatusCode::BAD_GATEWAY, format!("{e:#}")),
        }
    }
}

impl Reply for Failure {
    fn into_response(self) -> Response {
        let body = warp::reply::json(&json!({"error": self.message}));
        warp::reply::with_status(body, self.status).into_response()
    }
}

pub type Answer = Result<Response, Failure>;

fn json(value: &impl Serialize) -> Answer {
    Ok(warp::reply::json(value).into_response())
}

fn boxed<T>(items: Vec<T>) -> Vec<Box<T>> {
    items.into_iter().map(Box::new).collect()
}

/// Who the user is and where the page starts.
pub async fn session(console: Arc<Console>) -> Answer {
    let review = Api::<SelfSubjectReview>::all(console.client.clone())
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .ok();
    let user = review
        .and_then(|r| r.status?.user_info?.username)
        .unwrap_or_default();
    json(&json!({
        "namespace": console.namespace,
        "context": console.context,
        "user": user,
    }))
}

/// The organization's credentials, their events and what the user may do.
pub async fn list(console: Arc<Console>, namespace: String) -> Answer {
    let client = &console.client;
    let can = Permissions::of(client, &namespace).await;
    let creds = Api::<ApiCredential>::namespaced(client.clone(), &namespace)
        .list(&ListParams::default())
        .await?;
    let events = match can.list_events {
        true => {
            let selector = ListParams::default().fields(CREDENTIAL_EVENTS);
            let events = Api::<Event>::namespaced(client.clone(), &namespace);
            events.list(&selector).await?.items
        }
        false => Vec::new(),
    };
    json(&Listing::new(
        &namespace,
        can,
        &boxed(creds.items),
        &boxed(events),
    ))
}

/// The listing as newline-delimited JSON: once when the watches have
/// listed, then again whenever a credential or one of their events
/// changes, from whoever changed it.
pub fn stream(console: Arc<Console>, namespace: String) -> Answer {
    let (mut tx, rx) = futures::channel::mpsc::channel::<Bytes>(4);
    let open = console.activity.stream_opened();
    tokio::spawn(async move {
        let _open = open;
        let client = console.client.clone();
        let can = Permissions::of(&client, &namespace).await;
        let (creds, creds_writer) = reflector::store::<ApiCredential>();
        let (events, events_writer) = reflector::store::<Event>();
        let cred_changes = reflector(
            creds_writer,
            watcher(
                Api::namespaced(client.clone(), &namespace),
                watcher::Config::default(),
            ),
        )
        .default_backoff()
        .map(|e| (true, changed(e)))
        .boxed();
        let event_changes = match can.list_events {
            true => reflector(
                events_writer,
                watcher(
                    Api::namespaced(client.clone(), &namespace),
                    watcher::Config::default().fields(CREDENTIAL_EVENTS),
                ),
            )
            .default_backoff()
            .map(|e| (false, changed(e)))
            .boxed(),
            false => futures::stream::pending().boxed(),
        };
        let mut changes = futures::stream::select(cred_changes, event_changes).ready_chunks(256);
        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        let mut sent: Option<Listing> = None;
        // Nothing is shown before the credentials are listed completely.
        let mut listed = false;
        loop {
            let line = tokio::select! {
                batch = changes.next() => {
                    let Some(batch) = batch else { break };
                    listed |= batch.iter().any(|(of_creds, c)| *of_creds && *c == Ok(true));
                    if let Some(error) = batch.iter().find_map(|(_, c)| c.clone().err()) {
                        Bytes::from(format!("{}\n", json!({"error": error})))
                    } else if listed {
                        let listing = Listing::new(&namespace, can, &creds.state(), &events.state());
                        if sent.as_ref() == Some(&listing) {
                            continue;
                        }
                        let line = format!("{}\n", serde_json::to_string(&listing).unwrap_or_default());
                        sent = Some(listing);
                        Bytes::from(line)
                    } else {
                        continue;
                    }
                }
                _ = heartbeat.tick() => Bytes::from_static(b"\n"),
            };
            if tx.send(line).await.is_err() {
                break;
            }
        }
    });
    let body = warp::reply::stream(rx.map(Ok::<_, Infallible>));
    Ok(warp::reply::with_header(body, "content-type", "application/x-ndjson").into_response())
}

/// Whether a watch event changes what the page shows (its first list does
/// once complete), or the watch's error.
fn changed<K>(event: Result<watcher::Event<K>, watcher::Error>) -> Result<bool, String> {
    match event {
        Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => Ok(false),
        Ok(_) => Ok(true),
        Err(e) => Err(format!("watching: {e}")),
    }
}

/// A new secret, shown once: the page displays it, offers to copy it, and
/// forgets it when closed. Nothing here keeps it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ShownOnce {
    client_id: String,
    client_secret: String,
    token_url: String,
    curl: String,
}

/// What a create or a rotation answers: the credential, and its new
/// secret when the user may read Secrets (else why not).
async fn shown_once(console: &Console, namespace: &str, cred: &ApiCredential) -> Answer {
    let name = kube::ResourceExt::name_any(cred);
    match read_secret(&console.client, namespace, cred).await {
        Ok(s) => {
            let curl = format!(
                "curl -s -u '{}:{}' -d grant_type=client_credentials {}",
                s.client_id, s.client_secret, s.token_url
            );
            let once = ShownOnce {
                client_id: s.client_id,
                client_secret: s.client_secret,
                token_url: s.token_url,
                curl,
            };
            json(&json!({"name": name, "shownOnce": once}))
        }
        Err(e) => {
            let reason = Failure::from(e).message;
            json(&json!({"name": name, "shownOnce": null, "why": reason}))
        }
    }
}

/// What the create form sends.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateRequest {
    name: String,
    display_name: String,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    rotation_every: Option<String>,
    #[serde(default)]
    grace_period: Option<String>,
    #[serde(default)]
    restart_targets: Vec<serde_json::Value>,
}

pub async fn create(console: Arc<Console>, namespace: String, form: CreateRequest) -> Answer {
    let mut spec = json!({"displayName": form.display_name});
    if !form.scopes.is_empty() {
        spec["scopes"] = json!(form.scopes);
    }
    let mut rotation = json!({});
    let optional = [
        ("every", form.rotation_every),
        ("gracePeriod", form.grace_period),
    ];
    for (key, value) in optional {
        if let Some(value) = value.filter(|v| !v.is_empty()) {
            rotation[key] = json!(value);
        }
    }
    if !form.restart_targets.is_empty() {
        rotation["restartTargets"] = json!(form.restart_targets);
    }
    spec["rotation"] = rotation;
    let object = json!({
        "apiVersion": "catalio.ai/v1",
        "kind": "ApiCredential",
        "metadata": {"name": form.name},
        "spec": spec,
    });
    let cred: ApiCredential = serde_json::from_value(object)
        .map_err(|e| Failure::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    let creds = Api::<ApiCredential>::namespaced(console.client.clone(), &namespace);
    let created = creds.create(&PostParams::default(), &cred).await?;
    let name = kube::ResourceExt::name_any(&created);
    let active = until_active(&creds, &name, created.metadata.generation, 0, WAIT).await?;
    shown_once(&console, &namespace, &active).await
}

/// What the rotate dialog sends: the grace period for the old secret
/// (`0s`: it stops at once), or none to keep the credential's own.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RotateRequest {
    #[serde(default)]
    grace_period: Option<String>,
}

pub async fn rotate(
    console: Arc<Console>,
    namespace: String,
    name: String,
    form: RotateRequest,
) -> Answer {
    let creds = Api::<ApiCredential>::namespaced(console.client.clone(), &namespace);
    let grace = form.grace_period.filter(|g| !g.is_empty());
    let rotated = rotate_credential(&creds, &name, grace.as_deref(), WAIT).await?;
    shown_once(&console, &namespace, &rotated).await
}

/// What the revoke dialog sends: the credential's name, typed.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeRequest {
    confirm: String,
}

pub async fn revoke(
    console: Arc<Console>,
    namespace: String,
    name: String,
    form: RevokeRequest,
) -> Answer {
    if form.confirm != name {
        return Err(Failure::new(
            StatusCode::BAD_REQUEST,
            format!("type {name} to revoke it; revoking cannot be undone"),
        ));
    }
    let creds = Api::<ApiCredential>::namespaced(console.client.clone(), &namespace);
    revoke_credential(&creds, &name, WAIT).await?;
    json(&json!({"name": name, "revoked": true}))
}

pub async fn delete(console: Arc<Console>, namespace: String, name: String) -> Answer {
    let creds = Api::<ApiCredential>::namespaced(console.client.clone(), &namespace);
    creds.delete(&name, &DeleteParams::default()).await?;
    json(&json!({"name": name, "deleted": true}))
}
