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

use crate::audit::{Audit, LogSink, Webhook};
use crate::config::{Cli, Command, CommonFlags, ControllerFlags, Operator, PublicFlags};
use crate::controller::{self, plan::Settings};
use crate::crd::ApiCredential;
use crate::crd::registry::TYPES;
use crate::federation::Federation;
use crate::index::resources::ResourceStore;
use crate::index::{self, CredentialIndex};
use crate::leader::{self, Elector};
use crate::metrics::Metrics;
use crate::owner;
use crate::server::assertion::TokenReviewer;
use crate::server::jsonapi::Dpop;
use crate::server::jsonapi::Quota;
use crate::server::limit::RateLimit;
use crate::server::oauth::TokenSettings;
use crate::server::tls::{CertFiles, ReloadingCert};
use crate::server::{self, JsonApi, Limits, Readiness, TokenService, throttle::Throttle};
use crate::token::replay::Replays;
use crate::token::{BatchSigner, KeyStore, RotationPolicy, Verifier, keystore};
use crate::usage::UsageRecorder;
use crate::writes::{KubeWrites, api_resource};
use crate::{api, crd, duration, telemetry, watch};

type Shutdown = Shared<BoxFuture<'static, ()>>;
type Task = BoxFuture<'static, ()>;

/// How long, at exit, the audit log's writer has to write what is queued,
/// and the webhook's senders to deliver it (at the same time).
const AUDIT_FLUSH: Duration = Duration::from_secs(5);

/// Where the watches look: every namespace (`[None]`), or each listed one.
type Scopes = Vec<Option<String>>;

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let (
        Operator {
            common,
            public,
            controller,
        },
        leads,
        serves,
    ) = match cli.command {
        Command::Crds => {
            print!("{}", crd::render_all().context("rendering CRDs")?);
            return Ok(());
        }
        Command::Reference { document } => {
            print!("{}", document.render());
            return Ok(());
        }
        Command::Run(o) => (o, true, true),
        Command::Controller(o) => (o, true, false),
        Command::Server(o) => (o, false, true),
    };
    telemetry::init(common.log_format);
    let public = Public::read(public)?;
    let common = Common::read(common, &public)?;
    let leading = Leading::read(controller)?;
    let process = Process::start(&common).await?;
    let mut readiness = process.readiness();
    let mut tasks: Vec<Task> = Vec::new();
    if serves {
        let (task, index, resources) = serve_public(public, &common, &process).await?;
        tasks.push(task);
        readiness.index = Some(index);
        readiness.resources = Some(resources);
        readiness.keys = Some(process.keys.clone());
    }
    tasks.push(serve_admin(common.admin_listen, readiness, &process).await?);
    if leads {
        tasks.push(lead(leading, common, &process).await?);
    }
    join_all(tasks).await;
    let audit = process.audit.clone();
    let written = tokio::task::spawn_blocking(move || audit.flush(AUDIT_FLUSH));
    let (written, ()) = tokio::join!(written, process.audit.deliver_queued(AUDIT_FLUSH));
    if !matches!(written, Ok(true)) {
        warn!("the audit log's last records may not have been written");
    }
    info!("stopped");
    Ok(())
}

/// Duration flags, with the flag's name in any error.
fn duration_flag(flag: &str, value: &str) -> anyhow::Result<Duration> {
    duration::parse(value).with_context(|| format!("--{flag}"))
}

/// A duration flag that must be more than zero.
fn positive(flag: &str, value: &str) -> anyhow::Result<Duration> {
    match duration_flag(flag, value)? {
        Duration::ZERO => bail!("--{flag} must be more than 0"),
        d => Ok(d),
    }
}

/// The items of a comma-separated list flag, each checked by `valid`
/// (which says what an item must be). An empty item is none: an empty
/// variable (the chart's empty list) is an empty list, not one empty name.
fn list_flag(
    flag: &str,
    items: Vec<String>,
    (valid, what): (fn(&str) -> bool, &str),
) -> anyhow::Result<Vec<String>> {
    let items: Vec<String> = items.into_iter().filter(|i| !i.is_empty()).collect();
    if let Some(bad) = items.iter().find(|i| !valid(i)) {
        bail!("--{flag}: {bad:?} is not {what}");
    }
    Ok(items)
}

/// What every mode reads from the command line.
struct Common {
    admin_listen: SocketAddr,
    namespace: String,
    scopes: Scopes,
    signing_key_secret: String,
    audience: String,
    token_url: String,
    shutdown_delay: Duration,
    audit: AuditFlags,
}

impl Common {
    fn read(flags: CommonFlags, public: &Public) -> anyhow::Result<Self> {
        let CommonFlags {
            admin_listen,
            namespace,
            watch_namespaces,
            signing_key_secret,
            audience,
            token_url,
            shutdown_delay,
            log_format: _,
            audit_log,
            audit_webhook,
            audit_webhook_queue,
            audit_webhook_batch,
        } = flags;
        let token_url = token_url.unwrap_or_else(|| {
            let url = default_token_url(public.listen, public.tls.is_some());
            if public.listen.ip().is_unspecified() {
                warn!(%url, "--token-url is not set: Secrets name this server on this machine only; set the URL workloads reach it at");
            }
            url
        });
        let watch_namespaces = list_flag(
            "watch-namespaces",
            watch_namespaces,
            (crd::is_namespace, "a namespace"),
        )?;
        let scopes: Scopes = match watch_namespaces.is_empty() {
            true => vec![None],
            false => watch_namespaces.into_iter().map(Some).collect(),
        };
        Ok(Self {
            admin_listen,
            namespace,
            scopes,
            signing_key_secret,
            audience,
            token_url,
            shutdown_delay: duration_flag("shutdown-delay", &shutdown_delay)?,
            audit: AuditFlags {
                log: audit_log,
                webhook: Webhook {
                    url: audit_webhook,
                    queue: audit_webhook_queue as usize,
                    batch: audit_webhook_batch as usize,
                    // This process's name, once it is known.
                    source: String::new(),
                },
            },
        })
    }
}

/// Where audit records go.
struct AuditFlags {
    log: LogSink,
    webhook: Webhook,
}

/// What the public server needs from the command line.
struct Public {
    listen: SocketAddr,
    issuer: String,
    token_lifetime: Duration,
    tls: Option<Arc<ReloadingCert>>,
    api_rate_limit: u32,
    api_burst: u32,
    quota: Quota,
    token_rate_limit: u32,
    token_burst: u32,
    last_used_interval: Duration,
    max_connections: usize,
    header_read_timeout: Duration,
    idle_timeout: Duration,
    body_read_timeout: Duration,
    introspectors: Vec<String>,
    federation: Federation,
}

impl Public {
    fn read(flags: PublicFlags) -> anyhow::Result<Self> {
        let PublicFlags {
            listen,
            issuer,
            tls_cert_file,
            tls_key_file,
            token_lifetime,
            api_rate_limit,
            api_burst,
            max_objects_per_kind,
            max_bytes_per_kind,
            token_rate_limit,
            token_burst,
            last_used_interval,
            max_connections,
            header_read_timeout,
            body_read_timeout,
            idle_timeout,
            introspectors,
            trusted_issuers,
        } = flags;
        let account = |a: &str| {
            a.split_once('/')
                .is_some_and(|(ns, name)| crd::is_namespace(ns) && crd::is_object_name(name))
        };
        let introspectors = list_flag("introspectors", introspectors, (account, "namespace/name"))?;
        let token_lifetime = duration_flag("token-lifetime", &token_lifetime)?;
        if !(Duration::from_secs(60)..=Duration::from_secs(86_400)).contains(&token_lifetime) {
            bail!("--token-lifetime must be between 1m and 24h");
        }
        let tls = match (tls_cert_file, tls_key_file) {
            (Some(cert), Some(key)) => Some(
                ReloadingCert::load(CertFiles { cert, key })
                    .context("loading the TLS certificate")?,
            ),
            _ => None,
        };
        Ok(Self {
            listen,
            issuer,
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
            last_used_interval: positive("last-used-interval", &last_used_interval)?,
            max_connections: max_connections as usize,
            header_read_timeout: positive("header-read-timeout", &header_read_timeout)?,
            idle_timeout: positive("idle-timeout", &idle_timeout)?,
            body_read_timeout: positive("body-read-timeout", &body_read_timeout)?,
            introspectors,
            federation: Federation::load(trusted_issuers.as_deref())
                .context("--trusted-issuers")?,
        })
    }
}

/// What the controller's leader needs from the command line.
struct Leading {
    policy: RotationPolicy,
    owner_service_account: String,
    leader_lease: String,
    lease_duration: Duration,
    unused_after: Duration,
}

impl Leading {
    fn read(flags: ControllerFlags) -> anyhow::Result<Self> {
        let ControllerFlags {
            signing_alg,
            signing_key_rotation,
            signing_key_publish_delay,
            owner_service_account,
            leader_lease,
            lease_duration,
            unused_after,
        } = flags;
        let policy = RotationPolicy {
            alg: signing_alg,
            rotate_every: duration_flag("signing-key-rotation", &signing_key_rotation)?,
            publish_delay: duration_flag("signing-key-publish-delay", &signing_key_publish_delay)?,
            // Credentials may ask for up to 24h whatever the server default is.
            max_token_lifetime: Duration::from_secs(86_400),
        };
        Ok(Self {
            policy,
            owner_service_account,
            leader_lease,
            lease_duration: duration_flag("lease-duration", &lease_duration)?,
            unused_after: positive("unused-after", &unused_after)?,
        })
    }
}

/// What every part of the process shares: the API server, shutdown, the
/// metrics, the watches' health and the keys.
struct Process {
    client: Client,
    shutdown: Shutdown,
    /// `shutdown`, then the drain delay.
    drained: Shutdown,
    draining: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
    health: Arc<watch::Health>,
    keys: Arc<KeyStore>,
    audit: Audit,
}

impl Process {
    async fn start(common: &Common) -> anyhow::Result<Self> {
        let mut kube_config = kube::Config::infer()
            .await
            .context("finding the Kubernetes API server")?;
        // An API server that does not answer a connection within this is
        // down: writes say so sooner, and a broken watch errors again at
        // least this often (what /readyz's report relies on).
        kube_config.connect_timeout = Some(watch::CONNECT_TIMEOUT);
        let client = Client::try_from(kube_config).context("connecting to Kubernetes")?;
        let shutdown: Shutdown = shutdown_signal().boxed().shared();
        let draining = Arc::new(AtomicBool::new(false));
        let drained = drained(shutdown.clone(), draining.clone(), common.shutdown_delay);
        let metrics = Metrics::new();
        let health = Arc::new(watch::Health::counting(metrics.watch_lists.clone()));
        let keys = watch_keys(
            &client,
            &common.namespace,
            &common.signing_key_secret,
            &health,
        );
        let pod = std::env::var("POD_NAME")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| "catalio-operator".to_owned());
        let audit = Audit::start(
            common.audit.log.clone(),
            Some(Webhook {
                source: format!("/catalio-operator/{}/{pod}", common.namespace),
                ..common.audit.webhook.clone()
            }),
            metrics.clone(),
        )
        .context("starting the audit trail")?;
        Ok(Self {
            client,
            shutdown,
            drained,
            draining,
            metrics,
            health,
            keys,
            audit,
        })
    }

    /// What /readyz looks at; the servers add their caches.
    fn readiness(&self) -> Readiness {
        Readiness {
            health: self.health.clone(),
            index: None,
            resources: None,
            keys: None,
            draining: self.draining.clone(),
        }
    }
}

/// Probes and metrics, in every mode.
async fn serve_admin(
    listen: SocketAddr,
    readiness: Readiness,
    process: &Process,
) -> anyhow::Result<Task> {
    let admin = server::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let routes = server::admin_routes(readiness, process.metrics.clone(), process.keys.clone());
    let drained = process.drained.clone();
    Ok(server::serve(admin, routes, None, Limits::admin(), drained).boxed())
}

/// The controller: elects a leader, which maintains the keys and
/// reconciles every scope.
async fn lead(leading: Leading, common: Common, process: &Process) -> anyhow::Result<Task> {
    let Common {
        namespace,
        scopes,
        signing_key_secret,
        audience,
        token_url,
        ..
    } = common;
    let client = process.client.clone();
    let rotation = leading.policy.rotate_every.as_secs();
    process
        .metrics
        .signing_key_rotation
        .set(i64::try_from(rotation).unwrap_or(i64::MAX));
    let settings = Settings {
        token_url,
        audience,
        unused_after: leading.unused_after,
    };
    let ctx = Arc::new(controller::Context::new(
        client.clone(),
        settings,
        process.keys.hash_key(),
        process.metrics.clone(),
        process.audit.clone(),
    ));
    let owner = match leading.owner_service_account.as_str() {
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
        health: (process.health).tracker(format!(
            "leader election ({namespace}/{})",
            leading.leader_lease
        )),
        api: Api::<Lease>::namespaced(client, &namespace),
        name: leading.leader_lease,
        identity: leader::identity(),
        duration: leading.lease_duration,
        observed: None,
        owner: owner.clone(),
    };
    let work = leader_work(
        ctx,
        scopes,
        secrets,
        signing_key_secret,
        leading.policy,
        owner,
    );
    Ok(elector.run(work, process.shutdown.clone()).boxed())
}

/// Binds the public port and serves the token endpoint and the JSON:API
/// from the caches it starts; returns the serving task and the caches
/// readiness waits for.
async fn serve_public(
    mut public: Public,
    common: &Common,
    process: &Process,
) -> anyhow::Result<(Task, Arc<CredentialIndex>, Arc<ResourceStore>)> {
    let (client, metrics) = (&process.client, &process.metrics);
    let (index, resources) = watch_for_server(client, &common.scopes, &process.health);
    let usage = UsageRecorder::spawn(client.clone(), public.last_used_interval, metrics.clone());
    let verifier = Arc::new(Verifier {
        keys: process.keys.clone(),
        index: index.clone(),
        issuer: public.issuer.clone(),
        audience: common.audience.clone(),
        leeway: Duration::from_secs(60),
        verified: Default::default(),
    });
    let replays = Arc::new(Replays::default());
    let public_base = jwks_url(&common.token_url, &public.issuer)
        .trim_end_matches("/.well-known/jwks.json")
        .to_owned();
    let service = Arc::new(token_service(
        &mut public,
        common,
        process,
        (&verifier, &replays),
        &usage,
    ));
    let jsonapi = Arc::new(JsonApi {
        index: resources.clone(),
        writes: KubeWrites {
            client: client.clone(),
        },
        verifier,
        limit: RateLimit::new(public.api_rate_limit, public.api_burst),
        quota: public.quota,
        metrics: metrics.clone(),
        openapi: api::openapi::document(&common.token_url).to_string(),
        overview: api::overview::document(&common.token_url).to_string(),
        usage,
        dpop: Dpop {
            public_base,
            replays,
        },
    });
    let tls = match &public.tls {
        Some(cert) => {
            tokio::spawn(cert.clone().watch());
            Some(cert.clone().server_config().context("TLS configuration")?)
        }
        None => None,
    };
    let listener = server::bind(public.listen)
        .await
        .with_context(|| format!("binding {}", public.listen))?;
    info!(listen = %public.listen, "serving");
    let routes = server::routes(service, jsonapi, public.body_read_timeout);
    let limits = Limits {
        max_connections: public.max_connections,
        header_read: public.header_read_timeout,
        idle: public.idle_timeout,
        open: metrics.open_connections.clone(),
    };
    let task = server::serve(listener, routes, tls, limits, process.drained.clone()).boxed();
    Ok((task, index, resources))
}

/// The token endpoint's state.
fn token_service(
    public: &mut Public,
    common: &Common,
    process: &Process,
    (verifier, replays): (&Arc<Verifier>, &Arc<Replays>),
    usage: &UsageRecorder,
) -> TokenService {
    TokenService {
        index: verifier.index.clone(),
        keys: process.keys.clone(),
        signer: BatchSigner::start(),
        verifier: verifier.clone(),
        jwks_url: jwks_url(&common.token_url, &public.issuer),
        settings: TokenSettings {
            issuer: public.issuer.clone(),
            audience: common.audience.clone(),
            default_lifetime: public.token_lifetime,
        },
        token_url: common.token_url.clone(),
        throttle: Throttle::default(),
        issuance: RateLimit::new(public.token_rate_limit, public.token_burst),
        usage: usage.clone(),
        metrics: process.metrics.clone(),
        // RFC 7523: an assertion's audience identifies the authorization
        // server; the issuer does.
        reviewer: TokenReviewer::new(
            process.client.clone(),
            public.issuer.clone(),
            process.metrics.clone(),
        ),
        introspectors: public.introspectors.clone(),
        client: process.client.clone(),
        audit: process.audit.clone(),
        federation: std::mem::take(&mut public.federation),
        replays: replays.clone(),
    }
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
            ctx.hash_key.loaded().await;
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
