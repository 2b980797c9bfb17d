//! The local control plane behaves like a real cluster: these are the
//! Kubernetes behaviours the operator relies on, proved on the real thing.

use std::time::Duration;

use catalio_test_support::{TestNamespace, cluster, eventually};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client};

fn named<T: kube::Resource<DynamicType = ()> + Default>(name: &str) -> T {
    let mut obj = T::default();
    obj.meta_mut().name = Some(name.to_owned());
    obj
}

#[tokio::test]
async fn kubectl_and_server_report_v1_37() {
    let out = cluster().kubectl_ok(&["version", "-o", "json"]);
    let version: serde_json::Value = serde_json::from_str(&out).unwrap();
    let server = version["serverVersion"]["gitVersion"].as_str().unwrap();
    let client = version["clientVersion"]["gitVersion"].as_str().unwrap();
    assert!(server.starts_with("v1.37."), "server version {server}");
    assert!(client.starts_with("v1.37."), "client version {client}");
}

#[tokio::test]
async fn cel_transition_rule_rejects_forbidden_update() {
    let client = cluster().client().await;
    let ns = TestNamespace::new(&client, "cel").await;
    // CRDs are cluster-wide, so the group carries the namespace's unique name.
    let group = format!("{}.test.catalio.ai", ns.name);
    let crd_name = format!("seals.{group}");
    let crd = format!(
        r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {{name: "{crd_name}"}}
spec:
  group: "{group}"
  scope: Namespaced
  names: {{plural: seals, singular: seal, kind: Seal}}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              sealed:
                type: boolean
                x-kubernetes-validations:
                - rule: "self || !oldSelf"
                  message: "a sealed seal cannot be unsealed"
"#
    );
    cluster().kubectl_stdin(&["apply", "-f", "-"], Some(&crd));
    cluster().kubectl_ok(&[
        "wait",
        "--for",
        "condition=Established",
        "--timeout",
        "60s",
        "crd",
        &crd_name,
    ]);
    let object = format!(
        "apiVersion: {group}/v1\nkind: Seal\nmetadata: {{name: s1, namespace: {}}}\nspec: {{sealed: true}}\n",
        ns.name
    );
    let created = cluster().kubectl_stdin(&["create", "-f", "-"], Some(&object));
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );

    let rejected = cluster().kubectl(&[
        "-n",
        &ns.name,
        "patch",
        &format!("seals.{group}"),
        "s1",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"sealed":false}}"#,
    ]);
    assert!(!rejected.status.success(), "unsealing must be rejected");
    let stderr = String::from_utf8_lossy(&rejected.stderr);
    assert!(
        stderr.contains("a sealed seal cannot be unsealed"),
        "{stderr}"
    );

    // The rule constrains only that transition: setting true again is fine.
    cluster().kubectl_ok(&[
        "-n",
        &ns.name,
        "patch",
        &format!("seals.{group}"),
        "s1",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"sealed":true}}"#,
    ]);
    cluster().kubectl_ok(&["delete", "crd", &crd_name, "--wait=false"]);
}

#[tokio::test]
async fn garbage_collector_deletes_dependents_of_a_deleted_owner() {
    let client = cluster().client().await;
    let ns = TestNamespace::new(&client, "gc").await;
    let maps = Api::<ConfigMap>::namespaced(client.clone(), &ns.name);
    let owner = maps
        .create(&PostParams::default(), &named("owner"))
        .await
        .unwrap();
    let mut child: ConfigMap = named("child");
    child.metadata.owner_references = Some(vec![OwnerReference {
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
        name: "owner".into(),
        uid: owner.metadata.uid.clone().unwrap(),
        controller: Some(true),
        block_owner_deletion: None,
    }]);
    maps.create(&PostParams::default(), &child).await.unwrap();
    maps.delete("owner", &DeleteParams::background())
        .await
        .unwrap();

    eventually(
        Duration::from_secs(30),
        "dependent to be collected",
        || async { maps.get_opt("child").await.unwrap().is_none().then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn namespace_deletion_completes() {
    let client = cluster().client().await;
    let namespaces = Api::<Namespace>::all(client.clone());
    let ns = TestNamespace::new(&client, "doomed").await;
    Api::<ConfigMap>::namespaced(client.clone(), &ns.name)
        .create(&PostParams::default(), &named("contents"))
        .await
        .unwrap();
    namespaces
        .delete(&ns.name, &DeleteParams::default())
        .await
        .unwrap();
    eventually(Duration::from_secs(60), "namespace to be gone", || async {
        namespaces
            .get_opt(&ns.name)
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn service_account_token_is_limited_by_its_role() {
    let client = cluster().client().await;
    let ns = TestNamespace::new(&client, "rbac").await;
    let n = ns.name.as_str();
    Api::<ServiceAccount>::namespaced(client.clone(), n)
        .create(&PostParams::default(), &named("reader"))
        .await
        .unwrap();
    let role = Role {
        metadata: ObjectMeta {
            name: Some("configmap-reader".into()),
            ..Default::default()
        },
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec!["".into()]),
            resources: Some(vec!["configmaps".into()]),
            verbs: vec!["get".into(), "list".into()],
            ..Default::default()
        }]),
    };
    Api::<Role>::namespaced(client.clone(), n)
        .create(&PostParams::default(), &role)
        .await
        .unwrap();
    let binding = RoleBinding {
        metadata: ObjectMeta {
            name: Some("reader".into()),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "Role".into(),
            name: "configmap-reader".into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: "reader".into(),
            namespace: Some(n.into()),
            ..Default::default()
        }]),
    };
    Api::<RoleBinding>::namespaced(client.clone(), n)
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();

    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: Some(vec!["https://kubernetes.default.svc.cluster.local".into()]),
            expiration_seconds: Some(600),
            ..Default::default()
        }),
        ..Default::default()
    };
    let issued: TokenRequest = Api::<ServiceAccount>::namespaced(client.clone(), n)
        .create_subresource("token", "reader", &PostParams::default(), &request)
        .await
        .unwrap();
    let token = issued
        .status
        .and_then(|s| s.token)
        .expect("TokenRequest returns a token");
    assert!(!token.is_empty());

    let mut config = client_config().await;
    config.auth_info = kube::config::AuthInfo {
        token: Some(token.into()),
        ..Default::default()
    };
    let as_reader = Client::try_from(config).unwrap();

    // RBAC's answer comes after the binding is visible to the authorizer.
    eventually(
        Duration::from_secs(10),
        "allowed list to succeed",
        || async {
            Api::<ConfigMap>::namespaced(as_reader.clone(), n)
                .list(&ListParams::default())
                .await
                .ok()
        },
    )
    .await;
    let forbidden = Api::<Secret>::namespaced(as_reader.clone(), n)
        .list(&ListParams::default())
        .await
        .expect_err("listing secrets must be forbidden");
    match forbidden {
        kube::Error::Api(status) => assert_eq!(status.code, 403, "{status:?}"),
        other => panic!("expected 403, got {other:?}"),
    }
}

/// The admin kubeconfig's server and CA, without its client certificate.
async fn client_config() -> kube::Config {
    let kubeconfig = kube::config::Kubeconfig::read_from(&cluster().kubeconfig).unwrap();
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    config.auth_info = Default::default();
    config
}
