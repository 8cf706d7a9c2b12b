//! The schedule of a `timed-processor` stage: `tick` every `tick_interval_ms`, and once
//! more when the stage's input has ended.
//!
//! A tick's results carry no input's acknowledgement, so the tick's own state writes
//! stand in for one (see `emit`): committed only when every event the tick emitted is
//! settled downstream; until then the stage is not ticked again.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::RwLock;
use tokio_util::sync::CancellationToken;

use crate::event::now_ms;
use crate::emit::emit_then_commit;
use crate::pipeline::{Outputs, StageError};
use crate::runtime::InstancePool;

pub(super) async fn run(
    pool: Arc<InstancePool>,
    interval: Option<Duration>,
    outputs: Arc<Outputs>,
    calls: Arc<RwLock<()>>,
    input_ended: CancellationToken,
) -> Result<(), StageError> {
    if let Some(interval) = interval {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            tokio::select! {
                _ = input_ended.cancelled() => break,
                _ = ticks.tick() => {}
            }
            tick(&pool, &outputs, &calls, false).await?;
        }
    } else {
        input_ended.cancelled().await;
    }
    tick(&pool, &outputs, &calls, true).await
}

/// One tick: call the plugin, send what it emitted, and commit its state writes once
/// that is taken downstream.
async fn tick(
    pool: &Arc<InstancePool>,
    outputs: &Outputs,
    calls: &Arc<RwLock<()>>,
    stopping: bool,
) -> Result<(), StageError> {
    let stage = pool.stage().to_owned();
    let ticking = pool.clone();
    let started = std::time::Instant::now();
    let alone = calls.clone().write_owned().await;
    // Held until the tick's writes are committed: no batch reads the state between.
    let ticked = tokio::task::spawn_blocking(move || ticking.tick(now_ms(), stopping))
    .await
    .map_err(|error| StageError::new(&stage, error))?;
    outputs
        .metrics()
.record_call(started.elapsed());
    let (processed, writes) = match ticked {
        Ok(ticked) => ticked,
        Err(error) => {
            // The state is as before the tick: the next one tries the same work again.
            outputs.metrics().errors.increment(1);
            tracing::error!(stage, "tick failed: {error}");
            return Ok(());
        }
    };
    let emitted = emit_then_commit(&stage, outputs, processed, writes, "a tick").await;
    drop(alone);
    emitted
}
