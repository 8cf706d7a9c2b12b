//! MQTT connection settings, declared once for every client the host runs: the `mqtt`
//! source and sink, the `uplink` sink, the fleet's heartbeat listener.

use std::path::PathBuf;
use std::time::Duration;

use rumqttc::{MqttOptions, QoS, Transport};
use tokio_util::sync::CancellationToken;

use super::SettingsError;
use super::client_tls::ClientTls;

/// The largest MQTT packet a connection sends or takes by default: what the embedded
/// broker accepts. rumqttc's own default (10 KiB) would stall a source on the first
/// larger message.
pub const DEFAULT_MAX_PACKET_BYTES: usize = 1 << 20;

/// Declares a config struct whose table holds the MQTT connection's keys (`url`,
/// `client_id`, `username`, `password`, `ca_file`, `cert_file`, `key_file`,
/// `max_packet_bytes`) beside its own, and its
/// `endpoint(stage)`. A macro rather than `#[serde(flatten)]`, which serde cannot
/// combine with `deny_unknown_fields`: a misspelt key must stay an error at its line.
macro_rules! connection_config {
    ($(#[$meta:meta])* $vis:vis struct $name:ident { $($fields:tt)* }) => {
        $(#[$meta])*
        $vis struct $name {
            /// `mqtt://host:port` or `mqtts://host:port`.
            pub url: String,
            /// Defaults to `sluice-<stage>`; keep it stable so the broker finds the session.
            #[serde(default)]
            pub client_id: Option<String>,
            #[serde(default)]
            pub username: Option<String>,
            #[serde(default)]
            pub password: Option<String>,
            /// PEM file of the CA that signed the broker's certificate (for `mqtts://`).
            #[serde(default)]
            pub ca_file: Option<std::path::PathBuf>,
            /// A client certificate to present (PEM; mutual TLS), with `key_file`.
            #[serde(default)]
            pub cert_file: Option<std::path::PathBuf>,
            /// The client certificate's private key (PEM).
            #[serde(default)]
            pub key_file: Option<std::path::PathBuf>,
            /// The largest packet (topic, payload and header) sent or taken.
            #[serde(default = "crate::connect::mqtt::default_max_packet_bytes")]
            pub max_packet_bytes: usize,
            $($fields)*
        }

        impl $name {
            /// Where and how `stage` connects.
            pub fn endpoint<'a>(&'a self, stage: &'a str) -> $crate::connect::mqtt::Endpoint<'a> {
                $crate::connect::mqtt::Endpoint {
                    stage,
                    url: &self.url,
                    client_id: self.client_id.as_deref(),
                    username: self.username.as_deref(),
                    password: self.password.as_deref(),
                    ca_file: self.ca_file.as_ref(),
                    cert_file: self.cert_file.as_ref(),
                    key_file: self.key_file.as_ref(),
                    max_packet_bytes: self.max_packet_bytes,
                }
            }
        }
    };
}
pub(crate) use connection_config;

pub fn default_max_packet_bytes() -> usize {
    DEFAULT_MAX_PACKET_BYTES
}

/// The client id of a stage that names none: stable, so that the broker finds its
/// session again.
pub fn default_client_id(stage: &str) -> String {
    format!("sluice-{stage}")
}

/// Where and how to connect, as a [`connection_config`] struct declares it.
pub struct Endpoint<'a> {
    /// The stage connecting: names errors and the default client id.
    pub stage: &'a str,
    /// `mqtt://host:port` or `mqtts://host:port` (ports default to 1883 and 8883;
    /// IPv6 literals in brackets).
    pub url: &'a str,
    /// Defaults to `sluice-<stage>`; keep it stable so the broker finds the session.
    pub client_id: Option<&'a str>,
    pub username: Option<&'a str>,
    pub password: Option<&'a str>,
    /// PEM file of the CA that signed the broker's certificate (for `mqtts://`).
    pub ca_file: Option<&'a PathBuf>,
    /// The client certificate presented over `mqtts://`, with its key (PEM).
    pub cert_file: Option<&'a PathBuf>,
    pub key_file: Option<&'a PathBuf>,
    /// The largest packet sent or taken, as MQTT counts it (all but the fixed header).
    pub max_packet_bytes: usize,
}

impl Endpoint<'_> {
    /// Connection options, or an error naming the stage.
    pub fn options(&self) -> Result<MqttOptions, SettingsError> {
        self.parse()
            .map_err(|error| SettingsError::new(self.stage, error))
    }

    /// The client id the connection presents.
    pub fn client_id(&self) -> String {
        self.client_id
            .map_or_else(|| default_client_id(self.stage), str::to_owned)
    }

    /// The broker's host (as written, IPv6 literals in brackets) and port, over TLS or
    /// not; `None` when `url` is not a broker address.
    pub fn address(&self) -> Option<(String, u16)> {
        Broker::parse(self.url)
            .ok()
            .map(|broker| (broker.host, broker.port))
    }

    fn parse(&self) -> Result<MqttOptions, String> {
        let broker = Broker::parse(self.url)?;
        let client_id = self.client_id();
        if self.max_packet_bytes < MIN_PACKET_BYTES {
            return Err(format!(
                "`max_packet_bytes` must be at least {MIN_PACKET_BYTES}, not {}",
                self.max_packet_bytes
            ));
        }
        let mut options = MqttOptions::new(client_id, broker.host, broker.port);
        options.set_keep_alive(Duration::from_secs(15));
        options.set_max_packet_size(self.max_packet_bytes, self.max_packet_bytes);
        if let Some(username) = self.username {
            options.set_credentials(username, self.password.unwrap_or_default());
        }
        let identity = match (self.cert_file, self.key_file) {
            (Some(cert), Some(key)) => Some((cert.as_path(), key.as_path())),
            (None, None) => None,
            _ => return Err("`cert_file` and `key_file` go together".to_owned()),
        };
        if !broker.tls && (identity.is_some() || self.ca_file.is_some()) {
            return Err(format!(
                "`ca_file`, `cert_file` and `key_file` are for TLS; use mqtts:// in `url` (now `{}`)",
                self.url
            ));
        }
        if broker.tls {
            let tls = ClientTls {
                ca_file: self.ca_file.map(PathBuf::as_path),
                identity,
            };
            let config = tls.config().map_err(|error| error.to_string())?;
            options.set_transport(Transport::tls_with_config(config.into()));
        }
        Ok(options)
    }
}

/// Below this, not even a CONNECT with a long client id and credentials fits.
const MIN_PACKET_BYTES: usize = 1 << 10;

/// The size (MQTT's remaining length: topic, packet id, payload) of a QoS 1 PUBLISH.
pub fn publish_size(topic: &str, payload: usize) -> usize {
    2 + topic.len() + 2 + payload
}

/// The size of the packet a connection refused for being over its limit, if `error`
/// is that.
pub fn oversized(error: &rumqttc::ConnectionError) -> Option<usize> {
    match error {
        rumqttc::ConnectionError::MqttState(rumqttc::StateError::Deserialization(
            rumqttc::Error::PayloadSizeLimitExceeded(size),
        )) => Some(*size),
        _ => None,
    }
}

/// Where a `mqtt://` or `mqtts://` URL points.
struct Broker {
    tls: bool,
    /// As the MQTT client wants it: an IPv6 literal keeps its brackets, because the
    /// client joins host and port with `:` before resolving.
    host: String,
    port: u16,
}

impl Broker {
    fn parse(text: &str) -> Result<Broker, String> {
        let url = url::Url::parse(text).map_err(|error| match error {
            url::ParseError::EmptyHost => format!("url `{text}` has no host"),
            error => format!("url `{text}`: {error}"),
        })?;
        let tls = match url.scheme() {
            "mqtt" => false,
            "mqtts" => true,
            other => {
                return Err(format!(
                    "url `{text}` has scheme `{other}`; use mqtt:// or mqtts://"
                ));
            }
        };
        let host = match url.host() {
            Some(url::Host::Domain("")) | None => {
                return Err(format!("url `{text}` has no host"));
            }
            // rumqttc names the TLS server by the same string it connects to, and
            // `[::1]` is neither a DNS name nor an IP address to rustls.
            Some(url::Host::Ipv6(_)) if tls => {
                return Err(format!(
                    "url `{text}`: mqtts:// needs a host name, not an IPv6 address"
                ));
            }
            Some(host) => host.to_string(),
        };
        if !url.username().is_empty() || url.password().is_some() {
            return Err(format!(
                "url `{text}` holds credentials; set `username` and `password` instead"
            ));
        }
        if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
            return Err(format!(
                "url `{text}` has a path, query or fragment; MQTT takes only host and port"
            ));
        }
        Ok(Broker {
            tls,
            host,
            port: url.port().unwrap_or(if tls { 8883 } else { 1883 }),
        })
    }
}

/// The QoS a config's `qos` names: 0 or 1.
pub fn qos(stage: &str, value: u8) -> Result<QoS, SettingsError> {
    match value {
        0 => Ok(QoS::AtMostOnce),
        1 => Ok(QoS::AtLeastOnce),
        other => Err(SettingsError::new(
            stage,
            format!("`qos` must be 0 or 1, not {other}"),
        )),
    }
}

/// Reconnect pacing shared by the MQTT source and sink: 200 ms, doubling up to 5 s,
/// back to 200 ms after every successful connection.
pub struct Backoff(Duration);

impl Default for Backoff {
    fn default() -> Self {
        Backoff(Self::FIRST)
    }
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(200);
    const MAX: Duration = Duration::from_secs(5);

    pub fn reset(&mut self) {
        self.0 = Self::FIRST;
    }

    /// Log a connection error and wait before the next attempt. Returns false when
    /// `stop` fired meanwhile.
    pub async fn wait(
        &mut self,
        stage: &str,
        error: &rumqttc::ConnectionError,
        stop: &CancellationToken,
    ) -> bool {
        tracing::warn!(%stage, "MQTT connection: {error}; retrying in {:?}", self.0);
        let stopped = tokio::select! {
            _ = stop.cancelled() => true,
            _ = tokio::time::sleep(self.0) => false,
        };
        self.0 = (self.0 * 2).min(Self::MAX);
        !stopped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(url: &str) -> Endpoint<'_> {
        Endpoint {
            stage: "s",
            url,
            client_id: None,
            username: None,
            password: None,
            ca_file: None,
            cert_file: None,
            key_file: None,
            max_packet_bytes: DEFAULT_MAX_PACKET_BYTES,
        }
    }

    #[test]
    fn client_certificates_need_both_files_and_tls() {
        let cert = PathBuf::from("device.crt");
        let half = Endpoint {
            cert_file: Some(&cert),
            ..endpoint("mqtts://broker")
        };
        let error = half.options().unwrap_err().to_string();
        assert!(
            error.contains("`cert_file` and `key_file` go together"),
            "{error}"
        );
        let plain = Endpoint {
            cert_file: Some(&cert),
            key_file: Some(&cert),
            ..endpoint("mqtt://broker")
        };
        let error = plain.options().unwrap_err().to_string();
        assert!(error.contains("use mqtts://"), "{error}");
        let missing = Endpoint {
            cert_file: Some(&cert),
            key_file: Some(&cert),
            ..endpoint("mqtts://broker")
        };
        let error = missing.options().unwrap_err().to_string();
        assert!(error.contains("cannot read device.crt"), "{error}");
    }

    fn broker(url: &str) -> Result<(bool, String, u16), String> {
        Broker::parse(url).map(|b| (b.tls, b.host, b.port))
    }

    #[test]
    fn parses_hosts_ports_and_schemes() {
        assert_eq!(
            broker("mqtt://127.0.0.1:1884"),
            Ok((false, "127.0.0.1".into(), 1884))
        );
        assert_eq!(broker("mqtt://broker"), Ok((false, "broker".into(), 1883)));
        assert_eq!(broker("mqtt://broker/"), Ok((false, "broker".into(), 1883)));
        assert_eq!(broker("mqtts://broker"), Ok((true, "broker".into(), 8883)));
        assert_eq!(broker("MQTTS://Broker:9"), Ok((true, "Broker".into(), 9)));
    }

    #[test]
    fn an_ipv6_literal_keeps_its_brackets_for_the_client() {
        assert_eq!(
            broker("mqtt://[::1]:1884"),
            Ok((false, "[::1]".into(), 1884))
        );
        assert_eq!(broker("mqtt://[::1]"), Ok((false, "[::1]".into(), 1883)));
        assert_eq!(
            broker("mqtt://[2001:db8::5]:1883"),
            Ok((false, "[2001:db8::5]".into(), 1883))
        );
        // The client connects to `format!("{host}:{port}")`: that must be an address.
        let options = endpoint("mqtt://[::1]:1884").options().unwrap();
        let (host, port) = options.broker_address();
        let address: std::net::SocketAddr = format!("{host}:{port}").parse().unwrap();
        assert_eq!(address, "[::1]:1884".parse().unwrap());
        assert!(
            broker("mqtts://[::1]")
                .unwrap_err()
                .contains("mqtts:// needs a host name")
        );
    }

    #[test]
    fn refuses_what_is_not_an_mqtt_broker_address() {
        let refused = |url: &str| broker(url).unwrap_err();
        assert_eq!(
            refused("tcp://x"),
            "url `tcp://x` has scheme `tcp`; use mqtt:// or mqtts://"
        );
        assert_eq!(refused("mqtt://"), "url `mqtt://` has no host");
        assert_eq!(refused("mqtt://:1883"), "url `mqtt://:1883` has no host");
        assert_eq!(
            refused("mqtt://x:port"),
            "url `mqtt://x:port`: invalid port number"
        );
        assert_eq!(
            refused("mqtt://x:70000"),
            "url `mqtt://x:70000`: invalid port number"
        );
        assert_eq!(
            refused("broker:1883"),
            "url `broker:1883` has scheme `broker`; use mqtt:// or mqtts://"
        );
        assert_eq!(
            refused("127.0.0.1:1883"),
            "url `127.0.0.1:1883`: relative URL without a base"
        );
        assert!(refused("mqtt://[::1:1883").contains("invalid IPv6 address"));
        assert!(refused("mqtt://u:p@x").contains("set `username` and `password`"));
        assert!(refused("mqtt://x/topic").contains("has a path"));
    }

    #[test]
    fn options_name_the_stage_and_default_the_client_id() {
        let options = endpoint("mqtt://127.0.0.1:1884").options().unwrap();
        assert_eq!(options.broker_address(), ("127.0.0.1".into(), 1884));
        assert_eq!(options.client_id(), "sluice-s");
        let error = endpoint("mqtt://x:port").options().unwrap_err().to_string();
        assert_eq!(error, "stage `s`: url `mqtt://x:port`: invalid port number");
    }
}
