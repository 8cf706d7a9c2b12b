//! `type = "mqtt"` source: subscribe to topic filters with QoS 1 and **manual acks**: a
//! message's PUBACK goes out only once every sink downstream has durably taken it. With
//! a persistent session (`clean_session = false`, the default) the broker keeps what
//! was not acknowledged across restarts of either side and delivers it again.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use rumqttc::{AsyncClient, Event as MqttEvent, EventLoop, Outgoing, Packet, Publish, QoS};
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::event::{Event, now_ms};
use crate::mqtt::{Backoff, Endpoint};
use crate::pipeline::{Ack, Batch, Outputs, StageError};
use crate::stage::{BuildContext, BuildError};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttSourceConfig {
    pub url: String,
    /// Topic filters, wildcards allowed (`sensors/+/telemetry`, `plant/#`).
    pub topics: Vec<String>,
    /// Defaults to `sluice-<stage>`; keep it stable so the broker finds the session.
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default = "default_qos")]
    pub qos: u8,
    #[serde(default)]
    pub clean_session: bool,
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    #[serde(
        rename = "batch_timeout_ms",
        default = "default_batch_timeout",
        with = "serde_with::As::<serde_with::DurationMilliSeconds<u64>>"
    )]
    pub batch_timeout: Duration,
}

fn default_qos() -> u8 {
    1
}
fn default_batch_size() -> usize {
    500
}
fn default_batch_timeout() -> Duration {
    Duration::from_millis(20)
}

impl super::SourceConfig for MqttSourceConfig {
    fn build(&self, context: &BuildContext<'_>) -> Result<Box<dyn super::Source>, BuildError> {
        let name = context.stage;
        let qos = crate::mqtt::qos(name, self.qos)?;
        if self.topics.is_empty() {
            return Err(BuildError::stage(name, "`topics` is empty"));
        }
        let endpoint = Endpoint {
            stage: name,
            url: &self.url,
            client_id: self.client_id.as_deref(),
            username: self.username.as_deref(),
            password: self.password.as_deref(),
            ca_file: self.ca_file.as_ref(),
        };
        let mut options = endpoint.options()?;
        options.set_clean_session(self.clean_session);
        options.set_manual_acks(true);
        Ok(Box::new(MqttSource {
            stage: Arc::from(name),
            options,
            topics: self.topics.clone(),
            qos,
            batch_size: self.batch_size.max(1),
            batch_timeout: self.batch_timeout.max(Duration::from_millis(1)),
        }))
    }
}

pub struct MqttSource {
    stage: Arc<str>,
    options: rumqttc::MqttOptions,
    topics: Vec<String>,
    qos: QoS,
    batch_size: usize,
    batch_timeout: Duration,
}

impl super::Source for MqttSource {
    fn run(
        self: Box<Self>,
        outputs: Outputs,
        shutdown: CancellationToken,
    ) -> BoxFuture<'static, Result<(), StageError>> {
        async move {
            let (client, eventloop) = AsyncClient::new(self.options.clone(), 10_000);
            // The event loop must keep polling (pings, acks) even while the pipeline
            // pushes back, so it runs apart and hands messages over. The hand-over is
            // bounded by the broker's in-flight window: unacknowledged QoS 1 messages
            // are all the broker sends ahead.
            let (messages, mut incoming) = mpsc::channel::<Received>(self.batch_size * 4);
            let sequencer = Arc::new(Mutex::new(AckSequencer::default()));
            let disconnected = CancellationToken::new();
            let poller = tokio::spawn(poll(
                self.stage.clone(),
                eventloop,
                client.clone(),
                self.topics.clone(),
                self.qos,
                sequencer.clone(),
                messages,
                shutdown.clone(),
                disconnected.clone(),
            ));
            let in_flight = Arc::new(AtomicUsize::new(0));
            let origin_cache: Arc<str> = Arc::from("");
            let mut batch = Batch::with_capacity(self.batch_size);
            let mut deadline = tokio::time::Instant::now() + self.batch_timeout;
            loop {
                let next = tokio::select! {
                    message = incoming.recv() => message,
                    _ = tokio::time::sleep_until(deadline), if !batch.is_empty() => {
                        flush(&outputs, &mut batch, &self.stage).await?;
                        continue;
                    }
                };
                let Some(Received { publish, ticket }) = next else {
                    break;
                };
                if batch.is_empty() {
                    deadline = tokio::time::Instant::now() + self.batch_timeout;
                }
                let ack = match ticket {
                    None => Ack::none(),
                    Some(ticket) => {
                        let (client, sequencer) = (client.clone(), sequencer.clone());
                        let guard = InFlight::enter(&in_flight);
                        Ack::new(move || {
                            let _guard = guard;
                            let ready = sequencer.lock().unwrap().complete(ticket);
                            for publish in ready {
                                if let Err(error) = client.try_ack(&publish) {
                                    tracing::warn!(
                                        "cannot send PUBACK (the broker will redeliver): {error}"
                                    );
                                }
                            }
                        })
                    }
                };
                let origin = if *origin_cache == *publish.topic {
                    origin_cache.clone()
                } else {
                    Arc::from(publish.topic.as_str())
                };
                let event = Event {
                    key: None,
                    payload: publish.payload,
                    headers: Vec::new(),
                    timestamp_ms: now_ms(),
                    origin,
                };
                batch.push(event, ack);
                if batch.len() >= self.batch_size {
                    flush(&outputs, &mut batch, &self.stage).await?;
                }
            }
            flush(&outputs, &mut batch, &self.stage).await?;
            drop(outputs);
            // Keep the connection while downstream finishes, so that its
            // acknowledgements reach the broker; what is not done by then is redelivered.
            let give_up = tokio::time::Instant::now() + DRAIN_TIMEOUT;
            while in_flight.load(Ordering::Acquire) > 0 && tokio::time::Instant::now() < give_up {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let _ = client.disconnect().await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            disconnected.cancel();
            let _ = poller.await;
            Ok(())
        }
        .boxed()
    }
}

async fn flush(outputs: &Outputs, batch: &mut Batch, stage: &str) -> Result<(), StageError> {
    if batch.is_empty() {
        return Ok(());
    }
    let full = std::mem::take(batch);
    outputs.metrics().events_in.increment(full.len() as u64);
    outputs
        .send(full)
        .await
        .map_err(|error| StageError::new(stage, error))
}

/// A message handed from the connection to the batching loop, with its place in the
/// acknowledgement order (none for QoS 0).
struct Received {
    publish: Publish,
    ticket: Option<Ticket>,
}

#[derive(Clone, Copy)]
struct Ticket {
    connection: u64,
    sequence: u64,
}

/// Releases PUBACKs in the order the messages arrived, as MQTT requires (brokers such
/// as rumqttd drop a client that acknowledges out of order), whatever order the
/// pipeline finishes them in. A reconnect starts a new order: the broker redelivers
/// whatever the old connection left unacknowledged, so those acks are moot.
#[derive(Default)]
struct AckSequencer {
    connection: u64,
    /// Sequence number of `slots[0]`.
    first: u64,
    /// Messages of this connection in arrival order; `true` once the pipeline is done.
    slots: VecDeque<(Publish, bool)>,
}

impl AckSequencer {
    fn reconnected(&mut self) {
        self.connection += 1;
        self.first = 0;
        self.slots.clear();
    }

    fn register(&mut self, publish: &Publish) -> Ticket {
        self.slots.push_back((publish.clone(), false));
        Ticket {
            connection: self.connection,
            sequence: self.first + self.slots.len() as u64 - 1,
        }
    }

    /// Mark `ticket` done; return the messages whose PUBACK may now go out, in order.
    fn complete(&mut self, ticket: Ticket) -> Vec<Publish> {
        if ticket.connection != self.connection || ticket.sequence < self.first {
            return Vec::new();
        }
        if let Some(slot) = self.slots.get_mut((ticket.sequence - self.first) as usize) {
            slot.1 = true;
        }
        let mut ready = Vec::new();
        while self.slots.front().is_some_and(|(_, done)| *done) {
            ready.push(self.slots.pop_front().expect("checked").0);
            self.first += 1;
        }
        ready
    }
}

/// How long a stopping source waits for downstream to acknowledge what it took.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Counts messages taken but not yet acknowledged (or given up on).
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn enter(counter: &Arc<AtomicUsize>) -> InFlight {
        counter.fetch_add(1, Ordering::AcqRel);
        InFlight(counter.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Drive the MQTT connection: (re)connect, (re)subscribe, pass publishes on. After
/// `shutdown` it takes no new messages (the broker keeps them) but keeps the connection
/// for outgoing acknowledgements until `disconnected`.
#[allow(clippy::too_many_arguments)]
async fn poll(
    stage: Arc<str>,
    mut eventloop: EventLoop,
    client: AsyncClient,
    topics: Vec<String>,
    qos: QoS,
    sequencer: Arc<Mutex<AckSequencer>>,
    messages: mpsc::Sender<Received>,
    shutdown: CancellationToken,
    disconnected: CancellationToken,
) {
    /// What woke the loop.
    enum Step {
        Stop,
        Shutdown,
        Room(mpsc::OwnedPermit<Received>),
        Event(Result<MqttEvent, rumqttc::ConnectionError>),
    }
    let mut backoff = Backoff::default();
    let mut messages = Some(messages);
    // Messages waiting for room in the pipeline. The event loop must keep turning
    // meanwhile (pings, PUBACKs), so it never waits on the pipeline itself. QoS 1
    // messages are bounded by the broker's in-flight window (we withhold their acks);
    // QoS 0 ones, which nothing can slow down, are dropped beyond a bound.
    let mut waiting: VecDeque<Received> = VecDeque::new();
    let mut dropped_qos0: u64 = 0;
    loop {
        let room = match (&messages, waiting.is_empty()) {
            (Some(sender), false) => Some(sender.clone().reserve_owned()),
            _ => None,
        };
        let step = tokio::select! {
            _ = disconnected.cancelled() => Step::Stop,
            _ = shutdown.cancelled(), if messages.is_some() => Step::Shutdown,
            permit = async { room.expect("guarded").await }, if room.is_some() => match permit {
                Ok(permit) => Step::Room(permit),
                Err(_) => Step::Shutdown,
            },
            event = eventloop.poll() => Step::Event(event),
        };
        let event = match step {
            Step::Stop => return,
            Step::Shutdown => {
                // From now on, new messages stay unacknowledged with the broker.
                messages = None;
                waiting.clear();
                continue;
            }
            Step::Room(permit) => {
                permit.send(
                    waiting
                        .pop_front()
                        .expect("room is asked for only when a message waits"),
                );
                continue;
            }
            Step::Event(event) => event,
        };
        match event {
            Ok(MqttEvent::Incoming(Packet::ConnAck(connack))) => {
                backoff.reset();
                sequencer.lock().unwrap().reconnected();
                // The broker redelivers what the old connection left unacknowledged.
                waiting.clear();
                tracing::info!(%stage, session_present = connack.session_present, "connected to the MQTT broker");
                if !connack.session_present {
                    for topic in &topics {
                        if let Err(error) = client.try_subscribe(topic.clone(), qos) {
                            tracing::error!(%stage, topic, "cannot subscribe: {error}");
                        }
                    }
                }
            }
            Ok(MqttEvent::Incoming(Packet::SubAck(suback))) => {
                tracing::info!(%stage, codes = ?suback.return_codes, "subscribed");
            }
            Ok(MqttEvent::Incoming(Packet::Publish(publish))) if messages.is_some() => {
                if publish.qos == QoS::AtMostOnce && waiting.len() >= MAX_WAITING_QOS0 {
                    dropped_qos0 += 1;
                    ::metrics::counter!("sluice_mqtt_qos0_dropped_total", "stage" => stage.to_string()).increment(1);
                    if dropped_qos0.is_power_of_two() {
                        tracing::warn!(%stage, dropped = dropped_qos0, "pipeline full: dropping QoS 0 messages (use QoS 1 for at-least-once)");
                    }
                    continue;
                }
                let ticket = (publish.qos != QoS::AtMostOnce)
                    .then(|| sequencer.lock().unwrap().register(&publish));
                waiting.push_back(Received { publish, ticket });
            }
            // Our own DISCONNECT went out: the connection is over by design.
            Ok(MqttEvent::Outgoing(Outgoing::Disconnect)) => return,
            Ok(_) => {}
            Err(error) => {
                if !backoff.wait(&stage, &error, &disconnected).await {
                    return;
                }
            }
        }
    }
}

/// QoS 0 messages held while the pipeline is full, beyond which they are dropped.
const MAX_WAITING_QOS0: usize = 10_000;

#[cfg(test)]
mod tests {
    use super::*;

    fn publish(n: u16) -> Publish {
        let mut publish = Publish::new("t", QoS::AtLeastOnce, vec![]);
        publish.pkid = n;
        publish
    }

    #[test]
    fn acks_leave_in_arrival_order_and_reconnects_reset_them() {
        let mut sequencer = AckSequencer::default();
        let tickets: Vec<Ticket> = (1..=3).map(|n| sequencer.register(&publish(n))).collect();
        assert!(sequencer.complete(tickets[1]).is_empty(), "2 waits for 1");
        let ready: Vec<u16> = sequencer
            .complete(tickets[0])
            .iter()
            .map(|p| p.pkid)
            .collect();
        assert_eq!(ready, [1, 2]);
        sequencer.reconnected();
        assert!(
            sequencer.complete(tickets[2]).is_empty(),
            "a ticket of the old connection is moot"
        );
        let fresh = sequencer.register(&publish(3));
        assert_eq!(sequencer.complete(fresh).len(), 1);
    }
}
