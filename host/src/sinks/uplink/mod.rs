//! `type = "uplink"` sink: a device's way to the central broker. Events go into a
//! durable, bounded local buffer ([`crate::buffer`]) and are acknowledged upstream once
//! they are on disk; a forwarder publishes them in order with MQTT QoS 1 and deletes
//! each only after the broker's PUBACK, reconnecting with backoff and jitter. Broker
//! outages, network loss and reboots cost nothing but time (and, under
//! `when_full = "drop_oldest"`, the oldest entries once the buffer is full, counted;
//! corruption on disk costs the damaged entries, counted, and no others).
//! A heartbeat reports the device's state to the central host.

mod forward;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::buffer::{Buffer, Entry, WhenFull};
use crate::component::{BuildContext, BuildError, Declaration};
use crate::connect::mqtt::{Endpoint, publish_size};
use crate::pipeline::{Batch, DeadLetter, SinkError};
use crate::template::Template;

crate::connect::mqtt::connection_config! {
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct UplinkSinkConfig {
        /// Topic template over the event's payload fields (`sensors/{device_id}/telemetry`).
        pub topic: String,
        /// This device, in heartbeats and the default client id.
        pub device_id: String,
        #[serde(default)]
        pub buffer: BufferConfig,
        /// Where heartbeats go; `{device_id}` is this device.
        #[serde(default = "default_heartbeat_topic")]
        pub heartbeat_topic: String,
        #[serde(
            rename = "heartbeat_secs",
            default = "default_heartbeat",
            with = "serde_with::As::<serde_with::DurationSeconds<u64>>"
        )]
        pub heartbeat: Duration,
        /// Reported in heartbeats: which config the device runs.
        #[serde(default)]
        pub config_version: Option<String>,
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BufferConfig {
    /// The buffer's directory (relative: inside `data_dir`).
    #[serde(default = "default_buffer_path")]
    pub path: PathBuf,
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    #[serde(default = "default_segment_bytes")]
    pub segment_bytes: u64,
    #[serde(default)]
    pub when_full: WhenFull,
}

impl Default for BufferConfig {
    fn default() -> Self {
        BufferConfig {
            path: default_buffer_path(),
            max_bytes: default_max_bytes(),
            segment_bytes: default_segment_bytes(),
            when_full: WhenFull::default(),
        }
    }
}

fn default_buffer_path() -> PathBuf {
    PathBuf::from("uplink-buffer")
}
fn default_max_bytes() -> u64 {
    64 << 20
}
fn default_segment_bytes() -> u64 {
    1 << 20
}
fn default_heartbeat_topic() -> String {
    "sluice/devices/{device_id}/heartbeat".to_owned()
}
fn default_heartbeat() -> Duration {
    Duration::from_secs(10)
}

impl super::SinkConfig for UplinkSinkConfig {
    fn declare(&self) -> Declaration<'_> {
        Declaration {
            writes: vec![self.buffer.path.clone()],
            // An event larger than the whole buffer can never be stored.
            rejects: true,
            ..Declaration::default()
        }
    }

    fn build(&self, context: &BuildContext<'_>) -> Result<Box<dyn super::Sink>, BuildError> {
        let stage = context.stage;
        let invalid = |message: String| BuildError::stage(stage, message);
        if self.heartbeat.is_zero() {
            return Err(invalid("`heartbeat_secs` must be at least 1".into()));
        }
        if self.buffer.max_bytes == 0 || self.buffer.segment_bytes == 0 {
            return Err(invalid(
                "`buffer.max_bytes` and `buffer.segment_bytes` must be at least 1".into(),
            ));
        }
        let topic =
            Template::parse(&self.topic, "topic").map_err(|error| invalid(error.to_string()))?;
        let client_id = self
            .client_id
            .clone()
            .unwrap_or_else(|| format!("sluice-uplink-{}", self.device_id));
        let endpoint = Endpoint {
            client_id: Some(&client_id),
            ..self.endpoint(stage)
        };
        let options = endpoint.options()?;
        let dir = context.data_path(&self.buffer.path);
        let buffer = Buffer::open(
            &dir,
            self.buffer.max_bytes,
            self.buffer.segment_bytes,
            self.buffer.when_full,
        )
        .map_err(|error| invalid(error.to_string()))?;
        forward::report(stage, buffer.depth());
        let heartbeat_topic = self.heartbeat_topic.replace("{device_id}", &self.device_id);
        Ok(Box::new(UplinkSink {
            stage: Arc::from(stage),
            topic,
            buffer,
            chunk_bytes: (self.buffer.max_bytes / 4).max(1),
            max_packet_bytes: self.max_packet_bytes,
            rejected: Vec::new(),
            forwarder: Some(forward::Forwarder {
                stage: Arc::from(stage),
                options,
                heartbeat: forward::Heartbeat {
                    topic: heartbeat_topic,
                    every: self.heartbeat,
                    device_id: self.device_id.clone(),
                    config_version: self.config_version.clone(),
                },
            }),
            stop: CancellationToken::new(),
            task: None,
        }))
    }
}

pub struct UplinkSink {
    stage: Arc<str>,
    topic: Template,
    buffer: Arc<Buffer>,
    /// Appends are at most this large, so that a big batch fits a small buffer in parts.
    chunk_bytes: u64,
    /// What the connection can publish: a larger entry would block the buffer's head.
    max_packet_bytes: usize,
    rejected: Vec<DeadLetter>,
    /// Taken when the sink starts.
    forwarder: Option<forward::Forwarder>,
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl UplinkSink {
    /// The events from `from` on (but those refused), handed back to be retried.
    fn failed(
        &self,
        events: Vec<crate::event::Event>,
        acks: Vec<crate::pipeline::Ack>,
        from: usize,
        refused: &[usize],
        error: crate::buffer::BufferError,
    ) -> (Batch, SinkError) {
        tracing::error!(stage = %self.stage, "cannot buffer events: {error}");
        let mut rest = Batch::default();
        for (index, (event, ack)) in events.into_iter().zip(acks).enumerate() {
            if refused.contains(&index) {
                ack.handed_on();
            } else if index < from {
                ack.delivered();
            } else {
                rest.push(event, ack);
            }
        }
        (rest, error.into())
    }
}

/// A sink dropped without `close` (its writes given up at shutdown) stops its
/// forwarder too, which lets go of the buffer and its lock for the next pipeline.
impl Drop for UplinkSink {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A topic level may not be empty or hold MQTT wildcards.
fn topic_level(text: &str) -> String {
    let cleaned: String = text
        .chars()
        .map(|c| {
            if matches!(c, '/' | '+' | '#') || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect();
    if cleaned.is_empty() {
        "_".to_owned()
    } else {
        cleaned
    }
}

impl super::Sink for UplinkSink {
    fn start(&mut self) {
        if let Some(forwarder) = self.forwarder.take() {
            self.task = Some(tokio::spawn(
                forwarder.run(self.buffer.clone(), self.stop.clone()),
            ));
        }
    }

    fn write(&mut self, batch: Batch) -> BoxFuture<'_, Result<(), (Batch, SinkError)>> {
        async move {
            let Batch { events, acks } = batch;
            let mut chunk: Vec<Entry> = Vec::new();
            let mut chunk_size = 0;
            let mut written = 0;
            let mut refused = Vec::new();
            for (index, event) in events.iter().enumerate() {
                let entry = Entry {
                    topic: self.topic.render(event, topic_level),
                    payload: event.payload.clone(),
                };
                let size = entry.stored_len();
                let packet = publish_size(&entry.topic, entry.payload.len());
                let refusal = if entry.topic.len() > Entry::MAX_TOPIC_BYTES {
                    Some(format!(
                        "a topic of {} bytes is longer than MQTT allows ({})",
                        entry.topic.len(),
                        Entry::MAX_TOPIC_BYTES
                    ))
                } else if size > self.buffer.max_bytes() {
                    Some(format!(
                        "an event of {size} bytes cannot fit the uplink buffer of {} bytes",
                        self.buffer.max_bytes()
                    ))
                } else if packet > self.max_packet_bytes {
                    Some(format!(
                        "an MQTT message of {packet} bytes exceeds max_packet_bytes = {}",
                        self.max_packet_bytes
                    ))
                } else {
                    None
                };
                if let Some(reason) = refusal {
                    self.rejected.push(DeadLetter {
                        event: event.clone(),
                        ack: acks[index].clone(),
                        reason,
                    });
                    refused.push(index);
                    continue;
                }
                if chunk_size + size > self.chunk_bytes && !chunk.is_empty() {
                    if let Err(error) = self.buffer.push(std::mem::take(&mut chunk)).await {
                        return Err(self.failed(events, acks, written, &refused, error));
                    }
                    written = index;
                    chunk_size = 0;
                }
                chunk_size += size;
                chunk.push(entry);
            }
            if !chunk.is_empty()
                && let Err(error) = self.buffer.push(chunk).await
            {
                return Err(self.failed(events, acks, written, &refused, error));
            }
            // On disk: the events are safe. A refused one's copy is with its dead letter.
            for (index, ack) in acks.into_iter().enumerate() {
                if refused.contains(&index) {
                    ack.handed_on();
                } else {
                    ack.delivered();
                }
            }
            Ok(())
        }
        .boxed()
    }

    fn take_rejected(&mut self) -> Vec<DeadLetter> {
        std::mem::take(&mut self.rejected)
    }

    /// Stop forwarding; what is not delivered stays in the buffer for the next start.
    fn close(mut self: Box<Self>) -> BoxFuture<'static, Result<(), SinkError>> {
        async move {
            self.stop.cancel();
            if let Some(task) = self.task.take() {
                let _ = task.await;
            }
            let depth = self.buffer.depth();
            tracing::info!(stage = %self.stage, buffered = depth.entries, "uplink stopped");
            Ok(())
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Event;
    use crate::pipeline::Ack;
    use crate::sinks::Sink;

    #[tokio::test]
    async fn a_big_batch_goes_in_parts_and_an_event_larger_than_the_buffer_or_a_packet_is_refused()
    {
        let dir = tempfile::tempdir().unwrap();
        let buffer = Buffer::open(dir.path(), 2000, 400, WhenFull::DropOldest).unwrap();
        let mut sink = UplinkSink {
            stage: Arc::from("uplink"),
            topic: Template::parse("sensors/{device_id}", "topic").unwrap(),
            buffer: buffer.clone(),
            chunk_bytes: 500,
            max_packet_bytes: 1200,
            rejected: Vec::new(),
            forwarder: None,
            stop: CancellationToken::new(),
            task: None,
        };
        let mut batch = Batch::default();
        for n in 0..10 {
            let payload = format!(r#"{{"device_id":"d/{n}","pad":"{}"}}"#, "x".repeat(80));
            batch.push(Event::new(payload, "sim"), Ack::none());
        }
        batch.push(Event::new("y".repeat(3000), "sim"), Ack::none());
        // Fits the buffer, but the connection could never publish it: refused at write
        // time rather than left at the buffer's head.
        batch.push(Event::new("z".repeat(1500), "sim"), Ack::none());
        sink.write(batch).await.map_err(|(_, error)| error).unwrap();
        let stored = buffer.read(0, 100).unwrap();
        assert_eq!(
            stored.len(),
            10,
            "every event that fits, in parts of at most 500 bytes"
        );
        assert_eq!(
            stored[3].1.topic, "sensors/d_3",
            "a field cannot add a topic level"
        );
        assert_eq!(
            buffer.depth().dropped,
            0,
            "parts smaller than the buffer drop nothing"
        );
        let refused = sink.take_rejected();
        assert_eq!(refused.len(), 2);
        assert!(
            refused[0]
                .reason
                .contains("cannot fit the uplink buffer of 2000 bytes")
        );
        assert_eq!(
            refused[1].reason,
            "an MQTT message of 1513 bytes exceeds max_packet_bytes = 1200"
        );
    }
}
