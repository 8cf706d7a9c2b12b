//! `type = "mqtt"` source: subscribe to topic filters with QoS 1 and **manual acks**: a
//! message's PUBACK goes out only once every sink downstream has durably taken it. With
//! a persistent session (`clean_session = false`, the default) the broker keeps what
//! was not acknowledged across restarts of either side and delivers it again.

mod acks;
mod poll;

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use rumqttc::{AsyncClient, QoS};
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use self::acks::Acks;
use self::poll::{Received, Subscription};
use crate::component::{BuildContext, BuildError, Declaration, DurableSubscription};
use crate::connect::mqtt::publish_size;
use crate::event::{Event, now_ms};
use crate::pipeline::{Ack, Batch, BatchLimits, Batcher, DeadLetter, Outputs, StageError};

crate::connect::mqtt::connection_config! {
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct MqttSourceConfig {
        /// Topic filters, wildcards allowed (`sensors/+/telemetry`, `plant/#`).
        pub topics: Vec<String>,
        /// Join a shared subscription (`$share/GROUP/filter`): the broker splits the stream
        /// between every host of the group, so several central hosts share one load.
        #[serde(default)]
        pub shared_group: Option<String>,
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
    fn declare(&self) -> Declaration<'_> {
        let endpoint = self.endpoint("");
        let durable = !self.clean_session && self.qos >= 1 && self.shared_group.is_none();
        let subscription =
            durable
                .then(|| endpoint.address())
                .flatten()
                .map(|(host, port)| DurableSubscription {
                    host,
                    port,
                    client_id: self.client_id.clone(),
                    filters: self.topics.clone(),
                });
        Declaration {
            subscription,
            ..Declaration::default()
        }
    }

    fn build(&self, context: &BuildContext<'_>) -> Result<Box<dyn super::Source>, BuildError> {
        let name = context.stage;
        let qos = crate::connect::mqtt::qos(name, self.qos)?;
        if self.topics.is_empty() {
            return Err(BuildError::stage(name, "`topics` is empty"));
        }
        let topics = match &self.shared_group {
            None => self.topics.clone(),
            Some(group) => {
                if group.is_empty() || group.contains(['/', '+', '#']) {
                    return Err(BuildError::stage(
                        name,
                        format!(
                            "`shared_group` `{group}` must be a non-empty name without `/`, `+` or `#`"
                        ),
                    ));
                }
                if self.client_id.is_none() {
                    return Err(BuildError::stage(
                        name,
                        "a `shared_group` member needs its own stable `client_id` on each host, \
                         e.g. client_id = \"sluice-in-${HOSTNAME}\"",
                    ));
                }
                self.topics
                    .iter()
                    .map(|filter| format!("$share/{group}/{filter}"))
                    .collect()
            }
        };
        let endpoint = self.endpoint(name);
        let mut options = endpoint.options()?;
        options.set_clean_session(self.clean_session);
        options.set_manual_acks(true);
        Ok(Box::new(MqttSource {
            stage: Arc::from(name),
            options,
            topics,
            qos,
            max_packet_bytes: self.max_packet_bytes,
            limits: BatchLimits::new(self.batch_size, self.batch_timeout),
        }))
    }
}

pub struct MqttSource {
    stage: Arc<str>,
    options: rumqttc::MqttOptions,
    topics: Vec<String>,
    qos: QoS,
    max_packet_bytes: usize,
    limits: BatchLimits,
}

impl super::Source for MqttSource {
    fn run(
        self: Box<Self>,
        outputs: Outputs,
        shutdown: CancellationToken,
    ) -> BoxFuture<'static, Result<(), StageError>> {
        async move {
            let (client, eventloop) =
                AsyncClient::new(self.options.clone(), REQUEST_CHANNEL_CAPACITY);
            // The event loop must keep polling (pings, acks) even while the pipeline
            // pushes back, so it runs apart and hands messages over. The hand-over is
            // bounded by the broker's in-flight window: unacknowledged QoS 1 messages
            // are all the broker sends ahead.
            let (messages, mut incoming) = mpsc::channel::<Received>(self.limits.size() * 4);
            let acks = Arc::new(Acks::default());
            let disconnected = CancellationToken::new();
            let mut poller = tokio::spawn(poll::poll(
                Subscription {
                    stage: self.stage.clone(),
                    topics: self.topics.clone(),
                    qos: self.qos,
                    acks: acks.clone(),
                    max_packet_bytes: self.max_packet_bytes,
                },
                eventloop,
                client.clone(),
                messages,
                shutdown.clone(),
                disconnected.clone(),
            ));
            let stop_acks = CancellationToken::new();
            let ack_task = tokio::spawn(acks::send_acks(
                self.stage.clone(),
                acks.clone(),
                client.clone(),
                stop_acks.clone(),
            ));
            // An error return must not leave the connection and the ack task running.
            let _on_exit = (
                disconnected.clone().drop_guard(),
                stop_acks.clone().drop_guard(),
            );
            // Messages of a stage mostly come from a few topics: share the origin of
            // the previous one when the topic repeats rather than allocate one each.
            let mut origin: Arc<str> = Arc::from("");
            let mut batcher = Batcher::<Batch>::new(self.limits);
            loop {
                let next = tokio::select! {
                    message = incoming.recv() => message,
                    _ = batcher.due() => {
                        flush(&outputs, batcher.take(), &self.stage).await?;
                        continue;
                    }
                };
                let Some(Received { publish, ticket }) = next else {
                    break;
                };
                let ack = match ticket {
                    None => Ack::none(),
                    Some(ticket) => {
                        let pending = acks.pending(ticket);
                        Ack::new(move || pending.done())
                    }
                };
                if *origin != *publish.topic {
                    origin = Arc::from(publish.topic.as_str());
                }
                let size = publish_size(&publish.topic, publish.payload.len());
                let event = Event {
                    key: None,
                    payload: publish.payload,
                    headers: Vec::new(),
                    timestamp_ms: now_ms(),
                    origin: origin.clone(),
                };
                if size > self.max_packet_bytes {
                    // Taken only once, on a connection whose limit was raised for it.
                    let reason = format!(
                        "an MQTT message of {size} bytes exceeds max_packet_bytes = {}",
                        self.max_packet_bytes
                    );
                    outputs
                        .dead_letter(vec![DeadLetter { event, ack, reason }])
                        .await
                        .map_err(|error| StageError::new(&self.stage, error))?;
                    continue;
                }
                batcher.add().push(event, ack);
                if batcher.full() {
                    flush(&outputs, batcher.take(), &self.stage).await?;
                }
            }
            flush(&outputs, batcher.take(), &self.stage).await?;
            drop(outputs);
            // Keep the connection while downstream finishes and every PUBACK is handed
            // to the client; what is not done by then is redelivered.
            let give_up = tokio::time::Instant::now() + DRAIN_TIMEOUT;
            while !acks.idle() && tokio::time::Instant::now() < give_up {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if !acks.idle() {
                tracing::warn!(stage = %self.stage, in_flight = acks.in_flight(),
                    "stopping before every event was acknowledged: the broker will deliver them again");
            }
            stop_acks.cancel();
            let _ = ack_task.await;
            // The DISCONNECT queues behind the PUBACKs, so the event loop writes them
            // all first; the poller ends once it went out. A connection that cannot
            // take it is dropped after a while.
            let disconnect = async {
                let _ = client.disconnect().await;
                (&mut poller).await
            };
            if tokio::time::timeout(DISCONNECT_TIMEOUT, disconnect)
                .await
                .is_err()
            {
                disconnected.cancel();
                let _ = poller.await;
            }
            Ok(())
        }
        .boxed()
    }
}

async fn flush(outputs: &Outputs, batch: Batch, stage: &str) -> Result<(), StageError> {
    if batch.is_empty() {
        return Ok(());
    }
    outputs.metrics().events_in.increment(batch.len() as u64);
    outputs
        .send(batch)
        .await
        .map_err(|error| StageError::new(stage, error))
}

/// Requests (PUBACKs, subscriptions, the DISCONNECT) the client queues for its event
/// loop. A full channel delays PUBACKs, never drops them (see `acks`).
const REQUEST_CHANNEL_CAPACITY: usize = 10_000;
/// How long a stopping source waits for downstream to acknowledge what it took.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a stopping source waits for its queued PUBACKs and DISCONNECT to go out.
const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(10);
