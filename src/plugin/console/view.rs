//! What the console's page shows of an organization: its credentials (no
//! secret, only the keyed hash), their recent events, and what the user
//! may do, asked of the API server as the user (SelfSubjectAccessReview).

use std::collections::BTreeMap;

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};
use serde::Serialize;

use crate::crd::{ApiCredential, Phase};

/// Events shown per credential, newest first.
const EVENTS_PER_CREDENTIAL: usize = 5;

/// What the user may do in the namespace. The page offers only these.
#[derive(Serialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Permissions {
    pub create: bool,
    /// Rotate and revoke (both patch the credential).
    pub update: bool,
    pub delete: bool,
    /// Read the Secret: needed to show a new secret once.
    pub read_secrets: bool,
    pub list_events: bool,
}

impl Permissions {
    /// Asks the API server, as the user, for each.
    pub async fn of(client: &Client, namespace: &str) -> Permissions {
        let can = |verb: &'static str, group: &'static str, resource: &'static str| {
            allowed(client, namespace, verb, group, resource)
        };
        let group = crate::crd::GROUP;
        let (create, update, delete, read_secrets, list_events) = futures::join!(
            can("create", group, "apicredentials"),
            can("patch", group, "apicredentials"),
            can("delete", group, "apicredentials"),
            can("get", "", "secrets"),
            can("list", "", "events"),
        );
        Permissions {
            create,
            update,
            delete,
            read_secrets,
            list_events,
        }
    }
}

/// Whether the user may `verb` `resource` in `namespace`; no when the
/// question cannot be asked (the page then offers less, never more).
async fn allowed(
    client: &Client,
    namespace: &str,
    verb: &str,
    group: &str,
    resource: &str,
) -> bool {
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                namespace: Some(namespace.to_owned()),
                verb: Some(verb.to_owned()),
                group: Some(group.to_owned()),
                resource: Some(resource.to_owned()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<SelfSubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .ok()
        .and_then(|r| r.status)
        .is_some_and(|s| s.allowed)
}

/// One recent event of a credential.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EventView {
    pub time: Option<String>,
    #[serde(rename = "type")]
    pub type_: String,
    pub reason: String,
    pub note: String,
}

/// One credential as the page lists it.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CredentialView {
    pub name: String,
    pub display_name: String,
    pub client_id: Option<String>,
    pub phase: &'static str,
    pub message: String,
    pub scopes: Vec<String>,
    pub created: Option<String>,
    pub last_used: Option<String>,
    pub unused: bool,
    pub next_rotation: Option<String>,
    pub rotation_every: Option<String>,
    pub grace_period: String,
    pub rotations: i64,
    /// The keyed hash of the current secret: all a later view shows.
    pub secret_hash: Option<String>,
    /// No client secret (`clientSecret: Disabled`): nothing to rotate.
    pub secretless: bool,
    pub events: Vec<EventView>,
}

impl CredentialView {
    fn new(cred: &ApiCredential, events: Vec<EventView>) -> Self {
        let status = cred.status.clone().unwrap_or_default();
        let condition = |type_: &str| status.conditions.iter().find(|c| c.type_ == type_);
        let time = |t: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>| {
            t.map(|t| t.0.to_string())
        };
        CredentialView {
            name: cred.name_any(),
            display_name: cred.spec.display_name.clone(),
            client_id: status.client_id.clone(),
            phase: status.phase.map_or("Pending", Phase::as_str),
            message: condition("Ready")
                .map(|c| c.message.clone())
                .unwrap_or_default(),
            scopes: cred.spec.scopes.clone(),
            created: time(cred.metadata.creation_timestamp.clone()),
            last_used: time(status.last_used_at.clone()),
            unused: condition("Unused").is_some_and(|c| c.status == "True"),
            next_rotation: time(status.next_rotation_at.clone()),
            rotation_every: cred.spec.rotation.every.clone(),
            grace_period: cred.spec.rotation.grace_period.clone(),
            rotations: status.rotation_counter.unwrap_or(0),
            secret_hash: status.secret_hash.clone(),
            secretless: cred.spec.client_secret == crate::crd::ClientSecretMode::Disabled,
            events,
        }
    }
}

/// An organization as the page shows it.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Listing {
    pub namespace: String,
    pub can: Permissions,
    pub credentials: Vec<CredentialView>,
}

impl Listing {
    /// From what the user could read: credentials by name, each with its
    /// own newest events (matched by uid: a name can be reused).
    pub fn new(
        namespace: &str,
        can: Permissions,
        creds: &[impl std::ops::Deref<Target = ApiCredential>],
        events: &[impl std::ops::Deref<Target = Event>],
    ) -> Self {
        let mut by_uid: BTreeMap<String, Vec<(String, EventView)>> = BTreeMap::new();
        for event in events {
            let Some(uid) = event.involved_object.uid.clone() else {
                continue;
            };
            let time = event_time(event);
            let view = EventView {
                time: time.clone(),
                type_: event.type_.clone().unwrap_or_default(),
                reason: event.reason.clone().unwrap_or_default(),
                note: event.message.clone().unwrap_or_default(),
            };
            by_uid
                .entry(uid)
                .or_default()
                .push((time.unwrap_or_default(), view));
        }
        let mut credentials: Vec<CredentialView> = creds
            .iter()
            .map(|cred| {
                let mut events = by_uid
                    .remove(&cred.uid().unwrap_or_default())
                    .unwrap_or_default();
                // RFC 3339 times in UTC sort as text.
                events.sort_by(|a, b| b.0.cmp(&a.0));
                let events = events
                    .into_iter()
                    .take(EVENTS_PER_CREDENTIAL)
                    .map(|(_, e)| e)
                    .collect();
                CredentialView::new(cred, events)
            })
            .collect();
        credentials.sort_by(|a, b| a.name.cmp(&b.name));
        Listing {
            namespace: namespace.to_owned(),
            can,
            credentials,
        }
    }
}

/// When an event last happened: events.k8s.io events (what the operator
/// publishes) carry eventTime and a series; core ones lastTimestamp.
fn event_time(event: &Event) -> Option<String> {
    let series = event
        .series
        .as_ref()
        .and_then(|s| s.last_observed_time.as_ref())
        .map(|t| t.0.to_string());
    series
        .or_else(|| event.event_time.as_ref().map(|t| t.0.to_string()))
        .or_else(|| event.last_timestamp.as_ref().map(|t| t.0.to_string()))
        .or_else(|| {
            event
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.to_string())
        })
}

/// The field selector for the events of credentials.
pub const CREDENTIAL_EVENTS: &str = "involvedObject.kind=ApiCredential";

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ObjectReference;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

    fn event(uid: &str, second: i64, reason: &str) -> Event {
        Event {
            involved_object: ObjectReference {
                uid: Some(uid.to_owned()),
                ..Default::default()
            },
            event_time: Some(MicroTime(jiff::Timestamp::from_second(second).unwrap())),
            reason: Some(reason.to_owned()),
            type_: Some("Normal".to_owned()),
            ..Default::default()
        }
    }

    #[test]
    fn each_credential_lists_its_own_newest_events() {
        let mut a: ApiCredential = serde_json::from_value(serde_json::json!({
            "apiVersion": "catalio.ai/v1", "kind": "ApiCredential",
            "metadata": {"name": "a", "uid": "uid-a"},
            "spec": {"displayName": "A"},
            "status": {"phase": "Active", "secretHash": "hmac-sha256:ab", "rotationCounter": 2},
        }))
        .unwrap();
        a.metadata.creation_timestamp = None;
        let events: Vec<Box<Event>> = (0..8)
            .map(|i| Box::new(event("uid-a", 1_800_000_000 + i, &format!("R{i}"))))
            .chain([Box::new(event("uid-of-a-deleted-a", 1_900_000_000, "Old"))])
            .collect();
        let listing = Listing::new("org", Permissions::default(), &[Box::new(a)], &events);
        let view = &listing.credentials[0];
        let reasons: Vec<&str> = view.events.iter().map(|e| e.reason.as_str()).collect();
        assert_eq!(reasons, ["R7", "R6", "R5", "R4", "R3"]);
        assert_eq!((view.phase, view.rotations), ("Active", 2));
        assert_eq!(view.secret_hash.as_deref(), Some("hmac-sha256:ab"));
    }
}
