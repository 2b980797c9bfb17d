//! Command line and environment. Every flag has an environment fallback.

use std::net::SocketAddr;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::token::Algorithm;

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
    /// Run the controller and the HTTP server in one process.
    Run(Operator),
    /// Only reconcile ApiCredential objects into Secrets.
    Controller(Operator),
    /// Only serve the token endpoint and the well-known documents.
    Server(Operator),
    /// Print every CRD as YAML (the content of `crds/`).
    Crds,
    /// Print a reference document in Markdown (the content of `docs/`):
    /// every CRD field, every metric or every flag.
    Reference {
        #[arg(value_enum)]
        document: crate::reference::Document,
    },
}

/// The flags of `run`, `controller` and `server`, by what reads them.
#[derive(Args, Debug, Clone)]
pub struct Operator {
    #[command(flatten)]
    pub common: CommonFlags,
    #[command(flatten)]
    pub public: PublicFlags,
    #[command(flatten)]
    pub controller: ControllerFlags,
}

/// What every mode reads.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Common")]
pub struct CommonFlags {
    /// Admin address: /healthz and /readyz.
    #[arg(long, env = "CATALIO_ADMIN_LISTEN", default_value = "0.0.0.0:9090")]
    pub admin_listen: SocketAddr,

    /// The operator's own namespace, where the signing keys live.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub namespace: String,

    /// Namespaces to watch, comma-separated; all namespaces when empty.
    #[arg(long, env = "CATALIO_WATCH_NAMESPACES", value_delimiter = ',')]
    pub watch_namespaces: Vec<String>,

    /// Secret (in --namespace) holding the signing keys.
    #[arg(
        long,
        env = "CATALIO_SIGNING_KEY_SECRET",
        default_value = "catalio-operator-signing-keys"
    )]
    pub signing_key_secret: String,

    /// Audience access tokens are issued for; written into every Secret.
    #[arg(
        long,
        env = "CATALIO_AUDIENCE",
        default_value = "https://catalio.ai/api/v1"
    )]
    pub audience: String,

    /// Token endpoint URL written into every Secret and published in the
    /// metadata. Default: this server's own, from --listen (a wildcard
    /// address becomes 127.0.0.1), https with TLS. Behind a Service, set it
    /// to the Service's URL.
    #[arg(long, env = "CATALIO_TOKEN_URL")]
    pub token_url: Option<String>,

    /// After SIGTERM, how long to keep serving while reporting not ready,
    /// so load balancers stop sending traffic before the listener closes.
    #[arg(long, env = "CATALIO_SHUTDOWN_DELAY", default_value = "5s")]
    pub shutdown_delay: String,

    /// Log line format.
    #[arg(long, env = "CATALIO_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Where audit records go as JSON lines: `stdout`, a file path, or
    /// `off`.
    #[arg(long, env = "CATALIO_AUDIT_LOG", default_value = "stdout")]
    pub audit_log: crate::audit::LogSink,

    /// A URL that receives every audit record as a CloudEvent; none when
    /// empty.
    #[arg(long, env = "CATALIO_AUDIT_WEBHOOK", default_value = "")]
    pub audit_webhook: String,

    /// Audit records waiting for the webhook at most; more are dropped
    /// (and counted) rather than slow anything down.
    #[arg(long, env = "CATALIO_AUDIT_WEBHOOK_QUEUE", default_value_t = 10_000,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub audit_webhook_queue: u32,

    /// Audit records per webhook request, at most: 1 sends each as a
    /// CloudEvent in HTTP binary mode; more sends the records queued, up to
    /// this many, in CloudEvents' batched mode
    /// (`application/cloudevents-batch+json`).
    #[arg(long, env = "CATALIO_AUDIT_WEBHOOK_BATCH", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub audit_webhook_batch: u32,
}

/// The public server: the token endpoint and the JSON:API (`run`,
/// `server`).
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Public server")]
pub struct PublicFlags {
    /// Public address: token endpoint and well-known documents.
    #[arg(long, env = "CATALIO_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,

    /// Issuer of access tokens (the `iss` claim).
    #[arg(long, env = "CATALIO_ISSUER", default_value = "https://catalio.ai")]
    pub issuer: String,

    /// PEM certificate chain for HTTPS on --listen (with --tls-key-file);
    /// read again when the file changes.
    #[arg(long, env = "CATALIO_TLS_CERT_FILE", requires = "tls_key_file")]
    pub tls_cert_file: Option<std::path::PathBuf>,

    /// PEM private key of --tls-cert-file.
    #[arg(long, env = "CATALIO_TLS_KEY_FILE", requires = "tls_cert_file")]
    pub tls_key_file: Option<std::path::PathBuf>,

    /// Lifetime of access tokens unless a credential sets its own.
    #[arg(long, env = "CATALIO_TOKEN_LIFETIME", default_value = "24h")]
    pub token_lifetime: String,

    /// JSON:API requests per second each organization may make (0: no
    /// limit); past it, 429 with Retry-After.
    #[arg(long, env = "CATALIO_API_RATE_LIMIT", default_value_t = 100)]
    pub api_rate_limit: u32,

    /// Requests an organization may make at once above the rate.
    #[arg(long, env = "CATALIO_API_BURST", default_value_t = 200)]
    pub api_burst: u32,

    /// Objects of each type one organization may hold through the JSON:API
    /// (archived ones count: archiving keeps them); past it, 403.
    #[arg(long, env = "CATALIO_MAX_OBJECTS_PER_KIND", default_value_t = 10_000,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_objects_per_kind: u32,

    /// Bytes of content (names, attributes, related names) of each type one
    /// organization may hold through the JSON:API: a number, or with a
    /// Ki, Mi or Gi suffix; past it, 403.
    #[arg(long, env = "CATALIO_MAX_BYTES_PER_KIND", default_value = "32Mi",
          value_parser = parse_bytes)]
    pub max_bytes_per_kind: u64,

    /// Access tokens per second one credential may be issued (0: no
    /// limit); past it, 429 with Retry-After. Tokens last hours: a client
    /// needs few.
    #[arg(long, env = "CATALIO_TOKEN_RATE_LIMIT", default_value_t = 10)]
    pub token_rate_limit: u32,

    /// Tokens a credential may be issued at once above the rate.
    #[arg(long, env = "CATALIO_TOKEN_BURST", default_value_t = 50)]
    pub token_burst: u32,

    /// How precise `status.lastUsedAt` is: uses (tokens issued, API calls
    /// authenticated) are recorded to this, and each credential's status is
    /// written at most once per this.
    #[arg(long, env = "CATALIO_LAST_USED_INTERVAL", default_value = "1m")]
    pub last_used_interval: String,

    /// Connections the public listener holds open at once; more wait to be
    /// accepted until one closes.
    #[arg(long, env = "CATALIO_MAX_CONNECTIONS", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,

    /// Time a client has to send a request's headers; also how long an
    /// idle HTTP/1.1 keep-alive connection stays open.
    #[arg(long, env = "CATALIO_HEADER_READ_TIMEOUT", default_value = "10s")]
    pub header_read_timeout: String,

    /// Time a client has to send a request's whole body.
    #[arg(long, env = "CATALIO_BODY_READ_TIMEOUT", default_value = "30s")]
    pub body_read_timeout: String,

    /// A connection whose client neither sends nor reads for this long is
    /// closed (quiet HTTP/2 connections; stalled downloads).
    #[arg(long, env = "CATALIO_IDLE_TIMEOUT", default_value = "60s")]
    pub idle_timeout: String,

    /// ServiceAccounts, as `namespace/name`, comma-separated, that may
    /// introspect every organization's tokens (a gateway, say): they
    /// authenticate at /oauth/introspect with their token as a client
    /// assertion.
    #[arg(long, env = "CATALIO_INTROSPECTORS", value_delimiter = ',')]
    pub introspectors: Vec<String>,

    /// A file (YAML or JSON) declaring the outside issuers whose tokens
    /// credentials may name in spec.federation: `issuers: [{name, issuer,
    /// audiences, caBundle, jwks}]`. None when unset.
    #[arg(long, env = "CATALIO_TRUSTED_ISSUERS")]
    pub trusted_issuers: Option<std::path::PathBuf>,
}

/// The controller and the keys it maintains (`run`, `controller`).
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Controller")]
pub struct ControllerFlags {
    /// Algorithm of new signing keys.
    #[arg(long, env = "CATALIO_SIGNING_ALG", value_enum, default_value_t = Algorithm::Rs256)]
    pub signing_alg: Algorithm,

    /// How often a new signing key is made.
    #[arg(long, env = "CATALIO_SIGNING_KEY_ROTATION", default_value = "720h")]
    pub signing_key_rotation: String,

    /// How long a new key is published in the JWKS before it signs; longer
    /// than the JWKS cache lifetime (5m).
    #[arg(long, env = "CATALIO_SIGNING_KEY_PUBLISH_DELAY", default_value = "10m")]
    pub signing_key_publish_delay: String,

    /// ServiceAccount (in --namespace) made the owner of the signing-key
    /// Secret and the leader Lease, so that deleting it (helm uninstall)
    /// garbage-collects both. Empty: they have no owner.
    #[arg(long, env = "CATALIO_OWNER_SERVICE_ACCOUNT", default_value = "")]
    pub owner_service_account: String,

    /// Lease (in --namespace) whose holder reconciles and manages keys.
    #[arg(
        long,
        env = "CATALIO_LEADER_LEASE",
        default_value = "catalio-operator-leader"
    )]
    pub leader_lease: String,

    /// How long a leader's lease lasts without renewal; a new leader takes
    /// over within about this long after the old one dies.
    #[arg(long, env = "CATALIO_LEASE_DURATION", default_value = "15s")]
    pub lease_duration: String,

    /// How long a credential may go unused (no token issued, no API call)
    /// before it gets condition `Unused=True`; `spec.unusedAfter` overrides
    /// it per credential.
    #[arg(long, env = "CATALIO_UNUSED_AFTER", default_value = "2160h")]
    pub unused_after: String,
}

/// A byte count as Kubernetes quantities write it: `1048576`, `64Ki`,
/// `32Mi`, `1Gi`.
fn parse_bytes(input: &str) -> Result<u64, String> {
    let (digits, unit) = input
        .find(|c: char| !c.is_ascii_digit())
        .map_or((input, ""), |at| input.split_at(at));
    let scale: u64 = match unit {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        _ => return Err(format!("{input:?}: the unit must be Ki, Mi or Gi")),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{input:?} is not a positive byte count"))
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[cfg(test)]
mod tests {
    use super::parse_bytes;

    #[test]
    fn byte_counts_read_as_quantities() {
        assert_eq!(parse_bytes("1048576"), Ok(1 << 20));
        assert_eq!(parse_bytes("64Ki"), Ok(64 << 10));
        assert_eq!(parse_bytes("32Mi"), Ok(32 << 20));
        assert_eq!(parse_bytes("2Gi"), Ok(2 << 30));
        for bad in [
            "",
            "0",
            "0Mi",
            "Mi",
            "1.5Mi",
            "32M",
            "32mi",
            "-1",
            "99999999999999Gi",
        ] {
            assert!(parse_bytes(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
