//! Command line and environment. Every flag has an environment fallback.

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "catalio-operator",
    version,
    about = "Catalio API credentials for Kubernetes"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Reconcile ApiCredential objects into Secrets.
    Controller(Operator),
    /// Print every CRD as YAML (the content of `crds/`).
    Crds,
}

#[derive(Args, Debug, Clone)]
pub struct Operator {
    /// Issuer of access tokens, also the base of the default token URL.
    #[arg(long, env = "CATALIO_ISSUER", default_value = "https://catalio.ai")]
    pub issuer: String,

    /// Audience access tokens are issued for; written into every Secret.
    #[arg(
        long,
        env = "CATALIO_AUDIENCE",
        default_value = "https://catalio.ai/api/v1"
    )]
    pub audience: String,

    /// Token endpoint URL written into every Secret (default: ISSUER/oauth/token).
    #[arg(long, env = "CATALIO_TOKEN_URL")]
    pub token_url: Option<String>,

    /// Namespaces to watch, comma-separated; all namespaces when empty.
    #[arg(long, env = "CATALIO_WATCH_NAMESPACES", value_delimiter = ',')]
    pub watch_namespaces: Vec<String>,

    /// Log line format.
    #[arg(long, env = "CATALIO_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}
