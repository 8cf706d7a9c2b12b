//! One test file's `[[tests]]`, read one-to-one onto serde structs and checked
//! against the config, each problem kept with its place.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Map, Value};
use sluice_sdk::predicate::Predicate;
use toml::Spanned;

use super::{Condition, DeadLetterCheck, Expect, OutputCheck, Point, Stages, Step, TestCase};
use crate::config::{DEAD_LETTER, Diagnostic, did_you_mean};
use crate::event::Event;
use crate::event_record::EventRecord;

/// The config file's own `[[tests]]`; its other keys are the pipeline's.
#[derive(Deserialize)]
pub(super) struct EmbeddedTests {
    #[serde(default)]
    pub tests: Vec<RawTest>,
}

/// `X.test.toml`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TestFile {
    #[serde(default)]
    pub tests: Vec<RawTest>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTest {
    pub name: Spanned<String>,
    #[serde(default)]
    inputs: Vec<Spanned<RawInput>>,
    #[serde(default)]
    outputs: Vec<Spanned<RawOutput>>,
    #[serde(default)]
    dead_letters: Vec<Spanned<RawDeadLetter>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInput {
    insert_at: Option<Spanned<String>>,
    events: Option<Spanned<Vec<Value>>>,
    file: Option<Spanned<PathBuf>>,
    recording: Option<Spanned<PathBuf>>,
    payload: Option<Spanned<String>>,
    key: Option<Spanned<String>>,
    headers: Option<Spanned<BTreeMap<String, String>>>,
    timestamp_ms: Option<Spanned<i64>>,
    tick: Option<Spanned<String>>,
    now_ms: Option<Spanned<i64>>,
}

impl RawInput {
    /// Where each kind of payload the input gives is written (one is allowed).
    fn payload_kinds(&self) -> Vec<(&'static str, Range<usize>)> {
        [
            self.events.as_ref().map(|v| ("events", v.span())),
            self.file.as_ref().map(|v| ("file", v.span())),
            self.recording.as_ref().map(|v| ("recording", v.span())),
            self.payload.as_ref().map(|v| ("payload", v.span())),
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    /// Where each setting of written events (key, headers, time) is.
    fn event_settings(&self) -> Vec<(&'static str, Range<usize>)> {
        [
            self.key.as_ref().map(|v| ("key", v.span())),
            self.headers.as_ref().map(|v| ("headers", v.span())),
            self.timestamp_ms
                .as_ref()
                .map(|v| ("timestamp_ms", v.span())),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOutput {
    extract_from: Spanned<String>,
    events: Option<Spanned<Vec<Value>>>,
    fields: Option<Spanned<Vec<Map<String, Value>>>>,
    conditions: Option<Spanned<Vec<Spanned<Value>>>>,
    count: Option<Spanned<usize>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDeadLetter {
    stage: Spanned<String>,
    reason: Option<String>,
    count: Option<usize>,
    fields: Option<Vec<Map<String, Value>>>,
}

/// Checks one file's raw tests against the config, collecting its problems.
pub(super) struct Reader<'s, 'c> {
    pub stages: &'s Stages<'c>,
    /// Paths in the file are relative to its directory.
    pub base: PathBuf,
    pub diagnostics: Vec<Diagnostic>,
}

impl Reader<'_, '_> {
    pub fn error(&mut self, span: Range<usize>, message: impl Into<String>) -> &mut Diagnostic {
        self.diagnostics.push(Diagnostic::new(Some(span), message));
        self.diagnostics.last_mut().unwrap()
    }

    pub fn test(&mut self, raw: RawTest, file: &Path) -> Option<TestCase> {
        let before = self.diagnostics.len();
        let name = raw.name.into_inner();
        let steps: Vec<Step> = raw
            .inputs
            .into_iter()
            .filter_map(|input| self.input(input))
            .collect();
        let outputs: Vec<OutputCheck> = raw
            .outputs
            .into_iter()
            .filter_map(|output| self.output(output))
            .collect();
        let dead_letters = raw
            .dead_letters
            .into_iter()
            .filter_map(|dead| {
                let dead = dead.into_inner();
                self.known_stage(&dead.stage)?;
                Some(DeadLetterCheck {
                    stage: dead.stage.into_inner(),
                    reason: dead.reason,
                    count: dead.count,
                    fields: dead.fields,
                })
            })
            .collect();
        (self.diagnostics.len() == before).then_some(TestCase {
            name,
            file: file.to_owned(),
            steps,
            outputs,
            dead_letters,
        })
    }

    /// `name` is a stage of the config; reported at its place if not.
    fn known_stage(&mut self, name: &Spanned<String>) -> Option<()> {
        if self.stages.names().any(|stage| stage == name.get_ref()) {
            return Some(());
        }
        let hint = match did_you_mean(name.get_ref(), self.stages.names()) {
            Some(close) => format!("did you mean `{close}`?"),
            None => format!(
                "the stages are {}",
                self.stages.names().collect::<Vec<_>>().join(", ")
            ),
        };
        self.error(name.span(), format!("unknown stage `{}`", name.get_ref()))
            .hint = Some(hint);
        None
    }

    fn input(&mut self, input: Spanned<RawInput>) -> Option<Step> {
        let span = input.span();
        let input = input.into_inner();
        match (&input.insert_at, &input.tick) {
            (Some(_), Some(tick)) => {
                self.error(tick.span(), "an input either inserts events (`insert_at`) or ticks a stage (`tick`), not both");
                None
            }
            (None, None) => {
                self.error(
                    span,
                    "an input needs `insert_at` (where its events go) or `tick` (a timed stage)",
                );
                None
            }
            (None, Some(_)) => self.tick(input),
            (Some(_), None) => self.insert(input, span),
        }
    }

    fn tick(&mut self, mut input: RawInput) -> Option<Step> {
        let stage = input.tick.take().expect("a tick input");
        let mut stray = input.payload_kinds();
        stray.extend(input.event_settings());
        for (key, span) in stray {
            self.error(span, format!("`{key}` does not apply to a `tick` input"));
        }
        self.known_stage(&stage)?;
        let name = stage.get_ref();
        if !self.stages.config.transforms.contains_key(name) || !(self.stages.ticks)(name) {
            self.error(
                stage.span(),
                format!("stage `{name}` cannot tick: its plugin does not export `tick`"),
            )
            .hint = Some("only a `timed-processor` plugin (e.g. `window`) ticks".into());
            return None;
        }
        Some(Step::Tick {
            stage: stage.into_inner(),
            now_ms: input.now_ms.map(Spanned::into_inner),
        })
    }

    fn insert(&mut self, mut input: RawInput, span: Range<usize>) -> Option<Step> {
        let stage = input.insert_at.take().expect("an insert input");
        if let Some(now) = &input.now_ms {
            self.error(now.span(), "`now_ms` applies to a `tick` input only");
        }
        let kinds = input.payload_kinds();
        match kinds.as_slice() {
            [] => {
                self.error(
                    span,
                    "an input needs its events: `events`, `file`, `recording` or `payload`",
                );
                return None;
            }
            [_] => {}
            [(first, _), (second, at), ..] => {
                self.error(
                    at.clone(),
                    format!("an input has one kind of payload: `{first}` or `{second}`, not both"),
                );
                return None;
            }
        }
        if input.recording.is_some() {
            for (key, at) in input.event_settings() {
                self.error(
                    at,
                    format!("`{key}` does not apply to a recording: its records carry their own"),
                );
            }
        }
        self.known_stage(&stage)?;
        let payloads: Vec<Bytes> = if let Some(events) = input.events {
            events.into_inner().iter().map(payload_of).collect()
        } else if let Some(payload) = input.payload {
            vec![Bytes::from(payload.into_inner())]
        } else if let Some(file) = input.file {
            self.json_lines(&file)?
        } else if let Some(recording) = input.recording {
            let events = self.recording(&recording)?;
            return Some(Step::Insert {
                stage: stage.into_inner(),
                events,
                stamp_now: false,
            });
        } else {
            unreachable!("one payload kind, checked above")
        };
        let origin: std::sync::Arc<str> = stage.get_ref().as_str().into();
        let events = payloads
            .into_iter()
            .map(|payload| Event {
                key: input
                    .key
                    .as_ref()
                    .map(|key| Bytes::from(key.get_ref().clone())),
                payload,
                headers: input
                    .headers
                    .as_ref()
                    .map(|headers| {
                        headers
                            .get_ref()
                            .iter()
                            .map(|(name, value)| (name.clone(), Bytes::from(value.clone())))
                            .collect()
                    })
                    .unwrap_or_default(),
                timestamp_ms: input.timestamp_ms.as_ref().map_or(0, |at| *at.get_ref()),
                origin: origin.clone(),
            })
            .collect();
        Some(Step::Insert {
            stage: stage.into_inner(),
            events,
            stamp_now: input.timestamp_ms.is_none(),
        })
    }

    fn read(&mut self, path: &Spanned<PathBuf>) -> Option<String> {
        let full = self.base.join(path.get_ref());
        match std::fs::read_to_string(&full) {
            Ok(text) => Some(text),
            Err(error) => {
                self.error(
                    path.span(),
                    format!("cannot read {}: {error}", full.display()),
                )
                .hint = Some("paths are relative to the test file".into());
                None
            }
        }
    }

    /// A JSON-lines file: one payload per non-empty line, each checked to be JSON.
    fn json_lines(&mut self, path: &Spanned<PathBuf>) -> Option<Vec<Bytes>> {
        let text = self.read(path)?;
        let mut payloads = Vec::new();
        for (number, line) in text
            .lines()
            .enumerate()
            .filter(|(_, line)| !line.trim().is_empty())
        {
            if let Err(error) = serde_json::from_str::<Value>(line) {
                self.error(
                    path.span(),
                    format!(
                        "{} line {}: not JSON: {error}",
                        path.get_ref().display(),
                        number + 1
                    ),
                );
                return None;
            }
            payloads.push(Bytes::from(line.trim().to_owned()));
        }
        Some(payloads)
    }

    /// Records saved by `sluice tap --save`.
    fn recording(&mut self, path: &Spanned<PathBuf>) -> Option<Vec<Event>> {
        let text = self.read(path)?;
        let mut events = Vec::new();
        for (number, line) in text
            .lines()
            .enumerate()
            .filter(|(_, line)| !line.trim().is_empty())
        {
            match EventRecord::from_line(line) {
                Ok(record) => events.push(record.into_event()),
                Err(error) => {
                    self.error(
                        path.span(),
                        format!("{} line {}: {error}", path.get_ref().display(), number + 1),
                    );
                    return None;
                }
            }
        }
        Some(events)
    }

    fn output(&mut self, output: Spanned<RawOutput>) -> Option<OutputCheck> {
        let span = output.span();
        let output = output.into_inner();
        let from = self.point(&output.extract_from)?;
        let kinds: Vec<(&str, Range<usize>)> = [
            output.events.as_ref().map(|v| ("events", v.span())),
            output.fields.as_ref().map(|v| ("fields", v.span())),
            output.conditions.as_ref().map(|v| ("conditions", v.span())),
        ]
        .into_iter()
        .flatten()
        .collect();
        if let [(first, _), (second, at), ..] = kinds.as_slice() {
            self.error(
                at.clone(),
                format!("an output checks `{first}` or `{second}`, not both"),
            );
            return None;
        }
        let count = output.count.map(Spanned::into_inner);
        let expect = if let Some(events) = output.events {
            Expect::Events(events.into_inner())
        } else if let Some(fields) = output.fields {
            Expect::Fields(fields.into_inner())
        } else if let Some(conditions) = output.conditions {
            let mut parsed = Vec::new();
            for condition in conditions.into_inner() {
                let at = condition.span();
                let value = condition.into_inner();
                match Predicate::try_from(value.clone()) {
                    Ok(predicate) => parsed.push(Condition {
                        text: value.to_string(),
                        predicate,
                    }),
                    Err(error) => {
                        self.error(at, format!("not a condition: {error}"));
                    }
                }
            }
            Expect::Conditions(parsed)
        } else if count.is_some() {
            Expect::Count
        } else {
            self.error(
                span,
                "an output needs `events`, `fields`, `conditions` or `count`",
            );
            return None;
        };
        Some(OutputCheck {
            from,
            expect,
            count,
        })
    }

    /// `extract_from`: a stage, or a stage's route, whose output a test can see.
    fn point(&mut self, text: &Spanned<String>) -> Option<Point> {
        let (stage, route) = match text.get_ref().split_once('.') {
            Some((stage, route)) => (stage, Some(route)),
            None => (text.get_ref().as_str(), None),
        };
        self.known_stage(&Spanned::new(text.span(), stage.to_owned()))?;
        let config = self.stages.config;
        let routes = config
            .transforms
            .get(stage)
            .map(|_| crate::topology::declared_routes(config, stage))
            .unwrap_or_default();
        match route {
            Some(route) if route != DEAD_LETTER && !routes.iter().any(|r| r == route) => {
                let hint = if routes.is_empty() {
                    format!("`{stage}` declares no routes: extract from `{stage}`")
                } else {
                    format!("`{stage}` declares {}", routes.join(", "))
                };
                self.error(
                    text.span(),
                    format!("stage `{stage}` has no route `{route}`"),
                )
                .hint = Some(hint);
                return None;
            }
            Some(_) if config.sinks.contains_key(stage) => {
                self.error(
                    text.span(),
                    format!("`{stage}` is a sink: extract what reaches it, `{stage}`"),
                );
                return None;
            }
            None if !routes.is_empty()
                && !config
                    .graph()
                    .consumers()
                    .contains_key(&(stage.to_owned(), None)) =>
            {
                self.error(text.span(), format!("no stage reads the default output of `{stage}`: what it emits there is dead-lettered"))
                    .hint = Some(format!("extract from one of its routes: {}", routes.join(", ")));
                return None;
            }
            _ => {}
        }
        Some(Point {
            stage: stage.to_owned(),
            route: route.map(str::to_owned),
        })
    }
}

/// An inline event's payload: the value as compact JSON.
fn payload_of(value: &Value) -> Bytes {
    Bytes::from(serde_json::to_vec(value).expect("a JSON value serializes"))
}
