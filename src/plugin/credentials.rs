//! What the plugin's commands and the console do to credentials, each as
//! the user's kubeconfig identity allows: rotate or revoke and wait for
//! the controller to finish, and read a credential's Secret once.

use std::time::Duration;

use anyhow::{Context, bail};
use futures::TryStreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::crd::{ApiCredential, ClientSecretMode, Phase};
use crate::duration;

pub async fn get(
    creds: &Api<ApiCredential>,
    name: &str,
    namespace: &str,
) -> anyhow::Result<ApiCredential> {
    creds
        .get_opt(name)
        .await?
        .with_context(|| format!("no ApiCredential {name} in namespace {namespace}"))
}

/// The Ready condition's message, for errors.
fn ready_message(cred: &ApiCredential) -> String {
    cred.status
        .iter()
        .flat_map(|s| &s.conditions)
        .find(|c| c.type_ == "Ready")
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

/// Watches `name` until `done` says it is finished (`Some(Ok)`) or failed
/// (`Some(Err)`), or `timeout` passes. The watch's first event is the
/// object as it is, so a change made before the watch began is seen too.
pub async fn until<T>(
    creds: &Api<ApiCredential>,
    name: &str,
    timeout: Duration,
    what: &str,
    done: impl Fn(&ApiCredential) -> Option<anyhow::Result<T>>,
) -> anyhow::Result<T> {
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let wait = async {
        let mut changes = std::pin::pin!(watcher(creds.clone(), config).applied_objects());
        while let Some(cred) = changes.try_next().await? {
            if let Some(result) = done(&cred) {
                return result;
            }
        }
        bail!("{name}: the watch ended before {what}")
    };
    match tokio::time::timeout(timeout, wait).await {
        Ok(result) => result,
        Err(_) => bail!(
            "{name}: {what} did not happen within {}",
            duration::format(timeout)
        ),
    }
}

/// Waits until the controller has acted on `generation` of `name` and it
/// is Active with `counter` rotations: the credential as it is then.
pub async fn until_active(
    creds: &Api<ApiCredential>,
    name: &str,
    generation: Option<i64>,
    counter: i64,
    timeout: Duration,
) -> anyhow::Result<ApiCredential> {
    until(creds, name, timeout, "the new secret", |c| {
        let status = c.status.as_ref()?;
        if status.observed_generation < generation {
            return None;
        }
        match status.phase {
            Some(Phase::Failed) => {
                Some(Err(anyhow::anyhow!("{name} failed: {}", ready_message(c))))
            }
            Some(Phase::Active)
                if status.rotation_counter.unwrap_or(0) == counter
                    && status.secret_hash.is_some() =>
            {
                Some(Ok(c.clone()))
            }
            _ => None,
        }
    })
    .await
}

/// Raises the rotation counter (at the version read, so two rotations
/// at once are two), with `grace` as the new grace period if given, and
/// waits for the new secret: the credential then.
pub async fn rotate(
    creds: &Api<ApiCredential>,
    name: &str,
    grace: Option<&str>,
    timeout: Duration,
) -> anyhow::Result<ApiCredential> {
    let cred = creds.get(name).await?;
    if cred.spec.revoked {
        bail!("{name} is revoked: it has no secret to rotate");
    }
    if cred.spec.client_secret == ClientSecretMode::Disabled {
        bail!("{name} has no client secret (clientSecret: Disabled): nothing to rotate");
    }
    let counter = cred.spec.rotation.counter + 1;
    let mut rotation = json!({"counter": counter});
    if let Some(grace) = grace {
        rotation["gracePeriod"] = json!(grace);
    }
    let patch = json!({
        "metadata": {"resourceVersion": cred.resource_version()},
        "spec": {"rotation": rotation},
    });
    let patched = creds
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| match e {
            kube::Error::Api(s) if s.code == 409 => {
                anyhow::anyhow!("{name} changed while rotating; nothing was rotated, try again")
            }
            e => e.into(),
        })?;
    until_active(creds, name, patched.metadata.generation, counter, timeout).await
}

pub async fn revoke(
    creds: &Api<ApiCredential>,
    name: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    let patch = json!({"spec": {"revoked": true}});
    creds
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    until(creds, name, timeout, "the revocation", |c| {
        let phase = c.status.as_ref()?.phase?;
        (phase == Phase::Revoked).then_some(Ok(()))
    })
    .await
}

/// What a credential's Secret holds.
pub struct SecretFields {
    pub client_id: String,
    pub client_secret: String,
    pub token_url: String,
}

/// Reads the credential's Secret, once, with the caller's rights.
pub async fn read_secret(
    client: &Client,
    namespace: &str,
    cred: &ApiCredential,
) -> anyhow::Result<SecretFields> {
    let name = cred.name_any();
    let secret_name = cred.secret_name();
    let secret = Api::<Secret>::namespaced(client.clone(), namespace)
        .get_opt(secret_name)
        .await?
        .with_context(|| format!("{name}: no Secret {secret_name} yet"))?;
    let data = secret.data.unwrap_or_default();
    let field = |key: &str| {
        data.get(key)
            .and_then(|b| String::from_utf8(b.0.clone()).ok())
            .with_context(|| format!("Secret {secret_name} has no {key}"))
    };
    Ok(SecretFields {
        client_id: field("client_id")?,
        client_secret: field("client_secret")?,
        token_url: field("token_url")?,
    })
}
