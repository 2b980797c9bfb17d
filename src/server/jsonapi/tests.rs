//! The JSON:API's HTTP behaviour in process: the routes served by
//! `warp::test` over an in-memory index, tokens signed with an in-memory key
//! and verified against an in-memory credential. Writes never reach these
//! tests (every one is refused before it would); `tests/jsonapi.rs` proves
//! them, and everything else once more, against the real control plane.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use catalio_test_support::jsonapi::{Reply, page_of};
use jiff::Timestamp;
use kube::api::DynamicObject;
use serde_json::{Value, json};

use super::*;
use crate::api::store::{Edit, Entry};
use crate::crd::{ApiCredential, ApiCredentialSpec};
use crate::index::CredentialIndex;
use crate::index::resources::ResourceStore;
use crate::secret::client_id_for_uid;
use crate::token::{AccessClaims, Algorithm, KeyRing, KeyStore, SigningKey, StoredKey};

const ORG: &str = "org-a";
const ISSUER: &str = "https://catalio.ai";
const AUDIENCE: &str = "https://catalio.ai/api/v1";

/// Writes are the API server's: a test that reaches one has gone wrong.
struct NoWrites;

fn no_write() -> Problem {
    Problem::internal("this test reached a write")
}

impl Writes for NoWrites {
    async fn create(
        &self,
        _: &'static ResourceType,
        _: &str,
        _: serde_json::Map<String, Value>,
    ) -> Result<Entry, Problem> {
        Err(no_write())
    }
    async fn patch(
        &self,
        _: &'static ResourceType,
        _: &str,
        _: &str,
        _: serde_json::Map<String, Value>,
        _: Option<String>,
    ) -> Result<Entry, Problem> {
        Err(no_write())
    }
    async fn edit_members(
        &self,
        _: &'static ResourceType,
        _: &str,
        _: &str,
        _: usize,
        _: Edit<'_>,
        _: Option<String>,
    ) -> Result<Entry, Problem> {
        Err(no_write())
    }
    async fn exists(&self, _: &'static ResourceType, _: &str, _: &str) -> Result<bool, Problem> {
        Err(no_write())
    }
}

/// An in-process JSON:API: organizations, credentials and objects in
/// memory, one signing key.
pub(crate) struct Harness {
    api: Arc<JsonApi<ResourceStore, NoWrites>>,
    key: Arc<SigningKey>,
    /// The public key, as the JWKS publishes it.
    pub jwk: String,
    credentials: std::sync::Mutex<u32>,
}

/// The hash key of every harness.
const HASH_KEY: [u8; 32] = [7; 32];
/// The secret of every harness credential.
const SECRET: &[u8] = b"catalio_cs_test";

impl Harness {
    /// No limit on requests.
    pub fn new() -> Self {
        Self::with_limit(RateLimit::new(0, 1))
    }

    pub fn with_limit(limit: RateLimit) -> Self {
        let harness = Self::unlisted(limit, 0);
        harness.api.verifier.index.replace_scope(None, []);
        harness
    }

    /// A harness whose credentials have not been listed, and whose objects
    /// come from `watches` watches that have not listed either.
    fn unlisted(limit: RateLimit, watches: usize) -> Self {
        let now = Timestamp::now();
        let metrics = Metrics::new();
        // Uses are the binary's tests' business (tests/credentials.rs).
        let (usage, _) = crate::usage::UsageRecorder::detached(metrics.clone());
        let stored = StoredKey::generate(Algorithm::Es256, now, now).unwrap();
        let (ring, errors) = KeyRing::load(std::slice::from_ref(&stored), Some(&HASH_KEY));
        assert!(errors.is_empty());
        let keys = KeyStore::new();
        keys.replace(ring);
        let key = Arc::new(SigningKey::load(&stored).unwrap());
        let api = Arc::new(JsonApi {
            index: ResourceStore::new(watches),
            writes: NoWrites,
            verifier: Arc::new(Verifier {
                keys,
                index: CredentialIndex::new(),
                issuer: ISSUER.into(),
                audience: AUDIENCE.into(),
                leeway: Duration::from_secs(60),
                verified: Default::default(),
            }),
            limit,
            quota: Quota {
                objects: 10_000,
                bytes: 32 << 20,
            },
            metrics: metrics.clone(),
            openapi: crate::api::openapi::document("http://catalio.test/oauth/token").to_string(),
            overview: crate::api::overview::document("http://catalio.test/oauth/token").to_string(),
            usage,
            dpop: Dpop {
                public_base: "http://catalio.test".into(),
                replays: Default::default(),
            },
        });
        Harness {
            api,
            jwk: key.jwk().to_string(),
            key,
            credentials: std::sync::Mutex::new(0),
        }
    }

    /// A new credential in `org` with `scopes`, and the claims the token
    /// endpoint would issue it.
    pub fn credential(&self, org: &str, scopes: &[&str]) -> AccessClaims {
        let n = {
            let mut n = self.credentials.lock().unwrap();
            *n += 1;
            *n
        };
        let uid = format!("00000000-0000-4000-8000-{n:012x}");
        let client_id = client_id_for_uid(&uid);
        let hash = crate::secret::SecretHasher::new(&HASH_KEY).hash(&client_id, SECRET);
        let mut cred = ApiCredential::new(
            &format!("cred-{n}"),
            ApiCredentialSpec {
                display_name: "test".into(),
                scopes: scopes.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            },
        );
        cred.metadata.uid = Some(uid);
        cred.metadata.namespace = Some(org.into());
        cred.status = Some(crate::crd::ApiCredentialStatus {
            secret_hash: Some(hash.to_string()),
            ..Default::default()
        });
        self.api.verifier.index.upsert(&cred);
        let iat = Timestamp::now().as_second();
        AccessClaims {
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            sub: client_id.clone(),
            client_id,
            org: org.into(),
            scope: scopes.join(" "),
            iat,
            nbf: iat,
            exp: iat + 3600,
            jti: format!("jti-{n}"),
            rot: 0,
            sid: hash.short_id(),
            cnf: None,
        }
    }

    pub fn sign(&self, claims: &impl serde::Serialize) -> String {
        self.key.sign(&serde_json::to_vec(claims).unwrap()).unwrap()
    }

    /// A token of a new credential in `org` with `scopes`.
    pub fn token(&self, org: &str, scopes: &[&str]) -> String {
        self.sign(&self.credential(org, scopes))
    }

    /// Stores the objects of a multi-document YAML stream in `org`, as
    /// their watches would.
    pub fn apply(&self, org: &str, yaml: &str) {
        let documents = yaml.split("\n---\n").filter(|d| !d.trim().is_empty());
        for (i, document) in documents.enumerate() {
            let mut object: DynamicObject = serde_saphyr::from_str(document).unwrap();
            let kind = object.types.as_ref().unwrap().kind.clone();
            let ty = TYPES.iter().find(|t| t.kind == kind).unwrap();
            // Created together, as one kubectl apply: the same second, a
            // growing version.
            object.metadata.namespace = Some(org.into());
            object.metadata.uid = Some(format!("uid-{org}-{i}"));
            object.metadata.resource_version = Some((i + 1).to_string());
            object.metadata.creation_timestamp =
                Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    Timestamp::from_second(1_800_000_000).unwrap(),
                ));
            let (org, entry) = Entry::from_object(ty, &object).unwrap();
            self.api.index.upsert(ty, &org, entry);
        }
    }

    /// Sends a request through the public routes' JSON:API part and its
    /// recover, as the server does.
    pub async fn send(&self, request: warp::test::RequestBuilder) -> Reply {
        let routes = routes(self.api.clone(), Duration::from_secs(30))
            .recover(crate::server::recover)
            .unify();
        let response = request.reply(&routes).await;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = if response.body().is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(response.body()).unwrap_or_else(|_| {
                panic!(
                    "not JSON ({status}): {}",
                    String::from_utf8_lossy(response.body())
                )
            })
        };
        Reply {
            status,
            headers,
            body,
        }
    }

    /// A JSON:API request with `token`.
    pub fn request(method: &str, path: &str, token: Option<&str>) -> warp::test::RequestBuilder {
        let mut request = warp::test::request()
            .method(method)
            .path(path)
            .header("accept", MEDIA_TYPE);
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        request
    }

    pub async fn get(&self, token: &str, path: &str) -> Reply {
        self.send(Self::request("GET", path, Some(token))).await
    }
}

const DATASET: &str = include_str!("../../../tests/data/dataset.yaml");

#[tokio::test]
async fn the_query_language_gives_exact_results() {
    let h = Harness::new();
    let token = h.token(ORG, &["*:read"]);
    h.apply(ORG, DATASET);
    let ids = |path: &'static str| {
        let h = &h;
        let token = &token;
        async move {
            let r = h.get(token, path).await;
            assert_eq!(r.status, 200, "{path}: {}", r.body);
            r.ids()
        }
    };
    // Filters: any of several values; several filters all apply.
    assert_eq!(
        ids("/api/v1/requirements?filter[status]=active,confirmed&sort=id").await,
        ["r1", "r2", "r4"]
    );
    assert_eq!(
        ids("/api/v1/requirements?filter[priority]=high&filter[persona]=dev").await,
        ["r1"]
    );
    assert_eq!(
        ids("/api/v1/requirements?filter[tags]=export&sort=id").await,
        ["r1", "r5"]
    );
    assert_eq!(
        ids("/api/v1/requirements?filter[components]=ui&sort=id").await,
        ["r2", "r3"]
    );
    assert_eq!(
        ids("/api/v1/requirements?filter[use_cases]=u3").await,
        ["r2"]
    );
    assert_eq!(
        ids("/api/v1/requirements?filter[id]=r6,r3,r9&sort=id").await,
        ["r3", "r6"]
    );
    assert_eq!(
        ids("/api/v1/use_cases?filter[requirement]=r1&sort=-id").await,
        ["u2", "u1"]
    );
    assert_eq!(
        ids("/api/v1/personas?filter[requirements]=r4").await,
        ["pm"]
    );
    // Search: case-insensitive, any text attribute, archived left out.
    assert_eq!(
        ids("/api/v1/requirements?filter[search]=CSV&sort=id").await,
        ["r1", "r5"]
    );
    assert_eq!(
        ids("/api/v1/requirements?filter[search]=recorded").await,
        ["r2"]
    );
    assert_eq!(
        ids("/api/v1/requirements?filter[search]=saml").await,
        ["r6"]
    );
    assert_eq!(
        ids("/api/v1/requirements?filter[archived]=true").await,
        ["r7"]
    );
    assert_eq!(
        ids("/api/v1/requirements?filter[archived]=true&filter[search]=csv").await,
        ["r7"]
    );
    // Sort on several keys; enums in their declared order, ties by the next
    // key.
    assert_eq!(
        ids("/api/v1/requirements?sort=-priority,title").await,
        ["r2", "r6", "r4", "r1", "r5", "r3"]
    );
    assert_eq!(
        ids("/api/v1/requirements?sort=status,-id").await,
        ["r5", "r3", "r4", "r1", "r2", "r6"]
    );
    // Text regardless of case: "csv import preview" between "Bulk import"
    // and "Dark mode".
    assert_eq!(
        ids("/api/v1/requirements?sort=title").await,
        ["r2", "r4", "r5", "r3", "r1", "r6"]
    );

    // Page numbers with links at both edges.
    let r = h
        .get(
            &token,
            "/api/v1/requirements?sort=id&page[number]=2&page[size]=2",
        )
        .await;
    assert_eq!(r.ids(), ["r3", "r4"]);
    assert_eq!(r.body["meta"]["total"], 6);
    let links = &r.body["links"];
    for (link, number) in [
        ("self", "2"),
        ("first", "1"),
        ("prev", "1"),
        ("next", "3"),
        ("last", "3"),
    ] {
        assert_eq!(
            page_of(&links[link], "page[number]").as_deref(),
            Some(number),
            "{link}"
        );
        assert_eq!(
            page_of(&links[link], "page[size]").as_deref(),
            Some("2"),
            "{link}"
        );
        assert_eq!(
            page_of(&links[link], "sort").as_deref(),
            Some("id"),
            "{link} keeps the sort"
        );
    }
    let next = links["next"].as_str().unwrap().to_owned();
    let r = h.get(&token, &next).await;
    assert_eq!(r.ids(), ["r5", "r6"]);
    assert_eq!(r.body["links"]["next"], Value::Null);
    let first = h
        .get(&token, "/api/v1/requirements?sort=id&page[size]=2")
        .await;
    assert_eq!(first.ids(), ["r1", "r2"]);
    assert_eq!(first.body["links"]["prev"], Value::Null);
    let beyond = h
        .get(
            &token,
            "/api/v1/requirements?sort=id&page[number]=9&page[size]=2",
        )
        .await;
    assert!(beyond.ids().is_empty());
    assert_eq!(
        page_of(&beyond.body["links"]["prev"], "page[number]").as_deref(),
        Some("3")
    );
    // Offset and limit.
    let r = h
        .get(
            &token,
            "/api/v1/requirements?sort=id&page[offset]=1&page[limit]=4",
        )
        .await;
    assert_eq!(r.ids(), ["r2", "r3", "r4", "r5"]);
    let links = &r.body["links"];
    for (link, offset) in [("first", "0"), ("prev", "0"), ("next", "5"), ("last", "2")] {
        assert_eq!(
            page_of(&links[link], "page[offset]").as_deref(),
            Some(offset),
            "{link}"
        );
        assert_eq!(
            page_of(&links[link], "page[limit]").as_deref(),
            Some("4"),
            "{link}"
        );
    }
    let r = h
        .get(
            &token,
            "/api/v1/requirements?sort=id&page[offset]=4&page[limit]=4",
        )
        .await;
    assert_eq!(r.ids(), ["r5", "r6"]);
    assert_eq!(r.body["links"]["next"], Value::Null);

    // Sparse fieldsets, for primary and included data alike.
    let r = h
        .get(&token, "/api/v1/requirements/r1?fields[requirement]=title,persona&include=persona&fields[persona]=name")
        .await;
    assert_eq!(
        r.body["data"]["attributes"],
        json!({"title": "Export to CSV"})
    );
    assert_eq!(
        r.body["data"]["relationships"],
        json!({"persona": {"data": {"type": "persona", "id": "dev"}}})
    );
    assert_eq!(
        r.body["included"],
        json!([{
            "type": "persona", "id": "dev", "attributes": {"name": "Developer"},
            "links": {"self": "/api/v1/personas/dev"}
        }])
    );

    // Nested includes: a compound document without duplicates, linkage
    // wherever a path is included.
    let r = h
        .get(&token, "/api/v1/requirements?filter[id]=r1,r2,r3&sort=id&include=persona,use_cases.test_cases.test_results,components")
        .await;
    let included: Vec<(String, String)> = r.body["included"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["type"].as_str().unwrap().into(),
                i["id"].as_str().unwrap().into(),
            )
        })
        .collect();
    let unique: BTreeSet<_> = included.iter().cloned().collect();
    assert_eq!(unique.len(), included.len(), "duplicates in {included:?}");
    let expected: BTreeSet<(String, String)> = [
        ("persona", "dev"),
        ("persona", "pm"),
        ("component", "api"),
        ("component", "ui"),
        ("use_case", "u1"),
        ("use_case", "u2"),
        ("use_case", "u3"),
        ("test_case", "t1"),
        ("test_case", "t2"),
        ("test_result", "x1"),
    ]
    .iter()
    .map(|(t, i)| (t.to_string(), i.to_string()))
    .collect();
    assert_eq!(unique, expected);
    assert_eq!(
        r.body["data"][0]["relationships"]["use_cases"]["data"],
        json!([{"type": "use_case", "id": "u1"}, {"type": "use_case", "id": "u2"}])
    );
    let u1 = r.body["included"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == "u1")
        .unwrap();
    assert_eq!(
        u1["relationships"]["test_cases"]["data"],
        json!([{"type": "test_case", "id": "t1"}, {"type": "test_case", "id": "t2"}])
    );
    assert_eq!(r.ids(), ["r1", "r2", "r3"]);

    // Bad queries are 400 naming the parameter.
    for (path, parameter) in [
        ("/api/v1/requirements?colour=red", "colour"),
        ("/api/v1/requirements?filter[colour]=red", "filter[colour]"),
        (
            "/api/v1/requirements?filter[status]=urgent",
            "filter[status]",
        ),
        ("/api/v1/requirements?sort=-colour", "sort"),
        ("/api/v1/requirements?page[size]=101", "page[size]"),
        ("/api/v1/requirements?page[number]=1&page[offset]=2", "page"),
        (
            "/api/v1/requirements?fields[requirement]=colour",
            "fields[requirement]",
        ),
        ("/api/v1/requirements?include=owner", "include"),
        ("/api/v1/requirements/r1?sort=title", "sort"),
    ] {
        let r = h.get(&token, path).await;
        let (status, code, source) = r.error();
        assert_eq!((status, code.as_str()), (400, "invalid_query"), "{path}");
        assert_eq!(source, json!({"parameter": parameter}), "{path}");
    }
}

/// A request with a JSON:API body.
fn with_body(method: &str, path: &str, token: &str, body: &Value) -> warp::test::RequestBuilder {
    Harness::request(method, path, Some(token))
        .header("content-type", MEDIA_TYPE)
        .body(body.to_string())
}

#[tokio::test]
async fn media_types_documents_and_limits() {
    let h = Harness::new();
    let token = h.token(ORG, &["*:write"]);
    h.apply(
        ORG,
        "apiVersion: catalio.ai/v1\nkind: Requirement\nmetadata: {name: r1}\nspec: {title: One}\n",
    );
    let url = "/api/v1/requirements";
    let good = json!({"data": {"type": "requirement", "attributes": {"title": "x"}}}).to_string();
    let post = |content_type: Option<&str>, accept: Option<&str>, body: String| {
        let mut r = warp::test::request()
            .method("POST")
            .path(url)
            .header("authorization", format!("Bearer {token}"))
            .body(body);
        if let Some(ct) = content_type {
            r = r.header("content-type", ct);
        }
        if let Some(a) = accept {
            r = r.header("accept", a);
        }
        r
    };
    // 415: a body must be JSON:API without extensions or other parameters.
    for ct in [
        None,
        Some("application/json"),
        Some("application/vnd.api+json; charset=utf-8"),
        Some("application/vnd.api+json; ext=\"https://jsonapi.org/ext/atomic\""),
    ] {
        let r = h.send(post(ct, None, good.clone())).await;
        assert_eq!(
            r.error(),
            (
                415,
                "unsupported_media_type".into(),
                json!({"header": "Content-Type"})
            ),
            "{ct:?}"
        );
    }
    // 406: the response must be acceptable.
    let get = |accept: &str| {
        warp::test::request()
            .path(url)
            .header("authorization", format!("Bearer {token}"))
            .header("accept", accept)
    };
    for accept in [
        "application/json",
        "application/vnd.api+json; charset=utf-8",
    ] {
        let r = h.send(get(accept)).await;
        assert_eq!(
            r.error(),
            (406, "not_acceptable".into(), json!({"header": "Accept"})),
            "{accept}"
        );
    }
    let r = h
        .send(get("application/vnd.api+json; profile=\"x\", */*"))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["content-type"], MEDIA_TYPE);
    // 400 for a document that is not one, 409 for type and id conflicts,
    // 403 for client-made ids.
    let r = h
        .send(post(Some(MEDIA_TYPE), None, "{\"data\": ".into()))
        .await;
    assert_eq!(r.error().0, 400);
    let r = h
        .send(post(
            Some(MEDIA_TYPE),
            None,
            json!({"data": {"type": "persona", "attributes": {"name": "x"}}}).to_string(),
        ))
        .await;
    assert_eq!(
        r.error(),
        (
            409,
            "type_conflict".into(),
            json!({"pointer": "/data/type"})
        )
    );
    let r = h
        .send(post(
            Some(MEDIA_TYPE),
            None,
            json!({"data": {"type": "requirement", "id": "mine", "attributes": {"title": "x"}}})
                .to_string(),
        ))
        .await;
    assert_eq!(
        r.error(),
        (
            403,
            "client_id_unsupported".into(),
            json!({"pointer": "/data/id"})
        )
    );
    let conflict =
        json!({"data": {"type": "requirement", "id": "r2", "attributes": {"title": "x"}}});
    let r = h
        .send(with_body(
            "PATCH",
            "/api/v1/requirements/r1",
            &token,
            &conflict,
        ))
        .await;
    assert_eq!(
        r.error(),
        (409, "id_conflict".into(), json!({"pointer": "/data/id"}))
    );
    // 422 with a pointer per invalid member.
    let invalid = json!({"data": {"type": "requirement", "attributes": {"priority": "urgent", "colour": "red"}}});
    let r = h.send(with_body("POST", url, &token, &invalid)).await;
    assert_eq!(r.status, 422);
    let mut pointers: Vec<&str> = r.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["source"]["pointer"].as_str().unwrap())
        .collect();
    pointers.sort();
    assert_eq!(
        pointers,
        [
            "/data/attributes/colour",
            "/data/attributes/priority",
            "/data/attributes/title"
        ]
    );
    // 413 from the declared length alone.
    let r = h
        .send(post(Some(MEDIA_TYPE), None, "{".into()).header("content-length", "8388608"))
        .await;
    assert_eq!(r.error().1, "body_too_large");
    assert_eq!(r.status, 413);
    // Unknown endpoints and methods.
    assert_eq!(h.get(&token, "/api/v1/widgets").await.error().0, 404);
    // The overview, with or without the trailing slash.
    assert_eq!(h.get(&token, "/api/v1/").await.status, 200);
    assert_eq!(
        h.get(&token, "/api/v1/requirements/r1/persona/more")
            .await
            .error()
            .0,
        404
    );
    let r = h
        .send(Harness::request(
            "PUT",
            "/api/v1/requirements/r1",
            Some(&token),
        ))
        .await;
    assert_eq!(r.error().0, 405);
    assert_eq!(r.headers["allow"], "GET, PATCH, DELETE");
    let r = h
        .send(Harness::request(
            "DELETE",
            "/api/v1/requirements",
            Some(&token),
        ))
        .await;
    assert_eq!(r.headers["allow"], "GET, POST");
}

#[tokio::test]
async fn each_organization_has_its_own_rate_limit() {
    // A burst of 40 at 2/s.
    let h = Harness::with_limit(RateLimit::new(2, 40));
    let token = h.token(ORG, &["*:read"]);
    let other = h.token("org-b", &["*:read"]);
    let mut limited = None;
    for _ in 0..60 {
        let r = h.get(&token, "/api/v1/requirements").await;
        if r.status == 429 {
            limited = Some(r);
            break;
        }
        assert_eq!(r.status, 200);
    }
    let r = limited.expect("rate limited within 60 requests");
    assert_eq!(r.error().1, "rate_limited");
    let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert_eq!(retry, 1, "a request comes back every half second");
    assert_eq!(
        h.get(&other, "/api/v1/requirements").await.status,
        200,
        "another organization is not limited"
    );
    tokio::time::sleep(Duration::from_secs(retry)).await;
    assert_eq!(
        h.get(&token, "/api/v1/requirements").await.status,
        200,
        "served again after Retry-After"
    );
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[tokio::test]
async fn every_bad_token_is_401_in_the_seed_format() {
    let h = Harness::new();
    h.apply(ORG, DATASET);
    let claims = h.credential(ORG, &["*:read"]);
    let good = h.sign(&claims);
    assert_eq!(h.get(&good, "/api/v1/personas").await.status, 200);
    let claims = serde_json::to_value(&claims).unwrap();
    let with = |field: &str, value: Value| {
        let mut c = claims.clone();
        c[field] = value;
        h.sign(&c)
    };
    let kid = h.key.kid.clone();
    let now = Timestamp::now().as_second();
    let impostor = {
        let mut stored =
            StoredKey::generate(Algorithm::Es256, Timestamp::now(), Timestamp::now()).unwrap();
        stored.kid = kid.clone();
        SigningKey::load(&stored).unwrap()
    };
    let body = b64(claims.to_string().as_bytes());
    let header = |alg: &str| {
        b64(json!({"alg": alg, "typ": "at+jwt", "kid": kid})
            .to_string()
            .as_bytes())
    };
    let none = format!("{}.{body}.", header("none"));
    // HS256 keyed with what an attacker has: the published JWK.
    let hs256 = |key: &[u8]| {
        let signing_input = format!("{}.{body}", header("HS256"));
        let tag = aws_lc_rs::hmac::sign(
            &aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, key),
            signing_input.as_bytes(),
        );
        format!("{signing_input}.{}", b64(tag.as_ref()))
    };
    let mut expired = claims.clone();
    expired["iat"] = (now - 7200).into();
    expired["nbf"] = (now - 7200).into();
    expired["exp"] = (now - 3600).into();
    let cases: Vec<(&str, Option<String>)> = vec![
        ("missing header", None),
        ("empty bearer", Some("Bearer ".into())),
        ("basic scheme", Some("Basic Y2k6c2VjcmV0".into())),
        ("malformed", Some("Bearer not.a.jwt".into())),
        (
            "wrong signature",
            Some(format!(
                "Bearer {}",
                impostor.sign(claims.to_string().as_bytes()).unwrap()
            )),
        ),
        ("alg none", Some(format!("Bearer {none}"))),
        (
            "HS256 with the JWK",
            Some(format!("Bearer {}", hs256(h.jwk.as_bytes()))),
        ),
        ("expired", Some(format!("Bearer {}", h.sign(&expired)))),
        (
            "wrong audience",
            Some(format!(
                "Bearer {}",
                with("aud", "https://evil.example/api".into())
            )),
        ),
        (
            "wrong issuer",
            Some(format!(
                "Bearer {}",
                with("iss", "https://evil.example".into())
            )),
        ),
        (
            "another organization",
            Some(format!("Bearer {}", with("org", "kube-system".into()))),
        ),
        (
            "a secret that no longer works",
            Some(format!("Bearer {}", with("sid", "0000000000000000".into()))),
        ),
    ];
    for (what, authorization) in cases {
        for (method, path) in [
            ("GET", "/api/v1/personas"),
            ("GET", "/api/v1/personas/dev"),
            ("DELETE", "/api/v1/personas/dev"),
        ] {
            let mut request = warp::test::request()
                .method(method)
                .path(path)
                .header("accept", MEDIA_TYPE);
            if let Some(a) = &authorization {
                request = request.header("authorization", a);
            }
            let r = h.send(request).await;
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
        }
    }
    // The good token was never affected, and every reason was counted.
    assert_eq!(h.get(&good, "/api/v1/personas").await.status, 200);
    let metrics = h.api.metrics.render(None);
    for reason in ["missing", "malformed", "invalid", "expired", "inactive"] {
        assert!(
            metrics.contains(&format!(
                "catalio_api_auth_failures_total{{reason=\"{reason}\"}}"
            )),
            "no {reason} in metrics"
        );
    }
}

#[tokio::test]
async fn scopes_limit_types_reads_and_writes() {
    let h = Harness::new();
    h.apply(ORG, DATASET);
    let read_all = h.token(ORG, &["*:read"]);
    let req_read = h.token(ORG, &["requirement:read"]);
    let req_write = h.token(ORG, &["requirement:write"]);
    let create = json!({"data": {"type": "requirement", "attributes": {"title": "x"}}});
    let patch = json!({"data": {"type": "requirement", "id": "r1", "attributes": {"title": "y"}}});
    // (token, method, path, body, expected status); allowed writes are
    // proved against the API server in tests/jsonapi.rs.
    let cases: Vec<(&str, &str, &str, Option<&Value>, u16)> = vec![
        (&read_all, "GET", "/api/v1/requirements", None, 200),
        (&read_all, "GET", "/api/v1/personas/dev", None, 200),
        (
            &read_all,
            "POST",
            "/api/v1/requirements",
            Some(&create),
            403,
        ),
        (
            &read_all,
            "PATCH",
            "/api/v1/requirements/r1",
            Some(&patch),
            403,
        ),
        (&read_all, "DELETE", "/api/v1/requirements/r1", None, 403),
        (&req_read, "GET", "/api/v1/requirements/r1", None, 200),
        (&req_read, "GET", "/api/v1/personas", None, 403),
        (
            &req_read,
            "POST",
            "/api/v1/requirements",
            Some(&create),
            403,
        ),
        (&req_read, "DELETE", "/api/v1/requirements/r1", None, 403),
        (&req_write, "GET", "/api/v1/personas/dev", None, 403),
        (&req_write, "DELETE", "/api/v1/personas/dev", None, 403),
        (&req_write, "GET", "/api/v1/requirements/r1", None, 200),
    ];
    for (token, method, path, body, expected) in cases {
        let request = match body {
            Some(body) => with_body(method, path, token, body),
            None => Harness::request(method, path, Some(token)),
        };
        let r = h.send(request).await;
        assert_eq!(r.status, expected, "{method} {path}: {}", r.body);
        if expected == 403 {
            let (_, code, _) = r.error();
            assert_eq!(code, "insufficient_scope");
            let challenge = r.headers["www-authenticate"].to_str().unwrap();
            assert!(
                challenge.starts_with("Bearer error=\"insufficient_scope\""),
                "{challenge}"
            );
        }
    }
    // Including objects of a type needs that type's read scope too.
    let r = h
        .get(&req_read, "/api/v1/requirements/r1?include=persona")
        .await;
    assert_eq!(
        r.error(),
        (
            403,
            "insufficient_scope".into(),
            json!({"parameter": "include"})
        )
    );
    let r = h
        .get(
            &req_read,
            "/api/v1/requirements?include=use_cases.test_cases",
        )
        .await;
    assert_eq!(r.error().0, 403);
    let r = h
        .get(
            &read_all,
            "/api/v1/requirements/r1?include=persona,use_cases.test_cases",
        )
        .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn the_openapi_document_is_served_without_a_token() {
    let h = Harness::new();
    let r = h.send(warp::test::request().path("/api/v1/open_api")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["content-type"], "application/json");
    for ty in TYPES {
        assert!(r.body["paths"][format!("/api/v1/{}/{{id}}", ty.endpoint)]["patch"].is_object());
    }
    let r = h
        .send(
            warp::test::request()
                .method("POST")
                .path("/api/v1/open_api"),
        )
        .await;
    assert_eq!(r.error().0, 405);
    assert_eq!(r.headers["allow"], "GET");
}

#[tokio::test]
async fn malformed_ids_are_unknown_on_every_route() {
    let h = Harness::new();
    let token = h.token(ORG, &["*:write"]);
    h.apply(ORG, DATASET);
    let long = "a".repeat(300);
    let ids = [
        "%2E%2E",
        "%2E",
        "x%2Fstatus",
        "r1%2Fstatus",
        "..%2F..%2Fpersonas%2Fdev",
        "UPPER",
        "a_b",
        "-a",
        "a-",
        "a..b",
        "%00",
        "%20",
        "%C3%A9",
        "a%3Fb",
        long.as_str(),
    ];
    let routes: Vec<(&str, String, Option<Value>)> = ids
        .iter()
        .flat_map(|id| {
            let one = format!("/api/v1/requirements/{id}");
            [
                ("GET", one.clone(), None),
                (
                    "PATCH",
                    one.clone(),
                    Some(json!({"data": {"type": "requirement", "id": id}})),
                ),
                ("DELETE", one.clone(), None),
                ("GET", format!("{one}/persona"), None),
                ("GET", format!("{one}/use_cases"), None),
                ("GET", format!("{one}/relationships/components"), None),
                (
                    "PATCH",
                    format!("{one}/relationships/persona"),
                    Some(json!({"data": null})),
                ),
                (
                    "POST",
                    format!("{one}/relationships/components"),
                    Some(json!({"data": []})),
                ),
                (
                    "DELETE",
                    format!("{one}/relationships/components"),
                    Some(json!({"data": []})),
                ),
            ]
        })
        .collect();
    for (method, path, body) in routes {
        let request = match &body {
            Some(body) => with_body(method, &path, &token, body),
            None => Harness::request(method, &path, Some(&token)),
        };
        let r = h.send(request).await;
        // A write that got through would be NoWrites' 500.
        assert_eq!(r.error().0, 404, "{method} {path}: {}", r.body);
        assert!(
            r.body.to_string().len() < 400,
            "the id is echoed in full: {}",
            r.body
        );
    }
}

#[tokio::test]
async fn nothing_about_unreadable_types_shapes_an_answer() {
    let h = Harness::new();
    h.apply(ORG, DATASET);
    let everything = h.token(ORG, &["*:read"]);
    let requirements = h.token(ORG, &["requirement:read"]);
    let writer = h.token(ORG, &["requirement:write"]);

    // With use_case:read, r2's use cases are counted and can filter...
    let r = h.get(&everything, "/api/v1/requirements/r2").await;
    assert_eq!(
        r.body["data"]["relationships"]["use_cases"]["meta"]["count"],
        1
    );
    let r = h
        .get(&everything, "/api/v1/requirements?filter[use_cases]=u3")
        .await;
    assert_eq!(r.ids(), ["r2"]);
    // ...without it, neither: no count, no links, and the filter is refused.
    for path in [
        "/api/v1/requirements/r2",
        "/api/v1/requirements?filter[id]=r2",
        "/api/v1/requirements/r2?fields[requirement]=title,use_cases",
    ] {
        let r = h.get(&requirements, path).await;
        assert_eq!(r.status, 200, "{path}");
        assert!(
            !r.body["data"].to_string().contains("use_cases"),
            "{path} tells about use cases: {}",
            r.body
        );
    }
    let r = h
        .get(&requirements, "/api/v1/requirements?filter[use_cases]=u3")
        .await;
    assert_eq!(
        r.error(),
        (
            403,
            "insufficient_scope".into(),
            json!({"parameter": "filter[use_cases]"})
        )
    );
    // Whether an object exists is about it too: linking to an unreadable
    // type is refused before anything is looked up.
    let linked = json!({"data": {"type": "requirement", "attributes": {"title": "x"},
        "relationships": {"persona": {"data": {"type": "persona", "id": "dev"}}}}});
    let r = h
        .send(with_body("POST", "/api/v1/requirements", &writer, &linked))
        .await;
    assert_eq!(
        r.error(),
        (
            403,
            "insufficient_scope".into(),
            json!({"pointer": "/data/relationships/persona/data"})
        )
    );
    let r = h
        .send(with_body(
            "PATCH",
            "/api/v1/requirements/r1/relationships/persona",
            &writer,
            &json!({"data": {"type": "persona", "id": "nobody"}}),
        ))
        .await;
    assert_eq!(r.error().1, "insufficient_scope");
}

/// 256 components, each linked from 800 requirements: an include path
/// through them reads 200,000 names per level without dedup.
fn dense_graph() -> String {
    let components: Vec<String> = (0..256).map(|c| format!("c{c:03}")).collect();
    let mut yaml: Vec<String> = components
        .iter()
        .map(|c| format!("apiVersion: catalio.ai/v1\nkind: Component\nmetadata: {{name: {c}}}\nspec: {{name: {c}}}\n"))
        .collect();
    let all = components.join(", ");
    for r in 0..800 {
        yaml.push(format!(
            "apiVersion: catalio.ai/v1\nkind: Requirement\nmetadata: {{name: r{r:03}}}\nspec: {{title: R{r}, components: [{all}]}}\n"
        ));
    }
    yaml.join("---\n")
}

#[tokio::test]
async fn include_walks_are_bounded_whatever_the_graph() {
    let h = Harness::new();
    h.apply(ORG, &dense_graph());
    let token = h.token(ORG, &["*:read"]);
    let walk = h.get(
        &token,
        "/api/v1/requirements?page[size]=100&include=components.requirements.components",
    );
    let r = tokio::time::timeout(Duration::from_secs(30), walk)
        .await
        .expect("the include walk answers");
    assert_eq!(
        r.error(),
        (400, "invalid_query".into(), json!({"parameter": "include"}))
    );
    assert!(
        r.body["errors"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("include would")
    );
    // What fits is served: one level of the same graph.
    let r = h
        .get(
            &token,
            "/api/v1/requirements?page[size]=2&include=components",
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["included"].as_array().unwrap().len(), 256);
}

/// Until every watch has listed once, the replica answers 503 with
/// Retry-After rather than a list with objects missing, or a 401 for a
/// token whose credential it has not loaded yet.
#[tokio::test]
async fn a_replica_that_has_not_listed_says_so() {
    let h = Harness::unlisted(RateLimit::new(0, 1), 1);
    let token = h.token(ORG, &["*:read"]);
    let not_ready = |r: &Reply, when: &str| {
        assert_eq!(r.status, 503, "{when}: {:?}", r.body);
        assert_eq!(r.body["errors"][0]["code"], "not_ready", "{when}");
        assert_eq!(r.headers["retry-after"], "1", "{when}");
    };
    not_ready(
        &h.get(&token, "/api/v1/requirements").await,
        "nothing listed",
    );
    // The credentials' first list, then the credential as its watch adds it.
    h.api.verifier.index.replace_scope(None, []);
    let token = h.token(ORG, &["*:read"]);
    not_ready(
        &h.get(&token, "/api/v1/requirements").await,
        "credentials listed, objects not",
    );
    let ty = crate::crd::registry::by_name("requirement").unwrap();
    h.api.index.replace(0, ty, None, []);
    let listed = h.get(&token, "/api/v1/requirements").await;
    assert_eq!(listed.status, 200, "{:?}", listed.body);
    assert_eq!(listed.body["meta"]["total"], 0);
}
