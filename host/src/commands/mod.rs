#[cfg(feature = "fleet")]
pub mod agent;
pub mod build;
#[cfg(feature = "inference")]
pub mod model;
pub mod pipeline;
pub mod plugin;
#[cfg(feature = "object-store")]
pub mod replay;
mod scaffold;
