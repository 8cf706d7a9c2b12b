//! Sources: where events enter a pipeline. One folder per `type`, each with the config
//! struct that the `[sources.NAME]` table deserializes into and the running source it
//! builds; one line in [`KINDS`] registers it.

use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use crate::component::{BuildContext, BuildError, Declaration};
use crate::pipeline::{Outputs, StageError};

crate::registry! { SourceConfig:
    #[cfg(feature = "mqtt")] "mqtt" => mqtt::MqttSourceConfig,
    #[cfg(feature = "http")] "http" => http::HttpSourceConfig,
    #[cfg(feature = "kafka")] "kafka" => kafka::KafkaSourceConfig,
    #[cfg(feature = "object-store")] "replay" => replay::ReplaySourceConfig,
    "wasm" => wasm::WasmSourceConfig,
    #[cfg(feature = "host-events")] "host_events" => host_events::HostEventsSourceConfig,
}

/// The config of one source kind.
pub trait SourceConfig: std::any::Any + std::fmt::Debug + Send + Sync {
    /// What `validate` and the topology need to know before building.
    fn declare(&self) -> Declaration<'_> {
        Declaration::default()
    }

    /// Prepare the source (bind ports, start plugin instances) without reading yet.
    fn build(&self, context: &BuildContext<'_>) -> Result<Box<dyn Source>, BuildError>;
}

/// A running source: it reads until `shutdown`, then flushes what it holds and returns.
pub trait Source: Send {
    fn run(
        self: Box<Self>,
        outputs: Outputs,
        shutdown: CancellationToken,
    ) -> BoxFuture<'static, Result<(), StageError>>;
}
