//! Transforms: stages between sources and sinks. Every transform is a Wasm processor
//! plugin today; the enum leaves room for built-in kinds.

pub mod wasm;

use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::ValueDeserializer;

use crate::config::KindError;

pub const KINDS: &[&str] = &["wasm"];

#[derive(Debug)]
pub enum TransformConfig {
    Wasm(wasm::WasmTransformConfig),
}

pub(crate) fn parse(
    kind: &str,
    table: ValueDeserializer<'_>,
) -> Result<TransformConfig, KindError> {
    fn typed<T: DeserializeOwned>(table: ValueDeserializer<'_>) -> Result<T, KindError> {
        Ok(T::deserialize(table)?)
    }
    match kind {
        "wasm" => Ok(TransformConfig::Wasm(typed(table)?)),
        _ => Err(KindError::Unknown(KINDS)),
    }
}

impl TransformConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            TransformConfig::Wasm(_) => "wasm",
        }
    }

    pub fn plugin(&self) -> Option<&Spanned<String>> {
        match self {
            TransformConfig::Wasm(config) => Some(&config.plugin),
        }
    }

    /// The named routes the stage declares.
    pub fn routes(&self) -> &[Spanned<String>] {
        match self {
            TransformConfig::Wasm(config) => &config.routes,
        }
    }
}
