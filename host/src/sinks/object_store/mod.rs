//! `type = "object_store"` sink: events as Parquet or JSON-lines objects in a local
//! directory, S3 (or an S3-compatible store), GCS, Azure or memory, laid out in
//! Hive-style partitions for DuckDB, Spark or Athena.
//!
//! Each partition (and, for Kafka input, each topic-partition inside it) fills one open
//! object at a time, which is rolled when it reaches `max_events`, `max_bytes` of
//! payload or `max_age_secs`. The sink keeps the acknowledgement tokens of every event
//! in an object and drops them only once the object is stored (a single atomic put, or
//! a completed multipart upload): an event is never acknowledged before its object is
//! complete. An object that could not be stored is kept and retried, and new batches
//! wait for it (backpressure); if the process stops before, its events are failed and
//! the source redelivers them. Object names are deterministic ([`layout`]); a stored
//! Kafka object deletes the objects of earlier assignments its assignment has stored
//! again ([`superseded`]).
//!
//! Sources that bound what is in flight without an acknowledgement (MQTT's receive
//! window) wait for the oldest object to be rolled: keep `max_age_secs` short for them.

mod columns;
mod cursor;
mod encode;
mod layout;
#[cfg(test)]
pub mod readings;
mod scan;
mod superseded;
mod upload;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::FutureExt;
use futures::future::BoxFuture;
use object_store::ObjectStore;
use object_store::path::Path;
use rustc_hash::FxHashMap;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use self::encode::{Body, Column, Compression, Encoder, Format};
use self::layout::{Partitioner, Stream};
use self::superseded::KafkaPlace;
use self::upload::store_or_keep;
use crate::component::{BuildContext, BuildError, Declaration};
use crate::event::Event;
use crate::pipeline::{Ack, Batch, DeadLetter, SinkError};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectStoreSinkConfig {
    /// `file:///dir`, `s3://bucket/prefix`, `gs://...`, `az://...`, `memory://`.
    pub url: String,
    /// object_store options for cloud URLs (`endpoint`, `region`, `allow_http`, ...).
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    #[serde(default)]
    pub format: Format,
    /// Parquet: zstd (default), snappy or none; JSON lines: none (default), gzip or zstd.
    #[serde(default)]
    pub compression: Option<Compression>,
    /// Parquet columns; without it, each object's schema is inferred from its events.
    #[serde(default)]
    pub schema: Option<Vec<Column>>,
    /// With a declared schema: reject events holding fields it does not declare.
    #[serde(default)]
    pub reject_unknown_fields: bool,
    /// Hive-style partition template over event time (`{date}`, `{year}`, `{month}`,
    /// `{day}`, `{hour}`, `{minute}`, UTC) and payload fields (`{device_id}`).
    #[serde(default = "default_partition")]
    pub partition: String,
    /// Payload field holding the event time (epoch ms or RFC 3339); without it, the
    /// event's timestamp.
    #[serde(default)]
    pub time_field: Option<String>,
    #[serde(default = "default_max_events")]
    pub max_events: usize,
    /// Payload bytes an object takes before it is rolled (before encoding).
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    #[serde(
        rename = "max_age_secs",
        default = "default_max_age",
        with = "serde_with::As::<serde_with::DurationSeconds<u64>>"
    )]
    pub max_age: Duration,
    #[serde(default = "default_row_group_rows")]
    pub row_group_rows: usize,
}

fn default_partition() -> String {
    "dt={date}/hour={hour}".to_owned()
}
fn default_max_events() -> usize {
    1_000_000
}
fn default_max_bytes() -> u64 {
    128 << 20
}
fn default_max_age() -> Duration {
    Duration::from_secs(60)
}
fn default_row_group_rows() -> usize {
    128 * 1024
}

/// Uploads in flight at once.
const CONCURRENT_UPLOADS: usize = 4;
/// How long closing keeps retrying the last uploads.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(30);

impl super::SinkConfig for ObjectStoreSinkConfig {
    fn declare(&self) -> Declaration<'_> {
        let local = url::Url::parse(&self.url)
            .ok()
            .filter(|url| url.scheme() == "file")
            .and_then(|url| url.to_file_path().ok());
        Declaration {
            writes: local.into_iter().collect(),
            // Parquet refuses events that are not JSON objects or do not fit the schema.
            rejects: self.format == Format::Parquet,
            ..Declaration::default()
        }
    }

    fn build(&self, context: &BuildContext<'_>) -> Result<Box<dyn super::Sink>, BuildError> {
        Ok(Box::new(self.open(context.stage)?))
    }
}

impl ObjectStoreSinkConfig {
    /// The sink, outside a pipeline too (the benchmark writes through it directly).
    pub fn open(&self, stage: &str) -> Result<ObjectStoreSink, BuildError> {
        let invalid = |message: String| BuildError::stage(stage, message);
        if self.max_events == 0 || self.max_bytes == 0 || self.max_age.is_zero() {
            return Err(invalid(
                "`max_events`, `max_bytes` and `max_age_secs` must be at least 1".into(),
            ));
        }
        let encoder = Encoder::new(
            self.format,
            self.compression,
            self.schema.as_deref(),
            self.reject_unknown_fields,
            self.row_group_rows,
        )
        .map_err(invalid)?;
        let partitioner =
            Partitioner::parse(&self.partition, self.time_field.clone()).map_err(invalid)?;
        // Builds a client; nothing connects until the first upload.
        let target = crate::storage::open(&self.url, &self.options)
            .map_err(|error| invalid(error.to_string()))?;
        tracing::info!(stage, url = %self.url, format = ?self.format, "object store sink writes here");
        Ok(ObjectStoreSink {
            stage: Arc::from(stage),
            store: target.store,
            writer: Arc::new(Mutex::new(Writer {
                prefix: target.prefix,
                encoder,
                partitioner,
                max_events: self.max_events,
                max_bytes: self.max_bytes,
                max_age: self.max_age,
                open: FxHashMap::default(),
                sealed: Vec::new(),
                unstored: Vec::new(),
            })),
            rejected: Vec::new(),
            flusher: None,
        })
    }
}

pub struct ObjectStoreSink {
    stage: Arc<str>,
    store: Arc<dyn ObjectStore>,
    writer: Arc<Mutex<Writer>>,
    rejected: Vec<DeadLetter>,
    /// Rolls objects by age while no batch arrives.
    flusher: Option<(CancellationToken, tokio::task::JoinHandle<()>)>,
}

/// The acknowledgement tokens of an object's events. Delivered only once the object is
/// stored; dropped any other way (a stop before the upload), they fail, so that the
/// source redelivers.
#[derive(Default)]
struct Held(Vec<Ack>);

impl Held {
    /// The object is stored.
    fn delivered(mut self) {
        self.0.drain(..).for_each(Ack::delivered);
    }

    /// These were a guard's copies, and the events went on in the objects' own.
    fn handed_on(mut self) {
        self.0.drain(..).for_each(Ack::handed_on);
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.0.drain(..).for_each(Ack::fail);
    }
}

struct Open {
    body: Body,
    events: usize,
    bytes: u64,
    opened: Instant,
    first_offset: Option<i64>,
    last_offset: Option<i64>,
    first_timestamp_ms: i64,
    digest: twox_hash::XxHash3_128,
    held: Held,
}

/// An object ready to store.
struct Sealed {
    path: Path,
    data: Bytes,
    events: usize,
    held: Held,
    kafka: Option<KafkaPlace>,
}

/// An open object: its partition path and stream.
type ObjectKey = (String, Stream);
/// An event on its way into an object, with its token, its Kafka offset, its time and,
/// if it passed the schema check ([`scan`]), where its row's cells begin in the batch's.
type Entry = (Event, Ack, Option<i64>, i64, Option<usize>);

struct Writer {
    prefix: Path,
    encoder: Encoder,
    partitioner: Partitioner,
    max_events: usize,
    max_bytes: u64,
    max_age: Duration,
    /// Looked up per group of every batch: FxHash, as SipHash's resistance to chosen
    /// keys buys nothing for partition paths.
    open: FxHashMap<ObjectKey, Open>,
    sealed: Vec<Sealed>,
    /// Kafka objects sealed and not stored yet: gaps in what their assignment has stored.
    unstored: Vec<KafkaPlace>,
}

impl Writer {
    /// The object at `place` is stored: it is no gap any more. Returns the objects of its
    /// stream still not stored.
    fn stored(&mut self, place: &KafkaPlace) -> Vec<KafkaPlace> {
        if let Some(at) = self.unstored.iter().position(|gap| gap == place) {
            self.unstored.swap_remove(at);
        }
        self.unstored
            .iter()
            .filter(|gap| gap.same_stream(place))
            .cloned()
            .collect()
    }

    /// Put `batch` into open objects and seal those that are full. Returns the events
    /// that cannot be stored, with why.
    fn add(&mut self, batch: Batch) -> Result<Vec<DeadLetter>, encode::EncodeError> {
        // If encoding fails halfway, no event of this batch may count as stored.
        let guard = Held(batch.acks.clone());
        // The partition is rendered into one reused buffer and looked up by `&str`: a
        // partition's path is allocated once per batch, not once per event.
        let mut groups: Vec<(ObjectKey, Vec<Entry>)> = Vec::new();
        let mut by_partition: FxHashMap<String, Vec<usize>> = FxHashMap::default();
        let mut partition = String::new();
        let mut fields = Vec::new();
        let width = self.encoder.row_width();
        let mut cells = Vec::new();
        for (event, ack) in batch.events.into_iter().zip(batch.acks) {
            // One pass reads the partition fields, checks the schema and converts the
            // row.
            let row = cells.len();
            let fits = self
                .encoder
                .scan(&event, self.partitioner.fields(), &mut fields, &mut cells)
                .then_some(row);
            let time_ms = self
                .partitioner
                .render_into(&event, &fields, &mut partition);
            let (stream, offset) = layout::stream_of(&event);
            let streams = match by_partition.get_mut(partition.as_str()) {
                Some(streams) => streams,
                None => by_partition.entry(partition.clone()).or_default(),
            };
            let at = match streams.iter().find(|&&at| groups[at].0.1 == stream) {
                Some(&at) => at,
                None => {
                    streams.push(groups.len());
                    groups.push(((partition.clone(), stream), Vec::new()));
                    groups.len() - 1
                }
            };
            groups[at].1.push((event, ack, offset, time_ms, fits));
        }
        // Objects in the order of their keys: sealing order does not depend on the order
        // events arrived in.
        groups.sort_unstable_by(|(a, _), (b, _)| a.cmp(b));
        let mut rejected = Vec::new();
        for (key, entries) in groups {
            let open = match self.open.entry(key.clone()) {
                std::collections::hash_map::Entry::Occupied(open) => open.into_mut(),
                std::collections::hash_map::Entry::Vacant(slot) => slot.insert(Open {
                    body: self.encoder.body()?,
                    events: 0,
                    bytes: 0,
                    opened: Instant::now(),
                    first_offset: None,
                    last_offset: None,
                    first_timestamp_ms: 0,
                    digest: twox_hash::XxHash3_128::new(),
                    held: Held::default(),
                }),
            };
            let rows: Option<Vec<usize>> = entries.iter().map(|(.., row)| *row).collect();
            let appended = match (&mut open.body, rows) {
                // Every event passed the check: their rows go straight into the object's
                // columns.
                (Body::Parquet(parquet), Some(rows)) => parquet
                    .push_scanned(entries.iter().zip(rows).map(|((event, ..), start)| {
                        (&event.payload[..], &cells[start..start + width])
                    }))
                    .map(|()| Vec::new()),
                (body, _) => {
                    let events: Vec<&Event> = entries.iter().map(|(event, ..)| event).collect();
                    self.encoder.append(body, &events)
                }
            };
            let refused = match appended {
                Ok(refused) => refused,
                Err(error) => {
                    // The object's body is in an unknown state: give the object up,
                    // its events fail back to their sources.
                    self.open.remove(&key);
                    return Err(error);
                }
            };
            let mut refused: FxHashMap<usize, String> = refused.into_iter().collect();
            for (index, (event, ack, offset, time_ms, _)) in entries.into_iter().enumerate() {
                if let Some(reason) = refused.remove(&index) {
                    rejected.push(DeadLetter { event, ack, reason });
                    continue;
                }
                if open.events == 0 {
                    open.first_offset = offset;
                    open.first_timestamp_ms = time_ms;
                }
                open.last_offset = offset;
                open.events += 1;
                open.bytes += event.payload.len() as u64;
                open.digest
                    .write(&(event.payload.len() as u64).to_le_bytes());
                open.digest.write(&event.payload);
                open.held.0.push(ack);
            }
            if open.events >= self.max_events || open.bytes >= self.max_bytes {
                self.seal(&key)?;
            }
        }
        guard.handed_on();
        Ok(rejected)
    }

    /// Seal the objects open for `max_age` or longer (all of them with `Duration::ZERO`).
    fn seal_older_than(&mut self, age: Duration) -> Result<(), encode::EncodeError> {
        let due: Vec<_> = self
            .open
            .iter()
            .filter(|(_, open)| open.opened.elapsed() >= age)
            .map(|(key, _)| key.clone())
            .collect();
        due.iter().try_for_each(|key| self.seal(key))
    }

    fn seal(&mut self, key: &ObjectKey) -> Result<(), encode::EncodeError> {
        let Some(open) = self.open.remove(key) else {
            return Ok(());
        };
        if open.events == 0 {
            return Ok(());
        }
        let offsets = open.first_offset.zip(open.last_offset);
        let stem = layout::object_stem(
            &key.1,
            offsets,
            open.first_timestamp_ms,
            &open.digest.finish_128().to_le_bytes(),
        );
        let dir = crate::storage::join(&self.prefix, &key.0);
        let kafka = match (&key.1, offsets) {
            (
                Stream::Kafka {
                    topic,
                    partition,
                    assignment,
                },
                Some((first, last)),
            ) => Some(KafkaPlace {
                dir: dir.clone(),
                topic: topic.clone(),
                partition: *partition,
                assignment: *assignment,
                first,
                last,
            }),
            _ => None,
        };
        let data = self.encoder.finish(open.body)?;
        self.unstored.extend(kafka.clone());
        self.sealed.push(Sealed {
            path: crate::storage::join(&dir, &format!("{stem}.{}", self.encoder.extension())),
            data,
            events: open.events,
            held: open.held,
            kafka,
        });
        Ok(())
    }
}

impl ObjectStoreSink {
    /// Run `step` on the writer ([`run_step`]), then store whatever it sealed.
    async fn step<T: Send + 'static>(
        &self,
        step: impl FnOnce(&mut Writer) -> Result<T, encode::EncodeError> + Send + 'static,
    ) -> Result<T, SinkError> {
        let (value, sealed) = run_step(&self.writer, step).await?;
        store_or_keep(&self.stage, &self.store, &self.writer, sealed).await?;
        Ok(value)
    }
}

/// Run `step` on the writer and take what it sealed. On a multi-threaded runtime it
/// runs on the calling thread, which hands its other tasks to the other workers
/// (`block_in_place`): a batch costs no round trip to the blocking pool, no two threads
/// taking turns. A current-thread runtime has no other worker, so there the step goes
/// to the blocking pool.
async fn run_step<T: Send + 'static>(
    writer: &Arc<Mutex<Writer>>,
    step: impl FnOnce(&mut Writer) -> Result<T, encode::EncodeError> + Send + 'static,
) -> Result<(T, Vec<Sealed>), SinkError> {
    let writer = writer.clone();
    let run = move || -> Result<(T, Vec<Sealed>), SinkError> {
        let mut writer = writer.lock().unwrap();
        let value = step(&mut writer)?;
        Ok((value, std::mem::take(&mut writer.sealed)))
    };
    match tokio::runtime::Handle::current().runtime_flavor() {
        tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(run),
        _ => tokio::task::spawn_blocking(run)
            .await
            .map_err(|error| -> SinkError { error.into() })?,
    }
}

impl super::Sink for ObjectStoreSink {
    fn start(&mut self) {
        let cancel = CancellationToken::new();
        let (stage, store, writer) = (self.stage.clone(), self.store.clone(), self.writer.clone());
        let max_age = writer.lock().unwrap().max_age;
        let tick = max_age.min(Duration::from_secs(1));
        let stop = cancel.clone();
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(tick);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = ticks.tick() => {}
                }
                let result = match run_step(&writer, move |w| w.seal_older_than(max_age)).await {
                    Ok(((), sealed)) => store_or_keep(&stage, &store, &writer, sealed).await,
                    Err(error) => Err(error),
                };
                if let Err(error) = result {
                    tracing::warn!(%stage, "rolling objects by age failed, retrying: {error}");
                }
            }
        });
        self.flusher = Some((cancel, task));
    }

    fn write(&mut self, batch: Batch) -> BoxFuture<'_, Result<(), (Batch, SinkError)>> {
        async move {
            // Objects that failed before go first; until they are stored, new events wait.
            let failed_before = !self.writer.lock().unwrap().sealed.is_empty();
            if failed_before && let Err(error) = self.step(|_| Ok(())).await {
                return Err((batch, error));
            }
            let (rejected, sealed) = match run_step(&self.writer, move |writer| writer.add(batch)).await {
                Ok(added) => added,
                Err(error) => {
                    // Nothing of the batch is held: its tokens failed, the source redelivers.
                    tracing::error!(stage = %self.stage, "cannot encode a batch, its events are failed back to the source: {error}");
                    return Ok(());
                }
            };
            self.rejected.extend(rejected);
            // The batch is in the writer now (held, to be retried with its object).
            if let Err(error) = store_or_keep(&self.stage, &self.store, &self.writer, sealed).await {
                tracing::warn!(stage = %self.stage, "storing objects failed, retrying: {error}");
            }
            Ok(())
        }
        .boxed()
    }

    fn take_rejected(&mut self) -> Vec<DeadLetter> {
        std::mem::take(&mut self.rejected)
    }

    fn close(mut self: Box<Self>) -> BoxFuture<'static, Result<(), SinkError>> {
        async move {
            if let Some((cancel, task)) = self.flusher.take() {
                cancel.cancel();
                let _ = task.await;
            }
            let deadline = Instant::now() + CLOSE_TIMEOUT;
            let mut backoff = Duration::from_millis(100);
            loop {
                match self.step(|writer| writer.seal_older_than(Duration::ZERO)).await {
                    Ok(()) => return Ok(()),
                    Err(error) if Instant::now() >= deadline => return Err(error),
                    Err(error) => {
                        tracing::warn!(stage = %self.stage, "storing the last objects failed, retrying: {error}");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                }
            }
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests;
