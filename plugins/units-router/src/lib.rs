//! `units-router`: add `temperature_f` (from `temperature` in Celsius) and route each
//! event to `alerts` above `threshold_f`, else to `normal`.
//!
//! This plugin exists in Rust, Python, JavaScript and C (`plugins/units-router-*`);
//! all four must produce the same bytes for the same input, so the output is defined
//! textually: the payload, minus its closing `}`, plus `,"temperature_f":F}` with F
//! printed with two decimals. Rejection reasons are fixed strings.

use serde::Deserialize;
use sluice_sdk::prelude::*;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_threshold")]
    pub threshold_f: f64,
}

fn default_threshold() -> f64 {
    176.0
}

pub struct UnitsRouter {
    threshold_f: f64,
}

pub const NOT_AN_OBJECT: &str = "payload is not a JSON object";
pub const NO_TEMPERATURE: &str = "missing numeric field `temperature`";

impl Processor for UnitsRouter {
    type Config = Config;

    fn new(config: Config) -> Result<Self, Error> {
        Ok(UnitsRouter {
            threshold_f: config.threshold_f,
        })
    }

    fn process(&mut self, event: &Event<'_>, out: &mut Output) -> Result<(), Error> {
        let value: serde_json::Value =
            serde_json::from_slice(event.payload()).map_err(|_| Error::new(NOT_AN_OBJECT))?;
        let object = value.as_object().ok_or(NOT_AN_OBJECT)?;
        let celsius = object
            .get("temperature")
            .and_then(serde_json::Value::as_f64)
            .ok_or(NO_TEMPERATURE)?;
        let fahrenheit = celsius * 9.0 / 5.0 + 32.0;
        let text = event.text()?.trim_end();
        let body = text.strip_suffix('}').ok_or(NOT_AN_OBJECT)?;
        let payload = format!("{body},\"temperature_f\":{fahrenheit:.2}}}");
        let route = if fahrenheit > self.threshold_f {
            "alerts"
        } else {
            "normal"
        };
        out.emit(event, payload.as_bytes(), Some(route));
        Ok(())
    }
}

sluice_sdk::export_processor!(UnitsRouter);
