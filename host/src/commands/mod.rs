#[cfg(feature = "fleet")]
pub mod agent;
#[cfg(all(
    feature = "fleet",
    any(feature = "cross-compile", feature = "jobs", feature = "top")
))]
mod api_client;
pub mod buffer;
#[cfg(feature = "cross-compile")]
pub mod fleet;
#[cfg(all(feature = "cross-compile", feature = "fleet"))]
mod fleet_status;
#[cfg(all(feature = "jobs", feature = "fleet"))]
pub mod jobs;
#[cfg(feature = "inference")]
pub mod model;
pub mod pipeline;
pub mod plugin;
pub mod plugin_build;
#[cfg(feature = "object-store")]
pub mod replay;
mod scaffold;
#[cfg(all(
    feature = "fleet",
    any(feature = "cross-compile", feature = "jobs", feature = "top")
))]
pub mod tap;
pub mod test;
#[cfg(feature = "top")]
pub mod top;
