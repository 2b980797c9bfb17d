//! The business resources on a real API server: the schema's required
//! fields, enums and defaults are enforced by the server itself.

use catalio_operator::crd::business::{
    Outcome, Priority, Requirement, RequirementStatus, TestResult,
};
use catalio_test_support::{TestNamespace, cluster};
use kube::Api;

fn create(ns: &str, yaml: &str) -> std::process::Output {
    cluster().kubectl_stdin(&["-n", ns, "create", "-f", "-"], Some(yaml))
}

#[tokio::test]
async fn the_api_server_applies_defaults_and_rejects_invalid_values() {
    let client = cluster().client().await;
    let ns = TestNamespace::new(&client, "resources").await;

    let minimal = create(
        &ns.name,
        "apiVersion: catalio.ai/v1\nkind: Requirement\nmetadata: {name: r1}\nspec: {title: Export to CSV}\n",
    );
    assert!(
        minimal.status.success(),
        "{}",
        String::from_utf8_lossy(&minimal.stderr)
    );
    let r1 = Api::<Requirement>::namespaced(client.clone(), &ns.name)
        .get("r1")
        .await
        .unwrap();
    assert_eq!(r1.spec.status, RequirementStatus::Draft);
    assert_eq!(r1.spec.priority, Priority::Medium);
    assert!(!r1.spec.archived);

    let cases = [
        ("Requirement", "{}", "spec.title: Required value"),
        (
            "Requirement",
            "{title: x, status: bogus}",
            "spec.status: Unsupported value: \"bogus\"",
        ),
        (
            "Requirement",
            "{title: x, priority: urgent}",
            "spec.priority: Unsupported value",
        ),
        ("Requirement", "{title: \"\"}", "spec.title"),
        (
            "Requirement",
            "{title: x, persona: Not_A_Name}",
            "spec.persona",
        ),
        ("TestResult", "{notes: x}", "spec.outcome: Required value"),
        (
            "TestResult",
            "{outcome: maybe}",
            "spec.outcome: Unsupported value",
        ),
        ("Persona", "{role: PM}", "spec.name: Required value"),
        ("Policy", "{name: x, framework: 7}", "spec.framework"),
    ];
    for (i, (kind, spec, message)) in cases.into_iter().enumerate() {
        let out = create(
            &ns.name,
            &format!(
                "apiVersion: catalio.ai/v1\nkind: {kind}\nmetadata: {{name: bad-{i}}}\nspec: {spec}\n"
            ),
        );
        assert!(!out.status.success(), "case {i} was accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(message), "case {i}: {stderr}");
    }

    let ok = create(
        &ns.name,
        "apiVersion: catalio.ai/v1\nkind: TestResult\nmetadata: {name: t1}\nspec: {outcome: passed, executedAt: \"2026-11-30T01:02:03Z\"}\n",
    );
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let t1 = Api::<TestResult>::namespaced(client.clone(), &ns.name)
        .get("t1")
        .await
        .unwrap();
    assert_eq!(t1.spec.outcome, Outcome::Passed);

    // kubectl sees them through the category.
    let listed = cluster().kubectl_ok(&["-n", &ns.name, "get", "catalio", "-o", "name"]);
    assert!(listed.contains("requirement.catalio.ai/r1"), "{listed}");
    assert!(listed.contains("testresult.catalio.ai/t1"), "{listed}");
}
