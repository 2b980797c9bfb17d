//! HTTPS for the public port. The certificate chain and key come from PEM
//! files and are read again whenever the files change, so a renewed
//! certificate (cert-manager rewrites the mounted Secret) reaches new
//! connections without a restart, while open connections carry on with
//! theirs. Files that cannot be used are reported and the certificate in
//! use stays.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use sha2::{Digest, Sha256};
use tracing::{info, warn};

/// How often the files are looked at.
const RELOAD_EVERY: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {0}: {1}")]
    Read(PathBuf, #[source] std::io::Error),
    #[error("{0} holds no PEM certificate")]
    NoCertificate(PathBuf),
    #[error("{0}: {1}")]
    Pem(PathBuf, String),
    #[error("the key does not fit the certificate, or cannot be used: {0}")]
    Key(#[source] rustls::Error),
}

/// Where the certificate chain and its key are.
#[derive(Clone, Debug)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl CertFiles {
    fn read(&self) -> Result<(Vec<u8>, Vec<u8>), TlsError> {
        let read = |p: &PathBuf| std::fs::read(p).map_err(|e| TlsError::Read(p.clone(), e));
        Ok((read(&self.cert)?, read(&self.key)?))
    }

    fn parse(&self, cert: &[u8], key: &[u8]) -> Result<CertifiedKey, TlsError> {
        let chain = CertificateDer::pem_slice_iter(cert)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError::Pem(self.cert.clone(), e.to_string()))?;
        if chain.is_empty() {
            return Err(TlsError::NoCertificate(self.cert.clone()));
        }
        let key = PrivateKeyDer::from_pem_slice(key)
            .map_err(|e| TlsError::Pem(self.key.clone(), e.to_string()))?;
        CertifiedKey::from_der(chain, key, &provider()).map_err(TlsError::Key)
    }
}

fn provider() -> CryptoProvider {
    rustls::crypto::aws_lc_rs::default_provider()
}

/// The certificate every new handshake gets, swapped when the files change.
#[derive(Debug)]
pub struct ReloadingCert {
    files: CertFiles,
    current: RwLock<Arc<CertifiedKey>>,
    /// Digest of the file contents `current` was made from.
    loaded: RwLock<[u8; 32]>,
}

fn digest(cert: &[u8], key: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update((cert.len() as u64).to_be_bytes());
    h.update(cert);
    h.update(key);
    h.finalize().into()
}

impl ReloadingCert {
    /// Loads the files once; fails when they cannot be used, so a server
    /// never starts without its certificate.
    pub fn load(files: CertFiles) -> Result<Arc<Self>, TlsError> {
        let (cert, key) = files.read()?;
        let certified = files.parse(&cert, &key)?;
        Ok(Arc::new(Self {
            files,
            current: RwLock::new(Arc::new(certified)),
            loaded: RwLock::new(digest(&cert, &key)),
        }))
    }

    /// Reads the files again; swaps the certificate when they changed and
    /// can be used. Returns whether it swapped.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let (cert, key) = self.files.read()?;
        let seen = digest(&cert, &key);
        if *self.loaded.read().unwrap_or_else(|e| e.into_inner()) == seen {
            return Ok(false);
        }
        let certified = self.files.parse(&cert, &key)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(certified);
        *self.loaded.write().unwrap_or_else(|e| e.into_inner()) = seen;
        Ok(true)
    }

    /// Reloads every few seconds, forever. A half-written pair of files
    /// (new certificate, old key) fails to load and is tried again.
    pub async fn watch(self: Arc<Self>) {
        let mut failing = false;
        loop {
            tokio::time::sleep(RELOAD_EVERY).await;
            match self.reload() {
                Ok(true) => {
                    failing = false;
                    info!(cert = %self.files.cert.display(), "serving a new TLS certificate");
                }
                Ok(false) => failing = false,
                Err(e) => {
                    if !failing {
                        warn!(error = %e, "keeping the TLS certificate in use");
                    }
                    failing = true;
                }
            }
        }
    }

    /// The server configuration of the public port.
    pub fn server_config(self: Arc<Self>) -> Result<Arc<ServerConfig>, TlsError> {
        let mut config = ServerConfig::builder_with_provider(Arc::new(provider()))
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Key)?
            .with_no_client_auth()
            .with_cert_resolver(self);
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, KeyPair};

    fn pair(name: &str) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec![name.to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn served_name(cert: &ReloadingCert) -> Vec<u8> {
        cert.current.read().unwrap().cert[0].to_vec()
    }

    #[test]
    fn reloads_changed_files_and_keeps_the_certificate_when_they_are_bad() {
        let dir = std::env::temp_dir().join(format!("catalio-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let files = CertFiles {
            cert: dir.join("tls.crt"),
            key: dir.join("tls.key"),
        };
        let write = |(cert, key): &(String, String)| {
            std::fs::write(&files.cert, cert).unwrap();
            std::fs::write(&files.key, key).unwrap();
        };
        let first = pair("one.example");
        write(&first);
        let cert = ReloadingCert::load(files.clone()).unwrap();
        let served = served_name(&cert);
        assert!(!cert.reload().unwrap(), "unchanged files are not reloaded");

        // A new certificate beside the old key: refused, the old one stays.
        let second = pair("two.example");
        std::fs::write(&files.cert, &second.0).unwrap();
        assert!(matches!(cert.reload(), Err(TlsError::Key(_))));
        assert_eq!(served_name(&cert), served);

        // Both files written: the new certificate is served.
        write(&second);
        assert!(cert.reload().unwrap());
        assert_ne!(served_name(&cert), served);

        std::fs::write(&files.cert, "").unwrap();
        assert!(matches!(cert.reload(), Err(TlsError::NoCertificate(_))));
        std::fs::remove_file(&files.key).unwrap();
        assert!(matches!(cert.reload(), Err(TlsError::Read(..))));
        assert!(ReloadingCert::load(files).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
