//! The `ApiCredential` kind: what an organization administrator applies to get
//! a `client_id`/`client_secret` pair, and the status the operator reports.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// CEL check for every scope: `*` or a registry type, then the access.
fn scope_rule() -> String {
    let types: Vec<&str> = super::registry::TYPES.iter().map(|t| t.name).collect();
    format!(
        "self.all(s, s.matches('^([*]|{}):(read|write)$'))",
        types.join("|")
    )
}

/// An object name (RFC 1123 subdomain), as Kubernetes checks it.
const DNS_SUBDOMAIN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/// Go duration syntax, as CEL's `duration()` accepts it.
const DURATION_PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$";

/// An OAuth 2.0 client credential for Catalio's API. The operator generates a
/// client secret and writes `client_id`, `client_secret`, `token_url` and
/// `audience` into a Secret that workloads mount.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "catalio.ai",
    version = "v1",
    kind = "ApiCredential",
    namespaced,
    status = "ApiCredentialStatus",
    derive = "PartialEq",
    shortname = "apicred",
    category = "catalio",
    doc = "An OAuth 2.0 client credential for Catalio's API. The operator writes the generated client_id and client_secret into a Secret; rotation and revocation are spec fields.",
    printcolumn = r#"{"name":"Display Name","type":"string","jsonPath":".spec.displayName"}"#,
    printcolumn = r#"{"name":"Client ID","type":"string","jsonPath":".status.clientId"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Last Used","type":"date","jsonPath":".status.lastUsedAt"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = Rule::new(
    "has(self.secretName) == has(oldSelf.secretName) && (!has(self.secretName) || self.secretName == oldSelf.secretName)"
).message("secretName is immutable"))]
#[x_kube(validation = Rule::new(
    "!has(self.clientSecret) || self.clientSecret != 'Disabled' || (has(self.serviceAccounts) && size(self.serviceAccounts) > 0) || has(self.clientKeys) || (has(self.federation) && size(self.federation) > 0)"
).message("a credential with clientSecret: Disabled needs serviceAccounts, clientKeys or federation to authenticate with"))]
#[serde(rename_all = "camelCase")]
pub struct ApiCredentialSpec {
    /// A name that tells administrators what the credential is for, such as
    /// "CI/CD Pipeline" or "Data Sync".
    #[schemars(length(min = 1, max = 128))]
    pub display_name: String,

    /// What tokens issued to this credential may do: `<type>:read` or
    /// `<type>:write`, where type is a JSON:API type (`requirement`,
    /// `persona`, ...) or `*` for all of them. Write implies read.
    #[serde(default = "default_scopes")]
    #[schemars(length(max = 64), inner(length(max = 64)))]
    #[x_kube(validation = Rule::new(scope_rule()).message(
        "each scope must be <type>:read or <type>:write, with type a JSON:API type or *"
    ))]
    pub scopes: Vec<String>,

    /// Name of the Secret the operator writes, in the credential's namespace.
    /// Defaults to the credential's own name. Cannot be changed later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = DNS_SUBDOMAIN)
    )]
    pub secret_name: Option<String>,

    /// ServiceAccounts in the credential's namespace whose tokens
    /// authenticate as this credential: a pod presents its projected
    /// ServiceAccount token (audience: the token issuer, e.g.
    /// `https://catalio.ai`) as an RFC 7523 client assertion, and needs no
    /// client secret. Removing an account stops its tokens.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 32),
        inner(
            length(min = 1, max = 253),
            regex(pattern = DNS_SUBDOMAIN)
        )
    )]
    pub service_accounts: Vec<String>,

    /// `Generated` (the default): the operator generates a client secret
    /// and writes the Secret. `Disabled`: no client secret and no Secret at
    /// all (nothing to leak or rotate); only `serviceAccounts`,
    /// `clientKeys` or `federation` authenticate.
    #[serde(default)]
    pub client_secret: ClientSecretMode,

    /// Labels and annotations copied onto the Secret, for example to let a
    /// tool that syncs Secrets pick it up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_template: Option<SecretTemplate>,

    /// When the client secret is replaced.
    #[serde(default)]
    pub rotation: Rotation,

    /// Lifetime of access tokens issued to this credential, between `1m` and
    /// `24h`. Defaults to the server's token lifetime (24h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN), length(max = 32))]
    #[x_kube(validation = Rule::new("duration(self) >= duration('1m') && duration(self) <= duration('24h')")
        .message("tokenLifetime must be between 1m and 24h"))]
    pub token_lifetime: Option<String>,

    /// How long the credential may go unused (no token issued, no API call)
    /// before it is marked `Unused`, for example `720h`. Defaults to the
    /// operator's `--unused-after` (90 days).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN), length(max = 32))]
    pub unused_after: Option<String>,

    /// Public keys the client signs its assertions with (`private_key_jwt`,
    /// RFC 7523): a JSON Web Key Set, `{keys: [...]}`, of RSA, EC (P-256,
    /// P-384) or Ed25519 keys. The client sends a JWT it signed, with `iss`
    /// and `sub` its client id, `aud` the token endpoint's URL or the
    /// issuer, at most 5 minutes of life and a fresh `jti`, as
    /// `client_assertion`; nothing secret is stored anywhere. Private key
    /// members (`d`, `p`, `q`, `dp`, `dq`, `qi`, `k`) are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_keys: Option<ClientKeys>,

    /// Outside identities that may act as this credential (workload
    /// identity federation): a token from an issuer the cluster
    /// administrator trusts, with exactly this `subject` and these
    /// `claims` (for GitHub Actions: `repository`, `ref`, `environment`),
    /// presented as `client_assertion`, gets access tokens.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub federation: Vec<FederatedIdentity>,

    /// `None` (the default): access tokens are bearer tokens. `DPoP`:
    /// every token request must carry a DPoP proof (RFC 9449), and every
    /// token is bound to the proof's key, so a copied token is useless
    /// without it.
    #[serde(default)]
    pub token_binding: TokenBinding,

    /// Lets this credential introspect (`POST /oauth/introspect`, RFC 7662)
    /// the access tokens of its organization: for a service of the
    /// organization that accepts its tokens and must know, as the JSON:API
    /// does, whether one is still active. Others get `active: false`.
    #[serde(default)]
    pub introspection: bool,

    /// Revokes the credential, for good and with a Warning event, once it
    /// has been unused for `unusedAfter`.
    #[serde(default)]
    pub revoke_when_unused: bool,

    /// Revokes the credential for good: the Secret is deleted, the token
    /// endpoint refuses the client and tokens already issued stop working.
    /// Once true it can never become false again.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self || !oldSelf").message("revoked credentials cannot be restored"))]
    pub revoked: bool,
}

/// A JSON Web Key Set of a client's public keys.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[x_kube(validation = Rule::new("self.keys.all(a, self.keys.exists_one(b, b.kid == a.kid))").message("every client key needs a kid of its own"))]
pub struct ClientKeys {
    #[schemars(length(min = 1, max = 8))]
    pub keys: Vec<ClientKey>,
}

/// One public JSON Web Key (RFC 7517).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[x_kube(validation = Rule::new(
    "!has(self.d) && !has(self.p) && !has(self.q) && !has(self.dp) && !has(self.dq) && !has(self.qi) && !has(self.k)"
).message("client keys must be public: remove the private members (d, p, q, dp, dq, qi, k)"))]
#[x_kube(validation = Rule::new(
    "self.kty == 'RSA' ? (has(self.n) && has(self.e)) : self.kty == 'EC' ? (has(self.crv) && has(self.x) && has(self.y)) : (has(self.crv) && has(self.x))"
).message("an RSA key needs n and e, an EC key crv, x and y, an OKP key crv and x"))]
pub struct ClientKey {
    /// `RSA`, `EC` or `OKP`.
    #[schemars(regex(pattern = r"^(RSA|EC|OKP)$"))]
    pub kty: String,
    #[schemars(length(min = 1, max = 128))]
    pub kid: String,
    /// The algorithm the key signs with; implied by the key when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^(RS256|RS384|RS512|PS256|PS384|PS512|ES256|ES384|EdDSA)$"))]
    pub alg: Option<String>,
    #[serde(default, rename = "use", skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^sig$"))]
    pub use_: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub n: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16))]
    pub e: Option<String>,
    /// `P-256`, `P-384` or `Ed25519`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^(P-256|P-384|Ed25519)$"))]
    pub crv: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub x: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub y: Option<String>,
    /// Private members: listed only so that the API server can refuse
    /// them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub d: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub p: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub q: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub dp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub dq: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub qi: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub k: Option<String>,
}

/// An outside identity that may act as the credential.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
pub struct FederatedIdentity {
    /// The name the cluster administrator gave the trusted issuer.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub issuer: String,
    /// The token's exact `sub`, such as
    /// `repo:my-org/app:environment:production`.
    #[schemars(length(min = 1, max = 256))]
    pub subject: String,
    /// Claims the token must carry with exactly these (string) values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend(
        "maxProperties" = 8,
        "additionalProperties" = {"type": "string", "maxLength": 256}
    ))]
    pub claims: BTreeMap<String, String>,
}

/// Whether a credential's tokens are bound to a key.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum TokenBinding {
    #[default]
    None,
    DPoP,
}

/// Whether a credential has a client secret.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ClientSecretMode {
    #[default]
    Generated,
    Disabled,
}

fn default_scopes() -> Vec<String> {
    vec!["*:read".to_owned()]
}

/// CEL check that no template key is one the operator writes and reads,
/// and that each fits a Kubernetes key (a 253-character prefix, a slash
/// and a 63-character name).
const UNRESERVED_KEYS_RULE: &str = "self.all(k, !k.startsWith('catalio.ai/') && size(k) <= 317)";

/// Metadata copied onto the generated Secret. Keys under `catalio.ai/` are
/// the operator's own and are refused. Every credential is held in the
/// operator's memory, so the template is small: at most 16 labels and 16
/// annotations, annotation values up to 4 KiB.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
pub struct SecretTemplate {
    /// Labels added to the Secret.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend(
        "maxProperties" = 16,
        "additionalProperties" = {"type": "string", "maxLength": 63}
    ))]
    #[x_kube(validation = Rule::new(UNRESERVED_KEYS_RULE).message("label keys under catalio.ai/ are reserved for the operator, and keys are at most 317 characters"))]
    pub labels: BTreeMap<String, String>,
    /// Annotations added to the Secret.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend(
        "maxProperties" = 16,
        "additionalProperties" = {"type": "string", "maxLength": 4096}
    ))]
    #[x_kube(validation = Rule::new(UNRESERVED_KEYS_RULE).message("annotation keys under catalio.ai/ are reserved for the operator, and keys are at most 317 characters"))]
    pub annotations: BTreeMap<String, String>,
}

/// Rotation settings. Raising `counter` rotates now; `every` rotates on a
/// schedule; `gracePeriod` keeps the previous secret working for a while.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Rotation {
    /// Raise this number to rotate the client secret now. It may never
    /// decrease.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self >= oldSelf").message("rotation.counter may never decrease"))]
    pub counter: i64,

    /// Rotates the client secret on a schedule, for example `2160h` (90
    /// days). At least `1h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN), length(max = 32))]
    #[x_kube(validation = Rule::new("duration(self) >= duration('1h')").message("rotation.every must be at least 1h"))]
    pub every: Option<String>,

    /// How long the previous client secret keeps working after a rotation.
    /// `0s` (the default) stops it at once; at most `168h`.
    #[serde(default = "default_grace_period")]
    #[schemars(regex(pattern = DURATION_PATTERN), length(max = 32))]
    #[x_kube(validation = Rule::new("duration(self) <= duration('168h')").message("rotation.gracePeriod must be at most 168h"))]
    pub grace_period: String,

    /// Workloads in the credential's namespace that read the secret once
    /// (from environment variables, say) and must restart to use a new
    /// one. After each rotation they are rolled, as `kubectl rollout
    /// restart` does, through an annotation on their pod template, before
    /// the grace period ends; never when the secret did not change.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub restart_targets: Vec<RestartTarget>,
}

/// A Deployment, StatefulSet or DaemonSet by name, or those of a kind that
/// a label selector matches.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[x_kube(validation = Rule::new("has(self.name) != has(self.selector)").message("a restart target has either a name or a selector"))]
#[x_kube(validation = Rule::new(
    "!has(self.selector) || (has(self.selector.matchLabels) && size(self.selector.matchLabels) > 0) || (has(self.selector.matchExpressions) && size(self.selector.matchExpressions) > 0)"
).message("a restart target's selector needs at least one requirement: an empty one would match every workload of the kind"))]
pub struct RestartTarget {
    pub kind: WorkloadKind,
    /// The workload's name (an object name: it becomes part of a request
    /// path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN))]
    pub name: Option<String>,
    /// Workloads of the kind with these labels; at least one requirement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
}

/// What a restart target may be.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum WorkloadKind {
    Deployment,
    StatefulSet,
    DaemonSet,
}

impl WorkloadKind {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkloadKind::Deployment => "Deployment",
            WorkloadKind::StatefulSet => "StatefulSet",
            WorkloadKind::DaemonSet => "DaemonSet",
        }
    }
}

fn default_grace_period() -> String {
    "0s".to_owned()
}

impl Default for Rotation {
    fn default() -> Self {
        Self {
            counter: 0,
            every: None,
            grace_period: default_grace_period(),
            restart_targets: Vec::new(),
        }
    }
}

/// Lifecycle phase of a credential.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Phase {
    /// The operator has not yet written the Secret.
    Pending,
    /// The Secret holds a working client secret.
    Active,
    /// The credential was revoked; the object stays as a tombstone.
    Revoked,
    /// The operator cannot bring the credential to its desired state; see
    /// the Ready condition.
    Failed,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Active => "Active",
            Phase::Revoked => "Revoked",
            Phase::Failed => "Failed",
        }
    }
}

/// What the operator observed and did. Hashes only: the status never holds
/// secret material.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiCredentialStatus {
    /// The OAuth client_id. Stable for the life of the object and never
    /// reused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// The Secret holding the client secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    /// Pending, Active, Revoked or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// Standard conditions; `Ready` is True when the credential can be used.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The spec generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `hmac-sha256:<hex>`: the current client secret's hash, keyed with a
    /// key only the operator holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_hash: Option<String>,
    /// `hmac-sha256:<hex>` of the previous client secret, while its grace
    /// period lasts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_secret_hash: Option<String>,
    /// When the previous client secret stops working.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_secret_expires_at: Option<Time>,
    /// The `rotation.counter` last applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation_counter: Option<i64>,
    /// When the current client secret was generated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rotated_at: Option<Time>,
    /// When the next scheduled rotation happens (with `rotation.every`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_rotation_at: Option<Time>,
    /// When a token was last issued to this credential (to the minute).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<Time>,
    /// When the credential was revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<Time>,
    /// The short id of the client secret the restart targets were last
    /// rolled for (with `rotation.restartTargets`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restarted_for: Option<String>,
    /// Single access tokens revoked by their client (`POST /oauth/revoke`),
    /// each kept until it would have expired; at most 100.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub revoked_tokens: Vec<RevokedToken>,
    /// Every access token issued at or before this time is revoked: set
    /// when a revocation found `revokedTokens` full.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_tokens_before: Option<Time>,
}

/// One revoked access token: its id (`jti`), never the token.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RevokedToken {
    #[schemars(length(max = 64))]
    pub jti: String,
    /// When the token would have expired; the entry goes then.
    pub expires_at: Time,
}

impl ApiCredential {
    /// The Secret's name: `spec.secretName`, defaulting to the object's name.
    pub fn secret_name(&self) -> &str {
        self.spec
            .secret_name
            .as_deref()
            .or(self.metadata.name.as_deref())
            .unwrap_or_default()
    }
}
