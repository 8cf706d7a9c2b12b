//! Transforms: stages between sources and sinks. One folder per `type`; one line in
//! [`KINDS`] registers it.

use futures::future::BoxFuture;
use tokio::sync::mpsc;

use crate::component::{BuildContext, BuildError, Declaration};
use crate::pipeline::{Batch, Outputs, StageError};

crate::registry! { TransformConfig:
    "wasm" => wasm::WasmTransformConfig,
    "alert" => alert::AlertTransformConfig,
}

/// The config of one transform kind.
pub trait TransformConfig: std::any::Any + std::fmt::Debug + Send + Sync {
    /// What `validate` and the topology need to know before building; a transform's
    /// named routes above all.
    fn declare(&self) -> Declaration<'_> {
        Declaration::default()
    }

    fn build(&self, context: &BuildContext<'_>) -> Result<Box<dyn Transform>, BuildError>;
}

/// A running transform: it takes batches from `input` until every upstream stage is
/// done, and sends what it makes to `outputs`.
pub trait Transform: Send {
    fn run(
        self: Box<Self>,
        input: mpsc::Receiver<Batch>,
        outputs: Outputs,
    ) -> BoxFuture<'static, Result<(), StageError>>;
}
