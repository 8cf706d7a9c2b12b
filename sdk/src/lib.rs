//! Write Sluice plugins in Rust.
//!
//! A plugin is a struct, a trait impl and one export macro:
//!
//! ```ignore
//! use sluice_sdk::prelude::*;
//!
//! #[derive(serde::Deserialize)]
//! struct Config { threshold: f64 }
//!
//! struct Hot { threshold: f64 }
//!
//! impl Processor for Hot {
//!     type Config = Config;
//!     fn new(config: Config) -> Result<Self, Error> { Ok(Hot { threshold: config.threshold }) }
//!     fn process(&mut self, event: &Event<'_>, out: &mut Output) -> Result<(), Error> {
//!         let reading: serde_json::Value = event.json()?;
//!         if reading["temperature"].as_f64().unwrap_or(0.0) > self.threshold {
//!             out.forward(event);
//!         }
//!         Ok(())
//!     }
//! }
//!
//! sluice_sdk::export_processor!(Hot);
//! ```
//!
//! Enable the SDK feature of the plugin's world (`processor` or `collector`). The batch
//! layout of the WIT contract (one shared byte buffer per batch) stays inside the SDK:
//! plugin code sees [`Event`]s and writes to an [`Output`].
//!
//! With the `inference` feature (which implies `processor`), the plugin targets the
//! `scorer` world and may run the ONNX models its stage is granted: see [`inference`].
//! With the `timed` feature (which implies `processor`), it targets `timed-processor`:
//! the host also calls [`Processor::tick`] on the stage's schedule.
//!
//! Without a world feature only the world-free parts are built — [`json`] paths and
//! [`predicate`]s — so that the host evaluates conditions written for the filter
//! plugin with the very same code, natively.

#[cfg(all(feature = "processor", feature = "collector"))]
compile_error!("enable exactly one of the `processor` and `collector` features of sluice-sdk");
#[cfg(all(feature = "timed", feature = "inference"))]
compile_error!(
    "the `timed` and `inference` features of sluice-sdk are separate worlds: enable one"
);

// The generated bindings name this crate by its external name, also from inside it.
extern crate self as sluice_sdk;

#[cfg(any(feature = "processor", feature = "collector"))]
mod batch;
mod error;
#[cfg(any(feature = "processor", feature = "collector"))]
#[doc(hidden)]
pub mod export;
#[cfg(any(feature = "processor", feature = "collector"))]
pub mod host;
#[cfg(feature = "inference")]
pub mod inference;
pub mod json;
#[cfg(any(feature = "processor", feature = "collector"))]
mod output;
pub mod predicate;

#[cfg(any(feature = "processor", feature = "collector"))]
#[doc(hidden)]
pub mod __bindings {
    //! The generated WIT bindings of the enabled world. Not part of the SDK's API.
    #[cfg(all(
        feature = "processor",
        not(feature = "inference"),
        not(feature = "timed")
    ))]
    wit_bindgen::generate!({
        path: "../wit",
        world: "processor",
        pub_export_macro: true,
        export_macro_name: "export_world",
        default_bindings_module: "sluice_sdk::__bindings",
        runtime_path: "sluice_sdk::__wit_bindgen::rt",
    });
    #[cfg(feature = "timed")]
    wit_bindgen::generate!({
        path: "../wit",
        world: "timed-processor",
        pub_export_macro: true,
        export_macro_name: "export_world",
        default_bindings_module: "sluice_sdk::__bindings",
        runtime_path: "sluice_sdk::__wit_bindgen::rt",
    });
    #[cfg(feature = "inference")]
    wit_bindgen::generate!({
        path: "../wit",
        world: "scorer",
        pub_export_macro: true,
        export_macro_name: "export_world",
        default_bindings_module: "sluice_sdk::__bindings",
        runtime_path: "sluice_sdk::__wit_bindgen::rt",
    });
    #[cfg(feature = "collector")]
    wit_bindgen::generate!({
        path: "../wit",
        world: "collector",
        pub_export_macro: true,
        export_macro_name: "export_world",
        default_bindings_module: "sluice_sdk::__bindings",
        runtime_path: "sluice_sdk::__wit_bindgen::rt",
    });
}
#[cfg(any(feature = "processor", feature = "collector"))]
#[doc(hidden)]
pub use wit_bindgen as __wit_bindgen;

#[cfg(any(feature = "processor", feature = "collector"))]
pub use batch::{Batch, Event};
pub use error::Error;
#[cfg(any(feature = "processor", feature = "collector"))]
pub use output::{NewEvent, Output};

/// A transform, filter, flat-map or router.
///
/// The host calls [`Processor::process_batch`] once per batch; its default calls
/// [`Processor::process`] for every event and turns an event's `Err` into a rejection
/// (the host dead-letters that event with the message) without failing the batch.
#[cfg(any(feature = "processor", feature = "collector"))]
pub trait Processor: Sized + 'static {
    /// The stage's config, deserialized from the JSON object the host passes to `init`.
    type Config: serde::de::DeserializeOwned;

    /// Build the plugin from its config. An error stops the stage from starting.
    fn new(config: Self::Config) -> Result<Self, Error>;

    /// Handle one event: emit zero, one or many outputs to `out`.
    fn process(&mut self, event: &Event<'_>, out: &mut Output) -> Result<(), Error>;

    /// Handle a whole batch. Override it for logic that spans events (windows).
    fn process_batch(&mut self, batch: &Batch, out: &mut Output) -> Result<(), Error> {
        for event in batch.events() {
            if let Err(error) = self.process(&event, out) {
                out.reject(&event, error.to_string());
            }
        }
        Ok(())
    }

    /// Work that falls due with time (with the `timed` feature, the host calls it every
    /// `tick_interval_ms` of the stage, and once more with `stopping` when the stage's
    /// input has ended): emit new events with [`Output::push`]. `now_ms` is the host's
    /// clock. State written here is committed once what the tick emitted has been taken
    /// downstream (see the `timed-processor` world). Does nothing by default.
    fn tick(&mut self, now_ms: i64, stopping: bool, out: &mut Output) -> Result<(), Error> {
        let _ = (now_ms, stopping, out);
        Ok(())
    }
}

/// A collector, called on the schedule its stage config sets.
#[cfg(any(feature = "processor", feature = "collector"))]
pub trait Collector: Sized + 'static {
    /// The stage's config, deserialized from the JSON object the host passes to `init`.
    type Config: serde::de::DeserializeOwned;

    /// Build the collector from its config. An error stops the stage from starting.
    fn new(config: Self::Config) -> Result<Self, Error>;

    /// Produce this tick's events with [`Output::push`].
    fn collect(&mut self, out: &mut Output) -> Result<(), Error>;
}

/// Everything a plugin usually needs.
#[cfg(any(feature = "processor", feature = "collector"))]
pub mod prelude {
    pub use crate::host::{limits, log, metrics, state};
    pub use crate::{Batch, Collector, Error, Event, NewEvent, Output, Processor};
}
