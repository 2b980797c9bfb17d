//! A TCP proxy in front of the API server that a test can cut and restore.
//! An operator configured through it sees the API server go away (new
//! connections reset, open ones, watches included, broken) and come back,
//! while the control plane goes on serving the test and the other tests.
//! Nothing is faked: every byte that passes is the real API server's.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use kube::config::Kubeconfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

#[derive(Default)]
struct State {
    cut: AtomicBool,
    open: Mutex<Vec<AbortHandle>>,
}

pub struct CuttableApiServer {
    addr: SocketAddr,
    state: Arc<State>,
    accepting: AbortHandle,
}

impl CuttableApiServer {
    /// A proxy on a fresh loopback port to the API server at `target`.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State::default());
        let shared = state.clone();
        let accepting = tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    continue;
                };
                if shared.cut.load(Ordering::SeqCst) {
                    // Closed at once, before a byte of TLS.
                    drop(client);
                    continue;
                }
                let task = tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                let mut open = shared.open.lock().unwrap();
                open.retain(|t| !t.is_finished());
                open.push(task.abort_handle());
            }
        })
        .abort_handle();
        Self {
            addr,
            state,
            accepting,
        }
    }

    /// Breaks every open connection and resets every new one.
    pub fn cut(&self) {
        self.state.cut.store(true, Ordering::SeqCst);
        for task in self.state.open.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    pub fn restore(&self) {
        self.state.cut.store(false, Ordering::SeqCst);
    }

    /// A proxy to the API server `kubeconfig` names, and a copy of that
    /// kubeconfig, written in `dir`, that reaches it through the proxy (the
    /// certificate names 127.0.0.1, whatever the port).
    pub async fn in_front_of(kubeconfig: &Path, dir: &Path) -> (Self, PathBuf) {
        let mut config = Kubeconfig::read_from(kubeconfig).expect("kubeconfig");
        let cluster = config.clusters[0].cluster.as_mut().expect("cluster");
        let server = cluster.server.clone().expect("server");
        let target: SocketAddr = server
            .trim_start_matches("https://")
            .parse()
            .expect("an https://IP:port server");
        let proxy = Self::start(target).await;
        cluster.server = Some(format!("https://{}", proxy.addr));
        let path = dir.join(format!("via-proxy-{}.kubeconfig", proxy.addr.port()));
        std::fs::write(&path, serde_json::to_vec(&config).unwrap()).unwrap();
        (proxy, path)
    }
}

impl Drop for CuttableApiServer {
    fn drop(&mut self) {
        self.accepting.abort();
        self.cut();
    }
}
