//! Clients that hold keys, against the real binary and control plane:
//! `private_key_jwt` (the credential holds only public keys) with Authlib
//! and oauth4webapi, and every forged assertion refused; DPoP-bound tokens
//! (RFC 9449) with oauth4webapi at the token endpoint and the JSON:API, and
//! a thief who copied the token refused.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use catalio_operator::token::{Algorithm, SigningKey, StoredKey};
use catalio_test_support::{
    Endpoints, OperatorProcess, TestNamespace, cluster, create_credential, eventually, get_json,
    list_status, patch_credential, python,
};
use kube::Client;
use serde_json::{Value, json};

const OPERATOR: &str = env!("CARGO_BIN_EXE_catalio-operator");
const WAIT: Duration = Duration::from_secs(30);
const AUDIENCE: &str = "https://catalio.ai/api/v1";
const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

struct Harness {
    ns: TestNamespace,
    client: Client,
    _operator: OperatorProcess,
    endpoints: Endpoints,
    http: reqwest::Client,
}

impl Harness {
    async fn start(prefix: &str) -> Self {
        let client = cluster().client().await;
        let ns = TestNamespace::new(&client, prefix).await;
        let args = [
            "--namespace",
            &ns.name,
            "--watch-namespaces",
            &ns.name,
            "--token-url",
            "{base}/oauth/token",
            "--issuer",
            "{base}",
        ];
        let (mut operator, endpoints) =
            OperatorProcess::run_serving(OPERATOR, &cluster().kubeconfig, &args);
        operator.wait_ready(&endpoints, WAIT).await;
        Self {
            ns,
            client,
            _operator: operator,
            endpoints,
            http: reqwest::Client::new(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.endpoints.base)
    }

    /// Applies a credential as JSON (a JWK's `n` and `y` would read as
    /// booleans in YAML), waits until it is Active; its client id.
    async fn credential(&self, name: &str, spec: Value) -> String {
        let object = json!({
            "apiVersion": "catalio.ai/v1", "kind": "ApiCredential",
            "metadata": {"name": name}, "spec": spec,
        });
        let out = cluster().kubectl_stdin(
            &["-n", &self.ns.name, "apply", "-f", "-"],
            Some(&object.to_string()),
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        cluster().kubectl_ok(&[
            "-n",
            &self.ns.name,
            "wait",
            "--for=jsonpath={.status.phase}=Active",
            "--timeout=60s",
            &format!("apicredential/{name}"),
        ]);
        cluster().kubectl_ok(&[
            "-n",
            &self.ns.name,
            "get",
            "apicredential",
            name,
            "-o",
            "jsonpath={.status.clientId}",
        ])
    }

    /// `POST /oauth/token` with a client assertion; status and body.
    async fn assert_with(&self, assertion: &str, dpop: Option<&str>) -> (u16, Value) {
        let mut request = self.http.post(self.url("/oauth/token")).form(&[
            ("grant_type", "client_credentials"),
            ("client_assertion_type", ASSERTION_TYPE),
            ("client_assertion", assertion),
        ]);
        if let Some(proof) = dpop {
            request = request.header("dpop", proof);
        }
        let r = request.send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }
}

/// A key the test signs with, and its public JWK under `kid`.
fn key(kid: &str) -> (SigningKey, Value) {
    let now = jiff::Timestamp::now();
    let stored = StoredKey::generate(Algorithm::Es256, now, now).unwrap();
    let key = SigningKey::load(&StoredKey {
        kid: kid.into(),
        ..stored
    })
    .unwrap();
    let jwk = key.jwk().clone();
    (key, jwk)
}

/// A compact JWS of `claims` under `header`, signed by `key`.
fn signed(key: &SigningKey, header: Value, claims: &Value) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = key.sign_raw(input.as_bytes()).unwrap();
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

/// A DPoP proof by `key` for `method url`, with `ath` when a token is given.
fn proof(key: &SigningKey, jwk: &Value, method: &str, url: &str, token: Option<&str>) -> String {
    let mut claims = json!({
        "jti": URL_SAFE_NO_PAD.encode(rand_bytes()), "htm": method, "htu": url,
        "iat": jiff::Timestamp::now().as_second(),
    });
    if let Some(token) = token {
        use sha2::Digest;
        claims["ath"] = json!(URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(token.as_bytes())));
    }
    let mut public = jwk.clone();
    for ours in ["kid", "alg", "use"] {
        public.as_object_mut().unwrap().remove(ours);
    }
    signed(
        key,
        json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": public}),
        &claims,
    )
}

fn rand_bytes() -> [u8; 16] {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).unwrap();
    b
}

fn claims(jwt: &str) -> Value {
    serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(jwt.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap()
}

fn oauth4webapi_dir() -> PathBuf {
    std::env::var_os("CATALIO_TEST_OAUTH4WEBAPI")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").unwrap_or_default();
            PathBuf::from(home).join(".cache/catalio-operator/jsclients/node_modules/oauth4webapi")
        })
}

/// Runs a client script; its JSON output.
fn client(command: &mut Command, what: &str) -> Value {
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{what}: {e}"))
}

fn node(args: &[&str]) -> Command {
    let mut command = Command::new("node");
    command
        .arg(format!(
            "{}/tests/clients/proof_client.mjs",
            catalio_test_support::REPO
        ))
        .arg(args[0])
        .arg(oauth4webapi_dir())
        .args(&args[1..]);
    command
}

#[tokio::test]
async fn private_key_jwt_with_real_clients_and_every_forgery_refused() {
    let h = Harness::start("private-key").await;
    let dir = std::env::temp_dir();
    let authlib_key = dir.join(format!("{}-authlib.json", h.ns.name));
    let js_key = dir.join(format!("{}-oauth4webapi.json", h.ns.name));
    let authlib_public = client(
        Command::new(python())
            .arg(format!(
                "{}/tests/clients/private_key_client.py",
                catalio_test_support::REPO
            ))
            .args(["keygen", authlib_key.to_str().unwrap()]),
        "Authlib keygen",
    );
    let js_public = client(
        &mut node(&["keygen", js_key.to_str().unwrap()]),
        "oauth4webapi keygen",
    );
    let (ours, ours_jwk) = key("rust-1");
    let id = h
        .credential(
            "keys",
            json!({
                "displayName": "Keys only", "clientSecret": "Disabled",
                "clientKeys": {"keys": [authlib_public, js_public, ours_jwk]},
            }),
        )
        .await;
    let token_url = h.url("/oauth/token");

    // Authlib's PrivateKeyJWT (RS256).
    let authlib = eventually(WAIT, "Authlib's token", || async {
        let out = Command::new(python())
            .arg(format!(
                "{}/tests/clients/private_key_client.py",
                catalio_test_support::REPO
            ))
            .args(["token", &token_url, &id, authlib_key.to_str().unwrap()])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| serde_json::from_slice::<Value>(&out.stdout).unwrap())
    })
    .await;
    let token = authlib["access_token"].as_str().unwrap();
    assert_eq!(claims(token)["sid"], "key:authlib-1");
    assert_eq!(claims(token)["client_id"], id.as_str());
    assert_eq!(list_status(&h.endpoints.base, token).await, 200);

    // oauth4webapi's PrivateKeyJwt (ES256, aud: the issuer).
    let js = client(
        &mut node(&[
            "run",
            &h.endpoints.base,
            &id,
            &format!("key:{}", js_key.display()),
            AUDIENCE,
            "no",
        ]),
        "oauth4webapi",
    );
    assert_eq!(js["status"], 200, "{js}");
    assert_eq!(js["claims"]["sid"], "key:oauth4webapi-1");
    let _ = std::fs::remove_file(&authlib_key);
    let _ = std::fs::remove_file(&js_key);

    // Forgeries, each refused alike.
    let now = jiff::Timestamp::now().as_second();
    let assertion =
        |claims: Value| signed(&ours, json!({"alg": "ES256", "kid": "rust-1"}), &claims);
    let base = |extra: Value| {
        let mut c = json!({"iss": id, "sub": id, "aud": token_url, "exp": now + 120, "iat": now,
                           "jti": URL_SAFE_NO_PAD.encode(rand_bytes())});
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    };
    let good = assertion(base(json!({})));
    let (status, body) = h.assert_with(&good, None).await;
    assert_eq!(status, 200, "{body}");
    let from_ours = body["access_token"].as_str().unwrap().to_owned();
    let refused = |answer: (u16, Value)| answer.0 == 401 && answer.1["error"] == "invalid_client";
    assert!(refused(h.assert_with(&good, None).await), "replayed");
    let (stranger, _) = key("rust-1");
    let public = serde_json::to_string(&ours.jwk()).unwrap();
    let hmac = {
        use aws_lc_rs::hmac;
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(json!({"alg": "HS256", "kid": "rust-1"}).to_string()),
            URL_SAFE_NO_PAD.encode(base(json!({})).to_string())
        );
        let k = hmac::Key::new(hmac::HMAC_SHA256, public.as_bytes());
        format!(
            "{input}.{}",
            URL_SAFE_NO_PAD.encode(hmac::sign(&k, input.as_bytes()))
        )
    };
    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(json!({"alg": "none", "kid": "rust-1"}).to_string()),
        URL_SAFE_NO_PAD.encode(base(json!({})).to_string())
    );
    for (what, forged) in [
        (
            "a wrong aud",
            assertion(base(json!({"aud": "https://elsewhere.example/token"}))),
        ),
        (
            "a key not in the JWKS",
            signed(
                &stranger,
                json!({"alg": "ES256", "kid": "rust-1"}),
                &base(json!({})),
            ),
        ),
        ("alg none", none),
        ("HS256 keyed with the public key", hmac),
        (
            "a far-future exp",
            assertion(base(json!({"exp": now + 86_400}))),
        ),
        ("an expired one", assertion(base(json!({"exp": now - 600})))),
        (
            "another client's id",
            assertion(base(json!({"sub": "ci_00000000000000000000000000000000"}))),
        ),
    ] {
        assert!(refused(h.assert_with(&forged, None).await), "{what}");
    }

    // A key taken off the credential ends the tokens it got.
    patch_credential(
        &h.ns.name,
        "keys",
        &json!({"spec": {"clientKeys": {"keys": [authlib_public, js_public]}}}).to_string(),
    );
    eventually(WAIT, "the removed key's token to stop", || async {
        (list_status(&h.endpoints.base, &from_ours).await == 401).then_some(())
    })
    .await;
    assert_eq!(
        list_status(&h.endpoints.base, token).await,
        200,
        "the other key's token stays"
    );

    // Private members are refused by the API server.
    let mut leaked = js_public.clone();
    leaked["d"] = json!("c2VjcmV0");
    let object = json!({
        "apiVersion": "catalio.ai/v1", "kind": "ApiCredential", "metadata": {"name": "leaky"},
        "spec": {"displayName": "x", "clientKeys": {"keys": [leaked]}},
    });
    let out = cluster().kubectl_stdin(
        &["-n", &h.ns.name, "apply", "--dry-run=server", "-f", "-"],
        Some(&object.to_string()),
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("must be public"));
    let metadata: Value = get_json(&h.url("/.well-known/oauth-authorization-server")).await;
    assert!(
        metadata["token_endpoint_auth_methods_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("private_key_jwt"))
    );
}

#[tokio::test]
async fn dpop_bound_tokens_are_useless_without_their_key() {
    let h = Harness::start("dpop").await;
    let (bound_id, bound_secret) =
        create_credential(&h.client, &h.ns.name, "bound", "  tokenBinding: DPoP\n").await;
    let (free_id, free_secret) = create_credential(&h.client, &h.ns.name, "free", "").await;
    catalio_test_support::access_token(&h.endpoints.base, &free_id, &free_secret, WAIT).await;

    // oauth4webapi with DPoP: a bound token that reads the API, and that a
    // thief cannot use as Bearer, without a proof, or with their own key.
    let run = |id: &str, secret: &str| {
        client(
            &mut node(&[
                "run",
                &h.endpoints.base,
                id,
                &format!("secret:{secret}"),
                AUDIENCE,
                "yes",
            ]),
            "oauth4webapi with DPoP",
        )
    };
    let js = run(&bound_id, &bound_secret);
    // oauth4webapi reports it lowercased; the server answered `DPoP`.
    assert_eq!(js["token_type"], "dpop");
    assert!(
        js["claims"]["cnf"]["jkt"]
            .as_str()
            .is_some_and(|j| j.len() == 43)
    );
    assert_eq!(js["status"], 200, "{js}");
    assert_eq!(js["as_bearer"], 401);
    assert_eq!(js["without_proof"], 401);
    assert_eq!(js["other_key"], 401);
    assert!(
        js["challenge"].as_str().unwrap().starts_with("DPoP "),
        "{js}"
    );
    // A credential that does not require it may still bind its tokens.
    let js = run(&free_id, &free_secret);
    assert_eq!(
        (js["token_type"].as_str(), js["status"].as_u64()),
        (Some("dpop"), Some(200))
    );

    // tokenBinding: DPoP refuses a request without a proof.
    let r = h
        .http
        .post(h.url("/oauth/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", bound_id.as_str()),
            ("client_secret", bound_secret.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"],
        "invalid_dpop_proof"
    );

    // A proof is used once, names the method and URL, and goes with its
    // token.
    let (k, jwk) = key("client");
    let token_url = h.url("/oauth/token");
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", bound_id.as_str()),
        ("client_secret", bound_secret.as_str()),
    ];
    let token_proof = proof(&k, &jwk, "POST", &token_url, None);
    let token_request = |dpop: String| {
        h.http
            .post(&token_url)
            .header("dpop", dpop)
            .form(&form)
            .send()
    };
    let r = token_request(token_proof.clone()).await.unwrap();
    assert_eq!(r.status(), 200);
    let token = r.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        token_request(token_proof).await.unwrap().status(),
        400,
        "replayed at the token endpoint"
    );
    let url = h.url("/api/v1/requirements");
    let get = |dpop: String| {
        h.http
            .get(&url)
            .header("authorization", format!("DPoP {token}"))
            .header("dpop", dpop)
            .send()
    };
    let fresh = proof(&k, &jwk, "GET", &url, Some(&token));
    assert_eq!(get(fresh.clone()).await.unwrap().status(), 200);
    assert_eq!(
        get(fresh).await.unwrap().status(),
        401,
        "replayed at the API"
    );
    assert_eq!(
        get(proof(&k, &jwk, "POST", &url, Some(&token)))
            .await
            .unwrap()
            .status(),
        401,
        "another method"
    );
    assert_eq!(
        get(proof(
            &k,
            &jwk,
            "GET",
            &h.url("/api/v1/personas"),
            Some(&token)
        ))
        .await
        .unwrap()
        .status(),
        401,
        "another URL"
    );
    assert_eq!(
        get(proof(&k, &jwk, "GET", &url, Some("another")))
            .await
            .unwrap()
            .status(),
        401,
        "another token"
    );

    // Introspection says how the token is bound.
    let (gw_id, gw_secret) =
        create_credential(&h.client, &h.ns.name, "gw", "  introspection: true\n").await;
    let answer: Value = h
        .http
        .post(h.url("/oauth/introspect"))
        .basic_auth(&gw_id, Some(&gw_secret))
        .form(&[("token", token.as_str())])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["token_type"], "DPoP");
    assert_eq!(answer["cnf"]["jkt"], claims(&token)["cnf"]["jkt"]);
    let metadata: Value = get_json(&h.url("/.well-known/oauth-authorization-server")).await;
    assert!(
        metadata["dpop_signing_alg_values_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("ES256"))
    );
}
