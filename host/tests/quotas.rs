//! What a plugin makes the host do is bounded: state, logs, metric series and outputs.
//! The hostile fixture floods each host import; each flood either fails its call with a
//! typed error that names the stage, the plugin and the limit (and the pool goes on),
//! or — for logs — is cut down and counted. Host memory stays bounded throughout: each
//! test runs in its own process under nextest, so `/proc/self` is the test's own.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use serde_json::json;
use sluice::runtime::{
    CallFailure, Capability, Grants, InstancePool, LimitExceeded, Limits, PluginError, Runtime,
    StageSpec, World,
};
use sluice::state::{StateStore, Transaction};

const GOOD: &str = r#"{"ok":true}"#;
const POISON: &str = r#"{"poison":true}"#;
const MIB: usize = 1 << 20;
/// How much the host may grow while a flood runs. The floods, unbounded, grew it by
/// 0.5–22 GB.
const RSS_GROWTH_BOUND: u64 = 100 << 20;

fn flood_spec(behaviour: &str, size: usize, count: usize) -> StageSpec {
    spec(
        "hostile-stage",
        json!({"behaviour": behaviour, "size": size, "count": count}),
    )
}

fn start(runtime: &Runtime, spec: StageSpec) -> InstancePool {
    pool(runtime, "fixture-hostile", World::Processor, spec)
}

/// A `kB` field of `/proc/self/status`, in bytes.
fn status_bytes(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    kb * 1024
}

/// Run `f` and fail the test if resident memory peaked past the bound meanwhile: the
/// peak (`VmHWM`, reset first), since the host frees what a failed call held.
fn bounded<R>(what: &str, f: impl FnOnce() -> R) -> R {
    std::fs::write("/proc/self/clear_refs", "5").expect("resetting the peak RSS");
    let before = status_bytes("VmRSS:");
    let result = f();
    let grown = status_bytes("VmHWM:").saturating_sub(before);
    eprintln!(
        "{what}: host RSS peaked {} KiB above its start",
        grown >> 10
    );
    assert!(
        grown < RSS_GROWTH_BOUND,
        "{what}: host RSS peaked {grown} bytes above its start"
    );
    result
}

/// The call's typed limit failure and the message a user sees.
fn limit_failure(
    result: Result<sluice::runtime::Processed, PluginError>,
) -> (LimitExceeded, String) {
    let error = result.expect_err("the flood should fail its call");
    let message = error.to_string();
    match error.failure() {
        Some(CallFailure::Limit(exceeded)) => (exceeded.clone(), message),
        other => panic!("expected a limit failure, got {other:?}: {message}"),
    }
}

fn still_serves(pool: &InstancePool) {
    let processed = pool.process(&events(&[GOOD])).expect("the pool recovers");
    assert_eq!(payloads(&processed), [GOOD]);
}

#[test]
fn a_huge_state_value_fails_the_call_before_the_host_keeps_it() {
    let runtime = runtime();
    let spec = flood_spec("state-flood", 8 * MIB, 1000);
    let store = spec.state.clone();
    let pool = start(&runtime, spec);
    let (exceeded, message) = bounded("state flood of 8 MiB values", || {
        limit_failure(pool.process(&events(&[POISON])))
    });
    assert_eq!(
        message,
        "stage `hostile-stage` (plugin `fixture-hostile`): state value of 8388608 bytes exceeds limits.state_value_bytes = 1048576"
    );
    assert_eq!(exceeded.limit, "state_value_bytes");
    let txn = Transaction::new(store, Arc::from("hostile-stage"));
    assert!(txn.scan_prefix("", 10, u64::MAX).unwrap().is_empty());
    still_serves(&pool);
}

#[test]
fn the_writes_one_call_holds_are_bounded() {
    let runtime = runtime();
    let pool = start(&runtime, flood_spec("state-flood", MIB / 2, 1000));
    let (exceeded, message) = bounded("state flood of 512 KiB values", || {
        limit_failure(pool.process(&events(&[POISON])))
    });
    assert_eq!(exceeded.limit, "state_write_bytes_per_call");
    assert_eq!(exceeded.allowed, 16 << 20);
    assert!(
        message.ends_with("bytes of state writes pending in one call exceeds limits.state_write_bytes_per_call = 16777216"),
        "{message}"
    );
}

#[test]
fn a_full_stage_gets_an_error_and_the_disk_stays_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    let mut spec = flood_spec("state-flood", MIB, 3);
    spec.state = StateStore::open(&path).unwrap();
    spec.limits.state.total_bytes = 8 << 20;
    let runtime = runtime();
    let pool = start(&runtime, spec);
    // Each call stores 3 MiB under new keys: two fit in 8 MiB, the third does not.
    for _ in 0..2 {
        pool.process(&events(&[POISON])).expect("fits the quota");
    }
    for _ in 0..20 {
        let (exceeded, message) = limit_failure(pool.process(&events(&[POISON])));
        assert_eq!(exceeded.limit, "state_total_bytes");
        assert!(
            message.starts_with("stage `hostile-stage` (plugin `fixture-hostile`): the stage's state after this call, 9437"),
            "{message}"
        );
        assert!(
            message.ends_with("bytes, exceeds limits.state_total_bytes = 8388608"),
            "{message}"
        );
    }
    let size = std::fs::metadata(&path).unwrap().len();
    eprintln!("state store after 22 floods of 3 MiB: {} KiB", size >> 10);
    assert!(size < 32 << 20, "the state file grew to {size} bytes");
    still_serves(&pool);
}

/// A `tracing` writer into a shared buffer, to measure what reaches the log.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn huge_log_floods_are_cut_and_rate_limited_not_failed() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_max_level(tracing::Level::INFO)
        .finish();
    let runtime = runtime();
    let mut spec = flood_spec("log-flood", 8 * MIB, 300);
    spec.limits.timeout = std::time::Duration::from_secs(60);
    let pool = start(&runtime, spec);
    let started = std::time::Instant::now();
    let processed = tracing::subscriber::with_default(subscriber, || {
        bounded("log flood of 8 MiB messages", || {
            pool.process(&events(&[POISON]))
                .expect("logging never fails a call")
        })
    });
    let elapsed = started.elapsed().as_secs_f64();
    assert_eq!(payloads(&processed), ["logged"]);
    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let written = log
        .lines()
        .filter(|l| l.contains("… [truncated from 8388608 bytes]"))
        .count();
    // A burst of one second's lines, plus what the rate refilled meanwhile.
    let allowed = 100 + (100.0 * elapsed).ceil() as usize;
    eprintln!(
        "300 log calls of 8 MiB in {elapsed:.2} s: {written} lines, {} KiB of log",
        log.len() >> 10
    );
    assert!(
        (100..=allowed.min(299)).contains(&written),
        "{written} lines"
    );
    assert!(
        log.contains("plugin log lines dropped: over limits.log_lines_per_second = 100"),
        "{}",
        &log[log.len().saturating_sub(500)..]
    );
    assert!(
        log.len() < written * (4096 + 300) + 4096,
        "{} bytes of log",
        log.len()
    );
}

#[test]
fn metric_names_are_bounded_per_stage_and_must_be_valid() {
    let runtime = runtime();
    let pool = start(&runtime, flood_spec("metric-flood", 0, 1_000_000));
    let (exceeded, message) = bounded("metric flood", || {
        limit_failure(pool.process(&events(&[POISON])))
    });
    assert_eq!(
        message,
        "stage `hostile-stage` (plugin `fixture-hostile`): metric `flood_100`, series #101 exceeds limits.metric_series = 100"
    );
    assert_eq!(exceeded.allowed, 100);
    // The stage's registry stays at its hundred series, whichever instance asks.
    let (_, again) = limit_failure(pool.process(&events(&[POISON])));
    assert_eq!(again, message);

    let mut spec = flood_spec("metric-flood", 0, 1);
    spec.config =
        json!({"behaviour": "metric-flood", "count": 1, "target": "bad-name-"}).to_string();
    let invalid = start(&runtime, spec);
    let error = invalid.process(&events(&[POISON])).unwrap_err();
    assert!(
        matches!(error.failure(), Some(CallFailure::Refused(_))),
        "{error}"
    );
    assert_eq!(
        error.to_string(),
        "stage `hostile-stage` (plugin `fixture-hostile`): host call refused: metric name `bad-name-0` is not a Prometheus name ([a-zA-Z_][a-zA-Z0-9_]*, at most 128 bytes)"
    );
}

#[test]
fn three_events_cannot_become_three_hundred_thousand() {
    let runtime = runtime();
    let pool = start(&runtime, flood_spec("output-flood", 0, 100_000));
    let (exceeded, message) = bounded("output flood", || {
        limit_failure(pool.process(&events(&[POISON, POISON, POISON])))
    });
    assert_eq!(
        message,
        "stage `hostile-stage` (plugin `fixture-hostile`): 300000 outputs from a 3-event batch exceeds limits.outputs_per_call = 10000"
    );
    assert_eq!(exceeded.limit, "outputs_per_call");
    // Isolation hands back each culprit, and the rest of the batch goes on.
    let (processed, _) = pool
        .process_isolating(&events(&[GOOD, POISON, GOOD]))
        .unwrap();
    assert_eq!(payloads(&processed), [GOOD, GOOD]);
    assert_eq!(processed.rejected.len(), 1);
    assert!(
        processed.rejected[0]
            .reason
            .contains("exceeds limits.outputs_per_call")
    );
}

#[test]
fn a_plugin_reads_its_stage_limits() {
    let runtime = runtime();
    let mut spec = flood_spec("limits", 0, 0);
    spec.limits.state.value_bytes = 4096;
    spec.limits.metrics.series = 7;
    let pool = start(&runtime, spec);
    let processed = pool.process(&events(&[POISON])).unwrap();
    let reported: serde_json::Value = serde_json::from_str(&payloads(&processed)[0]).unwrap();
    assert_eq!(
        reported,
        json!({
            "memory_bytes": 64 << 20, "timeout_ms": 1000,
            "state_key_bytes": 1024, "state_value_bytes": 4096,
            "state_write_bytes_per_call": 16 << 20, "state_total_bytes": 256 << 20,
            "log_message_bytes": 4096, "log_lines_per_second": 100,
            "metric_series": 7, "outputs_per_call": 10000, "output_bytes_per_call": 16 << 20,
        })
    );
}

#[test]
fn an_import_the_stage_does_not_grant_stops_the_stage() {
    let runtime = runtime();
    let mut spec = flood_spec("state-flood", 1, 1);
    spec.grants.capabilities = [Capability::Log, Capability::Metrics, Capability::Limits].into();
    let loaded = runtime
        .load("fixture-hostile", &plugin_path("fixture-hostile"), None)
        .unwrap();
    let error = InstancePool::new(&runtime, loaded, World::Processor, spec, 1)
        .err()
        .expect("the stage must not start");
    assert!(matches!(
        error,
        PluginError::NotGranted {
            capability: Capability::State,
            ..
        }
    ));
    assert_eq!(
        error.to_string(),
        "plugin `fixture-hostile` imports sluice:plugin/state, which stage `hostile-stage` is not granted; add \"state\" to grants.capabilities"
    );
}

#[test]
fn a_plugin_that_imports_no_capability_runs_without_any() {
    let runtime = runtime();
    let mut spec = spec("hot", json!({"when": {"field": "t", "gt": 80}}));
    spec.grants.capabilities.clear();
    let filter = pool(&runtime, "filter", World::Processor, spec);
    let processed = filter
        .process(&events(&[r#"{"t":90}"#, r#"{"t":20}"#]))
        .unwrap();
    assert_eq!(payloads(&processed), [r#"{"t":90}"#]);
}

#[test]
fn grants_default_to_every_capability_and_refuse_unknown_ones() {
    let default: Grants = toml::from_str("").unwrap();
    assert_eq!(default.capabilities, Capability::ALL.into());
    let narrowed: Grants = toml::from_str(r#"capabilities = ["log"]"#).unwrap();
    assert_eq!(narrowed.capabilities, [Capability::Log].into());
    let error = toml::from_str::<Grants>(r#"capabilities = ["log", "network"]"#)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains(
            "unknown variant `network`, expected one of `log`, `metrics`, `state`, `limits`"
        ),
        "{error}"
    );
    let limits: Limits = toml::from_str("state_value_bytes = 10\noutputs_per_call = 5").unwrap();
    assert_eq!((limits.state.value_bytes, limits.outputs_per_call), (10, 5));
    assert_eq!(limits.metrics.series, Limits::default().metrics.series);
    let unknown = toml::from_str::<Limits>("state_bytes = 1")
        .unwrap_err()
        .to_string();
    assert!(
        unknown.contains("unknown limit `state_bytes`, expected one of `memory_bytes`")
            && unknown.contains("`state_total_bytes`")
            && unknown.contains("`inference_runs_per_call`"),
        "{unknown}"
    );
    let limits: Limits =
        toml::from_str("timeout_ms = 250\nfuel = 7\nlog_lines_per_second = 3").unwrap();
    assert_eq!(
        (limits.timeout, limits.fuel, limits.log.lines_per_second),
        (Duration::from_millis(250), Some(7), 3)
    );
    let wrong_type = toml::from_str::<Limits>("metric_series = \"many\"")
        .unwrap_err()
        .to_string();
    assert!(wrong_type.contains("invalid type"), "{wrong_type}");
}
