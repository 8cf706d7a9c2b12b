//! The running pipeline: stages as tokio tasks joined by bounded channels of batches,
//! acknowledgements flowing back to sources, dead letters, metrics and shutdown.

mod ack;
mod batch;
mod check;
mod metrics;
mod outputs;
mod topology;

pub use ack::Ack;
pub use batch::Batch;
pub use check::check_plugins;
pub use metrics::StageMetrics;
pub use outputs::{Closed, DeadLetter, Inlet, Outputs};
pub use topology::{Pipeline, StartError};

/// The error a running stage stops with.
#[derive(Debug, thiserror::Error)]
#[error("stage `{stage}`: {message}")]
pub struct StageError {
    pub stage: String,
    pub message: String,
}

impl StageError {
    pub fn new(stage: &str, message: impl std::fmt::Display) -> Self {
        StageError {
            stage: stage.to_owned(),
            message: message.to_string(),
        }
    }
}
