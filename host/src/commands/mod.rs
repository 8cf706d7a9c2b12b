pub mod build;
pub mod pipeline;
pub mod plugin;
mod scaffold;
