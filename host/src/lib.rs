//! Sluice: a WebAssembly plugin-based edge-to-cloud data pipeline.
//!
//! - [`runtime`]: the sandboxed plugin runtime (wasmtime, WASI p2, limits, pools).
//! - [`state`]: per-stage durable key-value state for plugins.
//! - [`event`]: the event type that flows through everything.

pub mod event;
pub mod runtime;
pub mod state;
