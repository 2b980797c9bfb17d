//! Secretless workloads: a credential names ServiceAccounts, and a pod's
//! ServiceAccount token, presented at the token endpoint as an RFC 7523
//! client assertion, gets an access token. Every token here comes from the
//! real API server (TokenRequest), or is signed with its service-account key
//! where TokenRequest cannot make one (expired); the operator checks them
//! with the real TokenReview API.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use catalio_operator::crd::{ApiCredential, Phase};
use catalio_test_support::{
    OperatorProcess, TestNamespace, cluster, eventually, metrics, patch_credential, sample,
};
use futures::StreamExt;
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Pod, Secret, ServiceAccount};
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};

const OPERATOR: &str = env!("CARGO_BIN_EXE_catalio-operator");
const WAIT: Duration = Duration::from_secs(30);
/// The operator's issuer: what a ServiceAccount token's audience must be.
const ISSUER: &str = "https://catalio.ai";
const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

struct Harness {
    orgs: [TestNamespace; 2],
    client: Client,
    _operator: OperatorProcess,
    base: String,
    admin: String,
    http: reqwest::Client,
}

impl Harness {
    async fn start(prefix: &str) -> Self {
        let client = cluster().client().await;
        let orgs = [
            TestNamespace::new(&client, prefix).await,
            TestNamespace::new(&client, prefix).await,
        ];
        let watch = format!("{},{}", orgs[0].name, orgs[1].name);
        let args = [
            "--namespace",
            &orgs[0].name,
            "--watch-namespaces",
            &watch,
            "--token-url",
            "{base}/oauth/token",
        ];
        let (mut operator, endpoints) =
            OperatorProcess::run_serving(OPERATOR, &cluster().kubeconfig, &args);
        operator.wait_ready(&endpoints, WAIT).await;
        Self {
            orgs,
            client,
            _operator: operator,
            base: endpoints.base,
            admin: endpoints.admin,
            http: reqwest::Client::new(),
        }
    }

    fn org(&self, i: usize) -> &str {
        &self.orgs[i].name
    }

    async fn service_account(&self, org: usize, name: &str) -> ServiceAccount {
        let sa = ServiceAccount {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            ..Default::default()
        };
        Api::<ServiceAccount>::namespaced(self.client.clone(), self.org(org))
            .create(&PostParams::default(), &sa)
            .await
            .unwrap()
    }

    /// A token for ServiceAccount `name` from the API server's TokenRequest,
    /// for `audience`, bound to `pod` if given.
    async fn sa_token(&self, org: usize, name: &str, audience: &str, pod: Option<&Pod>) -> String {
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                audiences: Some(vec![audience.into()]),
                expiration_seconds: Some(600),
                bound_object_ref: pod.map(|p| BoundObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    name: p.metadata.name.clone(),
                    uid: p.metadata.uid.clone(),
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        Api::<ServiceAccount>::namespaced(self.client.clone(), self.org(org))
            .create_token_request(name, &PostParams::default(), &request)
            .await
            .unwrap()
            .status
            .unwrap()
            .token
            .unwrap()
    }

    /// A secretless credential in `org` naming `accounts`.
    async fn credential(&self, org: usize, name: &str, accounts: &[&str], extra: &str) {
        let yaml = format!(
            "apiVersion: catalio.ai/v1\nkind: ApiCredential\nmetadata: {{name: {name}}}\n\
             spec:\n  displayName: {name}\n  scopes: [\"requirement:read\"]\n  clientSecret: Disabled\n  \
             serviceAccounts: {accounts:?}\n{extra}"
        );
        let out = cluster().kubectl_stdin(&["-n", self.org(org), "apply", "-f", "-"], Some(&yaml));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let creds = Api::<ApiCredential>::namespaced(self.client.clone(), self.org(org));
        eventually(WAIT, "credential to be Active", || async {
            let c = creds.get(name).await.ok()?;
            (c.status?.phase == Some(Phase::Active)).then_some(())
        })
        .await;
    }

    async fn client_id(&self, org: usize, name: &str) -> String {
        Api::<ApiCredential>::namespaced(self.client.clone(), self.org(org))
            .get(name)
            .await
            .unwrap()
            .status
            .unwrap()
            .client_id
            .unwrap()
    }

    /// `POST /oauth/token` with `assertion` (form body); `extra` fields are
    /// added or replace the standard ones.
    async fn exchange(&self, assertion: &str, extra: &[(&str, &str)]) -> (u16, Value) {
        self.exchange_from(&self.http, assertion, extra).await
    }

    /// As [`Harness::exchange`], from the client `http`.
    async fn exchange_from(
        &self,
        http: &reqwest::Client,
        assertion: &str,
        extra: &[(&str, &str)],
    ) -> (u16, Value) {
        let mut form = vec![
            ("grant_type", "client_credentials"),
            ("client_assertion_type", ASSERTION_TYPE),
            ("client_assertion", assertion),
        ];
        for (key, value) in extra {
            form.retain(|(k, _)| k != key);
            form.push((key, value));
        }
        let r = http
            .post(format!("{}/oauth/token", self.base))
            .form(&form)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    /// Waits until the server's answer to `assertion` has status `want`
    /// (its caches learn of changes through watches).
    async fn until(&self, assertion: &str, want: u16, what: &str) -> Value {
        eventually(WAIT, what, || async {
            let (status, body) = self.exchange(assertion, &[]).await;
            (status == want).then_some(body)
        })
        .await
    }

    async fn list(&self, token: &str) -> u16 {
        catalio_test_support::list_status(&self.base, token).await
    }
}

fn claims(jwt: &str) -> Value {
    let part = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

fn refused(answer: &(u16, Value)) -> bool {
    answer.0 == 401 && answer.1["error"] == "invalid_client"
}

/// A ServiceAccount token as the API server would sign it, with `exp`
/// and the account's uid, signed (RS256, by openssl) with the PEM key at
/// `key`, under the key id the API server gives that key (the SHA-256 of
/// its public key's DER, base64url).
fn signed(key: &std::path::Path, org: &str, sa: &ServiceAccount, iat: i64, exp: i64) -> String {
    use sha2::Digest;
    let public = openssl(&["pkey", "-pubout", "-outform", "DER", "-in"], key, b"");
    let kid = URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(&public));
    let name = sa.metadata.name.as_deref().unwrap();
    let claims = json!({
        "iss": "https://kubernetes.default.svc.cluster.local",
        "sub": format!("system:serviceaccount:{org}:{name}"),
        "aud": [ISSUER],
        "iat": iat, "nbf": iat, "exp": exp,
        "kubernetes.io": {"namespace": org, "serviceaccount": {"name": name, "uid": sa.metadata.uid}},
    });
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(json!({"alg": "RS256", "kid": kid}).to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = openssl(&["dgst", "-sha256", "-sign"], key, input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

/// `openssl ARGS PATH`, with `stdin`; its output.
fn openssl(args: &[&str], path: &std::path::Path, stdin: &[u8]) -> Vec<u8> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("openssl")
        .args(args)
        .arg(path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The right ServiceAccount with our audience gets a token scoped and
/// confined like the credential; every other token the cluster can make
/// for the same workload, or an attacker can make without the cluster's
/// key, is refused as `invalid_client`, and the credential has no Secret.
#[tokio::test]
async fn only_the_named_service_accounts_tokens_for_us_authenticate() {
    let h = Harness::start("assert").await;
    let sync = h.service_account(0, "sync").await;
    h.service_account(0, "other").await;
    h.service_account(1, "sync").await;
    h.credential(0, "robot", &["sync"], "").await;
    let id = h.client_id(0, "robot").await;

    // The right account, our audience: a token for the credential.
    let good = h.sa_token(0, "sync", ISSUER, None).await;
    let body = h.until(&good, 200, "the assertion to be accepted").await;
    let access = body["access_token"].as_str().unwrap();
    let c = claims(access);
    assert_eq!(c["client_id"], id);
    assert_eq!(c["org"], h.org(0));
    assert_eq!(c["scope"], "requirement:read");
    assert_eq!(body["scope"], "requirement:read");
    assert_eq!(h.list(access).await, 200);
    // client_id may be sent; another credential's may not.
    assert_eq!(h.exchange(&good, &[("client_id", &id)]).await.0, 200);
    let wrong_id = "ci_00000000000000000000000000000000";
    assert!(refused(
        &h.exchange(&good, &[("client_id", wrong_id)]).await
    ));
    // Scopes narrow as with a secret.
    let (status, body) = h.exchange(&good, &[("scope", "persona:read")]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_scope"))
    );
    // Secretless: no Secret was ever written.
    let secrets = Api::<Secret>::namespaced(h.client.clone(), h.org(0));
    assert!(secrets.get_opt("robot").await.unwrap().is_none());

    // Another account of the same namespace, the same account name in
    // another namespace, and the right account for another audience.
    let other = h.sa_token(0, "other", ISSUER, None).await;
    let elsewhere = h.sa_token(1, "sync", ISSUER, None).await;
    let for_kubernetes = h
        .sa_token(0, "sync", "https://kubernetes.default.svc", None)
        .await;
    for (what, token) in [
        ("another ServiceAccount", &other),
        ("another namespace", &elsewhere),
        ("another audience", &for_kubernetes),
    ] {
        assert!(refused(&h.exchange(token, &[]).await), "{what}");
    }

    // Forged: the claims of a valid token, signed with a key the cluster
    // does not know. The same claims signed with the cluster's key pass,
    // so only the signature makes the difference.
    let now = jiff::Timestamp::now().as_second();
    let cluster_key = cluster().service_account_key();
    let genuine = signed(&cluster_key, h.org(0), &sync, now - 10, now + 600);
    assert_eq!(h.exchange(&genuine, &[]).await.0, 200);
    let attacker_key = std::env::temp_dir().join(format!("attacker-{}.pem", h.org(0)));
    openssl(
        &["genpkey", "-algorithm", "RSA", "-out"],
        &attacker_key,
        b"",
    );
    let forged = signed(&attacker_key, h.org(0), &sync, now - 10, now + 600);
    std::fs::remove_file(&attacker_key).expect("remove the attacker's key");
    assert!(refused(&h.exchange(&forged, &[]).await), "forged signature");
    // Expired (TokenRequest makes none shorter than 10 minutes; this one
    // is signed with the cluster's own key, an hour past its exp).
    let expired = signed(&cluster_key, h.org(0), &sync, now - 7200, now - 3600);
    assert!(refused(&h.exchange(&expired, &[]).await), "expired");
    // Not a JWT, and one method at a time.
    assert!(refused(&h.exchange("not-a-jwt", &[]).await));
    let (status, body) = h
        .exchange(&good, &[("client_secret", "x"), ("client_id", &id)])
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_request"))
    );
    let (status, _) = h
        .exchange(&good, &[("client_assertion_type", "urn:other")])
        .await;
    assert_eq!(status, 400, "another assertion type");

    // A deleted ServiceAccount's tokens stop (within the review cache's
    // few seconds).
    let sas = Api::<ServiceAccount>::namespaced(h.client.clone(), h.org(0));
    sas.delete("sync", &DeleteParams::default()).await.unwrap();
    h.until(&good, 401, "the deleted account's token to be refused")
        .await;
}

/// A token bound to a pod stops when the pod goes; removing the account
/// from the credential stops the access tokens it got; revoking the
/// credential stops everything.
#[tokio::test]
async fn pod_bound_tokens_account_removal_and_revocation() {
    let h = Harness::start("assert-life").await;
    h.service_account(0, "worker").await;
    h.service_account(0, "batch").await;
    h.credential(0, "jobs", &["worker", "batch"], "").await;
    let pods = Api::<Pod>::namespaced(h.client.clone(), h.org(0));
    // No node runs it: the pod object is what the token is bound to.
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "worker-0"},
        "spec": {"serviceAccountName": "worker", "containers": [{"name": "c", "image": "none"}]}
    }))
    .unwrap();
    let pod = pods.create(&PostParams::default(), &pod).await.unwrap();
    let bound = h.sa_token(0, "worker", ISSUER, Some(&pod)).await;
    assert!(claims(&bound)["kubernetes.io"]["pod"]["name"] == "worker-0");
    h.until(&bound, 200, "the pod-bound token to be accepted")
        .await;
    pods.delete("worker-0", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    h.until(&bound, 401, "the deleted pod's token to be refused")
        .await;

    // batch's access token works until batch is no longer named.
    let batch = h.sa_token(0, "batch", ISSUER, None).await;
    let body = h
        .until(&batch, 200, "batch's assertion to be accepted")
        .await;
    let access = body["access_token"].as_str().unwrap().to_owned();
    assert_eq!(h.list(&access).await, 200);
    patch_credential(
        h.org(0),
        "jobs",
        r#"{"spec":{"serviceAccounts":["worker"]}}"#,
    );
    eventually(WAIT, "batch's access token to stop", || async {
        (h.list(&access).await == 401).then_some(())
    })
    .await;
    assert!(refused(&h.exchange(&batch, &[]).await));

    // Revoked: the remaining account is refused too.
    let worker = h.sa_token(0, "worker", ISSUER, None).await;
    let body = h
        .until(&worker, 200, "worker's assertion to be accepted")
        .await;
    let access = body["access_token"].as_str().unwrap().to_owned();
    patch_credential(h.org(0), "jobs", r#"{"spec":{"revoked":true}}"#);
    h.until(&worker, 401, "the revoked credential to refuse")
        .await;
    assert_eq!(h.list(&access).await, 401);
}

/// `clientSecret: Disabled` without `serviceAccounts` is refused by the
/// API server with the rule's message.
#[test]
fn a_credential_with_neither_secret_nor_accounts_is_refused() {
    let yaml = "apiVersion: catalio.ai/v1\nkind: ApiCredential\nmetadata: {name: nothing, namespace: default}\n\
                spec: {displayName: x, clientSecret: Disabled}\n";
    let out = cluster().kubectl_stdin(&["apply", "--dry-run=server", "-f", "-"], Some(yaml));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("needs serviceAccounts"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Second review, hole 3: an access token got the full lifetime whatever
/// the assertion's `exp`, so it outlived the assertion, the pod and the
/// account; and raising `rotation.counter` did not end it.
#[tokio::test]
async fn access_tokens_end_with_their_assertion_and_with_a_rotation() {
    let h = Harness::start("assert-end").await;
    let short = h.service_account(0, "short").await;
    h.service_account(0, "long").await;
    h.credential(0, "brief", &["short", "long"], "").await;

    // An assertion that ends in 30 s (TokenRequest makes none shorter than
    // 10 minutes: this one is signed with the cluster's own key).
    let now = jiff::Timestamp::now().as_second();
    let exp = now + 30;
    let assertion = signed(
        &cluster().service_account_key(),
        h.org(0),
        &short,
        now - 5,
        exp,
    );
    let body = h
        .until(&assertion, 200, "the assertion to be accepted")
        .await;
    let access = body["access_token"].as_str().unwrap().to_owned();
    assert_eq!(
        claims(&access)["exp"],
        exp,
        "the token outlives its assertion"
    );
    let expires_in = body["expires_in"].as_i64().unwrap();
    assert!(
        expires_in <= exp - now && expires_in > 0,
        "expires_in {expires_in}"
    );
    assert_eq!(h.list(&access).await, 200);
    // The account goes: the assertion gets nothing more, and the token it
    // got ends when the assertion would have (the verifier's leeway is a
    // minute at most).
    Api::<ServiceAccount>::namespaced(h.client.clone(), h.org(0))
        .delete("short", &DeleteParams::default())
        .await
        .unwrap();
    h.until(
        &assertion,
        401,
        "the deleted account's assertion to be refused",
    )
    .await;
    eventually(
        Duration::from_secs(150),
        "the token to end with its assertion",
        || async { (h.list(&access).await == 401).then_some(()) },
    )
    .await;
    assert!(
        jiff::Timestamp::now().as_second() >= exp,
        "refused before its time"
    );

    // A rotation ends assertion tokens at once, as it ends secret tokens;
    // the account's next assertion gets a token that works.
    let long = h.sa_token(0, "long", ISSUER, None).await;
    let body = h
        .until(&long, 200, "the long assertion to be accepted")
        .await;
    let before = body["access_token"].as_str().unwrap().to_owned();
    assert_eq!(h.list(&before).await, 200);
    patch_credential(h.org(0), "brief", r#"{"spec":{"rotation":{"counter":1}}}"#);
    eventually(WAIT, "the rotation to end the token", || async {
        (h.list(&before).await == 401).then_some(())
    })
    .await;
    let (status, body) = h.exchange(&long, &[]).await;
    assert_eq!(status, 200, "{body}");
    let after = body["access_token"].as_str().unwrap();
    assert_eq!(claims(after)["rot"], 1);
    assert_eq!(h.list(after).await, 200);
    let creds = Api::<ApiCredential>::namespaced(h.client.clone(), h.org(0));
    let status = creds.get("brief").await.unwrap().status.unwrap();
    assert_eq!(status.rotation_counter, Some(1));
}

/// TokenReviews the API server has been asked for, by anyone, from its own
/// metrics.
async fn apiserver_token_reviews(client: &Client) -> f64 {
    let request = http::Request::get("/metrics").body(Vec::new()).unwrap();
    let text = client.request_text(request).await.unwrap();
    text.lines()
        .filter(|l| {
            l.starts_with("apiserver_request_total{") && l.contains("resource=\"tokenreviews\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Second review, holes 1 and 4: anyone who knows a (namespace,
/// ServiceAccount) pair a credential lists could send assertions with junk
/// signatures, each costing a TokenReview (waiting for a permit without
/// limit), and ten of them locked the account's own valid assertions out
/// of every address they shared. Signatures are now checked locally first,
/// against the cluster's service-account keys.
#[tokio::test]
async fn forged_assertions_cost_no_token_review_and_never_lock_out_the_owner() {
    let h = Harness::start("assert-forged").await;
    h.service_account(0, "owner").await;
    h.credential(0, "owned", &["owner"], "").await;
    let good = h.sa_token(0, "owner", ISSUER, None).await;
    h.until(&good, 200, "the owner's assertion to be accepted")
        .await;
    let reviews = |result: &'static str| {
        let admin = h.admin.clone();
        async move {
            let text = metrics(&admin).await;
            sample(
                &text,
                &format!("catalio_token_reviews_total{{result=\"{result}\"}}"),
            )
        }
    };
    assert!(
        reviews("authenticated").await >= 1.0,
        "the owner's assertion was never reviewed"
    );

    // The claims of the owner's token under junk signatures, 20 from each
    // of 50 addresses (the owner's among them), with the owner asking
    // meanwhile.
    let mut parts = good.split('.');
    let (header, payload) = (parts.next().unwrap(), parts.next().unwrap());
    let sources: Vec<reqwest::Client> = (1..=50)
        .map(|i| {
            reqwest::Client::builder()
                .local_address(std::net::IpAddr::from([127, 0, 0, i]))
                .build()
                .unwrap()
        })
        .collect();
    let forged: Vec<(usize, String)> = (0..1_000)
        .map(|i| {
            let junk = URL_SAFE_NO_PAD.encode(format!("forged signature {i:0>250}"));
            (i % sources.len(), format!("{header}.{payload}.{junk}"))
        })
        .collect();
    let attack = futures::stream::iter(&forged)
        .map(|(source, f)| h.exchange_from(&sources[*source], f, &[]))
        .buffer_unordered(16)
        .collect::<Vec<_>>();
    let owner = async {
        for _ in 0..20 {
            let (status, body) = h.exchange(&good, &[]).await;
            assert_eq!(status, 200, "the owner was refused meanwhile: {body}");
        }
    };
    let asked_before = apiserver_token_reviews(&h.client).await;
    let (answers, ()) = tokio::join!(attack, owner);
    // The API server's own count (other tests of this binary ask it too,
    // a few dozen times at most; the attack would be 500 without the
    // local check, ten failures per address).
    let asked = apiserver_token_reviews(&h.client).await - asked_before;
    eprintln!("the API server reviewed {asked} tokens during the attack");
    assert!(asked < 100.0, "{asked} TokenReviews reached the API server");
    for (status, body) in &answers {
        assert!(
            matches!(status, 401 | 429) && body["error"] == "invalid_client",
            "a forged assertion got {status}: {body}"
        );
    }
    assert!(answers.iter().any(|(s, _)| *s == 429), "never throttled");
    assert_eq!(
        reviews("refused").await,
        0.0,
        "forged assertions reached the API server"
    );
    // A new valid assertion (no review cached) from the owner's address
    // right after its failures: served.
    let fresh = h.sa_token(0, "owner", ISSUER, None).await;
    let (status, body) = h.exchange(&fresh, &[]).await;
    assert_eq!(status, 200, "locked out after the failures: {body}");
}
