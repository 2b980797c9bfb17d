//! Two operator processes against one control plane: one leader reconciles,
//! both serve, and leadership moves when the leader dies or loses its lease.

use std::time::{Duration, Instant};

use catalio_operator::crd::{ApiCredential, Phase};
use catalio_test_support::cut::CuttableApiServer;
use catalio_test_support::{
    OperatorProcess, TestNamespace, access_token, cluster, credential_secret, eventually, get_json,
};
use jsonwebtoken::{DecodingKey, Validation, decode, decode_header, jwk::JwkSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::PostParams;
use kube::{Api, Client};
use serde_json::Value;

const OPERATOR: &str = env!("CARGO_BIN_EXE_catalio-operator");
const WAIT: Duration = Duration::from_secs(30);
const LEASE: &str = "catalio-operator-leader";

struct Replica {
    operator: OperatorProcess,
    base: String,
}

fn start(ns: &str) -> Replica {
    start_with_lease(ns, "3s")
}

fn start_with_lease(ns: &str, lease: &str) -> Replica {
    let args = [
        "--namespace",
        ns,
        "--watch-namespaces",
        ns,
        "--lease-duration",
        lease,
        "--shutdown-delay",
        "0s",
    ];
    let (operator, endpoints) =
        OperatorProcess::run_serving(OPERATOR, &cluster().kubeconfig, &args);
    Replica {
        operator,
        base: endpoints.base,
    }
}

async fn create_and_wait(client: &Client, ns: &str, name: &str, timeout: Duration) {
    let yaml = format!(
        "apiVersion: catalio.ai/v1\nkind: ApiCredential\nmetadata: {{name: {name}}}\nspec: {{displayName: {name}}}\n"
    );
    let out = cluster().kubectl_stdin(&["-n", ns, "apply", "-f", "-"], Some(&yaml));
    assert!(out.status.success());
    let api = Api::<ApiCredential>::namespaced(client.clone(), ns);
    eventually(timeout, &format!("{name} to become Active"), || async {
        (api.get(name).await.ok()?.status?.phase == Some(Phase::Active)).then_some(())
    })
    .await;
}

async fn token(base: &str, client: &Client, ns: &str, name: &str) -> String {
    let (id, secret) = credential_secret(client, ns, name).await;
    access_token(base, &id, &secret, WAIT).await
}

/// Verifies `token` with the JWKS served by `base`, using jsonwebtoken.
async fn verify_with_jwks_of(base: &str, token: &str) {
    let jwks: JwkSet = get_json(&format!("{base}/.well-known/jwks.json")).await;
    let kid = decode_header(token).unwrap().kid.unwrap();
    let jwk = jwks.find(&kid).expect("kid published by the other replica");
    let mut validation = Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_audience(&["https://catalio.ai/api/v1"]);
    decode::<Value>(token, &DecodingKey::from_jwk(jwk).unwrap(), &validation).unwrap();
}

/// Waits until `r` answers on its public port.
async fn serving(http: &reqwest::Client, r: &Replica) {
    eventually(WAIT, "the replica to serve", || async {
        http.get(format!("{}/.well-known/jwks.json", r.base))
            .send()
            .await
            .ok()?
            .status()
            .is_success()
            .then_some(())
    })
    .await;
}

fn leads(r: &Replica) -> bool {
    r.operator.logs().contains("became leader")
}

#[tokio::test]
async fn one_leader_reconciles_both_serve_and_leadership_moves() {
    let client = cluster().client().await;
    let ns = TestNamespace::new(&client, "ha").await;
    let mut a = start(&ns.name);
    let mut b = start(&ns.name);
    let http = reqwest::Client::new();

    create_and_wait(&client, &ns.name, "first", WAIT).await;
    let leaders = [&a, &b].iter().filter(|r| leads(r)).count();
    assert_eq!(leaders, 1, "exactly one replica leads");
    let (leader, follower) = if leads(&a) {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    // The controller logs a transition after writing its status, so the
    // line can trail the Active phase by a moment.
    eventually(WAIT, "the leader to log creating the Secret", || async {
        leader
            .operator
            .logs()
            .contains("Created Secret first")
            .then_some(())
    })
    .await;
    assert!(
        !follower.operator.logs().contains("Created Secret"),
        "the follower wrote"
    );

    // Both serve, and each one's tokens verify with the other's JWKS.
    let from_leader = token(&leader.base, &client, &ns.name, "first").await;
    let from_follower = token(&follower.base, &client, &ns.name, "first").await;
    verify_with_jwks_of(&follower.base, &from_leader).await;
    verify_with_jwks_of(&leader.base, &from_follower).await;
    // Both serve the JSON:API from their own caches, with either one's
    // tokens.
    let out = cluster().kubectl_stdin(
        &["-n", &ns.name, "apply", "-f", "-"],
        Some("apiVersion: catalio.ai/v1\nkind: Requirement\nmetadata: {name: r1}\nspec: {title: Shared}\n"),
    );
    assert!(out.status.success());
    for (base, token) in [
        (&leader.base, &from_follower),
        (&follower.base, &from_leader),
    ] {
        eventually(WAIT, "the requirement served by each replica", || async {
            let r = http
                .get(format!("{base}/api/v1/requirements/r1"))
                .bearer_auth(token)
                .send()
                .await
                .ok()?;
            let body: Value = r.json().await.ok()?;
            (body["data"]["attributes"]["title"] == "Shared").then_some(())
        })
        .await;
    }

    // A leader whose lease is taken away stops writing.
    let leases = Api::<Lease>::namespaced(client.clone(), &ns.name);
    let renew = |lease: &mut Lease| {
        let spec = lease.spec.get_or_insert_with(Default::default);
        spec.holder_identity = Some("someone-else".into());
        spec.lease_duration_seconds = Some(3);
        spec.renew_time = Some(MicroTime(jiff::Timestamp::now()));
    };
    // The holder may renew between our read and our write: read again.
    let mut stolen = eventually(WAIT, "the lease to be stolen", || async {
        let mut lease = leases.get(LEASE).await.ok()?;
        renew(&mut lease);
        leases
            .replace(LEASE, &PostParams::default(), &lease)
            .await
            .ok()
    })
    .await;
    eventually(WAIT, "the leader to step down", || async {
        leader
            .operator
            .logs()
            .contains("stepping down")
            .then_some(())
    })
    .await;
    let out = cluster().kubectl_stdin(
        &["-n", &ns.name, "apply", "-f", "-"],
        Some("apiVersion: catalio.ai/v1\nkind: ApiCredential\nmetadata: {name: orphan}\nspec: {displayName: orphan}\n"),
    );
    assert!(out.status.success());
    // Renewed every second for twice its duration: each renewal replaces
    // the version we last wrote, so a replica that had taken the lease (the
    // only way to write) would make it fail.
    let renewing = Instant::now();
    while renewing.elapsed() < Duration::from_secs(6) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        renew(&mut stolen);
        stolen = leases
            .replace(LEASE, &PostParams::default(), &stolen)
            .await
            .expect("no replica took the lease");
    }
    let orphan = Api::<ApiCredential>::namespaced(client.clone(), &ns.name)
        .get("orphan")
        .await
        .unwrap();
    assert!(
        orphan.status.is_none(),
        "nobody may write while someone else holds the lease"
    );
    // Once the thief goes quiet, a replica takes the lease and catches up.
    create_and_wait(&client, &ns.name, "orphan", WAIT).await;

    // A leader stopped with SIGTERM releases the lease: the other takes
    // over sooner than the lease could expire.
    let (stopping, staying) = if leads_now(&client, &ns.name, &a).await {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    let mut holders = watch_holders(leases.clone());
    // The watch has seen the lease held before the stop, so the release
    // cannot come before the watch's first look (and go unseen).
    let stopping_id = format!("-{}", stopping.operator.pid());
    seen(&mut holders, "the watch to see the lease held", |h| {
        h.is_some_and(|h| h.ends_with(&stopping_id))
    })
    .await;
    let stopped = Instant::now();
    let status = stopping
        .operator
        .terminate(Duration::from_secs(10))
        .expect("exits on SIGTERM");
    assert!(status.success());
    assert!(stopping.operator.logs().contains("released leadership"));
    // Released, not left to expire: the lease is seen with no holder.
    seen(&mut holders, "the lease to be seen released", |h| {
        h.is_none()
    })
    .await;
    eventually(WAIT, "the other replica to lead", || async {
        leads_now(&client, &ns.name, staying).await.then_some(())
    })
    .await;
    eprintln!("handover after SIGTERM: {:?}", stopped.elapsed());
    create_and_wait(&client, &ns.name, "after-handover", WAIT).await;

    // The new leader dies without a word; a fresh replica takes over within
    // about the lease duration.
    let mut c = start(&ns.name);
    serving(&http, &c).await;
    staying.operator.kill();
    let killed = Instant::now();
    create_and_wait(&client, &ns.name, "after-failover", WAIT).await;
    let took = killed.elapsed();
    eprintln!("failover: new credential Active {took:?} after SIGKILL of the leader");
    assert!(leads(&c));
    c.operator.kill();
}

/// Every holder the lease is seen with from now on (`None`: released), by
/// a watch, so no state is missed between two looks.
fn watch_holders(leases: Api<Lease>) -> tokio::sync::mpsc::UnboundedReceiver<Option<String>> {
    use futures::StreamExt;
    use kube::runtime::watcher;
    let (send, receive) = tokio::sync::mpsc::unbounded_channel();
    let config = watcher::Config::default().fields(&format!("metadata.name={LEASE}"));
    tokio::spawn(async move {
        let mut events = std::pin::pin!(watcher::watcher(leases, config));
        while let Some(Ok(event)) = events.next().await {
            if let watcher::Event::Apply(lease) | watcher::Event::InitApply(lease) = event {
                let holder = lease
                    .spec
                    .and_then(|s| s.holder_identity)
                    .filter(|h| !h.is_empty());
                if send.send(holder).is_err() {
                    return;
                }
            }
        }
    });
    receive
}

/// Waits until `holders` shows the lease with a holder `want` accepts.
async fn seen(
    holders: &mut tokio::sync::mpsc::UnboundedReceiver<Option<String>>,
    what: &str,
    want: impl Fn(Option<&str>) -> bool,
) {
    tokio::time::timeout(WAIT, async {
        while let Some(holder) = holders.recv().await {
            if want(holder.as_deref()) {
                return;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
}

/// Whether `r` holds the lease right now (its identity ends with its pid).
async fn leads_now(client: &Client, ns: &str, r: &Replica) -> bool {
    let lease = Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(client.clone(), ns)
        .get(LEASE)
        .await
        .unwrap();
    let holder = lease
        .spec
        .and_then(|s| s.holder_identity)
        .unwrap_or_default();
    holder.ends_with(&format!("-{}", r.operator.pid()))
}

/// Another replica's clock is never compared with ours. The test plays a
/// replica whose clock is ten minutes behind, then ten minutes ahead: while
/// it renews, the operator must not take the lease however old its
/// renewTime looks; once it stops, the operator must take over within about
/// the lease duration however far ahead its renewTime is.
#[tokio::test]
async fn a_holders_skewed_clock_neither_loses_nor_keeps_the_lease() {
    use k8s_openapi::api::coordination::v1::LeaseSpec;

    let client = cluster().client().await;
    let ns = TestNamespace::new(&client, "skew").await;
    let leases = Api::<Lease>::namespaced(client.clone(), &ns.name);
    let skewed =
        |minutes: i64| MicroTime(jiff::Timestamp::now() + jiff::SignedDuration::from_mins(minutes));
    let mut lease = Lease {
        metadata: kube::api::ObjectMeta {
            name: Some(LEASE.into()),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some("skewed".into()),
            lease_duration_seconds: Some(10),
            renew_time: Some(skewed(-10)),
            ..Default::default()
        }),
    };
    lease = leases.create(&PostParams::default(), &lease).await.unwrap();
    let replica = start_with_lease(&ns.name, "10s");
    let http = reqwest::Client::new();
    serving(&http, &replica).await;
    // Renewed every second for twice the lease duration, each renewal ten
    // minutes in the past: the lease stays ours (a replace with a stale
    // resourceVersion would fail if the replica had taken it).
    let renewing = Instant::now();
    while renewing.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        lease.spec.as_mut().unwrap().renew_time = Some(skewed(-10));
        lease = leases
            .replace(LEASE, &PostParams::default(), &lease)
            .await
            .expect("the lease is still ours");
        assert_eq!(
            lease.spec.as_ref().unwrap().holder_identity.as_deref(),
            Some("skewed")
        );
    }
    assert!(!leads(&replica), "the replica took a lease being renewed");
    // A last renewal ten minutes ahead, then silence: the replica takes
    // over about ten seconds after it last saw the lease change.
    lease.spec.as_mut().unwrap().renew_time = Some(skewed(10));
    leases
        .replace(LEASE, &PostParams::default(), &lease)
        .await
        .unwrap();
    let silent = Instant::now();
    create_and_wait(&client, &ns.name, "after-skew", WAIT).await;
    eprintln!(
        "takeover from a holder whose clock is 10 minutes ahead: {:?} after its last renewal",
        silent.elapsed()
    );
    assert!(leads(&replica));
}

/// When the leader's line to the API server goes silent (requests hang
/// rather than fail, as when packets are dropped), the leader stops its work
/// before any other replica may take the lease, so two never lead at once;
/// its /readyz says leader election is broken meanwhile.
#[tokio::test]
async fn a_leader_whose_requests_hang_stops_before_another_takes_over() {
    let client = cluster().client().await;
    let http = reqwest::Client::new();
    let ns = TestNamespace::new(&client, "silent").await;
    let (line, kubeconfig) =
        CuttableApiServer::in_front_of(&cluster().kubeconfig, &std::env::temp_dir()).await;
    let args = [
        "--namespace",
        &ns.name,
        "--watch-namespaces",
        &ns.name,
        "--lease-duration",
        "3s",
        "--shutdown-delay",
        "0s",
    ];
    let (leader, leader_endpoints) = OperatorProcess::run_serving(OPERATOR, &kubeconfig, &args);
    eventually(WAIT, "the replica behind the proxy to lead", || async {
        leader.logs().contains("became leader").then_some(())
    })
    .await;
    let other = start(&ns.name);
    serving(&http, &other).await;
    create_and_wait(&client, &ns.name, "before", WAIT).await;

    let mut holders = watch_holders(Api::namespaced(client.clone(), &ns.name));
    line.silence();
    let other_identity = format!("-{}", other.operator.pid());
    seen(&mut holders, "the other replica to take the lease", |h| {
        h.is_some_and(|h| h.ends_with(&other_identity))
    })
    .await;
    // The lease is written before the line is logged.
    eventually(WAIT, "the other replica to log its leadership", || async {
        other
            .operator
            .logs()
            .contains("became leader")
            .then_some(())
    })
    .await;
    let took_over = logged_at(&other.operator.logs(), "became leader");
    eventually(WAIT, "the silenced leader to step down", || async {
        leader.logs().contains("stepping down").then_some(())
    })
    .await;
    let stepped_down = logged_at(&leader.logs(), "stepping down");
    assert!(
        stepped_down < took_over,
        "the silenced leader stepped down at {stepped_down}, after the other took over at {took_over}"
    );
    let readyz = http
        .get(format!("{}/readyz", leader_endpoints.admin))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        readyz.contains("degraded") && readyz.contains("leader election"),
        "{readyz}"
    );
    // The new leader does the work.
    create_and_wait(&client, &ns.name, "after", WAIT).await;
    line.restore();
}

/// When the first log line containing `message` was written.
fn logged_at(logs: &str, message: &str) -> jiff::Timestamp {
    let line = logs
        .lines()
        .find(|l| l.contains(message))
        .unwrap_or_else(|| panic!("no {message:?} in the logs"));
    line.split_whitespace()
        .next()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no timestamp on {line:?}"))
}
