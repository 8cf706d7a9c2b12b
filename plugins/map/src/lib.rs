//! `map`: reshape JSON events. Steps run in this order: `rename`, `set`, `convert`,
//! `drop`. Paths are dotted (`"reading.temp"`). The payload is edited in place: fields
//! the steps do not name keep their bytes and their order; new fields come last.
//!
//! ```toml
//! [transforms.shape.config]
//! rename = { temp = "temperature_c" }
//! set = { site = "plant-1" }
//! convert = { temperature_c = "celsius_to_fahrenheit", battery = "int" }
//! drop = ["debug"]
//! ```

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;
use sluice_sdk::json::RawObject;
use sluice_sdk::prelude::*;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub rename: BTreeMap<String, String>,
    #[serde(default)]
    pub set: BTreeMap<String, Value>,
    #[serde(default)]
    pub convert: BTreeMap<String, Conversion>,
    #[serde(default)]
    pub drop: Vec<String>,
}

/// A conversion of one field's value.
#[derive(Deserialize, Clone, Copy, Debug)]
#[serde(rename_all = "snake_case")]
pub enum Conversion {
    Int,
    Float,
    String,
    Bool,
    CelsiusToFahrenheit,
    FahrenheitToCelsius,
}

impl Conversion {
    fn apply(self, value: &Value) -> Option<Value> {
        let number = || match value {
            Value::String(text) => text.trim().parse::<f64>().ok(),
            other => other.as_f64(),
        };
        Some(match self {
            Conversion::Float => Value::from(number()?),
            Conversion::Int => Value::from(number()?.trunc() as i64),
            Conversion::String => match value {
                Value::String(text) => Value::String(text.clone()),
                other => Value::String(other.to_string()),
            },
            Conversion::Bool => match value {
                Value::Bool(flag) => Value::Bool(*flag),
                Value::String(text) => Value::Bool(text.parse().ok()?),
                other => Value::Bool(other.as_f64()? != 0.0),
            },
            Conversion::CelsiusToFahrenheit => Value::from(round(number()? * 9.0 / 5.0 + 32.0)),
            Conversion::FahrenheitToCelsius => Value::from(round((number()? - 32.0) * 5.0 / 9.0)),
        })
    }
}

/// Unit conversions round to 6 decimals so every language's plugin prints the same digits.
fn round(value: f64) -> f64 {
    (value * 1e6).round() / 1e6
}

pub struct Map {
    config: Config,
    /// `set`'s values as JSON text, serialized once.
    set: Vec<(String, String)>,
    /// The output payload, reused between events.
    buffer: Vec<u8>,
}

impl Processor for Map {
    type Config = Config;

    fn new(config: Config) -> Result<Self, Error> {
        let set = config
            .set
            .iter()
            .map(|(path, value)| (path.clone(), value.to_string()))
            .collect();
        Ok(Map {
            config,
            set,
            buffer: Vec::new(),
        })
    }

    fn process(&mut self, event: &Event<'_>, out: &mut Output) -> Result<(), Error> {
        let mut payload = RawObject::parse(event.text()?)?;
        for (from, to) in &self.config.rename {
            payload.rename(from, to)?;
        }
        for (path, value) in &self.set {
            payload.set(path, value.as_str())?;
        }
        for (path, conversion) in &self.config.convert {
            let Some(current) = payload.get(path) else {
                continue;
            };
            let value: Value = serde_json::from_str(&current)?;
            let converted = conversion.apply(&value).ok_or_else(|| {
                Error::new(format!(
                    "cannot convert `{path}` ({value}) with {conversion:?}"
                ))
            })?;
            payload.set(path, converted.to_string())?;
        }
        for path in &self.config.drop {
            payload.remove(path);
        }
        self.buffer.clear();
        payload.write(&mut self.buffer);
        out.emit(event, &self.buffer, None);
        Ok(())
    }
}

sluice_sdk::export_processor!(Map);
