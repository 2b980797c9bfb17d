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
/// only when a new secret is needed.
pub fn plan(
    cred: &ApiCredential,
    secret: Option<&Secret>,
    settings: &Settings,
    hasher: &SecretHasher,
    now: Timestamp,
    generate: &mut dyn FnMut() -> Result<ClientSecret, getrandom::Error>,
) -> Result<Plan, PlanError> {
    // Kubernetes stores times to the second; planning at that precision keeps
    // the status we compute equal to the status we read back.
    let now = Timestamp::from_second(now.as_second()).unwrap_or(now);
    let uid = cred.metadata.uid.as_deref().ok_or(PlanError::MissingUid)?;
    let client_id = client_id_for_uid(uid);
    let old = cred.status.clone().unwrap_or_default();
    let secret_name = cred.secret_name().to_owned();
    let mut status = ApiCredentialStatus {
        client_id: Some(client_id.clone()),
        secret_name: Some(secret_name.clone()),
        observed_generation: cred.metadata.generation,
        // Kept while nothing is rolled (a failing spec, say).
        restarted_for: old.restarted_for.clone(),
        ..Default::default()
    };
    let observed = observe(cred, secret, &client_id, hasher);

    if cred.spec.revoked {
        let mut notes = Vec::new();
        if old.phase != Some(Phase::Revoked) {
            notes.push(Note {
                reason: Reason::Revoked,
                action: "RevokeCredential",
                message: format!(
                    "Revoked client {client_id}; deleted Secret {secret_name} and stopped its tokens"
                ),
            });
        }
        status.phase = Some(Phase::Revoked);
        status.rotation_counter = old.rotation_counter;
        status.revoked_at = old.revoked_at.clone().or(Some(Time(now)));
        status.conditions = vec![condition(
            &old,
            now,
            cred,
            false,
            "Revoked",
            "The credential is revoked and cannot be restored",
        )];
        let secret = match observed {
            // A Secret we do not control is not ours to delete.
            Observed::Missing | Observed::Foreign => SecretAction::Keep,
            Observed::Tampered | Observed::Valid(_) => SecretAction::Delete,
        };
        return Ok(Plan {
            secret,
            status,
            notes,
            requeue_after: None,
            revoke_unused: false,
            restart: None,
        });
    }

    if cred.spec.client_secret == ClientSecretMode::Disabled {
        return Ok(secretless(cred, &old, observed, settings, now, status));
    }

    let failed = |status: ApiCredentialStatus, reason: Reason, message: String| {
        let mut status = status;
        status.phase = Some(Phase::Failed);
        status.conditions = vec![condition(&old, now, cred, false, reason.as_str(), &message)];
        let was_same = old
            .conditions
            .iter()
            .any(|c| c.type_ == READY && c.reason == reason.as_str());
        Plan {
            secret: SecretAction::Keep,
            status,
            notes: if was_same {
                vec![]
            } else {
                vec![Note {
                    reason,
                    action: "CheckSpec",
                    message,
                }]
            },
            // Nothing we watch announces that a foreign Secret went away.
            requeue_after: Some(Duration::from_secs(60)),
            revoke_unused: false,
            restart: None,
        }
    };

    if observed == Observed::Foreign {
        return Ok(failed(
            status,
            Reason::SecretConflict,
            format!("Secret {secret_name} exists and is not controlled by this credential"),
        ));
    }
    let schedule = match schedule(cred) {
        Ok(s) => s,
        Err(message) => {
            // Keep a valid secret working while the spec is being fixed.
            if let Observed::Valid(m) = &observed {
                fill_material(&mut status, m, None);
            }
            return Ok(failed(status, Reason::InvalidSpec, message));
        }
    };

    let mut notes = Vec::new();
    let fresh = |generate: &mut dyn FnMut() -> Result<ClientSecret, getrandom::Error>| {
        generate().map(|secret| Material {
            hash: secret.hash(hasher, &client_id),
            secret,
            counter: cred.spec.rotation.counter,
            rotated_at: now,
            previous: None,
        })
    };
    let (material, changed) = match observed {
        Observed::Missing => {
            // No secret before: a new credential, or one that had its
            // client secret disabled (Active without a Secret).
            let first = old.secret_hash.is_none()
                && (old.phase != Some(Phase::Active) || old.secret_name.is_none());
            notes.push(if first {
                Note {
                    reason: Reason::Created,
                    action: "CreateSecret",
                    message: format!("Created Secret {secret_name} for client {client_id}"),
                }
            } else {
                Note {
                    reason: Reason::SecretReplaced,
                    action: "RecreateDeletedSecret",
                    message: format!(
                        "Secret {secret_name} was deleted; generated a new client secret"
                    ),
                }
            });
            (fresh(generate)?, true)
        }
        Observed::Tampered => {
            notes.push(Note {
                reason: Reason::SecretReplaced,
                action: "ReplaceTamperedSecret",
                message: format!(
                    "Secret {secret_name} did not match its recorded hash or sealed state; generated a new client secret"
                ),
            });
            (fresh(generate)?, true)
        }
        Observed::Foreign => unreachable!("handled above"),
        Observed::Valid(mut m) => {
            let mut changed = false;
            // A previous secret never outlives its rotation by more than
            // the grace period the spec allows now.
            if let Some(p) = &mut m.previous {
                let limit = add(m.rotated_at, schedule.grace);
                if p.expires_at > limit {
                    p.expires_at = limit;
                    changed = true;
                }
            }
            if m.previous.is_some_and(|p| p.expires_at <= now) {
                let p = m.previous.take().map(|p| p.hash.to_string());
                notes.push(Note {
                    reason: Reason::GraceExpired,
                    action: "DropPreviousSecret",
                    message: format!(
                        "Grace period ended; previous secret {} no longer works",
                        p.unwrap_or_default()
                    ),
                });
                changed = true;
            }
            let manual = cred.spec.rotation.counter > m.counter;
            let scheduled = schedule.every.is_some_and(|e| add(m.rotated_at, e) <= now);
            if manual || scheduled {
                let previous = (!schedule.grace.is_zero()).then(|| Previous {
                    hash: m.hash,
                    expires_at: add(now, schedule.grace),
                });
                let mut next = fresh(generate)?;
                next.previous = previous;
                let why = if manual {
                    format!("rotation.counter {}", cred.spec.rotation.counter)
                } else {
                    "schedule".to_owned()
                };
                let old_secret = match previous {
                    Some(p) => format!("works until {}", p.expires_at),
                    None => "stopped working".to_owned(),
                };
                notes.push(Note {
                    reason: Reason::Rotated,
                    action: "RotateSecret",
                    message: format!(
                        "Rotated client secret ({why}); new {}, previous {} {old_secret}",
                        next.hash, m.hash
                    ),
                });
                m = next;
                changed = true;
            }
            (m, changed)
        }
    };

    let mut desired = desired_secret(cred, &client_id, &material, settings, hasher);
    let action = match secret {
        None => SecretAction::Create(Box::new(desired)),
        Some(existing) => {
            let stray = stray(existing, &desired);
            if !stray.is_empty() {
                // Whoever wrote the keys chose their names: name a few,
                // shortened, so the event stays well within its size.
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
                notes.push(Note {
                    reason: Reason::SecretRepaired,
                    action: "RemoveForeignKeys",
                    message: format!(
                        "Secret {secret_name} carried keys under {} the operator did not write; removed {}",
                        keys::RESERVED,
                        named.join(", ")
                    ),
                });
            }
            if !changed && stray.is_empty() && covers(existing, &desired) {
                SecretAction::Keep
            } else {
                desired.metadata.resource_version = existing.metadata.resource_version.clone();
                SecretAction::Update {
                    secret: Box::new(desired),
                    stray,
                }
            }
        }
    };

    let next_rotation = schedule.every.map(|e| add(material.rotated_at, e));
    fill_material(&mut status, &material, next_rotation);
    status.phase = Some(Phase::Active);
    status.conditions = vec![condition(
        &old,
        now,
        cred,
        true,
        "SecretReady",
        &format!("Secret {secret_name} holds the current client secret"),
    )];
    let (restarted_for, restart) = restarts(cred, &old, &material.hash.short_id());
    status.restarted_for = restarted_for;
    let wake = [material.previous.map(|p| p.expires_at), next_rotation];
    let mut plan = live(cred, &old, settings, now, status, notes, action, &wake);
    plan.restart = restart;
    Ok(plan)
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
/// ServiceAccounts authenticate, and a Secret it had is deleted.
fn secretless(
    cred: &ApiCredential,
    old: &ApiCredentialStatus,
    observed: Observed,
    settings: &Settings,
    now: Timestamp,
    mut status: ApiCredentialStatus,
) -> Plan {
    let mut notes = Vec::new();
    let secret_name = cred.secret_name();
    let secret = match observed {
        Observed::Missing | Observed::Foreign => SecretAction::Keep,
        Observed::Tampered | Observed::Valid(_) => {
            notes.push(Note {
                reason: Reason::SecretDisabled,
                action: "DeleteSecret",
                message: format!(
                    "clientSecret is Disabled: deleted Secret {secret_name}; its client secret and tokens stopped working"
                ),
            });
            SecretAction::Delete
        }
    };
    // No secret to replace: a raised rotation.counter ends the tokens the
    // ServiceAccounts got before it (their `rot` is older).
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
    status.secret_name = None;
    status.rotation_counter = Some(counter.max(old.rotation_counter.unwrap_or(0)));
    status.phase = Some(Phase::Active);
    status.conditions = vec![condition(
        old,
        now,
        cred,
        true,
        "ServiceAccountsOnly",
        &format!(
            "No client secret; ServiceAccounts {} authenticate with their tokens",
            cred.spec.service_accounts.join(", ")
        ),
    )];
    live(cred, old, settings, now, status, notes, secret, &[])
}

/// What every live credential's plan ends with: the Unused condition and
/// its events, revocation when unused and allowed, and when to look again
/// (the earliest of `wake` and the moment it would become unused).
#[allow(clippy::too_many_arguments)]
fn live(
    cred: &ApiCredential,
    old: &ApiCredentialStatus,
    settings: &Settings,
    now: Timestamp,
    mut status: ApiCredentialStatus,
    mut notes: Vec<Note>,
    secret: SecretAction,
    wake: &[Option<Timestamp>],
) -> Plan {
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
/// `lastUsedAt` belongs to the token endpoint and is ignored.
pub fn status_changed(
    current: Option<&ApiCredentialStatus>,
    desired: &ApiCredentialStatus,
) -> bool {
    let mut current = current.cloned().unwrap_or_default();
    current.last_used_at = None;
    current != *desired
}

#[cfg(test)]
mod tests;
