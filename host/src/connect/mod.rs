//! Connections written once for every kind that uses them: an MQTT client's settings
//! ([`mqtt`]), a Kafka client's ([`kafka`]), the HTTP listeners of the API and of HTTP
//! ingest ([`listener`]: TLS, limits, secure defaults), the bearer tokens listeners check
//! ([`token`]), certificates and the identities they carry ([`certs`]), and the TLS of
//! the host's clients ([`client_tls`]).

pub mod certs;
#[cfg(any(feature = "mqtt", feature = "http-sink"))]
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

/// An error with its causes, `a: b: c`: an HTTP client's own message leaves out why a
/// request failed (a refused TLS handshake, an expired certificate, a closed connection).
pub struct Causes<'a>(pub &'a dyn std::error::Error);

impl std::fmt::Display for Causes<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(error) = cause {
            write!(f, ": {error}")?;
            cause = error.source();
        }
        Ok(())
    }
}
