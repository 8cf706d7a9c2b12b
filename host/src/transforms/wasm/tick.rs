//! The schedule of a `timed-processor` stage: `tick` every `tick_interval_ms`, and once
//! more when the stage's input has ended.
//!
//! A tick's results carry no input's acknowledgement, so the tick's own state writes
//! stand in for one: they are committed only when every event the tick emitted has been
//! taken by every sink. Until then the stage is not ticked again; if the events are
//! failed (a sink gave up), the writes are dropped and the next tick (after a restart,
//! the first one) emits the same results again.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{RwLock, oneshot};
use tokio_util::sync::CancellationToken;

use crate::event::now_ms;
use crate::pipeline::{Ack, Outputs, StageError};
use crate::runtime::{DeferredWrites, InstancePool};

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
    let ticked = tokio::task::spawn_blocking(move || {
        let ticked = ticking.tick(now_ms(), stopping);
        drop(alone);
        ticked
    })
    .await
    .map_err(|error| StageError::new(&stage, error))?;
    outputs
        .metrics()
        .batch_seconds
        .record(started.elapsed().as_secs_f64());
    let (processed, writes) = match ticked {
        Ok(ticked) => ticked,
        Err(error) => {
            // The state is as before the tick: the next one tries the same work again.
            outputs.metrics().errors.increment(1);
            tracing::error!(stage, "tick failed: {error}");
            return Ok(());
        }
    };
    if processed.emitted.is_empty() {
        return commit(&stage, writes).await;
    }
    let (taken, delivered) = oneshot::channel::<()>();
    // Runs once the last copy of every emitted event is taken; dropped unrun (closing
    // `delivered`) if any copy is failed.
    let ack = Ack::new(move || {
        let _ = taken.send(());
    });
    let emitted = processed.emitted.len();
    let routed = processed
        .emitted
        .into_iter()
        .map(|emitted| (emitted.route, emitted.event, ack.clone()))
        .collect();
    ack.handed_on();
    outputs
        .send_routed(routed)
        .await
        .map_err(|error| StageError::new(&stage, error))?;
    match delivered.await {
        Ok(()) => commit(&stage, writes).await,
        Err(_) => {
            tracing::warn!(stage, emitted, "a tick's results were not taken by every sink; the next tick emits them again");
            Ok(())
        }
    }
}

/// Commit a tick's writes. If that fails (the stage's state is full), the tick's
/// results are out but its state is as before: the next tick emits them again.
async fn commit(stage: &str, writes: DeferredWrites) -> Result<(), StageError> {
    let committed = tokio::task::spawn_blocking(move || writes.commit())
        .await
        .map_err(|error| StageError::new(stage, error))?;
    if let Err(error) = committed {
        tracing::error!(stage, "cannot commit a tick's state, its results will come again: {error}");
    }
    Ok(())
}
