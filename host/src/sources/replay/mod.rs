//! `type = "replay"` source: reads the Parquet and JSON-lines objects an `object_store`
//! sink stored back into a pipeline — a backfill, or last week's data scored again
//! with a new model. `sluice replay` runs such a pipeline to the end with a progress
//! bar and a summary.
//!
//! Objects under `url` + `prefix` are read in name order (for Kafka input that is
//! offset order per topic-partition; otherwise first-event-time order), each object's
//! events in stored order. With `from`/`to`, objects whose Hive partition (`dt=`,
//! `hour=`) lies outside the range are not downloaded, and with `time_field` each event
//! outside it is passed over. The source ends once every object is read; the pipeline
//! then drains and stops. A partition being compacted is read as its inputs or as
//! their merged output, never both (`storage::compaction`); a compacted object sorts
//! after its partition's other objects.

mod decode;
mod range;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::FutureExt;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use self::decode::Format;
pub use self::range::TimeRange;
use crate::event::Event;
use crate::component::{BuildContext, BuildError};
use crate::pipeline::{Ack, Batch, Outputs, StageError};
use crate::storage::compaction;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplaySourceConfig {
    /// Where the objects are: `file:///dir`, `s3://bucket/prefix`, `gs://...`, `az://...`.
    pub url: String,
    /// object_store options for cloud URLs, as for the `object_store` sink.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    /// Only objects under this path inside `url` (`dt=2026-11-28`).
    #[serde(default)]
    pub prefix: String,
    /// Start of the time range (inclusive): `2026-11-28` or `2026-11-28T10:00:00Z`.
    #[serde(default)]
    pub from: Option<String>,
    /// End of the time range (exclusive).
    #[serde(default)]
    pub to: Option<String>,
    /// Payload field holding the event time (epoch ms or RFC 3339): it filters events
    /// by the range and stamps them.
    #[serde(default)]
    pub time_field: Option<String>,
    /// Events per batch sent down the pipeline.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// How far the source built from this config has come. Whoever starts the pipeline
    /// watches it here: the pipeline knows sources only as the `Source` trait, and two
    /// pipelines in one process (a replay job beside another) each hold their own.
    #[serde(skip)]
    pub progress: Arc<Progress>,
}

fn default_batch_size() -> usize {
    1000
}

impl super::SourceConfig for ReplaySourceConfig {
    fn build(&self, context: &BuildContext<'_>) -> Result<Box<dyn super::Source>, BuildError> {
        Ok(Box::new(self.open(context.stage)?))
    }
}

impl ReplaySourceConfig {
    /// The source, outside a pipeline too.
    pub fn open(&self, stage: &str) -> Result<ReplaySource, BuildError> {
        let invalid = |message: String| BuildError::stage(stage, message);
        if self.batch_size == 0 {
            return Err(invalid("`batch_size` must be at least 1".into()));
        }
        let range = TimeRange::parse(self.from.as_deref(), self.to.as_deref()).map_err(invalid)?;
        // Opening a file:// URL creates its directory, which a sink wants; a replay of a
        // directory that is not there is a mistake.
        if let Ok(url) = url::Url::parse(&self.url)
            && url.scheme() == "file"
            && let Ok(dir) = url.to_file_path()
            && !dir.is_dir()
        {
            return Err(invalid(format!("`url`: no directory {}", dir.display())));
        }
        let target = crate::storage::open(&self.url, &self.options)
            .map_err(|error| invalid(error.to_string()))?;
        let prefix = crate::storage::join(&target.prefix, &self.prefix);
        Ok(ReplaySource {
            stage: Arc::from(stage),
            store: target.store,
            prefix,
            range,
            time_field: self.time_field.clone(),
            batch_size: self.batch_size,
            progress: self.progress.clone(),
        })
    }
}

/// How far a replay has come, for the progress bar and the summary of `sluice replay`
/// and a replay job's log.
#[derive(Debug, Default)]
pub struct Progress {
    /// Objects (and their bytes) to read, once listing is done.
    pub objects_total: AtomicU64,
    pub bytes_total: AtomicU64,
    pub listed: AtomicBool,
    pub objects_read: AtomicU64,
    pub bytes_read: AtomicU64,
    /// Events sent down the pipeline, and how many of them every sink has taken.
    pub events_sent: AtomicU64,
    pub events_acknowledged: AtomicU64,
    /// Events of read objects whose time is outside the range (or unreadable, with a range).
    pub events_outside_range: AtomicU64,
    /// Objects that could not be read, with why.
    pub failed: Mutex<Vec<(String, String)>>,
    /// Every object is read (or the source was stopped).
    pub done: AtomicBool,
}

pub struct ReplaySource {
    stage: Arc<str>,
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    range: TimeRange,
    time_field: Option<String>,
    batch_size: usize,
    progress: Arc<Progress>,
}

impl super::Source for ReplaySource {
    fn run(
        self: Box<Self>,
        outputs: Outputs,
        shutdown: CancellationToken,
    ) -> BoxFuture<'static, Result<(), StageError>> {
        async move {
            let result = self.replay(&outputs, &shutdown).await;
            self.progress.done.store(true, Ordering::Release);
            result
        }
        .boxed()
    }
}

impl ReplaySource {
    async fn replay(&self, outputs: &Outputs, shutdown: &CancellationToken) -> Result<(), StageError> {
        let objects = self.list().await?;
        tracing::info!(
            stage = %self.stage,
            objects = objects.len(),
            bytes = self.progress.bytes_total.load(Ordering::Relaxed),
            prefix = %self.prefix,
            "replaying"
        );
        for (meta, format) in objects {
            if shutdown.is_cancelled() {
                tracing::info!(stage = %self.stage, "replay stopped before its end");
                break;
            }
            if let Err(reason) = self.read(&meta, format, outputs, shutdown).await? {
                tracing::error!(stage = %self.stage, object = %meta.location, "cannot replay: {reason}");
                outputs.metrics().errors.increment(1);
                self.progress
                    .failed
                    .lock()
                    .unwrap()
                    .push((meta.location.to_string(), reason));
            } else {
                self.progress.objects_read.fetch_add(1, Ordering::Relaxed);
            }
            self.progress.bytes_read.fetch_add(meta.size, Ordering::Relaxed);
        }
        Ok(())
    }

    /// The objects to read, in name order, without those of other formats or outside
    /// the range's partitions, nor the inputs of a compaction whose output is there.
    async fn list(&self) -> Result<Vec<(ObjectMeta, Format)>, StageError> {
        let listed = compaction::list(self.store.as_ref(), &self.prefix)
            .await
            .map_err(|error| StageError::other(&self.stage, error))?;
        let listed = compaction::settle(self.store.as_ref(), listed)
            .await
            .map_err(|error| StageError::other(&self.stage, error))?;
        let mut objects: Vec<(ObjectMeta, Format)> = listed
            .into_iter()
            .filter(|meta| self.range.may_hold(meta.location.as_ref()))
            .filter_map(|meta| Some((Format::of(meta.location.as_ref())?, meta)))
            .map(|(format, meta)| (meta, format))
            .collect();
        objects.sort_by(|(a, _), (b, _)| a.location.cmp(&b.location));
        let bytes = objects.iter().map(|(meta, _)| meta.size).sum();
        self.progress.objects_total.store(objects.len() as u64, Ordering::Relaxed);
        self.progress.bytes_total.store(bytes, Ordering::Relaxed);
        self.progress.listed.store(true, Ordering::Release);
        Ok(objects)
    }

    /// Read one object into the pipeline. The outer error stops the source (the
    /// pipeline is gone); the inner one is this object's, and the replay goes on.
    async fn read(
        &self,
        meta: &ObjectMeta,
        format: Format,
        outputs: &Outputs,
        shutdown: &CancellationToken,
    ) -> Result<Result<(), String>, StageError> {
        let data = match self.store.get(&meta.location).await {
            Ok(object) => object.bytes().await,
            Err(error) => Err(error),
        };
        let data = match data {
            Ok(data) => data,
            Err(error) => return Ok(Err(error.to_string())),
        };
        let (chunks, mut rows) = tokio::sync::mpsc::channel::<Vec<Bytes>>(2);
        let batch_size = self.batch_size;
        let decoding = tokio::task::spawn_blocking(move || {
            decode::decode(format, data, batch_size, |chunk| chunks.blocking_send(chunk).is_ok())
        });
        let origin: Arc<str> = Arc::from(meta.location.as_ref());
        let stored_ms = meta.last_modified.timestamp_millis();
        loop {
            let chunk = tokio::select! {
                chunk = rows.recv() => chunk,
                _ = shutdown.cancelled() => None,
            };
            let Some(chunk) = chunk else { break };
            let batch = self.batch(chunk, &origin, stored_ms);
            if batch.is_empty() {
                continue;
            }
            self.progress
                .events_sent
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            outputs.metrics().events_in.increment(batch.len() as u64);
            outputs
                .send(batch)
                .await
                .map_err(|error| StageError::new(&self.stage, error))?;
        }
        drop(rows);
        match decoding.await {
            Ok(Ok(())) => Ok(Ok(())),
            Ok(Err(error)) => Ok(Err(error.to_string())),
            Err(error) => Err(StageError::new(&self.stage, error)),
        }
    }

    /// Events of `payloads` inside the range, stamped with their time field (else the
    /// time the object was stored), each acknowledged into the progress.
    fn batch(&self, payloads: Vec<Bytes>, origin: &Arc<str>, stored_ms: i64) -> Batch {
        let mut batch = Batch::with_capacity(payloads.len());
        for payload in payloads {
            let event_ms = self.time_field.as_deref().and_then(|field| {
                let value: serde_json::Value = serde_json::from_slice(&payload).ok()?;
                crate::template::field(Some(&value), field).and_then(crate::storage::time_ms)
            });
            let inside = match event_ms {
                Some(millis) => self.range.contains(millis),
                None => self.time_field.is_none() || self.range.is_open(),
            };
            if !inside {
                self.progress
                    .events_outside_range
                    .fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let progress = self.progress.clone();
            let ack = Ack::new(move || {
                progress.events_acknowledged.fetch_add(1, Ordering::Relaxed);
            });
            let event = Event {
                key: None,
                payload,
                headers: Vec::new(),
                timestamp_ms: event_ms.unwrap_or(stored_ms),
                origin: origin.clone(),
            };
            batch.push(event, ack);
        }
        batch
    }
}

#[cfg(test)]
mod tests;
