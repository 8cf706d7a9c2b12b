//! What the listener tests share: certificates made here (rcgen), a host started from a
//! config text, and clients speaking HTTPS (HTTP/1.1 or HTTP/2 by ALPN) or raw bytes.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use sluice::config::Config;
use sluice::supervisor::Supervisor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub fn free_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// A certificate authority made for one test.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key, as PEM.
#[derive(Clone)]
pub struct Pair {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: CertificateDer<'static>,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Ca { issuer }
    }

    /// A certificate for `localhost` and 127.0.0.1, named `name`.
    pub fn server(&self, name: &str) -> Pair {
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Pair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }

    /// A client certificate naming `name` (its common name and a DNS alternative name).
    pub fn client(&self, name: &str) -> Pair {
        self.client_with(name, |_| {})
    }

    /// A client certificate naming `name` that expired a year ago.
    pub fn expired_client(&self, name: &str) -> Pair {
        self.client_with(name, |params| {
            params.not_before = rcgen::date_time_ymd(2024, 1, 1);
            params.not_after = rcgen::date_time_ymd(2025, 1, 1);
        })
    }

    fn client_with(&self, name: &str, adjust: impl FnOnce(&mut CertificateParams)) -> Pair {
        let mut params = CertificateParams::new(vec![name.to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        adjust(&mut params);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Pair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }

    /// The CA's certificate as PEM.
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    pub fn roots(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.issuer.der().clone()).unwrap();
        roots
    }
}

impl Pair {
    /// The certificate and key as rustls presents them.
    pub fn identity(&self) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        (
            vec![self.der.clone()],
            PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).unwrap(),
        )
    }

    /// Write the pair to `dir/server.crt` and `dir/server.key`; the `tls` table naming them.
    pub fn write(&self, dir: &Path) -> String {
        let (cert, key) = (dir.join("server.crt"), dir.join("server.key"));
        std::fs::write(&cert, &self.cert_pem).unwrap();
        std::fs::write(&key, &self.key_pem).unwrap();
        format!(
            "tls = {{ cert_file = \"{}\", key_file = \"{}\" }}",
            cert.display(),
            key.display()
        )
    }
}

/// A config in `dir` from `text` (its `data_dir` inside `dir`), loaded or panicking with
/// the report.
pub fn config(dir: &Path, text: &str) -> Config {
    let file = dir.join("sluice.toml");
    let text = format!("data_dir = \"{}\"\n{text}", dir.join("data").display());
    std::fs::write(&file, text).unwrap();
    Config::load(&file).unwrap_or_else(|errors| panic!("{}", errors.report()))
}

/// The report of a config refused.
pub fn refused(dir: &Path, text: &str) -> String {
    let file = dir.join("refused.toml");
    std::fs::write(&file, text).unwrap();
    Config::load(&file)
        .expect_err("the config should be refused")
        .to_string()
}

pub async fn start(dir: &Path, text: &str) -> Supervisor {
    Supervisor::start(config(dir, text)).await.unwrap()
}

/// An HTTPS answer: status, body, the protocol ALPN chose and the server's certificate.
pub struct Answer {
    pub status: u16,
    pub body: String,
    pub alpn: Option<Vec<u8>>,
    pub certificate: CertificateDer<'static>,
}

pub type Failure = Box<dyn std::error::Error + Send + Sync>;

/// One HTTPS request trusting `roots`, offering only `alpn` (`h2` or `http/1.1`).
pub async fn https(
    address: SocketAddr,
    roots: rustls::RootCertStore,
    alpn: &[u8],
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<Answer, Failure> {
    https_as(address, roots, None, alpn, method, path, headers, body).await
}

/// [`https`], presenting `client`'s certificate when given.
#[allow(clippy::too_many_arguments)]
pub async fn https_as(
    address: SocketAddr,
    roots: rustls::RootCertStore,
    client: Option<&Pair>,
    alpn: &[u8],
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<Answer, Failure> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let mut tls = match client {
        None => builder.with_no_client_auth(),
        Some(pair) => {
            let (chain, key) = pair.identity();
            builder.with_client_auth_cert(chain, key)?
        }
    };
    tls.alpn_protocols = vec![alpn.to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
    let tcp = TcpStream::connect(address).await?;
    let stream = connector
        .connect(ServerName::try_from("localhost")?, tcp)
        .await?;
    let (_, session) = stream.get_ref();
    let negotiated = session.alpn_protocol().map(<[u8]>::to_vec);
    let certificate = session.peer_certificates().unwrap()[0].clone().into_owned();
    let mut request = Request::builder()
        .method(method)
        .uri(format!("https://localhost:{}{path}", address.port()));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(body.to_owned())?;
    let io = TokioIo::new(stream);
    let response = if negotiated.as_deref() == Some(b"h2") {
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
        tokio::spawn(connection);
        sender.send_request(request).await?
    } else {
        let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await?;
        tokio::spawn(connection);
        sender.send_request(request).await?
    };
    let status = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes();
    Ok(Answer {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
        alpn: negotiated,
        certificate,
    })
}

/// What a plain-TCP client gets back for `request` (raw bytes, until the server closes
/// or a second passes).
pub async fn raw(address: SocketAddr, request: &str) -> String {
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

/// A plain HTTP/1.1 request on its own connection: the status and the body.
pub async fn http(address: SocketAddr, method: &str, path: &str, headers: &str) -> (u16, String) {
    let answer = raw(
        address,
        &format!("{method} {path} HTTP/1.1\r\nhost: test\r\n{headers}connection: close\r\n\r\n"),
    )
    .await;
    let status = answer
        .get(9..12)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    (status, body.to_owned())
}
