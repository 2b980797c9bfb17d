//! Wires the command line to the controller and the servers.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail};
use futures::FutureExt;
use futures::future::{BoxFuture, Shared, join_all};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use kube::api::DynamicObject;
use kube::core::DeserializeGuard;
use kube::{Api, Client};
use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info, warn};

use crate::api::{self, ApiService, limit::RateLimit, registry};
use crate::config::{Cli, Command, Operator};
use crate::controller::{self, plan::Settings};
use crate::crd::ApiCredential;
use crate::index::resources::ResourceStore;
use crate::index::{self, CredentialIndex};
use crate::leader::{self, Elector};
use crate::metrics::Metrics;
use crate::server::tls::{CertFiles, ReloadingCert};
use crate::server::{self, Readiness, TokenService, throttle::Throttle};
use crate::token::{KeyStore, RotationPolicy, Verifier, keystore};
use crate::usage::UsageRecorder;
use crate::{crd, duration, telemetry};

type Shutdown = Shared<BoxFuture<'static, ()>>;

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
        leader_lease,
        lease_duration,
        shutdown_delay,
        api_rate_limit,
        api_burst,
        log_format,
    } = operator;
    telemetry::init(log_format);

    let parse =
        |flag: &str, value: &str| duration::parse(value).with_context(|| format!("--{flag}"));
    let token_lifetime = parse("token-lifetime", &token_lifetime)?;
    let shutdown_delay = parse("shutdown-delay", &shutdown_delay)?;
    let lease_duration = parse("lease-duration", &lease_duration)?;
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

    let client = Client::try_default()
        .await
        .context("connecting to Kubernetes")?;
    let shutdown: Shutdown = shutdown_signal().boxed().shared();
    // The servers keep serving, unready, for the shutdown delay; the
    // controller stops at once.
    let draining = Arc::new(AtomicBool::new(false));
    let drained: Shutdown = {
        let (shutdown, draining) = (shutdown.clone(), draining.clone());
        async move {
            shutdown.await;
            draining.store(true, Ordering::Relaxed);
            info!(delay = ?shutdown_delay, "not ready; draining before the listener closes");
            tokio::time::sleep(shutdown_delay).await;
        }
        .boxed()
        .shared()
    };
    let mut tasks = Vec::new();
    let metrics = Metrics::new();
    let mut readiness = Readiness {
        index: None,
        resources: None,
        keys: None,
        draining,
    };

    // Every mode holds the keys: servers sign and verify with them, the
    // controller hashes secrets with the hash key. Only the leader writes
    // them.
    let keys = KeyStore::new();
    {
        let secrets = Api::<Secret>::namespaced(client.clone(), &namespace);
        let (keys, name) = (keys.clone(), signing_key_secret.clone());
        tokio::spawn(async move {
            if let Err(e) = keystore::watch(secrets, name, keys).await {
                error!(error = %e, "signing-key watch ended");
            }
        });
    }

    if server {
        let scopes: Vec<Option<String>> = if watch_namespaces.is_empty() {
            vec![None]
        } else {
            watch_namespaces.iter().cloned().map(Some).collect()
        };
        // One index per process, fed by one watch per scope; each relist
        // replaces only its own scope.
        let index = CredentialIndex::with_watches(scopes.len());
        for scope in scopes.clone() {
            let api: Api<DeserializeGuard<ApiCredential>> = match &scope {
                Some(ns) => Api::namespaced(client.clone(), ns),
                None => Api::all(client.clone()),
            };
            let index = index.clone();
            tokio::spawn(async move {
                if let Err(e) = index::run_credential_watch(api, scope, index).await {
                    error!(error = %e, "credential watch ended");
                }
            });
        }
        // The JSON:API's objects: one watch per type and scope.
        let resources = ResourceStore::new(scopes.len() * registry::TYPES.len());
        for (i, (ty, scope)) in registry::TYPES
            .iter()
            .flat_map(|ty| scopes.iter().map(move |s| (ty, s.clone())))
            .enumerate()
        {
            let resource = api::api_resource(ty);
            let objects: Api<DynamicObject> = match &scope {
                Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
                None => Api::all_with(client.clone(), &resource),
            };
            let resources = resources.clone();
            tokio::spawn(async move {
                if let Err(e) = index::run_resource_watch(objects, ty, i, scope, resources).await {
                    error!(error = %e, kind = ty.kind, "resource watch ended");
                }
            });
        }
        let jwks_url = match token_url.strip_suffix("/oauth/token") {
            Some(base) => format!("{base}/.well-known/jwks.json"),
            None => format!("{}/.well-known/jwks.json", issuer.trim_end_matches('/')),
        };
        let jsonapi = Arc::new(ApiService {
            store: resources.clone(),
            verifier: Verifier {
                keys: keys.clone(),
                index: index.clone(),
                issuer: issuer.clone(),
                audience: audience.clone(),
                leeway: Duration::from_secs(60),
            },
            client: client.clone(),
            limit: RateLimit::new(api_rate_limit, api_burst),
            metrics: metrics.clone(),
            openapi: api::openapi::document(&token_url).to_string(),
        });
        let service = Arc::new(TokenService {
            index: index.clone(),
            keys: keys.clone(),
            issuer,
            audience: audience.clone(),
            token_url: token_url.clone(),
            jwks_url,
            default_lifetime: token_lifetime,
            throttle: Throttle::default(),
            usage: UsageRecorder::spawn(client.clone(), Duration::from_secs(60)),
            metrics: metrics.clone(),
        });
        let public = server::bind(listen)
            .await
            .with_context(|| format!("binding {listen}"))?;
        info!(%listen, "serving");
        let tls_config = match tls {
            Some(cert) => {
                tokio::spawn(cert.clone().watch());
                Some(cert.server_config().context("TLS configuration")?)
            }
            None => None,
        };
        tasks.push(
            server::serve(
                public,
                server::routes(service, jsonapi),
                tls_config,
                drained.clone(),
            )
            .boxed(),
        );
        readiness.index = Some(index);
        readiness.resources = Some(resources);
        readiness.keys = Some(keys.clone());
    }

    // Probes and metrics in every mode.
    let admin = server::bind(admin_listen)
        .await
        .with_context(|| format!("binding {admin_listen}"))?;
    tasks.push(
        server::serve(
            admin,
            server::admin_routes(readiness, metrics.clone()),
            None,
            drained.clone(),
        )
        .boxed(),
    );

    if controller {
        let settings = Settings {
            token_url,
            audience,
        };
        let ctx = Arc::new(controller::Context::new(
            client.clone(),
            settings,
            keys.clone(),
            metrics,
        ));
        let namespaces: Vec<Option<String>> = if watch_namespaces.is_empty() {
            vec![None]
        } else {
            watch_namespaces.into_iter().map(Some).collect()
        };
        let secrets = Api::<Secret>::namespaced(client.clone(), &namespace);
        // Only the leader reconciles and manages the keys; it reconciles
        // once the hash key is loaded.
        let work = move || -> BoxFuture<'static, ()> {
            let maintenance = keystore::run_maintenance(
                secrets.clone(),
                signing_key_secret.clone(),
                policy.clone(),
            );
            let (ctx, namespaces) = (ctx.clone(), namespaces.clone());
            let controllers =
                async move {
                    ctx.keys.hasher_loaded().await;
                    join_all(namespaces.into_iter().map(|ns| {
                        let ctx = ctx.clone();
                        info!(namespace = ?ns, "starting controller");
                        async move {
                            controller::run(ctx, ns.as_deref(), futures::future::pending()).await
                        }
                    }))
                    .await;
                };
            futures::future::join(maintenance, controllers)
                .map(|_| ())
                .boxed()
        };
        let elector = Elector {
            api: Api::<Lease>::namespaced(client, &namespace),
            name: leader_lease,
            identity: leader::identity(),
            duration: lease_duration,
        };
        tasks.push(elector.run(work, shutdown.clone()).boxed());
    }

    join_all(tasks).await;
    info!("stopped");
    Ok(())
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
}
