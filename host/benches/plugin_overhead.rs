//! Wasm plugin cost against the same Rust code compiled natively, in one process.
//!
//! Run: `scripts/build-plugins && cargo bench -p sluice --bench plugin_overhead`.
//! Prints a table: events/s of the `forward` fixture (the boundary alone) and of the
//! `filter` and `map` plugins as Wasm (through the full runtime path: encode, call,
//! decode) and natively (SDK types, no runtime), per batch size, and their ratio; then
//! the cost of an empty call and of a new instance.
//! `cargo bench -p sluice --bench plugin_overhead -- sdk-cost` prints only the cost of
//! the Python, JavaScript and C SDKs: each `units-router-LANG` against the same plugin
//! written on the raw batch layout (`tests/fixtures/lang/units-router-raw-LANG`).

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use sluice::event::Event;
use sluice::runtime::{Grants, InstancePool, Limits, Runtime, RuntimeOptions, StageSpec, World};
use sluice::state::StateStore;
use sluice_sdk::{Batch, NewEvent, Output, Processor};

const BATCH_SIZES: [usize; 4] = [1, 10, 100, 1000];
const EVENTS_PER_RUN: usize = 20_000;
const RUNS: usize = 7;

/// ~200-byte telemetry readings, a few of them hot.
fn telemetry(count: usize) -> Vec<String> {
    (0..count)
        .map(|n| {
            json!({
                "device_id": format!("sensor-{:03}", n % 50),
                "seq": n,
                "ts": 1_764_374_400_000i64 + n as i64,
                "temperature": if n % 17 == 0 { 91.5 } else { 20.0 + (n % 7) as f64 * 0.5 },
                "vibration": 0.5 + (n % 5) as f64 * 0.1,
                "battery": 80.0 - (n % 30) as f64 * 0.5,
                "site": if n % 2 == 0 { "north" } else { "south" },
                "firmware": "2.4.1-stable",
            })
            .to_string()
        })
        .collect()
}

/// Events/s of `run_batch` over `EVENTS_PER_RUN` events in batches of `size`.
fn rate(size: usize, run_batch: &mut dyn FnMut(usize)) -> f64 {
    let batches = (EVENTS_PER_RUN / size).max(1);
    let start = Instant::now();
    for n in 0..batches {
        run_batch(n);
    }
    (batches * size) as f64 / start.elapsed().as_secs_f64()
}

/// Best events/s of `a` and `b` over `RUNS` alternating runs each. Alternating exposes
/// both to the same background load; the best run is the least disturbed one.
fn best_rates(size: usize, a: &mut dyn FnMut(usize), b: &mut dyn FnMut(usize)) -> (f64, f64) {
    rate(size, a);
    rate(size, b);
    (0..RUNS).fold((0.0, 0.0), |(best_a, best_b), _| {
        (
            f64::max(best_a, rate(size, a)),
            f64::max(best_b, rate(size, b)),
        )
    })
}

fn median_duration(iterations: usize, mut f: impl FnMut()) -> Duration {
    let mut samples: Vec<Duration> = (0..RUNS)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..iterations {
                f();
            }
            start.elapsed() / iterations as u32
        })
        .collect();
    samples.sort();
    samples[RUNS / 2]
}

fn plugin_path(name: &str) -> PathBuf {
    std::env::var_os("SLUICE_PLUGIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/plugins"))
        .join(format!("{name}.wasm"))
}

fn spec(stage: &str, config: &serde_json::Value) -> StageSpec {
    StageSpec {
        stage: Arc::from(stage),
        config: config.to_string(),
        limits: Limits::default(),
        grants: Grants::default(),
        state: StateStore::in_memory(),
        models: Default::default(),
    }
}

struct Case {
    name: &'static str,
    /// The component's file name in the plugin directory.
    file: &'static str,
    config: serde_json::Value,
}

/// The plugin's own Rust code run natively on SDK batches: the baseline.
fn native<'a, P: Processor>(
    config: &serde_json::Value,
    inputs: &'a [Vec<NewEvent>],
) -> Box<dyn FnMut(usize) + 'a> {
    let mut plugin = P::new(serde_json::from_value(config.clone()).unwrap()).unwrap();
    Box::new(move |n| {
        let batch = Batch::from_events(&inputs[n % inputs.len()]);
        let mut out = Output::new();
        plugin.process_batch(&batch, &mut out).unwrap();
        black_box(out);
    })
}

fn main() {
    let runtime = Runtime::new(RuntimeOptions::with_default_cache()).unwrap();
    let payloads = telemetry(EVENTS_PER_RUN);
    if std::env::args().any(|arg| arg == "sdk-cost") {
        sdk_cost(&runtime, &payloads);
        return;
    }
    let cases = [
        // The boundary alone: every event in and out, no work.
        Case {
            name: "forward",
            file: "fixture-forward",
            config: json!(null),
        },
        Case {
            name: "filter",
            file: "filter",
            config: json!({"when": {"field": "temperature", "gt": 80}}),
        },
        Case {
            name: "map",
            file: "map",
            config: json!({
                "rename": {"temperature": "temperature_c"},
                "set": {"pipeline": "bench"},
                "convert": {"temperature_c": "celsius_to_fahrenheit"},
                "drop": ["firmware"]
            }),
        },
    ];
    println!("| plugin | batch | wasm events/s | native events/s | wasm/native cost |");
    println!("|---|---:|---:|---:|---:|");
    for case in &cases {
        let plugin = runtime
            .load(case.name, &plugin_path(case.file), None)
            .expect("run scripts/build-plugins first");
        let pool = InstancePool::new(
            &runtime,
            plugin,
            World::Processor,
            spec(case.name, &case.config),
            1,
        )
        .unwrap();
        for size in BATCH_SIZES {
            let host_batches: Vec<Vec<Event>> = payloads
                .chunks(size)
                .map(|chunk| {
                    chunk
                        .iter()
                        .map(|p| Event::new(p.clone().into_bytes(), "bench"))
                        .collect()
                })
                .collect();
            let sdk_batches: Vec<Vec<NewEvent>> = payloads
                .chunks(size)
                .map(|chunk| {
                    chunk
                        .iter()
                        .map(|p| NewEvent {
                            payload: p.clone().into_bytes(),
                            origin: "bench".into(),
                            ..NewEvent::default()
                        })
                        .collect()
                })
                .collect();
            let mut wasm = |n: usize| {
                black_box(pool.process(&host_batches[n % host_batches.len()]).unwrap());
            };
            let mut native = match case.name {
                "forward" => native::<sluice_fixture_forward::Forward>(&case.config, &sdk_batches),
                "filter" => native::<sluice_plugin_filter::Filter>(&case.config, &sdk_batches),
                _ => native::<sluice_plugin_map::Map>(&case.config, &sdk_batches),
            };
            let (wasm, native) = best_rates(size, &mut wasm, &mut *native);
            println!(
                "| {} | {size} | {wasm:.0} | {native:.0} | {:.2}x |",
                case.name,
                native / wasm
            );
        }
    }

    let plugin = runtime
        .load("filter", &plugin_path("filter"), None)
        .unwrap();
    // One spec for every pool: building a state store is not what this measures.
    let filter = cases.iter().find(|case| case.name == "filter").unwrap();
    let filter_spec = spec("filter", &filter.config);
    let new_pool = || {
        InstancePool::new(
            &runtime,
            plugin.clone(),
            World::Processor,
            filter_spec.clone(),
            1,
        )
    };
    let pool = new_pool().unwrap();
    let empty = median_duration(20_000, || {
        black_box(pool.process(&[]).unwrap());
    });
    let instantiate = median_duration(200, || {
        black_box(new_pool().unwrap());
    });
    languages(&runtime, &payloads);
    println!();
    println!("| measure | time |");
    println!("|---|---:|");
    println!(
        "| empty batch call (checkout, encode, call, decode, checkin) | {:.2} µs |",
        empty.as_secs_f64() * 1e6
    );
    println!(
        "| new instance (a pool of one: InstancePre, instantiate, init) | {:.1} µs |",
        instantiate.as_secs_f64() * 1e6
    );
}

/// The same plugin (units-router) in each language, through the same runtime path.
fn languages(runtime: &Runtime, payloads: &[String]) {
    println!();
    println!("| language | batch | events/s | cost relative to Rust |");
    println!("|---|---:|---:|---:|");
    let config = json!({"threshold_f": 176.0});
    for size in [100, 1000] {
        let batches: Vec<Vec<Event>> = payloads
            .chunks(size)
            .map(|chunk| {
                chunk
                    .iter()
                    .map(|p| Event::new(p.clone().into_bytes(), "bench"))
                    .collect()
            })
            .collect();
        let mut rust_rate = 0.0;
        for language in ["rust", "c", "python", "js"] {
            let name = if language == "rust" {
                "units-router".to_owned()
            } else {
                format!("units-router-{language}")
            };
            let plugin = runtime
                .load(&name, &plugin_path(&name), None)
                .expect("run scripts/build-plugins first");
            let pool =
                InstancePool::new(runtime, plugin, World::Processor, spec(&name, &config), 1)
                    .unwrap();
            // Interpreters are slow: fewer batches keep the run short.
            let batches_per_run = if matches!(language, "python" | "js") {
                (2_000 / size).max(1)
            } else {
                batches.len()
            };
            let mut best = 0f64;
            for _ in 0..3 {
                let start = Instant::now();
                for batch in batches.iter().take(batches_per_run) {
                    black_box(pool.process(batch).unwrap());
                }
                best = best.max((batches_per_run * size) as f64 / start.elapsed().as_secs_f64());
            }
            if language == "rust" {
                rust_rate = best;
            }
            println!(
                "| {language} | {size} | {best:.0} | {:.1}x |",
                rust_rate / best
            );
        }
    }
}

/// Each SDK-built units-router against its raw-layout twin, alternating runs.
fn sdk_cost(runtime: &Runtime, payloads: &[String]) {
    println!("| language | batch | SDK events/s | raw events/s | SDK cost |");
    println!("|---|---:|---:|---:|---:|");
    let config = json!({"threshold_f": 176.0});
    let pool = |name: &str| {
        let plugin = runtime
            .load(name, &plugin_path(name), None)
            .expect("run scripts/build-plugins first");
        // The JavaScript engine's heap passes the default 64 MiB over a long run, with or
        // without the SDK (its garbage collector grows memory before it collects).
        let mut spec = spec(name, &config);
        spec.limits.memory_bytes = 512 << 20;
        InstancePool::new(runtime, plugin, World::Processor, spec, 1).unwrap()
    };
    for size in [100, 1000] {
        let batches: Vec<Vec<Event>> = payloads
            .chunks(size)
            .map(|chunk| {
                chunk
                    .iter()
                    .map(|p| Event::new(p.clone().into_bytes(), "bench"))
                    .collect()
            })
            .collect();
        for language in ["c", "python", "js"] {
            let sdk = pool(&format!("units-router-{language}"));
            let raw = pool(&format!("fixture-units-router-raw-{language}"));
            let (sdk_rate, raw_rate) = best_rates(
                size,
                &mut |n| {
                    black_box(sdk.process(&batches[n % batches.len()]).unwrap());
                },
                &mut |n| {
                    black_box(raw.process(&batches[n % batches.len()]).unwrap());
                },
            );
            println!(
                "| {language} | {size} | {sdk_rate:.0} | {raw_rate:.0} | {:+.1}% |",
                (raw_rate / sdk_rate - 1.0) * 100.0
            );
        }
    }
}
