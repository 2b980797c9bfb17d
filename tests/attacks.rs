//! Attacks on the token endpoint and the credentials, each run against the
//! real operator binary and the real control plane. The attacker is an
//! outsider who can reach the public port, or a tenant with some rights in
//! one namespace. Every test here was first seen to succeed as an attack.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use catalio_operator::crd::{ApiCredential, Phase};
use catalio_test_support::webhook::HoldingWebhook;
use catalio_test_support::{
    Endpoints, OperatorProcess, TestNamespace, access_token, clients, cluster, create_credential,
    credential_secret, eventually, get_json, metrics, patch_credential, rss_kib,
};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::PostParams;
use kube::{Api, Client};
use serde_json::{Value, json};

const OPERATOR: &str = env!("CARGO_BIN_EXE_catalio-operator");
const WAIT: Duration = Duration::from_secs(30);
const AUDIENCE: &str = "https://catalio.ai/api/v1";

/// One organization and an operator serving it.
struct Target {
    ns: TestNamespace,
    client: Client,
    operator: OperatorProcess,
    endpoints: Endpoints,
    http: reqwest::Client,
}

impl Target {
    /// `catalio-operator run` for a namespace of its own; `args` are added.
    async fn start(prefix: &str, args: &[&str]) -> Self {
        let client = cluster().client().await;
        let ns = TestNamespace::new(&client, prefix).await;
        let (operator, endpoints) = serve(&ns.name, "run", args).await;
        Self {
            ns,
            client,
            operator,
            endpoints,
            http: reqwest::Client::new(),
        }
    }

    fn ns(&self) -> &str {
        &self.ns.name
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.endpoints.base)
    }

    /// A credential the token endpoint already knows.
    async fn credential(&self, name: &str, spec: &str) -> (String, String) {
        let (id, secret) = create_credential(&self.client, self.ns(), name, spec).await;
        access_token(&self.endpoints.base, &id, &secret, WAIT).await;
        (id, secret)
    }

    /// A form-encoded token request from `http`; the status and body.
    async fn token_from(&self, http: &reqwest::Client, id: &str, secret: &str) -> (u16, Value) {
        let r = http
            .post(self.url("/oauth/token"))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", id),
                ("client_secret", secret),
            ])
            .send()
            .await
            .expect("token request");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn token_status(&self, id: &str, secret: &str) -> u16 {
        self.token_from(&self.http, id, secret).await.0
    }

    fn kubectl(&self, args: &[&str]) -> std::process::Output {
        let mut all = vec!["-n", self.ns()];
        all.extend_from_slice(args);
        cluster().kubectl(&all)
    }

    async fn status(&self, name: &str) -> catalio_operator::crd::ApiCredentialStatus {
        Api::<ApiCredential>::namespaced(self.client.clone(), self.ns())
            .get(name)
            .await
            .expect("credential")
            .status
            .unwrap_or_default()
    }
}

/// The operator in `mode` serving `namespace` on fresh loopback ports.
async fn serve(namespace: &str, mode: &str, args: &[&str]) -> (OperatorProcess, Endpoints) {
    let mut all = vec![
        "--namespace",
        namespace,
        "--watch-namespaces",
        namespace,
        "--lease-duration",
        "3s",
        "--shutdown-delay",
        "0s",
    ];
    all.extend_from_slice(args);
    let (mut operator, endpoints) =
        OperatorProcess::run_serving_mode(OPERATOR, &cluster().kubeconfig, mode, &all);
    operator.wait_ready(&endpoints, WAIT).await;
    (operator, endpoints)
}

/// The plain SHA-256 hash of `text`, as `sha256:<hex>`: anyone can compute it.
fn sha256(text: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(text.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

fn random_text(bytes: usize) -> String {
    let mut raw = vec![0u8; bytes];
    getrandom::fill(&mut raw).unwrap();
    raw.iter().map(|b| format!("{b:02x}")).collect()
}

/// Hole 1: the failed-login throttle kept every client id it was sent, so
/// anyone could grow the process by sending long random ids.
#[tokio::test]
async fn forged_client_ids_never_grow_memory() {
    let t = Target::start("forged-ids", &["--token-url", "{base}/oauth/token"]).await;
    let attack = |requests: usize| {
        let t = &t;
        async move {
            let statuses: Vec<u16> = futures::stream::iter(0..requests)
                .map(|_| async move {
                    let id = random_text(5 * 1024);
                    t.token_status(&id, "guess").await
                })
                .buffer_unordered(16)
                .collect()
                .await;
            assert!(
                statuses.iter().all(|s| *s == 401),
                "every forged client id is an unknown client"
            );
        }
    };
    // Connection pools and allocator arenas settle first.
    attack(2_000).await;
    let before = rss_kib(t.operator.pid());
    attack(20_000).await;
    let after = rss_kib(t.operator.pid());
    eprintln!("RSS before {before} KiB, after 20,000 forged 10 KB client ids {after} KiB");
    assert!(
        after <= before + 4 * 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
}

/// Hole 2: client ids are public, and ten wrong secrets from anyone made
/// the endpoint refuse the right one. Second review: the first fix keyed
/// the throttle by source address, which holds only where every client has
/// its own; behind an Ingress, a SNAT load balancer, a mesh or `kubectl
/// port-forward` they all share one, and the owner was locked out again. A
/// right secret is now checked first and never refused for failures.
#[tokio::test]
async fn wrong_secrets_never_lock_out_the_owner_even_from_the_same_address() {
    let t = Target::start("lockout", &["--token-url", "{base}/oauth/token"]).await;
    let (id, secret) = t.credential("victim", "").await;
    let other_source = reqwest::Client::builder()
        .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)))
        .build()
        .unwrap();
    for http in [&t.http, &other_source] {
        let mut throttled = 0;
        for _ in 0..50 {
            let (status, body) = t.token_from(http, &id, "catalio_cs_wrong").await;
            match status {
                401 => assert_eq!(body["error"], "invalid_client"),
                429 => throttled += 1,
                other => panic!("wrong secret answered {other}: {body}"),
            }
        }
        assert!(throttled > 0, "the failures were never throttled");
        // The owner, from the very address the failures came from.
        let (status, body) = t.token_from(http, &id, &secret).await;
        assert_eq!(status, 200, "the owner was locked out: {body}");
        assert!(body["access_token"].is_string());
        // The throttle still answers the failures.
        let (status, _) = t.token_from(http, &id, "catalio_cs_wrong").await;
        assert_eq!(status, 429);
    }
}

/// Hole 3: `spec.secretTemplate` annotations reached the Secret, where the
/// controller read them back as the previous secret's hash and expiry, so
/// whoever may edit an ApiCredential (but not read Secrets) could plant a
/// secret of their choosing.
#[tokio::test]
async fn secret_template_cannot_plant_a_previous_secret() {
    let t = Target::start("template", &["--token-url", "{base}/oauth/token"]).await;
    let (id, _) = t.credential("victim", "").await;
    let planted = "catalio_cs_chosen-by-the-attacker";
    let patch = json!({"spec": {"secretTemplate": {"annotations": {
        "catalio.ai/previous-secret-sha256": sha256(planted),
        "catalio.ai/previous-secret-expires-at": "2999-01-01T00:00:00Z",
    }}}});
    let out = t.kubectl(&[
        "patch",
        "apicred",
        "victim",
        "--type",
        "merge",
        "-p",
        &patch.to_string(),
    ]);
    if out.status.success() {
        eventually(WAIT, "the planted secret to get a token", || async {
            (t.token_status(&id, planted).await == 200).then_some(())
        })
        .await;
        panic!("spec.secretTemplate planted a client secret that gets tokens");
    }
    let refusal = String::from_utf8_lossy(&out.stderr);
    assert!(
        refusal.contains("catalio.ai/"),
        "refused for another reason: {refusal}"
    );
    // Labels are refused the same way.
    let out = t.kubectl(&[
        "patch",
        "apicred",
        "victim",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"secretTemplate":{"labels":{"catalio.ai/credential":"other"}}}}"#,
    ]);
    assert!(!out.status.success(), "a catalio.ai/ label was accepted");
}

/// Hole 3, from the other side: the same annotations written straight onto
/// the Secret by someone who may edit Secrets but not read them.
#[tokio::test]
async fn annotations_planted_on_the_secret_are_not_trusted() {
    let t = Target::start("planted", &["--token-url", "{base}/oauth/token"]).await;
    let (id, secret) = t.credential("victim", "").await;
    let planted = "catalio_cs_chosen-by-the-attacker";
    let out = t.kubectl(&[
        "annotate",
        "secret",
        "victim",
        "--overwrite",
        &format!("catalio.ai/previous-secret-sha256={}", sha256(planted)),
        "catalio.ai/previous-secret-expires-at=2999-01-01T00:00:00Z",
    ]);
    assert!(out.status.success());
    // The controller acts on the edit: it either repairs the Secret or
    // takes the planted hash in (the attack).
    let secrets = Api::<Secret>::namespaced(t.client.clone(), t.ns());
    let status = eventually(WAIT, "the controller to act on the edit", || async {
        let annotations = secrets.get("victim").await.ok()?.metadata.annotations?;
        let repaired = !annotations.contains_key("catalio.ai/previous-secret-sha256");
        let status = t.status("victim").await;
        (repaired || status.previous_secret_hash.is_some()).then_some(status)
    })
    .await;
    assert_eq!(
        status.previous_secret_hash, None,
        "the planted hash became the previous secret"
    );
    // Only metadata was touched: the secret stays, the planted one is an
    // unknown one.
    let (_, current) = credential_secret(&t.client, t.ns(), "victim").await;
    assert_eq!(current, secret);
    assert_eq!(t.token_status(&id, &secret).await, 200);
    assert_eq!(t.token_status(&id, planted).await, 401);
    eventually(WAIT, "a SecretRepaired warning", || async {
        let events = t.kubectl(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=victim,reason=SecretRepaired",
            "-o",
            "jsonpath={.items[*].type}",
        ]);
        String::from_utf8_lossy(&events.stdout)
            .contains("Warning")
            .then_some(())
    })
    .await;
}

/// Hole 4: the token endpoint compared presented secrets with
/// `status.secretHash`, so whoever may write the status subresource could
/// mint tokens with a secret of their own.
#[tokio::test]
async fn status_writers_cannot_plant_a_secret() {
    let mut t = Target::start("status", &["--token-url", "{base}/oauth/token"]).await;
    let (victim, victim_secret) = t.credential("victim", "").await;
    let victim_hash = t.status("victim").await.secret_hash;
    // A credential the attacker holds: its secret and its status are theirs
    // to read.
    let (own, own_secret) = t.credential("own", "").await;
    let own_hash = t.status("own").await.secret_hash.unwrap();

    // Only the servers run, so nothing repairs the status while the
    // attack runs.
    t.operator.kill();
    let (server, endpoints) = serve(t.ns(), "server", &[]).await;
    t.operator = server;
    t.endpoints = endpoints;
    access_token(&t.endpoints.base, &victim, &victim_secret, WAIT).await;

    let planted = "catalio_cs_chosen-by-the-attacker";
    for (forged, secret) in [(sha256(planted), planted), (own_hash, own_secret.as_str())] {
        let patch = json!({"status": {"secretHash": forged}}).to_string();
        let out = t.kubectl(&[
            "patch",
            "apicred",
            "victim",
            "--subresource",
            "status",
            "--type",
            "merge",
            "-p",
            &patch,
        ]);
        assert!(out.status.success());
        // The servers have seen the forged status once the real secret
        // stops working.
        eventually(WAIT, "the servers to see the forged status", || async {
            (t.token_status(&victim, &victim_secret).await == 401).then_some(())
        })
        .await;
        let (status, body) = t.token_from(&t.http, &victim, secret).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("invalid_client")),
            "a forged status hash {forged} let a chosen secret in"
        );
    }

    // The controller repairs the status; a restart keeps every valid
    // secret working.
    t.operator.kill();
    let (operator, endpoints) = serve(t.ns(), "run", &["--token-url", "{base}/oauth/token"]).await;
    t.operator = operator;
    t.endpoints = endpoints;
    eventually(WAIT, "the controller to restore the status", || async {
        (t.status("victim").await.secret_hash == victim_hash).then_some(())
    })
    .await;
    access_token(&t.endpoints.base, &victim, &victim_secret, WAIT).await;
    access_token(&t.endpoints.base, &own, &own_secret, WAIT).await;
    assert_eq!(t.token_status(&victim, planted).await, 401);
    assert_eq!(t.token_status(&victim, &own_secret).await, 401);
}

/// Hole 5: narrowing `spec.scopes` left live tokens with the old scopes
/// for up to a day.
#[tokio::test]
async fn narrowing_scopes_applies_to_live_tokens() {
    let t = Target::start("narrow", &["--token-url", "{base}/oauth/token"]).await;
    let (id, secret) = t.credential("ci", "  scopes: [\"*:write\"]\n").await;
    let token = access_token(&t.endpoints.base, &id, &secret, WAIT).await;
    let create = || async {
        t.http
            .post(t.url("/api/v1/requirements"))
            .bearer_auth(&token)
            .header("content-type", "application/vnd.api+json")
            .body(r#"{"data":{"type":"requirement","attributes":{"title":"Written"}}}"#)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(create().await, 201);
    patch_credential(t.ns(), "ci", r#"{"spec":{"scopes":["*:read"]}}"#);
    let narrowed = Instant::now();
    eventually(WAIT, "the old token to lose write access", || async {
        (create().await == 403).then_some(())
    })
    .await;
    eprintln!("write refused {:?} after the patch", narrowed.elapsed());
    let read = t
        .http
        .get(t.url("/api/v1/requirements"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200, "read access stays");
}

/// Hole 6: a missing Secret was written with a forced server-side apply,
/// so a Secret someone else created between the operator's read and its
/// write was taken over and its data overwritten.
#[tokio::test]
async fn a_secret_someone_else_creates_first_is_never_taken_over() {
    let t = Target::start("race", &["--token-url", "{base}/oauth/token"]).await;
    let webhook = HoldingWebhook::start(&t.client, t.ns(), "victim").await;
    let yaml = "apiVersion: catalio.ai/v1\nkind: ApiCredential\nmetadata: {name: victim}\nspec: {displayName: victim}\n";
    let out = cluster().kubectl_stdin(&["-n", t.ns(), "apply", "-f", "-"], Some(yaml));
    assert!(out.status.success());
    tokio::time::timeout(WAIT, webhook.held())
        .await
        .expect("the operator's write of the Secret");

    // The operator has read "no Secret" and is writing one: someone else
    // creates it first.
    let secrets = Api::<Secret>::namespaced(t.client.clone(), t.ns());
    let mut theirs = Secret::default();
    theirs.metadata.name = Some("victim".into());
    theirs.string_data = Some([("client_secret".to_owned(), "theirs".to_owned())].into());
    secrets
        .create(&PostParams::default(), &theirs)
        .await
        .expect("create the other Secret");
    webhook.release();

    let creds = Api::<ApiCredential>::namespaced(t.client.clone(), t.ns());
    let phase = eventually(WAIT, "the credential's verdict", || async {
        let phase = creds.get("victim").await.ok()?.status?.phase?;
        matches!(phase, Phase::Active | Phase::Failed).then_some(phase)
    })
    .await;
    let secret = secrets.get("victim").await.unwrap();
    let data = secret.data.unwrap_or_default();
    assert_eq!(
        data.get("client_secret").map(|b| b.0.as_slice()),
        Some(&b"theirs"[..]),
        "the operator overwrote a Secret it did not create"
    );
    assert!(
        secret
            .metadata
            .owner_references
            .unwrap_or_default()
            .is_empty()
    );
    assert_eq!(phase, Phase::Failed);
    let status = creds.get("victim").await.unwrap().status.unwrap();
    assert_eq!(status.conditions[0].reason, "SecretConflict");
}

/// Hole 7: without `--token-url`, every Secret told workloads to send
/// their secret to the public issuer's host.
#[tokio::test]
async fn the_default_token_url_is_this_server() {
    let t = Target::start("token-url", &[]).await;
    create_credential(&t.client, t.ns(), "ci", "").await;
    let secret = Api::<Secret>::namespaced(t.client.clone(), t.ns())
        .get("ci")
        .await
        .unwrap();
    let token_url = String::from_utf8(secret.data.unwrap()["token_url"].0.clone()).unwrap();
    assert_eq!(token_url, t.url("/oauth/token"));
    let metadata: Value = get_json(&t.url("/.well-known/oauth-authorization-server")).await;
    assert_eq!(metadata["token_endpoint"], token_url);
    assert_eq!(metadata["jwks_uri"], t.url("/.well-known/jwks.json"));
}

/// Hole 8: a JSON body with a repeated parameter was read with the last
/// value winning, so a gateway that checks the first one checks another
/// client than the one that authenticates.
#[tokio::test]
async fn repeated_json_parameters_are_refused() {
    let t = Target::start("dup-json", &["--token-url", "{base}/oauth/token"]).await;
    let (id, secret) = t.credential("ci", "").await;
    let body = format!(
        r#"{{"grant_type":"client_credentials","client_id":"ci_someone_else","client_id":"{id}","client_secret":"{secret}"}}"#
    );
    let r = t
        .http
        .post(t.url("/oauth/token"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "invalid_request");
    assert_eq!(body["error_description"], "Parameter client_id is repeated");
}

/// Protocol details: the metadata promises only what is implemented, a
/// wrong `audience` is `invalid_target` (RFC 8707), and tokens are RFC 9068
/// JWT access tokens that strict validators accept.
#[tokio::test]
async fn strict_oauth_clients_accept_the_server() {
    let t = Target::start(
        "strict",
        &["--token-url", "{base}/oauth/token", "--issuer", "{base}"],
    )
    .await;
    let (id, secret) = t.credential("ci", "").await;

    let metadata: Value = get_json(&t.url("/.well-known/oauth-authorization-server")).await;
    let mut members: Vec<&str> = metadata
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    members.sort();
    assert_eq!(
        members,
        [
            "dpop_signing_alg_values_supported",
            "grant_types_supported",
            "introspection_endpoint",
            "introspection_endpoint_auth_methods_supported",
            "issuer",
            "jwks_uri",
            "response_types_supported",
            "revocation_endpoint",
            "revocation_endpoint_auth_methods_supported",
            "scopes_supported",
            "token_endpoint",
            "token_endpoint_auth_methods_supported",
            "token_endpoint_auth_signing_alg_values_supported",
        ]
    );
    assert_eq!(
        metadata["token_endpoint_auth_methods_supported"],
        json!([
            "client_secret_basic",
            "client_secret_post",
            "private_key_jwt"
        ])
    );
    assert_eq!(
        metadata["introspection_endpoint"],
        t.url("/oauth/introspect")
    );
    assert_eq!(metadata["revocation_endpoint"], t.url("/oauth/revoke"));

    let r = t
        .http
        .post(t.url("/oauth/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", &id),
            ("client_secret", &secret),
            ("audience", "https://elsewhere.example/api"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_target");

    // oauth4webapi: discovery, the grant and validateJwtAccessToken.
    let strict = clients::oauth4webapi(&t.endpoints.base, &id, &secret, AUDIENCE, None);
    assert_eq!(strict["claims"]["client_id"], id);
    assert_eq!(strict["claims"]["sub"], id);
    assert_eq!(strict["claims"]["org"], t.ns());

    // joserfc: signature, `typ: at+jwt` and the RFC 9068 claims.
    let (token_url, jwks_url) = (t.url("/oauth/token"), t.url("/.well-known/jwks.json"));
    let checked = clients::Server {
        token_url: &token_url,
        jwks_url: &jwks_url,
        issuer: &t.endpoints.base,
        audience: AUDIENCE,
        ca: None,
    }
    .joserfc(&id, &secret);
    assert_eq!(checked["header"]["typ"], "at+jwt");
    assert_eq!(checked["claims"]["client_id"], id);
}

/// Hole 11: a client looping on the token endpoint had every signature the
/// replica could make. Issuance is limited per credential, counted only
/// once the secret is right, so a stranger holding the public client id
/// cannot spend the owner's allowance.
#[tokio::test]
async fn one_looping_client_cannot_take_every_signature() {
    let t = Target::start(
        "token-loop",
        &[
            "--token-url",
            "{base}/oauth/token",
            "--token-rate-limit",
            "1",
            "--token-burst",
            "5",
        ],
    )
    .await;
    let (id, secret) = t.credential("looping", "").await;
    let (other_id, other_secret) = t.credential("other", "").await;
    let stranger = reqwest::Client::builder()
        .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)))
        .build()
        .unwrap();
    for _ in 0..8 {
        let (status, _) = t.token_from(&stranger, &id, "catalio_cs_wrong").await;
        assert_eq!(status, 401);
    }
    // The owner loops: a few tokens (the burst, less the one taken above),
    // then 429 with Retry-After.
    let mut issued = 0;
    let refused = loop {
        let r = t
            .http
            .post(t.url("/oauth/token"))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", id.as_str()),
                ("client_secret", secret.as_str()),
            ])
            .send()
            .await
            .unwrap();
        match r.status().as_u16() {
            200 => issued += 1,
            429 => break r,
            other => panic!("the looping client got {other}"),
        }
        assert!(issued < 200, "200 tokens in a row: issuance is not limited");
    };
    assert!(
        issued >= 4,
        "the stranger spent the owner's allowance: {issued} issued"
    );
    let wait: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&wait), "Retry-After: {wait}");
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "invalid_request", "{body}");
    // Other credentials are not held back, and the looping one is served
    // again once it waits.
    assert_eq!(t.token_status(&other_id, &other_secret).await, 200);
    eventually(WAIT, "the looping client to be served again", || async {
        (t.token_status(&id, &secret).await == 200).then_some(())
    })
    .await;
    let metrics = metrics(&t.endpoints.admin).await;
    assert!(
        metrics.contains("catalio_tokens_refused_total{reason=\"rate_limited\"}"),
        "no rate_limited in metrics"
    );
}

/// Second review, hole 5: the controller cached the metadata, annotations
/// included, of every Secret that carries `managed-by: catalio-operator`,
/// and anyone who may create a Secret may set that label. A few thousand
/// such Secrets with large annotations would run it out of memory and stop
/// credential work for every organization.
#[tokio::test]
async fn foreign_secrets_with_our_label_do_not_grow_the_controller() {
    let t = Target::start("foreign-secrets", &["--token-url", "{base}/oauth/token"]).await;
    let (id, secret) = t.credential("victim", "").await;
    // Let the process settle with the credential in use.
    for _ in 0..20 {
        access_token(&t.endpoints.base, &id, &secret, WAIT).await;
    }
    let before = rss_kib(t.operator.pid());

    const SECRETS: usize = 120;
    let annotation = "x".repeat(180 * 1024);
    let secrets = Api::<Secret>::namespaced(t.client.clone(), t.ns());
    futures::stream::iter(0..SECRETS)
        .map(|i| {
            let mut s = Secret::default();
            s.metadata.name = Some(format!("bait-{i}"));
            s.metadata.labels = Some(
                [(
                    "app.kubernetes.io/managed-by".to_owned(),
                    "catalio-operator".to_owned(),
                )]
                .into(),
            );
            s.metadata.annotations = Some([("bait".to_owned(), annotation.clone())].into());
            let secrets = secrets.clone();
            async move { secrets.create(&PostParams::default(), &s).await.unwrap() }
        })
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await;
    // The watch delivers in order: once the controller has recreated a
    // Secret deleted after the bait, it has taken in all of the bait.
    let old_uid = secrets.get("victim").await.unwrap().metadata.uid;
    secrets.delete("victim", &Default::default()).await.unwrap();
    eventually(WAIT, "the deleted Secret to be recreated", || async {
        let uid = secrets.get_opt("victim").await.ok()??.metadata.uid;
        (uid != old_uid).then_some(())
    })
    .await;
    // Freed pages go back within about a second (jemalloc's decay).
    let limit = before + 10 * 1024;
    let mut last = 0;
    let settled = eventually(WAIT, "the controller's memory to settle", || {
        let rss = rss_kib(t.operator.pid());
        last = rss;
        async move { (rss <= limit).then_some(rss) }
    })
    .await;
    eprintln!(
        "RSS before {before} KiB, after {SECRETS} labelled 180 KB Secrets {settled} KiB (last {last})"
    );
}

/// Second review, hole 6: `selector: {}` matched every workload of its
/// kind in the namespace, and `name` went into a request path unchecked.
/// The API server refuses both.
#[test]
fn restart_targets_name_one_object_or_select_by_some_label() {
    for (target, message) in [
        (r#"{kind: Deployment, selector: {}}"#, "at least one"),
        (
            r#"{kind: Deployment, selector: {matchLabels: {}, matchExpressions: []}}"#,
            "at least one",
        ),
        (
            r#"{kind: Deployment, name: "../../../api/v1/namespaces/kube-system/secrets/x"}"#,
            "name",
        ),
        (r#"{kind: Deployment, name: "Web"}"#, "name"),
    ] {
        let yaml = format!(
            "apiVersion: catalio.ai/v1\nkind: ApiCredential\nmetadata: {{name: t, namespace: default}}\n\
             spec: {{displayName: t, rotation: {{restartTargets: [{target}]}}}}\n"
        );
        let out = cluster().kubectl_stdin(&["apply", "--dry-run=server", "-f", "-"], Some(&yaml));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{target} was accepted");
        assert!(stderr.contains(message), "{target}: {stderr}");
    }
    // A name, and a selector with a requirement, stay accepted.
    for target in [
        r#"{kind: Deployment, name: web-1.a}"#,
        r#"{kind: StatefulSet, selector: {matchLabels: {app: web}}}"#,
        r#"{kind: DaemonSet, selector: {matchExpressions: [{key: app, operator: Exists}]}}"#,
    ] {
        let yaml = format!(
            "apiVersion: catalio.ai/v1\nkind: ApiCredential\nmetadata: {{name: t, namespace: default}}\n\
             spec: {{displayName: t, rotation: {{restartTargets: [{target}]}}}}\n"
        );
        let out = cluster().kubectl_stdin(&["apply", "--dry-run=server", "-f", "-"], Some(&yaml));
        assert!(
            out.status.success(),
            "{target}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Second review, hole 5 (the template side): `spec.secretTemplate` is
/// copied onto the Secret and cached with every credential, so its size
/// is capped in the schema.
#[test]
fn secret_templates_are_bounded() {
    let many: Vec<String> = (0..40).map(|i| format!("k{i}: v")).collect();
    let long = "v".repeat(8 * 1024);
    for (template, message) in [
        (
            format!("{{annotations: {{{}}}}}", many.join(", ")),
            "annotations",
        ),
        (format!("{{labels: {{{}}}}}", many.join(", ")), "labels"),
        (format!("{{annotations: {{a: {long}}}}}"), "annotations"),
    ] {
        let yaml = format!(
            "apiVersion: catalio.ai/v1\nkind: ApiCredential\nmetadata: {{name: t, namespace: default}}\n\
             spec: {{displayName: t, secretTemplate: {template}}}\n"
        );
        let out = cluster().kubectl_stdin(&["apply", "--dry-run=server", "-f", "-"], Some(&yaml));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{template:.80} was accepted");
        assert!(stderr.contains(message), "{template:.80}: {stderr}");
    }
}
