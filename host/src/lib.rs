//! Sluice: a WebAssembly plugin-based edge-to-cloud data pipeline.
//!
//! - [`runtime`]: the sandboxed plugin runtime (wasmtime, WASI p2, limits, pools).
//! - [`config`]: the pipeline's TOML config, validated with precise diagnostics.
//! - [`pipeline`]: stages as tasks, bounded channels, acknowledgements, dead letters.
//! - [`sources`], [`transforms`], [`sinks`]: one module per component `type`.
//! - [`state`]: per-stage durable key-value state for plugins.
//! - [`inference`]: ONNX models run by the host for plugins (ONNX Runtime via `ort`).

#[cfg(feature = "broker")]
pub mod broker;
pub mod buffer;
pub mod config;
pub mod event;
pub mod fleet;
pub mod inference;
#[cfg(feature = "kafka")]
pub mod kafka;
#[cfg(feature = "mqtt")]
pub mod mqtt;
pub mod pipeline;
pub mod runtime;
pub mod serve;
pub mod serving;
pub mod sinks;
pub mod sources;
pub mod stage;
pub mod state;
#[cfg(feature = "object-store")]
pub mod storage;
pub mod template;
#[cfg(any(feature = "mqtt", feature = "fleet"))]
pub mod tls;
pub mod transforms;
