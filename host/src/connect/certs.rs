//! Certificates as the host reads them: PEM files (a chain, a private key, a set of
//! trusted CAs) with errors that name the file, and the names a verified client
//! certificate gives its holder ([`PeerNames`]), which the fleet API and the embedded
//! broker take as a device's (or a user's) identity.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS: cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS: {path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("TLS: {path} holds no PEM private key")]
    NoKey { path: PathBuf },
    #[error("TLS: {path}: a certificate that cannot be trusted as a CA: {source}")]
    BadCa {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("TLS: {cert} with {key}: {source}")]
    Pair {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("TLS: {0}")]
    Config(String),
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// The certificates of a PEM file, in order (a chain: its holder's own first).
pub fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&read(path)?)
        .filter_map(Result::ok)
        .collect();
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(chain)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(&read(path)?).map_err(|_| TlsError::NoKey {
        path: path.to_owned(),
    })
}

/// The CAs of a PEM file, as trust anchors.
pub fn read_roots(path: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for certificate in read_chain(path)? {
        roots.add(certificate).map_err(|source| TlsError::BadCa {
            path: path.to_owned(),
            source,
        })?;
    }
    Ok(Arc::new(roots))
}

/// The names a client certificate (verified against the listener's `client_ca_file`
/// before it gets here) gives the client: its subject's common names and its DNS and
/// URI subject alternative names. A device is identified when one of them is its id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerNames(Vec<String>);

impl PeerNames {
    /// The names of `certificate` (DER); none when it does not parse.
    pub fn of(certificate: &CertificateDer<'_>) -> PeerNames {
        use x509_parser::extensions::GeneralName;
        let Ok((_, parsed)) = x509_parser::parse_x509_certificate(certificate.as_ref()) else {
            return PeerNames::default();
        };
        let mut names: Vec<String> = parsed
            .subject()
            .iter_common_name()
            .filter_map(|name| name.as_str().ok().map(str::to_owned))
            .collect();
        if let Ok(Some(alternatives)) = parsed.subject_alternative_name() {
            for name in &alternatives.value.general_names {
                match name {
                    GeneralName::DNSName(name) | GeneralName::URI(name) => {
                        names.push((*name).to_owned())
                    }
                    _ => {}
                }
            }
        }
        names.dedup();
        PeerNames(names)
    }

    /// The names of a TLS session's client: its certificate chain's first (its own).
    pub fn of_chain(chain: Option<&[CertificateDer<'_>]>) -> Option<PeerNames> {
        chain?.first().map(PeerNames::of)
    }

    /// The first of `candidates` (ids the config knows) that the certificate names.
    pub fn find<'a>(&self, candidates: impl IntoIterator<Item = &'a String>) -> Option<&'a str> {
        candidates
            .into_iter()
            .find(|candidate| self.0.iter().any(|name| name == *candidate))
            .map(String::as_str)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.0.iter().any(|own| own == name)
    }

    /// For logs and refusals.
    pub fn describe(&self) -> String {
        match self.0.as_slice() {
            [] => "no name".to_owned(),
            names => names.join(", "),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_names_its_common_name_and_alternative_names() {
        let mut params =
            rcgen::CertificateParams::new(vec!["gw-7.devices.example".to_owned()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "gw-7");
        let key = rcgen::KeyPair::generate().unwrap();
        let certificate = params.self_signed(&key).unwrap();
        let names = PeerNames::of(certificate.der());
        assert!(names.contains("gw-7"));
        assert!(names.contains("gw-7.devices.example"));
        assert!(!names.contains("gw-8"));
        let ids = ["gw-8".to_owned(), "gw-7".to_owned()];
        assert_eq!(names.find(&ids), Some("gw-7"));
    }

    #[test]
    fn garbage_names_nobody() {
        let names = PeerNames::of(&CertificateDer::from(vec![0x30, 0x03, 1, 2, 3]));
        assert_eq!(names, PeerNames::default());
        assert_eq!(names.describe(), "no name");
    }
}
