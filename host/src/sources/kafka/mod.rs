//! `type = "kafka"` source: a member of a consumer group. Several `sluice run` processes
//! with one `group_id` share a topic's partitions, and Kafka rebalances them as hosts
//! come and go.
//!
//! Offsets are committed only after every sink downstream has acknowledged the events
//! up to them, per partition, in order ([`offsets`]). On revocation the source waits
//! (up to `revoke_timeout_ms`) for the revoked partitions' in-flight events, commits what
//! was acknowledged, and drops what it read but had not sent: the new owner reads those
//! from the committed offset. A crash replays at most what was read since the last
//! commit (`commit_interval_ms`).

mod offsets;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use offsets::{Offsets, PartitionKey};

use crate::component::{BuildContext, BuildError};
use crate::event::Event;
use crate::pipeline::{Ack, Batch, BatchLimits, Batcher, Outputs, StageError};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSourceConfig {
    /// `host:port[,host:port...]`.
    pub bootstrap_servers: String,
    pub group_id: String,
    /// Topics to read; an entry starting with `^` is a regular expression.
    pub topics: Vec<String>,
    /// Events per batch, at most. The default, 5,000, lets a backlog move in few large
    /// batches: each batch pays a fixed cost on its way (a hand-off per stage, a plugin
    /// call, a wake-up of each task), which at 1,000 held a backlog to ~115,000 events/s
    /// where 5,000 gave ~135,000. A trickle is not held back by it: `batch_timeout_ms`
    /// sends what has come after at most 20 ms.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// How long a batch waits to fill.
    #[serde(
        default = "default_batch_timeout",
        rename = "batch_timeout_ms",
        with = "serde_with::As::<serde_with::DurationMilliSeconds<u64>>"
    )]
    pub batch_timeout: Duration,
    /// How often acknowledged offsets are committed.
    #[serde(
        default = "default_commit_interval",
        rename = "commit_interval_ms",
        with = "serde_with::As::<serde_with::DurationMilliSeconds<u64>>"
    )]
    pub commit_interval: Duration,
    /// How long a revocation waits for the revoked partitions' events in flight.
    #[serde(
        default = "default_revoke_timeout",
        rename = "revoke_timeout_ms",
        with = "serde_with::As::<serde_with::DurationMilliSeconds<u64>>"
    )]
    pub revoke_timeout: Duration,
    /// Where a group without committed offsets starts: `earliest` or `latest`.
    #[serde(default = "default_offset_reset")]
    pub auto_offset_reset: String,
    /// librdkafka options (`security.protocol`, `sasl.*`, `ssl.*`, `session.timeout.ms`, ...).
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

fn default_batch_size() -> usize {
    5000
}
fn default_batch_timeout() -> Duration {
    Duration::from_millis(20)
}
fn default_commit_interval() -> Duration {
    Duration::from_secs(1)
}
fn default_revoke_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_offset_reset() -> String {
    "earliest".to_owned()
}

/// Options the at-least-once guarantee depends on: offsets are committed by the source,
/// explicitly, after the sinks.
const REQUIRED: &[(&str, &str)] = &[
    ("enable.auto.commit", "false"),
    ("enable.auto.offset.store", "false"),
];

impl super::SourceConfig for KafkaSourceConfig {
    fn build(&self, context: &BuildContext<'_>) -> Result<Box<dyn super::Source>, BuildError> {
        let stage = context.stage;
        if self.topics.is_empty() {
            return Err(BuildError::stage(stage, "`topics` is empty"));
        }
        if self.group_id.is_empty() {
            return Err(BuildError::stage(stage, "`group_id` is empty"));
        }
        if !matches!(self.auto_offset_reset.as_str(), "earliest" | "latest") {
            return Err(BuildError::stage(
                stage,
                format!(
                    "`auto_offset_reset` is `{}`; use `earliest` or `latest`",
                    self.auto_offset_reset
                ),
            ));
        }
        let mut config = crate::connect::kafka::client_config(
            stage,
            &self.bootstrap_servers,
            &self.options,
            REQUIRED,
        )?;
        config.set("group.id", &self.group_id);
        if !self.options.contains_key("auto.offset.reset") {
            config.set("auto.offset.reset", &self.auto_offset_reset);
        }
        let offsets = Arc::new(Offsets::default());
        let context = GroupContext {
            stage: Arc::from(stage),
            offsets: offsets.clone(),
            revoke_timeout: self.revoke_timeout,
        };
        // Creating the consumer starts no connection until it is subscribed.
        let consumer: StreamConsumer<GroupContext> = config
            .create_with_context(context)
            .map_err(|error| BuildError::stage(stage, format!("Kafka consumer: {error}")))?;
        Ok(Box::new(KafkaSource {
            stage: Arc::from(stage),
            consumer: Arc::new(consumer),
            offsets,
            topics: self.topics.clone(),
            limits: BatchLimits::new(self.batch_size, self.batch_timeout),
            commit_interval: self.commit_interval,
        }))
    }
}

/// Sees rebalances through: registers assigned partitions, and drains and commits
/// revoked ones before they go.
struct GroupContext {
    stage: Arc<str>,
    offsets: Arc<Offsets>,
    revoke_timeout: Duration,
}

fn keys(partitions: &TopicPartitionList) -> Vec<PartitionKey> {
    partitions
        .elements()
        .iter()
        .map(|element| (Arc::from(element.topic()), element.partition()))
        .collect()
}

impl ClientContext for GroupContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, facility: &str, message: &str) {
        use rdkafka::config::RDKafkaLogLevel as Level;
        let stage = &*self.stage;
        match level {
            Level::Emerg | Level::Alert | Level::Critical | Level::Error => {
                tracing::error!(stage, facility, "librdkafka: {message}")
            }
            Level::Warning => tracing::warn!(stage, facility, "librdkafka: {message}"),
            _ => tracing::debug!(stage, facility, "librdkafka: {message}"),
        }
    }
}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let stage = &*self.stage;
        match rebalance {
            Rebalance::Assign(partitions) => {
                tracing::info!(
                    stage,
                    partitions = partitions.count(),
                    "partitions assigned"
                );
                self.offsets.assign(keys(partitions));
            }
            Rebalance::Revoke(partitions) => {
                let revoked = keys(partitions);
                let which = |key: &PartitionKey| revoked.contains(key);
                let left = self.offsets.wait_drained(which, self.revoke_timeout);
                commit(
                    stage,
                    consumer,
                    self.offsets.take_commits(which),
                    CommitMode::Sync,
                );
                self.offsets.revoke(which);
                tracing::info!(
                    stage,
                    partitions = revoked.len(),
                    abandoned = left,
                    "partitions revoked; acknowledged offsets committed"
                );
            }
            Rebalance::Error(error) => tracing::warn!(stage, "rebalance failed: {error}"),
        }
    }
}

/// Commit `offsets` (the next offset to read, per partition).
fn commit<C: ConsumerContext>(
    stage: &str,
    consumer: &impl Consumer<C>,
    offsets: Vec<(PartitionKey, i64)>,
    mode: CommitMode,
) {
    if offsets.is_empty() {
        return;
    }
    let mut list = TopicPartitionList::new();
    for ((topic, partition), next) in &offsets {
        if let Err(error) = list.add_partition_offset(topic, *partition, Offset::Offset(*next)) {
            tracing::warn!(stage, "cannot commit {topic}/{partition}: {error}");
        }
    }
    if let Err(error) = consumer.commit(&list, mode) {
        // The next commit covers these offsets; a crash before it replays them.
        tracing::warn!(stage, "offset commit failed: {error}");
    }
}

/// The headers the source derives for every event: `kafka.partition`, `kafka.offset`
/// and `kafka.assignment`.
const DERIVED_HEADERS: usize = 3;

/// What the source knows of the partitions it reads, so that an event costs no lookup
/// under the offsets' lock and no allocation for what its partition's events share.
#[derive(Default)]
struct Known {
    topics: HashMap<String, HashMap<i32, Partition>>,
    /// Where the offsets' assignments stood when these were taken ([`Offsets::changes`]):
    /// after an assignment or a revocation every partition is asked for again.
    changes: u64,
    /// Room for the events' `kafka.offset` values: one allocation shared by many.
    offsets_text: bytes::BytesMut,
}

/// A partition as its events carry it, for its current assignment.
struct Partition {
    key: PartitionKey,
    generation: u64,
    number: Bytes,
    assignment: Bytes,
}

/// Bytes taken for the `kafka.offset` values at a time.
const OFFSETS_TEXT_BLOCK: usize = 8192;

impl Known {
    /// The partition's current assignment; `None` when it is not (or no longer) this
    /// host's. Asked of the offsets once per partition and rebalance: the first event
    /// read then (at `offset`) names the assignment ([`Offsets::reading`]).
    fn partition(
        &mut self,
        offsets: &Offsets,
        topic: &str,
        number: i32,
        offset: i64,
    ) -> Option<&Partition> {
        let changes = offsets.changes();
        if changes != self.changes {
            self.topics.clear();
            self.changes = changes;
        }
        if !self
            .topics
            .get(topic)
            .is_some_and(|partitions| partitions.contains_key(&number))
        {
            let key: PartitionKey = (Arc::from(topic), number);
            let (generation, assignment) = offsets.reading(&key, offset)?;
            let partition = Partition {
                key,
                generation,
                number: Bytes::from(number.to_string()),
                assignment,
            };
            self.topics
                .entry(topic.to_owned())
                .or_default()
                .insert(number, partition);
        }
        self.topics.get(topic)?.get(&number)
    }

    /// `offset` in decimal, cut from a block shared with other events' offsets.
    fn offset_text(&mut self, offset: i64) -> Bytes {
        use std::fmt::Write;
        if self.offsets_text.capacity() < 20 {
            self.offsets_text = bytes::BytesMut::with_capacity(OFFSETS_TEXT_BLOCK);
        }
        let _ = write!(self.offsets_text, "{offset}");
        self.offsets_text.split().freeze()
    }
}

pub struct KafkaSource {
    stage: Arc<str>,
    consumer: Arc<StreamConsumer<GroupContext>>,
    offsets: Arc<Offsets>,
    topics: Vec<String>,
    limits: BatchLimits,
    commit_interval: Duration,
}

/// An event read and not yet sent, with where it came from.
struct Read {
    event: Event,
    key: PartitionKey,
    generation: u64,
    offset: i64,
}

impl super::Source for KafkaSource {
    fn run(
        self: Box<Self>,
        outputs: Outputs,
        shutdown: CancellationToken,
    ) -> BoxFuture<'static, Result<(), StageError>> {
        async move {
            let stage = self.stage.clone();
            let topics: Vec<&str> = self.topics.iter().map(String::as_str).collect();
            if let Err(error) = self.consumer.subscribe(&topics) {
                return Err(StageError::other(&stage, format!("cannot subscribe: {error}")));
            }
            tracing::info!(stage = &*stage, topics = ?self.topics, "subscribed");
            let mut known = Known::default();
            let mut batcher = Batcher::<Vec<Read>>::new(self.limits);
            let mut commits = tokio::time::interval(self.commit_interval);
            commits.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // One stream for the whole run: `recv` would register and drop a waker slot
            // per message.
            let mut messages = self.consumer.stream();
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = commits.tick() => {
                        commit(&stage, &*self.consumer, self.offsets.take_commits(|_| true), CommitMode::Async);
                    }
                    _ = batcher.due() => {
                        self.flush(batcher.take(), &outputs).await?;
                    }
                    message = messages.next() => match message {
                        Some(Ok(message)) => {
                            self.gather(&message, &mut known, &mut batcher);
                            // What librdkafka already holds joins the batch at once,
                            // without a turn through the `select!` (and its timers) per
                            // message.
                            while !batcher.full() {
                                match messages.next().now_or_never() {
                                    Some(Some(Ok(message))) => {
                                        self.gather(&message, &mut known, &mut batcher)
                                    }
                                    Some(Some(Err(error))) => {
                                        tracing::warn!(stage = &*stage, "Kafka: {error}");
                                        break;
                                    }
                                    // Nothing ready yet.
                                    _ => break,
                                }
                            }
                            if batcher.full() {
                                self.flush(batcher.take(), &outputs).await?;
                            }
                        }
                        Some(Err(error)) => {
                            // librdkafka reconnects by itself; say so and go on.
                            tracing::warn!(stage = &*stage, "Kafka: {error}");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        // The stream of a consumer never ends; were it to, so would the source.
                        None => break,
                    },
                }
            }
            // The stream borrows the consumer, which `finish` takes.
            drop(messages);
            self.flush(batcher.take(), &outputs).await?;
            drop(outputs);
            self.finish().await;
            Ok(())
        }
        .boxed()
    }
}

impl KafkaSource {
    /// Add `message` to the batch, unless its partition is no longer this host's.
    fn gather(
        &self,
        message: &BorrowedMessage<'_>,
        known: &mut Known,
        batcher: &mut Batcher<Vec<Read>>,
    ) {
        if let Some(read) = self.read(message, known) {
            batcher.add().push(read);
        }
    }

    fn read(&self, message: &BorrowedMessage<'_>, known: &mut Known) -> Option<Read> {
        let offset = message.offset();
        let partition =
            known.partition(&self.offsets, message.topic(), message.partition(), offset)?;
        let (key, generation, number, assignment) = (
            partition.key.clone(),
            partition.generation,
            partition.number.clone(),
            partition.assignment.clone(),
        );
        let mut headers: Vec<(String, Bytes)> = Vec::with_capacity(
            DERIVED_HEADERS + message.headers().map_or(0, |headers| headers.count()),
        );
        if let Some(own) = message.headers() {
            headers.extend(
                own.iter()
                    .filter(|header| !crate::event::is_reserved_header(header.key))
                    .map(|header| {
                        let value = header.value.map(Bytes::copy_from_slice).unwrap_or_default();
                        (header.key.to_owned(), value)
                    }),
            );
        }
        headers.push(("kafka.partition".to_owned(), number));
        headers.push(("kafka.offset".to_owned(), known.offset_text(offset)));
        headers.push(("kafka.assignment".to_owned(), assignment));
        let event = Event {
            key: message.key().map(Bytes::copy_from_slice),
            payload: message
                .payload()
                .map(Bytes::copy_from_slice)
                .unwrap_or_default(),
            headers,
            timestamp_ms: message
                .timestamp()
                .to_millis()
                .unwrap_or_else(crate::event::now_ms),
            origin: key.0.clone(),
        };
        Some(Read {
            event,
            key,
            generation,
            offset,
        })
    }

    /// Send what was read; events of partitions revoked since are left to their new owner.
    async fn flush(&self, pending: Vec<Read>, outputs: &Outputs) -> Result<(), StageError> {
        if pending.is_empty() {
            return Ok(());
        }
        let tracked = self.offsets.track_all(
            pending
                .iter()
                .map(|read| (&read.key, read.generation, read.offset)),
        );
        let mut batch = Batch::with_capacity(pending.len());
        for (read, tracked) in pending.into_iter().zip(tracked) {
            if !tracked {
                continue;
            }
            let offsets = self.offsets.clone();
            let Read {
                event,
                key,
                generation,
                offset,
            } = read;
            batch.push(
                event,
                Ack::new(move || offsets.acknowledge(&key, generation, offset)),
            );
        }
        if batch.is_empty() {
            return Ok(());
        }
        outputs.metrics().events_in.increment(batch.len() as u64);
        outputs
            .send(batch)
            .await
            .map_err(|error| StageError::new(&self.stage, error))
    }

    /// At shutdown: wait for the events in flight (the pipeline drains them), commit, and
    /// leave the group so that the others take the partitions at once.
    async fn finish(self) {
        let offsets = self.offsets.clone();
        let left = tokio::task::spawn_blocking(move || {
            offsets.wait_drained(|_| true, Duration::from_secs(60))
        })
        .await
        .unwrap_or_default();
        commit(
            &self.stage,
            &*self.consumer,
            self.offsets.take_commits(|_| true),
            CommitMode::Sync,
        );
        self.consumer.unsubscribe();
        tracing::info!(
            stage = &*self.stage,
            unacknowledged = left,
            "offsets committed; left the group"
        );
    }
}
