//! `type = "kafka"` sink: an idempotent producer (`enable.idempotence`, `acks=all`).
//! Each event becomes a record on a topic rendered from the event, with an optional key
//! rendered the same way and the event's headers; an event is acknowledged upstream only
//! when its delivery report says the broker has it. Failed deliveries come back to the
//! sink's retry loop, never dropped.
//!
//! A write enqueues its batch and returns while earlier batches still await their
//! reports (up to [`MAX_IN_FLIGHT_RECORDS`]), so that the producer keeps the broker busy
//! instead of waiting a round trip per batch; the reports settle each event's token as
//! they come in ([`delivery`]), and a later write hands back what failed.

mod delivery;

use std::borrow::Cow;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::BoxFuture;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use serde::Deserialize;

use delivery::{Deliveries, Pending, ReportContext};

use crate::component::{BuildContext, BuildError, Declaration};
use crate::event::Event;
use crate::pipeline::{Batch, DeadLetter, SinkError};
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

/// How long to wait before offering a record again to a full producer queue.
const QUEUE_FULL_PAUSE: Duration = Duration::from_millis(5);

/// Records that may await their delivery reports before a write waits for the oldest
/// batch: enough for the producer to fill its message sets while the broker
/// acknowledges earlier ones, few enough that the pipeline's backpressure still reaches
/// the source within a fraction of a second.
const MAX_IN_FLIGHT_RECORDS: usize = 20_000;

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
        let topic = Template::parse(&self.topic, "topic")
            .map_err(|error| BuildError::stage(stage, error))?;
        let key = self
            .key
            .as_deref()
            .map(|key| Template::parse(key, "key"))
            .transpose()
            .map_err(|error| BuildError::stage(stage, error))?;
        let mut config = crate::connect::kafka::client_config(
            stage,
            &self.bootstrap_servers,
            &self.options,
            REQUIRED,
        )?;
        if !self.options.contains_key("compression.type") {
            config.set("compression.type", self.compression.codec());
        }
        // A producer connects lazily, on its first record.
        let producer: ThreadedProducer<ReportContext> =
            config
                .create_with_context(ReportContext)
                .map_err(|error| BuildError::stage(stage, format!("Kafka producer: {error}")))?;
        let fields = template::top_level_names(
            topic
                .placeholders()
                .chain(key.iter().flat_map(Template::placeholders)),
        );
        let constant_topic = topic
            .is_constant()
            .then(|| topic.render_fields(None, topic_name));
        Ok(Box::new(KafkaSink {
            producer: Arc::new(producer),
            topic,
            constant_topic,
            key,
            fields,
            rejected: Vec::new(),
            in_flight: VecDeque::new(),
            in_flight_records: 0,
        }))
    }
}

pub struct KafkaSink {
    producer: Arc<ThreadedProducer<ReportContext>>,
    topic: Template,
    /// The topic, when the template takes nothing from the event.
    constant_topic: Option<String>,
    key: Option<Template>,
    /// The payload fields the templates read.
    fields: Vec<String>,
    rejected: Vec<DeadLetter>,
    /// Batches enqueued and not yet fully reported, oldest first.
    in_flight: VecDeque<InFlight>,
    in_flight_records: usize,
}

/// An enqueued batch: its events (kept to send again what fails) and their reports.
struct InFlight {
    events: Vec<Event>,
    deliveries: Arc<Deliveries>,
}

impl InFlight {
    /// Add this finished batch's failed records to `failed` (its delivered ones were
    /// settled as their reports came in).
    fn collect_failed(self, failed: &mut Batch, first_error: &mut Option<KafkaError>) {
        let mut failures = self.deliveries.take_failed().into_iter().peekable();
        if failures.peek().is_none() {
            return;
        }
        for (index, event) in self.events.into_iter().enumerate() {
            let Some(failure) = failures.next_if(|failure| failure.index == index) else {
                continue;
            };
            first_error.get_or_insert(failure.error);
            failed.push(event, failure.ack);
        }
    }
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

/// A record's topic, key and headers, borrowed from the event or the sink where they
/// can be.
type RecordParts<'a> = (Cow<'a, str>, Option<Cow<'a, [u8]>>, OwnedHeaders);

impl KafkaSink {
    fn record_parts<'a>(&'a self, event: &'a Event) -> RecordParts<'a> {
        // One scan of the payload serves both templates.
        let payload = if self.fields.is_empty() {
            None
        } else {
            template::payload_fields(event, &self.fields)
        };
        let topic = match &self.constant_topic {
            Some(topic) => Cow::Borrowed(topic.as_str()),
            None => Cow::Owned(self.topic.render_fields(payload.as_ref(), topic_name)),
        };
        let key = match &self.key {
            Some(key) => Some(Cow::Owned(
                key.render_fields(payload.as_ref(), str::to_owned)
                    .into_bytes(),
            )),
            None => event.key.as_deref().map(Cow::Borrowed),
        };
        let headers = event.headers.iter().fold(
            OwnedHeaders::new_with_capacity(event.headers.len()),
            |headers, (name, value)| {
                headers.insert(Header {
                    key: name,
                    value: Some(value.as_ref()),
                })
            },
        );
        (topic, key, headers)
    }

    /// Hand `event`'s record to the producer, waiting for room in its queue up to
    /// [`QUEUE_TIMEOUT`]; a record it refuses is settled as failed.
    async fn enqueue(&self, event: &Event, parts: RecordParts<'_>, pending: Box<Pending>) {
        let (topic, key, headers) = parts;
        let mut record = BaseRecord::with_opaque_to(&topic, pending)
            .payload(event.payload.as_ref())
            .headers(headers)
            .timestamp(event.timestamp_ms);
        if let Some(key) = &key {
            record = record.key(key.as_ref());
        }
        // Read the clock only once the queue is full, not per record.
        let mut full_since: Option<Instant> = None;
        loop {
            match self.producer.send(record) {
                Ok(()) => return,
                Err((
                    error @ KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull),
                    unsent,
                )) => {
                    if full_since.get_or_insert_with(Instant::now).elapsed() >= QUEUE_TIMEOUT {
                        (*unsent.delivery_opaque).settle(Err(error));
                        return;
                    }
                    record = unsent;
                    tokio::time::sleep(QUEUE_FULL_PAUSE).await;
                }
                Err((error, unsent)) => {
                    (*unsent.delivery_opaque).settle(Err(error));
                    return;
                }
            }
        }
    }

    /// Take the finished batches off the front; while more than `limit` records are in
    /// flight, wait for the oldest batch to finish.
    async fn settle_finished(&mut self, limit: usize) -> Result<(), (Batch, KafkaError)> {
        let mut failed = Batch::default();
        let mut first_error = None;
        while let Some(oldest) = self.in_flight.front() {
            if !oldest.deliveries.is_finished() {
                if self.in_flight_records <= limit {
                    break;
                }
                oldest.deliveries.finished().await;
            }
            let Some(oldest) = self.in_flight.pop_front() else {
                break;
            };
            self.in_flight_records -= oldest.events.len();
            oldest.collect_failed(&mut failed, &mut first_error);
        }
        match first_error {
            None => Ok(()),
            Some(error) => Err((failed, error)),
        }
    }
}

impl super::Sink for KafkaSink {
    /// Enqueue the batch; hand back, as this write's failure, the records of earlier
    /// batches that the broker did not take.
    fn write(&mut self, batch: Batch) -> BoxFuture<'_, Result<(), (Batch, SinkError)>> {
        async move {
            let Batch { events, acks } = batch;
            let deliveries = Deliveries::new();
            let mut enqueued = Vec::with_capacity(events.len());
            for (event, ack) in events.into_iter().zip(acks) {
                let parts = self.record_parts(&event);
                // `__consumer_offsets`, `__transaction_state`: Kafka's own.
                if parts.0.starts_with("__") {
                    let reason = format!("topic `{}` is internal to Kafka", parts.0);
                    drop(parts);
                    self.rejected.push(DeadLetter { event, ack, reason });
                    continue;
                }
                self.enqueue(&event, parts, deliveries.pending(enqueued.len(), ack))
                    .await;
                enqueued.push(event);
            }
            deliveries.sealed();
            self.in_flight_records += enqueued.len();
            self.in_flight.push_back(InFlight {
                events: enqueued,
                deliveries,
            });
            self.settle_finished(MAX_IN_FLIGHT_RECORDS)
                .await
                .map_err(|(failed, error)| (failed, error.into()))
        }
        .boxed()
    }

    fn take_rejected(&mut self) -> Vec<DeadLetter> {
        std::mem::take(&mut self.rejected)
    }

    /// Wait for every record's report; what the broker did not take by then stays
    /// unacknowledged, so the source does not commit past it.
    fn close(mut self: Box<Self>) -> BoxFuture<'static, Result<(), SinkError>> {
        async move {
            let producer = self.producer.clone();
            tokio::task::spawn_blocking(move || producer.flush(Duration::from_secs(30)))
                .await
                .map_err(|error| -> SinkError { error.into() })?
                .map_err(|error| -> SinkError { error.into() })?;
            match self.settle_finished(0).await {
                Ok(()) => Ok(()),
                Err((failed, error)) => {
                    let records = failed.len();
                    failed.fail();
                    Err(format!("{records} records not delivered at close: {error}").into())
                }
            }
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
