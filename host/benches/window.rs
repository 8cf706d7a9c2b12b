//! The `window` plugin against the same aggregation in native Rust: a per-key tumbling
//! mean over 10,000 keys.
//!
//! Run: `cargo bench -p sluice --bench window` (after `scripts/build-plugins`). The
//! plugin runs as in a pipeline: batches of 1,000 events through its instance pool, its
//! windows in the stage's durable state (redb on disk, one commit per batch), then the
//! final tick that closes every window. The native baseline parses the same payloads
//! with serde_json and folds them into a `HashMap` in memory. Best of 5 alternating runs
//! of 200,000 events; the cost ratio is native time over plugin time inverted (how many
//! times the native run's time the plugin takes).

use std::collections::HashMap;
use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use sluice::event::Event;
use sluice::runtime::{Grants, InstancePool, Limits, Runtime, RuntimeOptions, StageSpec, World};
use sluice::state::StateStore;

const EVENTS: usize = 200_000;
const KEYS: usize = 10_000;
const BATCH: usize = 1_000;
const RUNS: usize = 5;
/// 2026-11-29T10:42:00Z: two one-minute windows per key.
const T0: i64 = 1_795_948_920_000;

fn payloads() -> Vec<String> {
    (0..EVENTS)
        .map(|n| {
            format!(
                r#"{{"device_id":"k{:05}","seq":{n},"ts":{},"temperature":{}}}"#,
                n % KEYS,
                T0 + (n as i64 * 120_000) / EVENTS as i64,
                20.0 + (n % 70) as f64 * 0.5
            )
        })
        .collect()
}

fn plugin_path() -> PathBuf {
    std::env::var_os("SLUICE_PLUGIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/plugins"))
        .join("window.wasm")
}

/// Where the plugin's state lives: redb on disk (as `sluice run` keeps it, a commit per
/// batch) or redb in memory (what the state API costs without the disk).
#[derive(Clone, Copy)]
enum State {
    Disk,
    Memory,
}

fn through_plugin(runtime: &Runtime, batches: &[Vec<Event>], state: State) -> (Duration, usize) {
    let dir = tempfile::tempdir().unwrap();
    let plugin = runtime
        .load("window", &plugin_path(), None)
        .expect("run scripts/build-plugins first");
    let config = json!({
        "size_ms": 60_000, "key": "device_id", "field": "temperature", "time_field": "ts",
        "watermark": "events", "flush_on_stop": true, "aggregates": ["mean"],
    });
    let limits = Limits {
        outputs_per_call: (2 * KEYS) as u32,
        ..Limits::default()
    };
    let spec = StageSpec {
        stage: Arc::from("window"),
        config: config.to_string(),
        limits,
        grants: Grants::default(),
        state: match state {
            State::Disk => StateStore::open(&dir.path().join("state.redb")).unwrap(),
            State::Memory => StateStore::in_memory(),
        },
        models: Default::default(),
    };
    let pool = InstancePool::new(runtime, plugin, World::Processor, spec, 1).unwrap();
    let started = Instant::now();
    for batch in batches {
        black_box(pool.process(batch).unwrap());
    }
    let (closed, writes) = pool.tick(0, true).unwrap();
    writes.commit().unwrap();
    (started.elapsed(), closed.emitted.len())
}

fn native(payloads: &[String]) -> (Duration, usize) {
    let started = Instant::now();
    let mut windows: HashMap<(String, i64), (u64, f64)> = HashMap::new();
    for payload in payloads {
        let value: serde_json::Value = serde_json::from_str(payload).unwrap();
        let key = value["device_id"].as_str().unwrap().to_owned();
        let start = value["ts"].as_i64().unwrap().div_euclid(60_000) * 60_000;
        let entry = windows.entry((key, start)).or_default();
        entry.0 += 1;
        entry.1 += value["temperature"].as_f64().unwrap();
    }
    let means: Vec<f64> = windows.values().map(|(n, sum)| sum / *n as f64).collect();
    (started.elapsed(), black_box(means).len())
}

fn main() {
    let runtime = Runtime::new(RuntimeOptions::with_default_cache()).unwrap();
    let payloads = payloads();
    let batches: Vec<Vec<Event>> = payloads
        .chunks(BATCH)
        .map(|chunk| {
            chunk
                .iter()
                .map(|p| Event::new(p.clone().into_bytes(), "bench"))
                .collect()
        })
        .collect();
    let (mut plugin_best, mut memory_best, mut native_best) =
        (Duration::MAX, Duration::MAX, Duration::MAX);
    let (mut plugin_windows, mut native_windows) = (0, 0);
    for _ in 0..RUNS {
        let (took, windows) = through_plugin(&runtime, &batches, State::Disk);
        plugin_best = plugin_best.min(took);
        plugin_windows = windows;
        let (took, _) = through_plugin(&runtime, &batches, State::Memory);
        memory_best = memory_best.min(took);
        let (took, windows) = native(&payloads);
        native_best = native_best.min(took);
        native_windows = windows;
    }
    assert_eq!(plugin_windows, native_windows, "both close every window");
    let rate = |took: Duration| EVENTS as f64 / took.as_secs_f64();
    println!(
        "| per-key tumbling mean ({EVENTS} events, {KEYS} keys, {plugin_windows} windows) | events/s |"
    );
    println!("|---|---:|");
    println!(
        "| window plugin (Wasm, durable state, batches of {BATCH}) | {:.0} |",
        rate(plugin_best)
    );
    println!(
        "| window plugin, state in memory | {:.0} |",
        rate(memory_best)
    );
    println!(
        "| native Rust (serde_json + HashMap in memory) | {:.0} |",
        rate(native_best)
    );
    println!(
        "| plugin cost relative to native (disk / memory state) | {:.1}x / {:.1}x |",
        plugin_best.as_secs_f64() / native_best.as_secs_f64(),
        memory_best.as_secs_f64() / native_best.as_secs_f64()
    );
}
