//! The `[broker]` table: the embedded MQTT broker's listener, limits and who it admits.
//! What the broker does with it is the `broker` module's.

use std::collections::BTreeMap;

use serde::Deserialize;

/// An embedded MQTT broker started with the pipeline, for setups without one.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerConfig {
    pub listen: toml::Spanned<std::net::SocketAddr>,
    /// Speak MQTT over TLS with this certificate and key (PEM files, reloaded when they
    /// change).
    #[serde(default)]
    pub tls: Option<crate::connect::listener::TlsFiles>,
    /// Client connections at once; those past it are closed before CONNECT.
    #[serde(default = "default_broker_connections")]
    pub max_connections: usize,
    /// Unacknowledged QoS 1 messages the broker sends one client ahead.
    #[serde(default = "default_broker_inflight")]
    pub max_inflight: usize,
    /// The largest packet a client may send; by default the MQTT clients' own limit,
    /// so that what one side sends the other takes.
    #[serde(default = "default_broker_packet_bytes")]
    pub max_packet_bytes: usize,
    /// Disk a persistent session's queue may take; past it, publishers to that session
    /// wait for their PUBACK (their own buffers hold what they send meanwhile).
    #[serde(default = "default_broker_session_bytes")]
    pub max_session_bytes: u64,
    /// Who may connect with a username and password, and where each may publish and
    /// subscribe (`{user}` is the name). Fleet devices connect with their id and token.
    #[serde(default)]
    pub users: BTreeMap<String, BrokerUser>,
    /// Where a fleet device may publish; `{device}` is its id.
    #[serde(default = "default_device_publish")]
    pub device_publish: Vec<String>,
    /// Where a fleet device may subscribe; `{device}` is its id.
    #[serde(default)]
    pub device_subscribe: Vec<String>,
    /// Listen on an address other than loopback without TLS or without anyone to
    /// authenticate; with nobody to check, admit clients without credentials.
    #[serde(default)]
    pub insecure: bool,
}

impl BrokerConfig {
    /// The listener's settings, for the checks every listener gets.
    pub fn listener(&self) -> crate::connect::listener::ListenerSettings {
        use crate::connect::listener;
        listener::ListenerSettings {
            listen: *self.listen.get_ref(),
            tls: self.tls.clone(),
            insecure: self.insecure,
            limits: listener::ServerLimits {
                header_read_timeout: listener::default_header_read_timeout(),
                idle_timeout: listener::default_idle_timeout(),
                max_connections: self.max_connections,
                max_requests_in_flight: self.max_connections,
            },
        }
    }
}

fn default_broker_connections() -> usize {
    10_000
}

/// `[broker.users.NAME]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerUser {
    pub password: String,
    #[serde(default)]
    pub publish: Vec<String>,
    #[serde(default)]
    pub subscribe: Vec<String>,
}

fn default_device_publish() -> Vec<String> {
    vec![
        "sensors/{device}/#".to_owned(),
        "sluice/devices/{device}/#".to_owned(),
    ]
}

fn default_broker_inflight() -> usize {
    1000
}

fn default_broker_packet_bytes() -> usize {
    crate::connect::mqtt::DEFAULT_MAX_PACKET_BYTES
}

fn default_broker_session_bytes() -> u64 {
    256 << 20
}
