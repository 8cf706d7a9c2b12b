//! Compaction against a real local object store (`file://`), the objects written by the
//! object_store sink and counted back with the Parquet reader. A crash is simulated at
//! each step boundary by running the steps up to it, then a whole run.

use std::path::Path as FsPath;
use std::sync::Arc;

use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::jobs::{RunContext, Slot};
use crate::sinks::object_store::readings::{self, MINUTE};

/// 2026-11-29T00:00:00Z
const DAY: i64 = 1_795_910_400_000;

/// The readings the tests compact: 40, in 3 objects in hour 10 and 4 in hour 11.
async fn store(dir: &FsPath) {
    readings::store(dir, "parquet", 40).await;
}

fn job(dir: &FsPath) -> Arc<CompactJob> {
    Arc::new(
        toml::from_str(&format!(r#"url = "file://{}""#, dir.display())).unwrap(),
    )
}

fn context() -> RunContext {
    RunContext {
        job: "compact".into(),
        slot: Slot {
            start_ms: DAY,
            end_ms: DAY + 24 * 60 * MINUTE,
        },
        attempt: 1,
        base_dir: ".".into(),
        data_dir: ".".into(),
        log: RunLog::default(),
        cancel: CancellationToken::new(),
        pipelines: Arc::new(crate::workflow::pipelines::InProcess),
    }
}

/// Every file under `dir` (relative), sorted.
fn files(dir: &FsPath) -> Vec<String> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(next) = todo.pop() {
        for entry in std::fs::read_dir(next).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                todo.push(path);
            } else {
                found.push(path.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    found.sort();
    found
}

/// The `seq` of every row of every Parquet file under `dir`, sorted.
fn stored_seqs(dir: &FsPath) -> Vec<i64> {
    let mut seqs = Vec::new();
    for file in files(dir).iter().filter(|f| f.ends_with(".parquet")) {
        let data = bytes::Bytes::from(std::fs::read(dir.join(file)).unwrap());
        for batch in ParquetRecordBatchReaderBuilder::try_new(data).unwrap().build().unwrap() {
            let batch = batch.unwrap();
            let column = batch.column_by_name("seq").unwrap();
            let ints = column.as_any().downcast_ref::<arrow_array::Int64Array>().unwrap();
            seqs.extend(ints.values().iter().copied());
        }
    }
    seqs.sort_unstable();
    seqs
}

#[tokio::test]
async fn a_partitions_small_objects_become_one_per_directory_with_the_same_rows() {
    let dir = tempfile::tempdir().unwrap();
    store(dir.path()).await;
    assert_eq!(files(dir.path()).len(), 7);
    let run = context();
    let produced = job(dir.path()).run(run.clone()).await.unwrap();
    assert_eq!(produced, Produced { objects: 2, rows: 40 });
    let after = files(dir.path());
    assert_eq!(after.len(), 2, "{after:?}");
    assert!(after[0].starts_with("dt=2026-11-29/hour=10/compacted-"), "{after:?}");
    assert!(after[1].starts_with("dt=2026-11-29/hour=11/compacted-"), "{after:?}");
    assert_eq!(stored_seqs(dir.path()), (0..40).collect::<Vec<_>>());
    let log = run.log.text();
    assert!(log.contains("3 objects (18 rows) merged into dt=2026-11-29/hour=10/compacted-"), "{log}");
    assert!(log.contains("4 objects (22 rows) merged into dt=2026-11-29/hour=11/compacted-"), "{log}");

    // Run again: nothing left to merge, nothing counted.
    let again = job(dir.path()).run(context()).await.unwrap();
    assert_eq!(again, Produced::default());
    assert_eq!(files(dir.path()), after);
}

#[tokio::test]
async fn a_run_merges_only_its_slots_partition_and_leaves_single_objects() {
    let dir = tempfile::tempdir().unwrap();
    store(dir.path()).await;
    let mut run = context();
    run.slot.start_ms -= 24 * 60 * MINUTE;
    let produced = job(dir.path()).run(run).await.unwrap();
    assert_eq!(produced, Produced::default(), "the day before holds nothing");
    let job = Arc::new(CompactJob {
        min_objects: 4,
        ..toml::from_str(&format!(r#"url = "file://{}""#, dir.path().display())).unwrap()
    });
    let produced = job.run(context()).await.unwrap();
    assert_eq!(produced, Produced { objects: 1, rows: 22 }, "hour 10 has only 3 objects");
}

/// The store under `dir`, and `partition`'s objects merged by hand, nothing stored yet:
/// its inputs and its merge. (A crash after some of the steps, for tests here and the
/// replay source's.)
pub(crate) async fn merge_by_hand(
    dir: &FsPath,
    partition: &str,
) -> (crate::storage::Target, Vec<Path>, Merged) {
    let target = crate::storage::open(&format!("file://{}", dir.display()), &BTreeMap::new()).unwrap();
    let store = target.store.as_ref();
    let listed = compaction::list(store, &Path::from(partition)).await.unwrap();
    let inputs = plan(listed, 2, 128 << 20).remove(0);
    let merged = prepare(store, &inputs, 2).await.unwrap().remove(0);
    (target, inputs, merged)
}

/// A crash after `steps` steps of hour 11's compaction, run by hand: 0, merged and
/// nothing stored; 1, the manifest stored; 2, the output too; 3, one input deleted;
/// 4, every input deleted, the manifest left. Then a whole run.
async fn crash_after(steps: usize) {
    let dir = tempfile::tempdir().unwrap();
    store(dir.path()).await;
    let (target, inputs, merged) = merge_by_hand(dir.path(), "dt=2026-11-29/hour=11").await;
    let store = target.store.as_ref();
    if steps >= 1 {
        merged.record(store).await.unwrap();
    }
    if steps >= 2 {
        merged.store_output(store).await.unwrap();
        // A replay meanwhile reads each row once.
        let settled = compaction::settle(store, compaction::list(store, &Path::default()).await.unwrap())
            .await
            .unwrap();
        let parquet = settled.iter().filter(|m| m.location.as_ref().ends_with(".parquet")).count();
        assert_eq!(parquet, 3 + 1, "hour 10's objects and hour 11's output");
    }
    // Part of the deletes, then all of them.
    let deleted = match steps {
        3 => 1,
        4 => inputs.len(),
        _ => 0,
    };
    for input in &inputs[..deleted] {
        store.delete(input).await.unwrap();
    }
    let produced = job(dir.path()).run(context()).await.unwrap();
    assert_eq!(produced, Produced { objects: 2, rows: 40 }, "after {steps} step(s)");
    assert_eq!(stored_seqs(dir.path()), (0..40).collect::<Vec<_>>(), "after {steps} step(s)");
    let after = files(dir.path());
    assert_eq!(after.len(), 2, "after {steps} step(s): {after:?}");
    assert!(after.contains(&merged.manifest.output), "{after:?}");
}

#[tokio::test]
async fn a_crash_between_any_two_steps_is_finished_by_the_next_run() {
    for steps in 0..=4 {
        crash_after(steps).await;
    }
}

#[tokio::test]
async fn a_manifest_whose_inputs_are_gone_without_its_output_fails_the_run() {
    let dir = tempfile::tempdir().unwrap();
    store(dir.path()).await;
    let (target, inputs, merged) = merge_by_hand(dir.path(), "dt=2026-11-29/hour=10").await;
    let store = target.store.as_ref();
    merged.record(store).await.unwrap();
    store.delete(&inputs[1]).await.unwrap();
    let error = job(dir.path()).run(context()).await.unwrap_err().to_string();
    assert!(error.contains("is gone") && error.contains("by hand"), "{error}");
}

#[test]
fn plans_gather_runs_up_to_the_target_per_directory() {
    let meta = |name: &str, size: u64| ObjectMeta {
        location: Path::from(name),
        last_modified: Default::default(),
        size,
        e_tag: None,
        version: None,
    };
    let listed = vec![
        meta("p/a/3.parquet", 40),
        meta("p/a/1.parquet", 40),
        meta("p/a/2.parquet", 40),
        meta("p/a/big.parquet", 100),
        meta("p/a/_compaction-x.json", 1),
        meta("p/a/4.jsonl", 1),
        meta("p/b/1.parquet", 10),
    ];
    let names = |runs: Vec<Vec<Path>>| -> Vec<Vec<String>> {
        runs.into_iter().map(|run| run.iter().map(ToString::to_string).collect()).collect()
    };
    assert_eq!(
        names(plan(listed.clone(), 2, 100)),
        [vec!["p/a/1.parquet", "p/a/2.parquet"]],
        "3 is alone in its run, b has one object, big is done"
    );
    assert_eq!(
        names(plan(listed, 1, 100)),
        [vec!["p/a/1.parquet", "p/a/2.parquet"], vec!["p/a/3.parquet"], vec!["p/b/1.parquet"]]
    );
}
