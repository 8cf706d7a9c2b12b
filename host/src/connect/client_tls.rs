//! How the host's clients (MQTT connections, the agent) speak TLS: which CAs they trust
//! (a `ca_file`, else the system's) and which certificate they present, if any (mutual
//! TLS: a device's certificate names it). TLS 1.2 and 1.3 with ring, as the listeners.

use std::path::Path;
use std::sync::Arc;

use rustls::RootCertStore;

use super::certs::{self, TlsError};

/// A client's TLS settings, as a config or the agent's flags give them.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClientTls<'a> {
    /// PEM file of the CAs that sign the server's certificate; the system's CAs without.
    pub ca_file: Option<&'a Path>,
    /// The client's own certificate chain and private key (PEM).
    pub identity: Option<(&'a Path, &'a Path)>,
}

impl ClientTls<'_> {
    pub fn config(&self) -> Result<rustls::ClientConfig, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let roots = match self.ca_file {
            Some(path) => certs::read_roots(path)?,
            None => Arc::new(system_roots()?),
        };
        let versions = [&rustls::version::TLS13, &rustls::version::TLS12];
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&versions)
            .map_err(|error| TlsError::Config(error.to_string()))?
            .with_root_certificates(roots);
        match self.identity {
            None => Ok(builder.with_no_client_auth()),
            Some((cert, key)) => builder
                .with_client_auth_cert(certs::read_chain(cert)?, certs::read_key(key)?)
                .map_err(|source| TlsError::Pair {
                    cert: cert.to_owned(),
                    key: key.to_owned(),
                    source,
                }),
        }
    }
}

/// The operating system's trusted CAs; an error when it has none that load.
fn system_roots() -> Result<RootCertStore, TlsError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = found
            .errors
            .first()
            .map_or_else(|| "none found".to_owned(), ToString::to_string);
        return Err(TlsError::Config(format!(
            "no system CA certificates ({why}): set `ca_file`"
        )));
    }
    Ok(roots)
}
