//! The webhook `bench/oauth.sh` sends the audit trail to:
//!
//!   audit_sink ADDRESS healthy
//!     answers every request 204 at once (HTTP/1.1, keep-alive) and counts
//!     them; prints the count on SIGTERM or Ctrl-C;
//!   audit_sink ADDRESS black-hole
//!     accepts connections and never reads or answers them: every delivery
//!     waits for its timeout.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(address), Some(mode)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: audit_sink ADDRESS healthy|black-hole");
    };
    let listener = tokio::net::TcpListener::bind(&address).await?;
    let received = Arc::new(AtomicU64::new(0));
    let counted = received.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        println!("{}", counted.load(Ordering::Relaxed));
        std::process::exit(0);
    });
    let mut held = Vec::new();
    loop {
        let (stream, _) = listener.accept().await?;
        if mode == "black-hole" {
            // Kept open, never read.
            held.push(stream);
            continue;
        }
        let received = received.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let received = received.clone();
                async move {
                    // The body is dropped unread; the count is what matters.
                    drop(request);
                    received.fetch_add(1, Ordering::Relaxed);
                    let mut response = Response::new(String::new());
                    *response.status_mut() = hyper::StatusCode::NO_CONTENT;
                    Ok::<_, Infallible>(response)
                }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
