//! Unit tests for whole pipelines (`sluice test`), in the model of Vector's config
//! tests: `[[tests]]` beside a config insert events at a stage, tick timed stages, and
//! say what must come out where. They run in process with the real plugins and models,
//! on a fresh pipeline each, with no network: sources are injection points, sinks are
//! captures (docs/testing.md).
//!
//! - [`spec`]: the test format, read and checked against the config;
//! - [`run`]: one test's pipeline, built and wired as a start does;
//! - [`expect`]: expectations against what came out, with diffs;
//! - [`report`]: the results as text and as JUnit XML.

pub mod expect;
pub mod report;
pub mod run;
pub mod spec;

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::config::{Config, ConfigErrors};
pub use expect::Failure;
pub use report::TestResult;
pub use run::{Harness, HarnessError, Run};
pub use spec::{SpecError, TestCase};

/// A config's tests, ready to run.
pub struct Suite {
    harness: Harness,
    pub tests: Vec<TestCase>,
    /// The file beside the config that may hold tests (`X.test.toml`).
    pub beside: PathBuf,
}

/// Why a suite cannot run.
#[derive(Debug, thiserror::Error)]
pub enum SuiteError {
    #[error("{}", .0.report().trim_end())]
    Config(ConfigErrors),
    #[error(transparent)]
    Harness(#[from] HarnessError),
    #[error(transparent)]
    Spec(#[from] SpecError),
}

impl SuiteError {
    /// The test file or the config is wrong, rather than the pipeline unable to start.
    pub fn is_invalid(&self) -> bool {
        matches!(
            self,
            SuiteError::Config(_) | SuiteError::Spec(SpecError::Invalid(_))
        )
    }
}

impl Suite {
    /// The tests of the config at `path`, or of the config beside the test file at
    /// `path` (`X.test.toml` → `X.toml`): both files' `[[tests]]`.
    pub fn load(path: &Path) -> Result<Suite, SuiteError> {
        let (config, beside) = spec::locate(path);
        let config = Config::load(&config).map_err(SuiteError::Config)?;
        Suite::of(config, beside)
    }

    /// The tests of a loaded `config` and of `beside`.
    pub fn of(config: Config, beside: PathBuf) -> Result<Suite, SuiteError> {
        let harness = Harness::prepare(config)?;
        let ticks = |stage: &str| harness.ticks(stage);
        let tests = spec::load(&spec::Stages::new(harness.config(), &ticks), &beside)?;
        Ok(Suite {
            harness,
            tests,
            beside,
        })
    }

    /// The files the tests come from, in order.
    pub fn files(&self) -> Vec<&Path> {
        let mut files: Vec<&Path> = Vec::new();
        for test in &self.tests {
            if !files.contains(&test.file.as_path()) {
                files.push(&test.file);
            }
        }
        files
    }

    /// How many tests [`run`](Self::run) runs with `filter`.
    pub fn selected(&self, filter: Option<&str>) -> usize {
        self.tests
            .iter()
            .filter(|test| selects(filter, test))
            .count()
    }

    /// Run every test (those whose name contains `filter`, if given), one after the
    /// other, giving each result to `each` as it comes.
    pub async fn run(
        &mut self,
        filter: Option<&str>,
        mut each: impl FnMut(&TestResult),
    ) -> Vec<TestResult> {
        let mut results = Vec::new();
        for test in &self.tests {
            if !selects(filter, test) {
                continue;
            }
            let started = Instant::now();
            let run = self.harness.run(test).await;
            let mut failures: Vec<Failure> = run
                .errors
                .iter()
                .map(|error| Failure {
                    title: "the pipeline failed".into(),
                    lines: vec![error.clone()],
                })
                .collect();
            failures.extend(expect::check(test, &run.captured));
            let result = TestResult {
                name: test.name.clone(),
                duration: started.elapsed(),
                failures,
            };
            each(&result);
            results.push(result);
        }
        results
    }
}

fn selects(filter: Option<&str>, test: &TestCase) -> bool {
    filter.is_none_or(|filter| test.name.contains(filter))
}
