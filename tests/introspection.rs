//! What gateways and auditors need, against the real binary and control
//! plane: token introspection (RFC 7662) that says what the JSON:API would
//! decide, through a credential's whole life and through a real resource
//! server library (Authlib's IntrospectTokenValidator in Flask); revoking
//! one token (RFC 7009) at one replica and seeing every replica refuse it;
//! and the audit trail, as JSON lines and as CloudEvents, with no secret
//! or token in any record.

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use catalio_test_support::events::{CloudEvent, Receiver};
use catalio_test_support::{
    Endpoints, OperatorProcess, TestNamespace, access_token, cluster, create_credential,
    eventually, free_port, get_json, list_status, metrics, patch_credential, python, sample,
};
use kube::Client;
use serde_json::{Value, json};

const OPERATOR: &str = env!("CARGO_BIN_EXE_catalio-operator");
const WAIT: Duration = Duration::from_secs(30);
const ISSUER: &str = "https://catalio.ai";

/// Organizations and the operator serving them.
struct Harness {
    orgs: Vec<TestNamespace>,
    client: Client,
    operator: OperatorProcess,
    endpoints: Endpoints,
    http: reqwest::Client,
}

impl Harness {
    /// `run` for `orgs` namespaces (the first holds the keys), with `args`.
    async fn start(prefix: &str, orgs: usize, args: &[&str]) -> Self {
        let client = cluster().client().await;
        let mut namespaces = Vec::new();
        for _ in 0..orgs {
            namespaces.push(TestNamespace::new(&client, prefix).await);
        }
        let watch: Vec<&str> = namespaces.iter().map(|n| n.name.as_str()).collect();
        let watch = watch.join(",");
        let mut all = vec![
            "--namespace",
            &namespaces[0].name,
            "--watch-namespaces",
            &watch,
            "--token-url",
            "{base}/oauth/token",
            "--lease-duration",
            "3s",
            "--shutdown-delay",
            "0s",
        ];
        all.extend_from_slice(args);
        let (mut operator, endpoints) =
            OperatorProcess::run_serving(OPERATOR, &cluster().kubeconfig, &all);
        operator.wait_ready(&endpoints, WAIT).await;
        Self {
            orgs: namespaces,
            client,
            operator,
            endpoints,
            http: reqwest::Client::new(),
        }
    }

    fn org(&self, i: usize) -> &str {
        &self.orgs[i].name
    }

    /// A credential in org `i`; its id and secret once the server knows it.
    async fn credential(&self, i: usize, name: &str, spec: &str) -> (String, String) {
        let (id, secret) = create_credential(&self.client, self.org(i), name, spec).await;
        access_token(&self.endpoints.base, &id, &secret, WAIT).await;
        (id, secret)
    }

    async fn token(&self, id: &str, secret: &str) -> String {
        access_token(&self.endpoints.base, id, secret, WAIT).await
    }

    /// `POST {path}` as client `id` (HTTP Basic), with `token`.
    async fn post(
        &self,
        path: &str,
        (id, secret): (&str, &str),
        token: &str,
        accept: Option<&str>,
    ) -> reqwest::Response {
        let mut request = self
            .http
            .post(format!("{}{path}", self.endpoints.base))
            .basic_auth(id, Some(secret))
            .form(&[("token", token), ("token_type_hint", "access_token")]);
        if let Some(accept) = accept {
            request = request.header("accept", accept);
        }
        request.send().await.expect("POST")
    }

    async fn introspect(&self, caller: (&str, &str), token: &str) -> (u16, Value) {
        let r = self.post("/oauth/introspect", caller, token, None).await;
        let status = r.status().as_u16();
        assert_eq!(
            r.headers()
                .get("cache-control")
                .map(|v| v.to_str().unwrap()),
            Some("no-store")
        );
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Introspected by `caller`: `Some(answer)` when active.
    async fn active(&self, caller: (&str, &str), token: &str) -> Option<Value> {
        let (status, body) = self.introspect(caller, token).await;
        assert_eq!(status, 200, "{body}");
        match body["active"].as_bool() {
            Some(true) => Some(body),
            Some(false) => {
                assert_eq!(body, json!({"active": false}), "inactive says nothing more");
                None
            }
            None => panic!("no active member: {body}"),
        }
    }

    async fn revoke(&self, caller: (&str, &str), token: &str) -> u16 {
        let r = self.post("/oauth/revoke", caller, token, None).await;
        r.status().as_u16()
    }

    async fn list(&self, token: &str) -> u16 {
        list_status(&self.endpoints.base, token).await
    }
}

/// The claims of a JWT, unverified.
fn claims(jwt: &str) -> Value {
    let part = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

/// A ServiceAccount's token from the API server, for `audience`.
async fn service_account_token(client: &Client, namespace: &str, name: &str) -> String {
    use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
    use k8s_openapi::api::core::v1::ServiceAccount;
    use kube::Api;
    use kube::api::PostParams;
    let accounts = Api::<ServiceAccount>::namespaced(client.clone(), namespace);
    let mut sa = ServiceAccount::default();
    sa.metadata.name = Some(name.into());
    let _ = accounts.create(&PostParams::default(), &sa).await;
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: Some(vec![ISSUER.into()]),
            expiration_seconds: Some(600),
            ..Default::default()
        }),
        ..Default::default()
    };
    accounts
        .create_token_request(name, &PostParams::default(), &request)
        .await
        .unwrap()
        .status
        .unwrap()
        .token
        .unwrap()
}

/// Introspection through a credential's life: issued, narrowed, rotated
/// with grace and without, one token revoked, the credential revoked; who
/// may ask, and the signed answer.
#[tokio::test]
async fn introspection_says_what_the_json_api_decides_through_a_credential_life() {
    let h = Harness::start("introspect", 2, &[]).await;
    let gw = h
        .credential(
            0,
            "gateway",
            "  scopes: [\"requirement:read\"]\n  introspection: true\n",
        )
        .await;
    let gw = (gw.0.as_str(), gw.1.as_str());
    let (ci_id, ci_secret) = h.credential(0, "ci", "  scopes: [\"*:write\"]\n").await;
    let nosy = h.credential(0, "nosy", "").await;
    let foreign = h.credential(1, "foreign", "  introspection: true\n").await;

    // Issued: active, with every member RFC 7662 names, and ours.
    let token = h.token(&ci_id, &ci_secret).await;
    let c = claims(&token);
    let answer = h.active(gw, &token).await.expect("an active token");
    for member in ["client_id", "sub", "aud", "iss", "exp", "iat", "nbf", "jti"] {
        assert_eq!(answer[member], c[member], "{member}");
    }
    assert_eq!(answer["scope"], "*:write");
    assert_eq!(answer["token_type"], "Bearer");
    assert_eq!(answer["org"], h.org(0));
    assert_eq!(h.list(&token).await, 200);

    // Who may not: a credential without introspection, another
    // organization's, anything that is not our token; all alike.
    assert_eq!(h.active((&nosy.0, &nosy.1), &token).await, None);
    assert_eq!(h.active((&foreign.0, &foreign.1), &token).await, None);
    for junk in ["", "not-a-token", &format!("{token}x"), "a.b.c"] {
        if junk.is_empty() {
            let (status, body) = h.introspect(gw, junk).await;
            assert_eq!(
                (status, body["error"].as_str()),
                (400, Some("invalid_request"))
            );
        } else {
            assert_eq!(h.active(gw, junk).await, None, "{junk:.20}");
        }
    }
    // A caller that does not authenticate learns nothing about the token.
    let (status, body) = h.introspect((gw.0, "catalio_cs_wrong"), &token).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );

    // RFC 9701: the same answer, signed with our key.
    let r = h
        .post(
            "/oauth/introspect",
            gw,
            &token,
            Some("application/token-introspection+jwt"),
        )
        .await;
    assert_eq!(
        r.headers()["content-type"],
        "application/token-introspection+jwt"
    );
    let jwt = r.text().await.unwrap();
    let header: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(jwt.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(header["typ"], "token-introspection+jwt");
    let jwks: Value = get_json(&format!("{}/.well-known/jwks.json", h.endpoints.base)).await;
    let key = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == header["kid"])
        .expect("the signing key is published");
    let decoding =
        jsonwebtoken::DecodingKey::from_jwk(&serde_json::from_value(key.clone()).unwrap()).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_audience(&[gw.0]);
    validation.set_required_spec_claims(&["iss", "aud"]);
    let signed = jsonwebtoken::decode::<Value>(&jwt, &decoding, &validation).unwrap();
    assert_eq!(signed.claims["iss"], ISSUER);
    assert_eq!(signed.claims["token_introspection"]["jti"], c["jti"]);
    assert_eq!(signed.claims["token_introspection"]["active"], true);
    // And it never passes for an access token.
    assert_eq!(h.list(&jwt).await, 401);

    // Narrowed: the answer narrows with the JSON:API.
    patch_credential(
        h.org(0),
        "ci",
        r#"{"spec":{"scopes":["requirement:read"]}}"#,
    );
    eventually(WAIT, "the narrowed scope", || async {
        let answer = h.active(gw, &token).await?;
        (answer["scope"] == "requirement:read").then_some(())
    })
    .await;

    // Rotated with grace: still active; rotated again without: inactive.
    patch_credential(
        h.org(0),
        "ci",
        r#"{"spec":{"rotation":{"counter":1,"gracePeriod":"1h"}}}"#,
    );
    let (_, second) = eventually(WAIT, "the new secret", || async {
        let (id, s) = catalio_test_support::credential_secret(&h.client, h.org(0), "ci").await;
        (s != ci_secret).then_some((id, s))
    })
    .await;
    let during = h.token(&ci_id, &second).await;
    assert!(
        h.active(gw, &token).await.is_some(),
        "within the grace period"
    );
    patch_credential(
        h.org(0),
        "ci",
        r#"{"spec":{"rotation":{"counter":2,"gracePeriod":"0s"}}}"#,
    );
    eventually(WAIT, "the rotated-away tokens to be inactive", || async {
        let gone = h.active(gw, &token).await.is_none() && h.active(gw, &during).await.is_none();
        gone.then_some(())
    })
    .await;
    assert_eq!(h.list(&token).await, 401);

    // One token revoked: that one alone. Someone else's, or junk: 200,
    // nothing changes.
    let (_, third) = catalio_test_support::credential_secret(&h.client, h.org(0), "ci").await;
    let (kept, revoked) = (h.token(&ci_id, &third).await, h.token(&ci_id, &third).await);
    assert_eq!(h.revoke((&nosy.0, &nosy.1), &revoked).await, 200);
    assert!(
        h.active(gw, &revoked).await.is_some(),
        "another client's revocation"
    );
    assert_eq!(h.revoke((&ci_id, &third), "not-a-token").await, 200);
    assert_eq!(h.revoke((&ci_id, &third), &revoked).await, 200);
    assert_eq!(h.active(gw, &revoked).await, None);
    assert_eq!(h.list(&revoked).await, 401);
    assert!(h.active(gw, &kept).await.is_some());
    assert_eq!(h.list(&kept).await, 200);
    let status =
        kube::Api::<catalio_operator::crd::ApiCredential>::namespaced(h.client.clone(), h.org(0))
            .get("ci")
            .await
            .unwrap()
            .status
            .unwrap();
    assert_eq!(status.revoked_tokens.len(), 1);
    assert_eq!(status.revoked_tokens[0].jti, claims(&revoked)["jti"]);

    // Revoked: everything of the credential is inactive.
    patch_credential(h.org(0), "ci", r#"{"spec":{"revoked":true}}"#);
    eventually(WAIT, "the revoked credential's tokens", || async {
        h.active(gw, &kept).await.is_none().then_some(())
    })
    .await;
}

/// The administrator's introspectors may ask about every organization.
#[tokio::test]
async fn named_service_accounts_introspect_every_organization() {
    let client = cluster().client().await;
    let edge = TestNamespace::new(&client, "edge").await;
    let account = format!("{}/gateway", edge.name);
    let h = Harness::start("introspectors", 2, &["--introspectors", &account]).await;
    let (a_id, a_secret) = h.credential(0, "a", "").await;
    let (b_id, b_secret) = h.credential(1, "b", "").await;
    let gateway = service_account_token(&client, &edge.name, "gateway").await;
    let other = service_account_token(&client, &edge.name, "other").await;
    let ask = |assertion: String, token: String| {
        let http = h.http.clone();
        let url = format!("{}/oauth/introspect", h.endpoints.base);
        async move {
            let r = http
                .post(url)
                .form(&[
                    (
                        "client_assertion_type",
                        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                    ),
                    ("client_assertion", assertion.as_str()),
                    ("token", token.as_str()),
                ])
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    for (id, secret, org) in [(&a_id, &a_secret, h.org(0)), (&b_id, &b_secret, h.org(1))] {
        let token = h.token(id, secret).await;
        let (status, body) = ask(gateway.clone(), token.clone()).await;
        assert_eq!((status, &body["active"]), (200, &json!(true)), "{body}");
        assert_eq!(body["org"], org);
        // Another account of the same namespace is no introspector: it
        // does not authenticate at all.
        let (status, body) = ask(other.clone(), token).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("invalid_client"))
        );
    }
}

/// Authlib's resource-server support (IntrospectTokenValidator in Flask)
/// protects an API with our introspection: valid tokens in, revoked,
/// rotated-away and narrowed-away ones out.
#[tokio::test]
async fn a_resource_server_library_trusts_the_introspection() {
    let h = Harness::start("authlib", 1, &[]).await;
    let (gw_id, gw_secret) = h
        .credential(
            0,
            "gateway",
            "  scopes: [\"requirement:read\"]\n  introspection: true\n",
        )
        .await;
    let (id, secret) = h
        .credential(0, "reader", "  scopes: [\"requirement:read\"]\n")
        .await;
    let port = free_port();
    let server = ResourceServer::start(
        &format!("{}/oauth/introspect", h.endpoints.base),
        &gw_id,
        &gw_secret,
        port,
    )
    .await;
    let call = |token: String| {
        let url = format!("http://127.0.0.1:{port}/requirements");
        async move {
            let r = reqwest::Client::new()
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            (
                r.status().as_u16(),
                r.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let token = h.token(&id, &secret).await;
    let (status, body) = call(token.clone()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["client_id"], id);
    assert_eq!(body["org"], h.org(0));
    // Revoked: refused by the library from then on.
    assert_eq!(h.revoke((&id, &secret), &token).await, 200);
    assert_eq!(call(token).await.0, 401);
    // Narrowed below what the API needs: 403 (insufficient scope).
    let token = h.token(&id, &secret).await;
    patch_credential(
        h.org(0),
        "reader",
        r#"{"spec":{"scopes":["persona:read"]}}"#,
    );
    eventually(WAIT, "the narrowed token to be refused", || async {
        (call(token.clone()).await.0 == 403).then_some(())
    })
    .await;
    drop(server);
}

/// The Flask resource server of `tests/clients/resource_server.py`.
struct ResourceServer(Child);

impl ResourceServer {
    async fn start(url: &str, id: &str, secret: &str, port: u16) -> Self {
        let child = Command::new(python())
            .arg(format!(
                "{}/tests/clients/resource_server.py",
                catalio_test_support::REPO
            ))
            .args([url, id, secret, &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the resource server");
        let server = Self(child);
        eventually(WAIT, "the resource server to listen", || async {
            reqwest::get(format!("http://127.0.0.1:{port}/requirements"))
                .await
                .ok()
                .map(|_| ())
        })
        .await;
        server
    }
}

impl Drop for ResourceServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Three replicas: a token revoked at one is refused by the two others
/// within moments (measured and printed), by a replica started afterwards,
/// and by introspection.
#[tokio::test]
async fn a_token_revoked_at_one_replica_is_refused_by_every_replica() {
    let h = Harness::start("revoke-ha", 1, &[]).await;
    let (id, secret) = h.credential(0, "ci", "").await;
    let serve = || {
        let ns = h.org(0).to_owned();
        async move {
            let args = [
                "--namespace",
                &ns,
                "--watch-namespaces",
                &ns,
                "--shutdown-delay",
                "0s",
            ];
            let (mut replica, endpoints) =
                OperatorProcess::run_serving_mode(OPERATOR, &cluster().kubeconfig, "server", &args);
            replica.wait_ready(&endpoints, WAIT).await;
            (replica, endpoints)
        }
    };
    let (_b, b) = serve().await;
    let (_c, c) = serve().await;
    let token = h.token(&id, &secret).await;
    for replica in [&h.endpoints, &b, &c] {
        eventually(WAIT, "every replica to take the token", || async {
            (list_status(&replica.base, &token).await == 200).then_some(())
        })
        .await;
    }
    let revoked_at = Instant::now();
    assert_eq!(h.revoke((&id, &secret), &token).await, 200);
    assert_eq!(h.list(&token).await, 401, "the replica that revoked it");
    for (name, replica) in [("second", &b), ("third", &c)] {
        loop {
            if list_status(&replica.base, &token).await == 401 {
                break;
            }
            assert!(
                revoked_at.elapsed() < WAIT,
                "the {name} replica still takes it"
            );
        }
        eprintln!(
            "the {name} replica refused the revoked token {:?} after the revocation",
            revoked_at.elapsed()
        );
    }
    // A replica started afterwards lists the credential with it.
    let (_d, d) = serve().await;
    assert_eq!(list_status(&d.base, &token).await, 401);
    let (gw_id, gw_secret) = h.credential(0, "gateway", "  introspection: true\n").await;
    assert_eq!(h.active((&gw_id, &gw_secret), &token).await, None);
    // Other tokens of the credential work on.
    let other = h.token(&id, &secret).await;
    assert_eq!(list_status(&d.base, &other).await, 200);
}

/// Every security event is one JSON line and one CloudEvent, and none
/// holds a client secret or a token.
#[tokio::test]
async fn the_audit_trail_records_every_event_and_no_secret() {
    let receiver = Receiver::start();
    let log = std::env::temp_dir().join(format!("catalio-audit-{}.jsonl", free_port()));
    let log_arg = log.display().to_string();
    let h = Harness::start(
        "audit",
        1,
        &["--audit-log", &log_arg, "--audit-webhook", &receiver.url],
    )
    .await;
    let (id, secret) = h.credential(0, "ci", "").await;
    let (gw_id, gw_secret) = h.credential(0, "gateway", "  introspection: true\n").await;
    let token = h
        .http
        .post(format!("{}/oauth/token", h.endpoints.base))
        .header("user-agent", "audit-test/1")
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", id.as_str()),
            ("client_secret", secret.as_str()),
        ])
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let refused = h
        .http
        .post(format!("{}/oauth/token", h.endpoints.base))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", id.as_str()),
            ("client_secret", "catalio_cs_a-guess"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    assert!(h.active((&gw_id, &gw_secret), &token).await.is_some());
    assert_eq!(h.revoke((&id, &secret), &token).await, 200);
    patch_credential(h.org(0), "ci", r#"{"spec":{"rotation":{"counter":1}}}"#);
    patch_credential(h.org(0), "ci", r#"{"spec":{"revoked":true}}"#);

    let lines = |path: &std::path::Path| -> Vec<Value> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("every line is JSON"))
            .collect()
    };
    let jti = claims(&token)["jti"].as_str().unwrap().to_owned();
    let has = |records: &[Value], kind: &str, check: &dyn Fn(&Value) -> bool| {
        records.iter().any(|r| r["audit"] == kind && check(r))
    };
    let expected = |records: &[Value]| {
        has(records, "token_issued", &|r| {
            r["jti"] == jti.as_str()
                && r["client_id"] == id.as_str()
                && r["credential"] == "ci"
                && r["org"] == h.org(0)
                && r["method"] == "client_secret_post"
                && r["source"] == "127.0.0.1"
                && r["user_agent"] == "audit-test/1"
                && r["lifetime"] == 86_400
                && r["sid"].is_string()
                && r["scope"] == "*:read"
        }) && has(records, "refused", &|r| {
            r["endpoint"] == "token"
                && r["reason"] == "invalid_client"
                && r["client_id"] == id.as_str()
        }) && has(records, "introspection", &|r| {
            r["caller"] == gw_id.as_str() && r["active"] == true && r["jti"] == jti.as_str()
        }) && has(records, "revocation", &|r| {
            r["caller"] == id.as_str() && r["revoked"] == true && r["jti"] == jti.as_str()
        }) && ["Created", "Rotated", "Revoked"].iter().all(|change| {
            has(records, "credential", &|r| {
                r["change"] == *change && r["credential"] == "ci" && r["client_id"] == id.as_str()
            })
        }) && records.iter().all(|r| r["time"].is_string())
    };
    let records = eventually(WAIT, "every event in the audit log", || async {
        let records = lines(&log);
        expected(&records).then_some(records)
    })
    .await;
    // The webhook got the same records, as CloudEvents.
    let events = eventually(WAIT, "every event at the webhook", || async {
        let events = receiver.events();
        let data: Vec<Value> = events.iter().map(|e| e.data.clone()).collect();
        expected(&data).then_some(events)
    })
    .await;
    // One event per request, in HTTP binary mode.
    for request in receiver.received() {
        let media = request.headers.get("content-type").map(String::as_str);
        assert_eq!(media, Some("application/json"));
    }
    events.iter().for_each(assert_attributes);
    // No secret, no token anywhere: in the log, at the webhook.
    let text = std::fs::read_to_string(&log).unwrap();
    let sent: String = events.iter().map(|e| e.data.to_string()).collect();
    for (what, needle) in [
        ("the client secret", secret.as_str()),
        ("the token", token.as_str()),
        ("the gateway's secret", gw_secret.as_str()),
    ] {
        assert!(!text.contains(needle), "{what} in the audit log");
        assert!(!sent.contains(needle), "{what} at the webhook");
    }
    // Nor any token's signature or payload.
    for part in token.split('.').skip(1) {
        assert!(!text.contains(part));
    }
    eprintln!(
        "{} records in the log, {} at the webhook",
        records.len(),
        events.len()
    );
    let _ = std::fs::remove_file(&log);
}

/// An audit record's CloudEvent has every required attribute, named after
/// the record it carries.
fn assert_attributes(event: &CloudEvent) {
    let attribute = |name: &str| event.attributes.get(name).map(String::as_str);
    assert_eq!(attribute("specversion"), Some("1.0"));
    assert_eq!(
        attribute("type"),
        Some(format!("ai.catalio.audit.{}", event.data["audit"].as_str().unwrap()).as_str())
    );
    assert!(attribute("id").is_some_and(|id| id.len() == 32));
    assert!(attribute("source").is_some_and(|s| s.starts_with("/catalio-operator/")));
    assert_eq!(attribute("time"), event.data["time"].as_str());
    assert!(attribute("time").is_some_and(|t| t.parse::<jiff::Timestamp>().is_ok()));
}

/// The `jti` of every token a webhook got a `token_issued` record of.
fn issued_jtis(events: &[CloudEvent]) -> BTreeSet<String> {
    events
        .iter()
        .filter(|e| e.data["audit"] == "token_issued")
        .filter_map(|e| e.data["jti"].as_str().map(str::to_owned))
        .collect()
}

/// `count` tokens for the credential, by their `jti`.
async fn issue(h: &Harness, (id, secret): (&str, &str), count: usize) -> BTreeSet<String> {
    let mut jtis = BTreeSet::new();
    for _ in 0..count {
        let token = h.token(id, secret).await;
        jtis.insert(claims(&token)["jti"].as_str().unwrap().to_owned());
    }
    jtis
}

/// A replica that is stopped while records wait for the webhook (it holds
/// every request) delivers them before it exits, rather than take them
/// with it.
#[tokio::test]
async fn audit_records_queued_for_the_webhook_outlive_a_sigterm() {
    let receiver = Receiver::closed();
    let mut h = Harness::start(
        "auditexit",
        1,
        &[
            "--audit-log",
            "off",
            "--audit-webhook",
            &receiver.url,
            "--token-rate-limit",
            "0",
        ],
    )
    .await;
    let (id, secret) = h.credential(0, "ci", "").await;
    // More than the four senders hold at the webhook: the rest are queued.
    let jtis = issue(&h, (&id, &secret), 20).await;
    assert!(
        issued_jtis(&receiver.events()).is_empty(),
        "the webhook held every request"
    );
    h.operator.signal_term();
    eventually(
        WAIT,
        "the replica to wait for the webhook at exit",
        || async {
            h.operator
                .logs()
                .contains("delivering the audit records queued for the webhook before exit")
                .then_some(())
        },
    )
    .await;
    receiver.open();
    let status = tokio::task::spawn_blocking(move || {
        let status = h.operator.wait_exit(WAIT);
        (status, h)
    });
    let (status, h) = status.await.unwrap();
    let status = status.expect("the operator exits after SIGTERM");
    assert!(status.success(), "exit status {status}");
    let delivered = issued_jtis(&receiver.events());
    assert!(
        jtis.is_subset(&delivered),
        "{} of {} tokens' records reached the webhook:\n{}",
        jtis.intersection(&delivered).count(),
        jtis.len(),
        h.operator.logs()
    );
    assert!(!h.operator.logs().contains("did not reach the webhook"));
}

/// With `--audit-webhook-batch`, the records queued go in one request, as
/// CloudEvents in batched mode, each with every attribute binary mode has.
#[tokio::test]
async fn a_batching_webhook_gets_every_record_in_fewer_requests() {
    let receiver = Receiver::closed();
    let h = Harness::start(
        "auditbatch",
        1,
        &[
            "--audit-log",
            "off",
            "--audit-webhook",
            &receiver.url,
            "--audit-webhook-batch",
            "50",
            "--token-rate-limit",
            "0",
        ],
    )
    .await;
    let (id, secret) = h.credential(0, "ci", "").await;
    // Issued while the webhook holds the senders' requests: the records
    // queue up behind them.
    let jtis = issue(&h, (&id, &secret), 120).await;
    receiver.open();
    let events = eventually(WAIT, "every token's record at the webhook", || async {
        let events = receiver.events();
        jtis.is_subset(&issued_jtis(&events)).then_some(events)
    })
    .await;
    let requests = receiver.received();
    assert!(requests.iter().all(|r| {
        r.headers.get("content-type").map(String::as_str)
            == Some("application/cloudevents-batch+json")
    }));
    // At most four requests were held: the rest of the records (120 and
    // more) went at most 50 to a request.
    assert!(
        requests.len() < events.len()
            && requests
                .iter()
                .any(|r| r.body.as_array().unwrap().len() > 1),
        "{} requests for {} events",
        requests.len(),
        events.len()
    );
    assert!(
        requests
            .iter()
            .all(|r| r.body.as_array().unwrap().len() <= 50)
    );
    eprintln!("{} requests for {} events", requests.len(), events.len());
    events.iter().for_each(assert_attributes);
    for event in &events {
        let media = event.attributes.get("datacontenttype").map(String::as_str);
        assert_eq!(media, Some("application/json"));
    }
    // Every record counted as delivered (once, though a request held past
    // the sender's timeout reaches the webhook again), none dropped.
    let ids: BTreeSet<&str> = events.iter().map(|e| e.attributes["id"].as_str()).collect();
    let text = eventually(WAIT, "every record counted as delivered", || async {
        let text = metrics(&h.endpoints.admin).await;
        let delivered = sample(
            &text,
            r#"catalio_audit_records_total{sink="webhook",result="delivered"}"#,
        );
        (delivered >= ids.len() as f64).then_some(text)
    })
    .await;
    assert_eq!(
        sample(
            &text,
            r#"catalio_audit_records_total{sink="webhook",result="dropped"}"#
        ),
        0.0
    );
}
