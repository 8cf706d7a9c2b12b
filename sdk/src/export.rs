//! Glue between the generated world exports and the SDK traits. The export macros
//! expand to a call into these functions, with the plugin instance in a thread-local.

use std::cell::RefCell;

use crate::__bindings::sluice::plugin::types as wit;

fn parse_config<C: serde::de::DeserializeOwned>(config: &str) -> Result<C, String> {
    serde_json::from_str(config).map_err(|error| format!("invalid plugin config: {error}"))
}

fn not_initialized() -> String {
    "the plugin was called before init".to_owned()
}

#[cfg(feature = "processor")]
pub fn init_processor<P: crate::Processor>(
    slot: &'static std::thread::LocalKey<RefCell<Option<P>>>,
    config: String,
) -> Result<(), String> {
    let plugin = P::new(parse_config(&config)?).map_err(|error| error.to_string())?;
    slot.with(|cell| *cell.borrow_mut() = Some(plugin));
    Ok(())
}

#[cfg(feature = "processor")]
pub fn process<P: crate::Processor>(
    slot: &'static std::thread::LocalKey<RefCell<Option<P>>>,
    batch: wit::Batch,
) -> Result<wit::Output, String> {
    slot.with(|cell| {
        let mut guard = cell.borrow_mut();
        let plugin = guard.as_mut().ok_or_else(not_initialized)?;
        let batch = crate::Batch::from_wit(batch);
        let mut output = crate::Output::for_batch(&batch);
        plugin
            .process_batch(&batch, &mut output)
            .map_err(|error| error.to_string())?;
        Ok(output.into_wit())
    })
}

#[cfg(feature = "timed")]
pub fn tick<P: crate::Processor>(
    slot: &'static std::thread::LocalKey<RefCell<Option<P>>>,
    now_ms: i64,
    stopping: bool,
) -> Result<wit::Output, String> {
    slot.with(|cell| {
        let mut guard = cell.borrow_mut();
        let plugin = guard.as_mut().ok_or_else(not_initialized)?;
        let mut output = crate::Output::new();
        plugin
            .tick(now_ms, stopping, &mut output)
            .map_err(|error| error.to_string())?;
        Ok(output.into_wit())
    })
}

#[cfg(feature = "collector")]
pub fn init_collector<C: crate::Collector>(
    slot: &'static std::thread::LocalKey<RefCell<Option<C>>>,
    config: String,
) -> Result<(), String> {
    let plugin = C::new(parse_config(&config)?).map_err(|error| error.to_string())?;
    slot.with(|cell| *cell.borrow_mut() = Some(plugin));
    Ok(())
}

#[cfg(feature = "collector")]
pub fn collect<C: crate::Collector>(
    slot: &'static std::thread::LocalKey<RefCell<Option<C>>>,
) -> Result<wit::Output, String> {
    slot.with(|cell| {
        let mut guard = cell.borrow_mut();
        let plugin = guard.as_mut().ok_or_else(not_initialized)?;
        let mut output = crate::Output::new();
        plugin
            .collect(&mut output)
            .map_err(|error| error.to_string())?;
        Ok(output.into_wit())
    })
}

/// Export a [`Processor`](crate::Processor) as the plugin's `processor` world.
#[cfg(all(feature = "processor", not(feature = "timed")))]
#[macro_export]
macro_rules! export_processor {
    ($plugin:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            ::std::thread_local! {
                static PLUGIN: ::std::cell::RefCell<Option<$plugin>> =
                    const { ::std::cell::RefCell::new(None) };
            }
            struct Export;
            impl $crate::__bindings::Guest for Export {
                fn init(config: String) -> Result<(), String> {
                    $crate::export::init_processor(&PLUGIN, config)
                }
                fn process(
                    batch: $crate::__bindings::sluice::plugin::types::Batch,
                ) -> Result<$crate::__bindings::sluice::plugin::types::Output, String> {
                    $crate::export::process(&PLUGIN, batch)
                }
            }
    $crate::__bindings::export_world!(Export with_types_in $crate::__bindings);
        };
    };
}

/// Export a [`Processor`](crate::Processor) as the plugin's `timed-processor` world.
#[cfg(feature = "timed")]
#[macro_export]
macro_rules! export_processor {
    ($plugin:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            ::std::thread_local! {
                static PLUGIN: ::std::cell::RefCell<Option<$plugin>> =
                    const { ::std::cell::RefCell::new(None) };
            }
            struct Export;
            impl $crate::__bindings::Guest for Export {
                fn init(config: String) -> Result<(), String> {
                    $crate::export::init_processor(&PLUGIN, config)
                }
                fn process(
                    batch: $crate::__bindings::sluice::plugin::types::Batch,
                ) -> Result<$crate::__bindings::sluice::plugin::types::Output, String> {
                    $crate::export::process(&PLUGIN, batch)
                }
                fn tick(
                    now_ms: i64,
                    stopping: bool,
                ) -> Result<$crate::__bindings::sluice::plugin::types::Output, String> {
                    $crate::export::tick(&PLUGIN, now_ms, stopping)
                }
            }
    $crate::__bindings::export_world!(Export with_types_in $crate::__bindings);
        };
    };
}

/// Export a [`Collector`](crate::Collector) as the plugin's `collector` world.
#[cfg(feature = "collector")]
#[macro_export]
macro_rules! export_collector {
    ($plugin:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            ::std::thread_local! {
                static PLUGIN: ::std::cell::RefCell<Option<$plugin>> =
                    const { ::std::cell::RefCell::new(None) };
            }
            struct Export;
            impl $crate::__bindings::Guest for Export {
                fn init(config: String) -> Result<(), String> {
                    $crate::export::init_collector(&PLUGIN, config)
                }
                fn collect() -> Result<$crate::__bindings::sluice::plugin::types::Output, String> {
                    $crate::export::collect(&PLUGIN)
                }
            }
    $crate::__bindings::export_world!(Export with_types_in $crate::__bindings);
        };
    };
}
