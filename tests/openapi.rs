//! The OpenAPI document is valid OpenAPI 3.1 by an independent validator
//! (openapi-spec-validator, `make pyclients`), and describes every endpoint.
//! No control plane: the document is generated from the type registry.

use catalio_operator::crd::registry::TYPES;
use serde_json::Value;

#[test]
fn the_openapi_document_is_valid_and_describes_every_endpoint() {
    let doc = catalio_operator::api::openapi::document("http://catalio.test/oauth/token");
    for ty in TYPES {
        assert!(doc["paths"][format!("/api/v1/{}/{{id}}", ty.endpoint)]["patch"].is_object());
    }
    assert!(doc["paths"]["/api/v1"]["get"].is_object());
    let text = doc.to_string();
    let _: Value = serde_json::from_str(&text).unwrap();
    let file = std::env::temp_dir().join(format!("catalio-openapi-{}.json", std::process::id()));
    std::fs::write(&file, &text).unwrap();
    let out = std::process::Command::new(catalio_test_support::python())
        .args([
            "-c",
            "import sys, json; from openapi_spec_validator import validate; \
             validate(json.load(open(sys.argv[1]))); print('valid')",
        ])
        .arg(&file)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&file);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "valid");
}
