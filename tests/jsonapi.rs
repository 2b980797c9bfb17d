//! The JSON:API over real HTTP on loopback: the operator binary as its own
//! process, credentials and data on the real control plane, tokens from the
//! real token endpoint.

use std::time::Duration;

use catalio_operator::crd::{ApiCredential, Phase};
use catalio_test_support::cut::CuttableApiServer;
use catalio_test_support::jsonapi::{Reply, page_of};
use catalio_test_support::{
    OperatorProcess, TestNamespace, access_token, cluster, credential_secret, eventually, metrics,
    sample,
};
use kube::{Api, Client};
use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const OPERATOR: &str = env!("CARGO_BIN_EXE_catalio-operator");
const WAIT: Duration = Duration::from_secs(30);
const MEDIA: &str = "application/vnd.api+json";

/// One operator serving the namespaces ("organizations") of one test.
struct Harness {
    orgs: Vec<TestNamespace>,
    client: Client,
    operator: OperatorProcess,
    base: String,
    admin: String,
    http: reqwest::Client,
}

impl Harness {
    async fn start(prefix: &str, orgs: usize, extra: &[&str]) -> Self {
        Self::start_via(prefix, orgs, extra, &cluster().kubeconfig).await
    }

    /// As [`Harness::start`], the operator reaching the API server with
    /// `kubeconfig`.
    async fn start_via(
        prefix: &str,
        orgs: usize,
        extra: &[&str],
        kubeconfig: &std::path::Path,
    ) -> Self {
        let client = cluster().client().await;
        let mut namespaces = Vec::new();
        for _ in 0..orgs {
            namespaces.push(TestNamespace::new(&client, prefix).await);
        }
        let watch = namespaces
            .iter()
            .map(|n| n.name.as_str())
            .collect::<Vec<_>>()
            .join(",");
        let mut args = vec![
            "--namespace",
            &namespaces[0].name,
            "--watch-namespaces",
            &watch,
            "--token-url",
            "{base}/oauth/token",
            "--lease-duration",
            "3s",
        ];
        args.extend_from_slice(extra);
        let (mut operator, endpoints) = OperatorProcess::run_serving(OPERATOR, kubeconfig, &args);
        operator.wait_ready(&endpoints, WAIT).await;
        Harness {
            orgs: namespaces,
            client,
            operator,
            base: endpoints.base,
            admin: endpoints.admin,
            http: reqwest::Client::new(),
        }
    }

    fn org(&self, i: usize) -> &str {
        &self.orgs[i].name
    }

    fn apply(&self, org: usize, yaml: &str) {
        let out = cluster().kubectl_stdin(&["-n", self.org(org), "apply", "-f", "-"], Some(yaml));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn kubectl_json(&self, org: usize, args: &[&str]) -> Value {
        let mut all = vec!["-n", self.org(org)];
        all.extend_from_slice(args);
        all.extend_from_slice(&["-o", "json"]);
        serde_json::from_str(&cluster().kubectl_ok(&all)).unwrap()
    }

    /// A credential with `scopes` in organization `org`, and an access token
    /// for it.
    async fn token(&self, org: usize, name: &str, scopes: &[&str]) -> String {
        let (id, secret) = self.credential(org, name, scopes).await;
        self.token_for(&id, &secret).await
    }

    async fn credential(&self, org: usize, name: &str, scopes: &[&str]) -> (String, String) {
        let scopes = scopes
            .iter()
            .map(|s| format!("\"{s}\""))
            .collect::<Vec<_>>()
            .join(", ");
        self.apply(
            org,
            &format!(
                "apiVersion: catalio.ai/v1\nkind: ApiCredential\nmetadata: {{name: {name}}}\n\
                 spec: {{displayName: {name}, scopes: [{scopes}]}}\n"
            ),
        );
        let creds = Api::<ApiCredential>::namespaced(self.client.clone(), self.org(org));
        eventually(WAIT, "credential to be Active", || async {
            let c = creds.get(name).await.ok()?;
            (c.status?.phase == Some(Phase::Active)).then_some(())
        })
        .await;
        self.secret(org, name).await
    }

    async fn secret(&self, org: usize, name: &str) -> (String, String) {
        credential_secret(&self.client, self.org(org), name).await
    }

    async fn token_for(&self, id: &str, secret: &str) -> String {
        access_token(&self.base, id, secret, WAIT).await
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("accept", MEDIA);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.header("content-type", MEDIA).body(body.to_string());
        }
        self.send(request).await
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Reply {
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}"))
        };
        Reply {
            status,
            headers,
            body,
        }
    }

    /// PATCH with `If-Match: etag`.
    async fn patch_if_match(&self, token: &str, path: &str, etag: &str, doc: Value) -> Reply {
        self.send(
            self.http
                .patch(format!("{}{path}", self.base))
                .bearer_auth(token)
                .header("content-type", MEDIA)
                .header("if-match", etag)
                .body(doc.to_string()),
        )
        .await
    }

    /// One request written byte for byte on a fresh connection; the
    /// status code.
    async fn raw(&self, method: &str, path: &str, token: &str, body: &str) -> String {
        let mut conn = tokio::net::TcpStream::connect(self.base.trim_start_matches("http://"))
            .await
            .unwrap();
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {token}\r\n\
             Accept: {MEDIA}\r\nContent-Type: {MEDIA}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        conn.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        conn.read_to_string(&mut response).await.unwrap();
        response.split(' ').nth(1).unwrap_or_default().to_owned()
    }

    async fn get(&self, token: &str, path: &str) -> Reply {
        self.call(Method::GET, path, Some(token), None).await
    }

    /// Waits until a collection request answers exactly `ids` (in order).
    async fn wait_for(&self, token: &str, path: &str, ids: &[&str]) {
        eventually(WAIT, &format!("{path} to list {ids:?}"), || async {
            let r = self.get(token, path).await;
            (r.status == 200 && r.ids() == ids).then_some(())
        })
        .await;
    }
}

/// What to POST for each type, in an order where relationships point at
/// objects created before.
fn create_documents(
    created: &std::collections::HashMap<&str, String>,
) -> Vec<(&'static str, &'static str, Value)> {
    let link =
        |t: &str| json!({"data": {"type": t, "id": created.get(t).cloned().unwrap_or_default()}});
    vec![
        (
            "persona",
            "personas",
            json!({"attributes": {"name": "Analyst", "role": "Data analyst"}}),
        ),
        ("team", "teams", json!({"attributes": {"name": "Core"}})),
        (
            "component",
            "components",
            json!({"attributes": {"name": "Export service"}}),
        ),
        (
            "capability",
            "capabilities",
            json!({"attributes": {"name": "Reporting"}}),
        ),
        (
            "process",
            "processes",
            json!({"attributes": {"name": "Release", "steps": ["build", "ship"]}}),
        ),
        (
            "policy",
            "policies",
            json!({"attributes": {"name": "Retention", "framework": "GDPR"}}),
        ),
        (
            "requirement",
            "requirements",
            json!({
                "attributes": {"title": "Export to CSV", "as_a": "analyst", "priority": "high", "tags": ["export"]},
                "relationships": {
                    "persona": link("persona"),
                    "team": link("team"),
                    "components": {"data": [{"type": "component", "id": created.get("component").cloned().unwrap_or_default()}]}
                }
            }),
        ),
        (
            "use_case",
            "use_cases",
            json!({"attributes": {"title": "Monthly report", "acceptance_criteria": ["has totals"]},
                   "relationships": {"requirement": link("requirement")}}),
        ),
        (
            "test_case",
            "test_cases",
            json!({"attributes": {"title": "Totals add up", "steps": ["export", "sum"]},
                   "relationships": {"use_case": link("use_case")}}),
        ),
        (
            "test_result",
            "test_results",
            json!({"attributes": {"outcome": "passed", "executed_at": "2026-11-30T10:00:00Z"},
                   "relationships": {"test_case": link("test_case")}}),
        ),
    ]
}

#[tokio::test]
async fn every_type_is_created_read_updated_and_archived_and_kubectl_sees_the_same_objects() {
    let h = Harness::start("api-crud", 1, &[]).await;
    let token = h.token(0, "writer", &["*:write"]).await;
    let mut created: std::collections::HashMap<&str, String> = Default::default();
    for step in 0..10 {
        let (ty, endpoint, mut doc) = create_documents(&created).remove(step);
        doc["type"] = ty.into();
        let r = h
            .call(
                Method::POST,
                &format!("/api/v1/{endpoint}"),
                Some(&token),
                Some(json!({"data": doc})),
            )
            .await;
        assert_eq!(r.status, 201, "{ty}: {}", r.body);
        let id = r.body["data"]["id"].as_str().unwrap().to_owned();
        assert_eq!(id.len(), 36, "{ty} id {id} is a UUID");
        assert_eq!(
            r.headers["location"].to_str().unwrap(),
            format!("/api/v1/{endpoint}/{id}")
        );
        assert_eq!(
            r.body["data"]["links"]["self"],
            format!("/api/v1/{endpoint}/{id}")
        );
        assert_eq!(r.body["data"]["attributes"]["archived"], false);
        for (name, value) in doc["attributes"].as_object().unwrap() {
            assert_eq!(&r.body["data"]["attributes"][name], value, "{ty}.{name}");
        }
        // kubectl sees the object the API created, fields in camelCase.
        let kind = catalio_operator::crd::registry::by_name(ty).unwrap().plural;
        let object = h.kubectl_json(0, &["get", kind, &id]);
        assert_eq!(object["metadata"]["name"], id.as_str());
        // Read back from this replica's index at once.
        let r = h.get(&token, &format!("/api/v1/{endpoint}/{id}")).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body["data"]["type"], ty);
        created.insert(ty, id);
    }
    let req = created["requirement"].clone();
    let object = h.kubectl_json(0, &["get", "requirement", &req]);
    assert_eq!(object["spec"]["asA"], "analyst");
    assert_eq!(object["spec"]["persona"], created["persona"].as_str());
    assert_eq!(object["spec"]["components"], json!([created["component"]]));
    assert_eq!(object["spec"]["status"], "draft", "the server's default");
    let tr = h.kubectl_json(0, &["get", "testresult", &created["test_result"]]);
    assert_eq!(tr["spec"]["executedAt"], "2026-11-30T10:00:00Z");

    // Inverse relationships are computed: the persona lists the requirement
    // when included, the requirement its use case.
    let r = h
        .get(
            &token,
            &format!(
                "/api/v1/personas/{}?include=requirements",
                created["persona"]
            ),
        )
        .await;
    assert_eq!(
        r.body["data"]["relationships"]["requirements"]["data"],
        json!([{"type": "requirement", "id": req}])
    );
    assert_eq!(
        r.body["data"]["relationships"]["requirements"]["meta"]["count"],
        1
    );
    let r = h.get(&token, &format!("/api/v1/requirements/{req}")).await;
    assert_eq!(
        r.body["data"]["relationships"]["use_cases"]["meta"]["count"],
        1
    );
    let etag = r.headers["etag"].to_str().unwrap().to_owned();

    // PATCH changes only the given members: an attribute, a removed
    // optional attribute, a new to-one relationship, an emptied to-many.
    let second = h
        .call(
            Method::POST,
            "/api/v1/personas",
            Some(&token),
            Some(json!({"data": {"type": "persona", "attributes": {"name": "Manager"}}})),
        )
        .await
        .body["data"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let patch = json!({"data": {"type": "requirement", "id": req,
        "attributes": {"status": "active", "as_a": null},
        "relationships": {"persona": {"data": {"type": "persona", "id": second}}, "components": {"data": []}}}});
    let r = h
        .patch_if_match(&token, &format!("/api/v1/requirements/{req}"), &etag, patch)
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let attrs = &r.body["data"]["attributes"];
    assert_eq!(attrs["status"], "active");
    assert_eq!(attrs["as_a"], Value::Null);
    assert_eq!(attrs["title"], "Export to CSV", "untouched");
    assert_eq!(
        r.body["data"]["relationships"]["persona"]["data"]["id"],
        second.as_str()
    );
    assert_eq!(
        r.body["data"]["relationships"]["components"]["data"],
        json!([])
    );
    assert_ne!(r.headers["etag"].to_str().unwrap(), etag);
    let object = h.kubectl_json(0, &["get", "requirement", &req]);
    assert_eq!(object["spec"]["status"], "active");
    assert!(object["spec"].get("asA").is_none() && object["spec"].get("components").is_none());
    let r = h
        .get(
            &token,
            &format!(
                "/api/v1/personas/{}?include=requirements",
                created["persona"]
            ),
        )
        .await;
    assert_eq!(
        r.body["data"]["relationships"]["requirements"]["data"],
        json!([])
    );

    // The ETag read before that write is stale now.
    let r = h
        .patch_if_match(
            &token,
            &format!("/api/v1/requirements/{req}"),
            &etag,
            json!({"data": {"type": "requirement", "id": req, "attributes": {"title": "lost"}}}),
        )
        .await;
    assert_eq!(r.error().0, 412);
    assert_eq!(
        h.kubectl_json(0, &["get", "requirement", &req])["spec"]["title"],
        "Export to CSV"
    );

    // DELETE archives every type: gone from collections, kept for
    // filter[archived]=true, still readable by id, and kubectl shows it.
    for (ty, id) in &created {
        let endpoint = catalio_operator::crd::registry::by_name(ty)
            .unwrap()
            .endpoint;
        let r = h
            .call(
                Method::DELETE,
                &format!("/api/v1/{endpoint}/{id}"),
                Some(&token),
                None,
            )
            .await;
        assert_eq!(r.status, 204, "{ty}: {}", r.body);
        let live = h.get(&token, &format!("/api/v1/{endpoint}")).await;
        assert!(!live.ids().contains(id), "{ty} archived but listed");
        let archived = h
            .get(&token, &format!("/api/v1/{endpoint}?filter[archived]=true"))
            .await;
        assert_eq!(archived.ids(), std::slice::from_ref(id), "{ty}");
        let one = h.get(&token, &format!("/api/v1/{endpoint}/{id}")).await;
        assert_eq!(one.body["data"]["attributes"]["archived"], true);
        let plural = catalio_operator::crd::registry::by_name(ty).unwrap().plural;
        assert_eq!(
            h.kubectl_json(0, &["get", plural, id])["spec"]["archived"],
            true,
            "{ty}"
        );
    }
    // Archived objects drop out of inverse relationships too.
    let r = h
        .get(
            &token,
            &format!("/api/v1/requirements/{req}?include=use_cases"),
        )
        .await;
    assert_eq!(
        r.body["data"]["relationships"]["use_cases"]["data"],
        json!([])
    );

    // Objects made with kubectl appear in the API through the watch.
    h.apply(
        0,
        "apiVersion: catalio.ai/v1\nkind: Team\nmetadata: {name: platform}\nspec: {name: Platform, description: Runs the clusters}\n",
    );
    h.wait_for(&token, "/api/v1/teams", &["platform"]).await;
    let r = h.get(&token, "/api/v1/teams/platform").await;
    assert_eq!(
        r.body["data"]["attributes"]["description"],
        "Runs the clusters"
    );
    // ... and deleting them with kubectl removes them.
    cluster().kubectl_ok(&["-n", h.org(0), "delete", "team", "platform"]);
    h.wait_for(&token, "/api/v1/teams", &[]).await;
    assert_eq!(h.get(&token, "/api/v1/teams/platform").await.error().0, 404);

    // Writes are logged with who made them; the token never is.
    let logs = h.operator.logs();
    let client = claims_of(&token)["sub"].as_str().unwrap().to_owned();
    for action in ["created", "updated", "archived"] {
        let line = logs
            .lines()
            .find(|l| l.contains(&format!("{action} through the JSON:API")) && l.contains(&req))
            .unwrap_or_else(|| panic!("no {action} line for {req} in\n{logs}"));
        assert!(line.contains(&client), "{line}");
    }
    assert!(!logs.contains(&token));
}

const DATASET: &str = include_str!("data/dataset.yaml");

#[tokio::test]
async fn one_organization_can_neither_read_nor_change_another() {
    let h = Harness::start("api-tenant", 2, &[]).await;
    let (a, b) = (
        h.token(0, "a-writer", &["*:write"]).await,
        h.token(1, "b-writer", &["*:write"]).await,
    );
    // The same names in both organizations, so only the namespace tells
    // them apart.
    h.apply(0, DATASET);
    h.apply(1, DATASET);
    let types = catalio_operator::crd::registry::TYPES;
    let b_ids = |endpoint: &str| match endpoint {
        "personas" => "dev",
        "components" => "api",
        "requirements" => "r1",
        "use_cases" => "u1",
        "test_cases" => "t1",
        "test_results" => "x1",
        _ => "none",
    };
    // Every type has objects only B has.
    let only_b =
        "apiVersion: catalio.ai/v1\nkind: {KIND}\nmetadata: {name: only-b}\nspec: {FIELDS}\n";
    for ty in types {
        let fields = match ty.name {
            "requirement" | "use_case" | "test_case" => "{title: B}",
            "test_result" => "{outcome: failed}",
            _ => "{name: B}",
        };
        h.apply(
            1,
            &only_b
                .replace("{KIND}", ty.kind)
                .replace("{FIELDS}", fields),
        );
    }
    h.wait_for(&b, "/api/v1/test_results?sort=id", &["only-b", "x1"])
        .await;
    h.wait_for(&a, "/api/v1/test_results", &["x1"]).await;
    for ty in types {
        let list = format!("/api/v1/{}", ty.endpoint);
        h.wait_for(&b, &format!("{list}?filter[id]=only-b"), &["only-b"])
            .await;
        // Collections, searches and filters never show B's objects.
        for query in [
            "",
            "?filter[search]=b",
            "?filter[id]=only-b",
            "?filter[archived]=true",
        ] {
            let r = h.get(&a, &format!("{list}{query}")).await;
            assert_eq!(r.status, 200);
            assert!(!r.ids().contains(&"only-b".to_owned()), "{list}{query}");
        }
        let item = format!("{list}/only-b");
        assert_eq!(
            h.get(&a, &item).await.error(),
            (404, "not_found".into(), Value::Null)
        );
        let patch =
            json!({"data": {"type": ty.name, "id": "only-b", "attributes": {"archived": true}}});
        let r = h.call(Method::PATCH, &item, Some(&a), Some(patch)).await;
        assert_eq!(r.error().0, 404, "{item}");
        let r = h.call(Method::DELETE, &item, Some(&a), None).await;
        assert_eq!(r.error().0, 404, "{item}");
        // Shared names resolve to A's own object, never B's.
        let shared = b_ids(ty.endpoint);
        if shared != "none" {
            let r = h
                .call(Method::DELETE, &format!("{list}/{shared}"), Some(&a), None)
                .await;
            assert_eq!(r.status, 204);
        }
    }
    // A cannot point a relationship at B's objects.
    let r = h
        .call(
            Method::POST,
            "/api/v1/requirements",
            Some(&a),
            Some(
                json!({"data": {"type": "requirement", "attributes": {"title": "x"},
                "relationships": {"persona": {"data": {"type": "persona", "id": "only-b"}}}}}),
            ),
        )
        .await;
    let (status, code, source) = r.error();
    assert_eq!((status, code.as_str()), (404, "related_not_found"));
    assert_eq!(
        source,
        json!({"pointer": "/data/relationships/persona/data"})
    );
    // B's objects are untouched: none archived, none changed.
    for ty in types {
        let objects = h.kubectl_json(1, &["get", ty.plural, "--show-managed-fields"]);
        for o in objects["items"].as_array().unwrap() {
            let name = o["metadata"]["name"].as_str().unwrap();
            let archived = o["spec"]["archived"].as_bool().unwrap_or(false);
            assert_eq!(archived, name == "r7", "{} {name} in B", ty.name);
            assert!(
                o["metadata"]["managedFields"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|m| m["manager"] != "catalio-operator-api"),
                "the API wrote to B's {} {name}",
                ty.name
            );
        }
    }
    // ... while A's shared names were archived.
    let r = h
        .get(&a, "/api/v1/requirements?filter[archived]=true&sort=id")
        .await;
    assert_eq!(r.ids(), ["r1", "r7"]);
}

/// Scopes that allow a write let it reach the API server; the ones that do
/// not change nothing there. (Every scope decision, reads and includes
/// too, is checked in process: src/server/jsonapi/tests.rs.)
#[tokio::test]
async fn scopes_limit_types_and_writes() {
    let h = Harness::start("api-scope", 1, &[]).await;
    h.apply(0, DATASET);
    let read_all = h.token(0, "read-all", &["*:read"]).await;
    let req_write = h.token(0, "req-write", &["requirement:write"]).await;
    h.wait_for(&read_all, "/api/v1/personas?sort=id", &["dev", "pm"])
        .await;
    h.wait_for(&read_all, "/api/v1/requirements?filter[id]=r1", &["r1"])
        .await;
    let create = json!({"data": {"type": "requirement", "attributes": {"title": "x"}}});
    let patch = json!({"data": {"type": "requirement", "id": "r1", "attributes": {"title": "y"}}});
    // (token, method, path, body, expected status)
    let cases: Vec<(&str, Method, &str, Option<Value>, u16)> = vec![
        (
            &read_all,
            Method::PATCH,
            "/api/v1/requirements/r1",
            Some(
                json!({"data": {"type": "requirement", "id": "r1", "attributes": {"title": "z"}}}),
            ),
            403,
        ),
        (
            &read_all,
            Method::DELETE,
            "/api/v1/requirements/r1",
            None,
            403,
        ),
        (
            &req_write,
            Method::DELETE,
            "/api/v1/personas/dev",
            None,
            403,
        ),
        (
            &req_write,
            Method::PATCH,
            "/api/v1/requirements/r1",
            Some(patch),
            200,
        ),
        (
            &req_write,
            Method::POST,
            "/api/v1/requirements",
            Some(create),
            201,
        ),
    ];
    for (token, method, path, body, expected) in cases {
        let r = h.call(method.clone(), path, Some(token), body).await;
        assert_eq!(r.status, expected, "{method} {path}: {}", r.body);
    }
    // The forbidden writes changed nothing.
    let r1 = h.kubectl_json(0, &["get", "requirement", "r1"]);
    assert_eq!(r1["spec"]["title"], "y");
    assert_eq!(r1["spec"]["archived"], false);
    assert_eq!(
        h.kubectl_json(0, &["get", "persona", "dev"])["spec"]["archived"],
        false
    );
}

/// What only the real servers can answer: the API server's own schema
/// checks mapped back to attributes, related ids it has and the index may
/// not yet, and a body refused from its declared length before it is sent.
/// (Media types, documents, limits and errors are checked in process:
/// src/server/jsonapi/tests.rs.)
#[tokio::test]
async fn media_types_documents_and_limits() {
    let h = Harness::start("api-media", 1, &[]).await;
    let token = h.token(0, "writer", &["*:write"]).await;
    h.apply(
        0,
        "apiVersion: catalio.ai/v1\nkind: Requirement\nmetadata: {name: r1}\nspec: {title: One}\n",
    );
    h.wait_for(&token, "/api/v1/requirements", &["r1"]).await;
    // 422 from the API server's schema, with a pointer to the attribute.
    let long = "x".repeat(600);
    let r = h
        .call(
            Method::PATCH,
            "/api/v1/requirements/r1",
            Some(&token),
            Some(
                json!({"data": {"type": "requirement", "id": "r1", "attributes": {"title": long}}}),
            ),
        )
        .await;
    let (status, code, source) = r.error();
    assert_eq!((status, code.as_str()), (422, "invalid_attribute"));
    assert_eq!(source, json!({"pointer": "/data/attributes/title"}));
    assert!(
        r.body["errors"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("512"),
        "{}",
        r.body
    );
    // 404 for a related id that does not exist.
    let r = h
        .call(Method::POST, "/api/v1/use_cases", Some(&token),
              Some(json!({"data": {"type": "use_case", "attributes": {"title": "x"},
                  "relationships": {"requirement": {"data": {"type": "requirement", "id": "nope"}}}}})))
        .await;
    assert_eq!(
        r.error(),
        (
            404,
            "related_not_found".into(),
            json!({"pointer": "/data/relationships/requirement/data"})
        )
    );
    // 413 past the body limit, answered without reading the body.
    let mut conn = tokio::net::TcpStream::connect(h.base.trim_start_matches("http://"))
        .await
        .unwrap();
    let head = format!(
        "POST /api/v1/requirements HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: {MEDIA}\r\nContent-Length: 8388608\r\n\r\n{{"
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    let mut status_line = [0u8; 12];
    tokio::time::timeout(WAIT, conn.read_exact(&mut status_line))
        .await
        .expect("answered without the body")
        .unwrap();
    assert_eq!(&status_line, b"HTTP/1.1 413");
    // Nothing above changed r1, nor created anything.
    assert_eq!(
        h.kubectl_json(0, &["get", "requirement", "r1"])["spec"]["title"],
        "One"
    );
    assert_eq!(
        h.kubectl_json(0, &["get", "requirements"])["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

fn claims_of(token: &str) -> Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// Tokens of a revoked credential, or of a secret rotated away, stop at
/// once, and no token reaches the logs. (Forged, expired and malformed
/// tokens are checked in process: src/server/jsonapi/tests.rs.)
#[tokio::test]
async fn every_bad_token_is_401_in_the_seed_format() {
    let h = Harness::start("api-auth", 1, &[]).await;
    h.apply(0, DATASET);
    let good = h.token(0, "good", &["*:read"]).await;
    h.wait_for(&good, "/api/v1/personas?sort=id", &["dev", "pm"])
        .await;
    let expect_401 = |what: &str, r: &Reply| {
        assert_eq!(r.status, 401, "{what}: {}", r.body);
        let e = &r.body["errors"][0];
        assert_eq!(e["status"], "401", "{what}");
        assert_eq!(e["title"], "Unauthorized", "{what}");
        assert_eq!(e["detail"], "Invalid or expired token", "{what}");
        assert_eq!(r.body["errors"].as_array().unwrap().len(), 1);
        let challenge = r.headers["www-authenticate"].to_str().unwrap();
        assert!(
            challenge.starts_with("Bearer realm=\"catalio\""),
            "{what}: {challenge}"
        );
    };
    // A revoked credential's tokens stop at once.
    let doomed = h.token(0, "doomed", &["*:read"]).await;
    assert_eq!(h.get(&doomed, "/api/v1/personas").await.status, 200);
    cluster().kubectl_ok(&[
        "-n",
        h.org(0),
        "patch",
        "apicred",
        "doomed",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"revoked":true}}"#,
    ]);
    eventually(WAIT, "the revoked token to be refused", || async {
        (h.get(&doomed, "/api/v1/personas").await.status == 401).then_some(())
    })
    .await;
    expect_401("revoked", &h.get(&doomed, "/api/v1/personas").await);

    // Rotating the secret away ends tokens issued under the old counter;
    // tokens of the new secret work.
    let (id, old_secret) = h.credential(0, "rotating", &["*:read"]).await;
    let old = h.token_for(&id, &old_secret).await;
    assert_eq!(claims_of(&old)["rot"], 0);
    assert_eq!(h.get(&old, "/api/v1/personas").await.status, 200);
    cluster().kubectl_ok(&[
        "-n",
        h.org(0),
        "patch",
        "apicred",
        "rotating",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"rotation":{"counter":1}}}"#,
    ]);
    let new_secret = eventually(WAIT, "the rotated secret", || async {
        let (_, s) = h.secret(0, "rotating").await;
        (s != old_secret).then_some(s)
    })
    .await;
    eventually(WAIT, "the old token to be refused", || async {
        (h.get(&old, "/api/v1/personas").await.status == 401).then_some(())
    })
    .await;
    expect_401("rotated away", &h.get(&old, "/api/v1/personas").await);
    let new = h.token_for(&id, &new_secret).await;
    assert_eq!(claims_of(&new)["rot"], 1);
    assert_eq!(h.get(&new, "/api/v1/personas").await.status, 200);
    // The good token was never affected.
    assert_eq!(h.get(&good, "/api/v1/personas").await.status, 200);
    let logs = h.operator.logs();
    for secret in [&good, &doomed, &old, &new] {
        assert!(!logs.contains(secret.as_str()), "a token reached the logs");
    }
    let metrics = metrics(&h.admin).await;
    // Revoked and rotated-away tokens count as the credential no longer
    // working.
    assert!(
        metrics.contains("catalio_api_auth_failures_total{reason=\"inactive\"}"),
        "no inactive in metrics"
    );
}

#[tokio::test]
async fn garbage_gets_errors_never_a_crash() {
    let h = Harness::start("api-fuzz", 1, &["--api-rate-limit", "0"]).await;
    let token = h.token(0, "fuzz", &["*:write"]).await;
    h.apply(
        0,
        "apiVersion: catalio.ai/v1\nkind: Persona\nmetadata: {name: p1}\nspec: {name: One}\n---\n\
         apiVersion: catalio.ai/v1\nkind: Requirement\nmetadata: {name: r1}\nspec: {title: One, persona: p1}\n",
    );
    h.wait_for(&token, "/api/v1/requirements", &["r1"]).await;
    h.wait_for(&token, "/api/v1/personas", &["p1"]).await;
    // Collections: a type's own, a to-many relationship's, an inverse's.
    let collections = [
        "/api/v1/requirements",
        "/api/v1/requirements/r1/components",
        "/api/v1/personas/p1/requirements",
    ];
    // Garbage never breaks the server: random queries and mangled bodies
    // get 2xx or a 4xx error document, never a 5xx.
    let fragments = [
        "filter[",
        "]",
        "=",
        ",",
        "&",
        "sort",
        "-",
        "page[number]",
        "page[size]",
        "page[offset]",
        "%5B",
        "%5D",
        "%ZZ",
        "%00",
        "include",
        ".",
        "fields[requirement]",
        "fields[",
        "title",
        "persona",
        "use_cases",
        "r1",
        "999999999999999999999",
        "-1",
        "é",
        "archived",
        "search",
        "status",
        "true",
        "[]",
        "..",
        "filter[id]",
        "page[limit]",
    ];
    let valid = json!({"data": {"type": "requirement", "id": "r1", "attributes": {"title": "x", "tags": ["a"]},
        "relationships": {"persona": {"data": null}}}})
    .to_string()
    .into_bytes();
    let linkage =
        json!({"data": [{"type": "persona", "id": "p1"}, {"type": "component", "id": "c1"}]})
            .to_string()
            .into_bytes();
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n as u64) as usize
    };
    for round in 0..150 {
        let query: String = (0..1 + next(8))
            .map(|_| fragments[next(fragments.len())])
            .collect();
        let collection = collections[round % collections.len()];
        let r = h.get(&token, &format!("{collection}?{query}")).await;
        assert!(
            r.status == 200 || r.status == 400,
            "GET {collection}?{query}: {} {}",
            r.status,
            r.body
        );
        if r.status == 400 {
            r.error();
        }
        // Mangled resource documents, and mangled linkage for the
        // relationship endpoints' writes.
        let (method, path, mut body) = match round % 4 {
            0 => (
                Method::POST,
                "/api/v1/requirements/r1/relationships/components",
                linkage.clone(),
            ),
            1 => (
                Method::PATCH,
                "/api/v1/requirements/r1/relationships/persona",
                linkage.clone(),
            ),
            _ => (Method::PATCH, "/api/v1/requirements/r1", valid.clone()),
        };
        match round % 3 {
            0 => body.truncate(next(body.len())),
            1 => {
                for _ in 0..1 + next(4) {
                    let i = next(body.len());
                    body[i] = b"{}[]\",:0a\\"[next(10)];
                }
            }
            _ => body.insert(next(body.len()), 0xff),
        }
        let r = h
            .send(
                h.http
                    .request(method.clone(), format!("{}{path}", h.base))
                    .bearer_auth(&token)
                    .header("content-type", MEDIA)
                    .body(body.clone()),
            )
            .await;
        assert!(
            r.status < 500,
            "{method} {path} {}: {} {}",
            String::from_utf8_lossy(&body),
            r.status,
            r.body
        );
    }

    // Ids that cannot be object names never reach the API server as such:
    // 404 on every route, never a 5xx. (Every kind of malformed id on every
    // route is checked in process.) Sent byte for byte: an HTTP client
    // library would turn `%2E%2E` into `..` and remove it.
    for (method, path, body) in [
        (
            "PATCH",
            "/api/v1/requirements/%2E%2E",
            r#"{"data":{"type":"requirement","id":"%2E%2E"}}"#,
        ),
        ("DELETE", "/api/v1/requirements/%2E%2E", ""),
        (
            "POST",
            "/api/v1/requirements/%2E%2E/relationships/components",
            r#"{"data":[]}"#,
        ),
        (
            "PATCH",
            "/api/v1/requirements/%2E%2E/relationships/persona",
            r#"{"data":null}"#,
        ),
    ] {
        let status = h.raw(method, path, &token, body).await;
        assert_eq!(status, "404", "{method} {path}");
    }

    // Still serving, and r1 holds only values the schema allows.
    let r = h.get(&token, "/api/v1/requirements/r1").await;
    assert_eq!(r.status, 200);
    assert!(r.body["data"]["attributes"]["title"].is_string());
}

const LINKED: &str = r#"
apiVersion: catalio.ai/v1
kind: Persona
metadata: {name: dev}
spec: {name: Developer}
---
apiVersion: catalio.ai/v1
kind: Persona
metadata: {name: ops}
spec: {name: Operator}
---
apiVersion: catalio.ai/v1
kind: Component
metadata: {name: c1}
spec: {name: One}
---
apiVersion: catalio.ai/v1
kind: Component
metadata: {name: c2}
spec: {name: Two}
---
apiVersion: catalio.ai/v1
kind: Component
metadata: {name: c3}
spec: {name: Three}
---
apiVersion: catalio.ai/v1
kind: Requirement
metadata: {name: r1}
spec: {title: A, persona: dev, priority: high, components: [c1, c2]}
---
apiVersion: catalio.ai/v1
kind: Requirement
metadata: {name: r2}
spec: {title: B, persona: dev, priority: low}
---
apiVersion: catalio.ai/v1
kind: Requirement
metadata: {name: r3}
spec: {title: C}
---
apiVersion: catalio.ai/v1
kind: Requirement
metadata: {name: r4}
spec: {title: D, persona: dev, archived: true}
"#;

#[tokio::test]
async fn relationship_endpoints_read_and_change_linkage() {
    let h = Harness::start("api-rel", 2, &[]).await;
    let reader = h.token(0, "reader", &["*:read"]).await;
    let writer = h.token(0, "writer", &["*:write"]).await;
    let only_requirements = h.token(0, "narrow", &["requirement:write"]).await;
    let other = h.token(1, "other", &["*:write"]).await;
    h.apply(0, LINKED);
    h.apply(
        1,
        "apiVersion: catalio.ai/v1\nkind: Persona\nmetadata: {name: dev}\nspec: {name: Theirs}\n---\n\
         apiVersion: catalio.ai/v1\nkind: Requirement\nmetadata: {name: rx}\nspec: {title: X, persona: dev}\n",
    );
    h.wait_for(&reader, "/api/v1/requirements?sort=id", &["r1", "r2", "r3"])
        .await;
    h.wait_for(&reader, "/api/v1/components?sort=id", &["c1", "c2", "c3"])
        .await;
    h.wait_for(&other, "/api/v1/requirements", &["rx"]).await;

    // Related resources: to-one, empty to-one, to-many, inverse.
    let r = h.get(&reader, "/api/v1/requirements/r1/persona").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        (&r.body["data"]["type"], &r.body["data"]["id"]),
        (&json!("persona"), &json!("dev"))
    );
    assert_eq!(r.body["data"]["attributes"]["name"], "Developer");
    assert_eq!(r.body["links"]["self"], "/api/v1/requirements/r1/persona");
    let r = h.get(&reader, "/api/v1/requirements/r3/persona").await;
    assert_eq!(
        (r.status, &r.body["data"]),
        (200, &Value::Null),
        "{}",
        r.body
    );
    let r = h
        .get(&reader, "/api/v1/requirements/r1/components?sort=-id")
        .await;
    assert_eq!(r.ids(), ["c2", "c1"]);
    assert_eq!(r.body["meta"]["total"], 2);
    // The inverse is the live requirements pointing here, with the full
    // query language and links that stay on this path.
    let r = h
        .get(&reader, "/api/v1/personas/dev/requirements?sort=-priority")
        .await;
    assert_eq!(r.ids(), ["r1", "r2"], "{}", r.body);
    let r = h
        .get(
            &reader,
            "/api/v1/personas/dev/requirements?sort=-priority&page[size]=1&include=persona&fields[requirement]=title",
        )
        .await;
    assert_eq!(r.ids(), ["r1"]);
    assert_eq!(r.body["meta"]["total"], 2);
    assert_eq!(r.body["included"][0]["id"], "dev");
    assert_eq!(
        r.body["data"][0]["attributes"],
        json!({"title": "A"}),
        "fields[requirement] applies"
    );
    let next = r.body["links"]["next"].as_str().unwrap();
    assert!(
        next.starts_with("/api/v1/personas/dev/requirements?"),
        "{next}"
    );
    assert_eq!(
        page_of(&r.body["links"]["next"], "page[number]"),
        Some("2".into())
    );
    assert_eq!(h.get(&reader, next).await.ids(), ["r2"]);
    assert_eq!(
        h.get(
            &reader,
            "/api/v1/personas/dev/requirements?filter[archived]=true"
        )
        .await
        .ids(),
        ["r4"]
    );
    // Inverse relationships, which carry no linkage unless included, link
    // to both endpoints.
    let r = h.get(&reader, "/api/v1/personas/dev").await;
    assert_eq!(
        r.body["data"]["relationships"]["requirements"]["links"],
        json!({"self": "/api/v1/personas/dev/relationships/requirements",
               "related": "/api/v1/personas/dev/requirements"})
    );

    // Linkage, with the owner's ETag for forward relationships.
    let r = h
        .get(&reader, "/api/v1/requirements/r1/relationships/components")
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.body["data"],
        json!([{"type": "component", "id": "c1"}, {"type": "component", "id": "c2"}])
    );
    assert_eq!(
        r.body["links"]["related"],
        "/api/v1/requirements/r1/components"
    );
    let etag = r.headers["etag"].to_str().unwrap().to_owned();
    let r = h
        .get(&reader, "/api/v1/personas/dev/relationships/requirements")
        .await;
    let mut linked: Vec<&str> = r.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["id"].as_str().unwrap())
        .collect();
    linked.sort_unstable();
    assert_eq!(linked, ["r1", "r2"], "archived r4 is left out");

    // Writes: to-one set and clear, to-many replace, add and remove; each
    // answer is the linkage as stored, and kubectl sees it.
    let write = |method: Method, path: &'static str, data: Value| {
        let h = &h;
        let writer = &writer;
        async move {
            h.call(method, path, Some(writer), Some(json!({"data": data})))
                .await
        }
    };
    let spec = |name: &str| h.kubectl_json(0, &["get", "requirement", name])["spec"].clone();
    let r = write(
        Method::PATCH,
        "/api/v1/requirements/r3/relationships/persona",
        json!({"type": "persona", "id": "ops"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["data"], json!({"type": "persona", "id": "ops"}));
    assert_eq!(spec("r3")["persona"], "ops");
    let r = write(
        Method::PATCH,
        "/api/v1/requirements/r3/relationships/persona",
        Value::Null,
    )
    .await;
    assert_eq!((r.status, &r.body["data"]), (200, &Value::Null));
    assert!(spec("r3").get("persona").is_none());
    let c = |id: &str| json!({"type": "component", "id": id});
    let r = write(
        Method::POST,
        "/api/v1/requirements/r1/relationships/components",
        json!([c("c3"), c("c1")]),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["data"], json!([c("c1"), c("c2"), c("c3")]));
    assert_eq!(spec("r1")["components"], json!(["c1", "c2", "c3"]));
    let r = write(
        Method::DELETE,
        "/api/v1/requirements/r1/relationships/components",
        json!([c("c1"), c("gone")]),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(spec("r1")["components"], json!(["c2", "c3"]));
    let r = write(
        Method::PATCH,
        "/api/v1/requirements/r1/relationships/components",
        json!([c("c1")]),
    )
    .await;
    assert_eq!(r.body["data"], json!([c("c1")]));
    assert_eq!(spec("r1")["components"], json!(["c1"]));
    // The ETag read before these writes is stale now.
    let r = h
        .patch_if_match(
            &writer,
            "/api/v1/requirements/r1/relationships/components",
            &etag,
            json!({"data": []}),
        )
        .await;
    assert_eq!(r.error().1, "precondition_failed");
    assert_eq!(spec("r1")["components"], json!(["c1"]));

    // Errors: unknown related id, wrong type, wrong shape, a method the
    // relationship does not take, a computed relationship, unknown names.
    let r = write(
        Method::POST,
        "/api/v1/requirements/r1/relationships/components",
        json!([c("c2"), c("c9")]),
    )
    .await;
    assert_eq!(
        r.error(),
        (
            404,
            "related_not_found".into(),
            json!({"pointer": "/data/1"})
        )
    );
    let r = write(
        Method::PATCH,
        "/api/v1/requirements/r1/relationships/persona",
        json!({"type": "team", "id": "dev"}),
    )
    .await;
    assert_eq!(
        r.error(),
        (
            422,
            "invalid_attribute".into(),
            json!({"pointer": "/data/type"})
        )
    );
    let r = write(
        Method::PATCH,
        "/api/v1/requirements/r1/relationships/persona",
        json!([{"type": "persona", "id": "dev"}]),
    )
    .await;
    assert_eq!(
        r.error(),
        (422, "invalid_attribute".into(), json!({"pointer": "/data"}))
    );
    let r = write(
        Method::POST,
        "/api/v1/requirements/r1/relationships/persona",
        json!({"type": "persona", "id": "dev"}),
    )
    .await;
    assert_eq!(r.error().0, 405);
    assert_eq!(r.headers["allow"], "GET, PATCH");
    let r = write(
        Method::PATCH,
        "/api/v1/personas/dev/relationships/requirements",
        json!([]),
    )
    .await;
    assert_eq!(r.error().1, "read_only_relationship");
    assert_eq!(r.status, 403);
    let r = write(
        Method::PATCH,
        "/api/v1/requirements/r1/persona",
        Value::Null,
    )
    .await;
    assert_eq!(r.error().0, 405);
    assert_eq!(r.headers["allow"], "GET");
    assert_eq!(
        h.get(&reader, "/api/v1/requirements/r1/owner")
            .await
            .error()
            .1,
        "not_found"
    );
    assert_eq!(
        h.get(&reader, "/api/v1/requirements/r1/relationships/title")
            .await
            .error()
            .1,
        "not_found"
    );
    assert_eq!(
        h.get(&reader, "/api/v1/requirements/nope/persona")
            .await
            .status,
        404
    );
    let r = h
        .get(
            &reader,
            "/api/v1/requirements/r1/relationships/persona?include=persona",
        )
        .await;
    assert_eq!(
        r.error(),
        (400, "invalid_query".into(), json!({"parameter": "include"}))
    );
    assert_eq!(spec("r1")["persona"], "dev", "no failed write changed r1");

    // Scopes: writes need the owner's write scope; reading related objects
    // needs their read scope, a forward linkage only the owner's.
    let r = h
        .call(
            Method::PATCH,
            "/api/v1/requirements/r1/relationships/persona",
            Some(&reader),
            Some(json!({"data": null})),
        )
        .await;
    assert_eq!(
        (r.status, r.error().1.as_str()),
        (403, "insufficient_scope")
    );
    let r = h
        .get(&only_requirements, "/api/v1/requirements/r1/persona")
        .await;
    assert_eq!(
        (r.status, r.error().1.as_str()),
        (403, "insufficient_scope")
    );
    assert_eq!(
        h.get(
            &only_requirements,
            "/api/v1/requirements/r1/relationships/persona"
        )
        .await
        .status,
        200
    );
    assert_eq!(
        h.get(
            &only_requirements,
            "/api/v1/personas/dev/relationships/requirements"
        )
        .await
        .status,
        403
    );

    // Another organization: its own objects only, and ours are unknown.
    assert_eq!(
        h.get(&other, "/api/v1/personas/dev/requirements")
            .await
            .ids(),
        ["rx"]
    );
    assert_eq!(
        h.get(&other, "/api/v1/requirements/r1/persona")
            .await
            .status,
        404
    );
    let r = h
        .call(
            Method::POST,
            "/api/v1/requirements/r1/relationships/components",
            Some(&other),
            Some(json!({"data": [c("c2")]})),
        )
        .await;
    assert_eq!(r.status, 404, "{}", r.body);
    assert_eq!(spec("r1")["components"], json!(["c1"]));

    // Concurrent additions all land: each re-reads and retries when
    // another write came between.
    let adds = ["c2", "c3"].map(|id| {
        h.call(
            Method::POST,
            "/api/v1/requirements/r2/relationships/components",
            Some(&writer),
            Some(json!({"data": [c(id)]})),
        )
    });
    for r in futures::future::join_all(adds).await {
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let mut components: Vec<String> =
        serde_json::from_value(spec("r2")["components"].clone()).unwrap();
    components.sort();
    assert_eq!(components, ["c2", "c3"]);

    // Metrics name these routes by declaration, never by id.
    let metrics = metrics(&h.admin).await;
    for route in [
        "api:requirements/{id}/persona",
        "api:personas/{id}/requirements",
        "api:requirements/{id}/relationships/components",
    ] {
        assert!(
            metrics.contains(&format!("route=\"{route}\",status=\"200\"")),
            "no {route} in metrics"
        );
    }
    assert!(!metrics.contains("r1/") && !metrics.contains("dev/"));
}

/// A dense graph: every requirement relates to every component.
fn dense_graph(components: usize, requirements: usize) -> String {
    let names = (0..components)
        .map(|c| format!("c{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    let mut yaml = String::new();
    for c in 0..components {
        yaml.push_str(&format!(
            "apiVersion: catalio.ai/v1\nkind: Component\nmetadata: {{name: c{c}}}\n\
             spec: {{name: C{c}}}\n---\n"
        ));
    }
    for r in 0..requirements {
        yaml.push_str(&format!(
            "apiVersion: catalio.ai/v1\nkind: Requirement\nmetadata: {{name: r{r}}}\n\
             spec: {{title: R{r}, components: [{names}]}}\n---\n"
        ));
    }
    yaml
}

#[tokio::test]
async fn include_walks_answer_and_writes_land_while_they_run() {
    let h = Harness::start("walk", 1, &[]).await;
    let token = h.token(0, "reader", &["*:read"]).await;
    let out = cluster().kubectl_stdin(
        &["-n", h.org(0), "create", "-f", "-"],
        Some(&dense_graph(96, 300)),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eventually(WAIT, "the graph to be served", || async {
        let r = h.get(&token, "/api/v1/requirements?page[size]=1").await;
        (r.status == 200 && r.body["meta"]["total"] == 300).then_some(())
    })
    .await;

    // Before includes were bounded, this request walked every path through
    // the graph (billions of steps) holding the index: it never answered,
    // and nothing the watch saw became visible meanwhile.
    let walk = "/api/v1/requirements?page[size]=100&include=components.requirements.components";
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let walkers = (0..2).map(|_| {
        let (http, url, token, stop) = (
            h.http.clone(),
            format!("{}{walk}", h.base),
            token.clone(),
            stop.clone(),
        );
        tokio::spawn(async move {
            let mut answers = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) || answers.is_empty() {
                let response = http
                    .get(&url)
                    .bearer_auth(&token)
                    .header("accept", MEDIA)
                    .timeout(WAIT)
                    .send()
                    .await
                    .expect("the include request answers");
                let status = response.status().as_u16();
                let body: Value = response.json().await.unwrap();
                answers.push((status, body));
            }
            answers
        })
    });
    let walkers: Vec<_> = walkers.collect();

    h.apply(
        0,
        "apiVersion: catalio.ai/v1\nkind: Component\nmetadata: {name: late}\nspec: {name: Late}\n",
    );
    eventually(WAIT, "the new component to be served", || async {
        (h.get(&token, "/api/v1/components/late").await.status == 200).then_some(())
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for walker in walkers {
        for (status, body) in walker.await.unwrap() {
            match status {
                200 => {
                    assert_eq!(body["data"].as_array().unwrap().len(), 100);
                    let included = body["included"].as_array().unwrap();
                    // Every component and every requirement off the page,
                    // each once.
                    assert_eq!(included.len(), 96 + 200);
                    let mut ids: Vec<_> = included
                        .iter()
                        .map(|r| (r["type"].to_string(), r["id"].to_string()))
                        .collect();
                    ids.sort();
                    ids.dedup();
                    assert_eq!(ids.len(), included.len());
                }
                400 => assert_eq!(
                    body["errors"][0]["source"]["parameter"], "include",
                    "{body}"
                ),
                _ => panic!("{status}: {body}"),
            }
        }
    }
}

/// Reads one HTTP/1.1 response with a Content-Length body from a
/// keep-alive connection; its status line.
async fn response(conn: &mut tokio::net::TcpStream) -> String {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        conn.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length: ")
                .map(str::to_owned)
        })
        .unwrap_or_else(|| panic!("no content-length in {head}"))
        .trim()
        .parse()
        .unwrap();
    let mut body = vec![0u8; length];
    conn.read_exact(&mut body).await.unwrap();
    head.lines().next().unwrap().to_owned()
}

/// Everything the server sends until it closes the connection.
async fn until_closed(conn: &mut tokio::net::TcpStream) -> String {
    let mut all = Vec::new();
    let read = tokio::time::timeout(WAIT, conn.read_to_end(&mut all))
        .await
        .expect("the server to close the connection");
    // A reset after a refusal is a close too.
    if let Err(e) = read {
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
    }
    String::from_utf8_lossy(&all).into_owned()
}

/// Clients that send slowly or not at all hold neither memory nor a
/// connection for long, and past the connection cap newcomers wait to be
/// accepted rather than the server running out.
#[tokio::test]
async fn slow_silent_and_crowding_clients_are_bounded() {
    let h = Harness::start(
        "api-slow",
        1,
        &[
            "--max-connections",
            "8",
            "--header-read-timeout",
            "3s",
            "--body-read-timeout",
            "2s",
            "--idle-timeout",
            "3s",
        ],
    )
    .await;
    let token = h.token(0, "writer", &["*:write"]).await;
    let addr = h.base.trim_start_matches("http://").to_owned();
    let connect = || tokio::net::TcpStream::connect(addr.as_str());
    let head = |path: &str, auth: &str, length: usize| {
        format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: {MEDIA}\r\n\
             Content-Length: {length}\r\n\r\n"
        )
    };

    // Without a token, a large body that never comes is not waited for:
    // 401 from the headers (reading it first would answer 408).
    let mut conn = connect().await.unwrap();
    let request = head("/api/v1/requirements", "", 1_000_000) + "{";
    conn.write_all(request.as_bytes()).await.unwrap();
    let answer = until_closed(&mut conn).await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");

    // With one, a body that stalls is given up on: 408, in each API's
    // error format, and nothing is created.
    let auth = format!("Authorization: Bearer {token}\r\n");
    let mut conn = connect().await.unwrap();
    let request = head("/api/v1/requirements", &auth, 100) + "{\"data\":";
    conn.write_all(request.as_bytes()).await.unwrap();
    let answer = until_closed(&mut conn).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"code\":\"body_timeout\""), "{answer}");
    let mut conn = connect().await.unwrap();
    let request = head("/oauth/token", "", 100).replace(MEDIA, "application/x-www-form-urlencoded")
        + "grant_type=";
    conn.write_all(request.as_bytes()).await.unwrap();
    let answer = until_closed(&mut conn).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"error\":\"invalid_request\""), "{answer}");
    assert_eq!(
        h.kubectl_json(0, &["get", "requirements"])["items"],
        json!([])
    );

    // Half a request head, no bytes at all, or an HTTP/2 connection that
    // goes quiet: each is closed, unanswered.
    let mut half = connect().await.unwrap();
    half.write_all(b"GET /api/v1/requirements HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut silent = connect().await.unwrap();
    let mut quiet_h2 = connect().await.unwrap();
    quiet_h2
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    for conn in [&mut half, &mut silent] {
        let answer = until_closed(conn).await;
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
            "{answer}"
        );
    }
    let answer = until_closed(&mut quiet_h2).await;
    assert!(!answer.contains("HTTP/1.1"), "{answer}");

    // The cap. Once every connection above is gone, eight busy keep-alive
    // clients hold all eight slots.
    let open = || async {
        let text = metrics(&h.admin).await;
        assert!(text.contains("catalio_http_open_connections "), "{text}");
        sample(&text, "catalio_http_open_connections ")
    };
    eventually(WAIT, "every connection to close", || async {
        (open().await == 0.0).then_some(())
    })
    .await;
    let jwks = b"GET /.well-known/jwks.json HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut holders = Vec::new();
    for _ in 0..8 {
        let mut conn = connect().await.unwrap();
        conn.write_all(jwks).await.unwrap();
        assert_eq!(response(&mut conn).await, "HTTP/1.1 200 OK");
        holders.push(conn);
    }
    // A ninth connects (the kernel completes it) and asks; the eight ask
    // again and are answered, yet the ninth is still not accepted.
    let mut ninth = connect().await.unwrap();
    ninth.write_all(jwks).await.unwrap();
    for conn in &mut holders {
        conn.write_all(jwks).await.unwrap();
        assert_eq!(response(conn).await, "HTTP/1.1 200 OK");
    }
    assert_eq!(open().await, 8.0);
    // One leaves: the ninth is served.
    drop(holders.pop());
    let answer = tokio::time::timeout(WAIT, response(&mut ninth))
        .await
        .expect("the ninth to be answered once a slot is free");
    assert_eq!(answer, "HTTP/1.1 200 OK");
}

/// One tenant cannot fill every replica through the API: objects and bytes
/// per type are capped per organization, and the refusal names the limit.
#[tokio::test]
async fn quotas_cap_what_one_organization_holds() {
    let h = Harness::start(
        "api-quota",
        2,
        &["--max-objects-per-kind", "3", "--max-bytes-per-kind", "4Ki"],
    )
    .await;
    let token = h.token(0, "writer", &["*:write"]).await;
    let other = h.token(1, "writer", &["*:write"]).await;
    let create = |token: &str, ty: &str, title: &str| {
        let (path, doc) = (
            format!("/api/v1/{ty}s"),
            json!({"data": {"type": ty, "attributes": {"title": title}}}),
        );
        let (h, token) = (&h, token.to_owned());
        async move { h.call(Method::POST, &path, Some(&token), Some(doc)).await }
    };
    for i in 0..3 {
        let r = create(&token, "requirement", &format!("r{i}")).await;
        assert_eq!(r.status, 201, "{}", r.body);
    }
    // Archived objects count: archiving keeps them.
    let first = h.kubectl_json(0, &["get", "requirements"])["items"][0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = h
        .call(
            Method::DELETE,
            &format!("/api/v1/requirements/{first}"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(r.status, 204);
    let r = create(&token, "requirement", "one too many").await;
    let (status, code, _) = r.error();
    assert_eq!((status, code.as_str()), (403, "too_many_objects"));
    let detail = r.body["errors"][0]["detail"].as_str().unwrap();
    assert!(
        detail.contains("holds 3 requirement objects") && detail.contains("3 per type"),
        "{detail}"
    );
    // Per type and per organization: others still write.
    let r = h
        .call(
            Method::POST,
            "/api/v1/personas",
            Some(&token),
            Some(json!({"data": {"type": "persona", "attributes": {"name": "Manager"}}})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(create(&other, "requirement", "elsewhere").await.status, 201);
    // Bytes: a write that could take the type past 4 KiB is refused.
    let second = h.kubectl_json(0, &["get", "requirements"])["items"][1]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = h
        .call(
            Method::PATCH,
            &format!("/api/v1/requirements/{second}"),
            Some(&token),
            Some(json!({"data": {"type": "requirement", "id": second,
                "attributes": {"description": "d".repeat(4096)}}})),
        )
        .await;
    let (status, code, _) = r.error();
    assert_eq!((status, code.as_str()), (403, "too_many_bytes"));
    assert!(
        r.body["errors"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("4096 bytes per type")
    );
    // A small change still lands.
    let r = h
        .call(
            Method::PATCH,
            &format!("/api/v1/requirements/{second}"),
            Some(&token),
            Some(json!({"data": {"type": "requirement", "id": second,
                "attributes": {"description": "short"}}})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    // Nothing refused reached the API server.
    let items = h.kubectl_json(0, &["get", "requirements"])["items"].clone();
    assert_eq!(items.as_array().unwrap().len(), 3);
    assert!(
        items
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["spec"]["description"] != "d".repeat(4096))
    );
}

/// A replica that cannot reach the API server from its start has loaded no
/// credential, key or object: both endpoints say so with 503 and
/// Retry-After, not with a 401 for a good client or a list with objects
/// missing. Once the line is back, it serves.
#[tokio::test]
async fn a_replica_that_has_loaded_nothing_says_so() {
    let (line, kubeconfig) =
        CuttableApiServer::in_front_of(&cluster().kubeconfig, &std::env::temp_dir()).await;
    line.silence();
    let client = cluster().client().await;
    let org = TestNamespace::new(&client, "api-unlisted").await;
    let args = [
        "--namespace",
        &org.name,
        "--watch-namespaces",
        &org.name,
        "--token-url",
        "{base}/oauth/token",
        "--lease-duration",
        "3s",
    ];
    let (mut operator, endpoints) = OperatorProcess::run_serving(OPERATOR, &kubeconfig, &args);
    let http = reqwest::Client::new();
    let token_request = || {
        http.post(format!("{}/oauth/token", endpoints.base))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", "ci_00000000000000000000000000000000"),
                ("client_secret", "catalio_cs_anything"),
            ])
            .send()
    };
    // Listening, and not ready: what a client that reaches it hears.
    let refused = eventually(WAIT, "the public port to answer", || async {
        token_request().await.ok()
    })
    .await;
    assert_eq!(
        operator_status(&http, &endpoints.admin).await,
        503,
        "not ready"
    );
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "1");
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "temporarily_unavailable", "{body}");
    let listed = http
        .get(format!("{}/api/v1/requirements", endpoints.base))
        .header("Accept", MEDIA)
        .bearer_auth("eyJhbGciOiJFUzI1NiJ9.e30.c2ln")
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 503);
    assert_eq!(listed.headers()["retry-after"], "1");
    let body: Value = listed.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "not_ready", "{body}");

    line.restore();
    operator.wait_ready(&endpoints, WAIT).await;
    let answered = token_request().await.unwrap();
    assert_eq!(
        answered.status(),
        401,
        "an unknown client, now that it knows"
    );
}

async fn operator_status(http: &reqwest::Client, admin: &str) -> u16 {
    http.get(format!("{admin}/readyz"))
        .send()
        .await
        .map_or(0, |r| r.status().as_u16())
}

/// An API server that takes a write and never answers (its storage gone,
/// it would answer after a minute; here the line goes silent): the client
/// hears 503 with Retry-After once the operator stops waiting, and reads
/// go on from the caches meanwhile.
///
/// The write goes out on an open connection when the client's pool has one
/// idle, and the operator gives up after `WRITE_TIMEOUT` ("may or may not
/// have been made"); when the controller's own requests hold every open
/// one at that moment, the client opens a new connection, whose handshake
/// the silent line holds until the connect timeout ("unavailable", the
/// write never sent). Which one happens is the client's pool's choice;
/// both are a 503 to retry, with the detail that is true of it (the unit
/// tests in `writes.rs` pin each mapping).
#[tokio::test]
async fn a_write_the_api_server_never_answers_is_a_503_to_retry() {
    let (line, kubeconfig) =
        CuttableApiServer::in_front_of(&cluster().kubeconfig, &std::env::temp_dir()).await;
    let h = Harness::start_via("api-silent", 1, &[], &kubeconfig).await;
    let token = h.token(0, "writer", &["*:write"]).await;
    let write = |title: &str| {
        h.call(
            Method::POST,
            "/api/v1/requirements",
            Some(&token),
            Some(json!({"data": {"type": "requirement", "attributes": {"title": title}}})),
        )
    };
    // A write that works leaves its connection open for the next one.
    assert_eq!(write("Answered").await.status, 201);
    line.silence();
    let asked = std::time::Instant::now();
    let r = write("Unanswered").await;
    let (status, code, _) = r.error();
    assert_eq!((status, code.as_str()), (503, "backend_unavailable"));
    assert_eq!(r.headers["retry-after"], "1");
    let detail = r.body["errors"][0]["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("did not answer in time; the change may or may not have been made")
            || detail == "the data store is unavailable; retry later",
        "{detail}"
    );
    eprintln!(
        "unanswered write refused after {:?}: {detail}",
        asked.elapsed()
    );
    assert_eq!(h.get(&token, "/api/v1/requirements").await.status, 200);
    line.restore();
}

/// The API server goes away and comes back (the operator reaches it through
/// a proxy the test cuts; the control plane itself stays up for kubectl):
/// meanwhile tokens and reads are served from the caches and writes answer
/// 503 with Retry-After; afterwards the watches and the controller catch up
/// with what changed meanwhile, in the same process.
#[tokio::test]
async fn the_api_server_going_away_loses_nothing() {
    let dir = std::env::temp_dir();
    let (api_server, kubeconfig) =
        CuttableApiServer::in_front_of(&cluster().kubeconfig, &dir).await;
    let h = Harness::start_via("api-outage", 1, &[], &kubeconfig).await;
    let token = h.token(0, "writer", &["*:write"]).await;
    let (id, secret) = h.secret(0, "writer").await;
    h.apply(
        0,
        "apiVersion: catalio.ai/v1\nkind: Requirement\nmetadata: {name: before}\nspec: {title: Before}\n",
    );
    h.wait_for(&token, "/api/v1/requirements", &["before"])
        .await;
    let pid = h.operator.pid();

    api_server.cut();
    let cut = std::time::Instant::now();
    // Served from the caches.
    assert!(!h.token_for(&id, &secret).await.is_empty());
    assert_eq!(
        h.get(&token, "/api/v1/requirements/before").await.status,
        200
    );
    // A write cannot be, and says when to retry.
    let r = h
        .call(
            Method::POST,
            "/api/v1/requirements",
            Some(&token),
            Some(json!({"data": {"type": "requirement", "attributes": {"title": "During"}}})),
        )
        .await;
    let (status, code, _) = r.error();
    assert_eq!((status, code.as_str()), (503, "backend_unavailable"));
    assert_eq!(r.headers["retry-after"], "1");
    // Meanwhile others write straight to the API server: a credential, and
    // more requirement changes than a resumed watch may be able to replay.
    let mut many = String::from(
        "apiVersion: catalio.ai/v1\nkind: ApiCredential\nmetadata: {name: late}\nspec: {displayName: Late}\n",
    );
    for i in 0..200 {
        many.push_str(&format!(
            "---\napiVersion: catalio.ai/v1\nkind: Requirement\nmetadata: {{name: meanwhile-{i:03}}}\nspec: {{title: Meanwhile {i}}}\n"
        ));
    }
    h.apply(0, &many);
    cluster().kubectl_ok(&["-n", h.org(0), "delete", "requirement", "meanwhile-007"]);
    // Still ready (every replica is cut off alike; unready would take the
    // caches away too), and saying what is degraded.
    let readyz = eventually(WAIT, "/readyz to name the broken watches", || async {
        let r = h
            .http
            .get(format!("{}/readyz", h.admin))
            .send()
            .await
            .ok()?;
        let status = r.status().as_u16();
        let body = r.text().await.ok()?;
        body.contains("degraded").then_some((status, body))
    })
    .await;
    assert_eq!(readyz.0, 200, "{}", readyz.1);
    let outage = cut.elapsed();

    api_server.restore();
    let back = std::time::Instant::now();
    // Exactly what the API server holds: nothing lost, nothing twice.
    let mut expected: Vec<String> = std::iter::once("before".to_owned())
        .chain(
            (0..200)
                .filter(|i| *i != 7)
                .map(|i| format!("meanwhile-{i:03}")),
        )
        .collect();
    expected.sort();
    let listed =
        |page: usize| format!("/api/v1/requirements?sort=id&page[size]=100&page[number]={page}");
    eventually(
        WAIT,
        "the JSON:API to list what the API server holds",
        || async {
            let r = h.get(&token, &listed(1)).await;
            (r.body["meta"]["total"] == expected.len()).then_some(())
        },
    )
    .await;
    let mut ids = Vec::new();
    for page in 1..=3 {
        ids.extend(h.get(&token, &listed(page)).await.ids());
    }
    assert_eq!(ids, expected);
    let reads_caught_up = back.elapsed();
    let secrets = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(h.client.clone(), h.org(0));
    eventually(
        WAIT,
        "the credential created meanwhile to get its Secret",
        || async { secrets.get_opt("late").await.ok()?.map(|_| ()) },
    )
    .await;
    let (late_id, late_secret) = h.secret(0, "late").await;
    assert!(!h.token_for(&late_id, &late_secret).await.is_empty());
    let controller_caught_up = back.elapsed();
    eprintln!(
        "outage {outage:?}; after the API server's return: reads caught up in \
         {reads_caught_up:?}, a credential created meanwhile got a token in {controller_caught_up:?}"
    );
    let whole = std::time::Instant::now() + WAIT;
    loop {
        let r = h
            .http
            .get(format!("{}/readyz", h.admin))
            .send()
            .await
            .unwrap();
        let body = r.text().await.unwrap();
        if !body.contains("degraded") {
            break;
        }
        let logs = h.operator.logs();
        let watches: Vec<&str> = logs.lines().filter(|l| l.contains("watch")).collect();
        assert!(
            std::time::Instant::now() < whole,
            "/readyz still says {body}; {watches:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(h.operator.pid(), pid);
}

/// `GET /api/v1` is the API's table of contents: public, a JSON:API
/// document with every type, and every link in it leads somewhere that
/// answers (collections with a token, the OpenAPI description without).
#[tokio::test]
async fn the_api_overview_lists_every_type_and_its_links_answer() {
    let h = Harness::start("overview", 1, &[]).await;
    let token = h.token(0, "reader", &["*:read"]).await;
    let r = h.call(Method::GET, "/api/v1", None, None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.headers["content-type"], "application/vnd.api+json");
    assert_eq!(r.body["jsonapi"]["version"], "1.1");
    let data = r.body["data"].as_array().unwrap();
    let ids: Vec<&str> = data.iter().map(|t| t["id"].as_str().unwrap()).collect();
    let declared: Vec<&str> = catalio_operator::crd::registry::TYPES
        .iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(ids, declared);
    for t in data {
        assert_eq!(t["type"], "resource_type");
        let link = t["links"]["self"].as_str().unwrap();
        let listed = h.get(&token, link).await;
        assert_eq!(listed.status, 200, "{link}: {}", listed.body);
        assert!(listed.body["data"].is_array(), "{link}");
        assert!(!t["attributes"]["attributes"].as_array().unwrap().is_empty());
        assert!(
            t["attributes"]["examples"]["list"]
                .as_str()
                .unwrap()
                .starts_with("GET /api/v1/")
        );
    }
    let described = h
        .call(
            Method::GET,
            r.body["links"]["describedby"].as_str().unwrap(),
            None,
            None,
        )
        .await;
    assert_eq!(described.status, 200);
    assert_eq!(
        described.body["openapi"].as_str().map(|v| &v[..2]),
        Some("3.")
    );
    assert!(
        r.body["meta"]["authentication"]["token_url"]
            .as_str()
            .unwrap()
            .ends_with("/oauth/token")
    );
    let explorer = h
        .http
        .get(format!(
            "{}{}",
            h.base,
            r.body["links"]["explorer"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(explorer.status(), 200);
    assert_eq!(
        explorer.headers()["content-type"],
        "text/html; charset=utf-8"
    );
    // Only read.
    let post = h
        .call(Method::POST, "/api/v1", Some(&token), Some(json!({})))
        .await;
    assert_eq!(post.status, 405);
}

/// The explorer in a real browser: headless Chromium opens
/// `/api/swaggerui`, authorizes in Swagger UI's dialog with a credential's
/// id and secret (Swagger UI asks our token endpoint), executes
/// `GET /api/v1/requirements` and renders this organization's
/// requirements, and nothing else. No request leaves the server's origin
/// and the page reports no error or CSP violation. The screenshot is kept
/// at `target/test-artifacts/explorer.png`.
#[tokio::test]
async fn the_explorer_authorizes_and_lists_requirements_in_a_real_browser() {
    let h = Harness::start("explorer", 2, &[]).await;
    let token = h.token(0, "writer", &["*:write"]).await;
    let (id, secret) = h.credential(0, "explorer", &["requirement:read"]).await;
    for (org, name) in [(0, "r1"), (0, "r2"), (1, "elsewhere")] {
        h.apply(
            org,
            &format!(
                "apiVersion: catalio.ai/v1\nkind: Requirement\nmetadata: {{name: {name}}}\nspec: {{title: Title of {name}}}\n"
            ),
        );
    }
    h.wait_for(&token, "/api/v1/requirements", &["r1", "r2"])
        .await;
    let artifacts = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let screenshot = artifacts.join("explorer.png");
    let _ = std::fs::remove_file(&screenshot);

    let seen = catalio_test_support::clients::explorer(&h.base, &id, &secret, &screenshot);

    assert_eq!(seen["status"], 200, "{seen}");
    let rendered = Reply {
        status: 200,
        headers: HeaderMap::new(),
        body: seen["body"].clone(),
    };
    assert_eq!(rendered.ids(), ["r1", "r2"], "{seen}");
    assert_eq!(
        seen["body"]["data"][1]["attributes"]["title"],
        "Title of r2"
    );
    assert_eq!(seen["problems"], json!([]), "{seen}");
    let requests = seen["requests"].as_array().unwrap();
    for r in requests {
        let url = r["url"].as_str().unwrap();
        assert!(
            url.starts_with(&format!("{}/", h.base)),
            "left the origin: {r}"
        );
    }
    let made = |method: &str, path: &str| {
        requests.iter().any(|r| {
            r["method"] == method
                && r["status"] == 200
                && r["url"].as_str().unwrap().split('?').next()
                    == Some(&format!("{}{path}", h.base))
        })
    };
    assert!(made("POST", "/oauth/token"), "{seen}");
    assert!(made("GET", "/api/v1/requirements"), "{seen}");
    let png = std::fs::read(&screenshot).unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000);
}
