//! The plugin runtime: one wasmtime engine, plugins compiled once and cached, pools of
//! sandboxed instances with deadlines and memory caps, host capabilities granted per
//! stage and bounded by quotas (`capabilities/`), and isolation of bad events.

mod bindings;
#[cfg(feature = "compiler")]
mod cache;
mod capabilities;
mod codec;
mod engine;
mod error;
mod grants;
mod instance;
mod limits;
mod plugin;
mod pool;
pub mod precompiled;
mod quota;
mod spec;
mod stderr;
mod store;
mod world;

pub use capabilities::Capability;
pub use codec::{Emitted, Processed, Rejection};
pub use engine::{EPOCH_TICK, Runtime, RuntimeOptions};
pub use error::{CallFailure, LimitExceeded, PluginError};
pub use grants::{DirGrant, Grants};
pub use limits::{DEFAULT_MEMORY_BYTES, Limits};
pub use plugin::{Plugin, sha256_hex};
pub use pool::{DeferredWrites, InstancePool};
pub use spec::StageSpec;
pub use world::World;

/// The decoder of plugin outputs with the WIT types it reads, for the fuzz targets in
/// `fuzz/`: a plugin's output is the host's most exposed input.
#[doc(hidden)]
pub mod fuzzing {
    pub use super::bindings::wit::{Emitted, Header, HeaderRange, Output, Rejected, Span};
    pub use super::codec::{MAX_REASON_BYTES, check_size, decode_output, encode_batch};
}
