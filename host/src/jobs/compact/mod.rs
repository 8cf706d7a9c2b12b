//! `type = "compact"`: a partition's small Parquet objects (an `object_store` sink rolls
//! one a minute per partition) merged into larger ones, so that queries and replays
//! open a few files instead of thousands.
//!
//! ```toml
//! [jobs.compact]
//! type = "compact"
//! url = "s3://lake/telemetry"     # `options` as for the object_store sink
//! partition = "dt={slot_date}"    # under `url`; slot placeholders expanded
//! schedule = "30 0 * * *"
//! # min_objects = 2, target_bytes = 134217728 (the defaults)
//! ```
//!
//! Each directory under the partition (`dt=2026-11-28/hour=10/device=a`) is compacted on
//! its own, so the Hive layout stays: its Parquet objects below `target_bytes`, in name
//! order, are gathered into runs of up to `target_bytes` together, and each run of at
//! least `min_objects` becomes one `compacted-{id}.parquet` beside them (a compacted
//! object below the target may be merged again with objects that came later). A run
//! holds its inputs and its output in memory while it is merged.
//!
//! A merge goes in the steps [`storage::compaction`](crate::storage::compaction)
//! describes — manifest, output, deletes, manifest deleted — so a run interrupted at any
//! point (a crash, a timeout) is finished by the next: it first completes every
//! compaction whose manifest it finds ([`resume`]), before it plans new ones. No row is
//! stored twice nor lost, and a replay reading the partition meanwhile reads each row
//! once. Compact partitions their sinks have finished writing (yesterday's): a sink that
//! stores an object again after a crash (objects are named after what they hold) would
//! add its events a second time beside the compacted copy.
//!
//! A run produced the objects it wrote and the rows in them. JSON-lines objects are
//! left as they are.

mod merge;

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use futures::FutureExt;
use futures::future::BoxFuture;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};
use serde::Deserialize;

use super::{CheckContext, JobError, JobKind, Produced, RunContext, RunLog};
use crate::component::Problem;
use crate::storage::compaction::{self, CompactionError, Manifest};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompactJob {
    /// Where the objects are, as the `object_store` sink that wrote them says:
    /// `file:///dir`, `s3://bucket/prefix`, `gs://...`, `az://...`.
    pub url: String,
    /// object_store options for cloud URLs (`endpoint`, `region`, ...), as for the sink.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    /// The partition to compact, under `url`; slot placeholders expanded.
    #[serde(default = "default_partition")]
    pub partition: String,
    /// Fewer small objects than this in a directory are left as they are.
    #[serde(default = "default_min_objects")]
    pub min_objects: usize,
    /// The stored size a merged object is made up to; objects this large are done.
    #[serde(default = "default_target_bytes")]
    pub target_bytes: u64,
}

fn default_partition() -> String {
    "dt={slot_date}".to_owned()
}
fn default_min_objects() -> usize {
    2
}
fn default_target_bytes() -> u64 {
    128 << 20
}

#[derive(Debug, thiserror::Error)]
pub enum CompactError {
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
    #[error(transparent)]
    Store(#[from] object_store::Error),
    #[error(transparent)]
    Manifest(#[from] CompactionError),
    #[error(transparent)]
    Merge(#[from] merge::MergeError),
    #[error("compaction {manifest}: {reason}")]
    Inconsistent { manifest: Path, reason: String },
    #[error("a merge task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl JobKind for CompactJob {
    fn problems(&self, _context: &CheckContext<'_>) -> Vec<Problem> {
        let mut problems = Vec::new();
        if self.min_objects < 2 {
            problems.push(Problem {
                message: "`min_objects` must be at least 2".into(),
                hint: "one object merged alone would only be copied".into(),
            });
        }
        if self.target_bytes == 0 {
            problems.push(Problem {
                message: "`target_bytes` must be at least 1".into(),
                hint: "e.g. `target_bytes = 134217728` (128 MiB)".into(),
            });
        }
        if let Err(error) = url::Url::parse(&self.url) {
            problems.push(Problem {
                message: format!("`url` `{}`: {error}", self.url),
                hint: "as the object_store sink's: file:///dir, s3://bucket/prefix, ...".into(),
            });
        }
        problems
    }

    fn run(self: Arc<Self>, run: RunContext) -> BoxFuture<'static, Result<Produced, JobError>> {
        async move { self.compact(&run).await.map_err(JobError::new) }.boxed()
    }
}

impl CompactJob {
    async fn compact(&self, run: &RunContext) -> Result<Produced, CompactError> {
        let target = crate::storage::open(&self.url, &self.options)?;
        let store = target.store.as_ref();
        let prefix = crate::storage::join(&target.prefix, &run.slot.expand(&self.partition));
        let mut produced = Produced::default();
        let listed = compaction::list(store, &prefix).await?;
        for meta in listed.iter().filter(|meta| compaction::is_manifest(&meta.location)) {
            let manifest = Manifest::read(store, &meta.location).await?;
            run.log.line(format!("finishing the compaction into {}", manifest.output));
            resume(store, &manifest).await?;
            count(&mut produced, &manifest, &run.log);
        }
        let listed = compaction::list(store, &prefix).await?;
        let runs = plan(listed, self.min_objects, self.target_bytes);
        if runs.is_empty() {
            run.log.line(format!("nothing to compact under {prefix}"));
        }
        for inputs in runs {
            if run.cancel.is_cancelled() {
                run.log.line("stopped; the next run goes on");
                break;
            }
            for merged in prepare(store, &inputs, self.min_objects).await? {
                merged.record(store).await?;
                merged.store_output(store).await?;
                finish(store, &merged.manifest).await?;
                count(&mut produced, &merged.manifest, &run.log);
            }
        }
        Ok(produced)
    }
}

fn count(produced: &mut Produced, manifest: &Manifest, log: &RunLog) {
    produced.objects += 1;
    produced.rows += manifest.rows;
    log.line(format!(
        "{} objects ({} rows) merged into {}",
        manifest.inputs.len(),
        manifest.rows,
        manifest.output
    ));
}

/// The runs of objects a listing calls for merging: per directory, its Parquet objects
/// below `target_bytes` in name order, gathered into runs of up to `target_bytes`
/// together; runs of fewer than `min_objects` are left out. A listing holding a
/// manifest is not planned from: [`resume`] it first.
pub fn plan(listed: Vec<ObjectMeta>, min_objects: usize, target_bytes: u64) -> Vec<Vec<Path>> {
    let mut directories: BTreeMap<String, Vec<ObjectMeta>> = BTreeMap::new();
    for meta in listed {
        let text = meta.location.to_string();
        let (dir, name) = text.rsplit_once('/').unwrap_or(("", &text));
        if name.ends_with(".parquet") && !name.starts_with(['_', '.']) && meta.size < target_bytes {
            directories.entry(dir.to_owned()).or_default().push(meta);
        }
    }
    let mut runs = Vec::new();
    for (_, mut objects) in directories {
        objects.sort_by(|a, b| a.location.cmp(&b.location));
        let mut current: Vec<Path> = Vec::new();
        let mut bytes = 0;
        for meta in objects {
            if !current.is_empty() && bytes + meta.size > target_bytes {
                runs.push(std::mem::take(&mut current));
                bytes = 0;
            }
            bytes += meta.size;
            current.push(meta.location);
        }
        runs.push(current);
    }
    runs.retain(|run| run.len() >= min_objects);
    runs
}

/// A merge made and not yet stored: its manifest and its output's bytes.
pub struct Merged {
    pub manifest: Manifest,
    data: Bytes,
}

impl Merged {
    /// Step 1: the manifest, so that a crash from here on is finished by [`resume`].
    pub async fn record(&self, store: &dyn ObjectStore) -> object_store::Result<()> {
        self.manifest.store(store).await
    }

    /// Step 2: the output, whole.
    pub async fn store_output(&self, store: &dyn ObjectStore) -> object_store::Result<()> {
        crate::storage::put(store, &self.manifest.output_path(), self.data.clone()).await
    }
}

/// Read `inputs` (objects of one directory) and merge them: one [`Merged`] per run of
/// inputs whose columns fit together, each of at least `min_objects` inputs.
pub async fn prepare(
    store: &dyn ObjectStore,
    inputs: &[Path],
    min_objects: usize,
) -> Result<Vec<Merged>, CompactError> {
    let mut downloaded = Vec::with_capacity(inputs.len());
    for path in inputs {
        downloaded.push((path.clone(), store.get(path).await?.bytes().await?));
    }
    let merged = tokio::task::spawn_blocking(move || -> Result<Vec<Merged>, CompactError> {
        let decoded = downloaded
            .into_iter()
            .map(|(path, data)| merge::decode(path, data))
            .collect::<Result<Vec<_>, _>>()?;
        let mut merged = Vec::new();
        for group in merge::group(decoded) {
            if group.len() < min_objects {
                continue;
            }
            let (data, rows) = merge::encode(&group)?;
            let paths: Vec<Path> = group.into_iter().map(|input| input.path).collect();
            merged.push(Merged {
                manifest: Manifest::new(&paths, rows),
                data,
            });
        }
        Ok(merged)
    })
    .await??;
    Ok(merged)
}

/// Steps 3 and 4: delete the inputs (those still there), then the manifest.
pub async fn finish(store: &dyn ObjectStore, manifest: &Manifest) -> object_store::Result<()> {
    for input in manifest.input_paths() {
        match store.delete(&input).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(error) => return Err(error),
        }
    }
    store.delete(&manifest.path()).await
}

/// Finish the compaction `manifest` records, wherever it stopped: with its output
/// stored, only the deletes are left; without, every input is still there, and the
/// merge is made again (to the same name and rows).
pub async fn resume(store: &dyn ObjectStore, manifest: &Manifest) -> Result<(), CompactError> {
    let inconsistent = |reason: String| CompactError::Inconsistent {
        manifest: manifest.path(),
        reason,
    };
    match store.head(&manifest.output_path()).await {
        Ok(_) => return Ok(finish(store, manifest).await?),
        Err(object_store::Error::NotFound { .. }) => {}
        Err(error) => return Err(error.into()),
    }
    let inputs: Vec<Path> = manifest.input_paths().collect();
    let mut merged = match prepare(store, &inputs, 1).await {
        Err(CompactError::Store(object_store::Error::NotFound { path, .. })) => {
            return Err(inconsistent(format!(
                "the output was never stored and input {path} is gone: look at the partition by hand"
            )));
        }
        other => other?,
    };
    match (merged.pop(), merged.is_empty()) {
        (Some(again), true) if again.manifest == *manifest => {
            again.store_output(store).await?;
            Ok(finish(store, manifest).await?)
        }
        _ => Err(inconsistent(
            "its inputs no longer merge into the output it names".into(),
        )),
    }
}

#[cfg(test)]
pub(crate) mod tests;
