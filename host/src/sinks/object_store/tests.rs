use std::sync::atomic::{AtomicUsize, Ordering};

use arrow_array::RecordBatch;
use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type};
use arrow_schema::DataType;
use futures::StreamExt;
use object_store::ObjectStoreExt;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::*;
use crate::sinks::Sink;

fn sink(text: &str) -> ObjectStoreSink {
    toml::from_str::<ObjectStoreSinkConfig>(text)
        .unwrap()
        .open("lake")
        .unwrap()
}

/// 2026-11-29T10:42:00Z
const AT: i64 = 1_795_948_920_000;

/// A batch of `payloads` whose acknowledgements count into `acked`.
fn batch(payloads: &[&str], acked: &Arc<AtomicUsize>) -> Batch {
    let mut batch = Batch::default();
    for payload in payloads {
        let counter = acked.clone();
        let event = Event {
            timestamp_ms: AT,
            ..Event::new(payload.to_string(), "telemetry")
        };
        batch.push(
            event,
            Ack::new(move || {
                counter.fetch_add(1, Ordering::SeqCst);
            }),
        );
    }
    batch
}

/// Assignments of a partition as the Kafka source names them: both begin at offset 100,
/// the first assigned at 10:42:00, the next a minute later.
const FIRST_OWNER: &str = "100-1795948920000-0000000a";
const NEXT_OWNER: &str = "100-1795948980000-0000000b";

/// Records of partition 0 of `topic` at `offsets`, as the Kafka source makes them
/// under `assignment`.
fn kafka_batch(topic: &str, offsets: std::ops::RangeInclusive<i64>, assignment: &str) -> Batch {
    let mut batch = Batch::default();
    for offset in offsets {
        let mut event = Event::new(format!(r#"{{"n":{offset}}}"#), topic);
        event.timestamp_ms = AT;
        event.headers = vec![
            ("kafka.partition".into(), Bytes::from("0")),
            ("kafka.offset".into(), Bytes::from(offset.to_string())),
            (
                "kafka.assignment".into(),
                Bytes::from(assignment.to_owned()),
            ),
        ];
        batch.push(event, Ack::none());
    }
    batch
}

/// Every object in `store`, by name, with its bytes.
async fn objects(store: &Arc<dyn ObjectStore>) -> BTreeMap<String, Bytes> {
    let listed: Vec<_> = store.list(None).collect().await;
    let mut out = BTreeMap::new();
    for meta in listed {
        let meta = meta.unwrap();
        let data = store
            .get(&meta.location)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        out.insert(meta.location.to_string(), data);
    }
    out
}

/// The rows of a small Parquet object (one row group).
fn table(data: &Bytes) -> RecordBatch {
    let reader = ParquetRecordBatchReaderBuilder::try_new(data.clone())
        .unwrap()
        .build()
        .unwrap();
    let mut batches: Vec<_> = reader.map(Result::unwrap).collect();
    assert_eq!(batches.len(), 1);
    batches.remove(0)
}

#[tokio::test]
async fn parquet_objects_are_partitioned_and_acknowledged_only_once_stored() {
    let mut lake = sink(
        r#"
        url = "memory://"
        partition = "dt={date}/device={device_id}"
        max_events = 3
        schema = [{ name = "device_id", type = "string", required = true }, { name = "t", type = "float64" }]
        "#,
    );
    let store = lake.store.clone();
    let acked = Arc::new(AtomicUsize::new(0));
    let events = [
        r#"{"device_id":"a","t":1.5}"#,
        r#"{"device_id":"a","t":2.5}"#,
        r#"{"device_id":"b","t":9}"#,
        r#"{"device_id":"a","t":3.5}"#,
    ];
    lake.write(batch(&events, &acked)).await.unwrap();
    assert_eq!(
        acked.load(Ordering::SeqCst),
        3,
        "the full object of `a` is stored and acknowledged, nothing else"
    );
    lake.write(batch(&[r#"{"device_id":"a","t":4.5}"#], &acked))
        .await
        .unwrap();
    let stored = objects(&store).await;
    assert_eq!(stored.len(), 1, "{stored:?}");
    let (name, data) = stored.iter().next().unwrap();
    assert!(
        name.starts_with(&format!("dt=2026-11-29/device=a/{AT}-")),
        "{name}"
    );
    assert!(name.ends_with(".parquet"), "{name}");
    let rows = table(data);
    let t = rows
        .column_by_name("t")
        .unwrap()
        .as_primitive::<Float64Type>();
    assert_eq!(t.values().to_vec(), vec![1.5, 2.5, 3.5]);

    Box::new(lake).close().await.unwrap();
    assert_eq!(
        acked.load(Ordering::SeqCst),
        5,
        "closing stores and acknowledges the rest"
    );
    let names: Vec<_> = objects(&store).await.into_keys().collect();
    assert_eq!(names.len(), 3, "{names:?}");
    assert!(
        names
            .iter()
            .any(|n| n.starts_with("dt=2026-11-29/device=b/")),
        "{names:?}"
    );
}

#[tokio::test]
async fn events_outside_the_declared_schema_are_refused_with_the_reason() {
    let mut lake = sink(
        r#"
        url = "memory://"
        reject_unknown_fields = true
        schema = [{ name = "n", type = "int64", required = true }]
        "#,
    );
    let acked = Arc::new(AtomicUsize::new(0));
    let events = [
        r#"{"n":1}"#,
        r#"{"n":"many"}"#,
        r#"{"m":2}"#,
        "not json",
        r#"{"n":2}{"n":3}"#,
        r#"{"n":4,"extra":true}"#,
        r#"{"n":"5"}"#,
    ];
    lake.write(batch(&events, &acked)).await.unwrap();
    let refused = lake.take_rejected();
    let reasons: Vec<(String, String)> = refused
        .iter()
        .map(|d| (d.event.payload_preview(40), d.reason.clone()))
        .collect();
    assert_eq!(refused.len(), 5, "{reasons:#?}");
    let reason_of = |payload: &str| &reasons.iter().find(|(p, _)| p == payload).unwrap().1;
    assert!(
        reason_of(r#"{"n":"many"}"#).contains("many"),
        "{reasons:#?}"
    );
    assert!(reason_of(r#"{"m":2}"#).contains("n"), "{reasons:#?}");
    assert!(
        reason_of(r#"{"n":2}{"n":3}"#).contains("one JSON object"),
        "{reasons:#?}"
    );
    assert!(
        reason_of(r#"{"n":4,"extra":true}"#).contains("extra"),
        "{reasons:#?}"
    );
    // As the dead-letter sink does once it holds them.
    refused
        .into_iter()
        .for_each(|letter| letter.ack.delivered());
    assert_eq!(
        acked.load(Ordering::SeqCst),
        5,
        "dead letters carry their tokens"
    );

    let store = lake.store.clone();
    Box::new(lake).close().await.unwrap();
    let stored = objects(&store).await;
    let rows = table(stored.values().next().unwrap());
    let n = rows.column(0).as_primitive::<Int64Type>();
    assert_eq!(
        n.values().to_vec(),
        vec![1, 5],
        "a number in a string fits an integer column"
    );
    assert_eq!(acked.load(Ordering::SeqCst), 7);
}

/// Rows that pass the schema check wait in the object's decoder across batches, rows
/// that do not are decoded with their group: the object still holds every stored row
/// once, in the order it arrived, and only the culprits are refused.
#[tokio::test]
async fn buffered_and_exactly_checked_rows_keep_their_order_across_batches() {
    let mut lake = sink(
        r#"
        url = "memory://"
        partition = "device={device_id}"
        row_group_rows = 1000000
        schema = [{ name = "device_id", type = "string", required = true }, { name = "n", type = "int64" }]
        "#,
    );
    let store = lake.store.clone();
    let acked = Arc::new(AtomicUsize::new(0));
    let mut expected = Vec::new();
    let mut refused = 0;
    // More rows than one write takes, in batches of 100: every seventh batch also holds
    // a number in a string (which fits, by the exact path) and a value that does not.
    for first in (0..20_000i64).step_by(100) {
        let mut payloads: Vec<String> = (first..first + 100)
            .map(|n| format!(r#"{{"device_id":"a","n":{n}}}"#))
            .collect();
        if first % 700 == 0 {
            payloads.insert(50, format!(r#"{{"device_id":"a","n":"{}"}}"#, -first));
            payloads.insert(20, r#"{"device_id":"a","n":"many"}"#.to_owned());
        }
        for payload in &payloads {
            match serde_json::from_str::<serde_json::Value>(payload).unwrap()["n"].clone() {
                serde_json::Value::Number(n) => expected.push(n.as_i64().unwrap()),
                serde_json::Value::String(text) => match text.parse() {
                    Ok(n) => expected.push(n),
                    Err(_) => refused += 1,
                },
                _ => unreachable!(),
            }
        }
        let payloads: Vec<&str> = payloads.iter().map(String::as_str).collect();
        lake.write(batch(&payloads, &acked)).await.unwrap();
    }
    let letters = lake.take_rejected();
    assert_eq!(letters.len(), refused);
    assert!(letters.iter().all(|letter| letter.reason.contains("many")));
    letters
        .into_iter()
        .for_each(|letter| letter.ack.delivered());
    Box::new(lake).close().await.unwrap();
    assert_eq!(acked.load(Ordering::SeqCst), expected.len() + refused);

    let stored = objects(&store).await;
    assert_eq!(stored.len(), 1, "{:?}", stored.keys());
    let reader = ParquetRecordBatchReaderBuilder::try_new(stored.into_values().next().unwrap())
        .unwrap()
        .build()
        .unwrap();
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch.unwrap();
        rows.extend_from_slice(batch.column(1).as_primitive::<Int64Type>().values());
    }
    assert_eq!(rows, expected);
}

#[tokio::test]
async fn inferred_schemas_promote_numbers_and_fall_back_to_text() {
    let mut lake = sink(r#"url = "memory://""#);
    let acked = Arc::new(AtomicUsize::new(0));
    let events = [
        r#"{"a":1,"b":"x"}"#,
        r#"{"a":2.5,"b":3}"#,
        r#"{"c":true}"#,
        "[1,2]",
    ];
    lake.write(batch(&events, &acked)).await.unwrap();
    assert_eq!(lake.take_rejected().len(), 1, "a JSON array is no row");
    let store = lake.store.clone();
    Box::new(lake).close().await.unwrap();
    let rows = table(objects(&store).await.values().next().unwrap());
    let types: Vec<_> = rows
        .schema()
        .fields()
        .iter()
        .map(|f| (f.name().clone(), f.data_type().clone()))
        .collect();
    assert_eq!(
        types,
        vec![
            ("a".into(), DataType::Float64),
            ("b".into(), DataType::Utf8),
            ("c".into(), DataType::Boolean)
        ]
    );
    let b = rows.column(1).as_string::<i32>();
    assert_eq!(b.value(0), "x");
    assert_eq!(b.value(1), "3");
}

#[tokio::test]
async fn json_lines_can_be_gzipped() {
    let mut lake = sink(
        r#"
        url = "memory://"
        format = "jsonl"
        compression = "gzip"
        partition = ""
        "#,
    );
    let acked = Arc::new(AtomicUsize::new(0));
    lake.write(batch(&[r#"{"a":1}"#, "text"], &acked))
        .await
        .unwrap();
    let store = lake.store.clone();
    Box::new(lake).close().await.unwrap();
    let stored = objects(&store).await;
    let (name, data) = stored.iter().next().unwrap();
    assert!(name.ends_with(".jsonl.gz") && !name.contains('/'), "{name}");
    let mut text = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&data[..]), &mut text).unwrap();
    assert_eq!(text, "{\"a\":1}\n\"text\"\n");
}

/// The offsets (`n`) stored in each object, by name without the directory.
async fn offsets_by_object(store: &Arc<dyn ObjectStore>) -> BTreeMap<String, Vec<i64>> {
    let mut stored = BTreeMap::new();
    for (name, data) in objects(store).await {
        let rows = table(&data);
        let n = rows
            .column_by_name("n")
            .unwrap()
            .as_primitive::<Int64Type>();
        let name = name.rsplit('/').next().unwrap().to_owned();
        stored.insert(name, n.values().to_vec());
    }
    stored
}

fn lake_dir(dir: &tempfile::TempDir, max_events: usize) -> String {
    format!(
        "url = \"file://{}\"\npartition = \"dt={{date}}\"\nmax_events = {max_events}",
        dir.path().display()
    )
}

#[tokio::test]
async fn a_replay_from_kafka_replaces_the_object_stored_before_the_crash() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = sink(&lake_dir(&dir, 100));
    first
        .write(kafka_batch("sensors", 100..=104, FIRST_OWNER))
        .await
        .unwrap();
    Box::new(first).close().await.unwrap();
    // After a crash the source resumes at the committed offset (100) and reads further
    // before the object rolls.
    let mut replay = sink(&lake_dir(&dir, 100));
    replay
        .write(kafka_batch("sensors", 100..=107, NEXT_OWNER))
        .await
        .unwrap();
    let store = replay.store.clone();
    Box::new(replay).close().await.unwrap();
    let stored = offsets_by_object(&store).await;
    assert_eq!(
        stored.into_iter().collect::<Vec<_>>(),
        [(
            format!("sensors-0-00000000000000000100-107-{NEXT_OWNER}.parquet"),
            (100..=107).collect()
        )]
    );
}

#[tokio::test]
async fn a_replay_that_rolls_elsewhere_replaces_the_objects_once_it_holds_them() {
    let dir = tempfile::tempdir().unwrap();
    // Before the crash: objects 100..=104, 105..=109 and 110..=111 stored, the offsets
    // never committed.
    let mut first = sink(&lake_dir(&dir, 5));
    first
        .write(kafka_batch("sensors", 100..=104, FIRST_OWNER))
        .await
        .unwrap();
    first
        .write(kafka_batch("sensors", 105..=109, FIRST_OWNER))
        .await
        .unwrap();
    first
        .write(kafka_batch("sensors", 110..=111, FIRST_OWNER))
        .await
        .unwrap();
    Box::new(first).close().await.unwrap();
    // The replay from 100 takes bigger batches: one object 100..=107, which holds all
    // of the first and part of the second...
    let mut replay = sink(&lake_dir(&dir, 5));
    let store = replay.store.clone();
    replay
        .write(kafka_batch("sensors", 100..=107, NEXT_OWNER))
        .await
        .unwrap();
    let stored = offsets_by_object(&store).await;
    assert_eq!(
        stored.keys().map(|name| &name[..35]).collect::<Vec<_>>(),
        [
            "sensors-0-00000000000000000100-107-",
            "sensors-0-00000000000000000105-109-",
            "sensors-0-00000000000000000110-111-"
        ],
        "105..=109 stays until the replay has stored all of it"
    );
    // ...then 108..=111, and the rest of what was stored before goes.
    replay
        .write(kafka_batch("sensors", 108..=111, NEXT_OWNER))
        .await
        .unwrap();
    Box::new(replay).close().await.unwrap();
    let stored = offsets_by_object(&store).await;
    assert_eq!(
        stored.keys().cloned().collect::<Vec<_>>(),
        [
            format!("sensors-0-00000000000000000100-107-{NEXT_OWNER}.parquet"),
            format!("sensors-0-00000000000000000108-111-{NEXT_OWNER}.parquet"),
        ]
    );
    let offsets: Vec<i64> = stored.into_values().flatten().collect();
    assert_eq!(
        offsets,
        (100..=111).collect::<Vec<_>>(),
        "every offset once"
    );
}

#[tokio::test]
async fn an_old_owners_late_upload_neither_overwrites_nor_deletes_the_new_owners_objects() {
    let dir = tempfile::tempdir().unwrap();
    // The first owner read 100..=104 into an object still open when a rebalance gave
    // the partition to the next owner, which reads from the committed offset (100).
    let mut old_owner = sink(&lake_dir(&dir, 100));
    old_owner
        .write(kafka_batch("sensors", 100..=104, FIRST_OWNER))
        .await
        .unwrap();
    let mut new_owner = sink(&lake_dir(&dir, 4));
    let store = new_owner.store.clone();
    new_owner
        .write(kafka_batch("sensors", 100..=103, NEXT_OWNER))
        .await
        .unwrap();
    new_owner
        .write(kafka_batch("sensors", 104..=107, NEXT_OWNER))
        .await
        .unwrap();
    let new_owners = objects(&store).await;
    assert_eq!(new_owners.len(), 2);
    // The new owner's offsets are committed; then the old owner's object goes up.
    Box::new(old_owner).close().await.unwrap();
    let after = objects(&store).await;
    for (name, data) in &new_owners {
        assert_eq!(
            after.get(name),
            Some(data),
            "{name} is as the new owner stored it"
        );
    }
    let stored = offsets_by_object(&store).await;
    assert_eq!(
        stored.get(&format!(
            "sensors-0-00000000000000000100-104-{FIRST_OWNER}.parquet"
        )),
        Some(&(100..=104).collect()),
        "the late object is a duplicate beside them: {stored:?}"
    );
    let mut offsets: Vec<i64> = stored.into_values().flatten().collect();
    offsets.sort_unstable();
    offsets.dedup();
    assert_eq!(offsets, (100..=107).collect::<Vec<_>>(), "no offset lost");
}

#[tokio::test]
async fn an_object_that_cannot_be_stored_is_never_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    // A file where the partition's directory should be: every upload fails.
    std::fs::write(dir.path().join("dt=2026-11-29"), b"").unwrap();
    let mut lake = sink(&format!(
        "url = \"file://{}\"\npartition = \"dt={{date}}\"\nmax_events = 1",
        dir.path().display()
    ));
    let acked = Arc::new(AtomicUsize::new(0));
    lake.write(batch(&[r#"{"a":1}"#], &acked)).await.unwrap();
    let (returned, _error) = lake
        .write(batch(&[r#"{"a":2}"#], &acked))
        .await
        .expect_err("the failed object is retried first, and holds new batches back");
    assert_eq!(returned.len(), 1);
    // The batch handed back still holds live tokens: settled (as a retry that stores it
    // would), it releases its one event; the stuck object's events stay held.
    returned.delivered();
    assert_eq!(
        acked.load(Ordering::SeqCst),
        1,
        "only the batch handed back was released"
    );
    drop(lake);
    assert_eq!(
        acked.load(Ordering::SeqCst),
        1,
        "stopping with an object not stored fails its events: the source redelivers"
    );
}
