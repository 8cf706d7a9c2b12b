//! The one wasmtime engine of a host, its linker, and the clock that drives deadlines.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Config, Engine};

use super::bindings::processor::Processor;
use super::cache::ComponentCache;
use super::error::PluginError;
use super::plugin::Plugin;
use super::store::StoreData;

/// Deadlines are counted in ticks of this epoch clock.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

#[derive(Debug, Clone, Default)]
pub struct RuntimeOptions {
    /// Where compiled components are cached; `None` disables the cache.
    pub cache_dir: Option<PathBuf>,
    /// Enable fuel metering (needed when any stage sets a fuel limit).
    pub fuel: bool,
}

impl RuntimeOptions {
    /// The defaults of a host: the user's cache directory, no fuel.
    pub fn with_default_cache() -> Self {
        RuntimeOptions {
            cache_dir: ComponentCache::default_dir(),
            fuel: false,
        }
    }
}

pub struct Runtime {
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<StoreData>,
    pub(crate) cache: ComponentCache,
    pub(crate) fuel: bool,
    ticker: EpochTicker,
}

impl Runtime {
    pub fn new(options: RuntimeOptions) -> Result<Arc<Runtime>, PluginError> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        config.consume_fuel(options.fuel);
        let engine =
            Engine::new(&config).map_err(|error| PluginError::Cache(format!("engine: {error}")))?;
        let mut linker = Linker::new(&engine);
        let link_error = |error: wasmtime::Error| PluginError::Cache(format!("linker: {error}"));
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(link_error)?;
        Processor::add_to_linker::<_, HasSelf<StoreData>>(&mut linker, |data| data)
            .map_err(link_error)?;
        let cache = ComponentCache::new(&engine, options.cache_dir);
        let ticker = EpochTicker::start(engine.clone());
        Ok(Arc::new(Runtime {
            engine,
            linker,
            cache,
            fuel: options.fuel,
            ticker,
        }))
    }

    /// Load, verify and link a plugin. `pin` is the expected sha256, if the config sets one.
    pub fn load(
        &self,
        name: &str,
        path: &Path,
        pin: Option<&str>,
    ) -> Result<Arc<Plugin>, PluginError> {
        let plugin = Plugin::load(self, name, path, pin)?;
        tracing::debug!(plugin = name, path = %path.display(), cached = plugin.cached, "plugin loaded");
        Ok(Arc::new(plugin))
    }

    /// How many ticks make up `timeout` (at least one).
    pub(crate) fn deadline_ticks(timeout: Duration) -> u64 {
        (timeout.as_micros() as u64)
            .div_ceil(EPOCH_TICK.as_micros() as u64)
            .max(1)
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.ticker.stop();
    }
}

/// A thread that advances the engine's epoch every [`EPOCH_TICK`].
struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    fn start(engine: Engine) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("sluice-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })
            .expect("spawning the epoch thread");
        EpochTicker {
            stop,
            thread: Some(thread),
        }
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
