//! The `inference` capability and the host's ONNX models: the host computes what Python
//! onnxruntime computes, bad models and bad tensors give errors naming stage and
//! model, models are granted per stage, and every import is bounded per call.
//!
//! ONNX Runtime comes from the onnxruntime Python package (scripts/setup installs it).

mod common;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use common::{events, payloads, plugin_path, runtime, spec};
use serde_json::{Value, json};
use sluice::inference::{
    ElementType, ExecutionProvider, InferenceConfig, InferenceError, Model, ModelDef, Models,
    RunError, Tensor, TensorSpec,
};
use sluice::runtime::{CallFailure, Capability, InstancePool, PluginError, StageSpec, World};

const SHA256: &str = "c9fd4b8f393547314b1d9c88b1163d5aec84a253b3d058630d935a23efc6e3c2";

fn model_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/anomaly.onnx")
}

fn def() -> ModelDef {
    toml::from_str(&format!(
        r#"
        path = "{}"
        sha256 = "{SHA256}"
        inputs = [{{ name = "features", type = "f32", shape = [-1, 3] }}]
        outputs = [{{ name = "label", type = "i64", shape = [-1] }},
                   {{ name = "probabilities", type = "f32", shape = [-1, 2] }}]
        "#,
        model_path().display()
    ))
    .unwrap()
}

fn load(def: &ModelDef) -> Result<Model, InferenceError> {
    Model::load("anomaly", def, None)
}

fn models() -> Models {
    Models::load(
        &BTreeMap::from([("anomaly".to_owned(), def())]),
        &InferenceConfig::default(),
        None,
    )
    .unwrap()
}

/// Rows of (temperature, vibration, battery) from normal to anomalous, with values near
/// the trees' thresholds, deterministic.
fn features(rows: usize) -> Vec<f32> {
    (0..rows)
        .flat_map(|i| {
            let t = i as f32 / rows as f32;
            [18.0 + t * 104.0, 0.4 + t * 15.0, (i * 37 % 101) as f32]
        })
        .collect()
}

/// What Python onnxruntime computes on the same rows: (labels, probabilities).
fn python_onnxruntime(rows: &[f32]) -> (Vec<i64>, Vec<f32>) {
    let script = r#"
import json, sys
import numpy as np, onnxruntime as ort
request = json.load(sys.stdin)
options = ort.SessionOptions()
options.intra_op_num_threads = 1  # as the host's default: the same summation order
session = ort.InferenceSession(request["model"], options, providers=["CPUExecutionProvider"])
x = np.array(request["features"], dtype=np.float32).reshape(-1, 3)
label, probabilities = session.run(["label", "probabilities"], {"features": x})
json.dump({"label": label.tolist(), "probabilities": probabilities.reshape(-1).tolist()}, sys.stdout)
"#;
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 with onnxruntime (scripts/setup installs it)");
    let request = json!({"model": model_path(), "features": rows});
    child
        .stdin
        .take()
        .unwrap()
        .write_all(request.to_string().as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "python onnxruntime failed");
    let answer: Value = serde_json::from_slice(&output.stdout).unwrap();
    let labels = serde_json::from_value(answer["label"].clone()).unwrap();
    let probabilities = answer["probabilities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    (labels, probabilities)
}

#[test]
fn the_host_computes_what_python_onnxruntime_computes() {
    let model = load(&def()).unwrap();
    for rows in [1, 32, 256] {
        let x = features(rows);
        let outputs = model
            .run(&[Tensor::f32("features", &[rows as u32, 3], &x)])
            .unwrap();
        let (labels, probabilities) = python_onnxruntime(&x);
        let host_labels = outputs[0].to_i64().unwrap();
        let host_probabilities = outputs[1].to_f32().unwrap();
        assert_eq!(
            (outputs[0].name.as_str(), outputs[1].name.as_str()),
            ("label", "probabilities")
        );
        assert_eq!(outputs[1].shape, [rows as u32, 2]);
        assert_eq!(host_labels, labels, "labels at batch {rows}");
        assert!(labels.contains(&0) && labels.contains(&1) || rows == 1);
        for (host, python) in host_probabilities.iter().zip(&probabilities) {
            assert!(
                (host - python).abs() <= 1e-5,
                "batch {rows}: {host} vs {python}"
            );
        }
    }
}

#[test]
fn a_model_that_is_missing_or_not_the_pinned_one_does_not_load() {
    let mut missing = def();
    missing.path = PathBuf::from("/nowhere/anomaly.onnx");
    assert_eq!(
        load(&missing).err().unwrap().to_string(),
        "model `anomaly`: cannot read /nowhere/anomaly.onnx: No such file or directory (os error 2)"
    );
    let mut pinned = def();
    pinned.sha256 = Some("00".repeat(32));
    assert_eq!(
        load(&pinned).err().unwrap().to_string(),
        format!(
            "model `anomaly` ({}): sha256 is {SHA256} but the config pins {}",
            model_path().display(),
            "00".repeat(32)
        )
    );
}

#[test]
fn a_model_whose_inputs_are_not_the_declared_ones_does_not_load() {
    let mut wrong = def();
    wrong.inputs = vec![TensorSpec {
        name: "features".into(),
        element_type: ElementType::F64,
        shape: vec![-1, 4],
    }];
    assert_eq!(
        load(&wrong).err().unwrap().to_string(),
        format!(
            "model `anomaly` ({}): the config expects inputs `features` (f64 [-1, 4]) but the model has `features` (f32 [-1, 3])",
            model_path().display()
        )
    );
}

#[test]
fn a_missing_onnx_runtime_is_a_clear_error() {
    // Its own process under nextest: the library is loaded once per process.
    let config = InferenceConfig {
        library: Some(PathBuf::from("/nowhere/libonnxruntime.so.1.32.0")),
    };
    let error = Models::load(
        &BTreeMap::from([("anomaly".to_owned(), def())]),
        &config,
        None,
    )
    .err()
    .unwrap();
    assert_eq!(
        error.to_string(),
        "ONNX Runtime library /nowhere/libonnxruntime.so.1.32.0 (from the config's `[inference] library`) does not exist"
    );
}

#[test]
fn tensors_that_do_not_fit_the_model_are_refused_with_the_reason() {
    let model = load(&def()).unwrap();
    let run = |tensor: Tensor| match model.run(&[tensor]) {
        Err(RunError::InvalidInput(message)) => message,
        other => panic!("expected an invalid input, got {other:?}"),
    };
    assert_eq!(
        run(Tensor::f32("x", &[1, 3], &[0.0; 3])),
        "the model has no input `x`; its inputs are `features` (f32 [-1, 3])"
    );
    assert_eq!(
        run(Tensor::f32("features", &[2, 4], &[0.0; 8])),
        "input `features` has shape [2, 4], but the model takes f32 [-1, 3] (-1: any size)"
    );
    let mut doubles = Tensor::f32("features", &[1, 3], &[0.0; 6]);
    doubles.element_type = ElementType::F64;
    assert_eq!(
        run(doubles),
        "input `features` is f64, but the model takes f32"
    );
    assert_eq!(
        model.run(&[]).unwrap_err(),
        RunError::InvalidInput("input `features` (f32 [-1, 3]) is missing".into())
    );
}

fn granted(stage: &str, config: Value, models: &Models) -> StageSpec {
    let mut spec = spec(stage, config);
    spec.grants.models = vec!["anomaly".to_owned()];
    spec.models = models.grant(stage, &spec.grants.models).unwrap();
    spec
}

fn start(plugin: &str, spec: StageSpec) -> Result<InstancePool, PluginError> {
    let runtime = runtime();
    let loaded = runtime.load(plugin, &plugin_path(plugin), None).unwrap();
    InstancePool::new(&runtime, loaded, World::Processor, spec, 1)
}

#[test]
fn the_anomaly_plugin_scores_a_batch_and_routes_anomalies_to_alerts() {
    let models = models();
    let pool = start("anomaly", granted("score", json!({}), &models)).unwrap();
    let processed = pool
        .process(&events(&[
            r#"{"device_id":"a","temperature":21.5,"vibration":1.2,"battery":80.0}"#,
            r#"{"device_id":"b","temperature":101.0,"vibration":12.0,"battery":79.0}"#,
            r#"{"device_id":"c","temperature":"hot"}"#,
        ]))
        .unwrap();
    assert_eq!(
        payloads(&processed),
        [
            r#"{"device_id":"a","temperature":21.5,"vibration":1.2,"battery":80.0,"anomaly_score":0.0,"anomaly":false}"#,
            r#"{"device_id":"b","temperature":101.0,"vibration":12.0,"battery":79.0,"anomaly_score":1.0,"anomaly":true}"#,
        ]
    );
    let routes: Vec<Option<&str>> = processed
        .emitted
        .iter()
        .map(|e| e.route.as_deref())
        .collect();
    assert_eq!(routes, [None, Some("alerts")]);
    assert_eq!(processed.rejected.len(), 1);
    assert_eq!(processed.rejected[0].input, 2);
    assert_eq!(
        processed.rejected[0].reason,
        "feature `temperature` is missing or not a number"
    );
}

#[test]
fn a_model_the_stage_is_not_granted_is_denied() {
    let models = models();
    let error = start(
        "anomaly",
        granted("score", json!({"model": "fraud"}), &models),
    )
    .err()
    .unwrap();
    assert_eq!(
        error.to_string(),
        "stage `score` (plugin `anomaly`): init failed: stage `score`, model `fraud`: not granted to this stage (granted: anomaly); add it to grants.models"
    );
    assert_eq!(
        models
            .grant("score", &["fraud".to_owned()])
            .err()
            .unwrap()
            .to_string(),
        "stage `score` is granted model `fraud`, which no `[models.fraud]` defines"
    );
}

#[test]
fn without_a_model_grant_the_capability_is_not_linked() {
    let error = start("anomaly", spec("score", json!({}))).err().unwrap();
    assert!(matches!(
        error,
        PluginError::NotGranted {
            capability: Capability::Inference,
            ..
        }
    ));
    assert_eq!(
        error.to_string(),
        "plugin `anomaly` imports sluice:plugin/inference, which stage `score` is not granted; grant it a model: grants.models = [\"NAME\"] with a [models.NAME]"
    );
}

fn flood(behaviour: &str, count: usize, models: &Models) -> InstancePool {
    let config = json!({"model": "anomaly", "behaviour": behaviour, "count": count});
    start("fixture-inference-flood", granted("flood", config, models)).unwrap()
}

fn failure(pool: &InstancePool) -> (CallFailure, String) {
    let error = pool
        .process(&events(&["{}"]))
        .expect_err("the flood must fail");
    (error.failure().cloned().unwrap(), error.to_string())
}

#[test]
fn runs_per_call_are_bounded() {
    let models = models();
    assert!(flood("runs", 16, &models).process(&events(&["{}"])).is_ok());
    let (failure, message) = failure(&flood("runs", 100_000, &models));
    assert!(matches!(failure, CallFailure::Limit(ref l) if l.limit == "inference_runs_per_call"));
    assert_eq!(
        message,
        "stage `flood` (plugin `fixture-inference-flood`): 17 runs of model `anomaly` and others in one call exceeds limits.inference_runs_per_call = 16"
    );
}

#[test]
fn tensor_bytes_per_call_are_bounded() {
    let models = models();
    // The guest's memory cap bounds one tensor; the quota bounds what the host holds
    // for the call's runs, inputs and outputs together.
    let config = json!({"model": "anomaly", "behaviour": "bytes", "count": 100_000});
    let mut spec = granted("flood", config, &models);
    spec.limits.inference.bytes_per_call = 1 << 20;
    let pool = start("fixture-inference-flood", spec).unwrap();
    let (failure, message) = failure(&pool);
    assert!(
        matches!(failure, CallFailure::Limit(ref l) if l.limit == "inference_bytes_per_call"),
        "{message}"
    );
    assert_eq!(
        message,
        "stage `flood` (plugin `fixture-inference-flood`): 1200016 bytes of tensors in one call (inputs) exceeds limits.inference_bytes_per_call = 1048576"
    );
}

#[test]
fn open_model_handles_are_bounded() {
    let models = models();
    let (failure, message) = failure(&flood("handles", 1000, &models));
    assert!(matches!(failure, CallFailure::Refused(_)), "{message}");
    assert!(
        message.ends_with("more than 16 model handles open in one instance; keep one per model"),
        "{message}"
    );
}

#[test]
fn a_run_the_model_refuses_dead_letters_the_batch_with_the_reason() {
    let models = models();
    let pool = flood("wrong-shape", 0, &models);
    let (processed, _) = pool.process_isolating(&events(&["{}"])).unwrap();
    assert_eq!(
        processed.rejected[0].reason,
        "stage `flood` (plugin `fixture-inference-flood`): returned an error: stage `flood`, model `anomaly`: input `features` has shape [1, 4], but the model takes f32 [-1, 3] (-1: any size)"
    );
}

#[test]
fn gpu_providers_fall_back_to_the_cpu_where_the_library_has_none() {
    let mut gpu_first = def();
    gpu_first.execution_providers = vec![
        ExecutionProvider::Tensorrt,
        ExecutionProvider::Cuda,
        ExecutionProvider::Cpu,
    ];
    let x = features(32);
    let input = [Tensor::f32("features", &[32, 3], &x)];
    let on_cpu = load(&def()).unwrap().run(&input).unwrap();
    let preferred = load(&gpu_first).unwrap().run(&input).unwrap();
    assert_eq!(preferred[0].to_i64().unwrap(), on_cpu[0].to_i64().unwrap());
    assert_eq!(preferred[1].to_f32().unwrap(), on_cpu[1].to_f32().unwrap());

    let error = toml::from_str::<ModelDef>("path = \"m.onnx\"\nexecution_providers = [\"tpu\"]")
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("unknown variant `tpu`, expected one of `cpu`, `cuda`, `tensorrt`"),
        "{error}"
    );
}
