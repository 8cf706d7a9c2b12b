pub mod build;
pub mod model;
pub mod pipeline;
pub mod plugin;
mod scaffold;
