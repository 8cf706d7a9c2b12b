//! Events → Parquet through the `object_store` sink against the same rows written
//! straight with arrow-rs (arrow-json's decoder into `ArrowWriter`, one file): the
//! limit for turning JSON events into Parquet on this machine.
//!
//! Run: `cargo bench -p sluice --bench object_store_parquet`. Both write zstd Parquet
//! under the same declared schema into a temporary directory; the sink goes through
//! its whole path (partitioning by hour and device, batches of 500, acknowledgement
//! tokens, local-filesystem object store). Best of 5 alternating runs of 200,000 events.
//! The sink is driven twice: from the thread that blocks on the runtime, and from a task
//! on one of the runtime's workers, which is where a pipeline runs it (encoding on the
//! calling thread then hands the worker's other tasks to another thread).

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_json::ReaderBuilder;
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use sluice::event::Event;
use sluice::pipeline::{Ack, Batch};
use sluice::sinks::Sink;
use sluice::sinks::object_store::ObjectStoreSinkConfig;

const EVENTS: usize = 200_000;
const BATCH: usize = 500;
const RUNS: usize = 5;

/// ~150-byte telemetry readings over 16 devices and about an hour.
fn telemetry() -> Vec<Event> {
    (0..EVENTS)
        .map(|n| {
            let payload = format!(
                r#"{{"device_id":"sensor-{:02}","seq":{n},"ts":{},"temperature":{},"battery":{},"site":"{}"}}"#,
                n % 16,
                1_795_948_920_000i64 + n as i64 * 20,
                20.0 + (n % 70) as f64 * 0.5,
                80.0 - (n % 30) as f64 * 0.5,
                if n % 2 == 0 { "north" } else { "south" },
            );
            Event::new(payload, "bench")
        })
        .collect()
}

const SCHEMA: &str = r#"schema = [
  { name = "device_id", type = "string", required = true },
  { name = "seq", type = "int64" },
  { name = "ts", type = "timestamp_ms" },
  { name = "temperature", type = "float64" },
  { name = "battery", type = "float64" },
  { name = "site", type = "string" },
]"#;

fn arrow_schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("device_id", DataType::Utf8, false),
        Field::new("seq", DataType::Int64, true),
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Millisecond, Some("+00:00".into())),
            true,
        ),
        Field::new("temperature", DataType::Float64, true),
        Field::new("battery", DataType::Float64, true),
        Field::new("site", DataType::Utf8, true),
    ]))
}

/// Bytes of Parquet under `dir`.
fn stored_bytes(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        total += if entry.file_type().unwrap().is_dir() {
            stored_bytes(&entry.path())
        } else {
            entry.metadata().unwrap().len()
        };
    }
    total
}

/// Where the sink's writes are driven from.
#[derive(Clone, Copy)]
enum Driver {
    /// The thread blocking on the runtime.
    BlockOn,
    /// A task spawned on the runtime's workers, as a pipeline runs its sinks.
    Worker,
}

fn through_sluice(
    runtime: &tokio::runtime::Runtime,
    events: &Arc<Vec<Event>>,
    driver: Driver,
) -> (Duration, u64) {
    let dir = tempfile::tempdir().unwrap();
    let config: ObjectStoreSinkConfig = toml::from_str(&format!(
        "url = \"file://{}\"\npartition = \"hour={{hour}}/device={{device_id}}\"\ntime_field = \"ts\"\n\
         max_events = 1000000\nmax_age_secs = 3600\n{SCHEMA}",
        dir.path().display()
    ))
    .unwrap();
    let mut sink = config.open("bench").unwrap();
    let events = events.clone();
    let started = Instant::now();
    let write_all = async move {
        for chunk in events.chunks(BATCH) {
            let mut batch = Batch::with_capacity(chunk.len());
            for event in chunk {
                batch.push(event.clone(), Ack::new(|| {}));
            }
            if sink.write(batch).await.is_err() {
                panic!("write failed");
            }
        }
        Box::new(sink).close().await.unwrap();
    };
    match driver {
        Driver::BlockOn => runtime.block_on(write_all),
        Driver::Worker => runtime.block_on(runtime.spawn(write_all)).unwrap(),
    }
    (started.elapsed(), stored_bytes(dir.path()))
}

fn direct(events: &[Event]) -> (Duration, u64) {
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let schema = arrow_schema();
    let file = std::fs::File::create(dir.path().join("direct.parquet")).unwrap();
    let properties = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_max_row_group_row_count(Some(128 * 1024))
        .build();
    let mut writer = ArrowWriter::try_new(file, schema.clone(), Some(properties)).unwrap();
    let mut decoder = ReaderBuilder::new(schema)
        .with_batch_size(BATCH)
        .build_decoder()
        .unwrap();
    for chunk in events.chunks(BATCH) {
        for event in chunk {
            decoder.decode(&event.payload).unwrap();
        }
        if let Some(batch) = decoder.flush().unwrap() {
            writer.write(&batch).unwrap();
        }
    }
    writer.close().unwrap();
    (started.elapsed(), stored_bytes(dir.path()))
}

/// The same 32 partitions as the sink, written straight with arrow-rs: each payload's
/// `device_id` and `ts` read with a borrowing serde struct, one decoder and one writer
/// per partition. What a hand-written partitioned writer costs: the fair limit.
fn direct_partitioned(events: &[Event]) -> (Duration, u64) {
    #[derive(serde::Deserialize)]
    struct Key<'a> {
        device_id: &'a str,
        ts: i64,
    }
    struct Partition {
        decoder: arrow_json::reader::Decoder,
        writer: ArrowWriter<std::fs::File>,
    }
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let schema = arrow_schema();
    let properties = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_max_row_group_row_count(Some(128 * 1024))
        .build();
    let mut partitions: std::collections::HashMap<(i64, String), Partition> = Default::default();
    for event in events {
        let key: Key = serde_json::from_slice(&event.payload).unwrap();
        let hour = key.ts.div_euclid(3_600_000);
        let partition = partitions
            .entry((hour, key.device_id.to_owned()))
            .or_insert_with(|| {
                let path = dir
                    .path()
                    .join(format!("hour={hour}/device={}", key.device_id));
                std::fs::create_dir_all(&path).unwrap();
                let file = std::fs::File::create(path.join("part.parquet")).unwrap();
                Partition {
                    decoder: ReaderBuilder::new(schema.clone())
                        .with_batch_size(8192)
                        .build_decoder()
                        .unwrap(),
                    writer: ArrowWriter::try_new(file, schema.clone(), Some(properties.clone()))
                        .unwrap(),
                }
            });
        partition.decoder.decode(&event.payload).unwrap();
        if partition.decoder.len() >= 8192
            && let Some(batch) = partition.decoder.flush().unwrap()
        {
            partition.writer.write(&batch).unwrap();
        }
    }
    for (_, mut partition) in partitions {
        if let Some(batch) = partition.decoder.flush().unwrap() {
            partition.writer.write(&batch).unwrap();
        }
        partition.writer.close().unwrap();
    }
    (started.elapsed(), stored_bytes(dir.path()))
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let events = Arc::new(telemetry());
    let input_bytes: usize = events.iter().map(|e| e.payload.len()).sum();
    let (mut sluice_best, mut worker_best, mut direct_best, mut partitioned_best) =
        (Duration::MAX, Duration::MAX, Duration::MAX, Duration::MAX);
    let (mut sluice_bytes, mut worker_bytes, mut direct_bytes, mut partitioned_bytes) =
        (0, 0, 0, 0);
    for _ in 0..RUNS {
        let (took, bytes) = direct_partitioned(&events);
        partitioned_best = partitioned_best.min(took);
        partitioned_bytes = bytes;
        let (took, bytes) = through_sluice(&runtime, &events, Driver::BlockOn);
        sluice_best = sluice_best.min(took);
        sluice_bytes = bytes;
        let (took, bytes) = through_sluice(&runtime, &events, Driver::Worker);
        worker_best = worker_best.min(took);
        worker_bytes = bytes;
        let (took, bytes) = direct(&events);
        direct_best = direct_best.min(took);
        direct_bytes = bytes;
    }
    let row = |name: &str, took: Duration, bytes: u64| {
        let seconds = took.as_secs_f64();
        println!(
            "| {name} | {:.0} | {:.1} | {} |",
            EVENTS as f64 / seconds,
            input_bytes as f64 / seconds / 1e6,
            bytes
        );
    };
    println!(
        "| writer ({EVENTS} events, {input_bytes} JSON bytes) | events/s | input MB/s | Parquet bytes |"
    );
    println!("|---|---:|---:|---:|");
    row(
        "sluice object_store sink (16 devices x 2 hours = 32 objects)",
        sluice_best,
        sluice_bytes,
    );
    row(
        "the same sink, driven from a runtime worker (as in a pipeline)",
        worker_best,
        worker_bytes,
    );
    row("arrow-rs directly (one file)", direct_best, direct_bytes);
    row(
        "arrow-rs directly, the same 32 partitions",
        partitioned_best,
        partitioned_bytes,
    );
    let relative = |name: &str, took: Duration| {
        println!(
            "| {name} relative to direct (one file / same partitions) | {:.0}% / {:.0}% | | |",
            direct_best.as_secs_f64() / took.as_secs_f64() * 100.0,
            partitioned_best.as_secs_f64() / took.as_secs_f64() * 100.0
        );
    };
    relative("sluice", sluice_best);
    relative("sluice on a worker", worker_best);
}
