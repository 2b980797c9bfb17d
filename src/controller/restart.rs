//! Rolls a credential's `rotation.restartTargets` after its secret changed,
//! as `kubectl rollout restart` does: by changing an annotation on the pod
//! template. The annotation is per credential and its value is the short id
//! of the secret the pods should hold, so rolling is idempotent: a target
//! already at that value is not touched, and a restart or resync of the
//! operator never rolls anything.

use kube::Client;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::plan::MANAGER;
use crate::crd::ApiCredential;
use crate::crd::credential::{RestartTarget, WorkloadKind};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// Prefix of the pod-template annotation; the name part is the
/// credential's.
pub const ANNOTATION_PREFIX: &str = "restart.catalio.ai/";

/// The pod-template annotation `credential` rolls its targets with. An
/// annotation's name part holds 63 characters; longer credential names
/// are cut and told apart by a hash.
pub fn annotation_key(credential: &str) -> String {
    const MAX: usize = 63;
    if credential.len() <= MAX {
        return format!("{ANNOTATION_PREFIX}{credential}");
    }
    let digest = Sha256::digest(credential.as_bytes());
    let tag: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    let kept = credential[..MAX - 9].trim_end_matches(['-', '.']);
    format!("{ANNOTATION_PREFIX}{kept}-{tag}")
}

/// A label selector as the list API takes it.
pub fn selector_string(selector: &LabelSelector) -> String {
    let mut parts: Vec<String> = selector
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    for e in selector.match_expressions.iter().flatten() {
        let values = e.values.clone().unwrap_or_default().join(",");
        parts.push(match e.operator.as_str() {
            "In" => format!("{} in ({values})", e.key),
            "NotIn" => format!("{} notin ({values})", e.key),
            "Exists" => e.key.clone(),
            "DoesNotExist" => format!("!{}", e.key),
            other => format!("{} {other} ({values})", e.key),
        });
    }
    parts.join(",")
}

/// What rolling the targets did.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Workloads whose template changed, as `Kind name`, and a reference
    /// to each.
    pub restarted: Vec<(String, ObjectReference)>,
    /// Workloads already at the secret.
    pub current: usize,
    /// Targets that could not be rolled, with why.
    pub failed: Vec<String>,
}

fn resource(kind: WorkloadKind) -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk("apps", "v1", kind.as_str()))
}

/// Why a request failed, in words that carry no data of the object.
fn why(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) if s.code == 404 => "not found".to_owned(),
        kube::Error::Api(s) if s.code == 403 => {
            "forbidden (the chart's rbac.restartTargets grants it)".to_owned()
        }
        kube::Error::Api(s) => format!("{} ({})", s.reason, s.code),
        _ => "request failed".to_owned(),
    }
}

/// Rolls every target of `cred` in `namespace` to the secret `value`.
pub async fn roll(client: &Client, namespace: &str, cred: &ApiCredential, value: &str) -> Outcome {
    let key = annotation_key(&cred.metadata.name.clone().unwrap_or_default());
    let mut outcome = Outcome::default();
    for target in &cred.spec.rotation.restart_targets {
        let RestartTarget {
            kind,
            name,
            selector,
        } = target;
        let api =
            Api::<DynamicObject>::namespaced_with(client.clone(), namespace, &resource(*kind));
        let found = match (name, selector) {
            (Some(name), _) => api.get(name).await.map(|o| vec![o]),
            (None, Some(selector)) => api
                .list(&ListParams::default().labels(&selector_string(selector)))
                .await
                .map(|l| l.items),
            (None, None) => Ok(Vec::new()),
        };
        let what = |n: &str| format!("{} {n}", kind.as_str());
        let objects = match found {
            Ok(objects) => objects,
            Err(e) => {
                let named = name.clone().unwrap_or_else(|| "(selector)".to_owned());
                outcome
                    .failed
                    .push(format!("{}: {}", what(&named), why(&e)));
                continue;
            }
        };
        for object in objects {
            let name = object.metadata.name.clone().unwrap_or_default();
            let held = object.data["spec"]["template"]["metadata"]["annotations"][&key].as_str();
            if held == Some(value) {
                outcome.current += 1;
                continue;
            }
            let patch = json!({
                "metadata": {"resourceVersion": object.metadata.resource_version},
                "spec": {"template": {"metadata": {"annotations": {&key: value}}}},
            });
            let params = PatchParams {
                field_manager: Some(MANAGER.to_owned()),
                ..Default::default()
            };
            match api.patch(&name, &params, &Patch::Merge(&patch)).await {
                Ok(_) => {
                    let reference = ObjectReference {
                        api_version: Some("apps/v1".to_owned()),
                        kind: Some(kind.as_str().to_owned()),
                        name: Some(name.clone()),
                        namespace: Some(namespace.to_owned()),
                        uid: object.metadata.uid.clone(),
                        ..Default::default()
                    };
                    outcome.restarted.push((what(&name), reference));
                }
                Err(e) => outcome.failed.push(format!("{}: {}", what(&name), why(&e))),
            }
        }
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    #[test]
    fn annotation_keys_fit_and_stay_distinct() {
        assert_eq!(annotation_key("ci"), "restart.catalio.ai/ci");
        let long_a = format!("{}a", "x".repeat(80));
        let long_b = format!("{}b", "x".repeat(80));
        let (a, b) = (annotation_key(&long_a), annotation_key(&long_b));
        assert_ne!(a, b);
        for key in [&a, &b] {
            let name = key.strip_prefix(ANNOTATION_PREFIX).unwrap();
            assert!(name.len() <= 63, "{name}");
            assert!(name.chars().last().unwrap().is_ascii_alphanumeric());
        }
    }

    #[test]
    fn selectors_read_as_the_list_api_takes_them() {
        let selector = LabelSelector {
            match_labels: Some([("app".to_owned(), "api".to_owned())].into()),
            match_expressions: Some(vec![
                LabelSelectorRequirement {
                    key: "tier".into(),
                    operator: "In".into(),
                    values: Some(vec!["a".into(), "b".into()]),
                },
                LabelSelectorRequirement {
                    key: "canary".into(),
                    operator: "DoesNotExist".into(),
                    values: None,
                },
            ]),
        };
        assert_eq!(selector_string(&selector), "app=api,tier in (a,b),!canary");
    }
}
