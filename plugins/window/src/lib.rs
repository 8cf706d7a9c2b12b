//! `window`: aggregates per key over tumbling or hopping windows, kept in the stage's
//! durable state and closed on time by the host's ticks; or, as `mode = "downsample"`,
//! one event per key per interval, for devices before their uplink.
//!
//! ```toml
//! [transforms.per_minute]
//! type = "wasm"
//! plugin = "window"
//! inputs = ["telemetry"]
//! tick_interval_ms = 1000
//! routes = ["late"]                  # with late = "route"
//! config = { mode = "tumbling", size_ms = 60000, key = "device_id", field = "temperature",
//!            time_field = "ts", lateness_ms = 5000,
//!            aggregates = ["count", "mean", "min", "max", "p95"] }
//! ```
//!
//! Acknowledgement: an event is acknowledged once it is folded into its window in the
//! stage's state (the `process` call's state writes commit before its inputs are
//! released). A window's result comes from a tick, whose state writes (the window's
//! deletion) commit only once the result has been taken by every sink downstream: a
//! crash in between emits that result again after the restart (at least once, whole
//! windows only). See `docs/windows.md`.

mod cache;
mod engine;
mod sketch;
mod window;

use serde::Deserialize;
use sluice_sdk::json::RawObject;
use sluice_sdk::prelude::*;

use crate::cache::Cache;
use crate::engine::{Engine, Reading, Verdict, Watermark};
use crate::window::{Aggregate, Key, Store, Windows};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub mode: Mode,
    /// Window length (tumbling, hopping) or interval (downsample).
    pub size_ms: u64,
    /// Hopping: how far apart windows start.
    #[serde(default)]
    pub hop_ms: Option<u64>,
    #[serde(default)]
    pub time: Time,
    /// Payload field holding the event time in epoch ms; without it, the event's timestamp.
    #[serde(default)]
    pub time_field: Option<String>,
    #[serde(default)]
    pub watermark: WatermarkConfig,
    /// How long after its end a window still takes events.
    #[serde(default)]
    pub lateness_ms: u64,
    /// Payload field to group by; without it, one window for all events.
    #[serde(default)]
    pub key: Option<String>,
    /// Payload field (a number) to aggregate; needed by the window modes.
    #[serde(default)]
    pub field: Option<String>,
    #[serde(default = "default_aggregates")]
    pub aggregates: Vec<String>,
    #[serde(default)]
    pub late: Late,
    #[serde(default)]
    pub flush_on_stop: bool,
}

#[derive(Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    #[default]
    Tumbling,
    Hopping,
    Downsample,
}

#[derive(Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Time {
    /// The payload's `time_field`, or the event's timestamp.
    #[default]
    Event,
    /// The time the event reached the host (its source's timestamp).
    Processing,
}

#[derive(Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum WatermarkConfig {
    #[default]
    WallClock,
    Events,
}

#[derive(Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Late {
    /// To the stage's dead-letter route, with the reason.
    #[default]
    DeadLetter,
    /// To the route named `late`.
    Route,
}

fn default_aggregates() -> Vec<String> {
    ["count", "mean", "min", "max"].map(str::to_owned).to_vec()
}

/// The host's per-stage state.
struct HostState;

impl Store for HostState {
    fn get(&self, key: &str) -> Option<Vec<u8>> {
        state::get(key)
    }
    fn put(&mut self, key: &str, value: &[u8]) {
        state::put(key, value);
    }
    fn delete(&mut self, key: &str) {
        state::delete(key);
    }
    fn scan(&self, prefix: &str, limit: u32) -> Vec<(String, Vec<u8>)> {
        state::scan_prefix(prefix, limit)
    }
}

pub struct Window {
    engine: Engine,
    mode: Mode,
    time: Time,
    time_field: Option<String>,
    field: Option<String>,
    late: Late,
}

impl Window {
    /// Read one event, or say why it cannot be windowed. The payload is indexed, not
    /// parsed into a document: only the three fields read are looked at.
    fn read(&self, event: &Event<'_>) -> Result<Reading, Error> {
        let payload = RawObject::parse(event.text()?)?;
        let time = match (self.time, &self.time_field) {
            (Time::Event, Some(field)) => payload
                .get(field)
                .and_then(|text| text.parse::<i64>().ok())
                .ok_or_else(|| {
                    Error::new(format!("event has no `{field}` (epoch ms) for its time"))
                })?,
            _ => event.timestamp_ms(),
        };
        let key = match &self.engine.key_field {
            Some(field) => payload
                .get(field)
                .filter(|text| &**text != "null")
                .and_then(|text| Key::parse(&text))
                .ok_or_else(|| Error::new(format!("event has no `{field}` to group by")))?,
            None => Key::from_value(&serde_json::Value::Null),
        };
        let value = match (&self.field, self.mode) {
            (_, Mode::Downsample) => 0.0,
            (Some(field), _) => payload
                .get(field)
                .and_then(|text| number(&text))
                .ok_or_else(|| Error::new(format!("event has no number `{field}` to aggregate")))?,
            (None, _) => unreachable!("checked in new"),
        };
        Ok(Reading { time, key, value })
    }
}

/// The number a field's JSON text holds (checked JSON: a number, or another kind).
fn number(text: &str) -> Option<f64> {
    match text.as_bytes().first() {
        Some(b'-' | b'0'..=b'9') => text.parse().ok(),
        _ => None,
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64)
}

impl Processor for Window {
    type Config = Config;

    fn new(config: Config) -> Result<Self, Error> {
        if config.size_ms == 0 {
            return Err(Error::new("`size_ms` must be at least 1"));
        }
        let size_ms = config.size_ms as i64;
        let hop_ms = match (config.mode, config.hop_ms) {
            (Mode::Hopping, Some(hop)) if hop > 0 && hop <= config.size_ms => hop as i64,
            (Mode::Hopping, _) => {
                return Err(Error::new(
                    "hopping windows need `hop_ms` between 1 and `size_ms`",
                ));
            }
            (_, Some(_)) => {
                return Err(Error::new("`hop_ms` applies to `mode = \"hopping\"` only"));
            }
            (_, None) => size_ms,
        };
        if config.mode != Mode::Downsample && config.field.is_none() {
            return Err(Error::new("windows need `field`, the number to aggregate"));
        }
        let aggregates = config
            .aggregates
            .iter()
            .map(|name| Aggregate::parse(name).map_err(Error::new))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Window {
            engine: Engine {
                windows: Windows { size_ms, hop_ms },
                lateness_ms: config.lateness_ms as i64,
                watermark: match (config.time, config.watermark) {
                    (Time::Processing, _) | (_, WatermarkConfig::WallClock) => Watermark::WallClock,
                    (Time::Event, WatermarkConfig::Events) => Watermark::Events,
                },
                key_field: config.key,
                aggregates,
                flush_on_stop: config.flush_on_stop,
                // A quarter of the instance's memory: room for a batch's events and
                // results besides.
                cache: Cache::new((limits::get().memory_bytes / 4) as usize),
            },
            mode: config.mode,
            time: config.time,
            time_field: config.time_field,
            field: config.field,
            late: config.late,
        })
    }

    fn process(&mut self, event: &Event<'_>, out: &mut Output) -> Result<(), Error> {
        let reading = self.read(event)?;
        self.apply(&[*event], &[reading], out);
        Ok(())
    }

    fn process_batch(&mut self, batch: &Batch, out: &mut Output) -> Result<(), Error> {
        let mut events = Vec::with_capacity(batch.len());
        let mut readings = Vec::with_capacity(batch.len());
        for event in batch.events() {
            match self.read(&event) {
                Ok(reading) => {
                    events.push(event);
                    readings.push(reading);
                }
                Err(error) => out.reject(&event, error.to_string()),
            }
        }
        self.apply(&events, &readings, out);
        Ok(())
    }

    fn tick(&mut self, now_ms: i64, stopping: bool, out: &mut Output) -> Result<(), Error> {
        if self.mode == Mode::Downsample {
            return Ok(());
        }
        let max = limits::get().outputs_per_call.max(1);
        for closed in self.engine.close_due(&mut HostState, now_ms, stopping, max) {
            out.push(
                &NewEvent {
                    key: Some(closed.key.text().as_bytes().to_vec()),
                    timestamp_ms: closed.window_end,
                    origin: "window".to_owned(),
                    ..NewEvent::json(&closed.payload)?
                },
                None,
            );
        }
        Ok(())
    }
}

impl Window {
    /// Fold `readings`, read from `events`, and pass on or refuse what is not folded.
    fn apply(&mut self, events: &[Event<'_>], readings: &[Reading], out: &mut Output) {
        let verdicts = match self.mode {
            Mode::Downsample => {
                engine::downsample(&mut HostState, readings, self.engine.windows.size_ms)
            }
            _ => self.engine.fold(&mut HostState, readings, now_ms()),
        };
        for (event, verdict) in events.iter().zip(verdicts) {
            match verdict {
                Verdict::Folded | Verdict::Drop => {}
                Verdict::Forward => out.forward(event),
                Verdict::Late {
                    window_end,
                    watermark,
                } => match self.late {
                    Late::DeadLetter => out.reject(
                        event,
                        format!(
                            "late: its window ended at {window_end}, and windows ending at or \
                             before {watermark} are closed"
                        ),
                    ),
                    Late::Route => out.forward_to(event, "late"),
                },
            }
        }
    }
}

sluice_sdk::export_processor!(Window);
