//! `type = "model"`: make a new ONNX file the served version of a `[models.NAME]`, so
//! that the stages running the model score their next batches with it, without a
//! restart. Typically it runs after a training job (`depends_on`), on the file the
//! training wrote for the slot:
//!
//! ```toml
//! [jobs.deploy]
//! type = "model"
//! depends_on = ["train"]
//! model = "anomaly"
//! path = "models/anomaly-{slot_date}.onnx"
//! sha256_file = "models/anomaly-{slot_date}.onnx.sha256"
//! ```
//!
//! A run reads the file, checks its pin, loads it with ONNX Runtime and compares its
//! inputs and outputs with what `[models.NAME]` declares; only a file that passes all of
//! that becomes the next version (kept in the data directory, see
//! `crate::inference::versions`), and the version served before stays there for a
//! rollback (`sluice model activate`). A file that fails changes nothing: the served
//! version keeps serving, and the run fails with the reason.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;
use serde::Deserialize;
use sha2::Digest as _;

use super::{CheckContext, JobError, JobKind, Produced, RunContext};
use crate::component::Problem;
use crate::inference::Switch;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelJob {
    /// The `[models.NAME]` that gets the new version.
    pub model: String,
    /// The new ONNX file (relative to the config's directory); `{slot_start}`,
    /// `{slot_end}`, `{slot_date}` and `{slot_ms}` name the run's slot.
    pub path: PathBuf,
    /// The file's sha256: a file with another one is refused.
    #[serde(default)]
    pub sha256: Option<String>,
    /// A file holding the sha256 (its first word, as `sha256sum` writes it), written by
    /// whatever made the model, so that the pin travels with each new file. Relative to
    /// the config's directory, slot names expanded as in `path`.
    #[serde(default)]
    pub sha256_file: Option<PathBuf>,
}

impl JobKind for ModelJob {
    fn problems(&self, context: &CheckContext<'_>) -> Vec<Problem> {
        let mut problems = Vec::new();
        match context.models.get(&self.model) {
            None => problems.push(Problem {
                message: format!("`model` `{}` is no `[models.NAME]`", self.model),
                hint: unknown_model_hint(&self.model, context.models.keys()),
            }),
            Some(def) if def.inputs.is_empty() || def.outputs.is_empty() => {
                problems.push(Problem {
                    message: format!(
                        "`[models.{}]` does not declare its `inputs` and `outputs`, so a new version could not be checked before it serves",
                        self.model
                    ),
                    hint: format!(
                        "add them to `[models.{}]`; `sluice model inspect FILE` prints them",
                        self.model
                    ),
                });
            }
            Some(_) => {}
        }
        if self.sha256.is_some() && self.sha256_file.is_some() {
            problems.push(Problem {
                message: "both `sha256` and `sha256_file` pin the file".into(),
                hint: "keep one: `sha256` for a fixed file, `sha256_file` for one a training job writes each time".into(),
            });
        }
        if let Some(pin) = &self.sha256
            && !is_sha256(pin)
        {
            problems.push(Problem {
                message: format!("`sha256` `{pin}` is not a sha256"),
                hint: "64 hexadecimal digits, as `sha256sum FILE` prints".into(),
            });
        }
        problems
    }

    fn run(self: Arc<Self>, run: RunContext) -> BoxFuture<'static, Result<Produced, JobError>> {
        async move {
            let path = run.path(&expand(&run, &self.path));
            let pin = self.pin(&run)?;
            let origin = format!("job {}", run.job);
            let (model, data_dir, log) = (self.model.clone(), run.data_dir.clone(), run.log.clone());
            // Reading, hashing and loading the model block: off the scheduler's threads.
            // A deployment once begun ends even if the run is cancelled; a retry then
            // finds its file served already.
            let switch = tokio::task::spawn_blocking(move || {
                check_and_deploy(&model, &path, pin.as_ref(), &origin, &data_dir, &log)
            })
            .await
            .map_err(|error| JobError::new(format!("deploying model `{}` failed: {error}", self.model)))??;
            if switch.from == switch.to {
                run.log.line(format!(
                    "model `{}`: version {} (sha256 {}) is served already; nothing to switch",
                    switch.model, switch.to, switch.sha256
                ));
                return Ok(Produced::default());
            }
            run.log.line(format!(
                "model `{}`: version {} → version {} (sha256 {}); version {} is kept for a rollback",
                switch.model, switch.from, switch.to, switch.sha256, switch.from
            ));
            Ok(Produced {
                objects: 1,
                rows: 0,
            })
        }
        .boxed()
    }
}

impl ModelJob {
    /// The sha256 the file must have, and where it was written.
    fn pin(&self, run: &RunContext) -> Result<Option<Pin>, JobError> {
        if let Some(sha256) = &self.sha256 {
            return Ok(Some(Pin {
                sha256: sha256.to_ascii_lowercase(),
                from: "`sha256`".into(),
            }));
        }
        let Some(file) = &self.sha256_file else {
            return Ok(None);
        };
        let file = run.path(&expand(run, file));
        let text = std::fs::read_to_string(&file).map_err(|error| {
            JobError::new(format!("cannot read `sha256_file` {}: {error}", file.display()))
        })?;
        match text.split_whitespace().next() {
            Some(sha256) if is_sha256(sha256) => Ok(Some(Pin {
                sha256: sha256.to_ascii_lowercase(),
                from: file.display().to_string(),
            })),
            _ => Err(JobError::new(format!(
                "`sha256_file` {} does not start with a sha256 (64 hexadecimal digits)",
                file.display()
            ))),
        }
    }
}

/// A sha256 the new file must have, and where it was written (for messages).
struct Pin {
    sha256: String,
    from: String,
}

/// Read `path`, check it against `pin` and deploy it as the next version of `model`.
fn check_and_deploy(
    model: &str,
    path: &Path,
    pin: Option<&Pin>,
    origin: &str,
    data_dir: &Path,
    log: &super::RunLog,
) -> Result<Switch, JobError> {
    let bytes = std::fs::read(path)
        .map_err(|error| JobError::new(format!("cannot read {}: {error}", path.display())))?;
    let sha256 = format!("{:x}", sha2::Sha256::digest(&bytes));
    log.line(format!(
        "read {} ({} bytes, sha256 {sha256})",
        path.display(),
        bytes.len()
    ));
    if let Some(pin) = pin
        && pin.sha256 != sha256
    {
        return Err(JobError::new(format!(
            "{}: sha256 is {sha256} but {} pins {}; not deployed, the served version is unchanged",
            path.display(),
            pin.from,
            pin.sha256
        )));
    }
    crate::inference::deploy(model, path, &bytes, origin, data_dir)
        .map_err(|error| JobError::new(format!("{error}; not deployed, the served version is unchanged")))
}

fn expand(run: &RunContext, path: &Path) -> PathBuf {
    PathBuf::from(run.slot.expand(&path.to_string_lossy()))
}

fn is_sha256(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A close name among `models`, else the list of them (the config's `did_you_mean` is a
/// layer above the kinds).
fn unknown_model_hint<'a>(wanted: &str, models: impl Iterator<Item = &'a String> + Clone) -> String {
    let close = models
        .clone()
        .map(|name| (strsim::levenshtein(wanted, name), name))
        .filter(|(distance, name)| *distance <= (name.len() / 3).max(1))
        .min();
    match close {
        Some((_, name)) => format!("did you mean `{name}`?"),
        None if models.clone().next().is_none() => {
            "no `[models.NAME]` is configured; a model job gives an existing model a new version".into()
        }
        None => format!(
            "the models are {}",
            models.map(|name| format!("`{name}`")).collect::<Vec<_>>().join(", ")
        ),
    }
}

#[cfg(test)]
mod tests;
