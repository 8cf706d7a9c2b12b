//! The tests of a pipeline: `[[tests]]` in its config file and in `X.test.toml` beside
//! it, read one-to-one onto serde structs and checked against the config before
//! anything runs. Every problem is reported with its file, line and key.

mod read;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};
use sluice_sdk::predicate::Predicate;

use crate::config::{Config, ConfigErrors, Diagnostic};
use crate::event::Event;
use read::{EmbeddedTests, Reader, TestFile};

/// One test: its inputs, step by step, and what it expects.
#[derive(Debug)]
pub struct TestCase {
    pub name: String,
    /// The file it is written in.
    pub file: PathBuf,
    pub steps: Vec<Step>,
    pub outputs: Vec<OutputCheck>,
    pub dead_letters: Vec<DeadLetterCheck>,
}

/// One input of a test, run to its end before the next.
#[derive(Debug)]
pub enum Step {
    /// Events out of a source, or into a transform or sink.
    Insert {
        stage: String,
        events: Vec<Event>,
        /// Stamp the events when they are inserted (no `timestamp_ms`, no recording).
        stamp_now: bool,
    },
    /// One `tick` of a timed stage, at `now_ms` (the wall clock without it).
    Tick { stage: String, now_ms: Option<i64> },
}

/// A stage's output: its default one (`route` `None`), or a route. A sink's is what
/// reaches its input.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Point {
    pub stage: String,
    pub route: Option<String>,
}

impl std::fmt::Display for Point {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.route {
            Some(route) => write!(f, "{}.{route}", self.stage),
            None => f.write_str(&self.stage),
        }
    }
}

/// What must come out of one point.
#[derive(Debug)]
pub struct OutputCheck {
    pub from: Point,
    pub expect: Expect,
    pub count: Option<usize>,
}

#[derive(Debug)]
pub enum Expect {
    /// Exactly these payloads, in order.
    Events(Vec<Value>),
    /// Per event, in order: at least these fields, with these values.
    Fields(Vec<Map<String, Value>>),
    /// Every event matches each.
    Conditions(Vec<Condition>),
    /// Only `count`.
    Count,
}

#[derive(Debug)]
pub struct Condition {
    /// As written, compact JSON, for the report.
    pub text: String,
    pub predicate: Predicate,
}

/// Dead letters a stage must have made.
#[derive(Debug)]
pub struct DeadLetterCheck {
    pub stage: String,
    /// A substring of the reason; any reason without it.
    pub reason: Option<String>,
    pub count: Option<usize>,
    /// Per dead letter, in order: fields of the original payload.
    pub fields: Option<Vec<Map<String, Value>>>,
}

/// Where the tests of a config live: the config, and `X.test.toml` beside `X.toml`.
/// Either file may be given.
pub fn locate(path: &Path) -> (PathBuf, PathBuf) {
    let name = path
        .file_name()
        .and_then(|name| name.to_str())
        .unwrap_or("");
    match name.strip_suffix(".test.toml") {
        Some(stem) => (path.with_file_name(format!("{stem}.toml")), path.to_owned()),
        None => {
            let stem = name.strip_suffix(".toml").unwrap_or(name);
            (
                path.to_owned(),
                path.with_file_name(format!("{stem}.test.toml")),
            )
        }
    }
}

/// Why the tests cannot run.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// Problems in the test files, each with its place.
    #[error("{}", .0.iter().map(ConfigErrors::report).collect::<String>().trim_end())]
    Invalid(Vec<ConfigErrors>),
    #[error(
        "no tests: neither {} (`[[tests]]`) nor {} has any",
        .config.display(),
        .beside.display()
    )]
    NoTests { config: PathBuf, beside: PathBuf },
}

/// What a test file may name, from the config.
pub struct Stages<'c> {
    config: &'c Config,
    /// Whether a transform's plugin exports `tick`.
    ticks: &'c dyn Fn(&str) -> bool,
}

impl<'c> Stages<'c> {
    pub fn new(config: &'c Config, ticks: &'c dyn Fn(&str) -> bool) -> Stages<'c> {
        Stages { config, ticks }
    }

    fn names(&self) -> impl Iterator<Item = &'c str> + Clone {
        let config = self.config;
        config
            .sources
            .keys()
            .chain(config.transforms.keys())
            .chain(config.sinks.keys())
            .map(String::as_str)
    }
}

/// The tests of the config `stages` describe: its own `[[tests]]`, then those of
/// `beside` if that file exists.
pub fn load(stages: &Stages<'_>, beside: &Path) -> Result<Vec<TestCase>, SpecError> {
    let config_file = &stages.config.file;
    let mut tests = Vec::new();
    let mut invalid = Vec::new();
    let mut names = BTreeSet::new();
    let mut files = vec![(config_file.as_path(), true)];
    if beside.exists() {
        files.push((beside, false));
    }
    for (path, embedded) in files {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(error) => {
                invalid.push(problems(
                    path,
                    "",
                    vec![Diagnostic::new(
                        None,
                        format!("cannot read the tests: {error}"),
                    )],
                ));
                continue;
            }
        };
        let mut reader = Reader {
            stages,
            base: path.parent().map(Path::to_owned).unwrap_or_default(),
            diagnostics: Vec::new(),
        };
        let raw = if embedded {
            toml::from_str::<EmbeddedTests>(&text).map(|file| file.tests)
        } else {
            toml::from_str::<TestFile>(&text).map(|file| file.tests)
        };
        match raw {
            Ok(raw) => {
                for test in raw {
                    let span = test.name.span();
                    if !names.insert(test.name.get_ref().clone()) {
                        reader.error(
                            span.clone(),
                            format!("two tests are named `{}`", test.name.get_ref()),
                        );
                    }
                    if let Some(test) = reader.test(test, path) {
                        tests.push(test);
                    }
                }
            }
            Err(error) => reader.diagnostics.push(Diagnostic::new(
                error.span(),
                error.message().trim().to_owned(),
            )),
        }
        if !reader.diagnostics.is_empty() {
            invalid.push(problems(path, &text, reader.diagnostics));
        }
    }
    if !invalid.is_empty() {
        return Err(SpecError::Invalid(invalid));
    }
    if tests.is_empty() {
        return Err(SpecError::NoTests {
            config: config_file.clone(),
            beside: beside.to_owned(),
        });
    }
    Ok(tests)
}

fn problems(path: &Path, text: &str, diagnostics: Vec<Diagnostic>) -> ConfigErrors {
    ConfigErrors {
        file: path.to_owned(),
        text: text.to_owned(),
        diagnostics,
    }
}
