//! The `window` plugin in a running host: windows that close on time while no event
//! arrives, with results equal to a reference computed here; a host killed with open
//! windows that, restarted, reports every window whole (duplicates only of whole
//! results); late, out-of-order and duplicate events as documented; and a tick asked of
//! a plugin that has none refused at start.

mod harness;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use harness::*;

/// 2026-11-29T10:42:00Z
const T0: i64 = 1_795_948_920_000;

fn reading(seq: i64, ts: i64) -> String {
    format!(
        r#"{{"device_id":"d{}","seq":{seq},"temperature":{},"ts":{ts}}}"#,
        seq % 3,
        (seq % 50) as f64 * 0.5
    )
}

/// An HTTP source `ingest` on `port`, the window stage `per_window` configured by
/// `config` (a TOML table body), and file sinks for its results, its late route and
/// its dead letters.
fn pipeline(port: u16, tick: &str, config: &str) -> Pipeline {
    Pipeline::start(&format!(
        r#"
[plugins.window]
path = "{}"

[sources.ingest]
type = "http"
listen = "127.0.0.1:{port}"

[transforms.per_window]
type = "wasm"
plugin = "window"
inputs = ["ingest"]
routes = ["late"]
{tick}

[transforms.per_window.config]
key = "device_id"
field = "temperature"
time_field = "ts"
{config}

[sinks.results]
type = "file"
inputs = ["per_window"]
path = "results"

[sinks.late]
type = "file"
inputs = ["per_window.late"]
path = "late"

[sinks.refused]
type = "file"
inputs = ["per_window.dead_letter"]
path = "refused"
"#,
        plugin("window")
    ))
}

fn post(port: u16, lines: &[String]) {
    let (status, answer) = http_post(port, "/ingest", &[], lines.join("\n").as_bytes());
    assert_eq!(status, 200, "{answer}");
}

/// The reference: per (device, window start), the readings' count, sum, min, max, the
/// value of the earliest and of the latest.
fn reference(readings: &[(i64, i64)], size_ms: i64) -> BTreeMap<(String, i64), serde_json::Value> {
    let mut groups: BTreeMap<(String, i64), Vec<(i64, f64)>> = BTreeMap::new();
    for &(seq, ts) in readings {
        let value: serde_json::Value = serde_json::from_str(&reading(seq, ts)).unwrap();
        let device = value["device_id"].as_str().unwrap().to_owned();
        groups
            .entry((device, ts.div_euclid(size_ms) * size_ms))
            .or_default()
            .push((ts, value["temperature"].as_f64().unwrap()));
    }
    groups
        .into_iter()
        .map(|(group, values)| {
            let sum: f64 = values.iter().map(|(_, v)| v).sum();
            let first = values.iter().min_by_key(|(ts, _)| *ts).unwrap().1;
            let last = values.iter().rev().max_by_key(|(ts, _)| *ts).unwrap().1;
            let min = values.iter().map(|(_, v)| *v).fold(f64::INFINITY, f64::min);
            let max = values
                .iter()
                .map(|(_, v)| *v)
                .fold(f64::NEG_INFINITY, f64::max);
            let summary = serde_json::json!({
                "count": values.len(), "sum": sum, "min": min, "max": max,
                "mean": sum / values.len() as f64, "first": first, "last": last,
            });
            (group, summary)
        })
        .collect()
}

/// Results by (device, window start), each with how many times it came.
fn results(pipeline: &Pipeline) -> HashMap<(String, i64), Vec<serde_json::Value>> {
    let mut by_window: HashMap<(String, i64), Vec<serde_json::Value>> = HashMap::new();
    for result in read_lines(&pipeline.data("results")) {
        let device = result["device_id"].as_str().unwrap().to_owned();
        let start = result["window_start"].as_i64().unwrap();
        by_window.entry((device, start)).or_default().push(result);
    }
    by_window
}

fn assert_matches(result: &serde_json::Value, expected: &serde_json::Value) {
    for (name, value) in expected.as_object().unwrap() {
        let (got, want) = (result[name].as_f64().unwrap(), value.as_f64().unwrap());
        assert!(
            (got - want).abs() < 1e-9,
            "{name}: {got} != {want} in {result}"
        );
    }
}

#[test]
fn windows_close_on_time_while_no_event_arrives_with_the_reference_results() {
    let port = free_port();
    let pipeline = pipeline(
        port,
        "tick_interval_ms = 200",
        r#"size_ms = 1000
aggregates = ["count", "sum", "min", "max", "mean", "first", "last", "p50"]"#,
    );
    // Three seconds of readings from now on, in one POST; then nothing more.
    let base = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let readings: Vec<(i64, i64)> = (0..600).map(|seq| (seq, base + 100 + seq * 5)).collect();
    post(
        port,
        &readings
            .iter()
            .map(|&(seq, ts)| reading(seq, ts))
            .collect::<Vec<_>>(),
    );
    let expected = reference(&readings, 1000);
    wait_until(
        Duration::from_secs(30),
        "every window closed by ticks alone",
        || results(&pipeline).len() == expected.len(),
    );
    let got = results(&pipeline);
    for (window, summary) in &expected {
        let copies = &got[window];
        assert_eq!(copies.len(), 1, "{window:?} once: {copies:?}");
        assert_matches(&copies[0], summary);
        assert_eq!(copies[0]["window_end"], window.1 + 1000);
        // The median within the sketch's 1% of a value of the right rank.
        let p50 = copies[0]["p50"].as_f64().unwrap();
        assert!(p50 >= 0.0 && p50 <= 24.5 * 1.01, "{p50}");
    }
    assert!(read_lines(&pipeline.data("late")).is_empty());
    assert!(read_lines(&pipeline.data("refused")).is_empty());
}

#[test]
fn a_host_killed_with_open_windows_reports_every_window_whole_after_restart() {
    const SIZE: i64 = 5_000;
    let port = free_port();
    let mut pipeline = pipeline(
        port,
        "tick_interval_ms = 100",
        r#"size_ms = 5000
watermark = "events"
flush_on_stop = true
aggregates = ["count", "sum", "min", "max", "mean", "first", "last"]"#,
    );
    // 10 ms apart: 6,000 readings span 60 s of event time, 12 windows per device.
    let readings: Vec<(i64, i64)> = (0..6000).map(|seq| (seq, T0 + seq * 10)).collect();
    let lines: Vec<String> = readings.iter().map(|&(seq, ts)| reading(seq, ts)).collect();
    for chunk in lines[..3000].chunks(250) {
        post(port, chunk);
    }
    // Every POST was answered: those readings are in the window state. Some windows
    // have closed (their results may be in flight), the rest are open.
    pipeline.kill_9();
    pipeline.restart();
    for chunk in lines[3000..].chunks(250) {
        post(port, chunk);
    }
    assert!(pipeline.stop().success(), "{}", pipeline.host.log_text());

    let expected = reference(&readings, SIZE);
    let got = results(&pipeline);
    let missing: Vec<_> = expected.keys().filter(|w| !got.contains_key(w)).collect();
    assert!(missing.is_empty(), "windows lost: {missing:?}");
    let mut duplicated = Vec::new();
    for (window, summary) in &expected {
        for copy in &got[window] {
            assert_matches(copy, summary);
        }
        if got[window].len() > 1 {
            duplicated.push((window.clone(), got[window].len()));
        }
    }
    // A result repeats only if the kill came between the tick that emitted it and the
    // commit of that tick: only windows that had closed before the kill, each at most
    // once more.
    let killed_at = T0 + 3000 * 10;
    assert!(
        duplicated
            .iter()
            .all(|((_, start), copies)| start + SIZE <= killed_at && *copies == 2),
        "{duplicated:?}"
    );
    assert_eq!(
        got.len(),
        expected.len(),
        "no window that was not in the input"
    );
}

#[test]
fn late_out_of_order_and_duplicate_events_follow_the_rules() {
    let port = free_port();
    let pipeline = pipeline(
        port,
        "tick_interval_ms = 100",
        r#"size_ms = 1000
lateness_ms = 500
watermark = "events"
late = "route"
aggregates = ["count", "sum"]"#,
    );
    // Device d0 (seq % 3 == 0). Out of order within the lateness: counted.
    post(
        port,
        &[
            reading(0, T0 + 100),
            reading(3, T0 + 1_300),
            reading(6, T0 + 900),
        ],
    );
    // The watermark moves to T0 + 1_600 - 500: [T0, T0 + 1000) is closed from now on.
    post(port, &[reading(9, T0 + 1_600)]);
    // Late: its window closed. A duplicate of an on-time reading: counted again (the
    // window does not deduplicate; put a `dedup` stage before it). No time field: refused.
    post(
        port,
        &[
            reading(12, T0 + 999),
            reading(9, T0 + 1_600),
            r#"{"device_id":"d0","temperature":1.0}"#.to_owned(),
        ],
    );
    post(port, &[reading(15, T0 + 3_000)]);
    wait_until(Duration::from_secs(30), "the first two windows", || {
        results(&pipeline).len() >= 2
    });
    let got = results(&pipeline);
    let first = &got[&("d0".to_owned(), T0)][0];
    assert_eq!(
        (first["count"].as_u64(), first["sum"].as_f64()),
        (Some(2), Some(3.0)),
        "{first}"
    );
    let second = &got[&("d0".to_owned(), T0 + 1000)][0];
    assert_eq!(second["count"], 3, "the duplicate counts: {second}");
    let late = read_lines(&pipeline.data("late"));
    assert_eq!(late.len(), 1, "{late:?}");
    assert_eq!(late[0]["seq"], 12);
    let refused = read_lines(&pipeline.data("refused"));
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(
        refused[0]["reason"].as_str().unwrap().contains("`ts`"),
        "{refused:?}"
    );
}

#[test]
fn a_tick_interval_for_a_plugin_without_tick_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pipeline.toml");
    std::fs::write(
        &config,
        format!(
            r#"data_dir = "{}"
[plugins.filter]
path = "{}"
[sources.ingest]
type = "http"
listen = "127.0.0.1:{}"
[transforms.hot]
type = "wasm"
plugin = "filter"
inputs = ["ingest"]
tick_interval_ms = 1000
config = {{ when = {{ field = "t", gt = 1.0 }} }}
[sinks.out]
type = "file"
inputs = ["hot"]
path = "out"
"#,
            dir.path().join("data").display(),
            plugin("filter"),
            free_port()
        ),
    )
    .unwrap();
    let run = std::process::Command::new(sluice_binary())
        .arg("run")
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success());
    assert!(
        stderr.contains("stage `hot`") && stderr.contains("does not export `tick`"),
        "{stderr}"
    );
}

#[test]
fn a_tick_that_floods_outputs_state_or_time_is_stopped_at_its_limits() {
    let pipeline = HttpPipeline::start(
        "",
        &format!(
            r#"
[plugins.outputs]
path = "{flood}"
limits = {{ outputs_per_call = 100 }}

[plugins.state]
path = "{flood}"
limits = {{ state_write_bytes_per_call = 1048576 }}

[plugins.forever]
path = "{flood}"
limits = {{ timeout_ms = 200 }}

[transforms.output_flood]
type = "wasm"
plugin = "outputs"
inputs = ["ingest"]
tick_interval_ms = 200
config = {{ behaviour = "outputs", count = 100000, size = 10 }}

[transforms.state_flood]
type = "wasm"
plugin = "state"
inputs = ["ingest"]
tick_interval_ms = 200
config = {{ behaviour = "state", count = 1000, size = 102400 }}

[transforms.endless]
type = "wasm"
plugin = "forever"
inputs = ["ingest"]
tick_interval_ms = 200
config = {{ behaviour = "loop" }}

[sinks.out]
type = "file"
inputs = ["output_flood", "state_flood", "endless"]
path = "out"
"#,
            flood = plugin("fixture-tick-flood")
        ),
        std::process::Stdio::null(),
    );
    let log_has = |text: &str| pipeline.host.log_text().contains(text);
    for _ in 0..300 {
        if log_has("limits.outputs_per_call = 100")
            && log_has("limits.state_write_bytes_per_call = 1048576")
            && log_has("ran past its 200ms deadline")
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = pipeline.host.log_text();
    assert!(log.contains("limits.outputs_per_call = 100"), "{log}");
    assert!(
        log.contains("limits.state_write_bytes_per_call = 1048576"),
        "{log}"
    );
    assert!(log.contains("ran past its 200ms deadline"), "{log}");
    // The stages still take events: each forwards what it is given.
    let (status, _) = pipeline.post("/ingest", &[], br#"{"seq":1}"#);
    assert_eq!(status, 200, "{}", pipeline.host.log_text());
    let out = read_lines(&pipeline.data("out"));
    assert_eq!(
        out.len(),
        3,
        "the event through each stage, nothing from a refused tick"
    );
    assert!(out.iter().all(|line| line["seq"] == 1), "{out:?}");
    let metrics = pipeline.host.metrics();
    for stage in ["output_flood", "state_flood", "endless"] {
        let errors = metrics
            .lines()
            .find_map(|line| {
                line.strip_prefix(&format!("sluice_errors_total{{stage=\"{stage}\"}} "))
            })
            .unwrap_or_else(|| panic!("no sluice_errors_total for {stage}:\n{metrics}"));
        assert!(
            errors.trim().parse::<f64>().unwrap() >= 1.0,
            "{stage}: {errors}"
        );
    }
    // Nothing of the state flood was kept: a refused tick's writes are dropped.
    let state = std::fs::metadata(pipeline.data("state.redb"))
        .unwrap()
        .len();
    assert!(state < 4 << 20, "state file {state} bytes");
}
