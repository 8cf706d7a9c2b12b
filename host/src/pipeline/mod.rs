//! The data plane's primitives: batches on bounded channels, acknowledgements flowing
//! back to sources, how sources gather batches, a stage's outputs and dead letters, its
//! metrics (with the events of each route, [`flow`]), the newest dead letters
//! ([`dead_letter_log`]), its errors, and the taps that sample what leaves a stage
//! ([`tap`]).

mod ack;
mod batch;
mod batcher;
pub mod dead_letter_log;
pub mod flow;
mod metrics;
mod outputs;
pub mod tap;

pub use ack::Ack;
pub use batch::Batch;
pub use batcher::{BatchLimits, Batcher};
pub use metrics::StageMetrics;
pub use outputs::{Closed, DeadLetter, Inlet, Outputs};

/// An error of a sink's write or close: whatever the destination reported, kept as the
/// source of the stage's error.
pub type SinkError = Box<dyn std::error::Error + Send + Sync>;

/// The error a running stage stops with.
#[derive(Debug, thiserror::Error)]
#[error("stage `{stage}`: {failure}")]
pub struct StageError {
    pub stage: String,
    #[source]
    pub failure: StageFailure,
}

/// Why a running stage stopped.
#[derive(Debug, thiserror::Error)]
pub enum StageFailure {
    #[error(transparent)]
    Downstream(#[from] Closed),
    #[error("a worker task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("gave up on {events} events at shutdown (they will be redelivered): {source}")]
    GaveUp {
        events: usize,
        #[source]
        source: SinkError,
    },
    #[error("closing failed: {0}")]
    Close(#[source] SinkError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Other(SinkError),
}

impl StageError {
    pub fn new(stage: &str, failure: impl Into<StageFailure>) -> Self {
        StageError {
            stage: stage.to_owned(),
            failure: failure.into(),
        }
    }

    /// A failure that only a message describes (e.g. a server that stopped).
    pub fn other(stage: &str, error: impl Into<SinkError>) -> Self {
        StageError::new(stage, StageFailure::Other(error.into()))
    }
}
