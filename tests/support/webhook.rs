//! A validating admission webhook served by the test itself and registered
//! with the real API server. It admits every write, but holds the first write
//! of one named Secret that an `ApiCredential` owns until the test releases
//! it: the window between the operator's read and its write, opened wide
//! enough to act in, deterministically.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, PostParams};
use serde_json::{Value, json};
use tokio::sync::{Notify, watch};

use crate::pki::TestCa;
use crate::{cluster, eventually, free_port};

#[derive(Default)]
struct State {
    /// Names of the Secrets whose writes the webhook has seen.
    seen: Vec<String>,
    /// Whether the one write to hold has arrived.
    holding: bool,
}

pub struct HoldingWebhook {
    name: String,
    state: Arc<Mutex<State>>,
    arrived: Arc<Notify>,
    release: watch::Sender<bool>,
    server: tokio::task::JoinHandle<()>,
}

impl HoldingWebhook {
    /// Registers the webhook for Secrets in `namespace` and returns once the
    /// API server calls it; the first write of Secret `hold` that carries an
    /// ApiCredential owner reference will be held.
    pub async fn start(client: &Client, namespace: &str, hold: &str) -> Self {
        let ca = TestCa::new("catalio-test-webhook-ca");
        let leaf = ca.issue(&["127.0.0.1"]);
        let tls = crate::tls_server_config(&leaf);
        let port = free_port();
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port)))
            .await
            .expect("bind the webhook port");
        let state = Arc::new(Mutex::new(State::default()));
        let arrived = Arc::new(Notify::new());
        let (release, released) = watch::channel(false);
        let handler = Handler {
            hold: hold.to_owned(),
            state: state.clone(),
            arrived: arrived.clone(),
            released,
        };
        let server = tokio::spawn(async move {
            let acceptor = tokio_rustls::TlsAcceptor::from(tls);
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, handler) = (acceptor.clone(), handler.clone());
                tokio::spawn(async move {
                    let Ok(stream) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |request| {
                        let handler = handler.clone();
                        async move { handler.review(request).await }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });

        let name = format!("catalio-test-hold-{namespace}");
        let config = json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": name},
            "webhooks": [{
                "name": "hold.catalio.test",
                "clientConfig": {
                    "url": format!("https://127.0.0.1:{port}/validate"),
                    "caBundle": STANDARD.encode(ca.pem()),
                },
                "rules": [{
                    "apiGroups": [""], "apiVersions": ["v1"],
                    "operations": ["CREATE", "UPDATE"], "resources": ["secrets"],
                }],
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "failurePolicy": "Fail",
                "timeoutSeconds": 30,
            }],
        });
        let resource = ApiResource {
            group: "admissionregistration.k8s.io".into(),
            version: "v1".into(),
            api_version: "admissionregistration.k8s.io/v1".into(),
            kind: "ValidatingWebhookConfiguration".into(),
            plural: "validatingwebhookconfigurations".into(),
        };
        let object: DynamicObject = serde_json::from_value(config).expect("webhook object");
        Api::<DynamicObject>::all_with(client.clone(), &resource)
            .create(&PostParams::default(), &object)
            .await
            .expect("register the webhook");
        let webhook = Self {
            name,
            state,
            arrived,
            release,
            server,
        };

        // The API server picks the configuration up from its own watch:
        // write probes until one reaches the webhook.
        let secrets =
            Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), namespace);
        let mut n = 0;
        eventually(Duration::from_secs(30), "the webhook to be called", || {
            n += 1;
            let probe = format!("webhook-probe-{n}");
            let secrets = secrets.clone();
            let state = webhook.state.clone();
            async move {
                let mut secret = k8s_openapi::api::core::v1::Secret::default();
                secret.metadata.name = Some(probe.clone());
                let _ = secrets.create(&PostParams::default(), &secret).await;
                let seen = state.lock().unwrap().seen.contains(&probe);
                seen.then_some(())
            }
        })
        .await;
        webhook
    }

    /// Waits until the write to hold has arrived and is being held.
    pub async fn held(&self) {
        loop {
            let notified = self.arrived.notified();
            if self.state.lock().unwrap().holding {
                return;
            }
            notified.await;
        }
    }

    /// Lets the held write through.
    pub fn release(&self) {
        let _ = self.release.send(true);
    }
}

impl Drop for HoldingWebhook {
    fn drop(&mut self) {
        self.release();
        self.server.abort();
        // A webhook that fails closed must not outlive its server.
        let _ = cluster().kubectl(&[
            "delete",
            "validatingwebhookconfiguration",
            &self.name,
            "--wait=false",
        ]);
    }
}

#[derive(Clone)]
struct Handler {
    hold: String,
    state: Arc<Mutex<State>>,
    arrived: Arc<Notify>,
    released: watch::Receiver<bool>,
}

impl Handler {
    async fn review(
        &self,
        request: Request<Incoming>,
    ) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
        let body = request
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let review: Value = serde_json::from_slice(&body).unwrap_or_default();
        let request = &review["request"];
        let name = request["name"].as_str().unwrap_or_default().to_owned();
        let owned_by_credential = request["object"]["metadata"]["ownerReferences"]
            .as_array()
            .is_some_and(|refs| refs.iter().any(|r| r["kind"] == "ApiCredential"));
        let hold = {
            let mut state = self.state.lock().unwrap();
            state.seen.push(name.clone());
            let hold = name == self.hold && owned_by_credential && !state.holding;
            state.holding |= hold;
            hold
        };
        if hold {
            self.arrived.notify_waiters();
            let mut released = self.released.clone();
            let _ = released.wait_for(|r| *r).await;
        }
        let answer = json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "response": {"uid": request["uid"], "allowed": true},
        });
        Ok(Response::builder()
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(answer.to_string())))
            .expect("response"))
    }
}
