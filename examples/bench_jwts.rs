//! Fresh JWTs for `bench/clients.sh`, signed ahead of a load run so that
//! signing them costs the client nothing while it runs: `private_key_jwt`
//! assertions and DPoP proofs each carry a `jti` the server accepts once,
//! so every request needs its own.
//!
//!     bench_jwts key RS256|ES256                  a new key (JSON) on stdout
//!     bench_jwts jwk KEY                          its public JWK
//!     bench_jwts assertion KEY CLIENT_ID AUD N    N client assertions, a line each
//!     bench_jwts outside KEY ISS SUB AUD          one outside issuer's token (1 h)
//!     bench_jwts proof KEY METHOD URL TOKEN N     N DPoP proofs for TOKEN (- for none,
//!                                                 as at the token endpoint), a line each
//!     bench_jwts cost SECONDS                     microseconds per check, in process
//!
//! KEY is a file written by `key`. Assertions live 5 minutes, the most the
//! server takes; proofs say they were made 50 s from now, so that they stay
//! within the server's minute either way for the next 110 s.

use std::io::{BufWriter, Write};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use catalio_operator::token::{Algorithm, SigningKey, StoredKey, dpop};
use serde_json::{Value, json};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let now = jiff::Timestamp::now().as_second();
    match args.as_slice() {
        ["key", alg] => {
            let alg = match *alg {
                "RS256" => Algorithm::Rs256,
                "ES256" => Algorithm::Es256,
                _ => usage(),
            };
            let at = jiff::Timestamp::now();
            let stored = StoredKey::generate(alg, at, at).expect("key generation");
            println!("{}", serde_json::to_string(&stored).unwrap());
        }
        ["jwk", key] => println!("{}", public_jwk(&load(key))),
        ["assertion", key, client_id, aud, n] => {
            let key = load(key);
            let header = json!({"alg": key.alg.as_str(), "typ": "JWT", "kid": key.kid});
            lines(count(n), |_| {
                let claims = json!({"iss": client_id, "sub": client_id, "aud": aud,
                    "iat": now, "exp": now + 300, "jti": fresh_id()});
                signed(&key, &header, &claims)
            });
        }
        ["outside", key, iss, sub, aud] => {
            let key = load(key);
            let header = json!({"alg": key.alg.as_str(), "typ": "JWT", "kid": key.kid});
            let claims = json!({"iss": iss, "sub": sub, "aud": aud, "iat": now,
                "nbf": now, "exp": now + 3600, "jti": fresh_id()});
            println!("{}", signed(&key, &header, &claims));
        }
        ["proof", key, method, url, token, n] => {
            let key = load(key);
            let header = json!({"typ": dpop::PROOF_TYPE, "alg": key.alg.as_str(),
                "jwk": public_jwk(&key)});
            let ath = (*token != "-").then(|| dpop::token_hash(token));
            lines(count(n), |_| {
                let mut claims = json!({"jti": fresh_id(), "htm": method, "htu": url,
                    "iat": now + 50});
                if let Some(ath) = &ath {
                    claims["ath"] = json!(ath);
                }
                signed(&key, &header, &claims)
            });
        }
        ["cost", seconds] => costs(seconds.parse().unwrap_or_else(|_| usage())),
        _ => usage(),
    }
}

/// What each way of authenticating adds to a request, on one thread: the
/// checks the server runs on an ES256 assertion, an outside issuer's RS256
/// token (keys in hand) and an ES256 DPoP proof, each on the same JWT again
/// and again (the replay table, a hash map insert, is not in them).
fn costs(seconds: f64) {
    use catalio_operator::federation::{IssuerConfig, verify_with};
    use catalio_operator::server::oauth::client::key_assertion;
    use catalio_operator::token::jwks::PublicKeys;

    let at = jiff::Timestamp::now();
    let now = at.as_second();
    let key = |alg| SigningKey::load(&StoredKey::generate(alg, at, at).unwrap()).unwrap();
    let keys = |key: &SigningKey| {
        PublicKeys::parse(json!({"keys": [public_jwk(key)]}).to_string().as_bytes()).unwrap()
    };
    let (client, outside) = (key(Algorithm::Es256), key(Algorithm::Rs256));
    let (client_keys, outside_keys) = (keys(&client), keys(&outside));
    let id = "ci_0123456789abcdef0123";
    let aud = "https://catalio.example/oauth/token";
    let header = |key: &SigningKey| json!({"alg": key.alg.as_str(), "typ": "JWT", "kid": key.kid});
    let claims = json!({"iss": id, "sub": id, "aud": aud, "iat": now, "exp": now + 300,
        "jti": fresh_id()});
    let assertion = signed(&client, &header(&client), &claims);
    let issuer = IssuerConfig {
        name: "ci".into(),
        issuer: "https://ci.example".into(),
        audiences: vec!["https://catalio.ai".into()],
        ca_bundle: None,
        jwks: None,
    };
    let claims = json!({"iss": issuer.issuer, "sub": "repo:org/app:ref:refs/heads/main",
        "aud": "https://catalio.ai", "iat": now, "nbf": now, "exp": now + 3600});
    let token = signed(&outside, &header(&outside), &claims);
    let url = "https://catalio.example/api/v1/requirements/one";
    let access = "eyJhbGciOiJFUzI1NiJ9.e30.c2lnbmF0dXJl";
    let proof_header = json!({"typ": dpop::PROOF_TYPE, "alg": "ES256", "jwk": public_jwk(&client)});
    let claims = json!({"jti": fresh_id(), "htm": "GET", "htu": url, "iat": now,
        "ath": dpop::token_hash(access)});
    let proof = signed(&client, &proof_header, &claims);
    let claims = br#"{"iss":"https://catalio.ai","sub":"ci_0123456789abcdef0123","aud":"https://catalio.ai/api/v1","exp":1796083200,"iat":1795996800,"jti":"3q2-7wAAAAAAAAAAAAAAAA","scope":"*"}"#;

    let micros = |check: &dyn Fn() -> bool| {
        assert!(check(), "the check refuses what it should take");
        let start = std::time::Instant::now();
        let mut calls = 0u64;
        while start.elapsed().as_secs_f64() < seconds {
            for _ in 0..16 {
                std::hint::black_box(check());
            }
            calls += 16;
        }
        start.elapsed().as_secs_f64() * 1e6 / calls as f64
    };
    let rows: [(&str, &dyn Fn() -> bool); 4] = [
        ("ES256 access token signed", &|| client.sign(claims).is_ok()),
        ("ES256 client assertion checked", &|| {
            key_assertion(&client_keys, &assertion, id, &[aud], at).is_ok()
        }),
        ("RS256 outside token checked", &|| {
            verify_with(&outside_keys, &issuer, &token, at).is_ok()
        }),
        ("ES256 DPoP proof checked", &|| {
            dpop::verify(&proof, "GET", url, Some(access), at).is_ok()
        }),
    ];
    for (name, check) in rows {
        println!("{name}	{:.1}", micros(check));
    }
}

fn load(path: &str) -> SigningKey {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| fail(&format!("{path}: {e}")));
    let stored: StoredKey =
        serde_json::from_str(&text).unwrap_or_else(|e| fail(&format!("{path}: {e}")));
    SigningKey::load(&stored).unwrap_or_else(|e| fail(&e.to_string()))
}

/// The key's public JWK with its `kid`, without our `use` and `alg`.
fn public_jwk(key: &SigningKey) -> Value {
    let mut jwk = key.jwk().clone();
    if let Some(members) = jwk.as_object_mut() {
        members.remove("use");
        members.remove("alg");
    }
    jwk
}

/// A compact JWS of `claims` under `header`.
fn signed(key: &SigningKey, header: &Value, claims: &Value) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = key.sign_raw(input.as_bytes()).expect("signing");
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

fn fresh_id() -> String {
    let mut id = [0u8; 16];
    getrandom::fill(&mut id).expect("randomness");
    URL_SAFE_NO_PAD.encode(id)
}

fn lines(n: u64, mut make: impl FnMut(u64) -> String) {
    let mut out = BufWriter::new(std::io::stdout().lock());
    for i in 0..n {
        writeln!(out, "{}", make(i)).unwrap_or_else(|e| fail(&e.to_string()));
    }
    out.flush().unwrap_or_else(|e| fail(&e.to_string()));
}

fn count(n: &str) -> u64 {
    n.parse().unwrap_or_else(|_| usage())
}

fn fail(why: &str) -> ! {
    eprintln!("bench_jwts: {why}");
    std::process::exit(1);
}

fn usage() -> ! {
    eprintln!(
        "usage: bench_jwts key RS256|ES256 | jwk KEY | assertion KEY CLIENT_ID AUD N\n       \
         | outside KEY ISS SUB AUD | proof KEY METHOD URL TOKEN N"
    );
    std::process::exit(2);
}
