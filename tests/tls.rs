//! HTTPS on the public port, checked by real clients that verify the chain
//! against a CA the test made: curl, Python requests (through Authlib) and
//! oauth4webapi; and a certificate swapped while the server runs, with an
//! open connection carrying on.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use catalio_test_support::pki::{Leaf, TestCa};
use catalio_test_support::{
    OperatorProcess, TestNamespace, clients, cluster, create_credential, eventually, free_port,
};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

const OPERATOR: &str = env!("CARGO_BIN_EXE_catalio-operator");
const WAIT: Duration = Duration::from_secs(30);
const AUDIENCE: &str = "https://catalio.ai/api/v1";

struct Files {
    dir: PathBuf,
}

impl Files {
    fn new() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir =
            std::env::temp_dir().join(format!("catalio-tls-test-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Writes each file beside its place and renames it in, as kubelet
    /// updates a mounted Secret: a reader never sees half a file.
    fn install(&self, leaf: &Leaf) {
        for (name, text) in [("tls.crt", &leaf.cert_pem), ("tls.key", &leaf.key_pem)] {
            let next = self.path(&format!(".{name}.next"));
            std::fs::write(&next, text).unwrap();
            std::fs::rename(&next, self.path(name)).unwrap();
        }
    }

    fn ca(&self, name: &str, ca: &TestCa) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, ca.pem()).unwrap();
        path
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `curl --cacert CA` for a token; the HTTP status, or `None` when curl
/// refuses the connection (as it must for an untrusted certificate).
fn curl_token(url: &str, ca: &Path, id: &str, secret: &str) -> Option<u16> {
    let out = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
        .arg(ca)
        .args(["-u", &format!("{id}:{secret}")])
        .args(["-d", "grant_type=client_credentials", url])
        .output()
        .expect("run curl");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).parse().unwrap())
}

/// A TLS connection that stays open between requests.
struct KeptAlive {
    stream: BufReader<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
}

impl KeptAlive {
    async fn open(addr: &str, ca_pem: &str) -> Self {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from("127.0.0.1").unwrap();
        let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .expect("TLS handshake");
        Self {
            stream: BufReader::new(stream),
        }
    }

    /// One HTTP/1.1 GET on this connection; the status and the body.
    async fn get(&mut self, path: &str) -> (u16, String) {
        let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
        self.stream
            .get_mut()
            .write_all(request.as_bytes())
            .await
            .unwrap();
        let mut line = String::new();
        self.stream.read_line(&mut line).await.unwrap();
        let status = line.split(' ').nth(1).unwrap().parse().unwrap();
        let mut length = 0;
        loop {
            line.clear();
            self.stream.read_line(&mut line).await.unwrap();
            if line == "\r\n" {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; length];
        self.stream.read_exact(&mut body).await.unwrap();
        (status, String::from_utf8(body).unwrap())
    }
}

#[tokio::test]
async fn https_with_a_certificate_swapped_while_serving() {
    let client = cluster().client().await;
    let ns = TestNamespace::new(&client, "tls").await;
    let files = Files::new();
    let (first_ca, second_ca) = (TestCa::new("first-ca"), TestCa::new("second-ca"));
    files.install(&first_ca.issue(&["127.0.0.1", "localhost"]));
    let first_ca_file = files.ca("first-ca.pem", &first_ca);
    let second_ca_file = files.ca("second-ca.pem", &second_ca);

    let listen = format!("127.0.0.1:{}", free_port());
    let admin = format!("127.0.0.1:{}", free_port());
    let base = format!("https://{listen}");
    let (cert, key) = (files.path("tls.crt"), files.path("tls.key"));
    let args = [
        "run",
        "--listen",
        &listen,
        "--admin-listen",
        &admin,
        "--namespace",
        &ns.name,
        "--watch-namespaces",
        &ns.name,
        "--issuer",
        &base,
        "--tls-cert-file",
        cert.to_str().unwrap(),
        "--tls-key-file",
        key.to_str().unwrap(),
    ];
    let mut operator = OperatorProcess::start(OPERATOR, &args);
    let endpoints = catalio_test_support::Endpoints {
        base: base.clone(),
        admin: format!("http://{admin}"),
    };
    operator.wait_ready(&endpoints, WAIT).await;

    // With TLS and no --token-url, Secrets name the https endpoint.
    let (id, secret) = create_credential(&client, &ns.name, "ci", "").await;
    let stored = Api::<Secret>::namespaced(client.clone(), &ns.name)
        .get("ci")
        .await
        .unwrap();
    let token_url = String::from_utf8(stored.data.unwrap()["token_url"].0.clone()).unwrap();
    assert_eq!(token_url, format!("{base}/oauth/token"));

    // curl, verifying the chain; once the index knows the client, 200.
    eventually(WAIT, "curl to get a token over TLS", || async {
        (curl_token(&token_url, &first_ca_file, &id, &secret) == Some(200)).then_some(())
    })
    .await;
    // Nothing is spoken in clear text on the public port.
    let plain = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("http://{listen}/.well-known/jwks.json"))
        .output()
        .unwrap();
    assert!(
        !plain.status.success(),
        "clear text answered: {}",
        String::from_utf8_lossy(&plain.stdout)
    );
    // Python requests (under Authlib) with verify= our CA, both client
    // authentication methods, and oauth4webapi, which insists on https.
    let jwks_url = format!("{base}/.well-known/jwks.json");
    let server = clients::Server {
        token_url: &token_url,
        jwks_url: &jwks_url,
        issuer: &base,
        audience: AUDIENCE,
        ca: Some(&first_ca_file),
    };
    for method in ["client_secret_basic", "client_secret_post"] {
        let verified = server.authlib(&id, &secret, method);
        assert_eq!(verified["claims"]["client_id"], id.as_str());
    }
    let strict = clients::oauth4webapi(&base, &id, &secret, AUDIENCE, Some(&first_ca_file));
    assert_eq!(strict["claims"]["client_id"], id.as_str());

    // A connection opened before the swap...
    let mut open = KeptAlive::open(&listen, &first_ca.pem()).await;
    assert_eq!(open.get("/.well-known/jwks.json").await.0, 200);

    // ...the certificate is renewed by another CA, as a rotation would...
    files.install(&second_ca.issue(&["127.0.0.1"]));
    eventually(WAIT, "the new certificate to be served", || async {
        (curl_token(&token_url, &second_ca_file, &id, &secret) == Some(200)).then_some(())
    })
    .await;
    assert_eq!(
        curl_token(&token_url, &first_ca_file, &id, &secret),
        None,
        "new handshakes get the new certificate"
    );
    // ...and the open connection goes on.
    let (status, body) = open.get("/.well-known/jwks.json").await;
    assert_eq!(status, 200);
    assert!(body.contains("\"keys\""));

    // A broken pair of files is refused and the certificate in use stays.
    std::fs::write(files.path("tls.key"), "not a key").unwrap();
    eventually(WAIT, "the operator to report the bad key", || async {
        operator
            .logs()
            .contains("keeping the TLS certificate in use")
            .then_some(())
    })
    .await;
    assert_eq!(
        curl_token(&token_url, &second_ca_file, &id, &secret),
        Some(200)
    );
}
