//! The schedule of a `timed-processor` stage: `tick` every `tick_interval_ms`, and once
//! more when the stage's input has ended. Under `sluice test` the stage ticks only when
//! asked ([`ManualTicks`]), at the time it is given, and once more at the end.
//!
//! A tick's results carry no input's acknowledgement, so the tick's own state writes
//! stand in for one (see `emit`): committed only when every event the tick emitted is
//! settled downstream; until then the stage is not ticked again.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{RwLock, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::emit::emit_then_commit;
use crate::event::now_ms;
use crate::pipeline::{Outputs, StageError};
use crate::runtime::{InstancePool, PluginError};

/// Ticks on request instead of on a timer: a test steps a timed stage's clock itself.
/// Set on the stage's config before it is built; the interval timer is then off.
#[derive(Clone)]
pub struct ManualTicks {
    shared: Arc<Shared>,
}

struct Shared {
    sender: mpsc::UnboundedSender<Request>,
    /// Taken by the stage when it starts.
    requests: Mutex<Option<mpsc::UnboundedReceiver<Request>>>,
    /// Why ticks failed (the stopping one included), in order.
    failures: Mutex<Vec<String>>,
}

struct Request {
    now_ms: i64,
    done: oneshot::Sender<()>,
}

/// The stage did not run the tick: it has stopped, or its plugin has no `tick`.
#[derive(Debug, thiserror::Error)]
#[error("the stage did not tick: it has stopped, or its plugin does not export `tick`")]
pub struct NotTicked;

impl ManualTicks {
    pub fn new() -> ManualTicks {
        let (sender, requests) = mpsc::unbounded_channel();
        ManualTicks {
            shared: Arc::new(Shared {
                sender,
                requests: Mutex::new(Some(requests)),
                failures: Mutex::default(),
            }),
        }
    }

    /// Tick the stage once, at `now_ms`, and wait until the tick has run and every
    /// event it emitted is settled downstream.
    pub async fn tick(&self, now_ms: i64) -> Result<(), NotTicked> {
        let (done, ticked) = oneshot::channel();
        self.shared
            .sender
            .send(Request { now_ms, done })
            .map_err(|_| NotTicked)?;
        ticked.await.map_err(|_| NotTicked)
    }

    /// Why the ticks so far failed, each once.
    pub fn take_failures(&self) -> Vec<String> {
        std::mem::take(&mut *self.shared.failures.lock().unwrap())
    }

    fn failed(&self, error: PluginError) {
        self.shared.failures.lock().unwrap().push(error.to_string());
    }
}

impl Default for ManualTicks {
    fn default() -> Self {
        ManualTicks::new()
    }
}

impl std::fmt::Debug for ManualTicks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ManualTicks")
    }
}

pub(super) async fn run(
    pool: Arc<InstancePool>,
    interval: Option<Duration>,
    manual: Option<ManualTicks>,
    outputs: Arc<Outputs>,
    calls: Arc<RwLock<()>>,
    input_ended: CancellationToken,
) -> Result<(), StageError> {
    let requests = manual
        .as_ref()
        .and_then(|manual| manual.shared.requests.lock().unwrap().take());
    if let (Some(mut requests), Some(manual)) = (requests, &manual) {
        loop {
            let request = tokio::select! {
                _ = input_ended.cancelled() => break,
                request = requests.recv() => request,
            };
            let Some(request) = request else {
                input_ended.cancelled().await;
                break;
            };
            if let Err(error) = tick(&pool, &outputs, &calls, request.now_ms, false).await? {
                manual.failed(error);
            }
            let _ = request.done.send(());
        }
    } else if let Some(interval) = interval {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            tokio::select! {
                _ = input_ended.cancelled() => break,
                _ = ticks.tick() => {}
            }
            // A failed tick is logged; the next one tries the same work again.
            let _ = tick(&pool, &outputs, &calls, now_ms(), false).await?;
        }
    } else {
        input_ended.cancelled().await;
    }
    let stopped = tick(&pool, &outputs, &calls, now_ms(), true).await?;
    if let (Err(error), Some(manual)) = (stopped, &manual) {
        manual.failed(error);
    }
    Ok(())
}

/// One tick at `now`: call the plugin, send what it emitted, and commit its state
/// writes once that is taken downstream. A plugin that fails is logged and its error
/// returned inside: the state is as before the tick.
async fn tick(
    pool: &Arc<InstancePool>,
    outputs: &Outputs,
    calls: &Arc<RwLock<()>>,
    now: i64,
    stopping: bool,
) -> Result<Result<(), PluginError>, StageError> {
    let stage = pool.stage().to_owned();
    let ticking = pool.clone();
    let started = std::time::Instant::now();
    let alone = calls.clone().write_owned().await;
    // Held until the tick's writes are committed: no batch reads the state between.
    let ticked = tokio::task::spawn_blocking(move || ticking.tick(now, stopping))
        .await
        .map_err(|error| StageError::new(&stage, error))?;
    outputs
        .metrics()
.record_call(started.elapsed());
    let (processed, writes) = match ticked {
        Ok(ticked) => ticked,
        Err(error) => {
            outputs.metrics().errors.increment(1);
            tracing::error!(stage, "tick failed: {error}");
            return Ok(Err(error));
        }
    };
    let emitted = emit_then_commit(&stage, outputs, processed, writes, "a tick").await;
    drop(alone);
    emitted.map(Ok)
}
