pub mod plugin;
mod scaffold;
