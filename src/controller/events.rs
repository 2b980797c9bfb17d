//! Publishes events about credentials (`events.k8s.io/v1`), with repeats of
//! the same event folded into a series as `kubectl` and client-go do.
//!
//! kube-runtime's `Recorder` does the same by keeping every event it
//! published, whole, for six minutes, and keys them by an object reference
//! that carries the credential's resourceVersion, so a repeat almost never
//! matches: at 10,000 credentials that cache was a third of the
//! controller's memory, and every publish walked all of it. Here an open
//! series costs its key's hash, the event's name and a count, the table is
//! bounded, and an event the table has no room for is simply published on
//! its own (a repeat then starts a series of its own: nothing is lost).

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event as K8sEvent, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType};
use kube::{Api, Client};

/// How long after its last occurrence a repeat still joins a series
/// (client-go's value).
const SERIES_WINDOW: Duration = Duration::from_secs(6 * 60);

/// At most this many open series; beyond it, events are published alone.
const MAX_SERIES: usize = 4096;

/// Who publishes: the controller's name and, under leader election, the
/// pod's.
pub struct Reporter {
    pub controller: String,
    pub instance: Option<String>,
}

pub struct Events {
    client: Client,
    reporter: Reporter,
    hasher: RandomState,
    series: Mutex<HashMap<u64, Series>>,
}

/// An event published recently, which repeats extend.
struct Series {
    name: Box<str>,
    count: i32,
    last: Instant,
}

impl Events {
    pub fn new(client: Client, reporter: Reporter) -> Self {
        Self {
            client,
            reporter,
            hasher: RandomState::new(),
            series: Mutex::default(),
        }
    }

    /// Publishes `event` about `regarding`: a new Event, or the next count
    /// of the series an identical event (same type, reason, action, note,
    /// object and related object) started within the window.
    pub async fn publish(
        &self,
        event: &Event,
        regarding: &ObjectReference,
    ) -> Result<(), kube::Error> {
        let namespace = regarding.namespace.as_deref().unwrap_or("default");
        let api = Api::<K8sEvent>::namespaced(self.client.clone(), namespace);
        let key = self.key(event, regarding);
        if let Some((name, count)) = self.repeat(key) {
            let now = Timestamp::now();
            let series = EventSeries {
                count,
                last_observed_time: MicroTime(now),
            };
            let patch = serde_json::json!({ "series": series });
            match api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => return Ok(()),
                // Gone (the API server's event TTL, or deleted): start anew.
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        let created = api
            .create(&PostParams::default(), &self.event(event, regarding))
            .await?;
        if let Some(name) = created.metadata.name {
            self.open(key, name.into_boxed_str());
        }
        Ok(())
    }

    fn key(&self, event: &Event, regarding: &ObjectReference) -> u64 {
        let reference = |r: &ObjectReference| {
            (
                r.kind.clone(),
                r.namespace.clone(),
                r.name.clone(),
                r.uid.clone(),
            )
        };
        self.hasher.hash_one((
            matches!(event.type_, EventType::Warning),
            &event.reason,
            &event.action,
            &event.note,
            reference(regarding),
            event.secondary.as_ref().map(reference),
        ))
    }

    /// The name and next count of the open series under `key`, counted.
    fn repeat(&self, key: u64) -> Option<(Box<str>, i32)> {
        let mut series = self.series.lock().expect("event series lock");
        let now = Instant::now();
        let open = series.get_mut(&key)?;
        if now.duration_since(open.last) > SERIES_WINDOW {
            series.remove(&key);
            return None;
        }
        open.count += 1;
        open.last = now;
        Some((open.name.clone(), open.count))
    }

    fn open(&self, key: u64, name: Box<str>) {
        let mut series = self.series.lock().expect("event series lock");
        let now = Instant::now();
        if series.len() >= MAX_SERIES {
            series.retain(|_, s| now.duration_since(s.last) <= SERIES_WINDOW);
        }
        if series.len() < MAX_SERIES {
            series.insert(
                key,
                Series {
                    name,
                    count: 1,
                    last: now,
                },
            );
        }
    }

    fn event(&self, event: &Event, regarding: &ObjectReference) -> K8sEvent {
        let now = Timestamp::now();
        let controller = &self.reporter.controller;
        let object = regarding.name.as_deref().unwrap_or(controller);
        K8sEvent {
            metadata: ObjectMeta {
                name: Some(format!("{object}.{:x}", now.as_nanosecond())),
                namespace: regarding.namespace.clone(),
                ..ObjectMeta::default()
            },
            event_time: Some(MicroTime(now)),
            type_: Some(
                match event.type_ {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                }
                .to_owned(),
            ),
            reason: Some(event.reason.clone()),
            action: Some(event.action.clone()),
            note: event.note.clone(),
            regarding: Some(regarding.clone()),
            related: event.secondary.clone(),
            reporting_controller: Some(controller.clone()),
            reporting_instance: Some(
                self.reporter
                    .instance
                    .clone()
                    .unwrap_or_else(|| controller.clone()),
            ),
            ..K8sEvent::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events() -> Events {
        // A client is needed to build one; these tests never call it.
        let config = kube::Config::new("http://127.0.0.1:1".parse().unwrap());
        Events::new(
            Client::try_from(config).unwrap(),
            Reporter {
                controller: "catalio-operator".into(),
                instance: None,
            },
        )
    }

    fn warning(note: &str) -> Event {
        Event {
            type_: EventType::Warning,
            reason: "SecretReplaced".into(),
            note: Some(note.into()),
            action: "Reconcile".into(),
            secondary: None,
        }
    }

    fn credential(resource_version: &str) -> ObjectReference {
        ObjectReference {
            kind: Some("ApiCredential".into()),
            namespace: Some("acme".into()),
            name: Some("ci".into()),
            uid: Some("u-1".into()),
            resource_version: Some(resource_version.into()),
            ..ObjectReference::default()
        }
    }

    #[tokio::test]
    async fn a_repeat_joins_the_series_whatever_the_resource_version() {
        let events = events();
        let key = events.key(&warning("did not match"), &credential("1"));
        assert_eq!(key, events.key(&warning("did not match"), &credential("2")));
        assert_ne!(key, events.key(&warning("was deleted"), &credential("1")));
        assert!(events.repeat(key).is_none());
        events.open(key, "ci.1".into());
        assert_eq!(events.repeat(key), Some(("ci.1".into(), 2)));
        assert_eq!(events.repeat(key), Some(("ci.1".into(), 3)));
    }

    #[tokio::test]
    async fn the_table_of_series_is_bounded() {
        let events = events();
        for key in 0..MAX_SERIES as u64 + 10 {
            events.open(key, "e".into());
        }
        assert_eq!(events.series.lock().unwrap().len(), MAX_SERIES);
        // An event without room is published alone: no repeat to extend.
        assert!(events.repeat(MAX_SERIES as u64 + 5).is_none());
        assert!(events.repeat(0).is_some());
    }

    #[tokio::test]
    async fn a_series_past_its_window_ends() {
        let events = events();
        events.open(7, "e".into());
        events.series.lock().unwrap().get_mut(&7).unwrap().last =
            Instant::now() - SERIES_WINDOW - Duration::from_secs(1);
        assert!(events.repeat(7).is_none());
        assert!(events.series.lock().unwrap().is_empty());
    }
}
