//! Connections written once for every kind that uses them: an MQTT client's settings
//! ([`mqtt`]), a Kafka client's ([`kafka`]), the bearer tokens listeners check
//! ([`token`]).

#[cfg(feature = "kafka")]
pub mod kafka;
#[cfg(feature = "mqtt")]
pub mod mqtt;
pub mod token;
