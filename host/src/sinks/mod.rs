//! Sinks: where events leave a pipeline. A sink gives a batch's tokens their
//! `delivered` verdict only once the batch is durable (fsynced, or acknowledged by a broker). A
//! failed write is retried with backoff, never dropped; while it retries, the bounded
//! channels fill and the sources slow down.

use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::component::{BuildContext, BuildError, Declaration};
use crate::pipeline::{
    Batch, DeadLetter, Outputs, SinkError, StageError, StageFailure, StageMetrics, tap,
};

crate::registry! { SinkConfig:
    "file" => file::FileSinkConfig,
    "console" => console::ConsoleSinkConfig,
    "serving" => serving::ServingSinkConfig,
    #[cfg(feature = "mqtt")] "mqtt" => mqtt::MqttSinkConfig,
    #[cfg(feature = "mqtt")] "uplink" => uplink::UplinkSinkConfig,
    #[cfg(feature = "kafka")] "kafka" => kafka::KafkaSinkConfig,
    #[cfg(feature = "object-store")] "object_store" => object_store::ObjectStoreSinkConfig,
    #[cfg(feature = "http-sink")] "http" => http::HttpSinkConfig,
}

/// The config of one sink kind.
pub trait SinkConfig: std::any::Any + std::fmt::Debug + Send + Sync {
    /// What `validate` needs to know before building (directories written, ...).
    fn declare(&self) -> Declaration<'_> {
        Declaration::default()
    }

    /// Prepare the sink (open files, make clients) without connecting or spawning.
    fn build(&self, context: &BuildContext<'_>) -> Result<Box<dyn Sink>, BuildError>;
}

/// A destination. `write` makes a batch durable and then settles it as delivered, or
/// hands it back with the error so that it can be retried. A token it drops unsettled
/// fails its event (see `pipeline::Ack`).
pub trait Sink: Send {
    /// Begin background work (connections, pollers). Called once, in the pipeline's
    /// task, after every stage is built.
    fn start(&mut self) {}
    fn write(&mut self, batch: Batch) -> BoxFuture<'_, Result<(), (Batch, SinkError)>>;
    /// The events refused since the last call, with why, for the `dead_letter` route.
    /// Only sinks that declare `rejects` refuse; a refused event is not written.
    fn take_rejected(&mut self) -> Vec<DeadLetter> {
        Vec::new()
    }
    /// How long to wait before writing again after a failed write, when the sink knows
    /// better than the loop's own backoff (a server's `Retry-After`, a backoff with
    /// jitter that many hosts share); `None` takes the loop's.
    fn retry_delay(&self) -> Option<Duration> {
        None
    }
    /// Finish: flush buffers, wait for outstanding broker acknowledgements.
    fn close(self: Box<Self>) -> BoxFuture<'static, Result<(), SinkError>>;
}

const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Feed `input` into `sink` until every upstream stage is done; what it refuses goes
/// to `dead_letters` (present when the sink declares `rejects`). The sink's tap point
/// shows what it stored: a batch's sample once its write succeeded, unless the sink
/// refused some of it (which of its events it cannot tell).
pub async fn run(
    stage: String,
    mut sink: Box<dyn Sink>,
    mut input: mpsc::Receiver<Batch>,
    dead_letters: Option<Outputs>,
    abort: CancellationToken,
) -> Result<(), StageError> {
    let metrics = StageMetrics::new(&stage);
    let stored = tap::point(&stage, None);
    sink.start();
    while let Some(batch) = input.recv().await {
        let count = batch.len() as u64;
        metrics.events_in.increment(count);
        let started = std::time::Instant::now();
        // Taken before the write, which consumes the batch.
        let sample = stored.sample(&batch.events);
        let mut pending = batch;
        let mut backoff = Duration::from_millis(100);
        loop {
            match sink.write(pending).await {
                Ok(()) => break,
                Err((batch, error)) => {
                    metrics.errors.increment(1);
                    let delay = sink.retry_delay().unwrap_or(backoff);
                    tracing::warn!(%stage, "write failed, retrying in {delay:?}: {error}");
                    tokio::select! {
                        _ = abort.cancelled() => {
                            // Shutting down for good: leave these for redelivery.
                            let events = batch.len();
                            batch.fail();
                            return Err(StageError::new(&stage, StageFailure::GaveUp { events, source: error }));
                        }
                        _ = tokio::time::sleep(delay) => {}
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    pending = batch;
                }
            }
        }
        let rejected = sink.take_rejected();
        let refused = rejected.len() as u64;
        if let Some(sample) = sample.filter(|_| refused == 0) {
            sample.deliver();
        }
        if let Some(outputs) = &dead_letters {
            outputs
                .dead_letter(rejected)
                .await
                .map_err(|closed| StageError::new(&stage, closed))?;
        }
        metrics.events_out.increment(count - refused);
        metrics.record_call(started.elapsed());
    }
    sink.close()
        .await
        .map_err(|error| StageError::new(&stage, StageFailure::Close(error)))
}
