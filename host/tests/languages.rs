//! The same plugin written in Rust, Python, JavaScript and C gives the same bytes, and
//! interpreters stay inside their limits.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::json;
use sluice::event::Event;
use sluice::runtime::{CallFailure, Limits, Processed, World};

const LANGUAGES: [&str; 3] = ["python", "js", "c"];
const SAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../examples/samples/telemetry.jsonl"
);

/// The sample telemetry plus edge cases: a key and headers to carry over, integers,
/// negatives, exponents, whitespace, nesting, duplicates, non-objects.
fn inputs() -> Vec<Event> {
    let mut events: Vec<Event> = std::fs::read_to_string(SAMPLE)
        .unwrap()
        .lines()
        .map(|line| Event::new(line.as_bytes().to_vec(), "sample"))
        .collect();
    for extra in [
        r#"{"temperature":100}"#,
        r#"{"temperature":-40.0,"unit":"C"}"#,
        r#"{"temperature":8.1e1}"#,
        r#"  {"nested":{"temperature":"x"},"temperature":80.0001}  "#,
        r#"{"temperature":1,"temperature":99}"#,
        r#"{"temperature":true}"#,
        r#"[1,2]"#,
        r#""text""#,
        r#"{"temperature":3}x"#,
        r#"{}"#,
    ] {
        events.push(Event::new(extra.as_bytes().to_vec(), "edge"));
    }
    for event in &mut events {
        event.timestamp_ms = 1_764_374_400_000;
    }
    events[0].key = Some("sensor-000".into());
    events[0].headers.push(("trace".into(), "abc".into()));
    events
}

fn run(plugin: &str, limits: Limits) -> Processed {
    let runtime = runtime();
    let mut spec = spec("units", json!({"threshold_f": 176.0}));
    spec.limits = limits;
    pool(&runtime, plugin, World::Processor, spec)
        .process(&inputs())
        .unwrap()
}

#[test]
fn every_language_gives_the_same_bytes_as_rust() {
    let reference = run("units-router", Limits::default());
    assert_eq!(reference.emitted.len(), 15);
    assert_eq!(reference.rejected.len(), 7);
    assert_eq!(
        reference.emitted[0].event.key.as_deref(),
        Some(&b"sensor-000"[..])
    );
    for language in LANGUAGES {
        let processed = run(&format!("units-router-{language}"), Limits::default());
        for (n, (ours, theirs)) in reference.emitted.iter().zip(&processed.emitted).enumerate() {
            assert_eq!(ours, theirs, "{language}: output {n} differs");
        }
        assert_eq!(reference, processed, "{language}");
    }
}

#[test]
fn plugin_test_prints_the_same_for_every_language() {
    let print = |plugin: &str| {
        let output = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args([
                "plugin",
                "test",
                &plugin_path(plugin).to_string_lossy(),
                "-i",
                SAMPLE,
            ])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    };
    let reference = print("units-router");
    assert!(reference.contains("[alerts] "), "{reference}");
    for language in LANGUAGES {
        assert_eq!(
            print(&format!("units-router-{language}")),
            reference,
            "{language}"
        );
    }
}

#[test]
fn an_endless_loop_in_python_or_javascript_stops_at_the_deadline() {
    for language in ["python", "js"] {
        let runtime = runtime();
        let mut spec = spec("spin", json!({}));
        spec.limits = Limits {
            timeout: Duration::from_millis(300),
            ..Limits::default()
        };
        let pool = pool(
            &runtime,
            &format!("fixture-{language}-loop"),
            World::Processor,
            spec,
        );
        let error = pool.process(&events(&["{}"])).unwrap_err();
        assert_eq!(
            error.failure(),
            Some(&CallFailure::Timeout(Duration::from_millis(300))),
            "{language}: {error}"
        );
    }
}
