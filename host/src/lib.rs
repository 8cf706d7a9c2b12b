//! Sluice: a WebAssembly plugin-based edge-to-cloud data pipeline.
//!
//! The modules form layers that import downwards only (`docs/architecture.md`, checked
//! by `tests/architecture.rs`):
//!
//! - at the bottom: [`event`], [`counters`] (typed metrics), [`signals`] (what higher
//!   layers know of the host, for its own events), [`tls`], [`buffer`], [`state`],
//!   [`storage`]; above them [`pipeline`] (batches, acks, outputs, the
//!   batcher), [`template`], [`tables`], [`event_record`] (an event as a line of JSON);
//! - [`inference`] (ONNX models), then [`runtime`] (the sandboxed plugin runtime);
//! - [`connect`]: connections shared by every kind (MQTT settings, Kafka, bearer tokens);
//! - [`component`], then the kinds: [`sources`], [`transforms`], [`sinks`];
//! - [`config`]: the user's TOML mapped onto the kinds, validated with precise diagnostics;
//! - [`topology`]: a config built, wired and spawned as one pipeline;
//! - [`broker`], [`fleet`], `workflow` (the jobs' runs, and the pipelines they
//!   start) and [`testing`] (`sluice test`: pipelines run against their tests), then
//!   [`api`], then the [`supervisor`] that starts, replaces and drains
//!   pipelines with their services, and the device's [`agent`].

#[cfg(feature = "fleet")]
pub mod agent;
pub mod api;
#[cfg(feature = "broker")]
pub mod broker;
pub mod buffer;
pub mod component;
pub mod config;
pub mod connect;
pub mod counters;
pub mod emit;
pub mod event;
pub mod event_record;
pub mod fleet;
pub mod inference;
#[cfg(feature = "jobs")]
pub mod jobs;
pub mod pipeline;
pub mod release;
pub mod runtime;
pub mod signals;
pub mod sinks;
pub mod sources;
pub mod state;
#[cfg(feature = "object-store")]
pub mod storage;
pub mod supervisor;
pub mod tables;
pub mod template;
pub mod testing;
pub mod tls;
pub mod topology;
pub mod transforms;
#[cfg(feature = "jobs")]
pub mod workflow;
