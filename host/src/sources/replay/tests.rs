use std::collections::HashMap;
use std::sync::atomic::Ordering;

use tokio::sync::mpsc;

use super::*;
use crate::pipeline::Inlet;
use crate::sinks::object_store::readings::{AT, MINUTE, reading, store};
use crate::sources::Source;

/// Run a replay source `stage` configured by `text` to its end; every event it sent,
/// in order.
async fn replay(stage: &str, text: &str) -> (Vec<Event>, Arc<Progress>) {
    let config: ReplaySourceConfig = toml::from_str(text).unwrap();
    let source = Box::new(config.open(stage).unwrap());
    let progress = config.progress.clone();
    let (sender, mut receiver) = mpsc::channel(4);
    let inlet = Inlet::new(Arc::from("reader"), sender);
    let outputs = Outputs::new(Arc::from(stage), vec![inlet], HashMap::new(), Vec::new());
    let running = tokio::spawn(source.run(outputs, CancellationToken::new()));
    let mut events = Vec::new();
    // The reader takes each batch as a sink would: stored, so delivered.
    while let Some(batch) = receiver.recv().await {
        events.extend(batch.events);
        batch.acks.into_iter().for_each(Ack::delivered);
    }
    running.await.unwrap().unwrap();
    assert!(progress.done.load(Ordering::Acquire));
    (events, progress)
}

fn seqs(events: &[Event]) -> Vec<i64> {
    events
        .iter()
        .map(|event| {
            let value: serde_json::Value = serde_json::from_slice(&event.payload).unwrap();
            value["seq"].as_i64().unwrap()
        })
        .collect()
}

#[tokio::test]
async fn stored_parquet_comes_back_as_the_same_events_in_order() {
    let dir = tempfile::tempdir().unwrap();
    store(dir.path(), "parquet", 40).await;
    let (events, progress) = replay("all", &format!(
        r#"url = "file://{}"
time_field = "ts""#,
        dir.path().display()
    ))
    .await;
    let values: Vec<serde_json::Value> = events
        .iter()
        .map(|event| serde_json::from_slice(&event.payload).unwrap())
        .collect();
    let expected: Vec<serde_json::Value> = (0..40)
        .map(|seq| serde_json::from_str(&reading(seq)).unwrap())
        .collect();
    assert_eq!(values, expected);
    assert_eq!(events[3].timestamp_ms, AT + 3 * MINUTE, "stamped with the time field");
    assert_eq!(progress.events_sent.load(Ordering::Relaxed), 40);
    // 18 readings in hour 10, 22 in hour 11, 7 to an object.
    assert_eq!(progress.objects_read.load(Ordering::Relaxed), 3 + 4);
    assert_eq!(progress.objects_total.load(Ordering::Relaxed), 7);
    drop(events);
    assert_eq!(
        progress.events_acknowledged.load(Ordering::Relaxed),
        40,
        "every event is acknowledged once the reader delivered it"
    );
}

#[tokio::test]
async fn a_time_range_reads_only_its_partitions_and_events() {
    let dir = tempfile::tempdir().unwrap();
    store(dir.path(), "jsonl", 40).await;
    // Hour 11 starts at seq 18; 11:00 to 11:10 holds seqs 18..28.
    let (events, progress) = replay("ten_minutes", &format!(
        r#"url = "file://{}"
time_field = "ts"
from = "2026-11-29T11:00:00Z"
to = "2026-11-29T11:10:00Z""#,
        dir.path().display()
    ))
    .await;
    assert_eq!(seqs(&events), (18..28).collect::<Vec<_>>());
    assert_eq!(progress.objects_total.load(Ordering::Relaxed), 4, "hour 10 is not read");
    assert_eq!(progress.events_outside_range.load(Ordering::Relaxed), 22 - 10);
    // JSON lines come back as the exact bytes stored.
    assert_eq!(events[0].payload, reading(18).as_bytes());
}

#[tokio::test]
async fn a_prefix_selects_a_partition_and_a_corrupt_object_is_reported_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    store(dir.path(), "parquet", 40).await;
    let hour = dir.path().join("dt=2026-11-29/hour=10");
    std::fs::write(hour.join("0-broken.parquet"), b"PAR1 not really").unwrap();
    std::fs::write(hour.join("_SUCCESS"), b"").unwrap();
    let (events, progress) = replay("one_hour", &format!(
        r#"url = "file://{}"
prefix = "dt=2026-11-29/hour=10""#,
        dir.path().display()
    ))
    .await;
    assert_eq!(seqs(&events), (0..18).collect::<Vec<_>>());
    let failed = progress.failed.lock().unwrap().clone();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(failed[0].0.ends_with("hour=10/0-broken.parquet"), "{failed:?}");
    assert!(failed[0].1.contains("Parquet"), "{failed:?}");
    assert_eq!(progress.objects_read.load(Ordering::Relaxed), 3);
}

#[test]
fn a_missing_directory_or_a_bad_range_fails_the_build_with_its_place() {
    let open = |text: &str| toml::from_str::<ReplaySourceConfig>(text).unwrap().open("history");
    let error = open(r#"url = "file:///nowhere/at/all""#).err().unwrap().to_string();
    assert!(error.contains("stage `history`") && error.contains("/nowhere/at/all"), "{error}");
    let error = open(r#"url = "memory://"
from = "last tuesday""#)
    .err()
    .unwrap()
    .to_string();
    assert!(error.contains("`from` `last tuesday`"), "{error}");
}

#[tokio::test]
async fn a_partition_being_compacted_is_read_once() {
    let dir = tempfile::tempdir().unwrap();
    store(dir.path(), "parquet", 40).await;
    let (target, _, merged) =
        crate::jobs::compact::tests::merge_by_hand(dir.path(), "dt=2026-11-29/hour=10").await;
    let lake = target.store.as_ref();
    // The manifest and the output are stored; the inputs are not deleted yet.
    merged.record(lake).await.unwrap();
    merged.store_output(lake).await.unwrap();
    let (events, progress) = replay("compacting", &format!(
        r#"url = "file://{}""#,
        dir.path().display()
    ))
    .await;
    let mut seqs = seqs(&events);
    seqs.sort_unstable();
    assert_eq!(seqs, (0..40).collect::<Vec<_>>());
    assert_eq!(progress.objects_total.load(Ordering::Relaxed), 1 + 4, "hour 10 as its output");
}
