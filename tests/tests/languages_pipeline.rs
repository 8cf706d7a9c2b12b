//! The units-router plugin of every language inside a running pipeline: HTTP in, the
//! plugin, files out per route. Every language writes the same bytes as Rust, and the
//! Python and JavaScript SDKs reach state, metrics, logs and routes as the Rust one does.

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

/// What a pipeline running the device-counter plugin `plugin_name` shows a user: the
/// files of its routes, its dead letters, its plugin metrics and its log lines.
struct CounterRun {
    first: String,
    repeat: String,
    rejects: String,
    metrics: Vec<String>,
    logs: Vec<String>,
}

fn counter_run(plugin_name: &str) -> CounterRun {
    let stages = format!(
        r#"
[plugins.counter]
path = "{plugin}"
[transforms.count]
type = "wasm"
plugin = "counter"
inputs = ["ingest"]
routes = ["first", "repeat"]
[sinks.first]
type = "file"
inputs = ["count.first"]
path = "first"
[sinks.repeat]
type = "file"
inputs = ["count.repeat"]
path = "repeat"
[sinks.rejects]
type = "file"
inputs = ["count.dead_letter"]
path = "rejects"
"#,
        plugin = plugin(plugin_name)
    );
    let pipeline = HttpPipeline::start("", &stages, Stdio::null());
    // Two requests, two batches: the counts carry over through the stage's state.
    for body in [
        "{\"device_id\":\"a\"}\n{\"device_id\":\"b\"}\n{\"device_id\":\"a\"}\n{\"x\":1}\n",
        "{\"device_id\":\"a\"}\n{\"device_id\":\"c\"}\n{\"device_id\":\"b\"}\n",
    ] {
        let (status, response) = pipeline.post("/ingest", &[], body.as_bytes());
        assert_eq!(status, 200, "{response}\n{}", pipeline.host.log_text());
    }
    let read = |sink: &str| {
        let mut text = String::new();
        for entry in std::fs::read_dir(pipeline.data(sink)).unwrap() {
            text.push_str(&std::fs::read_to_string(entry.unwrap().path()).unwrap());
        }
        text
    };
    let rejects = read("rejects")
        .lines()
        .map(|line| {
            let reject: serde_json::Value = serde_json::from_str(line).unwrap();
            format!("{} {}", reject["reason"], reject["payload"])
        })
        .collect::<Vec<_>>()
        .join("\n");
    let mut metrics: Vec<String> = pipeline
        .host
        .metrics()
        .lines()
        .filter(|line| line.starts_with("sluice_plugin_"))
        .map(str::to_owned)
        .collect();
    metrics.sort();
    let logs = pipeline
        .host
        .log_text()
        .lines()
        .filter_map(|line| line.find("new device").map(|at| line[at..].to_owned()))
        .collect();
    let run = CounterRun {
        first: read("first"),
        repeat: read("repeat"),
        rejects,
        metrics,
        logs,
    };
    let HttpPipeline { host, .. } = pipeline;
    assert!(host.stop().success());
    run
}

#[test]
fn python_and_javascript_sdk_plugins_use_state_metrics_log_and_routes_like_rust() {
    let reference = counter_run("fixture-device-counter");
    assert_eq!(
        reference.first,
        "{\"device_id\":\"a\",\"seen\":1}\n{\"device_id\":\"b\",\"seen\":1}\n{\"device_id\":\"c\",\"seen\":1}\n"
    );
    assert_eq!(
        reference.repeat,
        "{\"device_id\":\"a\",\"seen\":2}\n{\"device_id\":\"a\",\"seen\":3}\n{\"device_id\":\"b\",\"seen\":2}\n"
    );
    assert_eq!(
        reference.rejects,
        "\"missing string field `device_id`\" \"{\\\"x\\\":1}\""
    );
    assert_eq!(
        reference.metrics,
        [
            "sluice_plugin_devices_seen{stage=\"count\"} 3",
            "sluice_plugin_events_counted{stage=\"count\"} 6",
            "sluice_plugin_last_seen{stage=\"count\"} 2",
            "sluice_plugin_log_dropped_total{stage=\"count\"} 0",
        ]
    );
    assert_eq!(
        reference.logs,
        ["a", "b", "c"].map(|d| format!("new device stage=\"count\" fields=device_id={d}"))
    );
    for language in ["python", "js"] {
        let run = counter_run(&format!("fixture-device-counter-{language}"));
        assert_eq!(run.first, reference.first, "{language}");
        assert_eq!(run.repeat, reference.repeat, "{language}");
        assert_eq!(run.rejects, reference.rejects, "{language}");
        assert_eq!(run.metrics, reference.metrics, "{language}");
        assert_eq!(run.logs, reference.logs, "{language}");
    }
}
