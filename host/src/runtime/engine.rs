//! The one wasmtime engine of a host, its linkers, and the clock that drives deadlines.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::component::Linker;
use wasmtime::{Config, Engine};

#[cfg(feature = "compiler")]
use super::cache::ComponentCache;
use super::capabilities::{self, Capability};
use super::error::PluginError;
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
        #[cfg(feature = "compiler")]
        let cache_dir = ComponentCache::default_dir();
        // Nothing is compiled, so nothing is cached.
        #[cfg(not(feature = "compiler"))]
        let cache_dir = None;
        RuntimeOptions {
            cache_dir,
            fuel: false,
        }
    }
}

pub struct Runtime {
    pub(crate) engine: Engine,
    /// WASI (without sockets) only; each stage adds the capabilities it grants.
    wasi_linker: Linker<StoreData>,
    /// Linkers by the capabilities they grant, each built once: cloning WASI's linker
    /// rebuilds its name maps, which costs about as much as instantiating a plugin.
    linkers: Mutex<BTreeMap<BTreeSet<Capability>, Arc<Linker<StoreData>>>>,
    #[cfg(feature = "compiler")]
    pub(crate) cache: ComponentCache,
    pub(crate) fuel: bool,
    /// Shared with every instance pool made from this runtime: deadlines must keep
    /// firing for as long as any plugin can run, which outlives the runtime's builder.
    pub(crate) ticker: Arc<EpochTicker>,
}

impl Runtime {
    pub fn new(options: RuntimeOptions) -> Result<Arc<Runtime>, PluginError> {
        let engine = Engine::new(&engine_config(options.fuel))
            .map_err(|error| PluginError::Cache(format!("engine: {error}")))?;
        let mut wasi_linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut wasi_linker).map_err(link_error)?;
        let ticker = Arc::new(EpochTicker::start(engine.clone()));
        Ok(Arc::new(Runtime {
            #[cfg(feature = "compiler")]
            cache: ComponentCache::new(&engine, options.cache_dir),
            engine,
            wasi_linker,
            linkers: Mutex::default(),
            fuel: options.fuel,
            ticker,
        }))
    }

    /// A linker with WASI and the `granted` capabilities.
    pub(crate) fn linker(
        &self,
        granted: &BTreeSet<Capability>,
    ) -> Result<Arc<Linker<StoreData>>, PluginError> {
        let mut linkers = self.linkers.lock().unwrap();
        if let Some(linker) = linkers.get(granted) {
            return Ok(linker.clone());
        }
        let mut linker = self.wasi_linker.clone();
        capabilities::add_to_linker(&mut linker, granted).map_err(link_error)?;
        let linker = Arc::new(linker);
        linkers.insert(granted.clone(), linker.clone());
        Ok(linker)
    }

    /// A linker with every capability: what any plugin may import at all.
    pub(crate) fn full_linker(&self) -> Result<Arc<Linker<StoreData>>, PluginError> {
        self.linker(&Capability::ALL.into())
    }

    /// How many ticks make up `timeout` (at least one).
    pub(crate) fn deadline_ticks(timeout: Duration) -> u64 {
        (timeout.as_micros() as u64)
            .div_ceil(EPOCH_TICK.as_micros() as u64)
            .max(1)
    }
}

/// The engine settings of every runtime. A component precompiled elsewhere loads only
/// into an engine with the same settings, so the central host precompiles with these too.
pub(crate) fn engine_config(fuel: bool) -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    config.consume_fuel(fuel);
    config
}

fn link_error(error: wasmtime::Error) -> PluginError {
    PluginError::Cache(format!("linker: {error}"))
}

/// A thread that advances the engine's epoch every [`EPOCH_TICK`], until the last
/// holder lets go.
pub(crate) struct EpochTicker {
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
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
