//! The `log` capability: plugin log lines into the host's `tracing` subscriber, tagged
//! with the stage. Bounded in size (`log_message_bytes`, longer is truncated with a
//! marker) and in rate (`log_lines_per_second` per stage; the excess is dropped and
//! counted, never an error: a chatty plugin should not lose its events).

pub mod quotas;

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmtime::component::{HasData, Linker};

use crate::runtime::bindings::log::{self, Level};
use quotas::LogQuotas;
use super::StageContext;

/// Counts the lines dropped by the rate limit, per stage.
pub const DROPPED_METRIC: &str = "sluice_plugin_log_dropped_total";

/// How often, at most, a stage's dropped lines are summed up in one warning.
const REPORT_EVERY: Duration = Duration::from_secs(1);

/// One instance's side of the `log` capability.
pub struct LogCtx {
    stage: Arc<str>,
    message_bytes: usize,
    budget: Arc<LogBudget>,
}

impl LogCtx {
    pub fn new(stage: Arc<str>, quotas: &LogQuotas, budget: Arc<LogBudget>) -> Self {
        LogCtx {
            stage,
            message_bytes: quotas.message_bytes as usize,
            budget,
        }
    }
}

impl super::HostState for LogCtx {
    type Shared = Arc<LogBudget>;
    fn shared(spec: &StageContext<'_>) -> Self::Shared {
        Arc::new(LogBudget::new(spec.stage.clone(), &spec.limits.log))
    }
    fn new(spec: &StageContext<'_>, budget: &Self::Shared) -> Self {
        LogCtx::new(spec.stage.clone(), &spec.limits.log, budget.clone())
    }
}

/// Gives the `log` host functions their state, as `WasiView` does for WASI.
pub trait LogView {
    fn log(&mut self) -> &mut LogCtx;
}

struct HasLog;

impl HasData for HasLog {
    type Data<'a> = &'a mut LogCtx;
}

pub fn add_to_linker<T: LogView + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    log::add_to_linker::<T, HasLog>(linker, T::log)
}

impl log::Host for LogCtx {
    fn log(
        &mut self,
        level: Level,
        message: String,
        fields: Vec<(String, String)>,
    ) -> wasmtime::Result<()> {
        if !self.budget.admit() {
            return Ok(());
        }
        let stage = &*self.stage;
        let message = truncate(&message, self.message_bytes);
        let fields = render_fields(&fields, self.message_bytes);
        match level {
            Level::Trace => tracing::trace!(stage, %fields, "{message}"),
            Level::Debug => tracing::debug!(stage, %fields, "{message}"),
            Level::Info => tracing::info!(stage, %fields, "{message}"),
            Level::Warn => tracing::warn!(stage, %fields, "{message}"),
            Level::Error => tracing::error!(stage, %fields, "{message}"),
        }
        Ok(())
    }
}

/// `text`, cut at a character boundary to at most `max` bytes plus a marker that says
/// how long it was.
pub(crate) fn truncate(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if text.len() <= max {
        return text.into();
    }
    let cut = text.floor_char_boundary(max);
    format!("{}… [truncated from {} bytes]", &text[..cut], text.len()).into()
}

/// Fields as `k=v k=v`, built only up to about `max` bytes however many the plugin sent.
fn render_fields(fields: &[(String, String)], max: usize) -> String {
    let mut out = String::new();
    for (n, (key, value)) in fields.iter().enumerate() {
        let separator = if n > 0 { " " } else { "" };
        let _ = write!(
            out,
            "{separator}{}={}",
            truncate(key, max),
            truncate(value, max)
        );
        if out.len() > max {
            let total: usize = fields.iter().map(|(k, v)| k.len() + v.len()).sum();
            out.truncate(out.floor_char_boundary(max));
            let _ = write!(out, "… [fields truncated from {total} bytes]");
            break;
        }
    }
    out
}

/// A stage's log rate: a token bucket of `log_lines_per_second` tokens that refills at
/// that rate, shared by the stage's instances.
pub struct LogBudget {
    stage: Arc<str>,
    per_second: u32,
    bucket: Mutex<Bucket>,
    dropped: metrics::Counter,
}

struct Bucket {
    tokens: f64,
    refilled: Instant,
    /// Dropped since the last warning.
    unreported: u64,
    reported: Option<Instant>,
}

impl LogBudget {
    pub fn new(stage: Arc<str>, quotas: &LogQuotas) -> Self {
        let per_second = quotas.lines_per_second;
        LogBudget {
            dropped: metrics::counter!(DROPPED_METRIC, "stage" => stage.to_string()),
            stage,
            per_second,
            bucket: Mutex::new(Bucket {
                tokens: per_second as f64,
                refilled: Instant::now(),
                unreported: 0,
                reported: None,
            }),
        }
    }

    /// Take one line's token; `false` drops the line (counted, and summed up in at most
    /// one warning per second).
    pub(crate) fn admit(&self) -> bool {
        let mut bucket = self.bucket.lock().unwrap();
        let now = Instant::now();
        let elapsed = now.duration_since(bucket.refilled).as_secs_f64();
        let rate = self.per_second as f64;
        bucket.tokens = (bucket.tokens + elapsed * rate).min(rate);
        bucket.refilled = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return true;
        }
        self.dropped.increment(1);
        bucket.unreported += 1;
        if bucket
            .reported
            .is_none_or(|at| now.duration_since(at) >= REPORT_EVERY)
        {
            tracing::warn!(
                stage = %self.stage,
                dropped = bucket.unreported,
                "plugin log lines dropped: over limits.log_lines_per_second = {} (counted in {DROPPED_METRIC})",
                self.per_second
            );
            bucket.unreported = 0;
            bucket.reported = Some(now);
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_messages_and_fields_are_cut_with_a_marker() {
        assert_eq!(truncate("short", 10), "short");
        assert_eq!(
            truncate("ééééé", 3),
            "é… [truncated from 10 bytes]",
            "cut at a character boundary"
        );
        let fields = vec![("k".to_owned(), "v".repeat(100)); 1000];
        let rendered = render_fields(&fields, 50);
        assert!(rendered.len() < 100, "{rendered}");
        assert!(
            rendered.ends_with("… [fields truncated from 101000 bytes]"),
            "{rendered}"
        );
    }

    #[test]
    fn the_rate_allows_a_burst_then_drops() {
        let quotas = LogQuotas {
            lines_per_second: 5,
            ..LogQuotas::default()
        };
        let budget = LogBudget::new(Arc::from("s"), &quotas);
        let admitted = (0..100).filter(|_| budget.admit()).count();
        assert_eq!(admitted, 5);
    }
}
