//! The `model` job with real ONNX Runtime: a new version reaches the running stages
//! between batches (no event scored twice, none lost, one version per batch), a file
//! that does not fit the declaration or its pin is refused while the served version
//! keeps serving, and the deployed version outlives a restart until an earlier one is
//! activated again.
//!
//! The second model is made here with the `onnx` Python package (models/requirements.txt):
//! it scores every reading 0.75, which the anomaly model never does, so each output says
//! which version scored it. Each test uses its own model name: slots are per process.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use common::{plugin_path, runtime, spec};
use serde_json::{Value, json};
use sluice::event::Event;
use sluice::inference::{self, InferenceConfig, ModelDef, Models};
use sluice::jobs::model::ModelJob;
use sluice::jobs::{JobError, JobKind, Produced, RunContext, RunLog, Slot};
use sluice::runtime::{InstancePool, World};
use tokio_util::sync::CancellationToken;

/// The score the constant model gives every reading.
const CONSTANT: f64 = 0.75;

/// An ONNX model taking `features` f32 [N, columns] that scores every row `p_anomaly`,
/// with the anomaly model's outputs (`label`, `probabilities`).
fn constant_model(path: &Path, columns: usize, p_anomaly: f32) {
    let script = r#"
import sys
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
out, columns, p = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
weights = numpy_helper.from_array(np.zeros((columns, 2), np.float32), "w")
bias = numpy_helper.from_array(np.array([1 - p, p], np.float32), "b")
graph = helper.make_graph(
    [
        helper.make_node("MatMul", ["features", "w"], ["z"]),
        helper.make_node("Add", ["z", "b"], ["probabilities"]),
        helper.make_node("ArgMax", ["probabilities"], ["label"], axis=1, keepdims=0),
    ],
    "constant",
    [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", columns])],
    [
        helper.make_tensor_value_info("label", TensorProto.INT64, ["N"]),
        helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 2]),
    ],
    [weights, bias],
)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
model.ir_version = 8
onnx.checker.check_model(model)
onnx.save(model, out)
"#;
    let status = Command::new("python3")
        .args(["-c", script])
        .arg(path)
        .arg(columns.to_string())
        .arg(p_anomaly.to_string())
        .status()
        .expect("python3 with onnx (scripts/setup installs models/requirements.txt)");
    assert!(status.success(), "making {} failed", path.display());
}

fn sha256(path: &Path) -> String {
    use sha2::Digest as _;
    format!("{:x}", sha2::Sha256::digest(std::fs::read(path).unwrap()))
}

/// A config directory with the anomaly model as `[models.NAME]`'s file, a data
/// directory, and the constant model (`next.onnx`) and one with four features
/// (`wide.onnx`) to deploy.
struct Host {
    dir: tempfile::TempDir,
    name: &'static str,
}

impl Host {
    fn new(name: &'static str) -> Host {
        let dir = tempfile::tempdir().unwrap();
        let anomaly = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/anomaly.onnx");
        std::fs::copy(anomaly, dir.path().join("anomaly.onnx")).unwrap();
        constant_model(&dir.path().join("next.onnx"), 3, CONSTANT as f32);
        constant_model(&dir.path().join("wide.onnx"), 4, CONSTANT as f32);
        Host { dir, name }
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    fn data_dir(&self) -> PathBuf {
        self.path("data")
    }

    fn def(&self, file: &str) -> ModelDef {
        toml::from_str(&format!(
            r#"
            path = "{}"
            inputs = [{{ name = "features", type = "f32", shape = [-1, 3] }}]
            outputs = [{{ name = "label", type = "i64", shape = [-1] }},
                       {{ name = "probabilities", type = "f32", shape = [-1, 2] }}]
            "#,
            self.path(file).display()
        ))
        .unwrap()
    }

    /// The pipeline's models, as a start loads them, with `file` as the config's.
    fn load(&self, file: &str) -> Models {
        let defs = BTreeMap::from([(self.name.to_owned(), self.def(file))]);
        Models::load(&defs, &InferenceConfig::default(), Some(&self.data_dir())).unwrap()
    }

    /// A stage running the anomaly plugin on the model.
    fn stage(&self, models: &Models) -> InstancePool {
        let mut spec = spec("score", json!({"model": self.name}));
        spec.grants.models = vec![self.name.to_owned()];
        spec.models = models.grant("score", &spec.grants.models).unwrap();
        let runtime = runtime();
        let plugin = runtime
            .load("anomaly", &plugin_path("anomaly"), None)
            .unwrap();
        InstancePool::new(&runtime, plugin, World::Processor, spec, 1).unwrap()
    }

    /// Run the `model` job with `table` (its keys besides `type`).
    async fn deploy(&self, table: &str) -> (Result<Produced, JobError>, String) {
        let job: ModelJob = toml::from_str(&format!("model = \"{}\"\n{table}", self.name)).unwrap();
        let run = RunContext {
            job: "deploy".into(),
            slot: Slot {
                start_ms: 0,
                end_ms: 86_400_000,
            },
            attempt: 1,
            base_dir: self.dir.path().to_owned(),
            data_dir: self.data_dir(),
            log: RunLog::default(),
            cancel: CancellationToken::new(),
            pipelines: Arc::new(sluice::workflow::pipelines::InProcess),
        };
        let result = Arc::new(job).run(run.clone()).await;
        (result, run.log.text())
    }
}

/// Normal readings, numbered by `id` from `first`: the anomaly model scores them low.
fn readings(first: usize, count: usize) -> Vec<Event> {
    (first..first + count)
        .map(|id| {
            let payload = json!({"id": id, "temperature": 21.0 + (id % 7) as f64 * 0.3, "vibration": 1.1, "battery": 50.0});
            Event::new(payload.to_string().into_bytes(), "test")
        })
        .collect()
}

/// Each output's (id, anomaly_score).
fn scores(pool: &InstancePool, events: &[Event]) -> Vec<(u64, f64)> {
    let processed = pool.process(events).unwrap();
    assert!(processed.rejected.is_empty());
    processed
        .emitted
        .iter()
        .map(|output| {
            let value: Value = serde_json::from_slice(&output.event.payload).unwrap();
            (
                value["id"].as_u64().unwrap(),
                value["anomaly_score"].as_f64().unwrap(),
            )
        })
        .collect()
}

fn all_scored_by_constant(pool: &InstancePool) -> bool {
    scores(pool, &readings(0, 8))
        .iter()
        .all(|&(_, s)| s == CONSTANT)
}

fn none_scored_by_constant(pool: &InstancePool) -> bool {
    scores(pool, &readings(0, 8))
        .iter()
        .all(|&(_, s)| s != CONSTANT)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switch_reaches_the_next_batches_and_scores_every_event_once() {
    const BATCH: usize = 16;
    let host = Host::new("anomaly_stream");
    let models = host.load("anomaly.onnx");
    let pool = Arc::new(host.stage(&models));
    let done = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let stream = {
        let (pool, done, stop) = (pool.clone(), done.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut batches = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                batches.push(scores(&pool, &readings(batches.len() * BATCH, BATCH)));
                done.fetch_add(1, Ordering::SeqCst);
            }
            batches
        })
    };
    let until = |count: usize| {
        let done = done.clone();
        async move {
            while done.load(Ordering::SeqCst) < count {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
        }
    };
    until(50).await;
    let (result, log) = host.deploy("path = \"next.onnx\"").await;
    // Batches that began after the switch returned must all be the new version's.
    let switched = done.load(Ordering::SeqCst) + 1;
    until(switched + 50).await;
    stop.store(true, Ordering::SeqCst);
    let batches = stream.join().unwrap();
    assert_eq!(
        result.unwrap(),
        Produced {
            objects: 1,
            rows: 0
        }
    );
    assert!(
        log.contains(&format!(
            "model `anomaly_stream`: version 0 → version 1 (sha256 {}); version 0 is kept for a rollback",
            sha256(&host.path("next.onnx"))
        )),
        "{log}"
    );

    let mut ids = BTreeSet::new();
    let mut new_from = None;
    for (index, batch) in batches.iter().enumerate() {
        assert_eq!(batch.len(), BATCH, "batch {index}: every event is scored");
        for &(id, _) in batch {
            assert!(ids.insert(id), "event {id} scored twice");
        }
        let by_new = batch.iter().filter(|&&(_, s)| s == CONSTANT).count();
        assert!(
            by_new == 0 || by_new == BATCH,
            "batch {index} was scored by two versions"
        );
        match (by_new == BATCH, new_from) {
            (true, None) => new_from = Some(index),
            (false, Some(from)) => {
                panic!("batch {index} went back to the old version after {from}")
            }
            _ => {}
        }
    }
    assert_eq!(
        ids,
        (0..(batches.len() * BATCH) as u64).collect(),
        "no event lost"
    );
    let new_from = new_from.expect("the new version scored the last batches");
    assert!(
        (50..=switched).contains(&new_from),
        "switched at batch {new_from}"
    );
}

#[tokio::test]
async fn a_model_whose_inputs_are_not_the_declared_ones_is_refused_and_the_old_keeps_serving() {
    let host = Host::new("anomaly_wide");
    let models = host.load("anomaly.onnx");
    let pool = host.stage(&models);
    let (result, _) = host.deploy("path = \"wide.onnx\"").await;
    assert_eq!(
        result.unwrap_err().to_string(),
        format!(
            "model `anomaly_wide` ({}): the config expects inputs `features` (f32 [-1, 3]) but the model has `features` (f32 [-1, 4]); not deployed, the served version is unchanged",
            host.path("wide.onnx").display()
        )
    );
    assert!(none_scored_by_constant(&pool));
    let history = inference::versions("anomaly_wide", &host.data_dir())
        .unwrap()
        .unwrap();
    assert_eq!((history.active, history.versions.len()), (0, 1));
}

#[tokio::test]
async fn a_model_that_is_not_the_pinned_file_is_refused() {
    let host = Host::new("anomaly_pinned");
    let models = host.load("anomaly.onnx");
    let pool = host.stage(&models);
    let wrong = "00".repeat(32);
    let (result, _) = host
        .deploy(&format!("path = \"next.onnx\"\nsha256 = \"{wrong}\""))
        .await;
    assert_eq!(
        result.unwrap_err().to_string(),
        format!(
            "{}: sha256 is {} but `sha256` pins {wrong}; not deployed, the served version is unchanged",
            host.path("next.onnx").display(),
            sha256(&host.path("next.onnx"))
        )
    );
    assert!(none_scored_by_constant(&pool));

    std::fs::write(
        host.path("next.onnx.sha256"),
        format!("{}  next.onnx\n", sha256(&host.path("next.onnx"))),
    )
    .unwrap();
    let (result, _) = host
        .deploy("path = \"next.onnx\"\nsha256_file = \"next.onnx.sha256\"")
        .await;
    result.unwrap();
    assert!(all_scored_by_constant(&pool));
}

#[tokio::test]
async fn a_restart_keeps_the_deployed_version_until_an_earlier_one_is_activated() {
    let host = Host::new("anomaly_restart");
    let models = host.load("anomaly.onnx");
    let pool = host.stage(&models);
    host.deploy("path = \"next.onnx\"").await.0.unwrap();
    // Another pipeline of the process with the same [models.NAME] shares the slot.
    let replay = host.load("anomaly.onnx");
    assert!(all_scored_by_constant(&host.stage(&replay)));
    drop((pool, models, replay));

    let models = host.load("anomaly.onnx");
    let pool = host.stage(&models);
    assert!(
        all_scored_by_constant(&pool),
        "the restart serves version 1"
    );

    let switch = inference::activate("anomaly_restart", 0, &host.data_dir()).unwrap();
    assert_eq!((switch.from, switch.to, switch.live), (1, 0, true));
    assert!(
        none_scored_by_constant(&pool),
        "the rollback reaches the running stage"
    );
    drop((pool, models));
    let pool = host.stage(&host.load("anomaly.onnx"));
    assert!(
        none_scored_by_constant(&pool),
        "the rollback outlives a restart"
    );

    let history = inference::versions("anomaly_restart", &host.data_dir())
        .unwrap()
        .unwrap();
    let listed: Vec<(u64, &str, &Path)> = history
        .versions
        .iter()
        .map(|v| (v.version, v.origin.as_str(), v.source.as_path()))
        .collect();
    assert_eq!(
        listed,
        [
            (0, "config", host.path("anomaly.onnx").as_path()),
            (1, "job deploy", host.path("next.onnx").as_path()),
        ]
    );
    assert_eq!(history.active, 0);
    assert_eq!(
        inference::activate("anomaly_restart", 5, &host.data_dir())
            .unwrap_err()
            .to_string(),
        "model `anomaly_restart`: there is no version 5 (versions: 0–1)"
    );
}

#[tokio::test]
async fn a_config_that_names_another_file_wins_over_the_deployed_version() {
    let host = Host::new("anomaly_edited");
    let models = host.load("anomaly.onnx");
    host.deploy("path = \"next.onnx\"").await.0.unwrap();
    drop(models);
    // The config now names another file: the next start serves it, as a new version.
    std::fs::copy(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/anomaly.onnx"),
        host.path("edited.onnx"),
    )
    .unwrap();
    let pool = host.stage(&host.load("edited.onnx"));
    assert!(none_scored_by_constant(&pool));
    let history = inference::versions("anomaly_edited", &host.data_dir())
        .unwrap()
        .unwrap();
    assert_eq!((history.active, history.versions.len()), (2, 3));
    assert_eq!(history.versions[2].origin, "config");
}
