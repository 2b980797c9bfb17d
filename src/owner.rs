//! The object that owns what the operator creates in its own namespace (the
//! signing-key Secret and the leader Lease): the controller's
//! ServiceAccount, which the Helm release creates and deletes. With it as
//! owner, `helm uninstall` leaves neither behind; the garbage collector
//! removes both once the ServiceAccount is gone.

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Api, Resource, ResourceExt};

/// The owner reference naming ServiceAccount `name` in `namespace`.
pub async fn service_account(
    client: kube::Client,
    namespace: &str,
    name: &str,
) -> Result<OwnerReference, kube::Error> {
    let account = Api::<ServiceAccount>::namespaced(client, namespace)
        .get(name)
        .await?;
    Ok(OwnerReference {
        api_version: ServiceAccount::api_version(&()).into_owned(),
        kind: ServiceAccount::kind(&()).into_owned(),
        name: account.name_any(),
        uid: account.uid().unwrap_or_default(),
        ..Default::default()
    })
}

/// Whether `owner` is set and missing from `meta`.
pub fn missing(meta: &ObjectMeta, owner: Option<&OwnerReference>) -> bool {
    owner.is_some_and(|o| {
        !meta
            .owner_references
            .iter()
            .flatten()
            .any(|r| r.uid == o.uid)
    })
}

/// Adds `owner` to `meta` unless it is there; whether it added it.
pub fn adopt(meta: &mut ObjectMeta, owner: Option<&OwnerReference>) -> bool {
    match owner {
        Some(o) if missing(meta, owner) => {
            meta.owner_references
                .get_or_insert_with(Vec::new)
                .push(o.clone());
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adopting_adds_the_owner_once_and_keeps_others() {
        let owner = OwnerReference {
            api_version: "v1".into(),
            kind: "ServiceAccount".into(),
            name: "controller".into(),
            uid: "u-1".into(),
            ..Default::default()
        };
        let other = OwnerReference {
            uid: "u-2".into(),
            ..owner.clone()
        };
        let mut meta = ObjectMeta {
            owner_references: Some(vec![other.clone()]),
            ..Default::default()
        };
        assert!(adopt(&mut meta, Some(&owner)));
        assert!(!adopt(&mut meta, Some(&owner)));
        assert_eq!(meta.owner_references, Some(vec![other, owner]));
        let mut bare = ObjectMeta::default();
        assert!(!adopt(&mut bare, None));
        assert_eq!(bare.owner_references, None);
    }
}
