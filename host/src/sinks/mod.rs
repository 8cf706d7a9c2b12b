//! Sinks: where events leave a pipeline. A sink acknowledges a batch by dropping its
//! tokens only once the batch is durable (fsynced, or acknowledged by a broker). A
//! failed write is retried with backoff, never dropped; while it retries, the bounded
//! channels fill and the sources slow down.

pub mod console;
pub mod file;
#[cfg(feature = "mqtt")]
pub mod mqtt;

use std::time::Duration;

use futures::future::BoxFuture;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use toml::de::ValueDeserializer;

use crate::config::KindError;
use crate::pipeline::{Batch, StageError, StageMetrics};
use crate::stage::{BuildContext, BuildError};

pub const KINDS: &[&str] = &[
    "file",
    "console",
    #[cfg(feature = "mqtt")]
    "mqtt",
];

#[derive(Debug)]
pub enum SinkConfig {
    File(file::FileSinkConfig),
    Console(console::ConsoleSinkConfig),
    #[cfg(feature = "mqtt")]
    Mqtt(mqtt::MqttSinkConfig),
}

pub(crate) fn parse(kind: &str, table: ValueDeserializer<'_>) -> Result<SinkConfig, KindError> {
    fn typed<T: DeserializeOwned>(table: ValueDeserializer<'_>) -> Result<T, KindError> {
        Ok(T::deserialize(table)?)
    }
    Ok(match kind {
        "file" => SinkConfig::File(typed(table)?),
        "console" => SinkConfig::Console(typed(table)?),
        #[cfg(feature = "mqtt")]
        "mqtt" => SinkConfig::Mqtt(typed(table)?),
        _ => return Err(KindError::Unknown(KINDS)),
    })
}

impl SinkConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            SinkConfig::File(_) => "file",
            SinkConfig::Console(_) => "console",
            #[cfg(feature = "mqtt")]
            SinkConfig::Mqtt(_) => "mqtt",
        }
    }

    pub async fn build(
        &self,
        name: &str,
        context: &BuildContext<'_>,
    ) -> Result<Box<dyn Sink>, BuildError> {
        Ok(match self {
            SinkConfig::File(config) => Box::new(config.build(name, context.data_dir)?),
            SinkConfig::Console(config) => Box::new(config.build()),
            #[cfg(feature = "mqtt")]
            SinkConfig::Mqtt(config) => Box::new(config.build(name)?),
        })
    }
}

/// A destination. `write` makes a batch durable and then drops it (which
/// acknowledges it), or hands it back with the error so that it can be retried.
pub trait Sink: Send {
    fn write(&mut self, batch: Batch) -> BoxFuture<'_, Result<(), (Batch, String)>>;
    /// Finish: flush buffers, wait for outstanding broker acknowledgements.
    fn close(self: Box<Self>) -> BoxFuture<'static, Result<(), String>>;
}

const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Feed `input` into `sink` until every upstream stage is done.
pub async fn run(
    stage: String,
    mut sink: Box<dyn Sink>,
    mut input: mpsc::Receiver<Batch>,
    abort: CancellationToken,
) -> Result<(), StageError> {
    let metrics = StageMetrics::new(&stage);
    while let Some(batch) = input.recv().await {
        let count = batch.len() as u64;
        metrics.events_in.increment(count);
        let started = std::time::Instant::now();
        let mut pending = batch;
        let mut backoff = Duration::from_millis(100);
        loop {
            match sink.write(pending).await {
                Ok(()) => break,
                Err((batch, error)) => {
                    metrics.errors.increment(1);
                    tracing::warn!(%stage, "write failed, retrying in {backoff:?}: {error}");
                    tokio::select! {
                        _ = abort.cancelled() => {
                            // Shutting down for good: leave these for redelivery.
                            batch.fail();
                            return Err(StageError::new(&stage, format!("gave up on {} events at shutdown: {error}", batch.len())));
                        }
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    pending = batch;
                }
            }
        }
        metrics.events_out.increment(count);
        metrics
            .batch_seconds
            .record(started.elapsed().as_secs_f64());
    }
    sink.close()
        .await
        .map_err(|error| StageError::new(&stage, error))
}
