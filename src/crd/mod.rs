//! Custom resource types and the CRD documents generated from them.
//! `catalio-operator crds` prints [`render_all`]; `crds/` holds its output.

pub mod business;
pub mod credential;
pub mod registry;

pub use credential::{
    ApiCredential, ApiCredentialSpec, ApiCredentialStatus, ClientSecretMode, Phase, RevokedToken,
};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// API group of every kind this operator serves.
pub const GROUP: &str = "catalio.ai";

/// Whether `name` can name an object: a DNS-1123 subdomain, as the API
/// server requires of every object name (at most 253 characters of
/// lowercase letters, digits, `-` and `.`, each dot-separated label starting
/// and ending with a letter or digit).
pub fn is_object_name(name: &str) -> bool {
    let label = |l: &str| {
        let b = l.as_bytes();
        let edge = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
        b.first().is_some_and(edge)
            && b.last().is_some_and(edge)
            && b.iter().all(|c| edge(c) || *c == b'-')
    };
    (1..=253).contains(&name.len()) && name.split('.').all(label)
}

/// Whether `name` can name a namespace: a DNS label (at most 63
/// characters, no dot).
pub fn is_namespace(name: &str) -> bool {
    name.len() <= 63 && !name.contains('.') && is_object_name(name)
}

/// Every CRD, in a stable order: the credentials, then the business kinds
/// as the registry lists them.
pub fn all() -> Vec<CustomResourceDefinition> {
    std::iter::once(ApiCredential::crd())
        .chain(registry::TYPES.iter().map(|t| (t.crd)()))
        .collect()
}

/// One CRD as a YAML document.
pub fn render(crd: &CustomResourceDefinition) -> Result<String, serde_saphyr::ser::Error> {
    serde_saphyr::to_string(crd)
}

/// All CRDs as one multi-document YAML stream.
pub fn render_all() -> Result<String, serde_saphyr::ser::Error> {
    let mut out = String::new();
    for crd in all() {
        out.push_str("---\n");
        out.push_str(&render(&crd)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_names_are_dns_subdomains() {
        for good in ["a", "r1", "req-00001", "a.b-c.d", "0", &"a".repeat(253)] {
            assert!(is_object_name(good), "{good}");
        }
        for bad in [
            "",
            ".",
            "..",
            "%2E%2E",
            "a..b",
            "-a",
            "a-",
            "A",
            "a_b",
            "a/b",
            "a b",
            "é",
            "x%2Fstatus",
            ".a",
            "a.",
            &"a".repeat(254),
        ] {
            assert!(!is_object_name(bad), "{bad}");
        }
    }

    #[test]
    fn crds_directory_matches_the_types() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/crds/catalio-crds.yaml");
        let on_disk = std::fs::read_to_string(path).expect("crds/catalio-crds.yaml");
        assert!(
            on_disk == render_all().unwrap(),
            "crds/ is out of date with the Rust types: run `make crds`"
        );
    }

    #[test]
    fn business_kinds_are_namespaced_catalio_resources() {
        let names: Vec<_> = all()
            .iter()
            .skip(1)
            .map(|crd| {
                assert_eq!(crd.spec.scope, "Namespaced");
                assert_eq!(crd.spec.names.categories, Some(vec!["catalio".to_owned()]));
                let columns = crd.spec.versions[0].additional_printer_columns.as_ref();
                assert!(columns.is_some_and(|c| c.len() >= 2));
                crd.metadata.name.clone().unwrap()
            })
            .collect();
        assert_eq!(
            names,
            [
                "requirements.catalio.ai",
                "personas.catalio.ai",
                "usecases.catalio.ai",
                "testcases.catalio.ai",
                "testresults.catalio.ai",
                "components.catalio.ai",
                "processes.catalio.ai",
                "policies.catalio.ai",
                "capabilities.catalio.ai",
                "teams.catalio.ai",
            ]
        );
    }

    #[test]
    fn crd_names_and_rules() {
        let crd = ApiCredential::crd();
        assert_eq!(
            crd.metadata.name.as_deref(),
            Some("apicredentials.catalio.ai")
        );
        assert_eq!(crd.spec.names.short_names, Some(vec!["apicred".to_owned()]));
        assert_eq!(crd.spec.names.categories, Some(vec!["catalio".to_owned()]));
        let json = serde_json::to_string(&crd).unwrap();
        for message in [
            "revoked credentials cannot be restored",
            "rotation.counter may never decrease",
            "secretName is immutable",
        ] {
            assert!(json.contains(message), "missing rule {message}");
        }
        let columns: Vec<_> = crd.spec.versions[0]
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(
            columns,
            ["Display Name", "Client ID", "Phase", "Last Used", "Age"]
        );
    }
}
