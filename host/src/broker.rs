//! An embedded MQTT broker (rumqttd), started by a `[broker]` section so that a
//! pipeline needs no external service. Production setups point at their own broker.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings};

use crate::config::BrokerConfig;

#[derive(Debug, thiserror::Error)]
#[error("embedded broker on {listen}: {message}")]
pub struct BrokerError {
    listen: SocketAddr,
    message: String,
}

/// Start the broker on its own threads and wait until it accepts connections.
pub fn start(config: &BrokerConfig) -> Result<(), BrokerError> {
    let listen = config.listen;
    let error = |message: String| BrokerError { listen, message };
    if std::net::TcpStream::connect_timeout(&listen, Duration::from_millis(100)).is_ok() {
        return Err(error("the address is already in use".to_owned()));
    }
    let server = ServerSettings {
        name: "v4".to_owned(),
        listen,
        tls: None,
        next_connection_delay_ms: 1,
        connections: ConnectionSettings {
            connection_timeout_ms: 60_000,
            max_payload_size: 1 << 20,
            max_inflight_count: config.max_inflight,
            auth: None,
            external_auth: None,
            dynamic_filters: true,
        },
    };
    let broker_config = Config {
        id: 0,
        router: RouterConfig {
            max_connections: 10_000,
            max_outgoing_packet_count: 1_000,
            max_segment_size: 100 << 20,
            max_segment_count: 10,
            ..RouterConfig::default()
        },
        v4: Some(HashMap::from([("v4".to_owned(), server)])),
        ..Config::default()
    };
    std::thread::Builder::new()
        .name("sluice-broker".into())
        .spawn(move || {
            let mut broker = Broker::new(broker_config);
            if let Err(error) = broker.start() {
                tracing::error!("embedded broker stopped: {error}");
            }
        })
        .map_err(|e| error(e.to_string()))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect_timeout(&listen, Duration::from_millis(100)).is_err() {
        if Instant::now() > deadline {
            return Err(error("it did not start listening within 10 s".to_owned()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    tracing::info!(%listen, "embedded MQTT broker listening");
    Ok(())
}
