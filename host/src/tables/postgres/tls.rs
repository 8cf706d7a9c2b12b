//! TLS to PostgreSQL as libpq's `sslmode` and `sslrootcert` ask for it, with rustls
//! (ring) through `tokio-postgres-rustls`.
//!
//! tokio-postgres knows `disable`, `prefer` and `require` and no `sslrootcert`, so both
//! keys are taken out of the connection string here (key=value and `postgres://` URL
//! forms) and the rest is left to its parser:
//!
//! - `disable`: plaintext.
//! - `prefer` (the default): TLS when the server offers it, plaintext when it does not
//!   (a failed handshake is an error, as in tokio-postgres).
//! - `require`: TLS or no connection; the certificate is not checked, which stops a
//!   passive eavesdropper only: anyone who can intercept the connection can present a
//!   certificate of their own.
//! - `verify-ca`: TLS with a certificate that chains to the CA in `sslrootcert`.
//! - `verify-full`: that, and the certificate names the `host` connected to.
//!
//! With `prefer` or `require`, an `sslrootcert` is checked as `verify-ca` does, as
//! libpq does when it has a root certificate.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

/// What `sslmode` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Result<SslMode, TlsConfigError> {
        Ok(match value {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => return Err(TlsConfigError::SslMode(other.to_owned())),
        })
    }

    fn name(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// A connection string that cannot be used, or a CA file that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    #[error("the connection string: {0}")]
    Syntax(String),
    #[error(
        "`sslmode` `{0}` is not one of `disable`, `prefer`, `require`, `verify-ca`, `verify-full`"
    )]
    SslMode(String),
    #[error(
        "`sslmode={0}` checks the server's certificate against a CA: name the CA's PEM file with `sslrootcert=...`"
    )]
    NoRootCert(&'static str),
    #[error("`sslrootcert=system` (the system's CAs) is not supported: name a CA's PEM file")]
    SystemRoots,
    #[error("`sslrootcert`: cannot read {path}: {source}")]
    ReadRootCert {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("`sslrootcert`: {path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("`sslrootcert`: {path}: {source}")]
    BadCertificate {
        path: PathBuf,
        source: rustls::Error,
    },
    #[error("the connection string: {0}")]
    Config(String),
}

/// A connection string with `sslmode` and `sslrootcert` taken out.
#[derive(Debug, PartialEq, Eq)]
pub struct Split {
    /// The rest, for tokio-postgres's parser.
    pub rest: String,
    /// `sslmode`; `prefer` when not given.
    pub mode: SslMode,
    pub root_cert: Option<PathBuf>,
}

/// Take `sslmode` and `sslrootcert` out of `connection` (the last of a key given twice
/// counts, as in libpq).
pub fn split(connection: &str) -> Result<Split, TlsConfigError> {
    let trimmed = connection.trim_start();
    let (rest, taken) =
        if trimmed.starts_with("postgres://") || trimmed.starts_with("postgresql://") {
            split_url(trimmed)?
        } else {
            split_key_values(connection)?
        };
    let mut mode = SslMode::Prefer;
    let mut root_cert = None;
    for (key, value) in taken {
        match key {
            Key::SslMode => mode = SslMode::parse(&value)?,
            Key::RootCert => root_cert = Some(PathBuf::from(value)),
        }
    }
    Ok(Split {
        rest,
        mode,
        root_cert,
    })
}

#[derive(Clone, Copy)]
enum Key {
    SslMode,
    RootCert,
}

fn key(name: &str) -> Option<Key> {
    match name {
        "sslmode" => Some(Key::SslMode),
        "sslrootcert" => Some(Key::RootCert),
        _ => None,
    }
}

/// libpq's key=value form: `key = value` pairs apart by whitespace, a value in single
/// quotes when it has spaces, `\` escaping the next character.
fn split_key_values(text: &str) -> Result<(String, Vec<(Key, String)>), TlsConfigError> {
    let mut rest = String::with_capacity(text.len());
    let mut taken = Vec::new();
    let mut chars = text.char_indices().peekable();
    let skip_space = |chars: &mut std::iter::Peekable<std::str::CharIndices>| {
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
    };
    loop {
        skip_space(&mut chars);
        let Some(&(start, _)) = chars.peek() else {
            break;
        };
        while chars
            .next_if(|&(_, c)| !c.is_whitespace() && c != '=')
            .is_some()
        {}
        let name_end = chars.peek().map_or(text.len(), |&(i, _)| i);
        let name = &text[start..name_end];
        skip_space(&mut chars);
        if chars.next_if(|&(_, c)| c == '=').is_none() {
            return Err(TlsConfigError::Syntax(format!("`{name}` has no `=`")));
        }
        skip_space(&mut chars);
        let quoted = chars.next_if(|&(_, c)| c == '\'').is_some();
        let mut value = String::new();
        let mut closed = false;
        while let Some(&(_, c)) = chars.peek() {
            if !quoted && c.is_whitespace() {
                break;
            }
            chars.next();
            match c {
                '\'' if quoted => {
                    closed = true;
                    break;
                }
                '\\' => value.extend(chars.next().map(|(_, c)| c)),
                c => value.push(c),
            }
        }
        if quoted && !closed {
            return Err(TlsConfigError::Syntax(format!(
                "the value of `{name}` has no closing quote"
            )));
        }
        let end = chars.peek().map_or(text.len(), |&(i, _)| i);
        match key(name) {
            Some(key) => taken.push((key, value)),
            None => {
                if !rest.is_empty() {
                    rest.push(' ');
                }
                rest.push_str(&text[start..end]);
            }
        }
    }
    Ok((rest, taken))
}

/// The URL form: the keys are query parameters (`?sslmode=verify-full&sslrootcert=...`),
/// percent-encoded.
fn split_url(text: &str) -> Result<(String, Vec<(Key, String)>), TlsConfigError> {
    let Some((base, query)) = text.split_once('?') else {
        return Ok((text.to_owned(), Vec::new()));
    };
    let mut kept = Vec::new();
    let mut taken = Vec::new();
    for parameter in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = parameter.split_once('=').unwrap_or((parameter, ""));
        match key(&percent_decode(name)?) {
            Some(key) => taken.push((key, percent_decode(value)?)),
            None => kept.push(parameter),
        }
    }
    let rest = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((rest, taken))
}

fn percent_decode(text: &str) -> Result<String, TlsConfigError> {
    let bad = || TlsConfigError::Syntax(format!("bad percent-encoding in `{text}`"));
    let mut bytes = Vec::with_capacity(text.len());
    let mut rest = text.as_bytes();
    while let Some((&byte, tail)) = rest.split_first() {
        if byte == b'%' {
            let hex = tail.get(..2).ok_or_else(bad)?;
            let hex = std::str::from_utf8(hex).map_err(|_| bad())?;
            bytes.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
            rest = &tail[2..];
        } else {
            bytes.push(byte);
            rest = tail;
        }
    }
    String::from_utf8(bytes).map_err(|_| bad())
}

/// What connecting needs: tokio-postgres's config (its `sslmode` set from ours) and
/// the TLS client `sslmode` asks for.
pub struct Connector {
    pub config: tokio_postgres::Config,
    pub tls: MakeRustlsConnect,
    mode: SslMode,
    root_cert: Option<PathBuf>,
}

impl Connector {
    /// Parse `connection` and read its CA file.
    pub fn new(connection: &str) -> Result<Connector, TlsConfigError> {
        let Split {
            rest,
            mode,
            root_cert,
        } = split(connection)?;
        let mut config: tokio_postgres::Config = rest
            .parse()
            .map_err(|error| TlsConfigError::Config(super::chain(&error)))?;
        config.ssl_mode(match mode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                tokio_postgres::config::SslMode::Require
            }
        });
        let roots = match (&root_cert, mode) {
            // libpq reads no CA file when it does not use TLS.
            (_, SslMode::Disable) => None,
            (None, SslMode::VerifyCa | SslMode::VerifyFull) => {
                return Err(TlsConfigError::NoRootCert(mode.name()));
            }
            (None, _) => None,
            (Some(path), _) => Some(Arc::new(read_roots(path)?)),
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("ring offers TLS 1.2 and 1.3");
        let client = match (mode, roots) {
            (SslMode::VerifyFull, Some(roots)) => builder.with_root_certificates(roots),
            (_, roots) => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(ChainOnly { roots, provider })),
        }
        .with_no_client_auth();
        Ok(Connector {
            config,
            tls: MakeRustlsConnect::new(client),
            mode,
            root_cert,
        })
    }

    /// What the connection asks of TLS, for errors: `sslmode=verify-full, sslrootcert=...`.
    pub fn describe(&self) -> String {
        match (&self.root_cert, self.mode) {
            (Some(path), mode) if mode != SslMode::Disable => {
                format!("sslmode={}, sslrootcert={}", mode.name(), path.display())
            }
            (_, mode) => format!("sslmode={}", mode.name()),
        }
    }
}

/// The CA certificates of a PEM file.
fn read_roots(path: &Path) -> Result<RootCertStore, TlsConfigError> {
    if path == Path::new("system") {
        return Err(TlsConfigError::SystemRoots);
    }
    let pem = std::fs::read(path).map_err(|source| TlsConfigError::ReadRootCert {
        path: path.to_owned(),
        source,
    })?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem).filter_map(Result::ok) {
        roots
            .add(cert)
            .map_err(|source| TlsConfigError::BadCertificate {
                path: path.to_owned(),
                source,
            })?;
    }
    if roots.is_empty() {
        return Err(TlsConfigError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(roots)
}

/// The verifier of `verify-ca` (the chain to `roots`, not the name) and, without
/// `roots`, of `prefer` and `require` (no check of the certificate). Either way the
/// handshake's signatures are checked, so the server holds the certificate's key.
#[derive(Debug)]
struct ChainOnly {
    roots: Option<Arc<RootCertStore>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(roots) = &self.roots {
            let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
            rustls::client::verify_server_cert_signed_by_trust_anchor(
                &cert,
                roots,
                intermediates,
                now,
                self.provider.signature_verification_algorithms.all,
            )?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(connection: &str) -> (String, SslMode, Option<String>) {
        let split = split(connection).unwrap();
        let root = split.root_cert.map(|p| p.display().to_string());
        (split.rest, split.mode, root)
    }

    #[test]
    fn key_value_strings_give_up_their_tls_keys_and_keep_the_rest() {
        assert_eq!(
            parts("host=db port=5432 user=sluice"),
            (
                "host=db port=5432 user=sluice".into(),
                SslMode::Prefer,
                None
            )
        );
        assert_eq!(
            parts("host=db sslmode=verify-full sslrootcert=/etc/ca.pem dbname=x"),
            (
                "host=db dbname=x".into(),
                SslMode::VerifyFull,
                Some("/etc/ca.pem".into())
            )
        );
        // Spaces around `=`, quotes, escapes; a password that looks like a key stays.
        assert_eq!(
            parts(
                r"  sslmode = 'verify-ca'  password='a sslmode=disable \' b' sslrootcert='/my certs/ca.pem' host=h"
            ),
            (
                r"password='a sslmode=disable \' b' host=h".into(),
                SslMode::VerifyCa,
                Some("/my certs/ca.pem".into())
            )
        );
        assert_eq!(parts("sslmode=require").1, SslMode::Require);
        assert_eq!(parts("sslmode=disable host=h").1, SslMode::Disable);
        // The last one counts, as in libpq.
        assert_eq!(
            parts("sslmode=disable host=h sslmode=verify-full").1,
            SslMode::VerifyFull
        );
        assert_eq!(parts(r"sslrootcert=/a\ b.pem").2, Some("/a b.pem".into()));
    }

    #[test]
    fn urls_give_up_their_tls_query_parameters() {
        assert_eq!(
            parts(
                "postgresql://u:p@db:5432/serving?sslmode=verify-full&sslrootcert=%2Fetc%2Fca%20x.pem&application_name=s"
            ),
            (
                "postgresql://u:p@db:5432/serving?application_name=s".into(),
                SslMode::VerifyFull,
                Some("/etc/ca x.pem".into())
            )
        );
        assert_eq!(
            parts("postgres://db/serving?sslmode=require"),
            ("postgres://db/serving".into(), SslMode::Require, None)
        );
        assert_eq!(
            parts("postgres://db/serving"),
            ("postgres://db/serving".into(), SslMode::Prefer, None)
        );
    }

    #[test]
    fn bad_values_are_errors_naming_the_key() {
        let error = |connection: &str| match Connector::new(connection) {
            Ok(_) => panic!("{connection} was accepted"),
            Err(error) => error.to_string(),
        };
        let message = error("host=h sslmode=verify_full");
        assert!(
            message.contains("`sslmode` `verify_full` is not one of"),
            "{message}"
        );
        let message = error("postgres://h/db?sslmode=allow");
        assert!(message.contains("`sslmode` `allow`"), "{message}");
        for mode in ["verify-ca", "verify-full"] {
            let message = error(&format!("host=h sslmode={mode}"));
            assert!(message.contains(&format!("`sslmode={mode}`")), "{message}");
            assert!(message.contains("`sslrootcert=...`"), "{message}");
        }
        let message = error("host=h sslmode=verify-full sslrootcert=/nonexistent/ca.pem");
        assert!(
            message.contains("`sslrootcert`: cannot read /nonexistent/ca.pem"),
            "{message}"
        );
        let message = error("host=h sslmode=verify-full sslrootcert=system");
        assert!(message.contains("`sslrootcert=system`"), "{message}");
        let message = error("host=h sslmode=verify-full sslrootcert='/x");
        assert!(
            message.contains("`sslrootcert` has no closing quote"),
            "{message}"
        );
        let message = error("host=h sslmode");
        assert!(message.contains("`sslmode` has no `=`"), "{message}");
        let message = error("host=h sslcompression=1");
        assert!(
            message.contains("unknown option `sslcompression`"),
            "{message}"
        );

        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate").unwrap();
        let message = error(&format!(
            "host=h sslmode=verify-ca sslrootcert={}",
            empty.display()
        ));
        assert!(message.contains("holds no PEM certificate"), "{message}");
    }

    #[test]
    fn the_tls_mode_reaches_tokio_postgres() {
        use tokio_postgres::config::SslMode as Pg;
        let mode = |connection: &str| Connector::new(connection).unwrap().config.get_ssl_mode();
        assert_eq!(mode("host=h"), Pg::Prefer);
        assert_eq!(mode("host=h sslmode=disable"), Pg::Disable);
        assert_eq!(mode("host=h sslmode=require"), Pg::Require);
        // Without TLS no CA file is read.
        assert_eq!(
            mode("host=h sslmode=disable sslrootcert=/nonexistent"),
            Pg::Disable
        );
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate().unwrap();
        std::fs::write(&ca, params.self_signed(&key).unwrap().pem()).unwrap();
        let connection = format!("host=h sslmode=verify-full sslrootcert={}", ca.display());
        assert_eq!(mode(&connection), Pg::Require);
        let described = Connector::new(&connection).unwrap().describe();
        assert_eq!(
            described,
            format!("sslmode=verify-full, sslrootcert={}", ca.display())
        );
        let described = Connector::new("host=h").unwrap().describe();
        assert_eq!(described, "sslmode=prefer");
    }
}
