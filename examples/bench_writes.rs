//! The plain client `bench/credentials.sh` measures the operator against.
//!
//!   bench_writes create NAMESPACE N
//!     creates N ApiCredentials (32 requests in flight) and prints the
//!     seconds it took;
//!   bench_writes baseline NAMESPACE N
//!     does, for N credentials, the writes the operator does for each, as
//!     fast as the API server takes them (32 in flight, no watch, nothing
//!     decided): create the ApiCredential, create its Secret, apply its
//!     status, create an event; prints the seconds;
//!   bench_writes wait NAMESPACE N
//!     returns once N credentials are Active, as one watch sees them;
//!   bench_writes latency BASE NAMESPACE N
//!     for N credentials (rotation without grace for the first half,
//!     revocation for the second), the time from the patch's answer to
//!     the token endpoint at BASE refusing the old secret; prints one
//!     millisecond figure per line.
//!
//! Uses the kubeconfig (`KUBECONFIG`) like kubectl.

use std::time::{Duration, Instant};

use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, Resource};
use serde_json::json;

use catalio_operator::crd::{ApiCredential, ApiCredentialSpec};

const IN_FLIGHT: usize = 32;

fn credential(i: usize) -> ApiCredential {
    let spec: ApiCredentialSpec =
        serde_json::from_value(json!({"displayName": format!("Credential {i}")}))
            .expect("a valid spec");
    ApiCredential::new(&format!("cred-{i}"), spec)
}

/// What the operator writes for one credential, without deciding anything.
async fn writes_for(client: &Client, namespace: &str, i: usize) -> anyhow::Result<()> {
    let creds = Api::<ApiCredential>::namespaced(client.clone(), namespace);
    let created = creds.create(&PostParams::default(), &credential(i)).await?;
    let name = created.metadata.name.clone().unwrap_or_default();
    let uid = created.metadata.uid.clone().unwrap_or_default();
    let owner = OwnerReference {
        api_version: ApiCredential::api_version(&()).into_owned(),
        kind: ApiCredential::kind(&()).into_owned(),
        name: name.clone(),
        uid: uid.clone(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    };
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {
            "name": name,
            "labels": {"app.kubernetes.io/managed-by": "bench", "catalio.ai/credential": name},
            "annotations": {"catalio.ai/secret-sha256": format!("hmac-sha256:{}", "0".repeat(64)),
                            "catalio.ai/state": "{\"counter\":0,\"rotatedAt\":\"2026-11-30T00:00:00Z\",\"seal\":\"x\"}"},
        },
        "type": "Opaque",
        "stringData": {"client_id": format!("ci_{}", uid.replace('-', "")),
                       "client_secret": "x".repeat(43), "token_url": "http://example/oauth/token",
                       "audience": "https://catalio.ai/api/v1"},
    }))?;
    let mut secret = secret;
    secret.metadata.owner_references = Some(vec![owner]);
    Api::<Secret>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &secret)
        .await?;
    let status = json!({
        "apiVersion": "catalio.ai/v1", "kind": "ApiCredential",
        "status": {"phase": "Active", "clientId": format!("ci_{}", uid.replace('-', "")),
                   "secretName": name, "secretHash": format!("hmac-sha256:{}", "0".repeat(64)),
                   "rotationCounter": 0, "observedGeneration": 1}
    });
    creds
        .patch_status(
            &name,
            &PatchParams::apply("bench").force(),
            &Patch::Apply(status),
        )
        .await?;
    let event = Event {
        metadata: ObjectMeta {
            name: Some(format!("{name}.{}", &uid.replace('-', "")[..16])),
            ..Default::default()
        },
        event_time: Some(MicroTime(jiff::Timestamp::now())),
        reason: Some("Created".into()),
        action: Some("CreateSecret".into()),
        note: Some(format!("Created Secret {name}")),
        type_: Some("Normal".into()),
        reporting_controller: Some("bench".into()),
        reporting_instance: Some("bench".into()),
        regarding: Some(created.object_ref(&())),
        ..Default::default()
    };
    Api::<Event>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &event)
        .await?;
    Ok(())
}

async fn each(
    n: usize,
    f: impl Fn(usize) -> futures::future::BoxFuture<'static, anyhow::Result<()>>,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    let results: Vec<anyhow::Result<()>> = stream::iter(1..=n)
        .map(f)
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    results.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
    Ok(started.elapsed().as_secs_f64())
}

/// Milliseconds from the patch's answer to the token endpoint refusing
/// the credential's old secret.
async fn latency(
    client: &Client,
    base: &str,
    namespace: &str,
    i: usize,
    revoke: bool,
) -> anyhow::Result<f64> {
    let name = format!("cred-{i}");
    let secrets = Api::<Secret>::namespaced(client.clone(), namespace);
    let secret = secrets.get(&name).await?;
    let data = secret.data.unwrap_or_default();
    let text = |k: &str| String::from_utf8(data[k].0.clone()).unwrap_or_default();
    let form = [
        ("grant_type", "client_credentials".to_owned()),
        ("client_id", text("client_id")),
        ("client_secret", text("client_secret")),
    ];
    let http = reqwest::Client::new();
    let url = format!("{base}/oauth/token");
    // The server knows the secret before the change.
    loop {
        if http.post(&url).form(&form).send().await?.status() == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let patch = if revoke {
        json!({"spec": {"revoked": true}})
    } else {
        json!({"spec": {"rotation": {"counter": 1}}})
    };
    Api::<ApiCredential>::namespaced(client.clone(), namespace)
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    let changed = Instant::now();
    loop {
        if http.post(&url).form(&form).send().await?.status() != 200 {
            return Ok(changed.elapsed().as_secs_f64() * 1000.0);
        }
        if changed.elapsed() > Duration::from_secs(30) {
            anyhow::bail!("{name}: the old secret still works after 30 s");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Returns once `n` credentials in `namespace` are Active, as one watch
/// sees them (no polling, no per-object requests).
async fn all_active(client: &Client, namespace: &str, n: usize) -> anyhow::Result<()> {
    use kube::runtime::watcher::{self, Event as Watched};
    let api = Api::<ApiCredential>::namespaced(client.clone(), namespace);
    let mut active = std::collections::HashSet::new();
    let mut events = std::pin::pin!(watcher::watcher(api, watcher::Config::default()));
    let is_active = |c: &ApiCredential| {
        c.status.as_ref().and_then(|s| s.phase) == Some(catalio_operator::crd::Phase::Active)
    };
    while let Some(event) = events.next().await {
        match event? {
            Watched::Apply(c) | Watched::InitApply(c) => {
                let name = c.metadata.name.clone().unwrap_or_default();
                if is_active(&c) {
                    active.insert(name);
                } else {
                    active.remove(&name);
                }
            }
            Watched::Delete(c) => {
                active.remove(&c.metadata.name.clone().unwrap_or_default());
            }
            Watched::Init | Watched::InitDone => {}
        }
        if active.len() >= n {
            return Ok(());
        }
    }
    anyhow::bail!("the watch ended")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let client = Client::try_default().await?;
    match args.get(1).map(String::as_str) {
        Some("create") => {
            let (namespace, n) = (args[2].clone(), args[3].parse()?);
            let seconds = each(n, |i| {
                let (client, namespace) = (client.clone(), namespace.clone());
                Box::pin(async move {
                    Api::<ApiCredential>::namespaced(client, &namespace)
                        .create(&PostParams::default(), &credential(i))
                        .await?;
                    Ok(())
                })
            })
            .await?;
            println!("{seconds:.3}");
        }
        Some("baseline") => {
            let (namespace, n) = (args[2].clone(), args[3].parse()?);
            let seconds = each(n, |i| {
                let (client, namespace) = (client.clone(), namespace.clone());
                Box::pin(async move { writes_for(&client, &namespace, i).await })
            })
            .await?;
            println!("{seconds:.3}");
        }
        Some("wait") => {
            let (namespace, n): (&str, usize) = (&args[2], args[3].parse()?);
            all_active(&client, namespace, n).await?;
        }
        Some("latency") => {
            let (base, namespace, n): (&str, &str, usize) = (&args[2], &args[3], args[4].parse()?);
            // One change at a time: each is measured alone.
            for i in 1..=n {
                let ms = latency(&client, base, namespace, i, i > n / 2).await?;
                println!("{}\t{ms:.1}", if i > n / 2 { "revoke" } else { "rotate" });
            }
        }
        _ => anyhow::bail!(
            "usage: bench_writes create|baseline NAMESPACE N | latency BASE NAMESPACE N"
        ),
    }
    Ok(())
}
