//! Sources: where events enter a pipeline. One module per `type`, each with the config
//! struct that the `[sources.NAME]` table deserializes into.

#[cfg(feature = "http")]
pub mod http;
#[cfg(feature = "mqtt")]
pub mod mqtt;
pub mod wasm;

use futures::future::BoxFuture;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;
use toml::Spanned;
use toml::de::ValueDeserializer;

use crate::config::KindError;
use crate::pipeline::{Outputs, StageError};
use crate::stage::{BuildContext, BuildError};

/// The `type`s a source can have.
pub const KINDS: &[&str] = &[
    #[cfg(feature = "mqtt")]
    "mqtt",
    #[cfg(feature = "http")]
    "http",
    "wasm",
];

#[derive(Debug)]
pub enum SourceConfig {
    #[cfg(feature = "mqtt")]
    Mqtt(mqtt::MqttSourceConfig),
    #[cfg(feature = "http")]
    Http(http::HttpSourceConfig),
    Wasm(wasm::WasmSourceConfig),
}

pub(crate) fn parse(kind: &str, table: ValueDeserializer<'_>) -> Result<SourceConfig, KindError> {
    fn typed<T: DeserializeOwned>(table: ValueDeserializer<'_>) -> Result<T, KindError> {
        Ok(T::deserialize(table)?)
    }
    Ok(match kind {
        #[cfg(feature = "mqtt")]
        "mqtt" => SourceConfig::Mqtt(typed(table)?),
        #[cfg(feature = "http")]
        "http" => SourceConfig::Http(typed(table)?),
        "wasm" => SourceConfig::Wasm(typed(table)?),
        _ => return Err(KindError::Unknown(KINDS)),
    })
}

/// A running source: it reads until `shutdown`, then flushes what it holds and returns.
pub trait Source: Send {
    fn run(
        self: Box<Self>,
        outputs: Outputs,
        shutdown: CancellationToken,
    ) -> BoxFuture<'static, Result<(), StageError>>;
}

impl SourceConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            #[cfg(feature = "mqtt")]
            SourceConfig::Mqtt(_) => "mqtt",
            #[cfg(feature = "http")]
            SourceConfig::Http(_) => "http",
            SourceConfig::Wasm(_) => "wasm",
        }
    }

    /// The plugin this source runs, if it is a Wasm collector.
    pub fn plugin(&self) -> Option<&Spanned<String>> {
        match self {
            SourceConfig::Wasm(config) => Some(&config.plugin),
            #[allow(unreachable_patterns)]
            _ => None,
        }
    }

    /// Prepare the source (open ports, start plugin instances) without reading yet.
    pub async fn build(
        &self,
        name: &str,
        context: &BuildContext<'_>,
    ) -> Result<Box<dyn Source>, BuildError> {
        Ok(match self {
            #[cfg(feature = "mqtt")]
            SourceConfig::Mqtt(config) => Box::new(config.build(name)?),
            #[cfg(feature = "http")]
            SourceConfig::Http(config) => Box::new(config.build(name).await?),
            SourceConfig::Wasm(config) => Box::new(config.build(name, context)?),
        })
    }
}
