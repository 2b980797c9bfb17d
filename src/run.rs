//! Wires the command line to the controller and the server.

use std::sync::Arc;

use anyhow::Context as _;
use futures::future::join_all;
use tokio::signal::unix::{SignalKind, signal};
use tracing::info;

use crate::config::{Cli, Command, Operator};
use crate::controller::{self, plan::Settings};
use crate::{crd, telemetry};

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Crds => {
            print!("{}", crd::render_all().context("rendering CRDs")?);
            Ok(())
        }
        Command::Controller(operator) => run_controller(operator).await,
    }
}

async fn run_controller(operator: Operator) -> anyhow::Result<()> {
    let Operator {
        issuer,
        audience,
        token_url,
        watch_namespaces,
        log_format,
    } = operator;
    telemetry::init(log_format);
    let client = kube::Client::try_default()
        .await
        .context("connecting to Kubernetes")?;
    let settings = Settings {
        token_url: token_url
            .unwrap_or_else(|| format!("{}/oauth/token", issuer.trim_end_matches('/'))),
        audience,
    };
    let ctx = Arc::new(controller::Context::new(client, settings));
    let shutdown = shutdown_signal();
    info!(namespaces = ?watch_namespaces, "starting controller");
    if watch_namespaces.is_empty() {
        controller::run(ctx, None, shutdown).await;
    } else {
        let shutdown = futures::FutureExt::shared(Box::pin(shutdown));
        join_all(
            watch_namespaces
                .iter()
                .map(|ns| controller::run(ctx.clone(), Some(ns), shutdown.clone())),
        )
        .await;
    }
    info!("controller stopped");
    Ok(())
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
}
