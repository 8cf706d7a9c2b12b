//! `map`: reshape JSON events. Steps run in this order: `rename`, `set`, `convert`,
//! `drop`. Paths are dotted (`"reading.temp"`).
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
use sluice_sdk::json;
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
}

impl Processor for Map {
    type Config = Config;

    fn new(config: Config) -> Result<Self, Error> {
        Ok(Map { config })
    }

    fn process(&mut self, event: &Event<'_>, out: &mut Output) -> Result<(), Error> {
        let mut payload: Value = event.json()?;
        if !payload.is_object() {
            return Err(Error::new(format!(
                "expected a JSON object, found {}",
                json::type_name(&payload)
            )));
        }
        for (from, to) in &self.config.rename {
            if let Some(value) = json::remove(&mut payload, from) {
                json::set(&mut payload, to, value)?;
            }
        }
        for (path, value) in &self.config.set {
            json::set(&mut payload, path, value.clone())?;
        }
        for (path, conversion) in &self.config.convert {
            let Some(current) = json::get(&payload, path) else {
                continue;
            };
            let converted = conversion.apply(current).ok_or_else(|| {
                Error::new(format!(
                    "cannot convert `{path}` ({current}) with {conversion:?}"
                ))
            })?;
            json::set(&mut payload, path, converted)?;
        }
        for path in &self.config.drop {
            json::remove(&mut payload, path);
        }
        out.emit_json(event, &payload, None)
    }
}

sluice_sdk::export_processor!(Map);
