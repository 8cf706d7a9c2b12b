//! Certificates and TLS clients for the mutual-TLS tests: a CA made with rcgen that
//! signs a server certificate (`localhost`, 127.0.0.1) and client certificates whose
//! subject CN is the client's name (a device id), written as PEM files; an HTTPS GET and
//! an MQTT connection that present one of them.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// A certificate and its key, as PEM files.
#[derive(Debug, Clone)]
pub struct Pair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A certificate authority whose files live in `dir`, named after it.
pub struct Ca {
    name: String,
    dir: PathBuf,
    issuer: CertifiedIssuer<'static, KeyPair>,
    /// Its certificate (PEM), the file a peer trusts.
    pub file: PathBuf,
}

fn named(cn: &str, alt_names: &[&str]) -> CertificateParams {
    let alt: Vec<String> = alt_names.iter().map(|n| (*n).to_owned()).collect();
    let mut params = CertificateParams::new(alt).unwrap();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, cn);
    params.distinguished_name = name;
    params
}

impl Ca {
    pub fn new(dir: &Path, name: &str) -> Ca {
        let mut params = named(&format!("{name} test CA"), &[]);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let file = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&file, issuer.pem()).unwrap();
        Ca {
            name: name.to_owned(),
            dir: dir.to_owned(),
            issuer,
            file,
        }
    }

    fn sign(&self, file: &str, params: CertificateParams) -> Pair {
        let key = KeyPair::generate().unwrap();
        let certificate = params.signed_by(&key, &self.issuer).unwrap();
        let pair = Pair {
            cert: self.dir.join(format!("{}-{file}.pem", self.name)),
            key: self.dir.join(format!("{}-{file}.key", self.name)),
        };
        std::fs::write(&pair.cert, certificate.pem()).unwrap();
        std::fs::write(&pair.key, key.serialize_pem()).unwrap();
        pair
    }

    /// A server certificate for `localhost` and 127.0.0.1.
    pub fn server(&self) -> Pair {
        let mut params = named("localhost", &["localhost", "127.0.0.1"]);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign("server", params)
    }

    /// A client certificate whose subject CN is `cn`.
    pub fn client(&self, cn: &str) -> Pair {
        let mut params = named(cn, &[]);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(cn, params)
    }

    /// A client certificate for `cn` that expired long ago.
    pub fn expired_client(&self, cn: &str) -> Pair {
        let mut params = named(cn, &[]);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        self.sign(&format!("{cn}-expired"), params)
    }
}

/// A rustls client config trusting `ca_file`, presenting `identity` if given.
pub fn client_config(ca_file: &Path, identity: Option<&Pair>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_file_iter(ca_file).unwrap() {
        roots.add(certificate.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some(pair) => {
            let chain = CertificateDer::pem_file_iter(&pair.cert)
                .unwrap()
                .map(Result::unwrap)
                .collect();
            let key = PrivateKeyDer::from_pem_file(&pair.key).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
    };
    Arc::new(config)
}

/// An HTTP/1.0 GET over TLS to `localhost:port` with extra header lines: (status, body),
/// or why there was no answer (the handshake or the connection failed).
pub fn https_get(
    port: u16,
    path: &str,
    headers: &[&str],
    config: &Arc<rustls::ClientConfig>,
) -> Result<(u16, String), String> {
    let name = ServerName::try_from("localhost").unwrap();
    let connection =
        rustls::ClientConnection::new(config.clone(), name).map_err(|error| error.to_string())?;
    let tcp = TcpStream::connect(("127.0.0.1", port)).map_err(|error| error.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut stream = rustls::StreamOwned::new(connection, tcp);
    let extra: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: localhost\r\n{extra}\r\n"
    )
    .map_err(|error| error.to_string())?;
    let mut bytes = Vec::new();
    // A server that closes without close_notify after a complete answer is fine.
    if let Err(error) = stream.read_to_end(&mut bytes)
        && bytes.is_empty()
    {
        return Err(error.to_string());
    }
    let response = String::from_utf8_lossy(&bytes).into_owned();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no HTTP answer: {response:?}"))?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// What an MQTT client got from a broker over TLS.
#[derive(Debug)]
pub enum MqttOutcome {
    /// Connected; the PUBACKs of what it published.
    Published(usize),
    /// The broker refused the CONNECT or the TLS handshake, or closed: the error.
    Failed(String),
}

/// Connect to `localhost:port` over TLS with `config` as `client_id`, publish each
/// `(topic, payload)` with QoS 1 and wait for their PUBACKs (10 s at most).
pub fn mqtt_publish(
    port: u16,
    client_id: &str,
    config: &Arc<rustls::ClientConfig>,
    messages: &[(&str, &[u8])],
) -> MqttOutcome {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut options = MqttOptions::new(client_id, "localhost", port);
        options.set_keep_alive(Duration::from_secs(5));
        options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            config.clone(),
        )));
        let (client, mut events) = AsyncClient::new(options, 16);
        for (topic, payload) in messages {
            client
                .publish(*topic, QoS::AtLeastOnce, false, payload.to_vec())
                .await
                .unwrap();
        }
        let outcome = async {
            let mut acked = 0;
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        acked += 1;
                        if acked == messages.len() {
                            return MqttOutcome::Published(acked);
                        }
                    }
                    Ok(Event::Incoming(Packet::ConnAck(_))) if messages.is_empty() => {
                        return MqttOutcome::Published(0);
                    }
                    Ok(_) => {}
                    Err(error) => return MqttOutcome::Failed(format!("{error:?}")),
                }
            }
        };
        let outcome = tokio::time::timeout(Duration::from_secs(10), outcome)
            .await
            .unwrap_or_else(|_| MqttOutcome::Failed("timed out".to_owned()));
        let _ = client.disconnect().await;
        outcome
    })
}

/// The value of the counter `line` (its name and labels, as /metrics prints them), 0
/// when absent.
pub fn counter(metrics: &str, line: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(line)?.strip_prefix(' '))
        .map_or(0, |v| v.trim().parse::<f64>().unwrap() as u64)
}
