//! The units-router plugin of every language inside a running pipeline: HTTP in, the
//! plugin, files out per route. Every language writes the same bytes as Rust.

mod harness;

use std::process::Stdio;

use harness::*;

const SAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../examples/samples/telemetry.jsonl"
);

/// Run the sample through a pipeline with `plugin`; return the files' text per sink.
fn pipeline_output(plugin_name: &str) -> (String, String, String) {
    let stages = format!(
        r#"
[plugins.units]
path = "{plugin}"
[transforms.units]
type = "wasm"
plugin = "units"
inputs = ["ingest"]
routes = ["alerts", "normal"]
config = {{ threshold_f = 176.0 }}
[sinks.alerts]
type = "file"
inputs = ["units.alerts"]
path = "alerts"
[sinks.normal]
type = "file"
inputs = ["units.normal"]
path = "normal"
[sinks.rejects]
type = "file"
inputs = ["units.dead_letter"]
path = "rejects"
"#,
        plugin = plugin(plugin_name)
    );
    let pipeline = HttpPipeline::start("", &stages, Stdio::null());
    let data = pipeline.data("");
    let HttpPipeline {
        host,
        ingest,
        dir: _dir,
    } = pipeline;

    // The sample has a truncated line: send the valid JSON lines over HTTP, the broken
    // one as its own request (the HTTP source refuses invalid JSON itself).
    let body: String = std::fs::read_to_string(SAMPLE)
        .unwrap()
        .lines()
        .filter(|line| serde_json::from_str::<serde_json::Value>(line).is_ok())
        .map(|line| format!("{line}\n"))
        .collect();
    let (status, response) = http_post(ingest, "/ingest", &[], body.as_bytes());
    assert_eq!(status, 200, "{response}\n{}", host.log_text());
    let read = |sink: &str| {
        let dir = data.join(sink);
        let mut text = String::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            text.push_str(&std::fs::read_to_string(entry.unwrap().path()).unwrap());
        }
        text
    };
    let rejects: Vec<serde_json::Value> = read("rejects")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let reasons: Vec<String> = rejects
        .iter()
        .map(|r| format!("{} {}", r["reason"], r["payload"]))
        .collect();
    assert!(host.stop().success());
    (read("alerts"), read("normal"), reasons.join("\n"))
}

#[test]
fn every_language_writes_the_same_files_as_rust() {
    let reference = pipeline_output("units-router");
    assert_eq!(reference.0.lines().count(), 2, "{}", reference.0);
    assert_eq!(reference.1.lines().count(), 8);
    assert!(
        reference.2.contains("missing numeric field `temperature`"),
        "{}",
        reference.2
    );
    for language in ["python", "js", "c"] {
        assert_eq!(
            pipeline_output(&format!("units-router-{language}")),
            reference,
            "{language}"
        );
    }
}
