//! The audit trail: one JSON line per security event (a token issued or
//! refused, an introspection, a revocation, a credential's lifecycle
//! change), never with a secret or a whole token.
//!
//! Records go to stdout (each line a JSON object with an `audit` member
//! naming the event, so a log shipper can route them), to a file, or
//! nowhere; and, optionally, to a webhook as CloudEvents (HTTP binary mode).
//! Recording never waits: a record goes into bounded queues that a
//! writer thread and the webhook's senders drain, and a full queue drops
//! the record and counts it (`catalio_audit_records_total{result="dropped"}`),
//! so a slow disk or a webhook that is down never slows the token endpoint.
//! A webhook that cannot take a request per record at the token endpoint's
//! rate can take them in CloudEvents' batched mode, many to a request.
//! At exit, both sinks get a few seconds to take what is queued.

use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use tracing::{debug, info, warn};

use crate::metrics::{AuditLabels, Metrics};

/// Records waiting for the log writer, at most.
const LOG_QUEUE: usize = 8192;
/// Records the log writer takes from the queue per write, at most.
const LOG_BATCH: usize = 1024;
/// How long the log writer lets records gather after a write that emptied
/// the queue. A writer that waits on the queue is woken for nearly every
/// record under load: a system call in the thread that issued the token
/// and a context switch on its CPU, which perf put at a quarter of a
/// pinned replica's CPU at 10,000 ES256 tokens/s. Pausing, it wakes at most
/// 100 times a second, and a record still reaches the log within about
/// 10 ms (the queue holds 80 ms of 100,000 records/s).
const LOG_PAUSE: Duration = Duration::from_millis(10);
/// Deliveries to the webhook running at once.
const SENDERS: usize = 4;
/// One delivery's attempts, and the wait before the second (doubling).
const ATTEMPTS: u32 = 5;
const FIRST_RETRY: Duration = Duration::from_millis(200);
/// A webhook request that takes longer fails.
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(5);
/// User agents are kept to this many characters.
const USER_AGENT_CHARS: usize = 200;

/// A security event. Client ids, key ids, token ids (`jti`) and hashes are
/// named; secrets and tokens never are. Its line is the members below, in
/// this order, after `time` and `audit` (see `Event::line`); an absent
/// optional member is left out.
#[derive(Debug)]
pub enum Event<'a> {
    TokenIssued {
        org: &'a str,
        credential: &'a str,
        client_id: &'a str,
        /// What the token is bound to: the secret's short id or `sa:NAME`.
        sid: &'a str,
        jti: &'a str,
        scope: &'a str,
        /// Seconds.
        lifetime: i64,
        method: &'static str,
        source: IpAddr,
        user_agent: Option<&'a str>,
    },
    /// A request refused at any of the OAuth endpoints.
    Refused {
        /// `token`, `introspect` or `revoke`.
        endpoint: &'static str,
        /// The error category, as `catalio_tokens_refused_total` counts it.
        reason: &'static str,
        /// The client id asked for, when it is of our form.
        client_id: Option<&'a str>,
        source: IpAddr,
        user_agent: Option<&'a str>,
    },
    Introspection {
        /// The client id, or the ServiceAccount, that asked.
        caller: &'a str,
        active: bool,
        /// The token's, when it is active.
        org: Option<&'a str>,
        client_id: Option<&'a str>,
        jti: Option<&'a str>,
        source: IpAddr,
    },
    Revocation {
        caller: &'a str,
        /// Whether a token of the caller's was revoked (an unknown or
        /// foreign token changes nothing).
        revoked: bool,
        jti: Option<&'a str>,
        source: IpAddr,
    },
    /// A credential's lifecycle, as the controller changes it.
    Credential {
        /// The event's reason: `Created`, `Rotated`, `Revoked`,
        /// `SecretReplaced`, `Unused`, `RevokedUnused`, ...
        change: &'a str,
        org: &'a str,
        credential: &'a str,
        client_id: &'a str,
        message: &'a str,
    },
}

impl Event<'_> {
    /// The `audit` member's value, also the CloudEvents type's last part.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::TokenIssued { .. } => "token_issued",
            Event::Refused { .. } => "refused",
            Event::Introspection { .. } => "introspection",
            Event::Revocation { .. } => "revocation",
            Event::Credential { .. } => "credential",
        }
    }

    /// The record: a flat JSON object, `{"time":...,"audit":KIND,...}`.
    /// Written member by member rather than by serde's general machinery:
    /// a line is recorded for every token, on the request's path.
    fn line(&self, time: Timestamp) -> Vec<u8> {
        let mut line = Object::new(time, self.kind());
        match *self {
            Event::TokenIssued {
                org,
                credential,
                client_id,
                sid,
                jti,
                scope,
                lifetime,
                method,
                source,
                user_agent,
            } => {
                line.text("org", org);
                line.text("credential", credential);
                line.text("client_id", client_id);
                line.text("sid", sid);
                line.text("jti", jti);
                line.text("scope", scope);
                line.integer("lifetime", lifetime);
                line.text("method", method);
                line.address("source", source);
                line.optional("user_agent", user_agent);
            }
            Event::Refused {
                endpoint,
                reason,
                client_id,
                source,
                user_agent,
            } => {
                line.text("endpoint", endpoint);
                line.text("reason", reason);
                line.optional("client_id", client_id);
                line.address("source", source);
                line.optional("user_agent", user_agent);
            }
            Event::Introspection {
                caller,
                active,
                org,
                client_id,
                jti,
                source,
            } => {
                line.text("caller", caller);
                line.boolean("active", active);
                line.optional("org", org);
                line.optional("client_id", client_id);
                line.optional("jti", jti);
                line.address("source", source);
            }
            Event::Revocation {
                caller,
                revoked,
                jti,
                source,
            } => {
                line.text("caller", caller);
                line.boolean("revoked", revoked);
                line.optional("jti", jti);
                line.address("source", source);
            }
            Event::Credential {
                change,
                org,
                credential,
                client_id,
                message,
            } => {
                line.text("change", change);
                line.text("org", org);
                line.text("credential", credential);
                line.text("client_id", client_id);
                line.text("message", message);
            }
        }
        line.end()
    }
}

/// A JSON object written a member at a time. Names are this file's
/// constants, which need no escaping; values are escaped as JSON requires.
struct Object(Vec<u8>);

impl Object {
    fn new(time: Timestamp, kind: &str) -> Self {
        let mut object = Object(Vec::with_capacity(384));
        // Writing into a Vec cannot fail.
        let _ = write!(object.0, "{{\"time\":\"{time}\"");
        object.text("audit", kind);
        object
    }

    fn name(&mut self, name: &str) {
        self.0.extend_from_slice(b",\"");
        self.0.extend_from_slice(name.as_bytes());
        self.0.extend_from_slice(b"\":");
    }

    fn text(&mut self, name: &str, value: &str) {
        self.name(name);
        let plain = value.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\');
        if plain {
            self.0.push(b'"');
            self.0.extend_from_slice(value.as_bytes());
            self.0.push(b'"');
        } else {
            // Writing a &str into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut self.0, value);
        }
    }

    fn optional(&mut self, name: &str, value: Option<&str>) {
        if let Some(value) = value {
            self.text(name, value);
        }
    }

    fn integer(&mut self, name: &str, value: i64) {
        self.name(name);
        let _ = write!(self.0, "{value}");
    }

    fn boolean(&mut self, name: &str, value: bool) {
        self.name(name);
        self.0
            .extend_from_slice(if value { b"true" } else { b"false" });
    }

    fn address(&mut self, name: &str, value: IpAddr) {
        self.name(name);
        let _ = write!(self.0, "\"{value}\"");
    }

    fn end(mut self) -> Vec<u8> {
        self.0.push(b'}');
        self.0
    }
}

/// A user agent as recorded: at most a couple of hundred characters.
pub fn user_agent(header: Option<&str>) -> Option<&str> {
    header.map(|ua| match ua.char_indices().nth(USER_AGENT_CHARS) {
        Some((end, _)) => &ua[..end],
        None => ua,
    })
}

/// One recorded event, written once and shared by the sinks.
struct Record {
    id: String,
    kind: &'static str,
    time: Timestamp,
    json: Vec<u8>,
}

/// Where the log of records goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogSink {
    Stdout,
    File(PathBuf),
    Off,
}

impl std::str::FromStr for LogSink {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "stdout" | "" => LogSink::Stdout,
            "off" => LogSink::Off,
            path => LogSink::File(path.into()),
        })
    }
}

/// What the log writer takes from its queue.
enum Message {
    Record(Arc<Record>),
    /// Answered once every record queued before it is written.
    Flush(std::sync::mpsc::Sender<()>),
}

/// Where records go; cheap to clone.
#[derive(Clone)]
pub struct Audit {
    log: Option<std::sync::mpsc::SyncSender<Message>>,
    webhook: Option<Queue>,
    metrics: Arc<Metrics>,
}

/// The webhook's side of the trail.
#[derive(Clone, Debug)]
pub struct Webhook {
    pub url: String,
    /// Records waiting for a sender, at most.
    pub queue: usize,
    /// Records per request, at most: 1 sends each in HTTP binary mode,
    /// more sends what is queued in batched mode.
    pub batch: usize,
    /// Names this process in CloudEvents (`ce-source`).
    pub source: String,
}

/// The records on their way to the webhook.
#[derive(Clone)]
struct Queue {
    records: tokio::sync::mpsc::Sender<Arc<Record>>,
    pending: Arc<Pending>,
}

/// How many records are queued for the webhook or being delivered, and a
/// signal when that reaches zero.
#[derive(Default)]
struct Pending {
    count: AtomicUsize,
    none: tokio::sync::Notify,
}

impl Pending {
    fn add(&self) {
        self.count.fetch_add(1, Ordering::AcqRel);
    }

    fn done(&self, n: usize) {
        if self.count.fetch_sub(n, Ordering::AcqRel) == n {
            self.none.notify_waiters();
        }
    }
}

impl Audit {
    /// Starts the sinks: the log writer thread, and the webhook's senders
    /// when there is a webhook.
    pub fn start(
        log: LogSink,
        webhook: Option<Webhook>,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        let log = match log {
            LogSink::Off => None,
            LogSink::Stdout => Some(spawn_writer(Box::new(std::io::stdout()), metrics.clone())?),
            LogSink::File(path) => {
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .map_err(|e| anyhow::anyhow!("opening --audit-log {}: {e}", path.display()))?;
                Some(spawn_writer(Box::new(file), metrics.clone())?)
            }
        };
        let webhook = match webhook.filter(|w| !w.url.is_empty()) {
            None => None,
            Some(webhook) => Some(spawn_webhook(webhook, metrics.clone())?),
        };
        Ok(Self {
            log,
            webhook,
            metrics,
        })
    }

    /// Records nowhere (tests, and tools that build a server in process).
    pub fn off(metrics: Arc<Metrics>) -> Self {
        Self {
            log: None,
            webhook: None,
            metrics,
        }
    }

    fn counted(&self, sink: &'static str, result: &'static str) {
        self.metrics
            .audit_records
            .get_or_create(&AuditLabels { sink, result })
            .inc();
    }

    /// Records `event` now, without waiting.
    pub fn record(&self, event: Event<'_>) {
        if self.log.is_none() && self.webhook.is_none() {
            return;
        }
        let time = Timestamp::now();
        let json = event.line(time);
        let record = Arc::new(Record {
            // Only a CloudEvent carries an id (`ce-id`).
            id: match self.webhook {
                Some(_) => record_id(),
                None => String::new(),
            },
            kind: event.kind(),
            time,
            json,
        });
        if let Some(log) = &self.log
            && log.try_send(Message::Record(record.clone())).is_err()
        {
            self.counted("log", "dropped");
        }
        if let Some(webhook) = &self.webhook {
            // Counted before it is queued: a sender may take it at once.
            webhook.pending.add();
            if webhook.records.try_send(record).is_err() {
                webhook.pending.done(1);
                self.counted("webhook", "dropped");
            }
        }
    }

    /// Waits, up to `within`, until every record queued for the webhook
    /// has been delivered or given up on: at exit, before the runtime and
    /// its senders stop. Logs how many records were still on their way when
    /// it stopped waiting.
    pub async fn deliver_queued(&self, within: Duration) {
        let Some(webhook) = &self.webhook else {
            return;
        };
        let pending = &webhook.pending;
        let queued = pending.count.load(Ordering::Acquire);
        if queued == 0 {
            return;
        }
        info!(
            records = queued,
            "delivering the audit records queued for the webhook before exit"
        );
        let all = async {
            loop {
                let none = pending.none.notified();
                if pending.count.load(Ordering::Acquire) == 0 {
                    return;
                }
                none.await;
            }
        };
        if tokio::time::timeout(within, all).await.is_err() {
            warn!(
                records = pending.count.load(Ordering::Acquire),
                "audit records did not reach the webhook before exit"
            );
        }
    }

    /// Waits, up to `within`, until every record made before the call is
    /// in the log: at exit, so that the process does not take the records
    /// of its last moments with it. False when that did not happen in time
    /// (a log that cannot be written).
    pub fn flush(&self, within: Duration) -> bool {
        let Some(log) = &self.log else {
            return true;
        };
        let deadline = Instant::now() + within;
        let (done, written) = std::sync::mpsc::channel();
        let mut message = Message::Flush(done);
        loop {
            match log.try_send(message) {
                Ok(()) => break,
                Err(std::sync::mpsc::TrySendError::Full(m)) if Instant::now() < deadline => {
                    message = m;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(_) => return false,
            }
        }
        written
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .is_ok()
    }
}

/// A random id for a record (CloudEvents `ce-id`).
fn record_id() -> String {
    let mut bytes = [0u8; 16];
    // The DRBG failing leaves a zero id; the record still goes out.
    let _ = aws_lc_rs::rand::fill(&mut bytes);
    crate::secret::hex(&bytes)
}

/// A thread that writes records as lines to `out`, a batch at a time.
fn spawn_writer(
    mut out: Box<dyn Write + Send>,
    metrics: Arc<Metrics>,
) -> anyhow::Result<std::sync::mpsc::SyncSender<Message>> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<Message>(LOG_QUEUE);
    let written = metrics
        .audit_records
        .get_or_create(&AuditLabels {
            sink: "log",
            result: "written",
        })
        .clone();
    std::thread::Builder::new()
        .name("audit-log".into())
        .spawn(move || {
            let mut buffer = Vec::with_capacity(64 * 1024);
            while let Ok(first) = rx.recv() {
                buffer.clear();
                let mut n = 0;
                let mut flushes = Vec::new();
                for message in std::iter::once(first).chain(rx.try_iter().take(LOG_BATCH - 1)) {
                    match message {
                        Message::Record(record) => {
                            buffer.extend_from_slice(&record.json);
                            buffer.push(b'\n');
                            n += 1;
                        }
                        Message::Flush(done) => flushes.push(done),
                    }
                }
                match out.write_all(&buffer).and_then(|()| out.flush()) {
                    Err(e) => warn!(error = %e, "writing the audit log failed"),
                    Ok(()) => {
                        written.inc_by(n);
                        for done in flushes {
                            // Whoever asked may have stopped waiting.
                            let _ = done.send(());
                        }
                    }
                }
                if n < LOG_BATCH as u64 {
                    std::thread::sleep(LOG_PAUSE);
                }
            }
        })?;
    Ok(tx)
}

/// Senders that deliver records to the webhook as CloudEvents, retrying
/// each request a few times with backoff.
fn spawn_webhook(webhook: Webhook, metrics: Arc<Metrics>) -> anyhow::Result<Queue> {
    let http = reqwest::Client::builder()
        .timeout(WEBHOOK_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Arc<Record>>(webhook.queue.max(1));
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let pending = Arc::new(Pending::default());
    let batch = webhook.batch.max(1);
    let target = Arc::new(Target {
        http,
        url: webhook.url,
        source: webhook.source,
    });
    let count = |result| {
        metrics
            .audit_records
            .get_or_create(&AuditLabels {
                sink: "webhook",
                result,
            })
            .clone()
    };
    let (delivered, failed) = (count("delivered"), count("failed"));
    for _ in 0..SENDERS {
        let (target, rx, pending) = (target.clone(), rx.clone(), pending.clone());
        let (delivered, failed) = (delivered.clone(), failed.clone());
        tokio::spawn(async move {
            let mut records = Vec::with_capacity(batch);
            loop {
                records.clear();
                if rx.lock().await.recv_many(&mut records, batch).await == 0 {
                    return;
                }
                let sent = match batch {
                    1 => target.deliver(|| target.binary(&records[0])).await,
                    _ => {
                        let body = bytes::Bytes::from(batch_body(&target.source, &records));
                        target.deliver(|| target.batched(body.clone())).await
                    }
                };
                let n = records.len() as u64;
                match sent {
                    true => delivered.inc_by(n),
                    false => failed.inc_by(n),
                };
                pending.done(records.len());
            }
        });
    }
    Ok(Queue {
        records: tx,
        pending,
    })
}

/// Where the webhook's requests go.
struct Target {
    http: reqwest::Client,
    url: String,
    source: String,
}

impl Target {
    /// One record as a CloudEvent in HTTP binary mode: the attributes as
    /// `ce-` headers, the record as the JSON body.
    fn binary(&self, record: &Record) -> reqwest::RequestBuilder {
        self.http
            .post(&self.url)
            .header("ce-specversion", "1.0")
            .header("ce-id", &record.id)
            .header("ce-source", &self.source)
            .header("ce-type", format!("{EVENT_TYPE}{}", record.kind))
            .header("ce-time", record.time.to_string())
            .header("content-type", "application/json")
            .body(record.json.clone())
    }

    /// Records as CloudEvents in batched mode: a JSON array of events in
    /// the JSON event format.
    fn batched(&self, body: bytes::Bytes) -> reqwest::RequestBuilder {
        self.http
            .post(&self.url)
            .header("content-type", "application/cloudevents-batch+json")
            .body(body)
    }

    /// One request, made by `request` for each attempt, until the webhook
    /// accepts it (2xx) or the attempts run out.
    async fn deliver(&self, request: impl Fn() -> reqwest::RequestBuilder) -> bool {
        let mut wait = FIRST_RETRY;
        for attempt in 1..=ATTEMPTS {
            match request().send().await {
                Ok(r) if r.status().is_success() => return true,
                Ok(r) => {
                    debug!(status = %r.status(), attempt, "the audit webhook refused a request")
                }
                Err(e) => debug!(error = %e.without_url(), attempt, "the audit webhook failed"),
            }
            if attempt < ATTEMPTS {
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
        }
        false
    }
}

/// CloudEvents' `type` of a record, before its `audit` member.
const EVENT_TYPE: &str = "ai.catalio.audit.";

/// A batched-mode body: each record as a CloudEvent in the JSON event
/// format, the record itself as `data`. Written directly, as records are:
/// their JSON is already made.
fn batch_body(source: &str, records: &[Arc<Record>]) -> Vec<u8> {
    let size = records.iter().map(|r| r.json.len() + 192).sum::<usize>();
    let mut body = Vec::with_capacity(size + source.len() * records.len() + 2);
    body.push(b'[');
    for (i, record) in records.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        // Writing into a Vec cannot fail; the id is hex, the kind and the
        // time need no escaping.
        let _ = write!(
            body,
            r#"{{"specversion":"1.0","id":"{}","source":"#,
            record.id
        );
        let _ = serde_json::to_writer(&mut body, source);
        let _ = write!(
            body,
            r#","type":"{EVENT_TYPE}{}","time":"{}","datacontenttype":"application/json","data":"#,
            record.kind, record.time
        );
        body.extend_from_slice(&record.json);
        body.push(b'}');
    }
    body.push(b']');
    body
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn records_are_flat_json_lines_named_by_their_audit_member() {
        let event = Event::TokenIssued {
            org: "org-a",
            credential: "ci",
            client_id: "ci_1",
            sid: "abc",
            jti: "j1",
            scope: "requirement:read",
            lifetime: 3600,
            method: "client_secret_post",
            source: IpAddr::V4(Ipv4Addr::LOCALHOST),
            user_agent: Some("curl/8"),
        };
        let time = Timestamp::from_second(1_800_000_000).unwrap();
        let line: serde_json::Value = serde_json::from_slice(&event.line(time)).unwrap();
        assert_eq!(
            line,
            serde_json::json!({
                "time": "2027-01-15T08:00:00Z", "audit": "token_issued", "org": "org-a",
                "credential": "ci", "client_id": "ci_1", "sid": "abc", "jti": "j1",
                "scope": "requirement:read", "lifetime": 3600, "method": "client_secret_post",
                "source": "127.0.0.1", "user_agent": "curl/8",
            })
        );
        assert_eq!(event.kind(), "token_issued");
        // Members in the order of the enum, after `time` and `audit`.
        let text = String::from_utf8(event.line(time)).unwrap();
        assert!(
            text.starts_with(r#"{"time":"2027-01-15T08:00:00Z","audit":"token_issued","org":"#)
        );
        assert!(text.ends_with(r#""source":"127.0.0.1","user_agent":"curl/8"}"#));
        let long = "x".repeat(1000);
        assert_eq!(user_agent(Some(&long)).unwrap().len(), USER_AGENT_CHARS);
        assert_eq!(user_agent(Some("é")), Some("é"));
        assert_eq!("off".parse::<LogSink>(), Ok(LogSink::Off));
        assert_eq!("stdout".parse::<LogSink>(), Ok(LogSink::Stdout));
        assert_eq!(
            "/var/log/a.jsonl".parse::<LogSink>(),
            Ok(LogSink::File("/var/log/a.jsonl".into()))
        );
    }

    #[test]
    fn every_event_is_one_json_object_with_absent_members_left_out() {
        let time = Timestamp::from_second(1_800_000_000).unwrap();
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        let line = |event: Event<'_>| -> serde_json::Value {
            let bytes = event.line(time);
            assert!(!bytes.contains(&b'\n'), "one line");
            serde_json::from_slice(&bytes).unwrap()
        };
        let at = "2027-01-15T08:00:00Z";
        assert_eq!(
            line(Event::Refused {
                endpoint: "token",
                reason: "invalid_client",
                client_id: None,
                source: v6,
                user_agent: None,
            }),
            serde_json::json!({"time": at, "audit": "refused", "endpoint": "token",
                "reason": "invalid_client", "source": "2001:db8::1"})
        );
        assert_eq!(
            line(Event::Introspection {
                caller: "sa:ns/gateway",
                active: true,
                org: Some("org-a"),
                client_id: Some("ci_1"),
                jti: Some("j1"),
                source: v6,
            }),
            serde_json::json!({"time": at, "audit": "introspection", "caller": "sa:ns/gateway",
                "active": true, "org": "org-a", "client_id": "ci_1", "jti": "j1",
                "source": "2001:db8::1"})
        );
        assert_eq!(
            line(Event::Revocation {
                caller: "ci_1",
                revoked: false,
                jti: None,
                source: v6,
            }),
            serde_json::json!({"time": at, "audit": "revocation", "caller": "ci_1",
                "revoked": false, "source": "2001:db8::1"})
        );
        // Text from outside (a user agent, a controller's message) is
        // escaped: quotes, backslashes, control characters; the rest kept.
        let hostile = "a\"b\\c\n\u{7}\u{7f}é\"}, \"audit\": \"forged";
        assert_eq!(
            line(Event::Credential {
                change: "Rotated",
                org: "org-a",
                credential: "ci",
                client_id: "ci_1",
                message: hostile,
            }),
            serde_json::json!({"time": at, "audit": "credential", "change": "Rotated",
                "org": "org-a", "credential": "ci", "client_id": "ci_1", "message": hostile})
        );
        let fraction = Timestamp::new(1_800_000_000, 120_000_000).unwrap();
        let refused = Event::Refused {
            endpoint: "revoke",
            reason: "invalid_request",
            client_id: Some("ci_2"),
            source: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 7)),
            user_agent: Some(hostile),
        };
        let v: serde_json::Value = serde_json::from_slice(&refused.line(fraction)).unwrap();
        assert_eq!(v["time"], "2027-01-15T08:00:00.12Z");
        assert_eq!(v["user_agent"], hostile);
        assert_eq!(v["client_id"], "ci_2");
    }

    #[test]
    fn a_batch_is_a_json_array_of_cloudevents_with_the_records_as_data() {
        let record = |kind, event: Event<'_>| {
            let time = Timestamp::new(1_800_000_000, 5).unwrap();
            Arc::new(Record {
                id: record_id(),
                kind,
                time,
                json: event.line(time),
            })
        };
        let source = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let records = [
            record(
                "revocation",
                Event::Revocation {
                    caller: "ci_1",
                    revoked: true,
                    jti: Some("j1"),
                    source,
                },
            ),
            record(
                "refused",
                Event::Refused {
                    endpoint: "token",
                    reason: "invalid_client",
                    client_id: None,
                    source,
                    user_agent: Some("a\"b"),
                },
            ),
        ];
        // A source needing escapes stays one string.
        let body = batch_body("/catalio-operator/ns/\"pod\"", &records);
        let batch: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let events = batch.as_array().unwrap();
        assert_eq!(events.len(), 2);
        for (event, record) in events.iter().zip(&records) {
            let data: serde_json::Value = serde_json::from_slice(&record.json).unwrap();
            assert_eq!(
                event,
                &serde_json::json!({
                    "specversion": "1.0",
                    "id": record.id,
                    "source": "/catalio-operator/ns/\"pod\"",
                    "type": format!("ai.catalio.audit.{}", record.kind),
                    "time": "2027-01-15T08:00:00.000000005Z",
                    "datacontenttype": "application/json",
                    "data": data,
                })
            );
        }
        assert_eq!(events[1]["data"]["user_agent"], "a\"b");
        assert_eq!(batch_body("s", &[]), b"[]");
    }

    /// A webhook that is down holds an exit up for the time given, no more,
    /// and what it could not take is still counted as on its way.
    #[tokio::test]
    async fn waiting_for_a_dead_webhook_at_exit_ends_in_time() {
        // A port nothing listens on: every attempt is refused at once.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let webhook = Webhook {
            url: format!("http://127.0.0.1:{port}/"),
            queue: 10,
            batch: 1,
            source: "test".into(),
        };
        let audit = Audit::start(LogSink::Off, Some(webhook), Metrics::new()).unwrap();
        audit.record(Event::Revocation {
            caller: "ci_1",
            revoked: true,
            jti: None,
            source: IpAddr::V4(Ipv4Addr::LOCALHOST),
        });
        let pending = audit.webhook.as_ref().unwrap().pending.clone();
        assert_eq!(pending.count.load(Ordering::Acquire), 1);
        // The sender gives up only after its attempts and their backoff
        // (3 s): still on its way, the wait ended first.
        audit.deliver_queued(Duration::from_millis(50)).await;
        assert_eq!(pending.count.load(Ordering::Acquire), 1);
        // Nothing to wait for without a webhook.
        Audit::off(Metrics::new())
            .deliver_queued(Duration::from_secs(3600))
            .await;
    }

    #[test]
    fn a_flush_returns_once_every_record_before_it_is_in_the_log() {
        let path = std::env::temp_dir().join(format!(
            "catalio-audit-flush-{}-{:?}.jsonl",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_file(&path);
        let metrics = Metrics::new();
        let audit = Audit::start(LogSink::File(path.clone()), None, metrics).unwrap();
        // More than one batch, so the writer pauses between them.
        let records = LOG_BATCH + 10;
        for i in 0..records {
            audit.record(Event::Revocation {
                caller: "ci_1",
                revoked: i % 2 == 0,
                jti: Some("j"),
                source: IpAddr::V4(Ipv4Addr::LOCALHOST),
            });
        }
        assert!(audit.flush(Duration::from_secs(60)));
        let log = std::fs::read_to_string(&path).unwrap();
        assert_eq!(log.lines().count(), records);
        for line in log.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(v["audit"], "revocation");
        }
        // Nothing to wait for without a log.
        assert!(Audit::off(Metrics::new()).flush(Duration::ZERO));
        std::fs::remove_file(&path).unwrap();
    }
}
