//! A TCP proxy in front of the API server that a test can cut and restore.
//! An operator configured through it sees the API server go away (new
//! connections reset, open ones, watches included, broken) and come back,
//! while the control plane goes on serving the test and the other tests.
//! Or it can go silent: connections stay open and new ones are taken, but
//! no byte passes either way until it is restored (a network that drops
//! packets), so requests hang instead of failing.
//! Nothing is faked: every byte that passes is the real API server's.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use kube::config::Kubeconfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::AbortHandle;

struct State {
    cut: AtomicBool,
    silent: watch::Sender<bool>,
    open: Mutex<Vec<AbortHandle>>,
}

/// Copies `from` to `to`, holding what it reads while the proxy is silent.
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, mut silent: watch::Receiver<bool>) {
    let mut buf = vec![0; 64 * 1024];
    while let Ok(n @ 1..) = from.read(&mut buf).await {
        if silent.wait_for(|s| !*s).await.is_err() || to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    // A close is news too: held like bytes while the line is silent, so a
    // connection the API server ends meanwhile does not fail the client.
    let _ = silent.wait_for(|s| !*s).await;
    let _ = to.shutdown().await;
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
        let state = Arc::new(State {
            cut: AtomicBool::new(false),
            silent: watch::channel(false).0,
            open: Mutex::default(),
        });
        let shared = state.clone();
        let accepting = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                if shared.cut.load(Ordering::SeqCst) {
                    // Closed at once, before a byte of TLS.
                    drop(client);
                    continue;
                }
                let silent = shared.silent.subscribe();
                let task = tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(target).await {
                        let (client_read, client_write) = client.into_split();
                        let (server_read, server_write) = server.into_split();
                        tokio::join!(
                            pump(client_read, server_write, silent.clone()),
                            pump(server_read, client_write, silent),
                        );
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

    /// Lets no byte through, either way, on any connection, open or new,
    /// until [`Self::restore`].
    pub fn silence(&self) {
        self.state.silent.send_replace(true);
    }

    pub fn restore(&self) {
        self.state.cut.store(false, Ordering::SeqCst);
        self.state.silent.send_replace(false);
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
