//! The host's own per-stage series, typed: counters and gauges kept as atomics that the
//! admin overview, the heartbeats, the progress line and `sluice replay`'s summary read
//! directly, and that `/metrics` renders in the Prometheus text format together with
//! everything recorded through the `metrics` facade (histograms, plugin metrics).
//!
//! Why not read the facade's recorder: `metrics-exporter-prometheus` offers no way to
//! read a value back except rendering the whole page, which the readers above would then
//! parse again — on every admin poll, five times.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// One per-stage series (labelled `stage`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Series {
    pub name: &'static str,
    pub kind: SeriesKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SeriesKind {
    Counter,
    Gauge,
}

impl Series {
    const fn counter(name: &'static str) -> Series {
        Series {
            name,
            kind: SeriesKind::Counter,
        }
    }

    const fn gauge(name: &'static str) -> Series {
        Series {
            name,
            kind: SeriesKind::Gauge,
        }
    }
}

/// Events a stage took in.
pub const EVENTS_IN: Series = Series::counter("sluice_events_in_total");
/// Events a stage passed on (a sink: stored).
pub const EVENTS_OUT: Series = Series::counter("sluice_events_out_total");
/// Events a stage sent to its dead-letter route.
pub const DEAD_LETTERED: Series = Series::counter("sluice_events_dead_lettered_total");
/// Failed batches (plugin calls, writes).
pub const ERRORS: Series = Series::counter("sluice_errors_total");
/// Event tokens released without a verdict (see `pipeline::Ack`): each made its event
/// fail rather than count as delivered. Recorded under the stage `pipeline`, since a
/// token does not know who held it last; anything above zero names a path to look at.
pub const UNSETTLED: Series = Series::counter("sluice_acks_unsettled_total");
/// Batch calls a stage made (plugin calls, sink writes, collections, ticks), and the
/// time they took in all: the admin page's mean call time, which the
/// `sluice_batch_duration_seconds` histogram cannot give back (see above).
pub const CALLS: Series = Series::counter("sluice_batch_calls_total");
pub const CALL_NANOSECONDS: Series = Series::counter("sluice_batch_call_nanoseconds_total");
/// Batches waiting in a stage's input channel.
pub const QUEUE_DEPTH: Series = Series::gauge("sluice_queue_depth");
/// Entries, bytes, dropped entries and entries lost to corruption of an uplink's disk
/// buffer (dropped and lost are kept across restarts in the buffer's cursor).
pub const UPLINK_BUFFERED_ENTRIES: Series = Series::gauge("sluice_uplink_buffered_entries");
pub const UPLINK_BUFFERED_BYTES: Series = Series::gauge("sluice_uplink_buffered_bytes");
pub const UPLINK_DROPPED_ENTRIES: Series = Series::gauge("sluice_uplink_dropped_entries");
pub const UPLINK_LOST_ENTRIES: Series = Series::gauge("sluice_uplink_lost_entries");

type Registry = Mutex<BTreeMap<(Series, Arc<str>), Arc<AtomicU64>>>;

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(Registry::default)
}

fn value(series: Series, stage: &str) -> Arc<AtomicU64> {
    registry()
        .lock()
        .unwrap()
        .entry((series, Arc::from(stage)))
        .or_default()
        .clone()
}

/// The counter `series` of `stage`, as a `metrics` handle (the same atomic every time).
pub fn counter(series: Series, stage: &str) -> metrics::Counter {
    debug_assert_eq!(series.kind, SeriesKind::Counter);
    metrics::Counter::from_arc(value(series, stage))
}

/// The gauge `series` of `stage`.
pub fn gauge(series: Series, stage: &str) -> Gauge {
    debug_assert_eq!(series.kind, SeriesKind::Gauge);
    Gauge(value(series, stage))
}

/// A per-stage gauge of whole numbers (depths, sizes).
#[derive(Clone)]
pub struct Gauge(Arc<AtomicU64>);

impl Gauge {
    pub fn set(&self, value: u64) {
        self.0.store(value, Ordering::Relaxed);
    }
}

/// The value of `series` for each stage that has it.
pub fn totals(series: Series) -> BTreeMap<String, u64> {
    registry()
        .lock()
        .unwrap()
        .iter()
        .filter(|((registered, _), _)| *registered == series)
        .map(|((_, stage), value)| (stage.to_string(), value.load(Ordering::Relaxed)))
        .collect()
}

/// The sum of `series` over every stage.
pub fn sum(series: Series) -> u64 {
    totals(series).values().sum()
}

/// The process-wide recorder of the `metrics` facade, installed on first use. Handles
/// made before it exists record nothing: the topology installs it before building.
pub fn recorder() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets(&[
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
            ])
            .expect("static buckets are valid")
            .build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (tests that embed the pipeline);
        // then this handle renders an empty page, which is harmless.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// The Prometheus page: the typed series, then what the facade recorded.
pub fn render() -> String {
    let mut page = String::new();
    let registry = registry().lock().unwrap();
    let mut current = None;
    for ((series, stage), value) in registry.iter() {
        if current != Some(series.name) {
            let kind = match series.kind {
                SeriesKind::Counter => "counter",
                SeriesKind::Gauge => "gauge",
            };
            let _ = writeln!(page, "# TYPE {} {kind}", series.name);
            current = Some(series.name);
        }
        let _ = writeln!(
            page,
            "{}{{stage=\"{}\"}} {}",
            series.name,
            escape_label(stage),
            value.load(Ordering::Relaxed)
        );
    }
    drop(registry);
    if !page.is_empty() {
        page.push('\n');
    }
    page.push_str(&recorder().render());
    page
}

/// A label value as the text format wants it: backslash, quote and newline escaped.
fn escape_label(value: &str) -> std::borrow::Cow<'_, str> {
    if !value.contains(['\\', '"', '\n']) {
        return value.into();
    }
    value
        .replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_counter_is_read_back_as_typed_and_rendered_as_prometheus_text() {
        let stage = "counters-test-stage";
        counter(EVENTS_IN, stage).increment(3);
        counter(EVENTS_IN, stage).increment(4);
        gauge(QUEUE_DEPTH, stage).set(2);
        assert_eq!(totals(EVENTS_IN)[stage], 7);
        assert_eq!(totals(QUEUE_DEPTH)[stage], 2);
        assert!(!totals(EVENTS_OUT).contains_key(stage));
        let page = render();
        assert!(page.contains("# TYPE sluice_events_in_total counter\n"));
        assert!(page.contains("sluice_events_in_total{stage=\"counters-test-stage\"} 7\n"));
        assert!(page.contains("sluice_queue_depth{stage=\"counters-test-stage\"} 2\n"));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape_label("plain"), "plain");
    }
}
