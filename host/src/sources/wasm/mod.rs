//! `type = "wasm"` source: a collector plugin called every `interval_ms`. A collect's
//! state writes (a sensor's sequence number) hold only once its readings are settled
//! downstream (see `emit`), so a kill between the two repeats a reading, never skips
//! one.

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use toml::Spanned;

use crate::emit::emit_then_commit;
use crate::pipeline::{Outputs, StageError};
use crate::runtime::{InstancePool, World};
use crate::component::{BuildContext, BuildError, Declaration, PluginUse};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WasmSourceConfig {
    /// A `[plugins.NAME]` of the `collector` world.
    pub plugin: Spanned<String>,
    #[serde(
        rename = "interval_ms",
        default = "default_interval",
        with = "serde_with::As::<serde_with::DurationMilliSeconds<u64>>"
    )]
    pub interval: Duration,
    /// The plugin's own config (a table, passed as JSON to `init`).
    #[serde(default = "crate::component::empty_config")]
    pub config: serde_json::Value,
}

fn default_interval() -> Duration {
    Duration::from_secs(1)
}

impl super::SourceConfig for WasmSourceConfig {
    fn declare(&self) -> Declaration<'_> {
        Declaration {
            plugin: Some(PluginUse {
                name: &self.plugin,
                world: World::Collector,
                config: &self.config,
            }),
            ..Declaration::default()
        }
    }

    fn build(&self, context: &BuildContext<'_>) -> Result<Box<dyn super::Source>, BuildError> {
        if self.interval.is_zero() {
            return Err(BuildError::stage(
                context.stage,
                "`interval_ms` must be at least 1",
            ));
        }
        let pool = context.pool(self.plugin.get_ref(), World::Collector, &self.config, 1)?;
        Ok(Box::new(WasmSource {
            pool,
            interval: self.interval,
        }))
    }
}

pub struct WasmSource {
    pool: Arc<InstancePool>,
    interval: Duration,
}

impl super::Source for WasmSource {
    fn run(
        self: Box<Self>,
        outputs: Outputs,
        shutdown: CancellationToken,
    ) -> BoxFuture<'static, Result<(), StageError>> {
        async move {
            let stage = self.pool.stage().to_owned();
            let mut ticks = tokio::time::interval(self.interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = ticks.tick() => {}
                }
                let pool = self.pool.clone();
                let started = std::time::Instant::now();
                let collected = tokio::task::spawn_blocking(move || pool.collect())
                    .await
                    .map_err(|error| StageError::new(&stage, error))?;
                outputs
                    .metrics()
.record_call(started.elapsed());
                match collected {
                    Ok((processed, writes)) => {
                        let taken = processed.emitted.iter().filter(|e| e.route.is_none()).count();
                        outputs.metrics().events_in.increment(taken as u64);
                        emit_then_commit(&stage, &outputs, processed, writes, "a collect").await?;
                    }
                    Err(error) => {
                        outputs.metrics().errors.increment(1);
                        tracing::error!(stage, "collect failed: {error}");
                    }
                }
            }
        }
        .boxed()
    }
}
