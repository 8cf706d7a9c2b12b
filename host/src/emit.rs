//! Emitting what a plugin made from no input — a collector's readings, a tick's closed
//! windows — together with the state the call wrote.
//!
//! Such events carry no source's token, so the call's state writes stand in for one:
//! they are committed only once every copy of every event the call emitted is settled
//! downstream (delivered, or dropped on purpose). Until then the stage is not called
//! again. If a copy fails (a sink gave up, the host is killed), the writes are dropped
//! and the next call — after a restart, the first one — emits the same events again:
//! a restart may repeat them, never lose them.

use std::sync::Arc;

use crate::event::Event;
use crate::pipeline::{Outputs, StageError};
use crate::runtime::{DeferredWrites, Processed};
use crate::state::StateError;

/// Send `processed` and commit `writes` once it is settled. `call` names the call in
/// the logs ("a tick", "a collect").
pub async fn emit_then_commit(
    stage: &str,
    outputs: &Outputs,
    processed: Processed,
    writes: DeferredWrites,
    call: &str,
) -> Result<(), StageError> {
    let emitted = processed.emitted.len();
    if emitted > 0 {
        let routed: Vec<(Option<Arc<str>>, Event)> = processed
            .emitted
            .into_iter()
            .map(|emitted| (emitted.route, emitted.event))
            .collect();
        let settled = outputs
            .send_and_settle(routed)
            .await
            .map_err(|error| StageError::new(stage, error))?;
        if !settled {
            tracing::warn!(
                stage,
                emitted,
                "{call}'s events were not taken by every sink; the next one emits them again"
            );
            return Ok(());
        }
    }
    commit(stage, move || writes.commit(), call).await?;
    Ok(())
}

/// Commit a call's state writes (`writes` commits them) off the async workers (the
/// store syncs to disk). `Ok(false)` when the store refused them (the stage's state is
/// full): logged, and the call's work will come again.
pub async fn commit(
    stage: &str,
    writes: impl FnOnce() -> Result<(), StateError> + Send + 'static,
    call: &str,
) -> Result<bool, StageError> {
    let committed = tokio::task::spawn_blocking(writes)
        .await
        .map_err(|error| StageError::new(stage, error))?;
    match committed {
        Ok(()) => Ok(true),
        Err(error) => {
            tracing::error!(
                stage,
                "cannot commit {call}'s state, its events will come again: {error}"
            );
            Ok(false)
        }
    }
}
