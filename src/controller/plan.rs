//! Decides, without any I/O, what one reconcile of an `ApiCredential` does:
//! the Secret to write (or keep, or delete), the status to report, the events
//! to publish and when to look again.
//!
//! The Secret is the source of truth. Two annotations carry everything status
//! is rebuilt from: the secret's keyed hash, and a sealed state (the rotation
//! counter it was generated under, when it was generated, and the previous
//! hash while a grace period runs) whose MAC only the operator can compute.
//! So a restart, a re-apply or a wiped status never changes a valid secret,
//! and the controller never reads back state it did not write: a Secret whose
//! data or sealed state does not check out is replaced with a new secret, and
//! keys under `catalio.ai/` that the operator did not write are removed
//! without ever being read.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, Time};
use kube::Resource;
use sha2::{Digest, Sha256};

use crate::crd::{ApiCredential, ApiCredentialStatus, ClientSecretMode, Phase};
use crate::duration;
use crate::secret::{ClientSecret, SecretHash, SecretHasher, client_id_for_uid};

/// Field manager for every write the controller makes.
pub const MANAGER: &str = "catalio-operator";

pub mod keys {
    pub const CLIENT_ID: &str = "client_id";
    pub const CLIENT_SECRET: &str = "client_secret";
    pub const TOKEN_URL: &str = "token_url";
    pub const AUDIENCE: &str = "audience";

    pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
    pub const CREDENTIAL: &str = "catalio.ai/credential";

    /// Prefix of every label and annotation key the operator owns.
    pub const RESERVED: &str = "catalio.ai/";
    /// The current secret's keyed hash.
    pub const SECRET_SHA256: &str = "catalio.ai/secret-sha256";
    /// The sealed rotation state.
    pub const STATE: &str = "catalio.ai/state";
    pub const TEMPLATE_SHA256: &str = "catalio.ai/template-sha256";
}

/// Label selector matching every Secret the operator manages.
pub fn managed_secret_selector() -> String {
    format!("{}={MANAGER}", keys::MANAGED_BY)
}

/// What the operator writes into every Secret besides the credential itself.
#[derive(Clone, Debug)]
pub struct Settings {
    pub token_url: String,
    pub audience: String,
    /// How long a credential may go unused unless its spec says otherwise.
    pub unused_after: Duration,
}

/// The credential material held by a valid Secret.
#[derive(Clone, Debug, PartialEq)]
pub struct Material {
    pub secret: ClientSecret,
    pub hash: SecretHash,
    pub counter: i64,
    pub rotated_at: Timestamp,
    pub previous: Option<Previous>,
}

/// The previous secret's hash while its grace period lasts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Previous {
    pub hash: SecretHash,
    pub expires_at: Timestamp,
}

/// What the Secret looked like.
#[derive(Debug, PartialEq)]
pub enum Observed {
    Missing,
    /// A Secret of that name exists but this credential does not control it.
    Foreign,
    /// The Secret's data no longer matches its hash annotation or client id.
    Tampered,
    Valid(Material),
}

/// Low-cardinality reasons, used for events, conditions and metrics alike.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    Created,
    Rotated,
    GraceExpired,
    Revoked,
    SecretReplaced,
    SecretRepaired,
    SecretConflict,
    InvalidSpec,
    Unused,
    RevokedUnused,
    SecretDisabled,
}

impl Reason {
    pub const ALL: [Reason; 11] = [
        Reason::Created,
        Reason::Rotated,
        Reason::GraceExpired,
        Reason::Revoked,
        Reason::SecretReplaced,
        Reason::SecretRepaired,
        Reason::SecretConflict,
        Reason::InvalidSpec,
        Reason::Unused,
        Reason::RevokedUnused,
        Reason::SecretDisabled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Created => "Created",
            Reason::Rotated => "Rotated",
            Reason::GraceExpired => "GraceExpired",
            Reason::Revoked => "Revoked",
            Reason::SecretReplaced => "SecretReplaced",
            Reason::SecretRepaired => "SecretRepaired",
            Reason::SecretConflict => "SecretConflict",
            Reason::InvalidSpec => "InvalidSpec",
            Reason::Unused => "Unused",
            Reason::RevokedUnused => "RevokedUnused",
            Reason::SecretDisabled => "SecretDisabled",
        }
    }

    pub fn is_warning(self) -> bool {
        matches!(
            self,
            Reason::SecretReplaced
                | Reason::SecretRepaired
                | Reason::SecretConflict
                | Reason::InvalidSpec
                | Reason::RevokedUnused
        )
    }
}

/// An event to publish. Messages name Secrets and hashes, never secrets.
#[derive(Clone, Debug, PartialEq)]
pub struct Note {
    pub reason: Reason,
    /// What the controller did. Events with the same reason and action
    /// are folded into one series, so distinct causes get distinct actions.
    pub action: &'static str,
    pub message: String,
}

#[derive(Debug, PartialEq)]
pub enum SecretAction {
    Keep,
    /// There was no Secret: create one, and never take over one that
    /// someone else created meanwhile.
    Create(Box<Secret>),
    /// Apply `secret` to the Secret as it was read (its resourceVersion is
    /// set, so a Secret replaced meanwhile is not written), then remove the
    /// `stray` keys under `catalio.ai/` that the operator did not write.
    Update {
        secret: Box<Secret>,
        stray: Stray,
    },
    Delete,
}

/// Label and annotation keys under `catalio.ai/` that are not the
/// operator's: never read, and removed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Stray {
    pub labels: Vec<String>,
    pub annotations: Vec<String>,
}

impl Stray {
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.annotations.is_empty()
    }
}

#[derive(Debug, PartialEq)]
pub struct Plan {
    pub secret: SecretAction,
    pub status: ApiCredentialStatus,
    pub notes: Vec<Note>,
    /// When the plan changes by itself (grace expiry, scheduled rotation,
    /// the credential becoming unused).
    pub requeue_after: Option<Duration>,
    /// Unused for longer than allowed with `revokeWhenUnused`: the
    /// controller sets `spec.revoked`, which no one can undo.
    pub revoke_unused: bool,
    /// Roll `rotation.restartTargets` to the secret with this short id:
    /// their pods still hold the one they were last rolled for. The
    /// status already says they were (`restartedFor`); the controller
    /// puts the old value back if a target could not be rolled.
    pub restart: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("object has no uid")]
    MissingUid,
    #[error("operating system randomness unavailable: {0}")]
    Random(#[from] getrandom::Error),
}

impl PlanError {
    pub fn metric_label(&self) -> &'static str {
        match self {
            PlanError::MissingUid => "missing_uid",
            PlanError::Random(_) => "random",
        }
    }
}

const READY: &str = "Ready";

/// The rotation state in the Secret's `catalio.ai/state` annotation, with
/// a seal over it, the client id and the current hash.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SealedState {
    counter: i64,
    rotated_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    previous: Option<SealedPrevious>,
    seal: String,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SealedPrevious {
    hash: String,
    expires_at: Timestamp,
}

/// The seal of a credential's state: a MAC under the hash key over every
/// field the controller reads back.
fn seal(hasher: &SecretHasher, client_id: &str, m: &Material) -> String {
    let counter = m.counter.to_string();
    let rotated_at = m.rotated_at.to_string();
    let (previous, expires) = m
        .previous
        .map(|p| (p.hash.to_string(), p.expires_at.to_string()))
        .unwrap_or_default();
    let hash = m.hash.to_string();
    hasher.seal(&[
        b"catalio.ai/state v1",
        client_id.as_bytes(),
        hash.as_bytes(),
        counter.as_bytes(),
        rotated_at.as_bytes(),
        previous.as_bytes(),
        expires.as_bytes(),
    ])
}

fn sealed_state(hasher: &SecretHasher, client_id: &str, m: &Material) -> String {
    let state = SealedState {
        counter: m.counter,
        rotated_at: m.rotated_at,
        previous: m.previous.map(|p| SealedPrevious {
            hash: p.hash.to_string(),
            expires_at: p.expires_at,
        }),
        seal: seal(hasher, client_id, m),
    };
    serde_json::to_string(&state).unwrap_or_default()
}

/// Reads the material out of an existing Secret: only what checks out
/// against the hash key is believed.
pub fn observe(
    cred: &ApiCredential,
    secret: Option<&Secret>,
    client_id: &str,
    hasher: &SecretHasher,
) -> Observed {
    let Some(secret) = secret else {
        return Observed::Missing;
    };
    let controlled = secret
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true) && Some(&o.uid) == cred.metadata.uid.as_ref());
    if !controlled {
        return Observed::Foreign;
    }
    let annotations = secret.metadata.annotations.clone().unwrap_or_default();
    let data = secret.data.clone().unwrap_or_default();
    let text = |key: &str| data.get(key).and_then(|b| std::str::from_utf8(&b.0).ok());
    let (Some(plaintext), Some(stored_id), Some(recorded), Some(state)) = (
        text(keys::CLIENT_SECRET),
        text(keys::CLIENT_ID),
        annotations
            .get(keys::SECRET_SHA256)
            .and_then(|h| SecretHash::parse(h)),
        annotations
            .get(keys::STATE)
            .and_then(|s| serde_json::from_str::<SealedState>(s).ok()),
    ) else {
        return Observed::Tampered;
    };
    let secret_value = ClientSecret::from_plaintext(plaintext.to_owned());
    let hash = secret_value.hash(hasher, client_id);
    if !hash.ct_eq(&recorded) || stored_id != client_id {
        return Observed::Tampered;
    }
    let previous = match state.previous {
        None => None,
        Some(p) => match SecretHash::parse(&p.hash) {
            Some(hash) => Some(Previous {
                hash,
                expires_at: p.expires_at,
            }),
            None => return Observed::Tampered,
        },
    };
    let material = Material {
        secret: secret_value,
        hash,
        counter: state.counter,
        rotated_at: state.rotated_at,
        previous,
    };
    let sealed = seal(hasher, client_id, &material);
    if !constant_time_eq(sealed.as_bytes(), state.seal.as_bytes()) {
        return Observed::Tampered;
    }
    Observed::Valid(material)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The keys under `catalio.ai/` on `secret` that `desired` does not set.
fn stray(secret: &Secret, desired: &Secret) -> Stray {
    let extra = |have: &Option<BTreeMap<String, String>>,
                 want: &Option<BTreeMap<String, String>>| {
        have.iter()
            .flatten()
            .map(|(k, _)| k)
            .filter(|k| k.starts_with(keys::RESERVED))
            .filter(|k| !want.as_ref().is_some_and(|w| w.contains_key(*k)))
            .cloned()
            .collect()
    };
    Stray {
        labels: extra(&secret.metadata.labels, &desired.metadata.labels),
        annotations: extra(&secret.metadata.annotations, &desired.metadata.annotations),
    }
}

/// Spec values the API server's schema normally rejects; checked again here
/// because objects may predate the CRD's rules.
struct Schedule {
    every: Option<Duration>,
    grace: Duration,
}

fn schedule(cred: &ApiCredential) -> Result<Schedule, String> {
    let rotation = &cred.spec.rotation;
    let every = rotation
        .every
        .as_deref()
        .map(duration::parse)
        .transpose()
        .map_err(|e| format!("rotation.every: {e}"))?;
    if every.is_some_and(|e| e < Duration::from_secs(3600)) {
        return Err("rotation.every must be at least 1h".to_owned());
    }
    let grace = duration::parse(&rotation.grace_period)
        .map_err(|e| format!("rotation.gracePeriod: {e}"))?;
    if grace > Duration::from_secs(168 * 3600) {
        return Err("rotation.gracePeriod must be at most 168h".to_owned());
    }
    Ok(Schedule { every, grace })
}

fn add(at: Timestamp, d: Duration) -> Timestamp {
    SignedDuration::try_from(d)
        .ok()
        .and_then(|d| at.checked_add(d).ok())
        .unwrap_or(Timestamp::MAX)
}

fn until(now: Timestamp, at: Timestamp) -> Duration {
    Duration::try_from(at.duration_since(now)).unwrap_or(Duration::ZERO)
}

/// Decides one reconcile. `hasher` holds the hash key; `generate` is called
/// only when a new secret is needed. Each concern is decided by a function
/// of its own, in this order: revoked, secretless, a Secret that is not
/// ours, an invalid spec; then the secret (kept, created, replaced,
/// rotated), the Secret that holds it, the status, restart targets, and
/// what every live credential ends with (unused, when to look again).
pub fn plan(
    cred: &ApiCredential,
    secret: Option<&Secret>,
    settings: &Settings,
    hasher: &SecretHasher,
    now: Timestamp,
    generate: &mut dyn FnMut() -> Result<ClientSecret, getrandom::Error>,
) -> Result<Plan, PlanError> {
    let facts = Facts::new(cred, now)?;
    let observed = observe(cred, secret, &facts.client_id, hasher);
    if cred.spec.revoked {
        return Ok(revoked(&facts, &observed));
    }
    if cred.spec.client_secret == ClientSecretMode::Disabled {
        return Ok(secretless(&facts, &observed, settings));
    }
    if observed == Observed::Foreign {
        let message = format!(
            "Secret {} exists and is not controlled by this credential",
            cred.secret_name()
        );
        return Ok(failed(
            &facts,
            facts.status(),
            Reason::SecretConflict,
            message,
        ));
    }
    let schedule = match schedule(cred) {
        Ok(schedule) => schedule,
        Err(message) => return Ok(invalid_spec(&facts, &observed, message)),
    };
    let Secured {
        material,
        changed,
        mut notes,
    } = secure(&facts, observed, &schedule, hasher, generate)?;
    let desired = desired_secret(cred, &facts.client_id, &material, settings, hasher);
    let (action, repaired) = secret_action(&facts, secret, desired, changed);
    notes.extend(repaired);
    let next_rotation = schedule.every.map(|e| add(material.rotated_at, e));
    let mut status = active(&facts, &material, next_rotation);
    let (restarted_for, restart) = restarts(cred, &facts.old, &material.hash.short_id());
    status.restarted_for = restarted_for;
    let wake = [material.previous.map(|p| p.expires_at), next_rotation];
    let mut plan = live(&facts, settings, status, notes, action, &wake);
    plan.restart = restart;
    Ok(plan)
}

/// What every decision reads: the credential, the status it had, and the
/// time, to the second (Kubernetes stores times so; planning at that
/// precision keeps the status computed equal to the status read back).
struct Facts<'a> {
    cred: &'a ApiCredential,
    old: ApiCredentialStatus,
    now: Timestamp,
    client_id: String,
}

impl<'a> Facts<'a> {
    fn new(cred: &'a ApiCredential, now: Timestamp) -> Result<Self, PlanError> {
        let uid = cred.metadata.uid.as_deref().ok_or(PlanError::MissingUid)?;
        Ok(Self {
            cred,
            old: cred.status.clone().unwrap_or_default(),
            now: Timestamp::from_second(now.as_second()).unwrap_or(now),
            client_id: client_id_for_uid(uid),
        })
    }

    /// The status every plan starts from; restart targets keep what they
    /// were rolled for while nothing is rolled (a failing spec, say).
    fn status(&self) -> ApiCredentialStatus {
        ApiCredentialStatus {
            client_id: Some(self.client_id.clone()),
            secret_name: Some(self.cred.secret_name().to_owned()),
            observed_generation: self.cred.metadata.generation,
            restarted_for: self.old.restarted_for.clone(),
            ..Default::default()
        }
    }

    /// Condition `Ready`, keeping its transition time while it stays.
    fn ready(&self, ready: bool, reason: &str, message: &str) -> Condition {
        condition(&self.old, self.now, self.cred, ready, reason, message)
    }
}

/// Revoked for good: the Secret goes (when it is ours) and the object
/// stays as a tombstone.
fn revoked(facts: &Facts, observed: &Observed) -> Plan {
    let (old, secret_name) = (&facts.old, facts.cred.secret_name());
    let mut notes = Vec::new();
    if old.phase != Some(Phase::Revoked) {
        notes.push(Note {
            reason: Reason::Revoked,
            action: "RevokeCredential",
            message: format!(
                "Revoked client {}; deleted Secret {secret_name} and stopped its tokens",
                facts.client_id
            ),
        });
    }
    let mut status = facts.status();
    status.phase = Some(Phase::Revoked);
    status.rotation_counter = old.rotation_counter;
    status.revoked_at = old.revoked_at.clone().or(Some(Time(facts.now)));
    status.conditions = vec![facts.ready(
        false,
        "Revoked",
        "The credential is revoked and cannot be restored",
    )];
    Plan {
        secret: delete_if_ours(observed),
        status,
        notes,
        requeue_after: None,
        revoke_unused: false,
        restart: None,
    }
}

/// A Secret we control is deleted; one we do not is not ours to delete.
fn delete_if_ours(observed: &Observed) -> SecretAction {
    match observed {
        Observed::Missing | Observed::Foreign => SecretAction::Keep,
        Observed::Tampered | Observed::Valid(_) => SecretAction::Delete,
    }
}

/// The credential cannot reach its desired state: Failed, with the reason
/// as condition and (once) as event, looked at again in a minute (nothing
/// we watch announces that a foreign Secret went away).
fn failed(facts: &Facts, mut status: ApiCredentialStatus, reason: Reason, message: String) -> Plan {
    status.phase = Some(Phase::Failed);
    status.conditions = vec![facts.ready(false, reason.as_str(), &message)];
    let was_same = facts
        .old
        .conditions
        .iter()
        .any(|c| c.type_ == READY && c.reason == reason.as_str());
    let notes = match was_same {
        true => vec![],
        false => vec![Note {
            reason,
            action: "CheckSpec",
            message,
        }],
    };
    Plan {
        secret: SecretAction::Keep,
        status,
        notes,
        requeue_after: Some(Duration::from_secs(60)),
        revoke_unused: false,
        restart: None,
    }
}

/// A spec the schema would refuse (objects may predate its rules): Failed,
/// while a valid secret keeps working until the spec is fixed.
fn invalid_spec(facts: &Facts, observed: &Observed, message: String) -> Plan {
    let mut status = facts.status();
    if let Observed::Valid(m) = observed {
        fill_material(&mut status, m, None);
    }
    failed(facts, status, Reason::InvalidSpec, message)
}

/// The secret this reconcile leaves in place, whether it differs from the
/// one the Secret held, and the events that say why.
struct Secured {
    material: Material,
    changed: bool,
    notes: Vec<Note>,
}

/// Keeps a valid secret (expiring its previous one, rotating it when due)
/// or makes a new one for a missing or tampered Secret.
fn secure(
    facts: &Facts,
    observed: Observed,
    schedule: &Schedule,
    hasher: &SecretHasher,
    generate: &mut dyn FnMut() -> Result<ClientSecret, getrandom::Error>,
) -> Result<Secured, PlanError> {
    let fresh = |generate: &mut dyn FnMut() -> Result<ClientSecret, getrandom::Error>| {
        generate().map(|secret| Material {
            hash: secret.hash(hasher, &facts.client_id),
            secret,
            counter: facts.cred.spec.rotation.counter,
            rotated_at: facts.now,
            previous: None,
        })
    };
    let replaced = |note: Note, material: Material| Secured {
        material,
        changed: true,
        notes: vec![note],
    };
    Ok(match observed {
        Observed::Missing => replaced(missing_note(facts), fresh(generate)?),
        Observed::Tampered => replaced(tampered_note(facts), fresh(generate)?),
        Observed::Foreign => unreachable!("decided before"),
        Observed::Valid(m) => {
            let (m, expired) = expire_previous(m, schedule, facts.now);
            let mut secured = match rotation_due(facts, &m, schedule) {
                Some(why) => rotate(facts, m, schedule, why, fresh(generate)?),
                None => Secured {
                    material: m,
                    changed: false,
                    notes: vec![],
                },
            };
            if let Some(expired) = expired {
                secured.changed = true;
                secured.notes.splice(0..0, expired);
            }
            secured
        }
    })
}

/// A missing Secret: a new credential's first, or one deleted since (or a
/// credential that had its client secret disabled: Active without one).
fn missing_note(facts: &Facts) -> Note {
    let (old, secret_name) = (&facts.old, facts.cred.secret_name());
    let first = old.secret_hash.is_none()
        && (old.phase != Some(Phase::Active) || old.secret_name.is_none());
    match first {
        true => Note {
            reason: Reason::Created,
            action: "CreateSecret",
            message: format!(
                "Created Secret {secret_name} for client {}",
                facts.client_id
            ),
        },
        false => Note {
            reason: Reason::SecretReplaced,
            action: "RecreateDeletedSecret",
            message: format!("Secret {secret_name} was deleted; generated a new client secret"),
        },
    }
}

fn tampered_note(facts: &Facts) -> Note {
    Note {
        reason: Reason::SecretReplaced,
        action: "ReplaceTamperedSecret",
        message: format!(
            "Secret {} did not match its recorded hash or sealed state; generated a new client secret",
            facts.cred.secret_name()
        ),
    }
}

/// A previous secret never outlives its rotation by more than the grace
/// period the spec allows now, and goes once its time is up: the material
/// then, and `Some` (with the event, if it went) when it changed.
fn expire_previous(
    mut m: Material,
    schedule: &Schedule,
    now: Timestamp,
) -> (Material, Option<Vec<Note>>) {
    let mut changed = None;
    if let Some(p) = &mut m.previous {
        let limit = add(m.rotated_at, schedule.grace);
        if p.expires_at > limit {
            p.expires_at = limit;
            changed = Some(vec![]);
        }
    }
    if m.previous.is_some_and(|p| p.expires_at <= now) {
        let gone = m.previous.take().map(|p| p.hash.to_string());
        changed = Some(vec![Note {
            reason: Reason::GraceExpired,
            action: "DropPreviousSecret",
            message: format!(
                "Grace period ended; previous secret {} no longer works",
                gone.unwrap_or_default()
            ),
        }]);
    }
    (m, changed)
}

/// Why the secret is rotated now, if it is: `rotation.counter` raised
/// past the one it was generated under, or its scheduled time come.
fn rotation_due(facts: &Facts, m: &Material, schedule: &Schedule) -> Option<String> {
    let counter = facts.cred.spec.rotation.counter;
    if counter > m.counter {
        return Some(format!("rotation.counter {counter}"));
    }
    let scheduled = schedule
        .every
        .is_some_and(|e| add(m.rotated_at, e) <= facts.now);
    scheduled.then(|| "schedule".to_owned())
}

/// `next` replaces `m`; `m` keeps working for the grace period, if any.
fn rotate(
    facts: &Facts,
    m: Material,
    schedule: &Schedule,
    why: String,
    mut next: Material,
) -> Secured {
    next.previous = (!schedule.grace.is_zero()).then(|| Previous {
        hash: m.hash,
        expires_at: add(facts.now, schedule.grace),
    });
    let old_secret = match next.previous {
        Some(p) => format!("works until {}", p.expires_at),
        None => "stopped working".to_owned(),
    };
    let note = Note {
        reason: Reason::Rotated,
        action: "RotateSecret",
        message: format!(
            "Rotated client secret ({why}); new {}, previous {} {old_secret}",
            next.hash, m.hash
        ),
    };
    Secured {
        material: next,
        changed: true,
        notes: vec![note],
    }
}

/// What to do with the Secret for `desired`, and the event for keys under
/// `catalio.ai/` it carried that the operator did not write (removed
/// without being read).
fn secret_action(
    facts: &Facts,
    secret: Option<&Secret>,
    mut desired: Secret,
    changed: bool,
) -> (SecretAction, Option<Note>) {
    let Some(existing) = secret else {
        return (SecretAction::Create(Box::new(desired)), None);
    };
    let stray = stray(existing, &desired);
    let note = (!stray.is_empty()).then(|| stray_note(facts, &stray));
    if !changed && stray.is_empty() && covers(existing, &desired) {
        return (SecretAction::Keep, note);
    }
    desired.metadata.resource_version = existing.metadata.resource_version.clone();
    let action = SecretAction::Update {
        secret: Box::new(desired),
        stray,
    };
    (action, note)
}

/// `SecretRepaired`: whoever wrote the keys chose their names, so a few
/// are named, shortened, keeping the event well within its size.
fn stray_note(facts: &Facts, stray: &Stray) -> Note {
    const NAMED: usize = 4;
    let keys: Vec<&String> = stray.labels.iter().chain(&stray.annotations).collect();
    let mut named: Vec<String> = keys
        .iter()
        .take(NAMED)
        .map(|k| k.chars().take(80).collect())
        .collect();
    if keys.len() > NAMED {
        named.push(format!("{} more", keys.len() - NAMED));
    }
    Note {
        reason: Reason::SecretRepaired,
        action: "RemoveForeignKeys",
        message: format!(
            "Secret {} carried keys under {} the operator did not write; removed {}",
            facts.cred.secret_name(),
            keys::RESERVED,
            named.join(", ")
        ),
    }
}

/// The status of a credential whose Secret holds `m`.
fn active(facts: &Facts, m: &Material, next_rotation: Option<Timestamp>) -> ApiCredentialStatus {
    let mut status = facts.status();
    fill_material(&mut status, m, next_rotation);
    status.phase = Some(Phase::Active);
    status.conditions = vec![facts.ready(
        true,
        "SecretReady",
        &format!(
            "Secret {} holds the current client secret",
            facts.cred.secret_name()
        ),
    )];
    status
}

/// With restart targets: the secret they count as rolled for once this
/// plan is carried out, and the one to roll them to now, if any. A
/// credential's first secret, and targets added to an existing
/// credential, are taken as what the targets already use: only a secret
/// that replaces the one they were rolled for (rotation, or a Secret that
/// was deleted or tampered with) is rolled out.
fn restarts(
    cred: &ApiCredential,
    old: &ApiCredentialStatus,
    current: &str,
) -> (Option<String>, Option<String>) {
    if cred.spec.rotation.restart_targets.is_empty() {
        return (None, None);
    }
    let roll = old
        .restarted_for
        .as_deref()
        .is_some_and(|done| done != current);
    (Some(current.to_owned()), roll.then(|| current.to_owned()))
}

/// The type of [`restart_condition`].
pub const RESTARTED: &str = "TargetsRestarted";

/// Condition `TargetsRestarted`: whether every restart target could be
/// rolled to the current secret.
pub fn restart_condition(
    old: &ApiCredentialStatus,
    now: Timestamp,
    cred: &ApiCredential,
    ok: bool,
    message: String,
) -> Condition {
    let (status, reason) = if ok {
        ("True", "Restarted")
    } else {
        ("False", "RestartFailed")
    };
    let kind = Kind {
        type_: RESTARTED,
        status,
        reason,
    };
    kind.condition(old, now, cred, message, |c| c.status == status)
}

/// The plan of a credential without a client secret: only its
/// ServiceAccounts authenticate, and a Secret it had is deleted. With no
/// secret to replace, a raised `rotation.counter` ends the tokens the
/// ServiceAccounts got before it (their `rot` is older).
fn secretless(facts: &Facts, observed: &Observed, settings: &Settings) -> Plan {
    let (cred, old) = (facts.cred, &facts.old);
    let mut notes = Vec::new();
    let secret = delete_if_ours(observed);
    if secret == SecretAction::Delete {
        notes.push(Note {
            reason: Reason::SecretDisabled,
            action: "DeleteSecret",
            message: format!(
                "clientSecret is Disabled: deleted Secret {}; its client secret and tokens stopped working",
                cred.secret_name()
            ),
        });
    }
    let counter = cred.spec.rotation.counter;
    if old.rotation_counter.is_some_and(|was| was < counter) {
        notes.push(Note {
            reason: Reason::Rotated,
            action: "RotateServiceAccountTokens",
            message: format!(
                "Rotated (rotation.counter {counter}): access tokens the ServiceAccounts got before stopped working"
            ),
        });
    }
    let mut status = facts.status();
    status.secret_name = None;
    status.rotation_counter = Some(counter.max(old.rotation_counter.unwrap_or(0)));
    status.phase = Some(Phase::Active);
    status.conditions = vec![facts.ready(true, "Secretless", &secretless_means(cred))];
    live(facts, settings, status, notes, secret, &[])
}

/// How a credential without a client secret authenticates, in words.
fn secretless_means(cred: &ApiCredential) -> String {
    let spec = &cred.spec;
    let mut means = Vec::new();
    if !spec.service_accounts.is_empty() {
        means.push(format!(
            "ServiceAccounts {} with their tokens",
            spec.service_accounts.join(", ")
        ));
    }
    if let Some(keys) = &spec.client_keys {
        let kids: Vec<&str> = keys.keys.iter().map(|k| k.kid.as_str()).collect();
        means.push(format!(
            "assertions signed by client keys {}",
            kids.join(", ")
        ));
    }
    if !spec.federation.is_empty() {
        let ids: Vec<String> = spec
            .federation
            .iter()
            .map(|f| format!("{} {}", f.issuer, f.subject))
            .collect();
        means.push(format!("tokens of {}", ids.join(", ")));
    }
    format!(
        "No client secret; it authenticates with {}",
        means.join("; ")
    )
}

/// What every live credential's plan ends with: the Unused condition and
/// its events, revocation when unused and allowed, and when to look again
/// (the earliest of `wake` and the moment it would become unused).
fn live(
    facts: &Facts,
    settings: &Settings,
    mut status: ApiCredentialStatus,
    mut notes: Vec<Note>,
    secret: SecretAction,
    wake: &[Option<Timestamp>],
) -> Plan {
    let (cred, old, now) = (facts.cred, &facts.old, facts.now);
    let usage = usage(cred, old, settings, now);
    status.conditions.push(usage.condition(old, now, cred));
    let was_unused = old
        .conditions
        .iter()
        .any(|c| c.type_ == UNUSED && c.status == "True");
    let revoke_unused = usage.unused && cred.spec.revoke_when_unused;
    if usage.unused && !was_unused {
        notes.push(Note {
            reason: Reason::Unused,
            action: "MarkUnused",
            message: usage.message(),
        });
    }
    if revoke_unused {
        notes.push(Note {
            reason: Reason::RevokedUnused,
            action: "RevokeUnused",
            message: format!("{}; revokeWhenUnused is set: revoking", usage.message()),
        });
    }
    let requeue_after = wake
        .iter()
        .copied()
        .chain([(!usage.unused).then_some(usage.unused_at)])
        .flatten()
        .map(|at| until(now, at))
        .min();
    Plan {
        secret,
        status,
        notes,
        requeue_after,
        revoke_unused,
        restart: None,
    }
}

const UNUSED: &str = "Unused";

/// When the credential was last used and whether that is too long ago.
struct Usage {
    last_use: Timestamp,
    /// Never used: `last_use` is its creation.
    never: bool,
    allowed: Duration,
    unused_at: Timestamp,
    unused: bool,
}

fn usage(
    cred: &ApiCredential,
    old: &ApiCredentialStatus,
    settings: &Settings,
    now: Timestamp,
) -> Usage {
    let allowed = cred
        .spec
        .unused_after
        .as_deref()
        .and_then(|d| duration::parse(d).ok())
        .unwrap_or(settings.unused_after);
    let used = old.last_used_at.as_ref().map(|t| t.0);
    let created = cred.metadata.creation_timestamp.as_ref().map(|t| t.0);
    let last_use = used.or(created).unwrap_or(now);
    let unused_at = add(last_use, allowed);
    Usage {
        last_use,
        never: used.is_none(),
        allowed,
        unused_at,
        unused: now >= unused_at,
    }
}

impl Usage {
    fn message(&self) -> String {
        let what = if self.never {
            "Never used since its creation at"
        } else {
            "Not used since"
        };
        format!(
            "{what} {}; credentials unused for {} are marked Unused",
            self.last_use,
            duration::format(self.allowed)
        )
    }

    /// The `Unused` condition, keeping its transition time while it stays.
    fn condition(
        &self,
        old: &ApiCredentialStatus,
        now: Timestamp,
        cred: &ApiCredential,
    ) -> Condition {
        let (status, reason, message) = if self.unused {
            ("True", "NotUsedRecently", self.message())
        } else {
            (
                "False",
                "UsedRecently",
                format!("Used within the last {}", duration::format(self.allowed)),
            )
        };
        let kind = Kind {
            type_: UNUSED,
            status,
            reason,
        };
        kind.condition(old, now, cred, message, |c| c.status == status)
    }
}

fn fill_material(status: &mut ApiCredentialStatus, m: &Material, next: Option<Timestamp>) {
    status.secret_hash = Some(m.hash.to_string());
    status.previous_secret_hash = m.previous.map(|p| p.hash.to_string());
    status.previous_secret_expires_at = m.previous.map(|p| Time(p.expires_at));
    status.rotation_counter = Some(m.counter);
    status.last_rotated_at = Some(Time(m.rotated_at));
    status.next_rotation_at = next.map(Time);
}

/// The Ready condition, keeping its transition time while it stays the same.
fn condition(
    old: &ApiCredentialStatus,
    now: Timestamp,
    cred: &ApiCredential,
    ready: bool,
    reason: &str,
    message: &str,
) -> Condition {
    let status = if ready { "True" } else { "False" };
    let kind = Kind {
        type_: READY,
        status,
        reason,
    };
    kind.condition(old, now, cred, message.to_owned(), |c| {
        c.status == status && c.reason == reason
    })
}

/// A condition's type, status and reason.
struct Kind<'a> {
    type_: &'a str,
    status: &'a str,
    reason: &'a str,
}

impl Kind<'_> {
    /// The condition, keeping the old one's transition time while `same`
    /// holds for it.
    fn condition(
        &self,
        old: &ApiCredentialStatus,
        now: Timestamp,
        cred: &ApiCredential,
        message: String,
        same: impl Fn(&Condition) -> bool,
    ) -> Condition {
        let since = old
            .conditions
            .iter()
            .find(|c| c.type_ == self.type_ && same(c))
            .map(|c| c.last_transition_time.clone())
            .unwrap_or(Time(now));
        Condition {
            type_: self.type_.to_owned(),
            status: self.status.to_owned(),
            reason: self.reason.to_owned(),
            message,
            observed_generation: cred.metadata.generation,
            last_transition_time: since,
        }
    }
}

/// The Secret as the controller wants it. Template keys under
/// `catalio.ai/` are dropped (the API server refuses them; objects may
/// predate that rule).
pub fn desired_secret(
    cred: &ApiCredential,
    client_id: &str,
    m: &Material,
    settings: &Settings,
    hasher: &SecretHasher,
) -> Secret {
    let template = cred.spec.secret_template.clone().unwrap_or_default();
    let unreserved = |map: &BTreeMap<String, String>| -> BTreeMap<String, String> {
        map.iter()
            .filter(|(k, _)| !k.starts_with(keys::RESERVED))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    let mut labels = unreserved(&template.labels);
    labels.insert(keys::MANAGED_BY.to_owned(), MANAGER.to_owned());
    labels.insert(
        keys::CREDENTIAL.to_owned(),
        cred.metadata.name.clone().unwrap_or_default(),
    );
    let mut annotations = unreserved(&template.annotations);
    annotations.insert(keys::SECRET_SHA256.to_owned(), m.hash.to_string());
    annotations.insert(keys::STATE.to_owned(), sealed_state(hasher, client_id, m));
    annotations.insert(
        keys::TEMPLATE_SHA256.to_owned(),
        template_hash(&template.labels, &template.annotations),
    );
    let bytes = |s: &str| ByteString(s.as_bytes().to_vec());
    Secret {
        metadata: ObjectMeta {
            name: Some(cred.secret_name().to_owned()),
            namespace: cred.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: cred.controller_owner_ref(&()).map(|o| vec![o]),
            ..Default::default()
        },
        type_: Some("Opaque".to_owned()),
        data: Some(BTreeMap::from([
            (keys::CLIENT_ID.to_owned(), bytes(client_id)),
            (keys::CLIENT_SECRET.to_owned(), bytes(m.secret.expose())),
            (keys::TOKEN_URL.to_owned(), bytes(&settings.token_url)),
            (keys::AUDIENCE.to_owned(), bytes(&settings.audience)),
        ])),
        ..Default::default()
    }
}

/// Records the template, so removing a label from it is noticed even though
/// the Secret still carries it.
fn template_hash(
    labels: &BTreeMap<String, String>,
    annotations: &BTreeMap<String, String>,
) -> String {
    let mut h = Sha256::new();
    for (section, map) in [("labels", labels), ("annotations", annotations)] {
        for (k, v) in map {
            h.update(format!("{section}\0{k}\0{v}\0").as_bytes());
        }
    }
    let digest = h.finalize();
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether an existing Secret already has everything the desired one sets.
/// Fields other managers added are left alone.
fn covers(existing: &Secret, desired: &Secret) -> bool {
    let subset = |want: &Option<BTreeMap<String, String>>,
                  have: &Option<BTreeMap<String, String>>| {
        want.iter()
            .flatten()
            .all(|(k, v)| have.as_ref().and_then(|h| h.get(k)) == Some(v))
    };
    existing.type_ == desired.type_
        && existing.data == desired.data
        && subset(&desired.metadata.labels, &existing.metadata.labels)
        && subset(
            &desired.metadata.annotations,
            &existing.metadata.annotations,
        )
        && desired.metadata.owner_references.iter().flatten().all(|o| {
            existing
                .metadata
                .owner_references
                .iter()
                .flatten()
                .any(|e| e == o)
        })
}

/// Whether a status write would change anything the controller owns.
/// `lastUsedAt` and the revoked tokens belong to the servers and are
/// ignored.
pub fn status_changed(
    current: Option<&ApiCredentialStatus>,
    desired: &ApiCredentialStatus,
) -> bool {
    let mut current = current.cloned().unwrap_or_default();
    current.last_used_at = None;
    current.revoked_tokens.clear();
    current.revoked_tokens_before = None;
    current != *desired
}

#[cfg(test)]
mod tests;
