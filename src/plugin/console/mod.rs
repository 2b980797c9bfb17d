//! `kubectl catalio console`: the administrator's screen (Settings → API
//! Credentials) as a page served on loopback, acting with the user's own
//! kubeconfig identity, as `kubectl proxy` does: no server in the cluster,
//! no login of its own, and RBAC applies unchanged.
//!
//! The page and its script are built into the binary (`page/`); the server
//! answers them and a small JSON API for the page, behind [`guard`]. It
//! stops on Ctrl-C, when its terminal goes away (SIGHUP), and after a
//! while with no page open.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use kube::Client;
use warp::http::{HeaderMap, Method, StatusCode};
use warp::path::FullPath;
use warp::reply::{Reply, Response};
use warp::{Filter, Rejection};

use guard::{Guard, Refusal};
use handlers::{Answer, Failure};

mod guard;
mod handlers;
mod page;
mod view;

/// How the console is started.
pub struct Options {
    /// 0: any free port.
    pub port: u16,
    pub open: bool,
    pub idle_timeout: Duration,
}

/// What the handlers share: the user's client and where they started.
pub struct Console {
    client: Client,
    namespace: String,
    context: Option<String>,
    activity: Activity,
}

/// When the page last did something, and how many pages follow the list.
pub struct Activity {
    started: Instant,
    last: AtomicU64,
    streams: Arc<AtomicUsize>,
}

/// An open stream, counted until dropped.
pub struct OpenStream(Arc<AtomicUsize>);

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Activity {
    fn new() -> Self {
        Activity {
            started: Instant::now(),
            last: AtomicU64::new(0),
            streams: Arc::new(AtomicUsize::new(0)),
        }
    }

    fn touch(&self) {
        let now = self.started.elapsed().as_millis();
        self.last
            .store(u64::try_from(now).unwrap_or(u64::MAX), Ordering::SeqCst);
    }

    pub fn stream_opened(&self) -> OpenStream {
        self.streams.fetch_add(1, Ordering::SeqCst);
        OpenStream(self.streams.clone())
    }

    /// How long nothing has happened: zero while a page follows the list.
    fn idle(&self) -> Duration {
        if self.streams.load(Ordering::SeqCst) > 0 {
            return Duration::ZERO;
        }
        let last = Duration::from_millis(self.last.load(Ordering::SeqCst));
        self.started.elapsed().saturating_sub(last)
    }
}

/// Serves the console until it is stopped or idle.
pub async fn run(
    client: Client,
    namespace: String,
    context: Option<String>,
    options: Options,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", options.port))
        .await
        .with_context(|| format!("binding 127.0.0.1:{}", options.port))?;
    let port = listener.local_addr()?.port();
    let guard = Arc::new(Guard::new(port)?);
    let console = Arc::new(Console {
        client,
        namespace: namespace.clone(),
        context,
        activity: Activity::new(),
    });
    let url = format!("http://127.0.0.1:{port}/#token={}", guard.token());
    let opened = match options.open {
        true => page::open_in_browser(&url),
        false => None,
    };
    match &opened {
        Some(_) => println!(
            "Catalio console for namespace {namespace} at http://127.0.0.1:{port}/ (opened in your browser)"
        ),
        None => println!("Catalio console for namespace {namespace}: open {url}"),
    }
    println!(
        "Ctrl-C stops it; it also stops after {} with no page open.",
        crate::duration::format(options.idle_timeout)
    );
    let server = warp::serve(routes(console.clone(), guard)).incoming(listener);
    let stopped = tokio::select! {
        () = server.run() => "the server stopped",
        reason = stop_signal() => reason,
        () = idle(&console.activity, options.idle_timeout) => "no page was open",
    };
    drop(opened);
    println!("Catalio console stopped: {stopped}");
    Ok(())
}

/// Ctrl-C, SIGTERM, or the terminal going away (SIGHUP).
async fn stop_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangup = signal(SignalKind::hangup()).ok();
    let mut terminate = signal(SignalKind::terminate()).ok();
    let hangup = async {
        match hangup.as_mut() {
            Some(s) => s.recv().await,
            None => std::future::pending().await,
        }
    };
    let terminate = async {
        match terminate.as_mut() {
            Some(s) => s.recv().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "interrupted",
        _ = hangup => "the terminal went away",
        _ = terminate => "terminated",
    }
}

/// Returns once nothing has happened for `timeout`.
async fn idle(activity: &Activity, timeout: Duration) {
    activity.touch();
    loop {
        let idle = activity.idle();
        if idle >= timeout {
            return;
        }
        tokio::time::sleep((timeout - idle).max(Duration::from_millis(100))).await;
    }
}

/// Every request passes the guard first; every response is hardened.
fn routes(
    console: Arc<Console>,
    guard: Arc<Guard>,
) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone {
    let checked = warp::method()
        .and(warp::path::full())
        .and(warp::header::headers_cloned())
        .and_then(move |method: Method, path: FullPath, headers: HeaderMap| {
            let verdict = guard.check(&method, path.as_str(), &headers);
            async move { verdict.map_err(warp::reject::custom) }
        })
        .untuple_one();
    let seen = {
        let console = console.clone();
        warp::any().map(move || {
            console.activity.touch();
        })
    };
    let api = api_routes(console);
    checked
        .and(seen)
        .untuple_one()
        .and(page::routes().or(api).unify())
        .recover(refused)
        .unify()
        .map(|mut response: Response| {
            guard::harden(response.headers_mut());
            response
        })
}

impl warp::reject::Reject for Refusal {}

async fn refused(rejection: Rejection) -> Result<Response, Infallible> {
    let (status, message) = match rejection.find::<Refusal>() {
        Some(r) => (r.status, r.message.to_owned()),
        None if rejection.is_not_found() => (StatusCode::NOT_FOUND, "not found".to_owned()),
        None => match rejection.find::<warp::filters::body::BodyDeserializeError>() {
            Some(e) => (StatusCode::BAD_REQUEST, e.to_string()),
            None => (StatusCode::BAD_REQUEST, "bad request".to_owned()),
        },
    };
    Ok(Failure::new(status, message).into_response())
}

/// The query every API call names its organization with.
#[derive(serde::Deserialize)]
struct Where {
    namespace: String,
}

fn organization() -> impl Filter<Extract = (String,), Error = Rejection> + Clone {
    warp::query::<Where>().and_then(|w: Where| async move {
        match crate::crd::is_namespace(&w.namespace) {
            true => Ok(w.namespace),
            false => Err(warp::reject::custom(Refusal {
                status: StatusCode::BAD_REQUEST,
                message: "namespace must be a namespace's name",
            })),
        }
    })
}

/// A JSON body of at most 64 KiB.
fn body<T: serde::de::DeserializeOwned + Send>()
-> impl Filter<Extract = (T,), Error = Rejection> + Clone {
    warp::body::content_length_limit(64 * 1024).and(warp::body::json())
}

fn answered(answer: Answer) -> Response {
    answer.unwrap_or_else(Reply::into_response)
}

/// The page's API, one route per operation.
fn api_routes(
    console: Arc<Console>,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let with = move || {
        let console = console.clone();
        warp::any().map(move || console.clone())
    };
    let api = warp::path("api");
    let session = api
        .and(warp::path!("session"))
        .and(warp::get())
        .and(with())
        .then(handlers::session);
    let list = api
        .and(warp::path!("credentials"))
        .and(warp::get())
        .and(with())
        .and(organization())
        .then(handlers::list);
    let stream = api
        .and(warp::path!("stream"))
        .and(warp::get())
        .and(with())
        .and(organization())
        .map(handlers::stream);
    let create = api
        .and(warp::path!("credentials"))
        .and(warp::post())
        .and(with())
        .and(organization())
        .and(body())
        .then(handlers::create);
    let rotate = api
        .and(warp::path!("credentials" / String / "rotate"))
        .and(warp::post())
        .and(with())
        .and(organization())
        .and(body())
        .then(|name, console, namespace, form| handlers::rotate(console, namespace, name, form));
    let revoke = api
        .and(warp::path!("credentials" / String / "revoke"))
        .and(warp::post())
        .and(with())
        .and(organization())
        .and(body())
        .then(|name, console, namespace, form| handlers::revoke(console, namespace, name, form));
    let delete = api
        .and(warp::path!("credentials" / String))
        .and(warp::delete())
        .and(with())
        .and(organization())
        .then(|name, console, namespace| handlers::delete(console, namespace, name));
    session
        .or(list)
        .unify()
        .or(stream)
        .unify()
        .or(create)
        .unify()
        .or(rotate)
        .unify()
        .or(revoke)
        .unify()
        .or(delete)
        .unify()
        .map(answered)
}
