//! The ApiCredential lifecycle on a real control plane, with the operator
//! binary running as its own process, watching only the test's namespace.

use std::collections::BTreeSet;
use std::time::Duration;

use catalio_operator::controller::plan::{Material, Settings, desired_secret};
use catalio_operator::crd::{ApiCredential, ApiCredentialStatus, Phase};
use catalio_operator::secret::{ClientSecret, SecretHasher};
use catalio_test_support::{
    OperatorProcess, TestNamespace, cluster, eventually, free_port, hash_key,
};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::api::ListParams;
use kube::{Api, Client};

const OPERATOR: &str = env!("CARGO_BIN_EXE_catalio-operator");
const WAIT: Duration = Duration::from_secs(30);

struct Fixture {
    ns: TestNamespace,
    client: Client,
    operator: OperatorProcess,
}

impl Fixture {
    async fn new(prefix: &str) -> Self {
        let client = cluster().client().await;
        let ns = TestNamespace::new(&client, prefix).await;
        let operator = start_operator(&ns.name);
        Self {
            ns,
            client,
            operator,
        }
    }

    fn creds(&self) -> Api<ApiCredential> {
        Api::namespaced(self.client.clone(), &self.ns.name)
    }

    fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &self.ns.name)
    }

    fn kubectl(&self, args: &[&str]) -> std::process::Output {
        let mut all = vec!["-n", self.ns.name.as_str()];
        all.extend_from_slice(args);
        cluster().kubectl(&all)
    }

    fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn apply(&self, yaml: &str) {
        let out = cluster().kubectl_stdin(&["-n", &self.ns.name, "apply", "-f", "-"], Some(yaml));
        assert!(
            out.status.success(),
            "apply: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The keyed hash of `secret` as the secret of `client_id`, with the
    /// operator's hash key.
    async fn hash(&self, client_id: &str, secret: &str) -> String {
        let key = hash_key(&self.client, &self.ns.name).await;
        SecretHasher::new(&key)
            .hash(client_id, secret.as_bytes())
            .to_string()
    }

    fn patch(&self, name: &str, patch: &str) -> std::process::Output {
        self.kubectl(&["patch", "apicred", name, "--type", "merge", "-p", patch])
    }

    /// Waits until the credential's status satisfies `done`.
    async fn status_until(
        &self,
        name: &str,
        what: &str,
        done: impl Fn(&ApiCredentialStatus) -> bool,
    ) -> ApiCredentialStatus {
        let api = self.creds();
        eventually(WAIT, what, || {
            let api = api.clone();
            let done = &done;
            async move {
                let status = api.get(name).await.ok()?.status?;
                done(&status).then_some(status)
            }
        })
        .await
    }

    /// Raises `rotation.counter` and waits until the rotation is applied.
    async fn rotate(&self, name: &str, counter: i64) -> ApiCredentialStatus {
        let patch = format!(r#"{{"spec":{{"rotation":{{"counter":{counter}}}}}}}"#);
        let out = self.patch(name, &patch);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.status_until(name, "rotation to be applied", |s| {
            s.rotation_counter == Some(counter)
        })
        .await
    }

    /// Changes the credential's display name and waits until a reconcile has
    /// seen the change (`status.observedGeneration`): the event a "nothing
    /// happened" check must follow.
    async fn reconciled_again(&self, name: &str) {
        let out = self.patch(name, r#"{"spec":{"displayName":"Poked"}}"#);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let generation = self.creds().get(name).await.unwrap().metadata.generation;
        self.status_until(name, "a reconcile of the change", |s| {
            s.observed_generation >= generation
        })
        .await;
    }

    /// Waits until the Secret `name` no longer exists (`why`: what removes it).
    async fn secret_gone(&self, name: &str, why: &str) {
        eventually(WAIT, why, || async {
            let secret = self.secrets().get_opt(name).await.unwrap();
            secret.is_none().then_some(())
        })
        .await;
    }

    async fn active(&self, name: &str) -> ApiCredentialStatus {
        self.status_until(name, "credential to become Active", |s| {
            s.phase == Some(Phase::Active)
        })
        .await
    }

    async fn secret(&self, name: &str) -> Secret {
        self.secrets().get(name).await.expect("Secret")
    }

    /// (type, reason, note) of every event about the credential.
    async fn events(&self, name: &str) -> Vec<(String, String, String)> {
        Api::<Event>::namespaced(self.client.clone(), &self.ns.name)
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .map(|e| {
                (
                    e.type_.unwrap_or_default(),
                    e.reason.unwrap_or_default(),
                    e.note.unwrap_or_default(),
                )
            })
            .collect()
    }

    async fn event_with_reason(&self, name: &str, reason: &str) -> (String, String, String) {
        eventually(WAIT, &format!("a {reason} event"), || async {
            self.events(name).await.into_iter().find(|e| e.1 == reason)
        })
        .await
    }
}

/// An operator of its own for the test's namespace: its lease and admin
/// port are its own too, as in a separate installation.
fn start_operator(namespace: &str) -> OperatorProcess {
    let admin = format!("127.0.0.1:{}", free_port());
    OperatorProcess::start(
        OPERATOR,
        &[
            "controller",
            "--watch-namespaces",
            namespace,
            "--namespace",
            namespace,
            "--admin-listen",
            &admin,
            "--lease-duration",
            "3s",
            "--token-url",
            "http://catalio-operator.catalio-system.svc:8080/oauth/token",
        ],
    )
}

fn credential(name: &str, extra: &str) -> String {
    format!(
        "apiVersion: catalio.ai/v1\nkind: ApiCredential\nmetadata:\n  name: {name}\nspec:\n  displayName: CI/CD Pipeline\n{extra}"
    )
}

fn data(secret: &Secret, key: &str) -> String {
    let bytes = &secret.data.as_ref().expect("data")[key].0;
    String::from_utf8(bytes.clone()).unwrap()
}

fn annotation(secret: &Secret, key: &str) -> String {
    secret.metadata.annotations.as_ref().unwrap()[key].clone()
}

#[tokio::test]
async fn create_writes_the_secret_and_reports_active() {
    let f = Fixture::new("create").await;
    f.apply(&credential("ci", "  scopes: [\"requirement:read\"]\n"));
    let status = f.active("ci").await;

    let cred = f.creds().get("ci").await.unwrap();
    let uid = cred.metadata.uid.clone().unwrap();
    let client_id = status.client_id.clone().unwrap();
    assert_eq!(client_id, format!("ci_{}", uid.replace('-', "")));
    assert_eq!(status.secret_name.as_deref(), Some("ci"));
    assert_eq!(status.observed_generation, cred.metadata.generation);
    assert_eq!(status.rotation_counter, Some(0));
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(ready.status, "True");
    // Defaults come from the API server, as written in the schema.
    assert_eq!(cred.spec.rotation.grace_period, "0s");
    assert!(!cred.spec.revoked);

    let secret = f.secret("ci").await;
    let keys: BTreeSet<_> = secret.data.as_ref().unwrap().keys().cloned().collect();
    assert_eq!(
        keys,
        BTreeSet::from(["audience", "client_id", "client_secret", "token_url"].map(String::from))
    );
    assert_eq!(secret.type_.as_deref(), Some("Opaque"));
    assert_eq!(data(&secret, "client_id"), client_id);
    assert_eq!(data(&secret, "audience"), "https://catalio.ai/api/v1");
    assert_eq!(
        data(&secret, "token_url"),
        "http://catalio-operator.catalio-system.svc:8080/oauth/token"
    );
    let client_secret = data(&secret, "client_secret");
    assert!(client_secret.len() >= 43, "at least 256 bits of text");
    let hash = f.hash(&client_id, &client_secret).await;
    assert!(hash.starts_with("hmac-sha256:"), "{hash}");
    assert_eq!(annotation(&secret, "catalio.ai/secret-sha256"), hash);
    assert_eq!(status.secret_hash, Some(hash));
    let labels = secret.metadata.labels.clone().unwrap();
    assert_eq!(labels["app.kubernetes.io/managed-by"], "catalio-operator");
    assert_eq!(labels["catalio.ai/credential"], "ci");
    let owner = &secret.metadata.owner_references.clone().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
        ("ApiCredential", uid.as_str(), Some(true))
    );

    let (kind, _, note) = f.event_with_reason("ci", "Created").await;
    assert_eq!(kind, "Normal");
    assert!(note.contains(&client_id), "{note}");

    let table = f.kubectl_ok(&["get", "apicred"]);
    let mut lines = table.lines();
    let header: Vec<_> = lines
        .next()
        .unwrap()
        .split("  ")
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    assert_eq!(
        header,
        [
            "NAME",
            "DISPLAY NAME",
            "CLIENT ID",
            "PHASE",
            "LAST USED",
            "AGE"
        ]
    );
    let row = lines.next().unwrap();
    assert!(
        row.starts_with("ci ") && row.contains("CI/CD Pipeline") && row.contains(&client_id),
        "{row}"
    );
    assert!(row.contains("Active"), "{row}");
}

#[tokio::test]
async fn restart_reapply_and_lost_status_never_change_the_secret() {
    let mut f = Fixture::new("stable").await;
    let manifest = credential("ci", "");
    f.apply(&manifest);
    let status = f.active("ci").await;
    let before = f.secret("ci").await;

    // A crash and a restart, then a GitOps re-apply of the same manifest.
    f.operator.kill();
    f.operator = start_operator(&f.ns.name);
    f.apply(&manifest);
    // The status wiped by hand is rebuilt from the Secret.
    f.kubectl_ok(&[
        "patch",
        "apicred",
        "ci",
        "--subresource",
        "status",
        "--type",
        "json",
        "-p",
        r#"[{"op":"remove","path":"/status"}]"#,
    ]);
    let rebuilt = f
        .status_until("ci", "status to be rebuilt", |s| s.secret_hash.is_some())
        .await;
    assert_eq!(rebuilt.secret_hash, status.secret_hash);
    assert_eq!(rebuilt.client_id, status.client_id);
    assert_eq!(rebuilt.last_rotated_at, status.last_rotated_at);
    assert_eq!(rebuilt.phase, Some(Phase::Active));

    // Another reconcile, then compare.
    f.reconciled_again("ci").await;
    let after = f.secret("ci").await;
    assert_eq!(after.data, before.data);
    assert_eq!(
        after.metadata.resource_version,
        before.metadata.resource_version
    );
    let replaced = f.events("ci").await;
    assert!(
        !replaced
            .iter()
            .any(|e| e.1 == "SecretReplaced" || e.1 == "Rotated"),
        "{replaced:?}"
    );
}

#[tokio::test]
async fn rotation_without_grace_replaces_the_secret_at_once() {
    let f = Fixture::new("rotate").await;
    f.apply(&credential("ci", ""));
    let first = f.active("ci").await;
    let old = data(&f.secret("ci").await, "client_secret");

    let rotated = f.rotate("ci", 1).await;
    let secret = f.secret("ci").await;
    let new = data(&secret, "client_secret");
    assert_ne!(new, old);
    assert_eq!(
        rotated.secret_hash,
        Some(f.hash(first.client_id.as_deref().unwrap(), &new).await)
    );
    assert_ne!(rotated.secret_hash, first.secret_hash);
    assert_eq!(rotated.previous_secret_hash, None);
    assert_eq!(
        rotated.client_id, first.client_id,
        "rotation keeps the client id"
    );
    let (kind, _, note) = f.event_with_reason("ci", "Rotated").await;
    assert_eq!(kind, "Normal");
    assert!(note.contains("stopped working"), "{note}");
}

#[tokio::test]
async fn rotation_with_grace_keeps_the_previous_hash_until_it_expires() {
    let f = Fixture::new("grace").await;
    f.apply(&credential("ci", "  rotation:\n    gracePeriod: 8s\n"));
    let first = f.active("ci").await;

    let during = f.rotate("ci", 1).await;
    assert_eq!(during.previous_secret_hash, first.secret_hash);
    assert!(during.previous_secret_expires_at.is_some());
    let secret = f.secret("ci").await;
    let state: serde_json::Value =
        serde_json::from_str(&annotation(&secret, "catalio.ai/state")).unwrap();
    assert_eq!(
        state["previous"]["hash"].as_str(),
        first.secret_hash.as_deref()
    );

    let after = f
        .status_until("ci", "grace period to end", |s| {
            s.previous_secret_hash.is_none()
        })
        .await;
    assert_eq!(after.previous_secret_expires_at, None);
    assert_eq!(after.secret_hash, during.secret_hash);
    let expires = during.previous_secret_expires_at.unwrap().0;
    assert!(
        jiff::Timestamp::now() >= expires,
        "the previous hash must not be dropped early"
    );
    f.event_with_reason("ci", "GraceExpired").await;
}

#[tokio::test]
async fn scheduled_rotation_fires_when_due() {
    let f = Fixture::new("schedule").await;
    f.apply(&credential("ci", "  rotation:\n    every: 1h\n"));
    let first = f.active("ci").await;
    let rotated_at = first.last_rotated_at.clone().unwrap().0;
    assert_eq!(
        first.next_rotation_at.clone().unwrap().0,
        rotated_at + jiff::SignedDuration::from_hours(1)
    );

    // The Secret records, sealed, when its secret was made; instead of
    // waiting an hour, seal "two hours ago" as an operator of then would
    // have (the test holds the hash key).
    let cred = f.creds().get("ci").await.unwrap();
    let client_id = first.client_id.clone().unwrap();
    let current = data(&f.secret("ci").await, "client_secret");
    let hasher = SecretHasher::new(&hash_key(&f.client, &f.ns.name).await);
    let material = Material {
        hash: hasher.hash(&client_id, current.as_bytes()),
        secret: ClientSecret::from_plaintext(current),
        counter: 0,
        rotated_at: jiff::Timestamp::now() - jiff::SignedDuration::from_hours(2),
        previous: None,
    };
    let settings = Settings {
        token_url: String::new(),
        audience: String::new(),
        unused_after: Duration::from_secs(90 * 86_400),
    };
    let then = desired_secret(&cred, &client_id, &material, &settings, &hasher);
    f.kubectl_ok(&[
        "annotate",
        "secret",
        "ci",
        "--overwrite",
        &format!("catalio.ai/state={}", annotation(&then, "catalio.ai/state")),
    ]);
    let rotated = f
        .status_until("ci", "scheduled rotation", |s| {
            s.secret_hash != first.secret_hash
        })
        .await;
    assert_eq!(rotated.rotation_counter, Some(0));
    assert!(rotated.last_rotated_at.unwrap().0 >= rotated_at);
    let (_, _, note) = f.event_with_reason("ci", "Rotated").await;
    assert!(note.contains("schedule"), "{note}");
}

#[tokio::test]
async fn the_api_server_enforces_one_way_fields() {
    let f = Fixture::new("cel").await;
    f.apply(&credential("ci", "  rotation:\n    counter: 2\n"));
    f.active("ci").await;

    let lowered = f.patch("ci", r#"{"spec":{"rotation":{"counter":1}}}"#);
    assert!(!lowered.status.success());
    assert!(
        String::from_utf8_lossy(&lowered.stderr).contains("rotation.counter may never decrease")
    );
    let renamed = f.patch("ci", r#"{"spec":{"secretName":"elsewhere"}}"#);
    assert!(!renamed.status.success());
    assert!(String::from_utf8_lossy(&renamed.stderr).contains("secretName is immutable"));
    let bad_scope = f.patch("ci", r#"{"spec":{"scopes":["requirements:read"]}}"#);
    assert!(!bad_scope.status.success());
    assert!(String::from_utf8_lossy(&bad_scope.stderr).contains("each scope must be"));
    let short = f.patch("ci", r#"{"spec":{"rotation":{"every":"30m"}}}"#);
    assert!(String::from_utf8_lossy(&short.stderr).contains("rotation.every must be at least 1h"));
    let lifetime = f.patch("ci", r#"{"spec":{"tokenLifetime":"48h"}}"#);
    assert!(
        String::from_utf8_lossy(&lifetime.stderr)
            .contains("tokenLifetime must be between 1m and 24h")
    );
}

#[tokio::test]
async fn revocation_deletes_the_secret_and_cannot_be_undone() {
    let f = Fixture::new("revoke").await;
    f.apply(&credential("ci", ""));
    let active = f.active("ci").await;

    assert!(
        f.patch("ci", r#"{"spec":{"revoked":true}}"#)
            .status
            .success()
    );
    let revoked = f
        .status_until("ci", "revocation", |s| s.phase == Some(Phase::Revoked))
        .await;
    assert_eq!(
        revoked.client_id, active.client_id,
        "the tombstone keeps its id"
    );
    assert!(revoked.revoked_at.is_some());
    assert_eq!(revoked.secret_hash, None);
    let ready = revoked
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "Revoked")
    );
    f.secret_gone("ci", "Secret to be deleted").await;
    f.event_with_reason("ci", "Revoked").await;

    let restore = f.patch("ci", r#"{"spec":{"revoked":false}}"#);
    assert!(!restore.status.success());
    assert!(
        String::from_utf8_lossy(&restore.stderr).contains("revoked credentials cannot be restored")
    );
    // Removing the field is the same attempt: the default (false) applies.
    let removed = f.kubectl(&[
        "patch",
        "apicred",
        "ci",
        "--type",
        "json",
        "-p",
        r#"[{"op":"remove","path":"/spec/revoked"}]"#,
    ]);
    assert!(!removed.status.success());

    // The tombstone stays revoked and no Secret comes back, reconciled
    // again or not.
    f.reconciled_again("ci").await;
    assert!(f.secrets().get_opt("ci").await.unwrap().is_none());
    let still = f.creds().get("ci").await.unwrap();
    assert!(still.spec.revoked);
}

/// A credential nobody uses for `unusedAfter` is marked Unused with an
/// event; with `revokeWhenUnused` it is revoked for good, with a Warning.
/// One whose allowance has not run out says so.
#[tokio::test]
async fn unused_credentials_are_marked_and_revoked_when_asked() {
    let f = Fixture::new("unused").await;
    f.apply(&credential("idle", "  unusedAfter: 3s\n"));
    f.apply(&credential(
        "doomed",
        "  unusedAfter: 3s\n  revokeWhenUnused: true\n",
    ));
    f.apply(&credential("busy", "  unusedAfter: 1h\n"));
    f.active("busy").await;

    let unused = |s: &ApiCredentialStatus| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Unused" && c.status == "True")
    };
    let idle = f
        .status_until("idle", "idle to be marked Unused", |s| unused(s))
        .await;
    assert_eq!(idle.phase, Some(Phase::Active), "marked, not revoked");
    let (kind, _, message) = f.event_with_reason("idle", "Unused").await;
    assert_eq!(kind, "Normal");
    assert!(message.contains("Never used"), "{message}");

    let doomed = f
        .status_until("doomed", "doomed to be revoked", |s| {
            s.phase == Some(Phase::Revoked)
        })
        .await;
    assert!(doomed.revoked_at.is_some());
    assert!(
        f.creds().get("doomed").await.unwrap().spec.revoked,
        "revoked in the spec, for good"
    );
    let (kind, _, _) = f.event_with_reason("doomed", "RevokedUnused").await;
    assert_eq!(kind, "Warning");
    f.secret_gone("doomed", "doomed's Secret to be deleted")
        .await;
    let restore = f.patch("doomed", r#"{"spec":{"revoked":false}}"#);
    assert!(!restore.status.success());

    // Within its hour, busy is not unused: its condition says so.
    let busy = f.creds().get("busy").await.unwrap().status.unwrap();
    let condition = busy
        .conditions
        .iter()
        .find(|c| c.type_ == "Unused")
        .unwrap();
    assert_eq!(
        (condition.status.as_str(), condition.reason.as_str()),
        ("False", "UsedRecently")
    );
}

#[tokio::test]
async fn deleting_the_credential_collects_its_secret() {
    let f = Fixture::new("gc").await;
    f.apply(&credential("ci", ""));
    f.active("ci").await;
    f.kubectl_ok(&["delete", "apicred", "ci", "--wait=false"]);
    f.secret_gone("ci", "Secret to be garbage-collected").await;
}

#[tokio::test]
async fn tampered_and_deleted_secrets_are_replaced_with_warnings() {
    let f = Fixture::new("tamper").await;
    f.apply(&credential("ci", ""));
    let first = f.active("ci").await;

    let tamper = || {
        f.kubectl_ok(&[
            "patch",
            "secret",
            "ci",
            "--type",
            "merge",
            "-p",
            r#"{"stringData":{"client_secret":"chosen-by-someone"}}"#,
        ])
    };
    tamper();
    let replaced = f
        .status_until("ci", "tampered Secret to be replaced", |s| {
            s.secret_hash != first.secret_hash
        })
        .await;
    let secret = f.secret("ci").await;
    let value = data(&secret, "client_secret");
    assert_ne!(value, "chosen-by-someone");
    assert_eq!(
        replaced.secret_hash,
        Some(f.hash(first.client_id.as_deref().unwrap(), &value).await)
    );
    assert_eq!(
        annotation(&secret, "catalio.ai/secret-sha256"),
        replaced.secret_hash.clone().unwrap()
    );
    let (kind, _, note) = f.event_with_reason("ci", "SecretReplaced").await;
    assert_eq!(kind, "Warning");
    assert!(note.contains("did not match"), "{note}");

    // The same tampering again is the same event again: one Event whose
    // series counts both, as kubectl shows repeats.
    tamper();
    let replaced = f
        .status_until("ci", "tampered Secret to be replaced again", |s| {
            s.secret_hash != replaced.secret_hash
        })
        .await;
    let series = eventually(WAIT, "the repeat counted in one series", || async {
        let tampered: Vec<Event> = Api::<Event>::namespaced(f.client.clone(), &f.ns.name)
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| {
                e.reason.as_deref() == Some("SecretReplaced")
                    && e.note
                        .as_deref()
                        .is_some_and(|n| n.contains("did not match"))
            })
            .collect();
        tampered
            .iter()
            .any(|e| e.series.is_some())
            .then_some(tampered)
    })
    .await;
    assert_eq!(series.len(), 1, "{series:?}");
    assert_eq!(series[0].series.as_ref().unwrap().count, 2);

    f.kubectl_ok(&["delete", "secret", "ci"]);
    let recreated = f
        .status_until("ci", "deleted Secret to be recreated", |s| {
            s.secret_hash != replaced.secret_hash
        })
        .await;
    let secret = f.secret("ci").await;
    assert_eq!(
        recreated.secret_hash,
        Some(
            f.hash(
                first.client_id.as_deref().unwrap(),
                &data(&secret, "client_secret")
            )
            .await
        )
    );
    eventually(WAIT, "a SecretReplaced event for the deletion", || async {
        f.events("ci")
            .await
            .into_iter()
            .find(|e| e.1 == "SecretReplaced" && e.2.contains("was deleted"))
    })
    .await;
}

#[tokio::test]
async fn a_conflicting_secret_fails_one_credential_and_not_the_others() {
    let f = Fixture::new("conflict").await;
    f.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "taken",
        "--from-literal=key=value",
    ]);
    f.apply(&credential("blocked", "  secretName: taken\n"));
    f.apply(&credential("fine", ""));

    let failed = f
        .status_until("blocked", "conflict to be reported", |s| {
            s.phase == Some(Phase::Failed)
        })
        .await;
    let ready = failed
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "SecretConflict")
    );
    assert_eq!(failed.secret_hash, None);
    let (kind, _, _) = f.event_with_reason("blocked", "SecretConflict").await;
    assert_eq!(kind, "Warning");
    // The foreign Secret is untouched.
    let taken = f.secret("taken").await;
    assert_eq!(data(&taken, "key"), "value");
    assert!(taken.metadata.owner_references.is_none());

    f.active("fine").await;
}

#[tokio::test]
async fn secret_values_never_reach_the_logs_or_events() {
    let f = Fixture::new("leak").await;
    let mut seen = Vec::new();
    f.apply(&credential("ci", "  rotation:\n    gracePeriod: 1h\n"));
    f.active("ci").await;
    seen.push(data(&f.secret("ci").await, "client_secret"));

    f.rotate("ci", 1).await;
    seen.push(data(&f.secret("ci").await, "client_secret"));

    f.kubectl_ok(&["delete", "secret", "ci"]);
    let recreated = f
        .status_until("ci", "recreation", |s| {
            s.previous_secret_hash.is_none() && s.rotation_counter == Some(1)
        })
        .await;
    assert!(recreated.secret_hash.is_some());
    seen.push(data(&f.secret("ci").await, "client_secret"));

    assert!(
        f.patch("ci", r#"{"spec":{"revoked":true}}"#)
            .status
            .success()
    );
    f.status_until("ci", "revocation", |s| s.phase == Some(Phase::Revoked))
        .await;

    let logs = f.operator.logs();
    assert!(logs.contains("Rotated client secret"), "logs were captured");
    let events = format!("{:?}", f.events("ci").await);
    let status = serde_json::to_string(&f.creds().get("ci").await.unwrap().status).unwrap();
    for value in &seen {
        assert!(
            !logs.contains(value.as_str()),
            "a client secret is in the logs"
        );
        assert!(
            !events.contains(value.as_str()),
            "a client secret is in an event"
        );
        assert!(
            !status.contains(value.as_str()),
            "a client secret is in status"
        );
    }
}

/// `rotation.restartTargets`: each rotation rolls the named Deployment and
/// the StatefulSets the selector matches (their pod template changes, so
/// their generation moves) exactly once, with an event per workload;
/// creating the credential, a restart of the operator, a resync and a
/// spec change that is no rotation roll nothing; other workloads are never
/// touched; a target that cannot be rolled is a False condition naming it.
#[tokio::test]
async fn rotations_restart_the_named_workloads_once_each() {
    let mut f = Fixture::new("restart").await;
    let workload = |kind: &str, name: &str, app: &str| {
        let service = if kind == "StatefulSet" {
            "\n  serviceName: x"
        } else {
            ""
        };
        format!(
            "apiVersion: apps/v1\nkind: {kind}\nmetadata: {{name: {name}, labels: {{app: {app}}}}}\n\
             spec:{service}\n  selector: {{matchLabels: {{app: {app}}}}}\n  template:\n    \
             metadata: {{labels: {{app: {app}}}}}\n    spec: {{containers: [{{name: c, image: none}}]}}\n"
        )
    };
    f.apply(&workload("Deployment", "api", "api"));
    f.apply(&workload("StatefulSet", "db", "db"));
    f.apply(&workload("Deployment", "bystander", "db"));
    f.apply(&credential(
        "ci",
        "  rotation:\n    restartTargets:\n    - {kind: Deployment, name: api}\n    \
         - {kind: StatefulSet, selector: {matchLabels: {app: db}}}\n",
    ));
    let created = f.active("ci").await;
    let ns = f.ns.name.clone();
    let generations = || {
        let mut out = Vec::new();
        for (kind, name) in [
            ("deployment", "api"),
            ("statefulset", "db"),
            ("deployment", "bystander"),
        ] {
            let json: serde_json::Value = serde_json::from_str(
                &cluster().kubectl_ok(&["-n", &ns, "get", kind, name, "-o", "json"]),
            )
            .unwrap();
            let annotation =
                json["spec"]["template"]["metadata"]["annotations"]["restart.catalio.ai/ci"]
                    .as_str()
                    .map(str::to_owned);
            out.push((json["metadata"]["generation"].as_i64().unwrap(), annotation));
        }
        out
    };
    let short = |s: &ApiCredentialStatus| {
        s.secret_hash.as_ref().unwrap()["hmac-sha256:".len()..][..16].to_owned()
    };
    assert_eq!(created.restarted_for, Some(short(&created)));
    // Creating the credential rolled nothing.
    f.reconciled_again("ci").await;
    let at_start = generations();
    assert!(at_start.iter().all(|(_, a)| a.is_none()), "{at_start:?}");

    // A rotation rolls api and db once, not the bystander.
    let rotated = f.rotate("ci", 1).await;
    let id = short(&rotated);
    let after = f
        .status_until("ci", "the targets to be rolled", |s| {
            s.restarted_for.as_deref() == Some(id.as_str())
                && s.conditions
                    .iter()
                    .any(|c| c.type_ == "TargetsRestarted" && c.status == "True")
        })
        .await;
    let once = generations();
    assert_eq!(once[0], (at_start[0].0 + 1, Some(id.clone())));
    assert_eq!(once[1], (at_start[1].0 + 1, Some(id.clone())));
    assert_eq!(once[2], at_start[2]);
    let restarted: BTreeSet<String> = f
        .events("ci")
        .await
        .into_iter()
        .filter(|e| e.1 == "RestartedWorkload")
        .map(|e| e.2)
        .collect();
    assert_eq!(
        restarted,
        BTreeSet::from([
            format!("Restarted Deployment api for client secret {id}"),
            format!("Restarted StatefulSet db for client secret {id}"),
        ])
    );
    assert!(
        after
            .conditions
            .iter()
            .any(|c| c.message.contains("2 workload(s)"))
    );

    // A restart of the operator and a reconcile roll nothing.
    f.operator.kill();
    f.operator = start_operator(&f.ns.name);
    f.reconciled_again("ci").await;
    assert_eq!(generations(), once);

    // The next rotation rolls them once more.
    let rotated = f.rotate("ci", 2).await;
    let id2 = short(&rotated);
    f.status_until("ci", "the second roll", |s| {
        s.restarted_for.as_deref() == Some(id2.as_str())
    })
    .await;
    let twice = generations();
    assert_eq!(twice[0], (once[0].0 + 1, Some(id2.clone())));
    assert_eq!(twice[1], (once[1].0 + 1, Some(id2.clone())));
    assert_eq!(twice[2], at_start[2]);

    // A target that is not there: False, naming it, and restartedFor stays
    // where the targets are, so it is tried again.
    let out = f.patch(
        "ci",
        r#"{"spec":{"rotation":{"restartTargets":[{"kind":"Deployment","name":"ghost"}]}}}"#,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rotated = f.rotate("ci", 3).await;
    let failed = f
        .status_until("ci", "the ghost to be reported", |s| {
            s.conditions.iter().any(|c| {
                c.type_ == "TargetsRestarted"
                    && c.status == "False"
                    && c.message.contains("Deployment ghost: not found")
            })
        })
        .await;
    assert_ne!(failed.restarted_for, Some(short(&rotated)));
    f.event_with_reason("ci", "RestartFailed").await;
}
