//! Wires the command line to the watches, the servers and the controller:
//! [`run`] reads the flags once, then each helper starts one thing.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail};
use futures::FutureExt;
use futures::future::{BoxFuture, Shared, join_all};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::DynamicObject;
use kube::core::DeserializeGuard;
use kube::{Api, Client};
use tokio::signal::unix::{SignalKind, signal};
use tracing::{info, warn};

use crate::config::{Cli, Command, Operator};
use crate::controller::{self, plan::Settings};
use crate::crd::ApiCredential;
use crate::crd::registry::TYPES;
use crate::index::resources::ResourceStore;
use crate::index::{self, CredentialIndex};
use crate::leader::{self, Elector};
use crate::metrics::Metrics;
use crate::owner;
use crate::server::assertion::TokenReviewer;
use crate::server::jsonapi::Quota;
use crate::server::limit::RateLimit;
use crate::server::oauth::TokenSettings;
use crate::server::tls::{CertFiles, ReloadingCert};
use crate::server::{self, JsonApi, Limits, Readiness, TokenService, throttle::Throttle};
use crate::token::{KeyStore, RotationPolicy, Verifier, keystore};
use crate::usage::UsageRecorder;
use crate::writes::{KubeWrites, api_resource};
use crate::{api, crd, duration, telemetry, watch};

type Shutdown = Shared<BoxFuture<'static, ()>>;
type Task = BoxFuture<'static, ()>;

/// Where the watches look: every namespace (`[None]`), or each listed one.
type Scopes = Vec<Option<String>>;

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let (operator, controller, server) = match cli.command {
        Command::Crds => {
            print!("{}", crd::render_all().context("rendering CRDs")?);
            return Ok(());
        }
        Command::Run(o) => (o, true, true),
        Command::Controller(o) => (o, true, false),
        Command::Server(o) => (o, false, true),
    };
    let Operator {
        listen,
        admin_listen,
        issuer,
        audience,
        token_url,
        tls_cert_file,
        tls_key_file,
        token_lifetime,
        namespace,
        watch_namespaces,
        signing_alg,
        signing_key_secret,
        signing_key_rotation,
        signing_key_publish_delay,
        owner_service_account,
        leader_lease,
        lease_duration,
        shutdown_delay,
        api_rate_limit,
        api_burst,
        max_objects_per_kind,
        max_bytes_per_kind,
        token_rate_limit,
        token_burst,
        last_used_interval,
        unused_after,
        max_connections,
        header_read_timeout,
        body_read_timeout,
        idle_timeout,
        log_format,
    } = operator;
    telemetry::init(log_format);

    let parse =
        |flag: &str, value: &str| duration::parse(value).with_context(|| format!("--{flag}"));
    let token_lifetime = parse("token-lifetime", &token_lifetime)?;
    let shutdown_delay = parse("shutdown-delay", &shutdown_delay)?;
    let lease_duration = parse("lease-duration", &lease_duration)?;
    let positive = |flag: &str, value: &str| match parse(flag, value)? {
        Duration::ZERO => bail!("--{flag} must be more than 0"),
        d => Ok(d),
    };
    let header_read_timeout = positive("header-read-timeout", &header_read_timeout)?;
    let body_read_timeout = positive("body-read-timeout", &body_read_timeout)?;
    let idle_timeout = positive("idle-timeout", &idle_timeout)?;
    let last_used_interval = positive("last-used-interval", &last_used_interval)?;
    let unused_after = positive("unused-after", &unused_after)?;
    if !(Duration::from_secs(60)..=Duration::from_secs(86_400)).contains(&token_lifetime) {
        bail!("--token-lifetime must be between 1m and 24h");
    }
    let policy = RotationPolicy {
        alg: signing_alg,
        rotate_every: parse("signing-key-rotation", &signing_key_rotation)?,
        publish_delay: parse("signing-key-publish-delay", &signing_key_publish_delay)?,
        // Credentials may ask for up to 24h whatever the server default is.
        max_token_lifetime: Duration::from_secs(86_400),
    };
    let tls = match (tls_cert_file, tls_key_file) {
        (Some(cert), Some(key)) => Some(
            ReloadingCert::load(CertFiles { cert, key }).context("loading the TLS certificate")?,
        ),
        _ => None,
    };
    let token_url = token_url.unwrap_or_else(|| {
        let url = default_token_url(listen, tls.is_some());
        if listen.ip().is_unspecified() {
            warn!(%url, "--token-url is not set: Secrets name this server on this machine only; set the URL workloads reach it at");
        }
        url
    });
    let scopes: Scopes = if watch_namespaces.is_empty() {
        vec![None]
    } else {
        watch_namespaces.into_iter().map(Some).collect()
    };

    let mut kube_config = kube::Config::infer()
        .await
        .context("finding the Kubernetes API server")?;
    // An API server that does not answer a connection within this is down:
    // writes say so sooner, and a broken watch errors again at least this
    // often (what /readyz's report relies on).
    kube_config.connect_timeout = Some(watch::CONNECT_TIMEOUT);
    let client = Client::try_from(kube_config).context("connecting to Kubernetes")?;
    let shutdown: Shutdown = shutdown_signal().boxed().shared();
    let draining = Arc::new(AtomicBool::new(false));
    let drained = drained(shutdown.clone(), draining.clone(), shutdown_delay);
    let metrics = Metrics::new();
    let health = Arc::new(watch::Health::counting(metrics.watch_lists.clone()));
    let keys = watch_keys(&client, &namespace, &signing_key_secret, &health);
    let mut readiness = Readiness {
        health: health.clone(),
        index: None,
        resources: None,
        keys: None,
        draining,
    };
    let mut tasks: Vec<Task> = Vec::new();

    if server {
        let public = Public {
            listen,
            issuer,
            audience: audience.clone(),
            token_url: token_url.clone(),
            token_lifetime,
            tls,
            api_rate_limit,
            api_burst,
            quota: Quota {
                objects: max_objects_per_kind as usize,
                bytes: usize::try_from(max_bytes_per_kind).unwrap_or(usize::MAX),
            },
            token_rate_limit,
            token_burst,
            last_used_interval,
            limits: Limits {
                max_connections: max_connections as usize,
                header_read: header_read_timeout,
                idle: idle_timeout,
                open: metrics.open_connections.clone(),
            },
            body_read_timeout,
        };
        let (task, index, resources) = serve_public(
            public,
            &client,
            &scopes,
            &keys,
            &metrics,
            &health,
            drained.clone(),
        )
        .await?;
        tasks.push(task);
        readiness.index = Some(index);
        readiness.resources = Some(resources);
        readiness.keys = Some(keys.clone());
    }

    // Probes and metrics in every mode.
    let admin = server::bind(admin_listen)
        .await
        .with_context(|| format!("binding {admin_listen}"))?;
    let admin_routes = server::admin_routes(readiness, metrics.clone());
    tasks.push(server::serve(admin, admin_routes, None, Limits::admin(), drained).boxed());

    if controller {
        let ctx = Arc::new(controller::Context::new(
            client.clone(),
            Settings {
                token_url,
                audience,
                unused_after,
            },
            keys,
            metrics,
        ));
        let owner = match owner_service_account.as_str() {
            "" => None,
            account => Some(
                owner::service_account(client.clone(), &namespace, account)
                    .await
                    .with_context(|| {
                        format!(
                            "reading ServiceAccount {namespace}/{account} (--owner-service-account)"
                        )
                    })?,
            ),
        };
        let secrets = Api::<Secret>::namespaced(client.clone(), &namespace);
        let elector = Elector {
            health: health.tracker(format!("leader election ({namespace}/{leader_lease})")),
            api: Api::<Lease>::namespaced(client, &namespace),
            name: leader_lease,
            identity: leader::identity(),
            duration: lease_duration,
            observed: None,
            owner: owner.clone(),
        };
        let work = leader_work(ctx, scopes, secrets, signing_key_secret, policy, owner);
        tasks.push(elector.run(work, shutdown).boxed());
    }

    join_all(tasks).await;
    info!("stopped");
    Ok(())
}

/// What the public server needs from the command line.
struct Public {
    listen: SocketAddr,
    issuer: String,
    audience: String,
    token_url: String,
    token_lifetime: Duration,
    tls: Option<Arc<ReloadingCert>>,
    api_rate_limit: u32,
    api_burst: u32,
    quota: Quota,
    token_rate_limit: u32,
    token_burst: u32,
    last_used_interval: Duration,
    limits: Limits,
    body_read_timeout: Duration,
}

/// Binds the public port and serves the token endpoint and the JSON:API
/// from the caches it starts; returns the serving task and the caches
/// readiness waits for.
async fn serve_public(
    public: Public,
    client: &Client,
    scopes: &Scopes,
    keys: &Arc<KeyStore>,
    metrics: &Arc<Metrics>,
    health: &Arc<watch::Health>,
    drained: Shutdown,
) -> anyhow::Result<(Task, Arc<CredentialIndex>, Arc<ResourceStore>)> {
    let Public {
        listen,
        issuer,
        audience,
        token_url,
        token_lifetime,
        tls,
        api_rate_limit,
        api_burst,
        quota,
        token_rate_limit,
        token_burst,
        last_used_interval,
        limits,
        body_read_timeout,
    } = public;
    let (index, resources) = watch_for_server(client, scopes, health);
    let usage = UsageRecorder::spawn(client.clone(), last_used_interval, metrics.clone());
    let service = Arc::new(TokenService {
        index: index.clone(),
        keys: keys.clone(),
        jwks_url: jwks_url(&token_url, &issuer),
        settings: TokenSettings {
            issuer: issuer.clone(),
            audience: audience.clone(),
            default_lifetime: token_lifetime,
        },
        token_url: token_url.clone(),
        throttle: Throttle::default(),
        issuance: RateLimit::new(token_rate_limit, token_burst),
        usage: usage.clone(),
        metrics: metrics.clone(),
        // RFC 7523: an assertion's audience identifies the authorization
        // server; the issuer does.
        reviewer: TokenReviewer::new(client.clone(), issuer.clone(), metrics.clone()),
    });
    let jsonapi = Arc::new(JsonApi {
        index: resources.clone(),
        writes: KubeWrites {
            client: client.clone(),
        },
        verifier: Verifier {
            keys: keys.clone(),
            index: index.clone(),
            issuer,
            audience,
            leeway: Duration::from_secs(60),
            verified: Default::default(),
        },
        limit: RateLimit::new(api_rate_limit, api_burst),
        quota,
        metrics: metrics.clone(),
        openapi: api::openapi::document(&token_url).to_string(),
        overview: api::overview::document(&token_url).to_string(),
        usage,
    });
    let tls = match tls {
        Some(cert) => {
            tokio::spawn(cert.clone().watch());
            Some(cert.server_config().context("TLS configuration")?)
        }
        None => None,
    };
    let listener = server::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    info!(%listen, "serving");
    let routes = server::routes(service, jsonapi, body_read_timeout);
    let task = server::serve(listener, routes, tls, limits, drained).boxed();
    Ok((task, index, resources))
}

/// Resolves `shutdown_delay` after `shutdown`, having marked the process
/// draining: the servers keep serving, unready, meanwhile.
fn drained(shutdown: Shutdown, draining: Arc<AtomicBool>, delay: Duration) -> Shutdown {
    async move {
        shutdown.await;
        draining.store(true, Ordering::Relaxed);
        info!(?delay, "not ready; draining before the listener closes");
        tokio::time::sleep(delay).await;
    }
    .boxed()
    .shared()
}

/// Every mode holds the keys: servers sign and verify with them, the
/// controller hashes secrets with the hash key. Only the leader writes
/// them.
fn watch_keys(
    client: &Client,
    namespace: &str,
    name: &str,
    health: &Arc<watch::Health>,
) -> Arc<KeyStore> {
    let keys = KeyStore::new();
    let secrets = Api::<Secret>::namespaced(client.clone(), namespace);
    let tracker = health.tracker(format!("signing keys ({namespace}/{name}) watch"));
    tokio::spawn(keystore::watch(
        secrets,
        name.to_owned(),
        keys.clone(),
        tracker,
    ));
    keys
}

/// The caches a server serves from: the credential index (one watch per
/// scope; each relist replaces only its own scope) and the JSON:API's
/// objects (one watch per type and scope).
fn watch_for_server(
    client: &Client,
    scopes: &Scopes,
    health: &Arc<watch::Health>,
) -> (Arc<CredentialIndex>, Arc<ResourceStore>) {
    let scope_name = |scope: &Option<String>| match scope {
        Some(ns) => format!("in {ns}"),
        None => "in all namespaces".to_owned(),
    };
    let index = CredentialIndex::with_watches(scopes.len());
    for scope in scopes.iter().cloned() {
        let api: Api<DeserializeGuard<ApiCredential>> = match &scope {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        };
        let tracker = health.tracker(format!("ApiCredentials {} watch", scope_name(&scope)));
        tokio::spawn(index::run_credential_watch(
            api,
            scope,
            index.clone(),
            tracker,
        ));
    }
    let resources = ResourceStore::new(scopes.len() * TYPES.len());
    let watches = TYPES
        .iter()
        .flat_map(|ty| scopes.iter().map(move |scope| (ty, scope.clone())));
    for (i, (ty, scope)) in watches.enumerate() {
        let resource = api_resource(ty);
        let objects: Api<DynamicObject> = match &scope {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
            None => Api::all_with(client.clone(), &resource),
        };
        let tracker = health.tracker(format!("{} {} watch", ty.plural, scope_name(&scope)));
        let resources = resources.clone();
        tokio::spawn(index::run_resource_watch(
            objects, ty, i, scope, resources, tracker,
        ));
    }
    (index, resources)
}

/// What the leader does while it leads: maintains the keys, and reconciles
/// every scope once the hash key is loaded.
fn leader_work(
    ctx: Arc<controller::Context>,
    scopes: Scopes,
    secrets: Api<Secret>,
    key_secret: String,
    policy: RotationPolicy,
    owner: Option<OwnerReference>,
) -> impl Fn() -> Task + Send + Sync + 'static {
    move || {
        let maintenance = keystore::run_maintenance(
            secrets.clone(),
            key_secret.clone(),
            policy.clone(),
            owner.clone(),
        );
        let (ctx, scopes) = (ctx.clone(), scopes.clone());
        let controllers = async move {
            ctx.keys.hasher_loaded().await;
            join_all(scopes.into_iter().map(|ns| {
                let ctx = ctx.clone();
                info!(namespace = ?ns, "starting controller");
                async move { controller::run(ctx, ns.as_deref(), futures::future::pending()).await }
            }))
            .await;
        };
        futures::future::join(maintenance, controllers)
            .map(|_| ())
            .boxed()
    }
}

/// The JWKS beside the token endpoint, or at the issuer.
fn jwks_url(token_url: &str, issuer: &str) -> String {
    match token_url.strip_suffix("/oauth/token") {
        Some(base) => format!("{base}/.well-known/jwks.json"),
        None => format!("{}/.well-known/jwks.json", issuer.trim_end_matches('/')),
    }
}

/// The token endpoint on this server, from the address it listens on: never
/// the public issuer's host, which would send workloads' secrets off the
/// cluster.
fn default_token_url(listen: SocketAddr, tls: bool) -> String {
    let scheme = if tls { "https" } else { "http" };
    let host = match listen.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => "127.0.0.1".to_owned(),
        IpAddr::V6(v6) if v6.is_unspecified() => "[::1]".to_owned(),
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    };
    format!("{scheme}://{host}:{}/oauth/token", listen.port())
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return futures::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = tokio::signal::ctrl_c() => {},
    }
    info!("shutting down");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_token_url_is_this_server() {
        let url = |listen: &str, tls| default_token_url(listen.parse().unwrap(), tls);
        assert_eq!(
            url("0.0.0.0:8080", false),
            "http://127.0.0.1:8080/oauth/token"
        );
        assert_eq!(
            url("10.1.2.3:8443", true),
            "https://10.1.2.3:8443/oauth/token"
        );
        assert_eq!(url("[::]:80", false), "http://[::1]:80/oauth/token");
        assert_eq!(
            url("[fd00::1]:80", true),
            "https://[fd00::1]:80/oauth/token"
        );
    }

    #[test]
    fn the_jwks_is_beside_the_token_endpoint() {
        assert_eq!(
            jwks_url("http://h:1/oauth/token", "https://catalio.ai"),
            "http://h:1/.well-known/jwks.json"
        );
        assert_eq!(
            jwks_url("http://h:1/token", "https://catalio.ai/"),
            "https://catalio.ai/.well-known/jwks.json"
        );
    }
}
