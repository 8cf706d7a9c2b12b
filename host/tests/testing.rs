//! `sluice test` in process: a config's `[[tests]]` run against the real filter, map,
//! window and hostile plugins (`scripts/build-plugins`, or `$SLUICE_PLUGIN_DIR`).

mod common;

use std::path::Path;

use sluice::event::Event;
use sluice::event_record::EventRecord;
use sluice::testing::{SpecError, Suite, SuiteError, TestResult};

/// Readings in over HTTP; hot ones reshaped to `out`; every reading into a 10 s
/// window keyed by device (on the wall clock, 1 s late at most) to `rollups`; and a
/// hostile stage that panics on `poison`.
const CONFIG: &str = r#"
data_dir = "data"

[plugins.filter]
path = "{filter}"
[plugins.map]
path = "{map}"
[plugins.window]
path = "{window}"
[plugins.hostile]
path = "{hostile}"

[sources.readings]
type = "http"
listen = "127.0.0.1:0"

[transforms.hot]
type = "wasm"
plugin = "filter"
inputs = ["readings"]
config = { when = { field = "temperature", gt = 30.0 } }

[transforms.shape]
type = "wasm"
plugin = "map"
inputs = ["hot"]
config = { rename = { temperature = "temperature_c" }, set = { site = "plant-1" } }

[transforms.rollup]
type = "wasm"
plugin = "window"
inputs = ["readings"]
tick_interval_ms = 1000
config = { size_ms = 10000, key = "device_id", field = "temperature", time_field = "ts", lateness_ms = 1000, aggregates = ["count", "mean"] }

[transforms.risky]
type = "wasm"
plugin = "hostile"
inputs = ["readings"]
config = { behaviour = "panic" }

[sinks.out]
type = "file"
inputs = ["shape"]
path = "out"

[sinks.rollups]
type = "file"
inputs = ["rollup"]
path = "rollups"

[sinks.risky_out]
type = "file"
inputs = ["risky"]
path = "risky"
"#;

/// A reading dated in 2100, so that the wall-clock window never finds it late.
const HOT: &str = r#"{ device_id = "d1", ts = 4102444801000, temperature = 35.5 }"#;

/// `pipeline.toml` (CONFIG with its `[[tests]]` after it, `embedded`) and
/// `pipeline.test.toml` (`beside`) in a fresh directory, with `files` next to them.
fn suite_in(
    embedded: &str,
    beside: &str,
    files: &[(&str, &str)],
) -> (tempfile::TempDir, Result<Suite, SuiteError>) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = CONFIG.to_owned();
    for (name, file) in [
        ("filter", "filter"),
        ("map", "map"),
        ("window", "window"),
        ("hostile", "fixture-hostile"),
    ] {
        let path = common::plugin_path(file).canonicalize().unwrap();
        config = config.replace(&format!("{{{name}}}"), &path.display().to_string());
    }
    config.push_str(embedded);
    std::fs::write(dir.path().join("pipeline.toml"), config).unwrap();
    std::fs::write(dir.path().join("pipeline.test.toml"), beside).unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let suite = Suite::load(&dir.path().join("pipeline.test.toml"));
    (dir, suite)
}

fn run(beside: &str, files: &[(&str, &str)]) -> Vec<TestResult> {
    let (_dir, suite) = suite_in("", beside, files);
    let mut suite = suite.unwrap_or_else(|error| panic!("{error}"));
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(suite.run(None, |_| {}))
}

/// Every failure line of `result`, titles first.
fn failure_text(result: &TestResult) -> String {
    result
        .failures
        .iter()
        .map(|failure| format!("{}\n{}", failure.title, failure.lines.join("\n")))
        .collect::<Vec<_>>()
        .join("\n")
}

fn only(results: &[TestResult]) -> &TestResult {
    assert_eq!(results.len(), 1, "{results:?}");
    &results[0]
}

/// The problems of a test file that must be refused: (message, line, column) of each.
fn refused(beside: &str, files: &[(&str, &str)]) -> Vec<(String, usize, usize)> {
    let (_dir, suite) = suite_in("", beside, files);
    let Err(SuiteError::Spec(SpecError::Invalid(files))) = suite else {
        panic!("the tests should be refused: {:?}", suite.err());
    };
    assert_eq!(files.len(), 1);
    assert!(
        files[0].file.ends_with("pipeline.test.toml"),
        "{}",
        files[0].file.display()
    );
    files[0]
        .diagnostics
        .iter()
        .zip(files[0].positions())
        .map(|(diagnostic, at)| {
            let (line, column) = at.expect("a place");
            (diagnostic.message.clone(), line, column)
        })
        .collect()
}

#[test]
fn a_hot_reading_is_reshaped_and_the_test_passes() {
    let results = run(
        &format!(
            r#"
[[tests]]
name = "hot readings are reshaped"
[[tests.inputs]]
insert_at = "readings"
events = [ {HOT}, {{ device_id = "d2", ts = 4102444801000, temperature = 12.0 }} ]
[[tests.outputs]]
extract_from = "shape"
events = [ {{ device_id = "d1", ts = 4102444801000, temperature_c = 35.5, site = "plant-1" }} ]
[[tests.outputs]]
extract_from = "out"
fields = [ {{ temperature_c = 35.5 }} ]
[[tests.outputs]]
extract_from = "hot"
conditions = [ {{ field = "temperature", gt = 30.0 }} ]
count = 1
"#
        ),
        &[],
    );
    let result = only(&results);
    assert!(result.passed(), "{}", failure_text(result));
}

#[test]
fn a_wrong_expectation_fails_with_a_field_by_field_diff() {
    let results = run(
        &format!(
            r#"
[[tests]]
name = "a wrong expectation"
[[tests.inputs]]
insert_at = "hot"
events = [ {HOT} ]
[[tests.outputs]]
extract_from = "shape"
events = [ {{ device_id = "d1", ts = 4102444801000, temperature_c = 31.0 }} ]
[[tests.outputs]]
extract_from = "out"
count = 2
"#
        ),
        &[],
    );
    let result = only(&results);
    assert_eq!(result.failures.len(), 2, "{}", failure_text(result));
    let diff = &result.failures[0];
    assert_eq!(diff.title, "shape, event 1 of 1");
    assert_eq!(
        diff.lines,
        [
            r#"expected:  {"device_id":"d1","temperature_c":31.0,"ts":4102444801000}"#,
            r#"actual:    {"device_id":"d1","site":"plant-1","temperature_c":35.5,"ts":4102444801000}"#,
            "field temperature_c: expected 31.0, got 35.5",
            "field site: not expected",
        ]
    );
    let count = &result.failures[1];
    assert_eq!(count.title, "out: count");
    assert_eq!(count.lines[0], "expected 2 event(s), got 1");
    assert!(
        count.lines[2].contains(r#""temperature_c":35.5"#),
        "{count:?}"
    );
}

#[test]
fn dead_letters_are_checked_and_unexpected_ones_fail_the_test() {
    let results = run(
        r#"
[[tests]]
name = "not JSON is a dead letter of shape"
[[tests.inputs]]
insert_at = "shape"
payload = "temperature=35"
[[tests.inputs]]
insert_at = "shape"
events = [ { temperature = 35, oops = true } ]
[[tests.dead_letters]]
stage = "shape"
reason = "invalid JSON"
count = 1

[[tests]]
name = "a dead letter nobody expects"
[[tests.inputs]]
insert_at = "rollup"
events = [ { device_id = "d1", temperature = 35 } ]
"#,
        &[],
    );
    assert!(results[0].passed(), "{}", failure_text(&results[0]));
    let unexpected = failure_text(&results[1]);
    assert!(
        unexpected.starts_with(
            "unexpected dead letters of rollup (1)\nevent has no `ts` (epoch ms) for its time"
        ),
        "{unexpected}"
    );
}

#[test]
fn a_plugin_that_traps_fails_the_test_with_its_error() {
    let results = run(
        r#"
[[tests]]
name = "poison"
[[tests.inputs]]
insert_at = "risky"
payload = "poison"
[[tests.outputs]]
extract_from = "risky_out"
count = 1
"#,
        &[],
    );
    let text = failure_text(only(&results));
    assert!(
        text.contains("unexpected dead letters of risky (1)"),
        "{text}"
    );
    assert!(text.contains("panic"), "the trap's reason is shown: {text}");
    assert!(
        text.contains("risky_out: count\nexpected 1 event(s), got 0"),
        "{text}"
    );
}

#[test]
fn a_window_closes_only_on_a_tick_past_its_end_and_lateness() {
    let readings = r#"
[[tests.inputs]]
insert_at = "readings"
events = [
  { device_id = "d1", ts = 4102444801000, temperature = 20.0 },
  { device_id = "d1", ts = 4102444809000, temperature = 23.0 },
]
"#;
    let results = run(
        &format!(
            r#"
[[tests]]
name = "too early"
{readings}
[[tests.inputs]]
tick = "rollup"
now_ms = 4102444810500
[[tests.outputs]]
extract_from = "rollup"
count = 0

[[tests]]
name = "closed"
{readings}
[[tests.inputs]]
tick = "rollup"
now_ms = 4102444810500
[[tests.inputs]]
tick = "rollup"
now_ms = 4102444811000
[[tests.outputs]]
extract_from = "rollups"
events = [ {{ device_id = "d1", window_start = 4102444800000, window_end = 4102444810000, count = 2, mean = 21.5 }} ]
"#
        ),
        &[],
    );
    for result in &results {
        assert!(result.passed(), "{}: {}", result.name, failure_text(result));
    }
}

#[test]
fn a_recording_and_a_json_lines_file_are_inserted_as_saved() {
    let hot = Event {
        key: Some("d1".into()),
        headers: vec![("team".into(), "ops".into())],
        timestamp_ms: 4_102_444_801_000,
        ..Event::new(&br#"{"device_id":"d1","temperature":40.0}"#[..], "readings")
    };
    let text = Event::new(&b"not json"[..], "readings");
    let recording = [
        EventRecord::of("readings", None, &hot).to_line(),
        EventRecord::of("readings", None, &text).to_line(),
    ]
    .join("\n");
    let results = run(
        r#"
[[tests]]
name = "replayed"
[[tests.inputs]]
insert_at = "hot"
recording = "tap.jsonl"
[[tests.inputs]]
insert_at = "shape"
file = "more.jsonl"
[[tests.outputs]]
extract_from = "shape"
events = [
  { device_id = "d1", temperature_c = 40.0, site = "plant-1" },
  { device_id = "d3", temperature_c = 50.0, site = "plant-1" },
]
[[tests.dead_letters]]
stage = "hot"
reason = "invalid JSON"
"#,
        &[
            ("tap.jsonl", &recording),
            (
                "more.jsonl",
                "{\"device_id\":\"d3\",\"temperature\":50.0}\n\n",
            ),
        ],
    );
    let result = only(&results);
    assert!(result.passed(), "{}", failure_text(result));
}

#[test]
fn tests_in_the_config_and_beside_it_both_run() {
    let embedded = format!(
        "\n[[tests]]\nname = \"in the config\"\n[[tests.inputs]]\ninsert_at = \"shape\"\nevents = [ {HOT} ]\n[[tests.outputs]]\nextract_from = \"out\"\ncount = 1\n"
    );
    let beside = "[[tests]]\nname = \"beside it\"\n[[tests.inputs]]\ninsert_at = \"out\"\npayload = \"x\"\n[[tests.outputs]]\nextract_from = \"out\"\nevents = [\"x\"]\n";
    let (dir, suite) = suite_in(&embedded, beside, &[]);
    let suite = suite.unwrap_or_else(|error| panic!("{error}"));
    let names: Vec<&str> = suite.tests.iter().map(|test| test.name.as_str()).collect();
    assert_eq!(names, ["in the config", "beside it"]);
    let files: Vec<&Path> = suite.files();
    assert_eq!(
        files,
        [
            dir.path().join("pipeline.toml"),
            dir.path().join("pipeline.test.toml")
        ]
    );

    // Neither file with a test: an error naming both.
    std::fs::write(dir.path().join("pipeline.test.toml"), "").unwrap();
    let config = std::fs::read_to_string(dir.path().join("pipeline.toml")).unwrap();
    std::fs::write(
        dir.path().join("pipeline.toml"),
        config.replace(&embedded, ""),
    )
    .unwrap();
    let error = Suite::load(&dir.path().join("pipeline.toml"))
        .err()
        .expect("no tests");
    assert!(matches!(error, SuiteError::Spec(SpecError::NoTests { .. })));
    let message = error.to_string();
    assert!(
        message.contains("pipeline.toml (`[[tests]]`) nor")
            && message.contains("pipeline.test.toml"),
        "{message}"
    );
}

#[test]
fn each_invalid_test_is_refused_with_its_place_before_anything_runs() {
    let beside = r#"[[tests]]
name = "bad"
[[tests.inputs]]
insert_at = "shap"
payload = "x"
[[tests.inputs]]
insert_at = "shape"
payload = "x"
events = [ {} ]
[[tests.inputs]]
tick = "shape"
[[tests.inputs]]
insert_at = "shape"
file = "missing.jsonl"
[[tests.inputs]]
insert_at = "shape"
recording = "status.jsonl"
[[tests.outputs]]
extract_from = "shape.alerts"
count = 1
[[tests.outputs]]
extract_from = "out"
"#;
    let status = "{\"tap\":{\"stage\":\"shape\",\"connected\":true}}\n";
    let problems = refused(beside, &[("status.jsonl", status)]);
    let messages: Vec<(&str, usize, usize)> = problems
        .iter()
        .map(|(message, line, column)| (message.as_str(), *line, *column))
        .collect();
    assert_eq!(messages[0], ("unknown stage `shap`", 4, 13));
    assert_eq!(
        messages[1],
        (
            "an input has one kind of payload: `events` or `payload`, not both",
            8,
            11
        )
    );
    assert_eq!(
        messages[2],
        (
            "stage `shape` cannot tick: its plugin does not export `tick`",
            11,
            8
        )
    );
    assert!(
        messages[3].0.starts_with("cannot read ") && messages[3].0.contains("missing.jsonl"),
        "{messages:?}"
    );
    assert_eq!((messages[3].1, messages[3].2), (14, 8));
    assert!(
        messages[4]
            .0
            .starts_with("status.jsonl line 1: not an event record: unknown field `tap`"),
        "{messages:?}"
    );
    assert_eq!((messages[4].1, messages[4].2), (17, 13));
    assert_eq!(messages[5], ("stage `shape` has no route `alerts`", 19, 16));
    assert_eq!(
        messages[6],
        (
            "an output needs `events`, `fields`, `conditions` or `count`",
            21,
            1
        )
    );
    assert_eq!(messages.len(), 7, "{messages:?}");

    // Keys that belong to written events, on a tick or a recording (whose records carry
    // their own), each at its place.
    let recording = "{\"stage\":\"valid\",\"route\":null,\"key\":null,\"timestamp_ms\":1,\"headers\":{},\"payload\":{},\"payload_encoding\":\"json\"}\n";
    let problems = refused(
        "[[tests]]\nname = \"t\"\n[[tests.inputs]]\ntick = \"shape\"\nkey = \"k\"\n\
         [[tests.inputs]]\ninsert_at = \"shape\"\nrecording = \"r.jsonl\"\ntimestamp_ms = 5\n",
        &[("r.jsonl", recording)],
    );
    let messages: Vec<(&str, usize)> = problems
        .iter()
        .map(|(message, line, _)| (message.as_str(), *line))
        .collect();
    assert_eq!(messages[0], ("`key` does not apply to a `tick` input", 5));
    assert_eq!(
        messages[2],
        (
            "`timestamp_ms` does not apply to a recording: its records carry their own",
            9
        )
    );

    // An unknown key, at its place.
    let problems = refused(
        "[[tests]]\nname = \"t\"\n[[tests.inputs]]\ninsert_at = \"shape\"\nevnts = [1]\n",
        &[],
    );
    assert_eq!(problems.len(), 1);
    assert!(
        problems[0].0.starts_with("unknown field `evnts`"),
        "{problems:?}"
    );
    assert_eq!((problems[0].1, problems[0].2), (5, 1));
}
