//! The signing floor of the token endpoint: `SigningKey::sign` (what
//! `POST /oauth/token` calls) in a loop on one thread, with claims the size
//! of a real token's. `bench/token.sh` runs it pinned beside `openssl speed`,
//! so the operator's rate can be read against both. With `jti`, it calls
//! `new_jti` instead, the other piece of randomness every token takes.
//!
//!     bench_sign RS256|ES256 SECONDS   prints signs per second
//!     bench_sign jti SECONDS           prints token ids per second

use std::time::Instant;

use catalio_operator::token::{Algorithm, SigningKey, StoredKey};

fn main() {
    let mut args = std::env::args().skip(1);
    let alg = args.next();
    let seconds: f64 = args
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| usage());
    let alg = match alg.as_deref() {
        Some("RS256") => Algorithm::Rs256,
        Some("ES256") => Algorithm::Es256,
        Some("jti") => return per_second(seconds, catalio_operator::token::new_jti),
        _ => usage(),
    };
    let now = jiff::Timestamp::now();
    let stored = StoredKey::generate(alg, now, now).expect("key generation");
    let key = SigningKey::load(&stored).expect("a fresh key loads");
    let claims = br#"{"iss":"https://catalio-operator.catalio-system.svc","sub":"ci_0123456789abcdef0123","aud":"https://catalio.ai/api/v1","exp":1796083200,"iat":1795996800,"nbf":1795996800,"jti":"3q2-7wAAAAAAAAAAAAAAAA","scope":"*","org":"bench-rs256","sid":"0123456789abcdef","cred":"load","client_id":"ci_0123456789abcdef0123"}"#;

    let start = Instant::now();
    let mut signed = 0u64;
    while start.elapsed().as_secs_f64() < seconds {
        for _ in 0..64 {
            std::hint::black_box(key.sign(claims).expect("signing"));
        }
        signed += 64;
    }
    println!("{:.0}", signed as f64 / start.elapsed().as_secs_f64());
}

/// Calls of `f` per second, in batches of 64, for `seconds`.
fn per_second<T>(seconds: f64, mut f: impl FnMut() -> T) {
    let start = Instant::now();
    let mut calls = 0u64;
    while start.elapsed().as_secs_f64() < seconds {
        for _ in 0..64 {
            std::hint::black_box(f());
        }
        calls += 64;
    }
    println!("{:.0}", calls as f64 / start.elapsed().as_secs_f64());
}

fn usage() -> ! {
    eprintln!("usage: bench_sign RS256|ES256|jti SECONDS");
    std::process::exit(2);
}
