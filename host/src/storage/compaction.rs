//! Compactions as readers of a partition see them. A compaction (the `compact` job)
//! merges a partition directory's small objects into one, in steps that a crash may
//! interrupt between any two:
//!
//! 1. store a manifest, `_compaction-{id}.json`, naming the inputs and the output;
//! 2. store the output, `compacted-{id}.parquet` (whole: a reader never sees part of it);
//! 3. delete the inputs;
//! 4. delete the manifest.
//!
//! `id` is derived from the input names alone, so a compaction done again after a crash
//! makes the same output under the same name. While a manifest is there, its inputs and
//! its output may both be listed: a reader takes the output once it is listed and
//! passes over the inputs ([`settle`]), so that no event is read twice. (The inputs go
//! before the manifest does, so a listing that holds inputs and the output but not their
//! manifest holds inputs that are already deleted: reading them fails, it does not
//! double.) Manifests are `.json`, which no reader takes for data.

use std::collections::BTreeSet;

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What a compaction merges into what, stored before its output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The objects merged, by their paths in the store, in name order.
    pub inputs: Vec<String>,
    /// The object they are merged into.
    pub output: String,
    /// The rows the output holds (the inputs' together).
    pub rows: u64,
}

const MANIFEST_PREFIX: &str = "_compaction-";
const MANIFEST_SUFFIX: &str = ".json";
const OUTPUT_PREFIX: &str = "compacted-";

#[derive(Debug, thiserror::Error)]
pub enum CompactionError {
    #[error("{0}")]
    Store(#[from] object_store::Error),
    #[error("compaction manifest {path} is unreadable: {source}")]
    Manifest {
        path: Path,
        #[source]
        source: serde_json::Error,
    },
}

impl Manifest {
    /// The compaction of `inputs` (paths in one directory) into the output named after
    /// them, beside them, holding `rows`.
    pub fn new(inputs: &[Path], rows: u64) -> Manifest {
        let mut inputs: Vec<String> = inputs.iter().map(ToString::to_string).collect();
        inputs.sort();
        let dir = inputs
            .first()
            .and_then(|first| first.rsplit_once('/'))
            .map_or("", |(dir, _)| dir);
        let output = super::join(
            &stored(dir),
            &format!("{OUTPUT_PREFIX}{}.parquet", id(&inputs)),
        );
        Manifest {
            output: output.to_string(),
            inputs,
            rows,
        }
    }

    /// Where this manifest is stored: beside its output.
    pub fn path(&self) -> Path {
        let (dir, name) = self.output.rsplit_once('/').unwrap_or(("", &self.output));
        let id = name
            .trim_start_matches(OUTPUT_PREFIX)
            .trim_end_matches(".parquet");
        super::join(
            &stored(dir),
            &format!("{MANIFEST_PREFIX}{id}{MANIFEST_SUFFIX}"),
        )
    }

    pub fn input_paths(&self) -> impl Iterator<Item = Path> + '_ {
        self.inputs.iter().map(|input| stored(input))
    }

    pub fn output_path(&self) -> Path {
        stored(&self.output)
    }

    /// The manifest stored at `path`.
    pub async fn read(store: &dyn ObjectStore, path: &Path) -> Result<Manifest, CompactionError> {
        let data = store.get(path).await?.bytes().await?;
        serde_json::from_slice(&data).map_err(|source| CompactionError::Manifest {
            path: path.clone(),
            source,
        })
    }

    /// Store this manifest (step 1).
    pub async fn store(&self, store: &dyn ObjectStore) -> object_store::Result<()> {
        let text = serde_json::to_vec_pretty(self).expect("a manifest serializes");
        super::put(store, &self.path(), text.into()).await
    }
}

/// Whether the object at `path` is a compaction's manifest.
pub fn is_manifest(path: &Path) -> bool {
    path.filename()
        .is_some_and(|name| name.starts_with(MANIFEST_PREFIX) && name.ends_with(MANIFEST_SUFFIX))
}

/// Every object under `prefix`.
pub async fn list(store: &dyn ObjectStore, prefix: &Path) -> object_store::Result<Vec<ObjectMeta>> {
    store.list(Some(prefix)).try_collect().await
}

/// `listed` (one listing) as if every compaction in it whose output is listed had
/// finished: those compactions' inputs are left out. A manifest gone by the time it is
/// read belonged to a compaction that finished, whose inputs are gone too.
pub async fn settle(
    store: &dyn ObjectStore,
    listed: Vec<ObjectMeta>,
) -> Result<Vec<ObjectMeta>, CompactionError> {
    let names: BTreeSet<String> = listed
        .iter()
        .map(|meta| meta.location.to_string())
        .collect();
    let mut merged = BTreeSet::new();
    for meta in listed.iter().filter(|meta| is_manifest(&meta.location)) {
        let manifest = match Manifest::read(store, &meta.location).await {
            Ok(manifest) => manifest,
            Err(CompactionError::Store(object_store::Error::NotFound { .. })) => continue,
            Err(error) => return Err(error),
        };
        if names.contains(&manifest.output) {
            merged.extend(manifest.inputs);
        }
    }
    Ok(listed
        .into_iter()
        .filter(|meta| !merged.contains(meta.location.as_ref()))
        .collect())
}

/// A path as a manifest holds it: the store's own (already encoded) form.
fn stored(text: &str) -> Path {
    Path::parse(text).unwrap_or_else(|_| Path::from(text))
}

/// A short hash of the sorted input names.
fn id(inputs: &[String]) -> String {
    let mut digest = Sha256::new();
    for input in inputs {
        digest.update((input.len() as u64).to_le_bytes());
        digest.update(input.as_bytes());
    }
    hex::encode(&digest.finalize()[..8])
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;

    #[test]
    fn names_follow_the_inputs_not_their_order() {
        let a = Path::from("lake/dt=2026-11-29/1-a.parquet");
        let b = Path::from("lake/dt=2026-11-29/2-b.parquet");
        let one = Manifest::new(&[a.clone(), b.clone()], 5);
        let other = Manifest::new(&[b, a.clone()], 5);
        assert_eq!(one, other);
        assert!(
            one.output.starts_with("lake/dt=2026-11-29/compacted-"),
            "{}",
            one.output
        );
        assert!(is_manifest(&one.path()), "{}", one.path());
        assert_eq!(
            one.path()
                .filename()
                .unwrap()
                .trim_start_matches(MANIFEST_PREFIX),
            one.output_path()
                .filename()
                .unwrap()
                .trim_start_matches(OUTPUT_PREFIX)
                .replace(".parquet", ".json")
        );
        assert_ne!(Manifest::new(&[a], 5).output, one.output);
    }

    #[tokio::test]
    async fn a_listing_holds_either_the_inputs_or_the_output() {
        let store = InMemory::new();
        let dir = Path::from("p");
        let inputs = [Path::from("p/1.parquet"), Path::from("p/2.parquet")];
        for input in &inputs {
            super::super::put(&store, input, "x".into()).await.unwrap();
        }
        let manifest = Manifest::new(&inputs, 2);
        manifest.store(&store).await.unwrap();
        let names = |listed: Vec<ObjectMeta>| -> Vec<String> {
            listed
                .into_iter()
                .map(|meta| meta.location.to_string())
                .filter(|name| !name.ends_with(".json"))
                .collect()
        };
        let listed = list(&store, &dir).await.unwrap();
        assert_eq!(
            names(settle(&store, listed).await.unwrap()),
            ["p/1.parquet", "p/2.parquet"]
        );
        super::super::put(&store, &manifest.output_path(), "y".into())
            .await
            .unwrap();
        let listed = list(&store, &dir).await.unwrap();
        assert_eq!(
            names(settle(&store, listed).await.unwrap()),
            [manifest.output.clone()]
        );
    }
}
