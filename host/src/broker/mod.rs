//! An embedded MQTT broker (MQTT 3.1.1), started by a `[broker]` section so that a
//! pipeline needs no external service. Production setups may point at their own broker.
//!
//! Why Sluice has its own: the broker sits between a fleet's uplinks and the central
//! pipeline, and a PUBACK from it lets an agent delete what it buffered. So a QoS 1
//! message is acknowledged only once it is held for every subscriber that will get it:
//! on disk (fsynced, in the subscriber's session queue under `DATA_DIR/broker`) for a
//! persistent session, as the central host's MQTT source keeps. A `kill -9` of the
//! host then loses nothing an agent was told was taken; the restarted source gets it
//! again. Messages that no persistent session subscribes to are, as MQTT has it, gone
//! with the sessions that could have taken them.
//!
//! Clients are admitted and confined to their topics by [`Access`], over TLS when the
//! config gives a certificate. What it does not do (yet): client certificates, MQTT 5,
//! persistence of retained messages, and QoS 2 towards subscribers (granted as QoS 1).

mod access;
mod connection;
mod queue;
mod sessions;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use self::access::Access;
use self::connection::Shared;
use self::sessions::Sessions;
use crate::config::{BrokerConfig, Config};

#[derive(Debug, thiserror::Error)]
#[error("embedded broker on {listen}: {message}")]
pub struct BrokerError {
    listen: SocketAddr,
    message: String,
}

/// A running embedded broker. [`EmbeddedBroker::stop`] stops it and waits until every
/// connection is closed; dropping it stops it too, without waiting (so that a pipeline
/// that fails to start after its broker, or that ends, leaves no listener behind).
pub struct EmbeddedBroker {
    listen: SocketAddr,
    shared: Arc<Shared>,
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl EmbeddedBroker {
    /// Admit clients by `access` from now on: a connected client it no longer admits
    /// is disconnected (a reload keeps the broker).
    pub fn set_access(&self, access: Access) {
        self.shared.access.send_replace(Arc::new(access));
    }

    /// Hold the sessions of a new config's local sources (a reload keeps the broker).
    pub fn declare(&self, local: &[LocalSession]) -> Result<(), BrokerError> {
        local.iter().try_for_each(|session| {
            self.shared
                .sessions
                .declare(&session.client_id, &session.filters)
                .map_err(|e| BrokerError {
                    listen: self.listen,
                    message: format!("cannot keep the session of `{}`: {e}", session.client_id),
                })
        })
    }

    /// Close the listener and every client connection, and wait until they are closed.
    pub async fn stop(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        tracing::info!(listen = %self.listen, "embedded MQTT broker stopped");
    }
}

impl Drop for EmbeddedBroker {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A persistent session a local MQTT source holds in this broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalSession {
    pub client_id: String,
    pub filters: Vec<String>,
}

/// The sessions of `config`'s MQTT sources that read from its own `[broker]`.
pub fn local_sessions(config: &Config) -> Vec<LocalSession> {
    let Some(broker) = &config.broker else {
        return Vec::new();
    };
    config
        .sources
        .values()
        .filter_map(|stage| {
            let subscription = stage.config.declare().subscription?;
            names(
                &subscription.host,
                subscription.port,
                *broker.listen.get_ref(),
            )
            .then(|| LocalSession {
                client_id: subscription
                    .client_id
                    .unwrap_or_else(|| crate::connect::mqtt::default_client_id(&stage.name)),
                filters: subscription.filters,
            })
        })
        .collect()
}

/// Whether `host:port` reaches a broker listening on `listen` from this machine.
fn names(host: &str, port: u16, listen: SocketAddr) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let ip = if host.eq_ignore_ascii_case("localhost") {
        Some(IpAddr::V4(Ipv4Addr::LOCALHOST))
    } else {
        host.parse::<IpAddr>().ok()
    };
    port == listen.port()
        && ip.is_some_and(|ip| {
            ip == listen.ip()
                || listen.ip().is_unspecified()
                || (ip.is_loopback() && listen.ip().is_loopback())
        })
}

/// Open the sessions kept in `data_dir`, hold those `local` declares, and start
/// listening.
pub async fn start(
    config: &BrokerConfig,
    data_dir: &Path,
    local: &[LocalSession],
    access: Access,
) -> Result<EmbeddedBroker, BrokerError> {
    let listen = *config.listen.get_ref();
    let error = |message: String| BrokerError { listen, message };
    if listen.port() == 0 {
        return Err(error(
            "give a fixed port: clients name it in their `url`".to_owned(),
        ));
    }
    let dir = data_dir.join("broker");
    let max_session_bytes = config.max_session_bytes;
    let opening = dir.clone();
    let sessions = tokio::task::spawn_blocking(move || Sessions::open(&opening, max_session_bytes))
        .await
        .expect("opening the sessions does not panic")
        .map_err(|e| error(format!("cannot open its sessions: {e}")))?;
    let listener = TcpListener::bind(listen).await.map_err(|e| {
        error(match e.kind() {
            std::io::ErrorKind::AddrInUse => "the address is already in use".to_owned(),
            _ => e.to_string(),
        })
    })?;
    for session in local {
        sessions
            .declare(&session.client_id, &session.filters)
            .map_err(|e| {
                error(format!(
                    "cannot keep the session of `{}`: {e}",
                    session.client_id
                ))
            })?;
    }
    let shared = Arc::new(Shared {
        access: watch::channel(Arc::new(access)).0,
        sessions,
        max_inflight: config.max_inflight.clamp(1, u16::MAX as usize - 1),
        max_packet_bytes: config.max_packet_bytes,
    });
    let stop = CancellationToken::new();
    let tls = match &config.tls {
        None => None,
        Some(files) => {
            let server = files.server_config().map_err(|e| error(e.to_string()))?;
            Some(tokio_rustls::TlsAcceptor::from(server))
        }
    };
    let admitting = Admitting {
        tls,
        slots: Arc::new(Semaphore::new(config.max_connections.max(1))),
    };
    let task = tokio::spawn(accept(listener, admitting, shared.clone(), stop.clone()));
    tracing::info!(%listen, dir = %dir.display(), "embedded MQTT broker listening");
    Ok(EmbeddedBroker {
        listen,
        shared,
        stop,
        task: Some(task),
    })
}

/// How connections are taken: over TLS or not, and how many at once.
struct Admitting {
    tls: Option<tokio_rustls::TlsAcceptor>,
    slots: Arc<Semaphore>,
}

/// Accept connections until `stop`, then wait for each to close.
async fn accept(
    listener: TcpListener,
    admitting: Admitting,
    shared: Arc<Shared>,
    stop: CancellationToken,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let Ok(slot) = admitting.slots.clone().try_acquire_owned() else {
                        ::metrics::counter!("sluice_broker_refused_total", "reason" => "max_connections")
                            .increment(1);
                        tracing::warn!(%peer, "embedded broker: at max_connections; closing a new connection");
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    let serving = connection::serve(
                        stream,
                        Some(peer),
                        admitting.tls.clone(),
                        shared.clone(),
                        stop.clone(),
                    );
                    connections.spawn(async move {
                        serving.await;
                        drop(slot);
                    });
                }
                Err(error) => {
                    tracing::warn!("embedded broker: accept failed: {error}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests;
