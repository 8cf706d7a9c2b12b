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

mod engine;
mod log;
mod open;
mod sketch;
mod window;

use std::borrow::Cow;

use serde::Deserialize;
use sluice_sdk::json::RawObject;
use sluice_sdk::prelude::*;

use crate::engine::{Engine, Reading, Verdict, Watermark};
use crate::open::OpenWindows;
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
    reader: Reader,
    late: Late,
}

/// What to read from each event.
struct Reader {
    time: Time,
    time_field: Option<String>,
    key_field: Option<String>,
    /// `None` when downsampling (no value is read).
    field: Option<String>,
}

impl Reader {
    /// Read one indexed event, or say why it cannot be windowed. Only the fields read
    /// are looked at, and the key is borrowed from the payload when it can be.
    fn read<'p>(
        &self,
        event: &Event<'_>,
        payload: &'p RawObject<'_>,
    ) -> Result<Reading<'p>, Error> {
        let time = match (self.time, &self.time_field) {
            (Time::Event, Some(field)) => payload
                .get(field)
                .and_then(|text| text.parse::<i64>().ok())
                .ok_or_else(|| {
                    Error::new(format!("event has no `{field}` (epoch ms) for its time"))
                })?,
            _ => event.timestamp_ms(),
        };
        let key = match &self.key_field {
            Some(field) => payload
                .get(field)
                .filter(|text| &**text != "null")
                .and_then(|text| match text {
                    Cow::Borrowed(text) => Key::canonical(text),
                    Cow::Owned(text) => {
                        Key::canonical(&text).map(|key| Cow::Owned(key.into_owned()))
                    }
                })
                .ok_or_else(|| Error::new(format!("event has no `{field}` to group by")))?,
            None => Cow::Borrowed("null"),
        };
        let value = match &self.field {
            None => 0.0,
            Some(field) => payload
                .get(field)
                .and_then(|text| number(&text))
                .ok_or_else(|| Error::new(format!("event has no number `{field}` to aggregate")))?,
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
        let limits = limits::get();
        Ok(Window {
            engine: Engine {
                windows: Windows { size_ms, hop_ms },
                lateness_ms: config.lateness_ms as i64,
                watermark: match (config.time, config.watermark) {
                    (Time::Processing, _) | (_, WatermarkConfig::WallClock) => Watermark::WallClock,
                    (Time::Event, WatermarkConfig::Events) => Watermark::Events,
                },
                key_field: config.key.clone(),
                aggregates,
                flush_on_stop: config.flush_on_stop,
                open: OpenWindows::new(
                    limits.state_value_bytes as usize,
                    limits.state_write_bytes_per_call as usize,
                ),
            },
            mode: config.mode,
            reader: Reader {
                time: config.time,
                time_field: config.time_field,
                key_field: config.key,
                field: config.field.filter(|_| config.mode != Mode::Downsample),
            },
            late: config.late,
        })
    }

    fn process(&mut self, event: &Event<'_>, out: &mut Output) -> Result<(), Error> {
        let payload = RawObject::parse(event.text()?)?;
        let reading = self.reader.read(event, &payload)?;
        match self.mode {
            Mode::Downsample => self.downsample(&[*event], &[reading], out),
            _ => {
                let mut folding = self.engine.folding(&HostState, now_ms());
                let verdict = folding.fold(&reading);
                folding.finish(&mut HostState);
                act(self.late, event, verdict, out);
            }
        }
        Ok(())
    }

    fn process_batch(&mut self, batch: &Batch, out: &mut Output) -> Result<(), Error> {
        if self.mode == Mode::Downsample {
            let mut events = Vec::with_capacity(batch.len());
            let mut readings = Vec::with_capacity(batch.len());
            for event in batch.events() {
                match read_owned(&self.reader, &event) {
                    Ok(reading) => {
                        events.push(event);
                        readings.push(reading);
                    }
                    Err(error) => out.reject(&event, error.to_string()),
                }
            }
            self.downsample(&events, &readings, out);
            return Ok(());
        }
        // Each event is folded as it is read: its key is borrowed from its payload.
        let mut folding = self.engine.folding(&HostState, now_ms());
        for event in batch.events() {
            let read = event
                .text()
                .and_then(RawObject::parse)
                .and_then(|payload| Ok(folding.fold(&self.reader.read(&event, &payload)?)));
            match read {
                Ok(verdict) => act(self.late, &event, verdict, out),
                Err(error) => out.reject(&event, error.to_string()),
            }
        }
        folding.finish(&mut HostState);
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

/// Read an event into a reading that owns its key (downsampling keeps them all).
fn read_owned(reader: &Reader, event: &Event<'_>) -> Result<Reading<'static>, Error> {
    let payload = RawObject::parse(event.text()?)?;
    Ok(reader.read(event, &payload)?.into_owned())
}

impl Window {
    fn downsample(&mut self, events: &[Event<'_>], readings: &[Reading<'_>], out: &mut Output) {
        let verdicts = engine::downsample(&mut HostState, readings, self.engine.windows.size_ms);
        for (event, verdict) in events.iter().zip(verdicts) {
            act(self.late, event, verdict, out);
        }
    }
}

/// Pass on or refuse an event by its verdict.
fn act(late: Late, event: &Event<'_>, verdict: Verdict, out: &mut Output) {
    match verdict {
        Verdict::Folded | Verdict::Drop => {}
        Verdict::Forward => out.forward(event),
        Verdict::Late {
            window_end,
            watermark,
        } => match late {
            Late::DeadLetter => out.reject(
                event,
                format!(
                    "late: its window ended at {window_end}, and windows ending at or before \
                     {watermark} are closed"
                ),
            ),
            Late::Route => out.forward_to(event, "late"),
        },
    }
}

sluice_sdk::export_processor!(Window);
