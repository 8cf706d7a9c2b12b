//! Two models at batch sizes 1, 32 and 256, four ways each, in one run. The models:
//! `anomaly` (a 20-tree RandomForest, well under a microsecond a row: the pipeline's own
//! cost shows) and `isolation_forest` (50 trees of an IsolationForest, tens of
//! microseconds a row: the model's cost dominates, as a real model's does). The ways:
//!
//! - *pipeline*: the `anomaly` Wasm plugin scoring JSON events through the full stage
//!   path (encode the batch, call the plugin, which parses the features, builds the
//!   tensor and calls the host's `inference` import, which runs ort; then the plugin
//!   writes score and label into each payload and the host decodes the output);
//! - *host run*: the host's `Model::run` on a prepared tensor (checks, byte conversion,
//!   a pooled session) — what the import costs without the plugin;
//! - *raw ort*: an ort `Session::run` from Rust on a prepared tensor: the limit;
//! - *python*: onnxruntime's `InferenceSession.run` on a prepared numpy array.
//!
//! Every session runs with one intra-op thread and full graph optimisation.
//! Run: `scripts/build-plugins --rust-only && cargo bench -p sluice --bench inference`
//! (`-- anomaly` or `-- isolation_forest` for one model's rows; `models/isolation_forest.onnx`
//! is made by `python3 models/train_isolation_forest.py`).

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use serde_json::{Value, json};
use sluice::event::Event;
use sluice::inference::{InferenceConfig, ModelDef, Models, Tensor, environment};
use sluice::runtime::{Grants, InstancePool, Limits, Runtime, RuntimeOptions, StageSpec, World};
use sluice::state::StateStore;

const BATCH_SIZES: [usize; 3] = [1, 32, 256];
const ROWS_PER_RUN: usize = 20_000;
const RUNS: usize = 5;

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path)
}

/// Readings like sensor-sim's, one in twenty anomalous.
fn readings(count: usize) -> Vec<Value> {
    (0..count)
        .map(|n| {
            let hot = n % 20 == 0;
            json!({
                "device_id": format!("sensor-{:03}", n % 50),
                "seq": n,
                "ts": 1_764_374_400_000i64 + n as i64,
                "temperature": if hot { 95.5 } else { 20.0 + (n % 7) as f64 * 0.3 },
                "vibration": if hot { 11.0 } else { 0.5 + (n % 5) as f64 * 0.3 },
                "battery": 80.0 - (n % 30) as f64 * 0.5,
            })
        })
        .collect()
}

fn features(readings: &[Value]) -> Vec<f32> {
    readings
        .iter()
        .flat_map(|r| {
            ["temperature", "vibration", "battery"].map(|f| r[f].as_f64().unwrap() as f32)
        })
        .collect()
}

/// Best inferences/s over `RUNS` runs of `ROWS_PER_RUN` rows in batches of `size`.
fn best_rate(size: usize, mut run_batch: impl FnMut(usize)) -> f64 {
    let batches = ROWS_PER_RUN / size;
    run_batch(0);
    (0..RUNS)
        .map(|_| {
            let start = Instant::now();
            for n in 0..batches {
                run_batch(n);
            }
            (batches * size) as f64 / start.elapsed().as_secs_f64()
        })
        .fold(0.0, f64::max)
}

/// One model the bench scores with, and how the `anomaly` plugin is told to read it.
struct Scored {
    name: &'static str,
    /// The output the plugin takes its score from, and its columns.
    output: &'static str,
    columns: usize,
    plugin_config: &'static str,
}

const MODELS: [Scored; 2] = [
    Scored {
        name: "anomaly",
        output: "probabilities",
        columns: 2,
        plugin_config: "{}",
    },
    Scored {
        name: "isolation_forest",
        output: "outlier_score",
        columns: 1,
        plugin_config: r#"{"model": "isolation_forest", "output": "outlier_score", "class": 0, "threshold": 0.0}"#,
    },
];

/// Python onnxruntime's best inferences/s per batch size, from the same rows.
fn python(scored: &Scored, rows: &[f32]) -> Vec<f64> {
    let script = r#"
import json, sys, time
import numpy as np, onnxruntime as ort
request = json.load(sys.stdin)
options = ort.SessionOptions()
options.intra_op_num_threads = 1
options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
session = ort.InferenceSession(request["model"], options, providers=["CPUExecutionProvider"])
x = np.array(request["rows"], dtype=np.float32).reshape(-1, 3)
rates = []
for size in request["sizes"]:
    batches = [x[i * size:(i + 1) * size] for i in range(request["per_run"] // size)]
    best = 0.0
    for _ in range(request["runs"] + 1):
        start = time.perf_counter()
        for batch in batches:
            session.run([request["output"]], {"features": batch})
        best = max(best, len(batches) * size / (time.perf_counter() - start))
    rates.append(best)
json.dump(rates, sys.stdout)
"#;
    let request = json!({
        "model": repo(&format!("models/{}.onnx", scored.name)), "output": scored.output,
        "rows": rows, "sizes": BATCH_SIZES,
        "per_run": ROWS_PER_RUN, "runs": RUNS,
    });
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 with onnxruntime");
    std::io::Write::write_all(
        &mut child.stdin.take().unwrap(),
        request.to_string().as_bytes(),
    )
    .unwrap();
    let output = child.wait_with_output().unwrap();
    serde_json::from_slice(&output.stdout).expect("python's rates")
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let defs = MODELS
        .iter()
        .map(|scored| {
            let path = repo(&format!("models/{}.onnx", scored.name));
            let def: ModelDef =
                toml::from_str(&format!("path = {:?}", path.display().to_string()))?;
            Ok((scored.name.to_owned(), def))
        })
        .collect::<Result<_, Box<dyn std::error::Error>>>()?;
    let models = Models::load(&defs, &InferenceConfig::default(), None)?;
    let runtime = Runtime::new(RuntimeOptions::default())?;
    let all = readings(ROWS_PER_RUN);
    let rows = features(&all);
    let events: Vec<Event> = all
        .iter()
        .map(|r| Event::new(r.to_string().into_bytes(), "bench"))
        .collect();

    println!(
        "| model | batch | pipeline inf/s | host run inf/s | raw ort inf/s | python inf/s | pipeline/raw | host run/raw | python/raw |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for scored in MODELS.iter().filter(|scored| chosen(scored.name)) {
        bench(scored, &runtime, &models, &events, &rows)?;
    }
    Ok(())
}

/// Whether the command line asks for model `name`: the models named after `--` (say
/// `cargo bench --bench inference -- anomaly`, for a profile of one), or all of them.
fn chosen(name: &str) -> bool {
    let named: Vec<String> = std::env::args()
        .skip(1)
        .filter(|arg| !arg.starts_with("--"))
        .collect();
    named.is_empty() || named.iter().any(|arg| arg == name)
}

/// One model's rows of the table.
fn bench(
    scored: &Scored,
    runtime: &Runtime,
    models: &Models,
    events: &[Event],
    rows: &[f32],
) -> Result<(), Box<dyn std::error::Error>> {
    let plugin = runtime.load("anomaly", &repo("target/plugins/anomaly.wasm"), None)?;
    let grants = Grants {
        models: vec![scored.name.to_owned()],
        ..Grants::default()
    };
    let spec = StageSpec {
        stage: "score".into(),
        config: scored.plugin_config.to_owned(),
        limits: Limits::default(),
        models: models.grant("score", &grants.models)?,
        grants,
        state: StateStore::in_memory(),
    };
    let pool = InstancePool::new(runtime, plugin, World::Processor, spec, 1)?;
    let model = models.grant("score", &[scored.name.to_owned()])?[scored.name].current();

    // Raw ort, as a Rust program without Sluice would call it (in the process's one
    // ONNX Runtime environment, which ort allows only once).
    let mut session = ort::session::Session::builder(environment(None)?)?
        .with_intra_threads(1)?
        .with_optimization_level(ort::session::builder::GraphOptimizationLevel::All)?
        .commit_from_file(repo(&format!("models/{}.onnx", scored.name)))?;
    let python = python(scored, rows);

    for (i, size) in BATCH_SIZES.into_iter().enumerate() {
        let slice = |n: usize| n * size..(n + 1) * size;
        let pipeline = best_rate(size, |n| {
            let processed = pool.process(&events[slice(n)]).unwrap();
            assert_eq!(processed.emitted.len(), size);
        });
        let host = best_rate(size, |n| {
            let range = slice(n);
            let tensor = Tensor::f32(
                "features",
                &[size as u32, 3],
                &rows[range.start * 3..range.end * 3],
            );
            model.run(&[tensor]).unwrap();
        });
        let raw = best_rate(size, |n| {
            let range = slice(n);
            let values = rows[range.start * 3..range.end * 3].to_vec();
            let input = ort::value::Tensor::from_array(([size, 3], values)).unwrap();
            let outputs = session.run(ort::inputs!["features" => input]).unwrap();
            let (_, scores) = outputs[scored.output].try_extract_tensor::<f32>().unwrap();
            assert_eq!(scores.len(), size * scored.columns);
        });
        println!(
            "| {} | {size} | {pipeline:.0} | {host:.0} | {raw:.0} | {:.0} | {:.0}% | {:.0}% | {:.0}% |",
            scored.name,
            python[i],
            100.0 * pipeline / raw,
            100.0 * host / raw,
            100.0 * python[i] / raw
        );
    }
    Ok(())
}
