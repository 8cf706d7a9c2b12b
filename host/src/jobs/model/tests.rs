//! The job's checks that need no model loaded: what `validate` reports, and pins that
//! refuse a file before ONNX Runtime sees it. Deployments themselves are tested with
//! real models in `host/tests/model_job.rs`.

use std::collections::BTreeMap;

use tokio_util::sync::CancellationToken;

use super::*;
use crate::inference::ModelDef;
use crate::jobs::{RunLog, Slot};

fn job(toml: &str) -> ModelJob {
    toml::from_str(toml).unwrap()
}

fn declared(path: &str) -> ModelDef {
    toml::from_str(&format!(
        r#"
        path = "{path}"
        inputs = [{{ name = "features", type = "f32", shape = [-1, 3] }}]
        outputs = [{{ name = "label", type = "i64", shape = [-1] }}]
        "#
    ))
    .unwrap()
}

fn messages(job: &ModelJob, models: &BTreeMap<String, ModelDef>) -> Vec<(String, String)> {
    let context = CheckContext {
        base: Path::new("."),
        models,
    };
    job.problems(&context)
        .into_iter()
        .map(|p| (p.message, p.hint))
        .collect()
}

#[test]
fn validate_names_an_unknown_model_with_the_close_one() {
    let models = BTreeMap::from([
        ("anomaly".to_owned(), declared("a.onnx")),
        ("fraud".to_owned(), declared("f.onnx")),
    ]);
    assert_eq!(
        messages(&job("model = \"anomoly\"\npath = \"x.onnx\""), &models),
        [(
            "`model` `anomoly` is no `[models.NAME]`".to_owned(),
            "did you mean `anomaly`?".to_owned()
        )]
    );
    assert_eq!(
        messages(&job("model = \"zzz\"\npath = \"x.onnx\""), &models)[0].1,
        "the models are `anomaly`, `fraud`"
    );
    assert_eq!(
        messages(&job("model = \"anomaly\"\npath = \"x.onnx\""), &models),
        []
    );
}

#[test]
fn validate_wants_one_pin_that_is_a_sha256_and_a_declared_model() {
    let undeclared: ModelDef = toml::from_str("path = \"a.onnx\"").unwrap();
    let models = BTreeMap::from([("anomaly".to_owned(), undeclared)]);
    let problems = messages(
        &job("model = \"anomaly\"\npath = \"x.onnx\"\nsha256 = \"abc\"\nsha256_file = \"x.sha256\""),
        &models,
    );
    let problems: Vec<&str> = problems.iter().map(|(m, _)| m.as_str()).collect();
    assert_eq!(
        problems,
        [
            "`[models.anomaly]` does not declare its `inputs` and `outputs`, so a new version could not be checked before it serves",
            "both `sha256` and `sha256_file` pin the file",
            "`sha256` `abc` is not a sha256",
        ]
    );
}

fn run_context(dir: &Path) -> RunContext {
    RunContext {
        job: "deploy".into(),
        // 2026-12-06T00:00:00Z to the next midnight.
        slot: Slot {
            start_ms: 1_796_515_200_000,
            end_ms: 1_796_601_600_000,
        },
        attempt: 1,
        base_dir: dir.to_owned(),
        data_dir: dir.join("data"),
        log: RunLog::default(),
        cancel: CancellationToken::new(),
        pipelines: Arc::new(crate::jobs::NoPipelines),
    }
}

#[tokio::test]
async fn a_file_its_sha256_file_does_not_pin_is_refused_before_it_is_loaded() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("m-2026-12-06.onnx"), b"not a model").unwrap();
    let pin = "ab".repeat(32);
    std::fs::write(
        dir.path().join("m-2026-12-06.sha256"),
        format!("{pin}  m-2026-12-06.onnx\n"),
    )
    .unwrap();
    let job = Arc::new(job(
        "model = \"anomaly\"\npath = \"m-{slot_date}.onnx\"\nsha256_file = \"m-{slot_date}.sha256\"",
    ));
    let run = run_context(dir.path());
    let error = job.run(run.clone()).await.unwrap_err();
    let path = dir.path().join("m-2026-12-06.onnx");
    assert_eq!(
        error.to_string(),
        format!(
            "{}: sha256 is {} but {} pins {pin}; not deployed, the served version is unchanged",
            path.display(),
            format!("{:x}", sha2::Sha256::digest(b"not a model")),
            dir.path().join("m-2026-12-06.sha256").display(),
        )
    );
    assert!(run.log.text().starts_with(&format!("read {} (11 bytes", path.display())));
}

#[tokio::test]
async fn a_sha256_file_without_a_digest_fails_the_run() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("m.sha256"), "pending\n").unwrap();
    let job = Arc::new(job(
        "model = \"anomaly\"\npath = \"m.onnx\"\nsha256_file = \"m.sha256\"",
    ));
    let error = job.run(run_context(dir.path())).await.unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "`sha256_file` {} does not start with a sha256 (64 hexadecimal digits)",
            dir.path().join("m.sha256").display()
        )
    );
}
