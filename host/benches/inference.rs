//! The anomaly model at batch sizes 1, 32 and 256, four ways, in one run:
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
//! Run: `scripts/build-plugins --rust-only && cargo bench -p sluice --bench inference`.

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

/// Python onnxruntime's best inferences/s per batch size, from the same rows.
fn python(rows: &[f32]) -> Vec<f64> {
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
            session.run(["probabilities"], {"features": batch})
        best = max(best, len(batches) * size / (time.perf_counter() - start))
    rates.append(best)
json.dump(rates, sys.stdout)
"#;
    let request = json!({
        "model": repo("models/anomaly.onnx"), "rows": rows, "sizes": BATCH_SIZES,
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
    let model_path = repo("models/anomaly.onnx");
    let def: ModelDef = toml::from_str(&format!("path = {:?}", model_path.display().to_string()))?;
    let models = Models::load(
        &[("anomaly".to_owned(), def)].into(),
        &InferenceConfig::default(),
        None,
    )?;

    let runtime = Runtime::new(RuntimeOptions::default())?;
    let plugin = runtime.load("anomaly", &repo("target/plugins/anomaly.wasm"), None)?;
    let grants = Grants {
        models: vec!["anomaly".to_owned()],
        ..Grants::default()
    };
    let spec = StageSpec {
        stage: "score".into(),
        config: "{}".to_owned(),
        limits: Limits::default(),
        models: models.grant("score", &grants.models)?,
        grants,
        state: StateStore::in_memory(),
    };
    let pool = InstancePool::new(&runtime, plugin, World::Processor, spec, 1)?;
    let model = models.grant("score", &["anomaly".to_owned()])?["anomaly"].clone();

    // Raw ort, as a Rust program without Sluice would call it (in the process's one
    // ONNX Runtime environment, which ort allows only once).
    let mut session = ort::session::Session::builder(environment(None)?)?
        .with_intra_threads(1)?
        .with_optimization_level(ort::session::builder::GraphOptimizationLevel::All)?
        .commit_from_file(&model_path)?;

    let all = readings(ROWS_PER_RUN);
    let rows = features(&all);
    let events: Vec<Event> = all
        .iter()
        .map(|r| Event::new(r.to_string().into_bytes(), "bench"))
        .collect();
    let python = python(&rows);

    println!(
        "| batch | pipeline inf/s | host run inf/s | raw ort inf/s | python inf/s | pipeline/raw | host run/raw | python/raw |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
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
            let (_, p) = outputs["probabilities"]
                .try_extract_tensor::<f32>()
                .unwrap();
            assert_eq!(p.len(), size * 2);
        });
        println!(
            "| {size} | {pipeline:.0} | {host:.0} | {raw:.0} | {:.0} | {:.0}% | {:.0}% | {:.0}% |",
            python[i],
            100.0 * pipeline / raw,
            100.0 * host / raw,
            100.0 * python[i] / raw
        );
    }
    Ok(())
}
