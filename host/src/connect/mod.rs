//! Connections written once for every kind that uses them: an MQTT client's settings
//! ([`mqtt`]), a Kafka client's ([`kafka`]), the HTTP listeners of the API and of HTTP
//! ingest ([`listener`]: TLS, limits, secure defaults), the bearer tokens listeners check
//! ([`token`]), certificates and the identities they carry ([`certs`]), and the TLS of
//! the host's clients ([`client_tls`]).

pub mod certs;
#[cfg(feature = "mqtt")]
pub mod client_tls;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod listener;
#[cfg(feature = "mqtt")]
pub mod mqtt;
pub mod token;

/// Connection settings that cannot work, named by the stage (or service) they are for.
#[derive(Debug, thiserror::Error)]
#[error("stage `{stage}`: {problem}")]
pub struct SettingsError {
    pub stage: String,
    pub problem: String,
}

impl SettingsError {
    pub fn new(stage: &str, problem: impl std::fmt::Display) -> SettingsError {
        SettingsError {
            stage: stage.to_owned(),
            problem: problem.to_string(),
        }
    }
}
