//! A listener's certificate: read from its PEM files, served with ring over TLS 1.2 and
//! 1.3, HTTP/2 and HTTP/1.1 offered by ALPN. Replacing the files is enough to renew it:
//! a handshake looks at their modification times (at most once a second) and the next
//! handshakes present the new pair; a pair that does not load is logged and the one in
//! use kept. With `client_ca_file`, clients may present certificates from those CAs
//! (mutual TLS): the names of a verified one reach the request as [`PeerNames`].
//!
//! [`PeerNames`]: crate::connect::certs::PeerNames

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use serde::Deserialize;

use crate::connect::certs::{self, TlsError};

/// `tls = { cert_file = "...", key_file = "...", client_ca_file = "..." }` (paths
/// relative to the working directory, as an MQTT client's `ca_file`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// The certificate chain, the server's own certificate first (PEM).
    pub cert_file: PathBuf,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// The CAs whose client certificates identify clients (mutual TLS). A client may
    /// still come without a certificate (and then shows a token); one whose certificate
    /// does not verify (another CA, expired) fails the handshake.
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
}

/// How often a handshake may look at the files.
const CHECK_EVERY: Duration = Duration::from_secs(1);

impl TlsFiles {
    /// The pair as rustls serves it: both files read, the key matching the certificate.
    pub fn load(&self) -> Result<CertifiedKey, TlsError> {
        let chain = certs::read_chain(&self.cert_file)?;
        let key = certs::read_key(&self.key_file)?;
        let provider = rustls::crypto::ring::default_provider();
        CertifiedKey::from_der(chain, key, &provider).map_err(|source| TlsError::Pair {
            cert: self.cert_file.clone(),
            key: self.key_file.clone(),
            source,
        })
    }

    /// A server config presenting this pair, renewed as the files change.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let resolver = Reloading {
            files: self.clone(),
            current: RwLock::new(Arc::new(self.load()?)),
            checked: Mutex::new(Checked {
                at: Instant::now(),
                stamps: self.stamps(),
            }),
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let versions = [&rustls::version::TLS13, &rustls::version::TLS12];
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&versions)
            .map_err(|error| TlsError::Config(error.to_string()))?;
        let builder = match &self.client_ca_file {
            None => builder.with_no_client_auth(),
            Some(path) => {
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(certs::read_roots(path)?, provider)
                        .allow_unauthenticated()
                        .build()
                        .map_err(|error| {
                            TlsError::Config(format!("{}: {error}", path.display()))
                        })?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder.with_cert_resolver(Arc::new(resolver));
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// What tells that a file changed: its modification time and length.
    fn stamps(&self) -> [Option<(SystemTime, u64)>; 2] {
        let stamp = |path: &Path| {
            let metadata = std::fs::metadata(path).ok()?;
            Some((metadata.modified().ok()?, metadata.len()))
        };
        [stamp(&self.cert_file), stamp(&self.key_file)]
    }
}

/// Presents the current pair, loading a new one when the files changed.
#[derive(Debug)]
struct Reloading {
    files: TlsFiles,
    current: RwLock<Arc<CertifiedKey>>,
    checked: Mutex<Checked>,
}

#[derive(Debug)]
struct Checked {
    at: Instant,
    /// The files as last loaded, or as last failed to load (logged once per change).
    stamps: [Option<(SystemTime, u64)>; 2],
}

impl Reloading {
    fn refresh(&self) {
        // A handshake that finds another one checking goes on with the current pair.
        let Ok(mut checked) = self.checked.try_lock() else {
            return;
        };
        if checked.at.elapsed() < CHECK_EVERY {
            return;
        }
        checked.at = Instant::now();
        let stamps = self.files.stamps();
        if stamps == checked.stamps {
            return;
        }
        checked.stamps = stamps;
        let cert = self.files.cert_file.display();
        match self.files.load() {
            Ok(pair) => {
                *self.current.write().unwrap() = Arc::new(pair);
                tracing::info!(%cert, "TLS: the certificate files changed; new handshakes present the new pair");
            }
            Err(error) => {
                tracing::error!(%cert, "the certificate files changed but do not load; keeping the previous pair: {error}");
            }
        }
    }
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.refresh();
        Some(self.current.read().unwrap().clone())
    }
}
