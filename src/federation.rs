//! Workload identity federation: tokens from outside issuers that the
//! cluster administrator trusts (GitHub Actions, another cluster, a CI
//! system), presented as client assertions by credentials whose
//! `spec.federation` names their subject.
//!
//! Issuers come from a file the administrator writes (`--trusted-issuers`,
//! the chart's `federation.issuers`), never from a tenant, so the operator
//! only ever fetches URLs the administrator chose. Each issuer's keys come
//! from its OpenID discovery document and JWKS over HTTPS (optionally
//! trusting only a given CA bundle), or inline for air-gapped clusters;
//! fetched on first use and again for an unknown key id (at most every
//! [`REFRESH_FLOOR`]), and kept through the issuer's outages.

use std::path::Path;
use std::time::Duration;

use jiff::Timestamp;
use serde::Deserialize;

use crate::crd::credential::FederatedIdentity;
use crate::token::jwks::{self, KeyCache, KeySource, PublicKeys, Refusal};

/// An issuer's keys are fetched again for an unknown key id at most this
/// often.
pub const REFRESH_FLOOR: Duration = Duration::from_secs(30);
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Clock skew tolerated on an outside token's `exp` and `nbf`.
const LEEWAY: u64 = 30;

/// One issuer as the administrator declares it.
#[derive(Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IssuerConfig {
    /// What credentials call it in `spec.federation[].issuer`.
    pub name: String,
    /// Its `iss`, an https URL.
    pub issuer: String,
    /// Audiences a token must carry one of.
    pub audiences: Vec<String>,
    /// PEM certificates to trust, alone, for its discovery and JWKS.
    #[serde(default)]
    pub ca_bundle: Option<String>,
    /// Its keys, given here: nothing is fetched.
    #[serde(default)]
    pub jwks: Option<serde_json::Value>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    issuers: Vec<IssuerConfig>,
}

/// A trusted issuer with its keys.
pub struct Issuer {
    pub config: IssuerConfig,
    keys: KeyCache,
}

/// Every trusted issuer.
#[derive(Default)]
pub struct Federation {
    issuers: Vec<Issuer>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {0}: {1}")]
    Read(String, std::io::Error),
    #[error("{0}")]
    Invalid(String),
}

/// The parts of an outside token that decide who it is.
#[derive(Debug, PartialEq)]
pub struct Identity {
    pub subject: String,
    pub expires: i64,
    /// Every claim, to match `spec.federation[].claims` against.
    pub claims: serde_json::Map<String, serde_json::Value>,
}

impl Federation {
    /// The issuers of `path` (YAML or JSON): none when no path is given.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let Some(path) = path else {
            return Ok(Self::default());
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::Read(path.display().to_string(), e))?;
        Self::parse(&text)
    }

    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let invalid = |m: String| ConfigError::Invalid(m);
        let file: ConfigFile = serde_saphyr::from_str(text).map_err(|e| invalid(e.to_string()))?;
        let mut issuers: Vec<Issuer> = Vec::new();
        for config in file.issuers {
            if !crate::crd::is_object_name(&config.name) || config.name.contains('.') {
                return Err(invalid(format!(
                    "issuer name {:?} is not a DNS label",
                    config.name
                )));
            }
            if issuers.iter().any(|i| i.config.name == config.name) {
                return Err(invalid(format!(
                    "issuer {:?} is declared twice",
                    config.name
                )));
            }
            if !config.issuer.starts_with("https://") {
                return Err(invalid(format!(
                    "issuer {:?}: its URL must be https",
                    config.name
                )));
            }
            if config.audiences.is_empty() {
                return Err(invalid(format!("issuer {:?} needs audiences", config.name)));
            }
            let keys = match &config.jwks {
                Some(jwks) => {
                    let keys = PublicKeys::parse(jwks.to_string().as_bytes())
                        .map_err(|e| invalid(format!("issuer {:?}: {e}", config.name)))?;
                    KeyCache::fixed(keys)
                }
                None => KeyCache::new(Box::new(Discovery::new(&config)?), REFRESH_FLOOR),
            };
            issuers.push(Issuer { config, keys });
        }
        Ok(Self { issuers })
    }

    pub fn is_empty(&self) -> bool {
        self.issuers.is_empty()
    }

    /// The trusted issuer whose `iss` is `url`.
    pub fn by_url(&self, url: &str) -> Option<&Issuer> {
        self.issuers.iter().find(|i| i.config.issuer == url)
    }
}

impl Issuer {
    /// Who `token` is, if one of this issuer's keys signed it for one of
    /// its audiences and it is within its life.
    pub async fn verify(&self, token: &str, now: Timestamp) -> Result<Identity, Refusal> {
        let kid = jwks::key_id(token).ok_or(Refusal::Malformed)?;
        let keys = self.keys.for_kid(&kid).await;
        verify_with(&keys, &self.config, token, now)
    }
}

/// The checks of an outside token against an issuer's keys, without I/O.
pub fn verify_with(
    keys: &PublicKeys,
    config: &IssuerConfig,
    token: &str,
    now: Timestamp,
) -> Result<Identity, Refusal> {
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_issuer(&[&config.issuer]);
    validation.set_audience(&config.audiences);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    validation.validate_nbf = true;
    validation.leeway = LEEWAY;
    let claims: serde_json::Map<String, serde_json::Value> = jwks::verify(keys, token, validation)?;
    // jsonwebtoken checks exp against the system clock; `now` is ours.
    let expires = claims
        .get("exp")
        .and_then(|e| e.as_i64())
        .ok_or(Refusal::Claims("exp"))?;
    if expires + LEEWAY as i64 <= now.as_second() {
        return Err(Refusal::Expired);
    }
    let subject = claims
        .get("sub")
        .and_then(|s| s.as_str())
        .ok_or(Refusal::Claims("sub"))?
        .to_owned();
    Ok(Identity {
        subject,
        expires,
        claims,
    })
}

/// Whether `identity`, from the issuer `issuer` names, is the one a
/// credential's federation entry describes: the same subject, and every
/// claim it lists with exactly its (string) value.
pub fn matches(entry: &FederatedIdentity, issuer: &str, identity: &Identity) -> bool {
    entry.issuer == issuer
        && entry.subject == identity.subject
        && entry
            .claims
            .iter()
            .all(|(k, v)| identity.claims.get(k).and_then(|c| c.as_str()) == Some(v))
}

/// The `iss` of a JWT, unverified: which issuer's keys to try.
pub fn claimed_issuer(token: &str) -> Option<String> {
    use base64::Engine;
    if token.len() > jwks::MAX_TOKEN {
        return None;
    }
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    #[derive(Deserialize)]
    struct Iss {
        iss: String,
    }
    serde_json::from_slice::<Iss>(&bytes).ok().map(|c| c.iss)
}

/// An issuer's keys through its OpenID discovery document.
struct Discovery {
    issuer: String,
    http: reqwest::Client,
}

impl Discovery {
    fn new(config: &IssuerConfig) -> Result<Self, ConfigError> {
        let mut http = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .https_only(true);
        if let Some(pem) = &config.ca_bundle {
            let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes()).map_err(|e| {
                ConfigError::Invalid(format!("issuer {:?}: caBundle: {e}", config.name))
            })?;
            http = http.tls_certs_only(certs);
        }
        Ok(Self {
            issuer: config.issuer.clone(),
            http: http
                .build()
                .map_err(|e| ConfigError::Invalid(format!("issuer {:?}: {e}", config.name)))?,
        })
    }

    async fn get(&self, url: &str) -> Result<Vec<u8>, String> {
        let response = self.http.get(url).send().await.map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("{url} answered {}", response.status()));
        }
        Ok(response.bytes().await.map_err(|e| e.to_string())?.to_vec())
    }
}

impl KeySource for Discovery {
    fn fetch(&self) -> futures::future::BoxFuture<'_, Result<Vec<u8>, String>> {
        Box::pin(async move {
            #[derive(Deserialize)]
            struct Document {
                issuer: String,
                jwks_uri: String,
            }
            let url = format!(
                "{}/.well-known/openid-configuration",
                self.issuer.trim_end_matches('/')
            );
            let document: Document =
                serde_json::from_slice(&self.get(&url).await?).map_err(|e| e.to_string())?;
            if document.issuer != self.issuer {
                return Err(format!(
                    "{url} names issuer {:?}, not {:?}",
                    document.issuer, self.issuer
                ));
            }
            self.get(&document.jwks_uri).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::{Algorithm, SigningKey, StoredKey};
    use serde_json::json;

    fn key(kid: &str) -> (SigningKey, serde_json::Value) {
        let now = Timestamp::now();
        let mut stored = StoredKey::generate(Algorithm::Es256, now, now).unwrap();
        stored.kid = kid.into();
        let key = SigningKey::load(&stored).unwrap();
        let jwks = json!({"keys": [key.jwk()]});
        (key, jwks)
    }

    #[test]
    fn the_administrators_file_is_checked_whole() {
        let (_, jwks) = key("k1");
        let good = format!(
            "issuers:\n- name: ci\n  issuer: https://ci.example\n  audiences: [https://catalio.ai]\n  jwks: {jwks}\n"
        );
        let federation = Federation::parse(&good).unwrap();
        assert!(federation.by_url("https://ci.example").is_some());
        assert!(federation.by_url("https://other.example").is_none());
        for (bad, why) in [
            (
                "issuers:\n- name: ci\n  issuer: http://ci.example\n  audiences: [a]\n",
                "https",
            ),
            (
                "issuers:\n- name: ci\n  issuer: https://ci.example\n  audiences: []\n",
                "audiences",
            ),
            (
                "issuers:\n- name: Not_A_Label\n  issuer: https://x\n  audiences: [a]\n",
                "DNS label",
            ),
            (
                "issuers:\n- name: ci\n  issuer: https://x\n  audiences: [a]\n  extra: 1\n",
                "extra",
            ),
            (
                "issuers:\n- {name: ci, issuer: 'https://x', audiences: [a]}\n- {name: ci, issuer: 'https://y', audiences: [a]}\n",
                "twice",
            ),
        ] {
            let e = Federation::parse(bad).err().expect(bad).to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[tokio::test]
    async fn an_outside_token_is_someone_only_with_the_issuers_key_and_audience() {
        let (signer, jwks) = key("k1");
        let config = format!(
            "issuers:\n- name: ci\n  issuer: https://ci.example\n  audiences: [https://catalio.ai]\n  jwks: {jwks}\n"
        );
        let federation = Federation::parse(&config).unwrap();
        let issuer = federation.by_url("https://ci.example").unwrap();
        let now = Timestamp::now();
        let token = |claims: serde_json::Value| signer.sign(claims.to_string().as_bytes()).unwrap();
        let exp = now.as_second() + 300;
        let good = token(json!({
            "iss": "https://ci.example", "aud": "https://catalio.ai", "sub": "repo:a/b:ref:main",
            "exp": exp, "repository": "a/b", "ref": "refs/heads/main",
        }));
        let identity = issuer.verify(&good, now).await.unwrap();
        assert_eq!(identity.subject, "repo:a/b:ref:main");
        assert_eq!(claimed_issuer(&good).as_deref(), Some("https://ci.example"));
        let entry = FederatedIdentity {
            issuer: "ci".into(),
            subject: "repo:a/b:ref:main".into(),
            claims: [("repository".to_owned(), "a/b".to_owned())].into(),
        };
        assert!(matches(&entry, "ci", &identity));
        let other_claim = FederatedIdentity {
            claims: [("repository".to_owned(), "a/c".to_owned())].into(),
            ..entry.clone()
        };
        assert!(!matches(&other_claim, "ci", &identity));
        assert!(!matches(&entry, "other-issuer", &identity));
        for (what, claims) in [
            (
                "another audience",
                json!({"iss": "https://ci.example", "aud": "https://else", "sub": "s", "exp": exp}),
            ),
            (
                "another issuer",
                json!({"iss": "https://evil.example", "aud": "https://catalio.ai", "sub": "s", "exp": exp}),
            ),
            (
                "expired",
                json!({"iss": "https://ci.example", "aud": "https://catalio.ai", "sub": "s", "exp": exp - 3600}),
            ),
            (
                "no subject",
                json!({"iss": "https://ci.example", "aud": "https://catalio.ai", "exp": exp}),
            ),
        ] {
            assert!(issuer.verify(&token(claims), now).await.is_err(), "{what}");
        }
        let (stranger, _) = key("k1");
        let forged = stranger
            .sign(json!({"iss": "https://ci.example", "aud": "https://catalio.ai", "sub": "s", "exp": exp}).to_string().as_bytes())
            .unwrap();
        assert_eq!(issuer.verify(&forged, now).await, Err(Refusal::Signature));
    }
}
