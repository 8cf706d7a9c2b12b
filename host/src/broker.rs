//! An embedded MQTT broker (rumqttd), started by a `[broker]` section so that a
//! pipeline needs no external service. Production setups point at their own broker.
//!
//! rumqttd 0.20 has no way to stop a [`rumqttd::Broker`]: `Broker::start` blocks its
//! thread for good. So the pieces are put together here: rumqttd's router on its own
//! thread, and its MQTT listener ([`Server`]) on a thread with a tokio runtime that
//! this module owns. Stopping the broker stops that runtime, which closes the listener
//! and every client connection. The router cannot be stopped (it holds a sender to its
//! own queue, so its thread waits on that queue forever): it idles, detached, holding
//! what it stored, and like every detached thread it does not keep the process alive.

use std::net::SocketAddr;
use std::time::Duration;

use rumqttd::protocol::v4::V4;
use rumqttd::{ConnectionSettings, LinkType, Router, RouterConfig, Server, ServerSettings};
use tokio::sync::oneshot;

use crate::config::BrokerConfig;

#[derive(Debug, thiserror::Error)]
#[error("embedded broker on {listen}: {message}")]
pub struct BrokerError {
    listen: SocketAddr,
    message: String,
}

/// How long the broker may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A running embedded broker. [`EmbeddedBroker::stop`] stops it and waits until it
/// has; dropping it stops it too, without waiting (so that a pipeline that fails to
/// start after its broker, or that ends, leaves no listener behind).
pub struct EmbeddedBroker {
    listen: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EmbeddedBroker {
    /// Close the listener and every client connection, and wait until they are closed.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        tracing::info!(listen = %self.listen, "embedded MQTT broker stopped");
    }
}

impl Drop for EmbeddedBroker {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Start the broker and wait, without blocking the async runtime, until it accepts
/// connections (or fails to listen).
pub async fn start(config: &BrokerConfig) -> Result<EmbeddedBroker, BrokerError> {
    let listen = config.listen;
    let error = |message: String| BrokerError { listen, message };
    if listen.port() == 0 {
        return Err(error(
            "give a fixed port: clients name it in their `url`".to_owned(),
        ));
    }
    // Binding would fail too, but only on the broker's thread: a listener already
    // there would answer the readiness probe below as if it were ours.
    if accepts(listen).await {
        return Err(error("the address is already in use".to_owned()));
    }
    let server = ServerSettings {
        name: "v4".to_owned(),
        listen,
        tls: None,
        next_connection_delay_ms: 1,
        connections: ConnectionSettings {
            connection_timeout_ms: 60_000,
            max_payload_size: crate::connect::mqtt::DEFAULT_MAX_PACKET_BYTES,
            max_inflight_count: config.max_inflight,
            auth: None,
            external_auth: None,
            dynamic_filters: true,
        },
    };
    let router = Router::new(
        0,
        RouterConfig {
            max_connections: 10_000,
            max_outgoing_packet_count: 1_000,
            max_segment_size: 100 << 20,
            max_segment_count: 10,
            ..RouterConfig::default()
        },
    );
    let mut server = Server::new(server, router.spawn(), V4);
    let (stop, stopped) = oneshot::channel::<()>();
    let (failed, mut failure) = oneshot::channel::<String>();
    let thread = std::thread::Builder::new()
        .name("sluice-broker".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(error) => {
                    let _ = failed.send(format!("cannot start its runtime: {error}"));
                    return;
                }
            };
            runtime.block_on(async move {
                tokio::select! {
                    result = server.start(LinkType::Remote) => {
                        let message = match result {
                            Err(error) => error.to_string(),
                            Ok(()) => "the listener ended".to_owned(),
                        };
                        tracing::error!(%listen, "embedded broker stopped: {message}");
                        let _ = failed.send(message);
                    }
                    _ = stopped => {}
                }
            });
            // Dropping the runtime here ends every connection task with it.
        })
        .map_err(|e| error(e.to_string()))?;
    let broker = EmbeddedBroker {
        listen,
        stop: Some(stop),
        thread: Some(thread),
    };
    let ready = async {
        while !accepts(listen).await {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::select! {
        _ = ready => {}
        Ok(message) = &mut failure => return Err(error(message)),
        _ = tokio::time::sleep(START_TIMEOUT) => {
            return Err(error(format!("it did not start listening within {START_TIMEOUT:?}")));
        }
    }
    tracing::info!(%listen, "embedded MQTT broker listening");
    Ok(broker)
}

/// Whether something accepts TCP connections at `address`.
async fn accepts(address: SocketAddr) -> bool {
    matches!(
        tokio::time::timeout(
            Duration::from_millis(100),
            tokio::net::TcpStream::connect(address)
        )
        .await,
        Ok(Ok(_))
    )
}

#[cfg(test)]
mod tests {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

    use super::*;

    /// A loopback port nothing listens on (just now).
    fn free_port() -> SocketAddr {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    }

    fn config(listen: SocketAddr) -> BrokerConfig {
        BrokerConfig {
            listen,
            max_inflight: 100,
        }
    }

    /// A connected client and its event loop, polled until the broker's CONNACK.
    async fn connect(listen: SocketAddr, id: &str) -> (AsyncClient, rumqttc::EventLoop) {
        let options = MqttOptions::new(id, listen.ip().to_string(), listen.port());
        let (client, mut events) = AsyncClient::new(options, 10);
        loop {
            if let Event::Incoming(Packet::ConnAck(_)) = events.poll().await.unwrap() {
                return (client, events);
            }
        }
    }

    #[tokio::test]
    async fn once_started_it_relays_messages_and_once_stopped_it_lets_go_of_its_port() {
        let listen = free_port();
        let broker = start(&config(listen)).await.unwrap();

        let (subscriber, mut inbox) = connect(listen, "sub").await;
        subscriber.subscribe("t", QoS::AtLeastOnce).await.unwrap();
        while !matches!(
            inbox.poll().await.unwrap(),
            Event::Incoming(Packet::SubAck(_))
        ) {}
        let (publisher, mut outbox) = connect(listen, "pub").await;
        publisher
            .publish("t", QoS::AtLeastOnce, false, "hello")
            .await
            .unwrap();
        let delivered = async {
            loop {
                if let Event::Incoming(Packet::Publish(p)) = inbox.poll().await.unwrap() {
                    return p.payload;
                }
            }
        };
        let sending = async {
            loop {
                outbox.poll().await.unwrap();
            }
        };
        let payload = tokio::select! {
            payload = delivered => payload,
            _ = sending => unreachable!(),
            _ = tokio::time::sleep(Duration::from_secs(10)) => panic!("nothing relayed"),
        };
        assert_eq!(&payload[..], b"hello");

        broker.stop().await;
        assert!(!accepts(listen).await, "the listener is closed");
        let disconnected = tokio::time::timeout(Duration::from_secs(5), async {
            while inbox.poll().await.is_ok() {}
        })
        .await;
        assert!(disconnected.is_ok(), "clients are disconnected");
        std::net::TcpListener::bind(listen).expect("the port is free again");
    }

    #[tokio::test]
    async fn dropping_it_stops_it() {
        let listen = free_port();
        drop(start(&config(listen)).await.unwrap());
        let released = tokio::time::timeout(Duration::from_secs(5), async {
            while accepts(listen).await {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        assert!(
            released.is_ok(),
            "still listening after the handle was dropped"
        );
    }

    #[tokio::test]
    async fn an_address_in_use_is_refused() {
        let taken = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let listen = taken.local_addr().unwrap();
        let error = start(&config(listen)).await.err().unwrap();
        assert_eq!(
            error.to_string(),
            format!("embedded broker on {listen}: the address is already in use")
        );
    }

    #[tokio::test]
    async fn port_zero_is_refused() {
        let error = start(&config("127.0.0.1:0".parse().unwrap()))
            .await
            .err()
            .unwrap();
        assert!(error.to_string().contains("give a fixed port"), "{error}");
    }
}
