//! A running pipeline stays bounded against a plugin that floods every host import:
//! the hostile fixture runs as four stages, each flooding one import (state values of
//! 8 MiB under new keys, log lines of 8 MiB, a new metric name per call, 100,000
//! outputs per event), and the test looks where a user would: the dead letters name
//! the limit, the host's memory, state file and log stay small, and `/metrics` holds a
//! bounded number of plugin series plus the count of dropped log lines.

mod harness;

use std::process::Stdio;
use std::time::Duration;

use harness::*;

const MIB: u64 = 1 << 20;

fn stages() -> String {
    format!(
        r#"
[plugins.hostile]
path = "{hostile}"
limits = {{ timeout_ms = 30000 }}

[transforms.state_flood]
type = "wasm"
plugin = "hostile"
inputs = ["ingest"]
config = {{ behaviour = "state-flood", size = 8388608, count = 1000 }}

# The log flood's own plugin entry, with a low rate: how many of its 300 lines pass
# depends on how long the flood takes (refills), which a loaded machine stretches.
[plugins.noisy]
path = "{hostile}"
limits = {{ timeout_ms = 30000, log_lines_per_second = 10 }}

[transforms.log_flood]
type = "wasm"
plugin = "noisy"
inputs = ["ingest"]
config = {{ behaviour = "log-flood", size = 8388608, count = 100 }}

[transforms.metric_flood]
type = "wasm"
plugin = "hostile"
inputs = ["ingest"]
config = {{ behaviour = "metric-flood", count = 1000000 }}

[transforms.output_flood]
type = "wasm"
plugin = "hostile"
inputs = ["ingest"]
config = {{ behaviour = "output-flood", count = 100000 }}

[sinks.out]
type = "file"
inputs = ["state_flood", "log_flood", "metric_flood", "output_flood"]
path = "out"
"#,
        hostile = plugin("fixture-hostile")
    )
}

fn dir_bytes(path: &std::path::Path) -> u64 {
    std::fs::read_dir(path)
        .map(|entries| entries.map(|e| e.unwrap().metadata().unwrap().len()).sum())
        .unwrap_or(0)
}

#[test]
fn floods_of_every_host_import_stay_bounded_and_are_dead_lettered_with_the_limit() {
    let pipeline = HttpPipeline::start("", &stages(), Stdio::null());
    let rss_before = pipeline.host.rss_bytes();
    let body = b"{\"poison\":1,\"seq\":1}\n{\"poison\":1,\"seq\":2}\n{\"poison\":1,\"seq\":3}\n";
    let (status, _) = pipeline.post("/ingest", &[], body);
    assert_eq!(status, 200, "{}", pipeline.host.log_text());

    let dead_dir = pipeline.data("dead_letter");
    wait_until(Duration::from_secs(120), "nine dead letters", || {
        read_lines(&dead_dir).len() >= 9
    });
    let dead = read_lines(&dead_dir);
    let reasons = |stage: &str| -> Vec<String> {
        dead.iter()
            .filter(|d| d["stage"] == stage)
            .map(|d| d["reason"].as_str().unwrap().to_owned())
            .collect()
    };
    for (stage, limit) in [
        (
            "state_flood",
            "state value of 8388608 bytes exceeds limits.state_value_bytes = 1048576",
        ),
        (
            "metric_flood",
            "metric `flood_100`, series #101 exceeds limits.metric_series = 100",
        ),
        (
            "output_flood",
            "100000 outputs from a 1-event batch exceeds limits.outputs_per_call = 10000",
        ),
    ] {
        let reasons = reasons(stage);
        assert_eq!(reasons.len(), 3, "{stage}: {reasons:?}");
        for reason in reasons {
            assert_eq!(
                reason,
                format!("stage `{stage}` (plugin `hostile`): {limit}"),
                "{stage}"
            );
        }
    }
    assert!(
        reasons("log_flood").is_empty(),
        "logging never fails a batch"
    );
    wait_until(Duration::from_secs(30), "the logged events", || {
        read_lines(&pipeline.data("out")).len() == 3
    });
    assert!(
        read_lines(&pipeline.data("out"))
            .iter()
            .all(|e| e == "logged"),
        "only the log stage's events go on"
    );

    let rss_after = pipeline.host.rss_bytes();
    let grown = rss_after.saturating_sub(rss_before);
    let state = pipeline.data("state.redb");
    let state_bytes = std::fs::metadata(&state).map(|m| m.len()).unwrap_or(0);
    let log_bytes = std::fs::metadata(&pipeline.host.log).unwrap().len();
    let metrics = pipeline.host.metrics();
    let flood_series = metrics
        .lines()
        .filter(|l| l.starts_with("sluice_plugin_flood_"))
        .count();
    eprintln!(
        "host RSS {} -> {} MiB; state {} KiB; log {} KiB; dead letters {} KiB; {flood_series} plugin series",
        rss_before / MIB,
        rss_after / MIB,
        state_bytes >> 10,
        log_bytes >> 10,
        dir_bytes(&dead_dir) >> 10,
    );
    assert!(grown < 150 * MIB, "the host grew by {} MiB", grown / MIB);
    assert!(state_bytes < 4 * MIB, "state.redb is {state_bytes} bytes");
    assert!(log_bytes < 2 * MIB, "the log is {log_bytes} bytes");
    assert_eq!(flood_series, 100, "{metrics}");
    let dropped = metrics
        .lines()
        .find(|l| l.starts_with("sluice_plugin_log_dropped_total{stage=\"log_flood\"}"))
        .unwrap_or_else(|| panic!("no dropped-log counter:\n{metrics}"));
    let dropped: u64 = dropped.rsplit(' ').next().unwrap().parse().unwrap();
    // 300 lines against 10 per second with a burst of 10: even a flood stretched over
    // 10 s keeps at most 110.
    assert!(dropped >= 190, "{dropped} log lines dropped");
}
