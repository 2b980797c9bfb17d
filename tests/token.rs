//! The token endpoint over real HTTP on loopback, with credentials from the
//! real control plane and the operator binary as its own process.

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use catalio_operator::crd::{ApiCredential, Phase};
use catalio_operator::index::{self, CredentialIndex};
use catalio_operator::token::{KeyStore, Verifier, VerifyError, keystore};
use catalio_test_support::{
    OperatorProcess, TestNamespace, clients, cluster, credential_secret, eventually, get_json,
    metrics, patch_credential, sample,
};
use kube::{Api, Client};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const OPERATOR: &str = env!("CARGO_BIN_EXE_catalio-operator");
const WAIT: Duration = Duration::from_secs(30);
const ISSUER: &str = "https://catalio.ai";
const AUDIENCE: &str = "https://catalio.ai/api/v1";
const KEYS_SECRET: &str = "catalio-operator-signing-keys";

struct Server {
    ns: TestNamespace,
    client: Client,
    operator: OperatorProcess,
    base: String,
    readyz: String,
    http: reqwest::Client,
}

struct Credential {
    id: String,
    secret: String,
}

impl Server {
    async fn start(prefix: &str, extra: &[&str]) -> Self {
        let client = cluster().client().await;
        let ns = TestNamespace::new(&client, prefix).await;
        let mut args = vec![
            "--namespace",
            &ns.name,
            "--watch-namespaces",
            &ns.name,
            "--token-url",
            "{base}/oauth/token",
        ];
        args.extend_from_slice(extra);
        let (mut operator, endpoints) =
            OperatorProcess::run_serving(OPERATOR, &cluster().kubeconfig, &args);
        operator.wait_ready(&endpoints, WAIT).await;
        Self {
            ns,
            client,
            operator,
            base: endpoints.base,
            readyz: format!("{}/readyz", endpoints.admin),
            http: reqwest::Client::new(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn credential(&self, name: &str, spec: &str) -> Credential {
        let yaml = format!(
            "apiVersion: catalio.ai/v1\nkind: ApiCredential\nmetadata:\n  name: {name}\nspec:\n  displayName: {name}\n{spec}"
        );
        let out = cluster().kubectl_stdin(&["-n", &self.ns.name, "apply", "-f", "-"], Some(&yaml));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let creds = Api::<ApiCredential>::namespaced(self.client.clone(), &self.ns.name);
        eventually(WAIT, "credential to be Active", || async {
            let c = creds.get(name).await.ok()?;
            (c.status?.phase == Some(Phase::Active)).then_some(())
        })
        .await;
        let cred = self.read_secret(name).await;
        // The server learns of the credential through its own watch.
        eventually(
            WAIT,
            "the token endpoint to know the credential",
            || async { (self.token_json(&cred, json!({})).await.status() == 200).then_some(()) },
        )
        .await;
        cred
    }

    /// Raises the rotation counter to 1 and returns the new secret.
    async fn rotate(&self, name: &str, old: &Credential) -> Credential {
        self.patch(name, r#"{"spec":{"rotation":{"counter":1}}}"#);
        eventually(WAIT, "the new secret", || async {
            let c = self.read_secret(name).await;
            (c.secret != old.secret).then_some(c)
        })
        .await
    }

    async fn read_secret(&self, name: &str) -> Credential {
        let (id, secret) = credential_secret(&self.client, &self.ns.name, name).await;
        Credential { id, secret }
    }

    /// The Catalio-documented JSON request, with `extra` fields merged in.
    async fn token_json(&self, cred: &Credential, extra: Value) -> reqwest::Response {
        let mut body = json!({
            "client_id": cred.id,
            "client_secret": cred.secret,
            "audience": AUDIENCE,
            "grant_type": "client_credentials",
        });
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        self.http
            .post(self.url("/oauth/token"))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    async fn token(&self, cred: &Credential) -> String {
        let r = self.token_json(cred, json!({})).await;
        assert_eq!(r.status(), 200);
        r.json::<Value>().await.unwrap()["access_token"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    async fn post(&self, content_type: &str, body: impl Into<reqwest::Body>) -> reqwest::Response {
        self.http
            .post(self.url("/oauth/token"))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap()
    }

    fn patch(&self, name: &str, patch: &str) {
        patch_credential(&self.ns.name, name, patch);
    }

    /// A verifier of our own, fed by its own watches of the real cluster,
    /// as the JSON:API will use it.
    async fn verifier(&self) -> Verifier {
        let index = CredentialIndex::new();
        let keys = KeyStore::new();
        let health = std::sync::Arc::new(catalio_operator::watch::Health::default());
        tokio::spawn(index::run_credential_watch(
            Api::namespaced(self.client.clone(), &self.ns.name),
            Some(self.ns.name.clone()),
            index.clone(),
            health.tracker("credentials"),
        ));
        tokio::spawn(keystore::watch(
            Api::namespaced(self.client.clone(), &self.ns.name),
            KEYS_SECRET.to_owned(),
            keys.clone(),
            health.tracker("keys"),
        ));
        eventually(WAIT, "verifier caches", || async {
            (index.is_synced() && keys.is_loaded()).then_some(())
        })
        .await;
        Verifier {
            keys,
            index,
            issuer: ISSUER.into(),
            audience: AUDIENCE.into(),
            leeway: Duration::from_secs(5),
            verified: Default::default(),
        }
    }

    fn authlib(&self, cred: &Credential, method: &str) -> Value {
        let (token_url, jwks_url) = (self.url("/oauth/token"), self.url("/.well-known/jwks.json"));
        clients::Server {
            token_url: &token_url,
            jwks_url: &jwks_url,
            issuer: ISSUER,
            audience: AUDIENCE,
            ca: None,
        }
        .authlib(&cred.id, &cred.secret, method)
    }
}

fn decode_part(token: &str, index: usize) -> Value {
    let part = token.split('.').nth(index).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

async fn error_of(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    assert_eq!(r.headers()["cache-control"], "no-store");
    (status, r.json().await.unwrap())
}

#[tokio::test]
async fn issues_tokens_in_all_three_shapes_that_independent_jose_verifies() {
    let s = Server::start("issue", &[]).await;
    let cred = s
        .credential(
            "ci",
            "  scopes: [\"requirement:read\", \"persona:write\"]\n",
        )
        .await;

    // The JSON body exactly as Catalio documents it.
    let r = s.token_json(&cred, json!({})).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    assert_eq!(r.headers()["pragma"], "no-cache");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 86400);
    assert_eq!(body["scope"], "requirement:read persona:write");
    let token = body["access_token"].as_str().unwrap();
    assert!(token.starts_with("eyJhbGciOiJSUzI1NiIs"), "{token}");

    let header = decode_part(token, 0);
    assert_eq!(header["alg"], "RS256");
    assert_eq!(header["typ"], "at+jwt");
    let claims = decode_part(token, 1);
    let uid = Api::<ApiCredential>::namespaced(s.client.clone(), &s.ns.name)
        .get("ci")
        .await
        .unwrap()
        .metadata
        .uid
        .unwrap();
    assert_eq!(claims["iss"], ISSUER);
    assert_eq!(claims["aud"], AUDIENCE);
    assert_eq!(claims["sub"], cred.id.as_str());
    assert_eq!(claims["client_id"], cred.id.as_str());
    assert_eq!(cred.id, format!("ci_{}", uid.replace('-', "")));
    assert_eq!(claims["org"], s.ns.name.as_str());
    assert_eq!(claims["scope"], "requirement:read persona:write");
    assert_eq!(claims["rot"], 0);
    let iat = claims["iat"].as_i64().unwrap();
    assert_eq!(claims["nbf"].as_i64(), Some(iat));
    assert_eq!(claims["exp"].as_i64(), Some(iat + 86_400));
    assert!((iat - jiff::Timestamp::now().as_second()).abs() < 60);
    assert_eq!(claims["jti"].as_str().unwrap().len(), 22);

    // The kid is published.
    let jwks: Value = get_json(&s.url("/.well-known/jwks.json")).await;
    assert!(
        jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["kid"] == header["kid"])
    );

    // Form body and HTTP Basic (RFC 6749 2.3.1: form-encoded id and secret).
    let form = format!(
        "grant_type=client_credentials&client_id={}&client_secret={}&scope=requirement%3Aread",
        cred.id, cred.secret
    );
    let r = s.post("application/x-www-form-urlencoded", form).await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["scope"], "requirement:read", "scope narrows");
    let r = s
        .http
        .post(s.url("/oauth/token"))
        .basic_auth(&cred.id, Some(&cred.secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // A client library and a JOSE implementation that share no code with
    // ours: Authlib fetches with both auth methods and verifies via JWKS.
    for method in ["client_secret_basic", "client_secret_post"] {
        let out = s.authlib(&cred, method);
        assert_eq!(out["claims"]["sub"], cred.id.as_str(), "{method}");
        assert_eq!(out["claims"]["org"], s.ns.name.as_str());
        assert_eq!(out["header"]["alg"], "RS256");
    }

    // And our own verifier accepts it.
    let verified = s
        .verifier()
        .await
        .verify(token, jiff::Timestamp::now())
        .unwrap();
    assert_eq!(verified.claims.sub, cred.id);
    assert_eq!(verified.credential.name, "ci");

    let metadata: Value = get_json(&s.url("/.well-known/oauth-authorization-server")).await;
    assert_eq!(metadata["issuer"], ISSUER);
    assert_eq!(metadata["token_endpoint"], s.url("/oauth/token"));
    assert_eq!(metadata["jwks_uri"], s.url("/.well-known/jwks.json"));
    assert_eq!(
        metadata["grant_types_supported"],
        json!(["client_credentials"])
    );
}

#[tokio::test]
async fn es256_keys_sign_verifiable_tokens() {
    let s = Server::start("es256", &["--signing-alg", "ES256"]).await;
    let cred = s.credential("ci", "").await;
    let token = s.token(&cred).await;
    assert_eq!(decode_part(&token, 0)["alg"], "ES256");
    let out = s.authlib(&cred, "client_secret_basic");
    assert_eq!(out["header"]["alg"], "ES256");
    s.verifier()
        .await
        .verify(&token, jiff::Timestamp::now())
        .unwrap();
}

#[tokio::test]
async fn every_error_has_its_status_and_rfc_6749_code() {
    let s = Server::start("errors", &[]).await;
    let cred = s
        .credential("ci", "  scopes: [\"requirement:read\"]\n")
        .await;
    let unknown = Credential {
        id: "ci_00000000000000000000000000000000".into(),
        secret: cred.secret.clone(),
    };
    let wrong = Credential {
        id: cred.id.clone(),
        secret: "catalio_cs_wrong".into(),
    };

    let cases: Vec<(reqwest::Response, u16, &str)> = vec![
        (
            s.token_json(&cred, json!({"grant_type": null})).await,
            400,
            "invalid_request",
        ),
        (
            s.token_json(&cred, json!({"grant_type": "password"})).await,
            400,
            "unsupported_grant_type",
        ),
        (
            s.token_json(&cred, json!({"audience": "https://evil.example"}))
                .await,
            400,
            "invalid_target",
        ),
        (
            s.token_json(&cred, json!({"scope": "requirement:write"}))
                .await,
            400,
            "invalid_scope",
        ),
        (
            s.token_json(&cred, json!({"scope": "admin"})).await,
            400,
            "invalid_scope",
        ),
        (
            s.token_json(&cred, json!({"client_secret": 42})).await,
            400,
            "invalid_request",
        ),
        (
            s.token_json(&cred, json!({"client_secret": null})).await,
            401,
            "invalid_client",
        ),
        (
            s.token_json(&unknown, json!({})).await,
            401,
            "invalid_client",
        ),
        (s.token_json(&wrong, json!({})).await, 401, "invalid_client"),
        (
            s.post("application/json", "{not json").await,
            400,
            "invalid_request",
        ),
        (
            s.post("application/json", "[1,2]").await,
            400,
            "invalid_request",
        ),
        (
            s.post("text/plain", "grant_type=client_credentials").await,
            415,
            "invalid_request",
        ),
        (
            s.post("application/json", vec![b' '; 17 * 1024]).await,
            413,
            "invalid_request",
        ),
        (
            s.post(
                "application/x-www-form-urlencoded",
                "grant_type=client_credentials&grant_type=x",
            )
            .await,
            400,
            "invalid_request",
        ),
        (
            s.http.get(s.url("/oauth/token")).send().await.unwrap(),
            405,
            "invalid_request",
        ),
    ];
    for (i, (response, status, code)) in cases.into_iter().enumerate() {
        let (got, body) = error_of(response).await;
        assert_eq!(
            (got, body["error"].as_str().unwrap()),
            (status, code),
            "case {i}: {body}"
        );
        assert!(body["error_description"].is_string(), "case {i}");
    }

    // Unknown client and wrong secret are indistinguishable.
    let a = s
        .token_json(&unknown, json!({}))
        .await
        .text()
        .await
        .unwrap();
    let b = s.token_json(&wrong, json!({})).await.text().await.unwrap();
    assert_eq!(a, b);

    // HTTP Basic failures carry the challenge.
    let r = s
        .http
        .post(s.url("/oauth/token"))
        .basic_auth(&cred.id, Some("wrong"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(
        r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Basic")
    );

    // After all that, the server still serves the good client.
    assert_eq!(s.token_json(&cred, json!({})).await.status(), 200);
}

#[tokio::test]
async fn repeated_failures_are_throttled_and_bad_input_never_stalls_the_server() {
    let s = Server::start("throttle", &[]).await;
    let cred = s.credential("ci", "").await;
    let wrong = Credential {
        id: cred.id.clone(),
        secret: "nope".into(),
    };
    for _ in 0..10 {
        assert_eq!(s.token_json(&wrong, json!({})).await.status(), 401);
    }
    let r = s.token_json(&wrong, json!({})).await;
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    // The right secret is served all the same: the throttle answers only
    // failures (a client behind the same proxy address must not be locked
    // out), and a failure stays throttled.
    assert_eq!(s.token_json(&cred, json!({})).await.status(), 200);
    assert_eq!(s.token_json(&wrong, json!({})).await.status(), 429);

    // Garbage in parallel, including empty bodies sent without a length.
    let mut garbage = Vec::new();
    for i in 0..50u32 {
        let http = s.http.clone();
        let url = s.url("/oauth/token");
        garbage.push(tokio::spawn(async move {
            let body: Vec<u8> = (0..(i * 997) % 20_000)
                .map(|b| (b * 31 % 251) as u8)
                .collect();
            http.post(url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body)
                .send()
                .await
                .map(|r| r.status().as_u16())
        }));
    }
    for g in garbage {
        let status = g.await.unwrap().unwrap();
        assert!(matches!(status, 400 | 401 | 413), "{status}");
    }
    // An 8 MiB body is refused on its declared length, without waiting for
    // (or reading) the body.
    let mut conn = tokio::net::TcpStream::connect(s.base.trim_start_matches("http://"))
        .await
        .unwrap();
    conn.write_all(
        b"POST /oauth/token HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 8388608\r\n\r\n{{{{",
    )
    .await
    .unwrap();
    let mut head = [0u8; 12];
    tokio::time::timeout(WAIT, conn.read_exact(&mut head))
        .await
        .expect("answered without the body")
        .unwrap();
    assert_eq!(&head, b"HTTP/1.1 413");
    // Another client is unaffected.
    let other = s.credential("other", "").await;
    assert_eq!(s.token_json(&other, json!({})).await.status(), 200);
}

#[tokio::test]
async fn rotation_without_grace_ends_the_old_secret_and_its_tokens() {
    let s = Server::start("rotate", &[]).await;
    let verifier = s.verifier().await;
    let old = s.credential("ci", "").await;
    let old_token = s.token(&old).await;
    verifier.verify(&old_token, jiff::Timestamp::now()).unwrap();

    let new = s.rotate("ci", &old).await;
    // Once the rotation is reconciled the old secret is refused...
    eventually(WAIT, "the old secret to be refused", || async {
        (s.token_json(&old, json!({})).await.status() == 401).then_some(())
    })
    .await;
    // ...its tokens are rejected, and the new secret works.
    eventually(WAIT, "the old token to be rejected", || async {
        (verifier.verify(&old_token, jiff::Timestamp::now()).err() == Some(VerifyError::Inactive))
            .then_some(())
    })
    .await;
    let new_token = s.token(&new).await;
    assert_eq!(decode_part(&new_token, 1)["rot"], 1);
    verifier.verify(&new_token, jiff::Timestamp::now()).unwrap();
}

#[tokio::test]
async fn with_a_grace_period_both_secrets_work_until_it_ends() {
    let s = Server::start("grace", &[]).await;
    let verifier = s.verifier().await;
    let old = s
        .credential("ci", "  rotation:\n    gracePeriod: 10s\n")
        .await;
    let old_token = s.token(&old).await;

    let new = s.rotate("ci", &old).await;
    eventually(WAIT, "the new secret to work", || async {
        (s.token_json(&new, json!({})).await.status() == 200).then_some(())
    })
    .await;
    // During the grace period: old secret, tokens it issued, and new tokens.
    let during = s.token(&old).await;
    verifier.verify(&old_token, jiff::Timestamp::now()).unwrap();
    verifier.verify(&during, jiff::Timestamp::now()).unwrap();

    let creds = Api::<ApiCredential>::namespaced(s.client.clone(), &s.ns.name);
    let expires = creds
        .get("ci")
        .await
        .unwrap()
        .status
        .unwrap()
        .previous_secret_expires_at
        .unwrap()
        .0;
    eventually(WAIT, "the old secret to stop working", || async {
        (s.token_json(&old, json!({})).await.status() == 401).then_some(())
    })
    .await;
    assert!(
        jiff::Timestamp::now() >= expires,
        "refused before the grace period ended"
    );
    for token in [&old_token, &during] {
        assert_eq!(
            verifier.verify(token, jiff::Timestamp::now()).err(),
            Some(VerifyError::Inactive)
        );
    }
    s.token(&new).await;
}

/// Revocation reaches the token endpoint and the verifier through the
/// watch, with no restart. (How fast is a figure, printed here; the
/// machine's load is not the operator's.)
#[tokio::test]
async fn revocation_takes_effect_without_a_restart() {
    let s = Server::start("revoke", &[]).await;
    let verifier = s.verifier().await;
    let cred = s.credential("ci", "").await;
    let token = s.token(&cred).await;

    let started = Instant::now();
    s.patch("ci", r#"{"spec":{"revoked":true}}"#);
    eventually(WAIT, "the endpoint to refuse the client", || async {
        (s.token_json(&cred, json!({})).await.status() == 401).then_some(())
    })
    .await;
    eventually(WAIT, "the verifier to reject its token", || async {
        verifier
            .verify(&token, jiff::Timestamp::now())
            .is_err()
            .then_some(())
    })
    .await;
    eprintln!(
        "revocation enforced {:?} after the patch",
        started.elapsed()
    );
    // Revoked answers exactly like a wrong secret.
    let body: Value = s.token_json(&cred, json!({})).await.json().await.unwrap();
    assert_eq!(body["error"], "invalid_client");
}

#[tokio::test]
async fn signing_key_rotation_publishes_before_signing_and_keeps_old_keys() {
    let s = Server::start(
        "keys",
        &[
            "--signing-key-rotation",
            "5s",
            "--signing-key-publish-delay",
            "3s",
        ],
    )
    .await;
    let verifier = s.verifier().await;
    let cred = s.credential("ci", "").await;
    let first = s.token(&cred).await;
    let first_kid = decode_part(&first, 0)["kid"].as_str().unwrap().to_owned();

    // Watch the JWKS and the tokens side by side until a new kid signs.
    let published_at = std::sync::Mutex::new(None);
    let signed_at = eventually(WAIT, "a token signed by a new key", || async {
        let jwks: Value = s
            .http
            .get(s.url("/.well-known/jwks.json"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let kids: Vec<String> = jwks["keys"]
            .as_array()?
            .iter()
            .filter_map(|k| k["kid"].as_str().map(String::from))
            .collect();
        if kids.iter().any(|k| *k != first_kid) {
            published_at
                .lock()
                .unwrap()
                .get_or_insert_with(Instant::now);
        }
        let token = s.token(&cred).await;
        let kid = decode_part(&token, 0)["kid"].as_str()?.to_owned();
        (kid != first_kid).then(|| (Instant::now(), token, kid))
    })
    .await;
    let published_at = published_at
        .into_inner()
        .unwrap()
        .expect("the new key was published");
    assert!(
        published_at < signed_at.0,
        "a key signed before it was published"
    );

    // The first token still verifies, through our verifier and Authlib's.
    verifier.verify(&first, jiff::Timestamp::now()).unwrap();
    verifier
        .verify(&signed_at.1, jiff::Timestamp::now())
        .unwrap();
    let out = s.authlib(&cred, "client_secret_post");
    assert_eq!(out["header"]["kid"], signed_at.2.as_str());
}

#[tokio::test]
async fn last_used_at_moves_and_is_written_at_most_once_a_minute() {
    // 200 tokens for one credential: its issuance limit is off here.
    let s = Server::start("usage", &["--token-rate-limit", "0"]).await;
    let cred = s.credential("ci", "").await;
    let creds = Api::<ApiCredential>::namespaced(s.client.clone(), &s.ns.name);
    let used = eventually(WAIT, "lastUsedAt to be set", || async {
        let c = creds.get("ci").await.ok()?;
        c.status?
            .last_used_at
            .map(|t| (t.0, c.metadata.resource_version))
    })
    .await;
    assert!(jiff::Timestamp::now().duration_since(used.0) < jiff::SignedDuration::from_mins(2));

    // Under load the status is not written again within the minute.
    let mut load = Vec::new();
    for _ in 0..8 {
        let (http, url, body) = (
            s.http.clone(),
            s.url("/oauth/token"),
            json!({"client_id": cred.id, "client_secret": cred.secret, "grant_type": "client_credentials"}),
        );
        load.push(tokio::spawn(async move {
            for _ in 0..25 {
                let r = http.post(&url).json(&body).send().await.unwrap();
                assert_eq!(r.status(), 200);
            }
        }));
    }
    for l in load {
        l.await.unwrap();
    }
    // Every token issued has been noted and decided on (written, skipped
    // within the interval, or dropped) before the status is compared.
    let admin = s.readyz.trim_end_matches("/readyz");
    eventually(WAIT, "every use to be noted", || async {
        let text = metrics(admin).await;
        let sum = |prefix: &str| -> f64 {
            text.lines()
                .filter(|l| l.starts_with(prefix))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum()
        };
        let issued = sum("catalio_tokens_issued_total");
        (issued > 200.0 && sum("catalio_usage_notes_total") == issued).then_some(())
    })
    .await;
    let after = creds.get("ci").await.unwrap();
    assert_eq!(
        after.metadata.resource_version, used.1,
        "no write within the minute"
    );
    assert_eq!(after.status.unwrap().last_used_at.unwrap().0, used.0);
}

/// A client that gets one token and calls the API all day is not idle: an
/// authenticated API call counts as a use. With `--last-used-interval 1s`,
/// lastUsedAt moves past the token's issuance while no token is issued.
#[tokio::test]
async fn api_calls_move_last_used_at() {
    let s = Server::start("usage-api", &["--last-used-interval", "1s"]).await;
    let cred = s.credential("ci", "").await;
    let token = s.token(&cred).await;
    let creds = Api::<ApiCredential>::namespaced(s.client.clone(), &s.ns.name);
    let issued = eventually(WAIT, "lastUsedAt to record the issuance", || async {
        creds
            .get("ci")
            .await
            .ok()?
            .status?
            .last_used_at
            .map(|t| t.0)
    })
    .await;
    let admin = s.readyz.trim_end_matches("/readyz");
    let tokens_issued = sample(&metrics(admin).await, "catalio_tokens_issued_total");
    let called = eventually(WAIT, "an API call to move lastUsedAt", || async {
        let r = s
            .http
            .get(s.url("/api/v1/requirements"))
            .bearer_auth(&token)
            .header("accept", "application/vnd.api+json")
            .send()
            .await
            .ok()?;
        assert_eq!(r.status(), 200);
        let now = creds.get("ci").await.ok()?.status?.last_used_at?.0;
        (now > issued).then_some(now)
    })
    .await;
    assert_eq!(
        sample(&metrics(admin).await, "catalio_tokens_issued_total"),
        tokens_issued,
        "no token was issued meanwhile"
    );
    assert!(jiff::Timestamp::now() >= called);
}

#[tokio::test]
async fn neither_secrets_nor_tokens_reach_the_logs() {
    let s = Server::start("logs", &[]).await;
    let cred = s.credential("ci", "").await;
    let token = s.token(&cred).await;
    let basic = STANDARD.encode(format!("{}:{}", cred.id, cred.secret));
    let r = s
        .http
        .post(s.url("/oauth/token"))
        .header("authorization", format!("Basic {basic}"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let second = r.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let wrong = Credential {
        id: cred.id.clone(),
        secret: format!("{}x", cred.secret),
    };
    assert_eq!(s.token_json(&wrong, json!({})).await.status(), 401);

    let logs = s.operator.logs();
    assert!(logs.contains("request refused"), "debug logs were captured");
    for needle in [&cred.secret, &wrong.secret, &token, &second, &basic] {
        assert!(
            !logs.contains(needle.as_str()),
            "a secret or token is in the logs"
        );
    }
    // Nor the signature part alone.
    let signature = token.rsplit('.').next().unwrap();
    assert!(!logs.contains(signature));
}

#[tokio::test]
async fn sigterm_under_load_fails_no_request_in_flight() {
    let mut s = Server::start(
        "sigterm",
        &["--shutdown-delay", "10s", "--token-rate-limit", "0"],
    )
    .await;
    let cred = s.credential("ci", "").await;
    let body = json!({
        "client_id": cred.id, "client_secret": cred.secret, "grant_type": "client_credentials",
    });
    // A fresh connection per request, so each one is in flight on its own.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let mut in_flight = Vec::new();
    for _ in 0..64 {
        let (http, url, body) = (http.clone(), s.url("/oauth/token"), body.clone());
        in_flight.push(tokio::spawn(async move {
            http.post(url)
                .json(&body)
                .send()
                .await
                .map(|r| r.status().as_u16())
        }));
    }
    // Stop it as the kubelet would, with the requests on their way.
    std::process::Command::new("kill")
        .args(["-TERM", &s.operator.pid().to_string()])
        .status()
        .unwrap();
    // It leaves its Service at once but keeps serving while it drains.
    eventually(WAIT, "/readyz to turn unready", || async {
        (s.http.get(&s.readyz).send().await.ok()?.status() == 503).then_some(())
    })
    .await;
    assert_eq!(s.token_json(&cred, json!({})).await.status(), 200);
    let status = tokio::task::spawn_blocking(move || {
        let status = s.operator.terminate(Duration::from_secs(20));
        (status, s)
    });
    for request in in_flight {
        assert_eq!(
            request.await.unwrap().ok(),
            Some(200),
            "a request in flight failed"
        );
    }
    let (status, s) = status.await.unwrap();
    let status = status.expect("the operator exits after SIGTERM");
    assert!(status.success(), "exit status {status}");
    let logs = s.operator.logs();
    assert!(
        logs.contains("draining before the listener closes"),
        "{logs}"
    );
}

#[tokio::test]
async fn metrics_move_with_a_lifecycle() {
    let s = Server::start("metrics", &[]).await;
    let cred = s.credential("ci", "").await;
    let admin = s.readyz.trim_end_matches("/readyz");
    let scrape = || metrics(admin);
    let before = scrape().await;
    s.token(&cred).await;
    let wrong = Credential {
        id: cred.id.clone(),
        secret: "wrong".into(),
    };
    assert_eq!(s.token_json(&wrong, json!({})).await.status(), 401);
    let after = scrape().await;

    let delta = |series: &str| sample(&after, series) - sample(&before, series);
    assert_eq!(
        delta("catalio_tokens_issued_total"),
        1.0,
        "{before}\n---\n{after}"
    );
    assert_eq!(
        delta("catalio_tokens_refused_total{reason=\"invalid_client\"}"),
        1.0
    );
    assert_eq!(
        delta("catalio_http_requests_total{route=\"token\",status=\"200\"}"),
        1.0
    );
    assert_eq!(
        delta("catalio_http_requests_total{route=\"token\",status=\"401\"}"),
        1.0
    );
    // A reconcile is counted when it returns, after the status it wrote
    // (what made the credential Active) is visible.
    eventually(WAIT, "the reconcile to be counted", || async {
        let now = scrape().await;
        (sample(&now, "catalio_reconciles_total{result=\"ok\"}") >= 1.0).then_some(())
    })
    .await;
    assert_eq!(sample(&after, "catalio_credentials{phase=\"Active\"}"), 1.0);
    assert!(after.contains("catalio_reconcile_duration_seconds_bucket"));
    assert!(after.contains("catalio_http_request_duration_seconds_bucket{le="));
    // No request data in labels.
    assert!(!after.contains(&cred.id));
}
