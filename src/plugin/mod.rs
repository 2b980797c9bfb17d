//! `kubectl catalio`: the binary started as `kubectl-catalio` (a symlink on
//! PATH is enough) is a kubectl plugin for the people who hold credentials:
//! rotate and revoke them and wait for the result, get an access token for
//! a script, see which are used, unused or due for rotation.
//!
//! Started as `kubectl_complete-catalio`, it answers kubectl's completion
//! requests (kubectl 1.26+) with subcommands and credential names.
//!
//! Like kubectl, it uses the kubeconfig (`KUBECONFIG`, `--context`) and
//! its context's namespace unless `-n` says otherwise. Nothing it prints or
//! reports carries a client secret; `token` prints the access token only.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use jiff::Timestamp;
use kube::api::{Api, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, ResourceExt};

use crate::crd::{ApiCredential, ClientSecretMode, Phase};
use crate::duration;
use credentials::{get, read_secret, revoke, rotate};

mod console;
mod credentials;

/// The name the binary answers to as a plugin.
pub const PLUGIN_NAME: &str = "kubectl-catalio";
/// The name kubectl runs for completion of `kubectl catalio ...`.
pub const COMPLETION_NAME: &str = "kubectl_complete-catalio";

#[derive(Parser, Debug)]
#[command(
    name = PLUGIN_NAME,
    bin_name = "kubectl catalio",
    version,
    about = "Rotate, revoke and inspect Catalio API credentials"
)]
pub struct PluginCli {
    /// Namespace of the credentials (default: the context's namespace).
    #[arg(short, long, global = true)]
    pub namespace: Option<String>,
    /// Kubeconfig context to use (default: the current one).
    #[arg(long, global = true)]
    pub context: Option<String>,
    #[command(subcommand)]
    pub command: PluginCommand,
}

#[derive(Subcommand, Debug)]
pub enum PluginCommand {
    /// Rotate the client secret now: raise spec.rotation.counter, wait until
    /// the new secret is Ready and print its hash.
    Rotate {
        name: String,
        /// How long to wait for the new secret.
        #[arg(long, default_value = "2m")]
        timeout: String,
    },
    /// Revoke the credential for good (asks first unless --yes).
    Revoke {
        name: String,
        /// Do not ask for confirmation.
        #[arg(short, long)]
        yes: bool,
        #[arg(long, default_value = "2m")]
        timeout: String,
    },
    /// Print an access token for the credential, from its Secret (for
    /// scripts).
    Token {
        name: String,
        /// Token endpoint to ask instead of the Secret's token_url (for
        /// example through a port-forward).
        #[arg(long)]
        token_url: Option<String>,
        /// PEM CA certificate to trust for an https token endpoint, beside
        /// the system's roots.
        #[arg(long)]
        ca_file: Option<PathBuf>,
        /// Narrow the token to these space-separated scopes.
        #[arg(long)]
        scope: Option<String>,
        /// Send the client secret over plain http to a host other than
        /// loopback (a port-forward on 127.0.0.1 needs no flag).
        #[arg(long)]
        insecure: bool,
    },
    /// List credentials with their last use, whether they are unused and
    /// when they rotate next.
    Status {
        /// Credentials of every namespace.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
    },
    /// Serve the administrator's screen (Settings → API Credentials) on
    /// loopback and open it in the browser: list, create, rotate, revoke
    /// and delete credentials, as this kubeconfig's user may.
    Console(ConsoleArgs),
    /// Print a completion script for kubectl-catalio (`kubectl catalio`
    /// completes through kubectl_complete-catalio, a symlink to the same
    /// binary).
    Completion { shell: CompletionShell },
}

#[derive(clap::Args, Debug)]
pub struct ConsoleArgs {
    /// Port on 127.0.0.1 (default: any free one).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Print the link instead of opening the browser.
    #[arg(long)]
    no_open: bool,
    /// Stop after this long with no page open.
    #[arg(long, default_value = "30m")]
    idle_timeout: String,
}

impl ConsoleArgs {
    fn options(&self) -> anyhow::Result<console::Options> {
        let idle = &self.idle_timeout;
        Ok(console::Options {
            port: self.port,
            open: !self.no_open,
            idle_timeout: duration::parse(idle)
                .with_context(|| format!("--idle-timeout {idle}"))?,
        })
    }
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum CompletionShell {
    Bash,
    Zsh,
}

/// Whether `argv0` names the plugin (or its completion helper).
pub fn started_as(argv0: &std::ffi::OsStr, name: &str) -> bool {
    std::path::Path::new(argv0)
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n == name || n.strip_suffix(".exe") == Some(name))
}

pub async fn run(cli: PluginCli) -> anyhow::Result<()> {
    if let PluginCommand::Completion { shell } = cli.command {
        let shell = match shell {
            CompletionShell::Bash => clap_complete::Shell::Bash,
            CompletionShell::Zsh => clap_complete::Shell::Zsh,
        };
        let mut command = PluginCli::command();
        clap_complete::generate(shell, &mut command, PLUGIN_NAME, &mut std::io::stdout());
        return Ok(());
    }
    let (client, default_ns) = connect(cli.context.as_deref()).await?;
    let namespace = cli.namespace.unwrap_or(default_ns);
    if let PluginCommand::Console(args) = &cli.command {
        return console::run(client, namespace, cli.context, args.options()?).await;
    }
    let creds = Api::<ApiCredential>::namespaced(client.clone(), &namespace);
    let mut out = std::io::stdout().lock();
    match cli.command {
        PluginCommand::Rotate { name, timeout } => {
            let rotated = rotate(&creds, &name, None, wait_for(&timeout)?).await?;
            let hash = rotated
                .status
                .and_then(|s| s.secret_hash)
                .unwrap_or_default();
            writeln!(out, "{name} rotated: client secret {hash}")?;
        }
        PluginCommand::Revoke { name, yes, timeout } => {
            let cred = get(&creds, &name, &namespace).await?;
            if cred.spec.revoked {
                bail!("{name} is already revoked");
            }
            if !yes && !confirm(&name, &namespace)? {
                bail!("{name} was not revoked");
            }
            revoke(&creds, &name, wait_for(&timeout)?).await?;
            writeln!(out, "{name} revoked")?;
        }
        PluginCommand::Token {
            name,
            token_url,
            ca_file,
            scope,
            insecure,
        } => {
            let cred = get(&creds, &name, &namespace).await?;
            let ask = Ask {
                token_url,
                ca_file,
                scope,
                insecure,
            };
            let token = token(&client, &namespace, &cred, ask).await?;
            writeln!(out, "{token}")?;
        }
        PluginCommand::Status { all_namespaces } => {
            let api = if all_namespaces {
                Api::<ApiCredential>::all(client)
            } else {
                creds
            };
            let list = api.list(&ListParams::default()).await?;
            write!(
                out,
                "{}",
                status_table(&list.items, all_namespaces, Timestamp::now())
            )?;
        }
        PluginCommand::Completion { .. } | PluginCommand::Console(_) => {
            unreachable!("answered above")
        }
    }
    Ok(())
}

async fn connect(context: Option<&str>) -> anyhow::Result<(Client, String)> {
    let options = KubeConfigOptions {
        context: context.map(str::to_owned),
        ..Default::default()
    };
    let config = match Kubeconfig::read() {
        Ok(kubeconfig) => kube::Config::from_custom_kubeconfig(kubeconfig, &options)
            .await
            .context("reading the kubeconfig")?,
        Err(_) if context.is_none() => kube::Config::infer()
            .await
            .context("no kubeconfig and not in a cluster")?,
        Err(e) => return Err(e).context("reading the kubeconfig"),
    };
    let namespace = config.default_namespace.clone();
    Ok((Client::try_from(config)?, namespace))
}

fn wait_for(timeout: &str) -> anyhow::Result<Duration> {
    duration::parse(timeout).with_context(|| format!("--timeout {timeout}"))
}

/// Asks, and reads the answer from stdin (a terminal, or a pipe in a
/// script); anything but y or yes, an empty stdin included, is no.
fn confirm(name: &str, namespace: &str) -> anyhow::Result<bool> {
    let stdin = std::io::stdin();
    eprint!(
        "Revoke {name} in namespace {namespace}? Its secret and tokens stop working and it can never be restored. [y/N] "
    );
    std::io::stderr().flush()?;
    let mut answer = String::new();
    stdin.lock().read_line(&mut answer)?;
    Ok(matches!(
        answer.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}

/// How `token` asks the token endpoint.
struct Ask {
    /// Instead of the Secret's token_url.
    token_url: Option<String>,
    ca_file: Option<PathBuf>,
    scope: Option<String>,
    /// Plain http to a host other than loopback is allowed.
    insecure: bool,
}

/// An access token from the token endpoint, with the id and secret of the
/// credential's Secret. The secret goes where the URL says and nowhere
/// else: no redirect is followed (a 307 or 308 would re-post it to any
/// host), and plain http only to loopback unless `insecure`.
async fn token(
    client: &Client,
    namespace: &str,
    cred: &ApiCredential,
    ask: Ask,
) -> anyhow::Result<String> {
    let name = cred.name_any();
    if cred.spec.revoked {
        bail!("{name} is revoked");
    }
    if cred.spec.client_secret == ClientSecretMode::Disabled {
        bail!("{name} has no client secret: its ServiceAccounts get tokens with their own tokens");
    }
    let secret = read_secret(client, namespace, cred).await?;
    let url = ask.token_url.unwrap_or(secret.token_url);
    check_destination(&url, ask.insecure)?;
    let mut form = vec![
        ("grant_type", "client_credentials".to_owned()),
        ("client_id", secret.client_id),
        ("client_secret", secret.client_secret),
    ];
    if let Some(scope) = ask.scope {
        form.push(("scope", scope));
    }
    let mut http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none());
    if let Some(path) = ask.ca_file {
        let pem = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        http = http.add_root_certificate(
            reqwest::Certificate::from_pem(&pem)
                .with_context(|| format!("{} is no PEM certificate", path.display()))?,
        );
    }
    let response = http
        .build()?
        .post(&url)
        .form(&form)
        .send()
        .await
        // Without the URL's query or the body: neither is worth leaking.
        .map_err(|e| anyhow::anyhow!("asking {url} for a token: {}", e.without_url()))?;
    let status = response.status();
    if status.is_redirection() {
        bail!(
            "{url} answered {status}, a redirect, which is not followed with a client secret; give the token endpoint's own URL with --token-url"
        );
    }
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    match body["access_token"].as_str() {
        Some(token) if status.is_success() => Ok(token.to_owned()),
        _ => bail!(
            "{url} answered {status}: {} {}",
            body["error"].as_str().unwrap_or("(no error code)"),
            body["error_description"].as_str().unwrap_or_default()
        ),
    }
}

/// Refuses to send a client secret over plain http to anything but
/// loopback, unless `insecure`.
fn check_destination(url: &str, insecure: bool) -> anyhow::Result<()> {
    let parsed = reqwest::Url::parse(url).with_context(|| format!("{url} is not a URL"))?;
    let host = parsed.host_str().unwrap_or_default();
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if loopback || insecure => Ok(()),
        "http" => bail!(
            "refusing to send the client secret over plain http to {host}: use https, a port-forward to 127.0.0.1, or --insecure"
        ),
        other => bail!("{url}: the token URL must be http or https, not {other}"),
    }
}

/// How long ago or from now, in the largest whole unit.
fn relative(at: Timestamp, now: Timestamp) -> String {
    let seconds = at.as_second() - now.as_second();
    let (n, ago) = (seconds.unsigned_abs(), seconds < 0);
    let amount = match n {
        0..60 => format!("{n}s"),
        60..3600 => format!("{}m", n / 60),
        3600..86_400 => format!("{}h", n / 3600),
        _ => format!("{}d", n / 86_400),
    };
    if ago {
        format!("{amount} ago")
    } else {
        format!("in {amount}")
    }
}

/// The `status` table, in columns as kubectl prints them.
pub fn status_table(creds: &[ApiCredential], namespaces: bool, now: Timestamp) -> String {
    let mut rows = vec![
        [
            "NAMESPACE",
            "NAME",
            "PHASE",
            "CLIENT ID",
            "LAST USED",
            "UNUSED",
            "NEXT ROTATION",
        ]
        .map(str::to_owned)
        .to_vec(),
    ];
    let mut sorted: Vec<&ApiCredential> = creds.iter().collect();
    sorted.sort_by_key(|c| (c.namespace(), c.name_any()));
    for c in sorted {
        let status = c.status.clone().unwrap_or_default();
        let unused = status
            .conditions
            .iter()
            .any(|c| c.type_ == "Unused" && c.status == "True");
        let revoked = status.phase == Some(Phase::Revoked);
        rows.push(vec![
            c.namespace().unwrap_or_default(),
            c.name_any(),
            status.phase.map_or("Pending", Phase::as_str).to_owned(),
            status.client_id.unwrap_or_else(|| "-".to_owned()),
            status
                .last_used_at
                .map_or_else(|| "never".to_owned(), |t| relative(t.0, now)),
            if revoked {
                "-"
            } else if unused {
                "yes"
            } else {
                "no"
            }
            .to_owned(),
            match status.next_rotation_at {
                Some(t) if !revoked && t.0 <= now => "due".to_owned(),
                Some(t) if !revoked => relative(t.0, now),
                _ => "-".to_owned(),
            },
        ]);
    }
    let skip = usize::from(!namespaces);
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .skip(skip)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(cells.join("   ").trim_end());
        out.push('\n');
    }
    out
}

/// kubectl's completion protocol (cobra's `__complete`): `args` are the
/// words after `kubectl catalio`, the last one being completed. Prints one
/// candidate per line, then `:4` (no file completion).
pub async fn complete(args: &[String]) -> anyhow::Result<()> {
    let (last, before) = match args.split_last() {
        Some((last, before)) => (last.as_str(), before),
        None => ("", &[][..]),
    };
    // Words that are not flags, and the values of the flags that take
    // one (`-n x`, `--namespace=x`, `--context x`).
    let mut words: Vec<&str> = Vec::new();
    let mut values: Vec<(&str, &str)> = Vec::new();
    let mut rest = before.iter().map(String::as_str);
    while let Some(word) = rest.next() {
        match word {
            "-n" | "--namespace" | "--context" => values.push((word, rest.next().unwrap_or(""))),
            w if w.starts_with("--") && w.contains('=') => {
                let (name, value) = w.split_once('=').unwrap_or((w, ""));
                values.push((name, value));
            }
            w if w.starts_with('-') => {}
            w => words.push(w),
        }
    }
    let flag = |short: &str, long: &str| {
        values
            .iter()
            .rev()
            .find(|(name, _)| *name == short || *name == long)
            .map(|(_, value)| value.to_string())
    };
    let candidates: Vec<String> = match words.as_slice() {
        [] => PluginCli::command()
            .get_subcommands()
            .map(|c| c.get_name().to_owned())
            .filter(|n| n != "help")
            .collect(),
        ["rotate" | "revoke" | "token"] => {
            let (client, default_ns) = connect(flag("", "--context").as_deref()).await?;
            let namespace = flag("-n", "--namespace").unwrap_or(default_ns);
            Api::<ApiCredential>::namespaced(client, &namespace)
                .list(&ListParams::default())
                .await?
                .items
                .iter()
                .filter(|c| !c.spec.revoked)
                .map(ResourceExt::name_any)
                .collect()
        }
        ["completion"] => vec!["bash".to_owned(), "zsh".to_owned()],
        _ => vec![],
    };
    let mut out = std::io::stdout().lock();
    for c in candidates.iter().filter(|c| c.starts_with(last)) {
        writeln!(out, "{c}")?;
    }
    writeln!(out, ":4")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plugin_is_recognised_by_the_name_it_runs_under() {
        for path in ["/usr/local/bin/kubectl-catalio", "kubectl-catalio"] {
            assert!(started_as(path.as_ref(), PLUGIN_NAME), "{path}");
        }
        for path in ["/usr/bin/catalio-operator", "/x/kubectl-catalio-old"] {
            assert!(!started_as(path.as_ref(), PLUGIN_NAME), "{path}");
        }
        assert!(started_as(
            "/bin/kubectl_complete-catalio".as_ref(),
            COMPLETION_NAME
        ));
    }

    #[test]
    fn a_client_secret_goes_over_plain_http_to_loopback_only() {
        for ok in [
            "https://catalio.example/oauth/token",
            "http://127.0.0.1:8080/oauth/token",
            "http://localhost/oauth/token",
            "http://[::1]:80/oauth/token",
        ] {
            assert!(check_destination(ok, false).is_ok(), "{ok}");
        }
        for plain in [
            "http://catalio.example/oauth/token",
            "http://10.0.0.1/oauth/token",
            "http://0.0.0.0:1/oauth/token",
            "http://localhost.evil.example/oauth/token",
        ] {
            let refused = check_destination(plain, false).unwrap_err().to_string();
            assert!(refused.contains("plain http"), "{plain}: {refused}");
            assert!(check_destination(plain, true).is_ok(), "{plain}");
        }
        assert!(check_destination("ftp://catalio.example/t", true).is_err());
        assert!(check_destination("not a url", true).is_err());
    }

    #[test]
    fn times_read_as_people_say_them() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let at = |s: i64| Timestamp::from_second(1_800_000_000 + s).unwrap();
        assert_eq!(relative(at(-30), now), "30s ago");
        assert_eq!(relative(at(-7200), now), "2h ago");
        assert_eq!(relative(at(3 * 86_400 + 5), now), "in 3d");
    }
}
