//! The token endpoint's view of every credential, keyed by client id. Fed by
//! a watch of `ApiCredential` objects; does no I/O itself, so a lookup on the
//! token path costs one read lock and one hash-map probe.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use jiff::Timestamp;

use crate::crd::credential::{ClientKeys, FederatedIdentity, TokenBinding};
use crate::crd::{ApiCredential, Phase};
use crate::duration;
use crate::secret::{SecretHash, client_id_for_uid};
use crate::token::jwks::PublicKeys;

/// What the token endpoint and the token verifier need to know about one
/// credential.
#[derive(Clone, Debug, PartialEq)]
pub struct CredentialEntry {
    pub client_id: String,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub scopes: Vec<String>,
    /// Revoked in the spec: refused at once, before the controller acts.
    pub revoked: bool,
    pub current: Option<SecretHash>,
    pub previous: Option<(SecretHash, Timestamp)>,
    pub rotation_counter: i64,
    pub token_lifetime: Option<Duration>,
    /// Phase reported in status (`Pending` before the first reconcile).
    pub phase: Phase,
    /// `status.lastUsedAt`, as any replica last wrote it.
    pub last_used_at: Option<Timestamp>,
    /// Condition `Unused` is True.
    pub unused: bool,
    /// ServiceAccounts (in `namespace`) that authenticate as this
    /// credential with their tokens.
    pub service_accounts: Vec<String>,
    /// May introspect its organization's tokens.
    pub introspection: bool,
    /// Ids (`jti`) of single tokens revoked, from `status.revokedTokens`.
    pub revoked_tokens: Vec<String>,
    /// Tokens issued at or before this second are revoked.
    pub revoked_before: Option<i64>,
    /// The client's public keys (`private_key_jwt`), if it has any.
    pub client_keys: Option<Arc<PublicKeys>>,
    /// Outside identities that may act as this credential.
    pub federation: Vec<FederatedIdentity>,
    /// Every token must be bound to a key with DPoP.
    pub dpop: bool,
}

impl CredentialEntry {
    pub fn from_object(cred: &ApiCredential) -> Option<Self> {
        let uid = cred.metadata.uid.clone()?;
        let status = cred.status.clone().unwrap_or_default();
        let parse = |h: Option<&String>| h.and_then(|h| SecretHash::parse(h));
        Some(Self {
            client_id: client_id_for_uid(&uid),
            namespace: cred.metadata.namespace.clone().unwrap_or_default(),
            name: cred.metadata.name.clone().unwrap_or_default(),
            uid,
            scopes: cred.spec.scopes.clone(),
            revoked: cred.spec.revoked,
            current: parse(status.secret_hash.as_ref()),
            previous: parse(status.previous_secret_hash.as_ref())
                .zip(status.previous_secret_expires_at.map(|t| t.0)),
            rotation_counter: status.rotation_counter.unwrap_or(0),
            token_lifetime: cred
                .spec
                .token_lifetime
                .as_deref()
                .and_then(|d| duration::parse(d).ok()),
            phase: status.phase.unwrap_or(Phase::Pending),
            last_used_at: status.last_used_at.map(|t| t.0),
            unused: status
                .conditions
                .iter()
                .any(|c| c.type_ == "Unused" && c.status == "True"),
            service_accounts: cred.spec.service_accounts.clone(),
            introspection: cred.spec.introspection,
            revoked_tokens: status.revoked_tokens.into_iter().map(|t| t.jti).collect(),
            revoked_before: status.revoked_tokens_before.map(|t| t.0.as_second()),
            client_keys: cred.spec.client_keys.as_ref().and_then(client_keys),
            federation: cred.spec.federation.clone(),
            dpop: cred.spec.token_binding == TokenBinding::DPoP,
        })
    }

    /// Whether the token `jti`, issued at `iat`, was revoked on its own.
    pub fn token_revoked(&self, jti: &str, iat: i64) -> bool {
        self.revoked_before.is_some_and(|before| iat <= before)
            || self.revoked_tokens.iter().any(|t| t == jti)
    }

    /// An entry for tests: client `client_id` in namespace `org`, Active,
    /// `*:read`, no secret, nothing else set.
    #[cfg(test)]
    pub fn example(client_id: &str) -> Self {
        Self {
            client_id: client_id.into(),
            namespace: "org".into(),
            name: "ci".into(),
            uid: "u".into(),
            scopes: vec!["*:read".into()],
            revoked: false,
            current: None,
            previous: None,
            rotation_counter: 0,
            token_lifetime: None,
            phase: Phase::Active,
            last_used_at: None,
            unused: false,
            service_accounts: vec![],
            introspection: false,
            revoked_tokens: vec![],
            revoked_before: None,
            client_keys: None,
            federation: vec![],
            dpop: false,
        }
    }

    /// Which of the credential's live secrets `hash` is, if any: `Current`
    /// or `Previous` (inside its grace period). Both comparisons always run,
    /// so the answer takes the same time whichever matched.
    pub fn match_secret(&self, hash: &SecretHash, now: Timestamp) -> Option<SecretSlot> {
        if self.revoked {
            return None;
        }
        let current = self.current.is_some_and(|c| c.ct_eq(hash));
        let previous = self
            .previous
            .is_some_and(|(p, expires)| p.ct_eq(hash) && now < expires);
        match (current, previous) {
            (true, _) => Some(SecretSlot::Current),
            (false, true) => Some(SecretSlot::Previous),
            _ => None,
        }
    }

    /// Whether a token bound to `sid` and issued under rotation counter
    /// `rot` still works. For a secret's token (`sid` is the secret's short
    /// id): while that secret works. For a ServiceAccount's token
    /// ([`service_account_sid`]): while the credential names the account
    /// and no rotation came after the token, except during the grace period
    /// of the rotation, as for the secret it replaced.
    pub fn token_live(&self, sid: &str, rot: i64, now: Timestamp) -> bool {
        if self.revoked {
            return false;
        }
        let graced = self.previous.is_some_and(|(_, expires)| now < expires);
        let current = rot >= self.rotation_counter || graced;
        if let Some(account) = sid.strip_prefix(SERVICE_ACCOUNT_SID) {
            return current && self.service_accounts.iter().any(|a| a == account);
        }
        if let Some(kid) = sid.strip_prefix(CLIENT_KEY_SID) {
            return current
                && self
                    .client_keys
                    .as_ref()
                    .is_some_and(|k| k.get(kid).is_some());
        }
        if sid.starts_with(FEDERATION_SID) {
            let named = |f: &FederatedIdentity| federation_sid(&f.issuer, &f.subject) == sid;
            return current && self.federation.iter().any(named);
        }
        self.current.is_some_and(|c| c.short_id() == sid)
            || self
                .previous
                .is_some_and(|(p, expires)| p.short_id() == sid && now < expires)
    }
}

/// Prefix of the `sid` of tokens issued to a ServiceAccount's assertion:
/// `sa:<name>`. Secret ids are hex, so the two never meet.
const SERVICE_ACCOUNT_SID: &str = "sa:";

/// The `sid` of a token issued to ServiceAccount `name`'s assertion.
pub fn service_account_sid(name: &str) -> String {
    format!("{SERVICE_ACCOUNT_SID}{name}")
}

/// Prefix of the `sid` of tokens issued to a `private_key_jwt` assertion:
/// `key:<kid>`, live while the credential lists the key.
const CLIENT_KEY_SID: &str = "key:";

/// The `sid` of a token issued to an assertion signed by client key `kid`.
pub fn client_key_sid(kid: &str) -> String {
    format!("{CLIENT_KEY_SID}{kid}")
}

/// Prefix of the `sid` of tokens issued to an outside identity.
const FEDERATION_SID: &str = "fed:";

/// The `sid` of a token issued to an outside identity: a short hash of
/// its issuer and subject, live while the credential names them.
pub fn federation_sid(issuer: &str, subject: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("{issuer}\0{subject}").as_bytes());
    let short: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("{FEDERATION_SID}{short}")
}

/// The client keys of a credential's spec, as verification keys.
fn client_keys(keys: &ClientKeys) -> Option<Arc<PublicKeys>> {
    let document = serde_json::to_vec(keys).ok()?;
    PublicKeys::parse(&document).ok().map(Arc::new)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretSlot {
    Current,
    Previous,
}

#[derive(Default)]
struct State {
    by_client_id: HashMap<String, Arc<CredentialEntry>>,
    /// (namespace, ServiceAccount) to the client ids of the credentials
    /// that name it: a client assertion names an account before anything
    /// about it is verified, so finding its credentials must not cost a
    /// scan of every credential.
    by_account: HashMap<(String, String), BTreeSet<String>>,
    /// (trusted issuer's name, subject) to the client ids of the
    /// credentials whose federation names it, likewise.
    by_identity: HashMap<(String, String), BTreeSet<String>>,
    /// Scopes (a namespace, or `None` for all) whose first list is in.
    synced: HashSet<Option<String>>,
}

impl State {
    fn insert(&mut self, entry: Arc<CredentialEntry>) {
        self.remove(&entry.client_id);
        for account in &entry.service_accounts {
            self.by_account
                .entry((entry.namespace.clone(), account.clone()))
                .or_default()
                .insert(entry.client_id.clone());
        }
        for identity in &entry.federation {
            self.by_identity
                .entry((identity.issuer.clone(), identity.subject.clone()))
                .or_default()
                .insert(entry.client_id.clone());
        }
        self.by_client_id.insert(entry.client_id.clone(), entry);
    }

    fn remove(&mut self, client_id: &str) {
        let Some(old) = self.by_client_id.remove(client_id) else {
            return;
        };
        for account in &old.service_accounts {
            unlink(
                &mut self.by_account,
                (old.namespace.clone(), account.clone()),
                client_id,
            );
        }
        for identity in &old.federation {
            let key = (identity.issuer.clone(), identity.subject.clone());
            unlink(&mut self.by_identity, key, client_id);
        }
    }
}

/// Takes `client_id` out of `key`'s set, and the set once empty.
fn unlink(
    map: &mut HashMap<(String, String), BTreeSet<String>>,
    key: (String, String),
    client_id: &str,
) {
    if let Some(ids) = map.get_mut(&key) {
        ids.remove(client_id);
        if ids.is_empty() {
            map.remove(&key);
        }
    }
}

/// Thread-safe map from client id to credential, fed by one watch per
/// scope: all namespaces, or each watched namespace.
pub struct CredentialIndex {
    state: RwLock<State>,
    scopes: usize,
    /// Set once every scope has listed, and never cleared: every token
    /// request asks, and should not take the lock to know.
    all_listed: AtomicBool,
}

impl CredentialIndex {
    /// An index fed by one watch.
    pub fn new() -> Arc<Self> {
        Self::with_watches(1)
    }

    /// An index fed by `scopes` watches, synced when each has listed.
    pub fn with_watches(scopes: usize) -> Arc<Self> {
        Arc::new(Self {
            state: RwLock::default(),
            scopes,
            all_listed: AtomicBool::new(scopes == 0),
        })
    }

    pub fn lookup(&self, client_id: &str) -> Option<Arc<CredentialEntry>> {
        self.read().by_client_id.get(client_id).cloned()
    }

    /// The live credentials in `namespace` that name ServiceAccount
    /// `account`, by client id.
    pub fn by_service_account(&self, namespace: &str, account: &str) -> Vec<Arc<CredentialEntry>> {
        let state = self.read();
        let key = (namespace.to_owned(), account.to_owned());
        state
            .by_account
            .get(&key)
            .into_iter()
            .flatten()
            .filter_map(|id| state.by_client_id.get(id))
            .filter(|e| !e.revoked)
            .cloned()
            .collect()
    }

    /// The live credentials whose federation names `subject` of the
    /// trusted issuer `issuer`, by client id.
    pub fn by_identity(&self, issuer: &str, subject: &str) -> Vec<Arc<CredentialEntry>> {
        let state = self.read();
        let key = (issuer.to_owned(), subject.to_owned());
        state
            .by_identity
            .get(&key)
            .into_iter()
            .flatten()
            .filter_map(|id| state.by_client_id.get(id))
            .filter(|e| !e.revoked)
            .cloned()
            .collect()
    }

    pub fn len(&self) -> usize {
        self.read().by_client_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many credentials are in each phase (every phase listed).
    pub fn count_by_phase(&self) -> Vec<(&'static str, usize)> {
        let state = self.read();
        [Phase::Pending, Phase::Active, Phase::Revoked, Phase::Failed]
            .into_iter()
            .map(|p| {
                let n = state.by_client_id.values().filter(|e| e.phase == p).count();
                (p.as_str(), n)
            })
            .collect()
    }

    /// Per namespace (organization) with credentials: how many of its live
    /// (not revoked) credentials are marked Unused.
    pub fn unused_by_namespace(&self) -> BTreeMap<String, usize> {
        let state = self.read();
        let mut counts = BTreeMap::new();
        for e in state.by_client_id.values() {
            let n = counts.entry(e.namespace.clone()).or_insert(0);
            if e.unused && !e.revoked && e.phase != Phase::Revoked {
                *n += 1;
            }
        }
        counts
    }

    /// True once every watch's first full list has been applied.
    pub fn is_synced(&self) -> bool {
        self.all_listed.load(Ordering::Acquire)
    }

    pub fn upsert(&self, cred: &ApiCredential) {
        if let Some(entry) = CredentialEntry::from_object(cred) {
            self.write().insert(Arc::new(entry));
        }
    }

    /// Forgets the credential with this object UID. Also used for objects
    /// that can no longer be parsed: they fail closed.
    pub fn remove_uid(&self, uid: &str) {
        self.write().remove(&client_id_for_uid(uid));
    }

    /// Replaces what one watch sees (`namespace`, or `None` for all) with a
    /// fresh full list after a (re)list; other watches' entries stay.
    /// Entries are made as objects arrive (`CredentialEntry::from_object`),
    /// so a relist never holds every object whole.
    pub fn replace_scope(
        &self,
        namespace: Option<&str>,
        fresh: impl IntoIterator<Item = CredentialEntry>,
    ) {
        let mut state = self.write();
        let stale: Vec<String> = state
            .by_client_id
            .values()
            .filter(|e| namespace.is_none_or(|ns| e.namespace == ns))
            .map(|e| e.client_id.clone())
            .collect();
        for client_id in stale {
            state.remove(&client_id);
        }
        for e in fresh {
            state.insert(Arc::new(e));
        }
        state.synced.insert(namespace.map(str::to_owned));
        if state.synced.len() >= self.scopes {
            self.all_listed.store(true, Ordering::Release);
        }
    }

    // A panic while holding the lock cannot leave the maps half-written
    // (State's insert and remove only call collections' own methods, which
    // do not panic midway), so a poisoned lock is safe to keep using.
    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{ApiCredentialSpec, ApiCredentialStatus};
    use crate::secret::SecretHasher;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

    fn entries<const N: usize>(creds: [ApiCredential; N]) -> Vec<CredentialEntry> {
        creds
            .iter()
            .filter_map(CredentialEntry::from_object)
            .collect()
    }

    fn hash(uid: &str, secret: &[u8]) -> SecretHash {
        SecretHasher::new(&[7; 32]).hash(&client_id_for_uid(uid), secret)
    }

    fn cred(
        uid: &str,
        revoked: bool,
        current: &[u8],
        previous: Option<(&[u8], i64)>,
    ) -> ApiCredential {
        let mut c = ApiCredential::new(
            "ci",
            ApiCredentialSpec {
                display_name: "CI".into(),
                scopes: vec!["requirement:read".into()],
                token_lifetime: Some("1h".into()),
                revoked,
                ..Default::default()
            },
        );
        c.metadata.uid = Some(uid.into());
        c.metadata.namespace = Some("org-a".into());
        c.status = Some(ApiCredentialStatus {
            secret_hash: Some(hash(uid, current).to_string()),
            previous_secret_hash: previous.map(|(p, _)| hash(uid, p).to_string()),
            previous_secret_expires_at: previous
                .map(|(_, at)| Time(Timestamp::from_second(at).unwrap())),
            rotation_counter: Some(3),
            ..Default::default()
        });
        c
    }

    #[test]
    fn looks_up_by_client_id_and_matches_current_and_previous() {
        let index = CredentialIndex::new();
        index.upsert(&cred("aaaa-1", false, b"new", Some((b"old", 1_000))));
        let entry = index.lookup("ci_aaaa1").expect("entry");
        assert_eq!(entry.namespace, "org-a");
        assert_eq!(entry.rotation_counter, 3);
        assert_eq!(entry.token_lifetime, Some(Duration::from_secs(3600)));
        let before = Timestamp::from_second(999).unwrap();
        let after = Timestamp::from_second(1_000).unwrap();
        let h = |s: &[u8]| hash("aaaa-1", s);
        assert_eq!(
            entry.match_secret(&h(b"new"), after),
            Some(SecretSlot::Current)
        );
        assert_eq!(
            entry.match_secret(&h(b"old"), before),
            Some(SecretSlot::Previous)
        );
        assert_eq!(entry.match_secret(&h(b"old"), after), None);
        assert_eq!(entry.match_secret(&h(b"other"), before), None);
        assert!(entry.token_live(&h(b"old").short_id(), 3, before));
        assert!(!entry.token_live(&h(b"old").short_id(), 3, after));
    }

    #[test]
    fn service_accounts_find_their_live_credentials_through_every_change() {
        let index = CredentialIndex::new();
        let named = |uid: &str, ns: &str, accounts: &[&str], revoked: bool| {
            let mut c = cred(uid, revoked, b"s", None);
            c.metadata.namespace = Some(ns.into());
            c.spec.service_accounts = accounts.iter().map(|a| a.to_string()).collect();
            c
        };
        let ids = |ns: &str, account: &str| -> Vec<String> {
            index
                .by_service_account(ns, account)
                .iter()
                .map(|e| e.client_id.clone())
                .collect()
        };
        index.upsert(&named("bbbb-2", "org-a", &["ci", "deploy"], false));
        index.upsert(&named("aaaa-1", "org-a", &["ci"], false));
        index.upsert(&named("cccc-3", "org-b", &["ci"], false));
        index.upsert(&named("dddd-4", "org-a", &["ci"], true));
        assert_eq!(ids("org-a", "ci"), ["ci_aaaa1", "ci_bbbb2"]);
        assert_eq!(ids("org-a", "deploy"), ["ci_bbbb2"]);
        assert_eq!(ids("org-b", "ci"), ["ci_cccc3"]);
        assert!(ids("org-a", "other").is_empty());

        // An account taken off a credential no longer finds it.
        index.upsert(&named("bbbb-2", "org-a", &["deploy"], false));
        assert_eq!(ids("org-a", "ci"), ["ci_aaaa1"]);
        index.remove_uid("aaaa-1");
        assert!(ids("org-a", "ci").is_empty());

        // A relist of org-a replaces org-a's entries only.
        let fresh = entries([named("eeee-5", "org-a", &["ci"], false)]);
        index.replace_scope(Some("org-a"), fresh);
        assert_eq!(ids("org-a", "ci"), ["ci_eeee5"]);
        assert!(ids("org-a", "deploy").is_empty());
        assert_eq!(ids("org-b", "ci"), ["ci_cccc3"]);
        index.replace_scope(None, Vec::new());
        assert!(ids("org-b", "ci").is_empty());
        assert!(index.read().by_account.is_empty());
    }

    #[test]
    fn service_account_tokens_end_with_a_rotation_but_for_its_grace() {
        let named = |previous: Option<(&[u8], i64)>| {
            let mut c = cred("aaaa", false, b"s", previous);
            c.spec.service_accounts = vec!["ci".into()];
            CredentialEntry::from_object(&c).unwrap()
        };
        let (now, later) = (
            Timestamp::from_second(500).unwrap(),
            Timestamp::from_second(1_000).unwrap(),
        );
        let sid = service_account_sid("ci");
        let entry = named(None);
        assert!(entry.token_live(&sid, 3, now), "issued under the counter");
        assert!(!entry.token_live(&sid, 2, now), "issued before a rotation");
        assert!(!entry.token_live(&service_account_sid("other"), 3, now));
        let graced = named(Some((b"old", 1_000)));
        assert!(graced.token_live(&sid, 2, now), "within the grace period");
        assert!(!graced.token_live(&sid, 2, later));
        assert!(graced.token_live(&sid, 3, later));
    }

    #[test]
    fn unused_credentials_are_counted_per_organization() {
        let index = CredentialIndex::new();
        let unused = |uid: &str, ns: &str, revoked: bool| {
            let mut c = cred(uid, revoked, b"s", None);
            c.metadata.namespace = Some(ns.into());
            c.status.as_mut().unwrap().conditions = vec![Condition {
                type_: "Unused".into(),
                status: "True".into(),
                reason: "NotUsedRecently".into(),
                message: String::new(),
                observed_generation: None,
                last_transition_time: Time(Timestamp::now()),
            }];
            c
        };
        index.upsert(&unused("a1", "org-a", false));
        index.upsert(&unused("a2", "org-a", false));
        index.upsert(&unused("a3", "org-a", true));
        index.upsert(&cred("b1", false, b"s", None));
        let counts: Vec<(String, usize)> = index.unused_by_namespace().into_iter().collect();
        assert_eq!(counts, [("org-a".to_owned(), 2)]);
        let m = crate::metrics::Metrics::new();
        let text = m.render(Some(&index));
        assert!(
            text.contains("catalio_credentials_unused{namespace=\"org-a\"} 2"),
            "{text}"
        );
    }

    #[test]
    fn revoked_credentials_match_nothing() {
        let index = CredentialIndex::new();
        index.upsert(&cred("bbbb", true, b"s", None));
        let entry = index.lookup("ci_bbbb").unwrap();
        let now = Timestamp::now();
        assert_eq!(entry.match_secret(&hash("bbbb", b"s"), now), None);
        assert!(!entry.token_live(&hash("bbbb", b"s").short_id(), 3, now));
    }

    #[test]
    fn a_relist_drops_missing_entries_and_marks_synced() {
        let index = CredentialIndex::new();
        assert!(!index.is_synced());
        index.upsert(&cred("gone", false, b"x", None));
        index.replace_scope(None, entries([cred("kept", false, b"y", None)]));
        assert!(index.is_synced());
        assert!(index.lookup("ci_gone").is_none());
        assert!(index.lookup("ci_kept").is_some());
        index.remove_uid("kept");
        assert!(index.is_empty());
    }

    #[test]
    fn one_namespace_relist_keeps_the_other_namespaces() {
        let index = CredentialIndex::with_watches(2);
        let mut other = cred("bbbb", false, b"b", None);
        other.metadata.namespace = Some("org-b".into());
        index.replace_scope(Some("org-b"), entries([other]));
        assert!(!index.is_synced(), "org-a has not listed yet");
        index.upsert(&cred("stale", false, b"s", None));
        index.replace_scope(Some("org-a"), entries([cred("aaaa", false, b"a", None)]));
        assert!(index.is_synced());
        assert!(
            index.lookup("ci_bbbb").is_some(),
            "org-b survived org-a's relist"
        );
        assert!(index.lookup("ci_aaaa").is_some());
        assert!(
            index.lookup("ci_stale").is_none(),
            "org-a's relist dropped its stale entry"
        );
    }
}
