//! `dedup`: drop an event whose identity was already seen within `window_seconds`.
//!
//! The identity is a JSON field (`field = "id"`) or, without it, the event key. Seen
//! identities live in the stage's durable state, so a restart does not let duplicates
//! through, and a batch that fails leaves no trace in it (state writes commit per call).
//!
//! ```toml
//! [transforms.dedup.config]
//! field = "msg_id"
//! window_seconds = 600
//! ```

use serde::Deserialize;
use sluice_sdk::json::RawObject;
use sluice_sdk::prelude::*;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub field: Option<String>,
    #[serde(default = "default_window")]
    pub window_seconds: u64,
}

fn default_window() -> u64 {
    3600
}

/// Expired identities are swept this many at a time, once per batch.
const SWEEP_LIMIT: u32 = 256;
const PREFIX: &str = "seen/";

pub struct Dedup {
    field: Option<String>,
    window_ms: i64,
    sweep_from: String,
}

impl Dedup {
    fn identity(&self, event: &Event<'_>) -> Result<String, Error> {
        match &self.field {
            Some(path) => {
                let payload = RawObject::parse_document(event.text()?)?;
                match payload.as_ref().and_then(|object| object.get(path)) {
                    Some(text) if text.starts_with('"') => Ok(serde_json::from_str(&text)?),
                    // Other values by their text, as serde_json writes them.
                    Some(text) if &*text != "null" => {
                        Ok(serde_json::from_str::<serde_json::Value>(&text)?.to_string())
                    }
                    _ => Err(Error::new(format!(
                        "event has no `{path}` to deduplicate on"
                    ))),
                }
            }
            None => event
                .key()
                .map(|key| String::from_utf8_lossy(key).into_owned())
                .ok_or_else(|| Error::new("event has no key to deduplicate on")),
        }
    }

    /// Delete a bounded number of expired identities, resuming where the last sweep ended.
    fn sweep(&mut self, now_ms: i64) {
        let entries = state::scan_prefix(&self.sweep_from, SWEEP_LIMIT);
        if (entries.len() as u32) < SWEEP_LIMIT {
            self.sweep_from = PREFIX.to_owned();
        }
        for (key, value) in entries {
            if !key.starts_with(PREFIX) {
                break;
            }
            if seen_at(&value).is_none_or(|seen| now_ms - seen > self.window_ms) {
                state::delete(&key);
            }
            self.sweep_from = key;
        }
    }
}

fn seen_at(value: &[u8]) -> Option<i64> {
    Some(i64::from_le_bytes(value.try_into().ok()?))
}

impl Processor for Dedup {
    type Config = Config;

    fn new(config: Config) -> Result<Self, Error> {
        if config.window_seconds == 0 {
            return Err(Error::new("`window_seconds` must be at least 1"));
        }
        Ok(Dedup {
            field: config.field,
            window_ms: config.window_seconds as i64 * 1000,
            sweep_from: PREFIX.to_owned(),
        })
    }

    fn process(&mut self, event: &Event<'_>, out: &mut Output) -> Result<(), Error> {
        let key = format!("{PREFIX}{}", self.identity(event)?);
        let now = event.timestamp_ms();
        let duplicate = state::get(&key)
            .and_then(|value| seen_at(&value))
            .is_some_and(|seen| (now - seen).abs() <= self.window_ms);
        if duplicate {
            metrics::counter_add("duplicates_dropped", 1);
        } else {
            state::put(&key, &now.to_le_bytes());
            out.forward(event);
        }
        Ok(())
    }

    fn process_batch(&mut self, batch: &Batch, out: &mut Output) -> Result<(), Error> {
        let mut latest = i64::MIN;
        for event in batch.events() {
            latest = latest.max(event.timestamp_ms());
            if let Err(error) = self.process(&event, out) {
                out.reject(&event, error.to_string());
            }
        }
        if latest != i64::MIN {
            self.sweep(latest);
        }
        Ok(())
    }
}

sluice_sdk::export_processor!(Dedup);
