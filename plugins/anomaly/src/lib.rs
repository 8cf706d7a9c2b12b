//! `anomaly`: scores telemetry with an ONNX model that the host runs, one model run per
//! batch. For each event it reads the `features` fields of the JSON payload, and from
//! the model's `output` (rows × classes probabilities) takes column `class` as the
//! score; it appends `"anomaly_score"` and `"anomaly"` (score ≥ `threshold`) to the
//! payload and sends anomalies to the `route` route (`alerts`), the rest to the default
//! output. An event without the features is rejected (dead-lettered) with the reason.
//!
//! The stage's plugin must be granted the model:
//!
//! ```toml
//! [models.anomaly]
//! path = "models/anomaly.onnx"
//!
//! [plugins.anomaly]
//! path = "target/plugins/anomaly.wasm"
//! grants = { models = ["anomaly"] }
//!
//! [transforms.score]
//! type = "wasm"
//! plugin = "anomaly"
//! inputs = ["devices"]
//! routes = ["alerts"]
//! ```

use serde::Deserialize;
use sluice_sdk::inference::{Features, Model};
use sluice_sdk::prelude::*;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The granted model's name.
    #[serde(default = "default_model")]
    pub model: String,
    /// Payload fields (dotted paths) fed to the model, in its column order.
    #[serde(default = "default_features")]
    pub features: Vec<String>,
    /// The model's input tensor.
    #[serde(default = "default_input")]
    pub input: String,
    /// The model's output of class probabilities (rows × classes).
    #[serde(default = "default_output")]
    pub output: String,
    /// The column of `output` that is the anomaly class.
    #[serde(default = "one")]
    pub class: usize,
    #[serde(default = "default_threshold")]
    pub threshold: f32,
    #[serde(default = "default_route")]
    pub route: String,
}

fn default_model() -> String {
    "anomaly".to_owned()
}
fn default_features() -> Vec<String> {
    ["temperature", "vibration", "battery"]
        .map(String::from)
        .to_vec()
}
fn default_input() -> String {
    "features".to_owned()
}
fn default_output() -> String {
    "probabilities".to_owned()
}
fn one() -> usize {
    1
}
fn default_threshold() -> f32 {
    0.5
}
fn default_route() -> String {
    "alerts".to_owned()
}

pub struct Anomaly {
    model: Model,
    config: Config,
}

impl Processor for Anomaly {
    type Config = Config;

    fn new(config: Config) -> Result<Self, Error> {
        let model = Model::open(&config.model)?;
        if !model
            .inputs()
            .iter()
            .any(|input| input.name == config.input)
        {
            return Err(Error::new(format!(
                "model `{}` has no input `{}` (its inputs: {})",
                config.model,
                config.input,
                model
                    .inputs()
                    .iter()
                    .map(|i| i.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        Ok(Anomaly { model, config })
    }

    fn process(&mut self, event: &Event<'_>, out: &mut Output) -> Result<(), Error> {
        self.score(&[*event], out)
    }

    fn process_batch(&mut self, batch: &Batch, out: &mut Output) -> Result<(), Error> {
        self.score(&batch.events().collect::<Vec<_>>(), out)
    }
}

impl Anomaly {
    /// Score every usable event in one model run.
    fn score(&mut self, events: &[Event<'_>], out: &mut Output) -> Result<(), Error> {
        let features = Features::from_json(events, &self.config.features);
        for (index, reason) in &features.unusable {
            out.reject(&events[*index], reason.clone());
        }
        if features.rows() == 0 {
            return Ok(());
        }
        let outputs = self.model.run(&[features.tensor(&self.config.input)])?;
        let (shape, probabilities) = outputs.f32(&self.config.output)?;
        let classes = shape.get(1).copied().unwrap_or(1) as usize;
        if shape.first().copied() != Some(features.rows() as u32) || self.config.class >= classes {
            return Err(Error::new(format!(
                "output `{}` has shape {shape:?}; expected {} rows and a column {}",
                self.config.output,
                features.rows(),
                self.config.class
            )));
        }
        for (row, &index) in features.events.iter().enumerate() {
            let event = &events[index];
            let score = probabilities[row * classes + self.config.class];
            let anomaly = score >= self.config.threshold;
            let route = anomaly.then_some(self.config.route.as_str());
            out.emit_with(event, route, |payload| {
                append(payload, event.payload(), round4(score), anomaly)
            })?;
        }
        Ok(())
    }
}

/// The JSON object `payload` with `"anomaly_score"` and `"anomaly"` appended, its own
/// bytes untouched (re-serializing would reorder keys and reformat numbers), appended to
/// `out` (the output's buffer: the payload is copied once). Bytes, not text: the
/// features were read from the payload, so it is JSON, whose whitespace is ASCII.
fn append(out: &mut Vec<u8>, payload: &[u8], score: f64, anomaly: bool) -> Result<(), Error> {
    let body = payload
        .trim_ascii_end()
        .strip_suffix(b"}")
        .ok_or_else(|| Error::new("payload is not a JSON object"))?;
    out.extend_from_slice(body);
    if !body.trim_ascii_end().ends_with(b"{") {
        out.push(b',');
    }
    out.extend_from_slice(b"\"anomaly_score\":");
    // serde_json prints a float as JSON does (`0.0`, not Rust's `0`).
    serde_json::to_writer(&mut *out, &score).map_err(|e| Error::new(e.to_string()))?;
    out.extend_from_slice(if anomaly {
        b",\"anomaly\":true}"
    } else {
        b",\"anomaly\":false}"
    });
    Ok(())
}

/// Four decimals: enough for a score, and stable across runtimes' last-bit noise.
fn round4(score: f32) -> f64 {
    (f64::from(score) * 1e4).round() / 1e4
}

sluice_sdk::export_processor!(Anomaly);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn score_and_label_are_appended_to_the_payload_as_written() {
        // After what the buffer already holds (earlier events' payloads), untouched.
        let appended = |payload: &str, score: f64, anomaly: bool| {
            let mut out = b"earlier".to_vec();
            append(&mut out, payload.as_bytes(), score, anomaly).map(|()| {
                let out = String::from_utf8(out).unwrap();
                out.strip_prefix("earlier").unwrap().to_owned()
            })
        };
        assert_eq!(
            appended(r#"{"t": 1e2, "b":2} "#, 0.9876, true).unwrap(),
            r#"{"t": 1e2, "b":2,"anomaly_score":0.9876,"anomaly":true}"#
        );
        assert_eq!(
            appended("{ }", 0.9876, true).unwrap(),
            r#"{ "anomaly_score":0.9876,"anomaly":true}"#
        );
        assert_eq!(
            appended("{}", round4(0.0), false).unwrap(),
            r#"{"anomaly_score":0.0,"anomaly":false}"#
        );
        assert_eq!(
            appended("[1]", 0.0, false).unwrap_err().to_string(),
            "payload is not a JSON object"
        );
    }
}
