//! `type = "kafka"` sink: an idempotent producer (`enable.idempotence`, `acks=all`).
//! Each event becomes a record on a topic rendered from the event, with an optional key
//! rendered the same way and the event's headers; an event is acknowledged upstream only
//! when its delivery report says the broker has it. Failed deliveries come back to the
//! sink's retry loop, never dropped.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::FutureExt;
use futures::future::{BoxFuture, join_all};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use serde::Deserialize;

use crate::event::Event;
use crate::pipeline::{Batch, DeadLetter, SinkError};
use crate::component::{BuildContext, BuildError, Declaration};
use crate::template::{self, Template};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSinkConfig {
    /// `host:port[,host:port...]`.
    pub bootstrap_servers: String,
    /// Topic template: `{field}` takes that (dotted) field of the JSON payload.
    pub topic: String,
    /// Key template; without it, the event's own key (if any).
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default)]
    pub compression: Compression,
    /// librdkafka options (`security.protocol`, `sasl.*`, `linger.ms`, ...).
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    #[default]
    Lz4,
    Zstd,
}

impl Compression {
    fn codec(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

/// What no-loss, no-duplicate delivery depends on.
const REQUIRED: &[(&str, &str)] = &[("enable.idempotence", "true"), ("acks", "all")];

/// How long a record may wait for room in the producer's queue before it counts as
/// failed (and is retried by the sink's loop).
const QUEUE_TIMEOUT: Duration = Duration::from_secs(30);

impl super::SinkConfig for KafkaSinkConfig {
    fn declare(&self) -> Declaration<'_> {
        Declaration {
            // A topic rendered from an event may name one of Kafka's internal topics.
            rejects: true,
            ..Declaration::default()
        }
    }

    fn build(&self, context: &BuildContext<'_>) -> Result<Box<dyn super::Sink>, BuildError> {
        let stage = context.stage;
        let topic =
            Template::parse(&self.topic, "topic").map_err(|error| BuildError::stage(stage, error))?;
        let key = self
            .key
            .as_deref()
            .map(|key| Template::parse(key, "key"))
            .transpose()
            .map_err(|error| BuildError::stage(stage, error))?;
        let mut config =
            crate::connect::kafka::client_config(stage, &self.bootstrap_servers, &self.options, REQUIRED)?;
        if !self.options.contains_key("compression.type") {
            config.set("compression.type", self.compression.codec());
        }
        // A producer connects lazily, on its first record.
        let producer: FutureProducer = config
            .create()
            .map_err(|error| BuildError::stage(stage, format!("Kafka producer: {error}")))?;
        let fields = template::top_level_names(
            topic
                .placeholders()
                .chain(key.iter().flat_map(Template::placeholders)),
        );
        Ok(Box::new(KafkaSink {
            producer,
            topic,
            key,
            fields,
            rejected: Vec::new(),
        }))
    }
}

pub struct KafkaSink {
    producer: FutureProducer,
    topic: Template,
    key: Option<Template>,
    /// The payload fields the templates read.
    fields: Vec<String>,
    rejected: Vec<DeadLetter>,
}

/// A topic name may hold only ASCII letters, digits, `.`, `_` and `-`.
fn topic_name(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

impl KafkaSink {
    fn record_parts(&self, event: &Event) -> (String, Option<Vec<u8>>, OwnedHeaders) {
        // One scan of the payload serves both templates.
        let payload = if self.fields.is_empty() {
            None
        } else {
            template::payload_fields(event, &self.fields)
        };
        let topic = self.topic.render_fields(payload.as_ref(), topic_name);
        let key = match &self.key {
            Some(key) => Some(key.render_fields(payload.as_ref(), str::to_owned).into_bytes()),
            None => event.key.as_ref().map(|key| key.to_vec()),
        };
        let headers = event.headers.iter().fold(OwnedHeaders::new(), |headers, (name, value)| {
            headers.insert(Header {
                key: name,
                value: Some(value.as_ref()),
            })
        });
        (topic, key, headers)
    }
}

impl super::Sink for KafkaSink {
    fn write(&mut self, batch: Batch) -> BoxFuture<'_, Result<(), (Batch, SinkError)>> {
        async move {
            let Batch { events, acks } = batch;
            let mut records = Vec::with_capacity(events.len());
            let (mut kept, mut kept_acks) = (Vec::with_capacity(events.len()), Vec::new());
            for (event, ack) in events.into_iter().zip(acks) {
                let parts = self.record_parts(&event);
                // `__consumer_offsets`, `__transaction_state`: Kafka's own.
                if parts.0.starts_with("__") {
                    let reason = format!("topic `{}` is internal to Kafka", parts.0);
                    self.rejected.push(DeadLetter { event, ack, reason });
                    continue;
                }
                records.push(parts);
                kept.push(event);
                kept_acks.push(ack);
            }
            let (events, acks) = (kept, kept_acks);
            let sink = &*self;
            let deliveries = events.iter().zip(records).map(|(event, (topic, key, headers))| {
                async move {
                    let mut record = FutureRecord::to(&topic)
                        .payload(event.payload.as_ref())
                        .headers(headers)
                        .timestamp(event.timestamp_ms);
                    if let Some(key) = &key {
                        record = record.key(key.as_slice());
                    }
                    sink.producer
                        .send(record, QUEUE_TIMEOUT)
                        .await
                        .map(|_| ())
                        .map_err(|(error, _)| error)
                }
            });
            let results = join_all(deliveries).await;
            // Delivered events are settled as such; the rest go back.
            let mut failed = Batch::default();
            let mut first_error = None;
            for ((event, ack), result) in events.into_iter().zip(acks).zip(results) {
                match result {
                    Ok(()) => ack.delivered(),
                    Err(error) => {
                        first_error.get_or_insert(error);
                        failed.push(event, ack);
                    }
                }
            }
            match first_error {
                None => Ok(()),
                Some(error) => Err((failed, error.into())),
            }
        }
        .boxed()
    }

    fn take_rejected(&mut self) -> Vec<DeadLetter> {
        std::mem::take(&mut self.rejected)
    }

    fn close(self: Box<Self>) -> BoxFuture<'static, Result<(), SinkError>> {
        async move {
            tokio::task::spawn_blocking(move || self.producer.flush(Duration::from_secs(30)))
                .await
                .map_err(|error| -> SinkError { error.into() })?
                .map_err(|error| -> SinkError { error.into() })
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_fields_keep_to_the_characters_kafka_allows() {
        assert_eq!(topic_name("site 4/ß"), "site_4__");
        assert_eq!(topic_name("a.b_c-d"), "a.b_c-d");
    }
}
