//! The warp servers: the public one (token endpoint, well-known documents
//! and the JSON:API) and the admin one (health, readiness and metrics).

pub mod assertion;
pub mod body;
mod deadline;
pub mod explorer;
pub mod jsonapi;
pub mod limit;
pub mod oauth;
pub mod throttle;
pub mod tls;

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use jiff::Timestamp;
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::{debug, warn};
use warp::http::StatusCode;
use warp::{Filter, Rejection, Reply};

use crate::api::store::{Index, Writes};
use crate::index::CredentialIndex;
use crate::index::resources::ResourceStore;
use crate::metrics::Metrics;
use crate::token::KeyStore;
pub use jsonapi::JsonApi;
pub use oauth::{Endpoint, OAuthError, TokenService};

/// The route a response answered, named for metrics (never per id).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route(pub &'static str);

fn routed(reply: impl Reply, route: &'static str) -> warp::reply::Response {
    let mut response = reply.into_response();
    response.extensions_mut().insert(Route(route));
    response
}

/// Every public route: the token endpoint, the well-known documents and
/// the JSON:API, with one `recover` for every refusal, and metrics per
/// route.
pub fn routes<S: Index, W: Writes>(
    service: Arc<TokenService>,
    jsonapi: Arc<JsonApi<S, W>>,
    body_timeout: Duration,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Infallible> + Clone {
    let metrics = service.metrics.clone();
    let with = move || {
        let service = service.clone();
        warp::any().map(move || service.clone())
    };
    // The OAuth POST endpoints share their body, headers and peer.
    let oauth = |endpoint: Endpoint| {
        with()
            .and(warp::post())
            .and(warp::header::optional::<String>("content-type"))
            .and(warp::header::optional::<String>("authorization"))
            .and(warp::header::optional::<String>("accept"))
            .and(warp::header::optional::<String>("user-agent"))
            .and(warp::header::optional::<String>("dpop"))
            .and(warp::ext::optional::<Peer>())
            .and(body::limited(oauth::BODY_LIMIT, body_timeout))
            .then(
                move |s: Arc<TokenService>,
                      content_type: Option<String>,
                      authorization: Option<String>,
                      accept: Option<String>,
                      user_agent: Option<String>,
                      dpop: Option<String>,
                      peer: Option<Peer>,
                      body: Result<Bytes, body::BodyError>| async move {
                    let response = match body {
                        Ok(body) => {
                            let call = oauth::Call {
                                content_type: content_type.as_deref(),
                                authorization: authorization.as_deref(),
                                accept: accept.as_deref(),
                                user_agent: user_agent.as_deref(),
                                dpop: dpop.as_deref(),
                                body: &body,
                                source: peer
                                    .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |p| p.0.ip()),
                            };
                            // Boxed: the answer's future (1.7 KiB, a token
                            // request's; the rarer, larger awaits inside it
                            // are boxed where they wait) is otherwise
                            // copied as this one moves.
                            Box::pin(s.respond(endpoint, call, Timestamp::now())).await
                        }
                        Err(e) => oauth::body_error(e).into_response(),
                    };
                    routed(response, endpoint.as_str())
                },
            )
    };
    let token = warp::path!("oauth" / "token").and(oauth(Endpoint::Token));
    let introspect = warp::path!("oauth" / "introspect").and(oauth(Endpoint::Introspect));
    let revoke = warp::path!("oauth" / "revoke").and(oauth(Endpoint::Revoke));
    let jwks = warp::path!(".well-known" / "jwks.json")
        .and(warp::get())
        .and(with())
        .map(|s: Arc<TokenService>| routed(s.jwks(), "jwks"));
    let metadata = warp::path!(".well-known" / "oauth-authorization-server")
        .and(warp::get())
        .and(with())
        .map(|s: Arc<TokenService>| routed(s.metadata(), "metadata"));
    let served = token
        .or(introspect)
        .unify()
        .or(revoke)
        .unify()
        .or(jwks)
        .unify()
        .or(metadata)
        .unify()
        // Boxed: their futures are large (every JSON:API path shape and
        // method nests in them), and an `or` chain's future is as large as
        // its largest branch, moved on every request, token requests too.
        .or(explorer::routes().boxed())
        .unify()
        .or(jsonapi::routes(jsonapi, body_timeout).boxed())
        .unify()
        .recover(recover)
        .unify();
    warp::any().map(Instant::now).and(served).map(
        move |started: Instant, response: warp::reply::Response| {
            let route = response
                .extensions()
                .get::<Route>()
                .map_or("other", |r| r.0);
            metrics.request(route, response.status().as_u16(), started.elapsed());
            response
        },
    )
}

/// Every refusal's error body: JSON:API refusals as JSON:API error
/// documents, the rest as OAuth error objects.
pub(crate) async fn recover(rejection: Rejection) -> Result<warp::reply::Response, Infallible> {
    use warp::reject::MethodNotAllowed;
    if let Some(refusal) = rejection.find::<jsonapi::Refusal>() {
        let response = jsonapi::problem_response(&refusal.problem);
        return Ok(match refusal.route {
            Some(route) => routed(response, route),
            None => response,
        });
    }
    if rejection.find::<jsonapi::NoSuchEndpoint>().is_some() {
        return Ok(jsonapi::problem_response(&jsonapi::not_found()));
    }
    let error = if rejection.is_not_found() {
        OAuthError::new(StatusCode::NOT_FOUND, "invalid_request", "Not found")
    } else if rejection.find::<MethodNotAllowed>().is_some() {
        OAuthError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request",
            "Method not allowed",
        )
    } else {
        OAuthError::invalid_request("The request is malformed")
    };
    Ok(error.into_response())
}

/// What `/readyz` checks: the caches this process has (none in controller
/// mode, where the controller's own watches need no gate).
#[derive(Clone)]
pub struct Readiness {
    /// Broken watches: reported, not made unready (every replica is cut off
    /// from the API server alike, and unready would take their caches away).
    pub health: Arc<crate::watch::Health>,
    pub index: Option<Arc<CredentialIndex>>,
    pub resources: Option<Arc<ResourceStore>>,
    pub keys: Option<Arc<KeyStore>>,
    /// Set when shutdown begins: the pod leaves its Services while it still
    /// serves.
    pub draining: Arc<AtomicBool>,
}

impl Readiness {
    pub fn ready(&self) -> bool {
        self.index.as_ref().is_none_or(|i| i.is_synced())
            && self.resources.as_ref().is_none_or(|r| r.is_synced())
            && self.keys.as_ref().is_none_or(|k| k.is_loaded())
            && !self.draining.load(Ordering::Relaxed)
    }
}

/// `/healthz`, `/readyz` and `/metrics`; `keys` are the keys this process
/// holds, whose age the metrics report.
pub fn admin_routes(
    readiness: Readiness,
    metrics: Arc<Metrics>,
    keys: Arc<KeyStore>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Infallible> + Clone {
    let index = readiness.index.clone();
    let observed = readiness.clone();
    let scrape = warp::path!("metrics").and(warp::get()).map(move || {
        let degraded = observed.health.report().is_some();
        metrics.observe(observed.ready(), degraded, keys.ring().newest());
        let body = metrics.render(index.as_deref());
        warp::reply::with_header(
            body,
            "content-type",
            "text/plain; version=0.0.4; charset=utf-8",
        )
        .into_response()
    });
    let healthz = warp::path!("healthz")
        .and(warp::get())
        .map(|| warp::reply::with_status("ok", StatusCode::OK).into_response());
    let readyz = warp::path!("readyz").and(warp::get()).map(move || {
        let (status, word) = if readiness.ready() {
            (StatusCode::OK, "ready")
        } else {
            (StatusCode::SERVICE_UNAVAILABLE, "not ready")
        };
        let body = match readiness.health.report() {
            Some(degraded) => format!("{word}; {degraded}"),
            None => word.to_owned(),
        };
        warp::reply::with_status(body, status).into_response()
    });
    healthz
        .or(readyz)
        .unify()
        .or(scrape)
        .unify()
        .recover(|_: Rejection| async {
            Ok::<_, Infallible>(
                warp::reply::with_status("not found", StatusCode::NOT_FOUND).into_response(),
            )
        })
        .unify()
}

/// The address a connection came from, as a request extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer(pub SocketAddr);

/// A TLS handshake slower than this is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What one listener grants its clients: how many connections at once,
/// and how long it waits on each.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Connections open at once; past it, new ones wait in the kernel's
    /// backlog until one closes.
    pub max_connections: usize,
    /// Time a client has to send a request head (which also ends an idle
    /// HTTP/1.1 keep-alive connection), and the first bytes of any.
    pub header_read: Duration,
    /// Time a connection may wait on its client, to read or to write,
    /// once past its first bytes (what ends a quiet HTTP/2 connection).
    pub idle: Duration,
    /// Connections open now, for metrics.
    pub open: Gauge,
}

impl Limits {
    /// The admin listener's: kubelet probes and Prometheus, a few at once.
    pub fn admin() -> Self {
        Limits {
            max_connections: 256,
            header_read: Duration::from_secs(10),
            idle: Duration::from_secs(60),
            open: Gauge::default(),
        }
    }
}

/// A connection's slot under [`Limits::max_connections`], given back when
/// the connection ends.
struct Slot {
    _permit: OwnedSemaphorePermit,
    open: Gauge,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.open.dec();
    }
}

/// Any stream a connection is served over: TCP, or TLS over TCP.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Serves `filter` on `listener` until `shutdown` resolves, then finishes
/// the requests in flight. With `tls`, every connection is TLS. Each request
/// carries its connection's [`Peer`].
pub async fn serve<F, R>(
    listener: tokio::net::TcpListener,
    filter: F,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) where
    F: Filter<Extract = (R,), Error = Infallible> + Clone + Send + Sync + 'static,
    R: Reply,
{
    let graceful = GracefulShutdown::new();
    let tls = tls.map(tokio_rustls::TlsAcceptor::from);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read);
    builder.http2().timer(TokioTimer::new());
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // A slot first: at the cap, connections wait unaccepted.
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors, most likely: let some close.
                    warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        limits.open.inc();
        let slot = Slot {
            _permit: permit,
            open: limits.open.clone(),
        };
        let service = warp::service(filter.clone());
        let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(Peer(peer));
            let mut service = service.clone();
            tower_service::Service::call(&mut service, request)
        });
        let connection = Connection {
            stream,
            peer,
            tls: tls.clone(),
            first: limits.header_read,
            idle: limits.idle,
            slot,
        };
        tokio::spawn(connection.serve(builder.clone(), service, graceful.watcher()));
    }
    drop(listener);
    graceful.shutdown().await;
}

/// One accepted connection, holding its slot while it lasts.
struct Connection {
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    tls: Option<tokio_rustls::TlsAcceptor>,
    /// Time to the first bytes, and any silence after.
    first: Duration,
    idle: Duration,
    slot: Slot,
}

impl Connection {
    /// The TLS handshake (bounded), then HTTP until the connection ends or
    /// the graceful shutdown `watcher` ends it.
    async fn serve<S>(
        self,
        builder: auto::Builder<TokioExecutor>,
        service: S,
        watcher: hyper_util::server::graceful::Watcher,
    ) where
        S: hyper::service::Service<Request<Incoming>, Response = warp::reply::Response>
            + Send
            + 'static,
        S::Future: Send + 'static,
        S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let Self {
            stream,
            peer,
            tls,
            first,
            idle,
            slot: _slot,
        } = self;
        let stream: Box<dyn Io> = match tls {
            None => Box::new(stream),
            Some(tls) => match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(stream)).await {
                Ok(Ok(stream)) => Box::new(stream),
                Ok(Err(e)) => {
                    debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    debug!(%peer, "TLS handshake timed out");
                    return;
                }
            },
        };
        let io = TokioIo::new(deadline::Deadline::new(stream, first, idle));
        let connection = builder.serve_connection_with_upgrades(io, service);
        if let Err(e) = watcher.watch(connection).await {
            debug!(%peer, error = %e, "connection ended with an error");
        }
    }
}

pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}
