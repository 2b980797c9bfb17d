use super::*;
use crate::crd::ClientSecretMode;
use crate::crd::{ApiCredentialSpec, credential::SecretTemplate};
use crate::secret::SecretHasher;

const UID: &str = "11111111-2222-3333-4444-555555555555";
const CLIENT_ID: &str = "ci_11111111222233334444555555555555";

fn settings() -> Settings {
    Settings {
        token_url: "http://catalio.test/oauth/token".into(),
        audience: "https://catalio.ai/api/v1".into(),
        unused_after: Duration::from_secs(90 * 86_400),
    }
}

fn at(second: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + second).unwrap()
}

fn cred() -> ApiCredential {
    let mut c = ApiCredential::new(
        "ci",
        ApiCredentialSpec {
            display_name: "CI/CD Pipeline".into(),
            scopes: vec!["*:read".into()],
            ..Default::default()
        },
    );
    c.metadata.uid = Some(UID.into());
    c.metadata.namespace = Some("org".into());
    c.metadata.generation = Some(1);
    c
}

/// Hands out "secret-1", "secret-2", ... and counts the calls.
struct Generator(u32);

impl Generator {
    fn next(&mut self) -> Result<ClientSecret, getrandom::Error> {
        self.0 += 1;
        Ok(ClientSecret::from_plaintext(format!("secret-{}", self.0)))
    }
}

fn hasher() -> SecretHasher {
    SecretHasher::new(&[9; 32])
}

fn hash(secret: &str) -> String {
    hasher().hash(CLIENT_ID, secret.as_bytes()).to_string()
}

fn run(cred: &ApiCredential, secret: Option<&Secret>, now: Timestamp, g: &mut Generator) -> Plan {
    plan(cred, secret, &settings(), &hasher(), now, &mut || g.next()).unwrap()
}

/// The Secret the plan writes, as the API server would then hold it.
fn applied(plan: &Plan) -> Secret {
    let mut secret = match &plan.secret {
        SecretAction::Create(s) => (**s).clone(),
        SecretAction::Update { secret, .. } => (**secret).clone(),
        other => panic!("expected the Secret to be written, got {other:?}"),
    };
    secret.metadata.resource_version = Some("1".into());
    secret
}

/// The sealed state annotation, parsed.
fn state(secret: &Secret) -> serde_json::Value {
    serde_json::from_str(&annotation(secret, keys::STATE).unwrap()).unwrap()
}

fn data(secret: &Secret, key: &str) -> String {
    String::from_utf8(secret.data.as_ref().unwrap()[key].0.clone()).unwrap()
}

fn annotation(secret: &Secret, key: &str) -> Option<String> {
    secret
        .metadata
        .annotations
        .as_ref()
        .unwrap()
        .get(key)
        .cloned()
}

fn reasons(plan: &Plan) -> Vec<Reason> {
    plan.notes.iter().map(|n| n.reason).collect()
}

/// The state after the first reconcile: the Secret as applied and the status
/// as written.
fn created(g: &mut Generator) -> (ApiCredential, Secret) {
    let mut c = cred();
    let p = run(&c, None, at(0), g);
    let s = applied(&p);
    c.status = Some(p.status);
    (c, s)
}

#[test]
fn first_reconcile_creates_the_secret_and_reports_active() {
    let mut g = Generator(0);
    let p = run(&cred(), None, at(0), &mut g);
    let s = applied(&p);
    assert_eq!(s.metadata.name.as_deref(), Some("ci"));
    assert_eq!(s.type_.as_deref(), Some("Opaque"));
    assert_eq!(data(&s, "client_id"), CLIENT_ID);
    assert_eq!(data(&s, "client_secret"), "secret-1");
    assert_eq!(data(&s, "token_url"), "http://catalio.test/oauth/token");
    assert_eq!(data(&s, "audience"), "https://catalio.ai/api/v1");
    assert!(matches!(p.secret, SecretAction::Create(_)));
    let hash = hash("secret-1");
    assert!(hash.starts_with("hmac-sha256:"));
    assert_eq!(annotation(&s, keys::SECRET_SHA256), Some(hash.clone()));
    let state = state(&s);
    assert_eq!(state["counter"], 0);
    assert_eq!(state["rotatedAt"], at(0).to_string());
    assert_eq!(state["seal"].as_str().unwrap().len(), 64);
    let labels = s.metadata.labels.as_ref().unwrap();
    assert_eq!(labels[keys::MANAGED_BY], "catalio-operator");
    assert_eq!(labels[keys::CREDENTIAL], "ci");
    let owner = &s.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!((owner.uid.as_str(), owner.controller), (UID, Some(true)));

    assert_eq!(p.status.phase, Some(Phase::Active));
    assert_eq!(p.status.client_id.as_deref(), Some(CLIENT_ID));
    assert_eq!(p.status.secret_hash, Some(hash));
    assert_eq!(p.status.rotation_counter, Some(0));
    assert_eq!(p.status.observed_generation, Some(1));
    assert_eq!(p.status.last_rotated_at, Some(Time(at(0))));
    let ready = &p.status.conditions[0];
    assert_eq!(
        (ready.type_.as_str(), ready.status.as_str()),
        ("Ready", "True")
    );
    assert_eq!(reasons(&p), [Reason::Created]);
    // Next: the moment it would become unused (90 days from now, as it
    // has no creation time here).
    assert_eq!(p.requeue_after, Some(Duration::from_secs(90 * 86_400)));
    assert!(!p.revoke_unused);
}

fn unused_condition(p: &Plan) -> (String, String) {
    let c = p
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == "Unused")
        .expect("an Unused condition");
    (c.status.clone(), c.reason.clone())
}

#[test]
fn a_credential_unused_for_too_long_is_marked_once_and_revoked_only_when_asked() {
    let mut g = Generator(0);
    let (mut c, s) = created(&mut g);
    c.metadata.creation_timestamp = Some(Time(at(0)));
    c.spec.unused_after = Some("1h".into());
    // Used ten minutes ago: not unused; looked at again when it would be.
    c.status.as_mut().unwrap().last_used_at = Some(Time(at(600)));
    let p = run(&c, Some(&s), at(1_200), &mut g);
    assert_eq!(
        unused_condition(&p),
        ("False".into(), "UsedRecently".into())
    );
    assert_eq!(p.requeue_after, Some(Duration::from_secs(3_000)));
    assert!(p.notes.is_empty() && !p.revoke_unused);

    // An hour after that use: Unused, with one event, not revoked.
    let p = run(&c, Some(&s), at(4_200), &mut g);
    assert_eq!(
        unused_condition(&p),
        ("True".into(), "NotUsedRecently".into())
    );
    assert_eq!(reasons(&p), [Reason::Unused]);
    assert!(!Reason::Unused.is_warning());
    assert!(!p.revoke_unused);
    assert!(
        p.notes[0].message.contains("Not used since"),
        "{}",
        p.notes[0].message
    );
    // Already marked: no second event. What the servers write (last use,
    // revoked tokens) is theirs: no status write for it.
    c.status = Some(ApiCredentialStatus {
        last_used_at: Some(Time(at(600))),
        revoked_tokens: vec![crate::crd::RevokedToken {
            jti: "j".into(),
            expires_at: Time(at(9_000)),
        }],
        revoked_tokens_before: Some(Time(at(100))),
        ..p.status.clone()
    });
    let again = run(&c, Some(&s), at(4_300), &mut g);
    assert!(again.notes.is_empty());
    assert!(!status_changed(c.status.as_ref(), &again.status));

    // Never used: counted from creation. revokeWhenUnused: revoked, warned.
    c.status.as_mut().unwrap().last_used_at = None;
    c.spec.revoke_when_unused = true;
    let p = run(&c, Some(&s), at(3_600), &mut g);
    assert!(p.revoke_unused);
    assert_eq!(reasons(&p), [Reason::RevokedUnused]);
    assert!(Reason::RevokedUnused.is_warning());
    assert!(
        p.notes[0].message.contains("Never used"),
        "{}",
        p.notes[0].message
    );
    assert_eq!(g.0, 1, "no new secret may be generated");
}

#[test]
fn reconciling_again_changes_nothing() {
    let mut g = Generator(0);
    let (c, s) = created(&mut g);
    let p = run(&c, Some(&s), at(3_600), &mut g);
    assert_eq!(p.secret, SecretAction::Keep);
    assert!(!status_changed(c.status.as_ref(), &p.status));
    assert!(p.notes.is_empty());
    assert_eq!(g.0, 1, "no new secret may be generated");
}

#[test]
fn a_wiped_status_is_rebuilt_from_the_secret() {
    let mut g = Generator(0);
    let (mut c, s) = created(&mut g);
    let before = c.status.take().unwrap();
    let p = run(&c, Some(&s), at(60), &mut g);
    assert_eq!(p.secret, SecretAction::Keep);
    assert_eq!(p.status.secret_hash, before.secret_hash);
    assert_eq!(p.status.last_rotated_at, before.last_rotated_at);
    assert_eq!(p.status.client_id, before.client_id);
    assert_eq!(p.status.phase, Some(Phase::Active));
    assert!(p.notes.is_empty(), "{:?}", p.notes);
    assert_eq!(g.0, 1);
}

#[test]
fn a_tampered_secret_is_replaced_with_a_warning() {
    let mut g = Generator(0);
    let (c, mut s) = created(&mut g);
    s.data.as_mut().unwrap().insert(
        keys::CLIENT_SECRET.into(),
        ByteString(b"chosen-by-attacker".to_vec()),
    );
    let p = run(&c, Some(&s), at(10), &mut g);
    assert_eq!(data(&applied(&p), "client_secret"), "secret-2");
    assert_eq!(reasons(&p), [Reason::SecretReplaced]);
    assert!(Reason::SecretReplaced.is_warning());
    assert!(!p.notes[0].message.contains("chosen-by-attacker"));
}

#[test]
fn a_changed_client_id_counts_as_tampering() {
    let mut g = Generator(0);
    let (c, mut s) = created(&mut g);
    s.data
        .as_mut()
        .unwrap()
        .insert(keys::CLIENT_ID.into(), ByteString(b"ci_other".to_vec()));
    let p = run(&c, Some(&s), at(10), &mut g);
    assert_eq!(data(&applied(&p), "client_id"), CLIENT_ID);
    assert_eq!(reasons(&p), [Reason::SecretReplaced]);
}

#[test]
fn a_deleted_secret_is_recreated_with_a_new_secret() {
    let mut g = Generator(0);
    let (c, _) = created(&mut g);
    let p = run(&c, None, at(10), &mut g);
    assert_eq!(data(&applied(&p), "client_secret"), "secret-2");
    assert_eq!(reasons(&p), [Reason::SecretReplaced]);
}

#[test]
fn a_foreign_secret_is_left_alone_and_reported() {
    let mut g = Generator(0);
    let (c, mut s) = created(&mut g);
    s.metadata.owner_references = None;
    let p = run(&c, Some(&s), at(10), &mut g);
    assert_eq!(p.secret, SecretAction::Keep);
    assert_eq!(p.status.phase, Some(Phase::Failed));
    let ready = &p.status.conditions[0];
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "SecretConflict")
    );
    assert_eq!(reasons(&p), [Reason::SecretConflict]);
    assert_eq!(
        p.status.secret_hash, None,
        "a Secret we do not control must not work"
    );

    // Reported once, not on every resync.
    let mut again = c.clone();
    again.status = Some(p.status);
    assert!(run(&again, Some(&s), at(20), &mut g).notes.is_empty());
}

#[test]
fn raising_the_counter_rotates_at_once_without_grace() {
    let mut g = Generator(0);
    let (mut c, s) = created(&mut g);
    c.spec.rotation.counter = 1;
    let p = run(&c, Some(&s), at(100), &mut g);
    let new = applied(&p);
    assert_eq!(data(&new, "client_secret"), "secret-2");
    assert_eq!(state(&new)["counter"], 1);
    assert_eq!(state(&new).get("previous"), None);
    assert_eq!(p.status.previous_secret_hash, None);
    assert_eq!(p.status.rotation_counter, Some(1));
    assert_eq!(p.status.last_rotated_at, Some(Time(at(100))));
    assert_eq!(reasons(&p), [Reason::Rotated]);
    assert!(p.notes[0].message.contains("stopped working"));
}

#[test]
fn rotation_with_grace_keeps_the_previous_hash_until_it_expires() {
    let mut g = Generator(0);
    let (mut c, s) = created(&mut g);
    c.spec.rotation.counter = 1;
    c.spec.rotation.grace_period = "1h".into();
    let p = run(&c, Some(&s), at(100), &mut g);
    let new = applied(&p);
    let old_hash = hash("secret-1");
    assert_eq!(p.status.previous_secret_hash, Some(old_hash.clone()));
    assert_eq!(p.status.previous_secret_expires_at, Some(Time(at(3_700))));
    assert_eq!(state(&new)["previous"]["hash"], old_hash);
    assert_eq!(p.requeue_after, Some(Duration::from_secs(3_600)));

    // Still inside the grace period: nothing changes.
    c.status = Some(p.status);
    let during = run(&c, Some(&new), at(3_699), &mut g);
    assert_eq!(during.secret, SecretAction::Keep);
    assert_eq!(during.requeue_after, Some(Duration::from_secs(1)));

    // After it: the previous hash is dropped, with an event.
    let after = run(&c, Some(&new), at(3_700), &mut g);
    let dropped = applied(&after);
    assert_eq!(data(&dropped, "client_secret"), "secret-2");
    assert_eq!(state(&dropped).get("previous"), None);
    assert_eq!(after.status.previous_secret_hash, None);
    assert_eq!(after.status.previous_secret_expires_at, None);
    assert_eq!(reasons(&after), [Reason::GraceExpired]);
}

#[test]
fn scheduled_rotation_fires_when_due() {
    let mut g = Generator(0);
    let (mut c, s) = created(&mut g);
    c.spec.rotation.every = Some("2h".into());
    let early = run(&c, Some(&s), at(7_199), &mut g);
    assert_eq!(early.secret, SecretAction::Keep);
    assert_eq!(early.status.next_rotation_at, Some(Time(at(7_200))));
    assert_eq!(early.requeue_after, Some(Duration::from_secs(1)));

    let due = run(&c, Some(&s), at(7_200), &mut g);
    assert_eq!(data(&applied(&due), "client_secret"), "secret-2");
    assert_eq!(due.status.next_rotation_at, Some(Time(at(14_400))));
    assert_eq!(
        due.status.rotation_counter,
        Some(0),
        "the spec counter is unchanged"
    );
    assert_eq!(reasons(&due), [Reason::Rotated]);
    assert!(due.notes[0].message.contains("schedule"));
}

/// Restart targets are rolled when a secret replaces the one they were
/// rolled for, and only then: not for the first secret, not when targets
/// are added, not when nothing changed.
#[test]
fn restart_targets_roll_once_per_new_secret() {
    use crate::crd::credential::{RestartTarget, WorkloadKind};
    let mut g = Generator(0);
    let (mut c, s) = created(&mut g);
    // Targets added to a credential that has a secret: nothing to roll.
    c.spec.rotation.restart_targets = vec![RestartTarget {
        kind: WorkloadKind::Deployment,
        name: Some("api".into()),
        selector: None,
    }];
    let id = |secret: &str| hash(secret)["hmac-sha256:".len()..][..16].to_owned();
    let p = run(&c, Some(&s), at(10), &mut g);
    assert_eq!(p.restart, None);
    assert_eq!(p.status.restarted_for, Some(id("secret-1")));
    c.status = Some(p.status);
    assert_eq!(run(&c, Some(&s), at(20), &mut g).restart, None);

    // Rotated: rolled to the new secret, once.
    c.spec.rotation.counter = 1;
    let p = run(&c, Some(&s), at(30), &mut g);
    assert_eq!(p.restart, Some(id("secret-2")));
    assert_eq!(p.status.restarted_for, Some(id("secret-2")));
    let s = applied(&p);
    c.status = Some(p.status);
    let again = run(&c, Some(&s), at(40), &mut g);
    assert_eq!(again.restart, None);
    assert!(!status_changed(c.status.as_ref(), &again.status));

    // A deleted Secret's replacement is a new secret too.
    let p = run(&c, None, at(50), &mut g);
    assert_eq!(p.restart, Some(id("secret-3")));

    // Without targets, nothing is kept.
    c.spec.rotation.restart_targets.clear();
    assert_eq!(run(&c, Some(&s), at(60), &mut g).status.restarted_for, None);
}

/// `clientSecret: Disabled`: no secret is generated and a Secret the
/// credential had is deleted, once; the credential stays Active (its
/// ServiceAccounts authenticate) and can get a secret back.
#[test]
fn a_credential_without_a_client_secret_has_no_secret_and_stays_active() {
    let mut g = Generator(0);
    let mut fresh = cred();
    fresh.spec.client_secret = ClientSecretMode::Disabled;
    fresh.spec.service_accounts = vec!["sync".into()];
    let p = run(&fresh, None, at(0), &mut g);
    assert_eq!(p.secret, SecretAction::Keep);
    assert_eq!(g.0, 0, "no secret generated");
    assert_eq!(p.status.phase, Some(Phase::Active));
    assert_eq!(
        (p.status.secret_hash.as_ref(), p.status.secret_name.as_ref()),
        (None, None)
    );
    assert_eq!(p.status.conditions[0].reason, "Secretless");
    assert_eq!(
        p.status.conditions[0].message,
        "No client secret; it authenticates with ServiceAccounts sync with their tokens"
    );
    assert_eq!(p.status.conditions[0].status, "True");
    assert!(p.notes.is_empty());

    let (mut c, s) = created(&mut g);
    c.spec.client_secret = ClientSecretMode::Disabled;
    c.spec.service_accounts = vec!["sync".into()];
    let p = run(&c, Some(&s), at(50), &mut g);
    assert_eq!(p.secret, SecretAction::Delete);
    assert_eq!(reasons(&p), [Reason::SecretDisabled]);
    assert!(!p.notes[0].message.contains("secret-1"));
    c.status = Some(p.status);
    let again = run(&c, None, at(60), &mut g);
    assert_eq!(again.secret, SecretAction::Keep);
    assert!(again.notes.is_empty());
    assert!(!status_changed(c.status.as_ref(), &again.status));

    // Raising the counter ends the ServiceAccounts' tokens: announced, and
    // in the status their tokens are checked against.
    assert_eq!(c.status.as_ref().unwrap().rotation_counter, Some(0));
    c.spec.rotation.counter = 2;
    let rotated = run(&c, None, at(65), &mut g);
    assert_eq!(reasons(&rotated), [Reason::Rotated]);
    assert_eq!(rotated.status.rotation_counter, Some(2));
    assert_eq!(g.0, 1, "no secret generated");
    c.status = Some(rotated.status);
    assert!(run(&c, None, at(66), &mut g).notes.is_empty());

    // Enabled again: a new secret, announced as created, not as a repair.
    c.spec.client_secret = ClientSecretMode::Generated;
    let back = run(&c, None, at(70), &mut g);
    assert!(matches!(back.secret, SecretAction::Create(_)));
    assert_eq!(reasons(&back), [Reason::Created]);
    assert_eq!(g.0, 2);
}

#[test]
fn revocation_deletes_the_secret_once_and_keeps_a_tombstone() {
    let mut g = Generator(0);
    let (mut c, s) = created(&mut g);
    c.spec.revoked = true;
    let p = run(&c, Some(&s), at(50), &mut g);
    assert_eq!(p.secret, SecretAction::Delete);
    assert_eq!(p.status.phase, Some(Phase::Revoked));
    assert_eq!(p.status.revoked_at, Some(Time(at(50))));
    assert_eq!(p.status.client_id.as_deref(), Some(CLIENT_ID));
    assert_eq!(p.status.secret_hash, None);
    assert_eq!(reasons(&p), [Reason::Revoked]);

    c.status = Some(p.status);
    let later = run(&c, None, at(500), &mut g);
    assert_eq!(later.secret, SecretAction::Keep);
    assert_eq!(later.status.revoked_at, Some(Time(at(50))));
    assert!(later.notes.is_empty());
    assert!(!status_changed(c.status.as_ref(), &later.status));
    assert_eq!(g.0, 1);
}

#[test]
fn an_invalid_schedule_fails_but_keeps_a_valid_secret_working() {
    let mut g = Generator(0);
    let (mut c, s) = created(&mut g);
    c.spec.rotation.every = Some("30m".into());
    let p = run(&c, Some(&s), at(10), &mut g);
    assert_eq!(p.secret, SecretAction::Keep);
    assert_eq!(p.status.phase, Some(Phase::Failed));
    assert_eq!(p.status.conditions[0].reason, "InvalidSpec");
    assert_eq!(p.status.secret_hash, c.status.as_ref().unwrap().secret_hash);
    assert_eq!(reasons(&p), [Reason::InvalidSpec]);
    assert!(p.notes[0].message.contains("at least 1h"));
}

#[test]
fn template_changes_reapply_the_same_secret() {
    let mut g = Generator(0);
    let (mut c, s) = created(&mut g);
    c.spec.secret_template = Some(SecretTemplate {
        labels: [("team".to_owned(), "payments".to_owned())].into(),
        annotations: [("note".to_owned(), "synced".to_owned())].into(),
    });
    let p = run(&c, Some(&s), at(10), &mut g);
    let new = applied(&p);
    assert_eq!(data(&new, "client_secret"), "secret-1");
    assert_eq!(new.metadata.labels.as_ref().unwrap()["team"], "payments");
    assert_eq!(annotation(&new, "note").as_deref(), Some("synced"));
    assert!(p.notes.is_empty());

    // Removing the label again is noticed through the template hash.
    c.spec.secret_template = None;
    assert!(matches!(
        run(&c, Some(&new), at(20), &mut g).secret,
        SecretAction::Update { .. }
    ));
}

#[test]
fn updates_are_made_at_the_version_read() {
    let mut g = Generator(0);
    let (mut c, mut s) = created(&mut g);
    s.metadata.resource_version = Some("42".into());
    c.spec.rotation.counter = 1;
    let p = run(&c, Some(&s), at(10), &mut g);
    let SecretAction::Update { secret, stray } = &p.secret else {
        panic!("{:?}", p.secret);
    };
    assert_eq!(secret.metadata.resource_version.as_deref(), Some("42"));
    assert!(stray.is_empty());
}

#[test]
fn template_keys_under_catalio_ai_never_reach_the_secret() {
    let mut g = Generator(0);
    let mut c = cred();
    let planted = hash("chosen-by-attacker");
    c.spec.secret_template = Some(SecretTemplate {
        labels: [(keys::CREDENTIAL.to_owned(), "other".to_owned())].into(),
        annotations: [
            (keys::SECRET_SHA256.to_owned(), planted.clone()),
            (
                "catalio.ai/previous-secret-sha256".to_owned(),
                planted.clone(),
            ),
            ("note".to_owned(), "kept".to_owned()),
        ]
        .into(),
    });
    let s = applied(&run(&c, None, at(0), &mut g));
    assert_eq!(annotation(&s, keys::SECRET_SHA256), Some(hash("secret-1")));
    assert_eq!(annotation(&s, "catalio.ai/previous-secret-sha256"), None);
    assert_eq!(annotation(&s, "note").as_deref(), Some("kept"));
    assert_eq!(s.metadata.labels.as_ref().unwrap()[keys::CREDENTIAL], "ci");
}

#[test]
fn keys_the_operator_did_not_write_are_removed_unread() {
    let mut g = Generator(0);
    let (c, mut s) = created(&mut g);
    let annotations = s.metadata.annotations.as_mut().unwrap();
    annotations.insert(
        "catalio.ai/previous-secret-sha256".into(),
        hash("chosen-by-attacker"),
    );
    annotations.insert(
        "catalio.ai/previous-secret-expires-at".into(),
        "2999-01-01T00:00:00Z".into(),
    );
    annotations.insert("reloader.stakater.com/match".into(), "true".into());
    s.metadata
        .labels
        .as_mut()
        .unwrap()
        .insert("catalio.ai/extra".into(), "x".into());
    let p = run(&c, Some(&s), at(10), &mut g);
    let SecretAction::Update { secret, stray } = &p.secret else {
        panic!("{:?}", p.secret);
    };
    assert_eq!(
        data(secret, "client_secret"),
        "secret-1",
        "the secret stays"
    );
    assert_eq!(
        stray.annotations,
        [
            "catalio.ai/previous-secret-expires-at",
            "catalio.ai/previous-secret-sha256"
        ]
    );
    assert_eq!(stray.labels, ["catalio.ai/extra"]);
    assert_eq!(p.status.previous_secret_hash, None);
    assert_eq!(reasons(&p), [Reason::SecretRepaired]);
    assert!(Reason::SecretRepaired.is_warning());
    assert!(p.notes[0].message.contains("catalio.ai/extra"));
    assert_eq!(g.0, 1);

    // Many long keys are named in a few words.
    for i in 0..50 {
        s.metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(format!("catalio.ai/{i:0>200}"), "x".into());
    }
    let p = run(&c, Some(&s), at(20), &mut g);
    assert!(p.notes[0].message.len() < 600, "{}", p.notes[0].message);
    assert!(
        p.notes[0].message.ends_with("49 more"),
        "{}",
        p.notes[0].message
    );
}

#[test]
fn an_edited_sealed_state_counts_as_tampering() {
    let mut g = Generator(0);
    let (mut c, s) = created(&mut g);
    c.spec.rotation.counter = 1;
    c.spec.rotation.grace_period = "1h".into();
    let p = run(&c, Some(&s), at(100), &mut g);
    let rotated = applied(&p);
    c.status = Some(p.status);
    let edits: [(&str, serde_json::Value); 4] = [
        ("/previous/expiresAt", "2999-01-01T00:00:00Z".into()),
        ("/previous/hash", hash("chosen-by-attacker").into()),
        ("/counter", 1000.into()),
        ("/rotatedAt", at(5_000).to_string().into()),
    ];
    for (pointer, value) in edits {
        let mut edited = state(&rotated);
        *edited.pointer_mut(pointer).unwrap() = value;
        let mut s = rotated.clone();
        s.metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(keys::STATE.into(), edited.to_string());
        let p = run(&c, Some(&s), at(200), &mut g);
        assert_eq!(reasons(&p), [Reason::SecretReplaced], "{pointer}");
        assert_ne!(data(&applied(&p), "client_secret"), "secret-2", "{pointer}");
        assert_eq!(p.status.previous_secret_hash, None, "{pointer}");
    }
    // The same state under another hash key does not check out either.
    let other = plan(
        &c,
        Some(&rotated),
        &settings(),
        &SecretHasher::new(&[8; 32]),
        at(200),
        &mut || g.next(),
    )
    .unwrap();
    assert_eq!(reasons(&other), [Reason::SecretReplaced]);
}

#[test]
fn shortening_the_grace_period_ends_the_previous_secret_sooner() {
    let mut g = Generator(0);
    let (mut c, s) = created(&mut g);
    c.spec.rotation.counter = 1;
    c.spec.rotation.grace_period = "24h".into();
    let p = run(&c, Some(&s), at(100), &mut g);
    let rotated = applied(&p);
    c.status = Some(p.status);
    c.spec.rotation.grace_period = "1h".into();
    let p = run(&c, Some(&rotated), at(200), &mut g);
    assert_eq!(p.status.previous_secret_expires_at, Some(Time(at(3_700))));
    c.spec.rotation.grace_period = "0s".into();
    let p = run(&c, Some(&rotated), at(200), &mut g);
    assert_eq!(p.status.previous_secret_hash, None);
    assert_eq!(reasons(&p), [Reason::GraceExpired]);
    assert_eq!(data(&applied(&p), "client_secret"), "secret-2");
}

#[test]
fn notes_and_status_never_contain_secret_values() {
    let mut g = Generator(0);
    let (mut c, s) = created(&mut g);
    c.spec.rotation.counter = 5;
    c.spec.rotation.grace_period = "10m".into();
    let p = run(&c, Some(&s), at(10), &mut g);
    for note in &p.notes {
        assert!(!note.message.contains("secret-1") && !note.message.contains("secret-2"));
    }
    let status = serde_json::to_string(&p.status).unwrap();
    assert!(!status.contains("secret-1") && !status.contains("secret-2"));
}
